"""Loss is never silent: with Kafka unreachable, a live agent keeps capturing, drops its
oldest frames from a bounded buffer, counts them per ENI, and — once Kafka is back —
reports them so the stored records of exactly those ENIs say SKIPDATA."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from agents.publisher import FramePublisher
from agents.synthetic import SyntheticConfig, SyntheticTraffic
from deploy.broker import free_port
from flowlogs.kafka import ensure_topics
from tests.integration.helpers import wait_for
from tests.integration.test_spine import START_NS

pytestmark = pytest.mark.integration


class TcpRelay:
    """A plain TCP relay to the broker: the test decides when Kafka becomes reachable."""

    def __init__(self, port: int, target: str) -> None:
        host, target_port = target.rsplit(":", 1)
        self.target = (host, int(target_port))
        self.listener = socket.create_server(("127.0.0.1", port))
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def close(self) -> None:
        for s in self.sockets:
            s.close()


def test_kafka_down_drops_oldest_counts_per_eni_and_marks_skipdata(settings_factory, worker_factory, tmp_path: Path) -> None:
    settings = settings_factory()
    ensure_topics(settings)
    worker = worker_factory(settings)
    down_port = free_port()  # nothing listens here yet: Kafka is "down"
    agent_settings = settings.with_section("kafka", bootstrap_servers=f"127.0.0.1:{down_port}").with_section(
        "agent", send_buffer_mb=16, frame_packets=4096, delivery_timeout_seconds=300
    )
    publisher = FramePublisher(agent_settings, overflow="drop-oldest")
    publisher.start()
    config = SyntheticConfig(enis=3, flows=300, rate=100_000, duration=8, pace=False, start_ns=START_NS, seed=7)
    started = time.monotonic()
    for batch in SyntheticTraffic(config).batches():
        publisher.publish(batch)
        assert publisher.stats.buffered_bytes <= 16 * 1024 * 1024
    # Capture went on at full speed; it never waited for the (absent) broker.
    assert time.monotonic() - started < 60
    stats = publisher.stats
    assert stats.packets == 800_000 and stats.delivered_frames == 0
    dropped = {eni: c.dropped_packets for eni, c in stats.per_eni.items()}
    assert sum(dropped.values()) == stats.dropped_packets > 0 and stats.dropped_frames > 0

    relay = TcpRelay(down_port, settings.kafka.bootstrap_servers or "")
    try:
        publisher.stop(timeout=120)  # Kafka is back: the rest goes out, and the drop reports with it
    finally:
        relay.close()
    assert stats.failed_frames == 0
    delivered = {eni: c.packets - c.dropped_packets for eni, c in stats.per_eni.items()}

    def stored() -> dict[str, int]:
        _, rows = worker.query("SELECT interface_id, sum(packets) FROM flows GROUP BY interface_id")
        return {eni: int(packets) for eni, packets in rows}

    wait_for(lambda: stored() == delivered, 120, f"the delivered packets in the store ({delivered})")
    wait_for(lambda: worker.stats()["dropped_packets_reported"] == stats.dropped_packets, 30, "every drop reported")
    _, rows = worker.query("SELECT interface_id, countIf(log_status = 'SKIPDATA') FROM flows GROUP BY interface_id")
    skipped = {eni: int(n) for eni, n in rows}
    for eni, lost in dropped.items():
        assert (skipped[eni] > 0) == (lost > 0), (eni, lost, skipped)
    assert worker.stats()["lost_frames"] == 0  # the reports told the whole story: no sequence gaps
