"""Prometheus metrics of a running agent, read from its counters at scrape time.

Nothing is counted twice: a scrape reads the same counters the progress line and the
final summary read, so the hot path pays nothing for metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from flowlogs.errors import ConfigError
from flowlogs.settings import AgentSettings

if TYPE_CHECKING:
    from agents.runner import CaptureRun

_PREFIX = "flowlogs_agent_"
_PER_ENI = (
    ("packets", "packets accepted from capture, per ENI"),
    ("bytes", "IP bytes accepted from capture, per ENI"),
    ("frames", "frames handed to Kafka, per ENI"),
    ("dropped_packets", "packets lost before Kafka took them (send buffer full, delivery timed out), per ENI"),
)
_TOTALS = {
    "packets_read": "packets read from the sources",
    "ip_packets": "IP packets decoded",
    "non_ip": "non-IP packets (ARP, LLDP, …) skipped",
    "too_short": "packets cut before the end of their IP header",
    "decapsulated": "mirror-tunnel packets replaced by the packet they carry",
    "bad_tunnel": "packets to a tunnel port/protocol that are not a tunnel we can open",
    "unmatched": "packets that belong to no ENI of the inventory",
    "unknown_session": "packets from a mirror session the inventory does not name",
    "delivered_frames": "frames Kafka acknowledged",
    "failed_frames": "frames Kafka refused or timed out on",
    "dropped_frames": "frames dropped from a full send buffer",
}


class _RunCollector:
    def __init__(self, run: CaptureRun) -> None:
        self._run = run

    def collect(self) -> Iterator[Metric]:
        stats = self._run.publisher.stats
        per_eni = list(stats.per_eni.items())
        for field, doc in _PER_ENI:
            family = CounterMetricFamily(_PREFIX + field, doc, labels=["eni"])
            for eni, counters in per_eni:
                family.add_metric([eni], getattr(counters, field))
            yield family
        summary = self._run.summary()
        for name, doc in _TOTALS.items():
            yield CounterMetricFamily(_PREFIX + name, doc, value=summary[name])
        source = CounterMetricFamily(
            _PREFIX + "source_events", "the sources' own counters: kernel drops, garbage, truncated records …", labels=["event"]
        )
        for name, value in self._run.source_counters().items():
            source.add_metric([name], value)
        yield source
        yield GaugeMetricFamily(_PREFIX + "send_buffer_bytes", "bytes of frames waiting for Kafka", value=stats.buffered_bytes)


class AgentMetrics:
    """Serves ``/metrics`` for one run on ``agent.metrics_host:metrics_port`` (0 = a free port)."""

    def __init__(self, run: CaptureRun, agent: AgentSettings) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_RunCollector(run))  # type: ignore[arg-type]
        try:
            self._server, self._thread = start_http_server(agent.metrics_port or 0, addr=agent.metrics_host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {agent.metrics_host}:{agent.metrics_port}: {exc.strerror}") from exc
        self.port = int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
