"""What a running worker tells its operators: Prometheus metrics (``GET /metrics``) and
readiness (``GET /ready``).

Counters and gauges are read from the worker at scrape time — the same counters ``/stats``
shows — so the hot path pays nothing for them and nothing is counted twice. Durations are
the exception: a histogram needs every value, so the worker hands each one over as it
measures it (:meth:`FlowWorker.bind_observer`). Each worker has its own
:class:`CollectorRegistry`, never the process-wide one.

Naming as the agent's (``agents/metrics.py``): ``flowlogs_worker_`` prefix, counters end in
``_total``, durations in ``_seconds``, base units only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from flowlogs import __version__
from flowlogs.errors import FlowLogsError
from flowlogs.settings import Settings
from pipeline.compacted_topic import CompactedTopicFollower
from pipeline.store import Store
from pipeline.store_client import OwnerApiStore
from pipeline.worker import FlowWorker
from schemas import alerts

PREFIX = "flowlogs_worker_"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# worker.snapshot() field → (metric name, help); counters get ``_total`` on the wire.
_COUNTERS = {
    "packets_in": ("packets", "packets in the frames consumed"),
    "frames_in": ("frames", "frames consumed and decoded (the others are dead letters)"),
    "late_packets": ("late_packets", "packets that came after their window had closed (log-status LATE)"),
    "windows_closed": ("windows_closed", "windows closed, per partition"),
    "flows_out": ("flows_closed", "flow rows that left closed windows (NODATA/SKIPDATA rows included)"),
    "dropped_packets_reported": ("agent_dropped_packets", "packets agents reported lost before Kafka took them"),
    "duplicate_frames": ("duplicate_frames", "frames seen again (producer retries), counted once"),
    "reordered_frames": ("reordered_frames", "frames that came after a later frame of theirs and filled a sequence gap"),
    "skipped_windows": ("skipped_windows", "(window, ENI) pairs marked SKIPDATA"),
    "dead_letters": ("dead_letters", "frames that did not decode, put on the dead-letter topic"),
    "batches_written": ("batches_written", "batches of closed windows written to every sink"),
    "rule_sets_refused": ("rule_sets_refused", "rule sets refused (invalid or older than the one in force)"),
}
_GAUGES = {
    # lost_frames goes down when a frame thought lost arrives late (then it is reordered),
    # so it is a gauge: frames missing from agents' sequences now.
    "lost_frames": ("lost_frames", "frames missing from agents' per-ENI sequences (gaps not filled later)"),
    "open_windows": ("open_windows", "windows open in memory, over all partitions"),
    "pending_rows": ("pending_rows", "flow rows of closed windows not yet written (buffered or being written)"),
    "enis": ("enis", "ENIs this worker has seen"),
    "rule_set_version": ("rule_set_version", "version of the rule set in force (0: none)"),
    "threat_lists_version": ("threat_lists_version", "version of the threat lists loaded (bumped on each reload)"),
    "alerts_open": ("alerts_open", "alerts open in this worker's detectors"),
    "alerts_unsent": ("alerts_unsent", "alerts waiting to be published again after a failed publish"),
    "scan_contacts": ("scan_contacts", "contacts the scan detector remembers (bounded by detect.max_scan_contacts)"),
}
SINKS = ("store", "topic", "alerts")
ALERT_EVENTS = ("raised", "updated", "closed")
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _WorkerCollector:
    def __init__(self, worker: FlowWorker, assigned: Callable[[], set[int]], info: dict[str, str]) -> None:
        self._worker = worker
        self._assigned = assigned
        self._info = info

    def collect(self) -> Iterator[Metric]:
        worker = self._worker
        snapshot = worker.snapshot()
        yield InfoMetricFamily(PREFIX.rstrip("_"), "the worker: version, consumer group, window length", value=self._info)
        for field, (name, doc) in _COUNTERS.items():
            yield CounterMetricFamily(PREFIX + name, doc, value=snapshot[field])
        if worker.detectors is not None:
            yield CounterMetricFamily(PREFIX + "detect_seconds", "time spent in the detectors", value=worker.detectors.seconds)
            yield CounterMetricFamily(
                PREFIX + "scan_contacts_evicted",
                "contacts the scan detector forgot before they expired (over detect.max_scan_contacts; scans may go unseen)",
                value=snapshot["scan_contacts_evicted"],
            )
        for field, (name, doc) in _GAUGES.items():
            if field in snapshot:  # the detectors' (threat lists, alerts open) only when they run
                yield GaugeMetricFamily(PREFIX + name, doc, value=snapshot[field])

        written = CounterMetricFamily(
            PREFIX + "records_written", "flow records made durable, per sink (the flow logs in force pick them)", labels=["sink"]
        )
        for sink in ("store", "topic"):
            written.add_metric([sink], worker.records_written[sink])
        yield written
        failures = CounterMetricFamily(PREFIX + "sink_write_failures", "writes that failed, per sink", labels=["sink"])
        retries = CounterMetricFamily(
            PREFIX + "sink_write_retries", "writes repeated after a failure, per sink (a failed batch goes to store and topic again)",
            labels=["sink"],
        )
        for sink in SINKS:
            failed = worker.stats.alert_write_failures if sink == "alerts" else worker.sink_failures[sink]
            failures.add_metric([sink], failed)
            retries.add_metric([sink], worker.sink_retries[sink])
        yield failures
        yield retries
        events = CounterMetricFamily(
            PREFIX + "alerts", "alert records produced, per detector and event (raised, updated, closed)", labels=["detector", "event"]
        )
        for detector in alerts.DETECTORS:
            for event in ALERT_EVENTS:
                events.add_metric([detector, event], worker.alert_events[(detector, event)])
        yield events

        assigned = self._assigned()
        yield GaugeMetricFamily(PREFIX + "assigned_partitions", "frames-topic partitions assigned to this worker", value=len(assigned))
        lag = GaugeMetricFamily(
            PREFIX + "consumer_lag_messages",
            "frames in the partition not read yet: highwater − next offset (a partition shows once a frame of it"
            " was read since its assignment, or when it is empty)",
            labels=["partition"],
        )
        next_offsets = dict(worker._next_offset)  # the worker's own read position, per partition
        for partition in sorted(assigned | next_offsets.keys()):
            highwater = worker._highwater(partition)
            position = next_offsets.get(partition, 0 if highwater == 0 else None)
            if highwater is not None and position is not None:
                lag.add_metric([str(partition)], max(highwater - position, 0))
        yield lag


class WorkerMetrics:
    """The Prometheus registry of one worker; :meth:`exposition` is the ``/metrics`` body."""

    def __init__(self, settings: Settings, worker: FlowWorker, assigned: Callable[[], set[int]]) -> None:
        self.registry = CollectorRegistry()
        info = {"version": __version__, "app_id": settings.worker.app_id, "window_seconds": str(settings.worker.window_seconds)}
        self.registry.register(_WorkerCollector(worker, assigned, info))  # type: ignore[arg-type]
        self.histograms = {
            "flush_duration_seconds": Histogram(
                PREFIX + "flush_duration_seconds", "time to write a batch of closed windows to the store and the flows topic",
                registry=self.registry, buckets=FLUSH_BUCKETS,
            ),
            "alert_latency_seconds": Histogram(
                PREFIX + "alert_latency_seconds", "from a batch's first window close to its alerts published",
                registry=self.registry, buckets=LATENCY_BUCKETS,
            ),
        }
        worker.bind_observer(self.observe)

    def observe(self, name: str, seconds: float) -> None:
        self.histograms[name].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Readiness:
    """``GET /ready``: in the consumer group with an assignment (possibly empty: more workers
    than partitions), not rebalancing, the store answering, and the configuration topics
    (rules, flow logs) read to their end once. ``/health`` stays the liveness probe."""

    def __init__(
        self,
        app: faust.App,
        store: Store | OwnerApiStore,
        followers: Sequence[CompactedTopicFollower],
        frames_topic: str,
        *,
        probe_timeout: float = 5.0,
    ) -> None:
        self._app = app
        self._store = store
        self._followers = followers
        self._frames_topic = frames_topic
        self._probe_timeout = probe_timeout
        self._probe: asyncio.Future[Any] | None = None
        self.assigned: set[int] | None = None  # None until the group first assigned partitions
        app.on_partitions_assigned.connect(self._on_assigned)

    async def _on_assigned(self, _app: faust.App, assigned: set[Any], **_kw: Any) -> None:
        self.assigned = {tp.partition for tp in assigned if tp.topic == self._frames_topic}

    def partitions(self) -> set[int]:
        return set(self.assigned or ())

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready?, the JSON body: what is missing, and what each check found)."""
        missing = []
        if self.assigned is None:
            missing.append("consumer group: not joined yet (no partition assignment received)")
        elif self._app.rebalancing:
            missing.append("consumer group: rebalancing")
        store_problem = await self._store_problem()
        if store_problem:
            missing.append(f"store: {store_problem}")
        caught_up = {f.name: f.wait_caught_up(0) for f in self._followers}
        missing += [f"{name} topic: not read to its end yet" for name, done in caught_up.items() if not done]
        body = {
            "ready": not missing,
            "missing": missing,
            "partitions": None if self.assigned is None else sorted(self.assigned),
            "store": self._store.describe(),
            "caught_up": caught_up,
        }
        return not missing, body

    async def _store_problem(self) -> str | None:
        # One probe at a time: a store that hangs must not collect a thread per request.
        probe = self._probe
        if probe is None or probe.done():
            if probe is not None and not probe.cancelled():
                probe.exception()  # retrieved: the outcome of an earlier probe nobody waited for
            probe = self._probe = asyncio.ensure_future(asyncio.to_thread(self._store.query, "SELECT 1"))
        try:
            await asyncio.wait_for(asyncio.shield(probe), self._probe_timeout)
        except TimeoutError:
            return f"no answer to SELECT 1 within {self._probe_timeout:.0f} s"
        except FlowLogsError as exc:
            return str(exc)
        except Exception as exc:  # whatever the store client raised: not reachable, and say why
            return f"{type(exc).__name__}: {exc}"
        return None
