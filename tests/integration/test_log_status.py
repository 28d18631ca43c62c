"""log-status end to end (real Kafka, worker, chDB): NODATA exactly for the windows an agent
watched an ENI with no traffic; SKIPDATA for a frame-sequence gap; LATE for packets that
came after their window closed — counted, reported, never merged into the closed record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from scapy.layers.inet import IP, UDP

from flowlogs.kafka import client_config, ensure_topics
from schemas import frame, topics
from schemas.inventory import Eni, Inventory, Subnet, Vpc
from tests.integration.helpers import run_agent
from tests.integration.helpers import wait_for
from tests.integration.test_spine import START_NS
from tests.test_pcap import E, write_pcap

pytestmark = pytest.mark.integration
S = 1_000_000_000
T0 = START_NS // (10 * S) * 10 * S  # a window boundary (5 s windows)


def statuses(worker, eni: str) -> dict[int, tuple[str, int]]:
    """window offset from T0 (s) → (log-status, packets), one entry per (window, status)."""
    _, rows = worker.query(
        "SELECT toUnixTimestamp(window_start), toString(log_status), sum(packets) FROM flows"
        f" WHERE interface_id = '{eni}' GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return {(int(w) - T0 // S, status): int(p) for w, status, p in rows}


def test_nodata_exactly_where_an_agent_watched_and_saw_nothing(settings_factory, worker_factory, tmp_path: Path) -> None:
    settings = settings_factory(worker={"window_seconds": 5})
    worker = worker_factory(settings)
    inventory = Inventory(
        vpcs=(Vpc(id="v"),), subnets=(Subnet(id="s", vpc="v"),),
        enis=(Eni(id="eni-gappy", subnet="s", ips=("10.0.1.1",)), Eni(id="eni-busy", subnet="s", ips=("10.0.1.2",)),
              Eni(id="eni-quiet", subnet="s", ips=("10.0.1.3",))),
    )
    packets, times = [], []
    for t in np.arange(0, 25, 0.5):  # 0 … 24.5 s
        packets.append(bytes(E / IP(src="10.0.1.2", dst="192.0.2.9") / UDP(sport=1, dport=2)))
        times.append(t)
        if t < 5 or t >= 20:  # eni-gappy talks in the first and the last window only
            packets.append(bytes(E / IP(src="10.0.1.1", dst="192.0.2.9") / UDP(sport=3, dport=4)))
            times.append(t)
    capture = tmp_path / "gappy.pcap"
    write_pcap(capture, packets, t0=T0 // S)
    # write_pcap puts packet i at t0 + i seconds: rewrite the record times to ours.
    data = bytearray(capture.read_bytes())
    at = 24
    for t in times:
        seconds, micros = T0 // S + int(t), int(round((t % 1) * 1e6))
        data[at : at + 8] = int(seconds).to_bytes(4, "little") + micros.to_bytes(4, "little")
        at += 16 + int.from_bytes(data[at + 8 : at + 12], "little")
    capture.write_bytes(bytes(data))
    assert run_agent(settings, tmp_path, inventory, "--pcap", str(capture))["packets_sent"] == len(packets)

    wait_for(lambda: len(statuses(worker, "eni-quiet")) == 5, 60, "the quiet ENI's records")
    assert statuses(worker, "eni-quiet") == {(w, "NODATA"): 0 for w in (0, 5, 10, 15, 20)}
    assert statuses(worker, "eni-busy") == {(w, "OK"): 10 for w in (0, 5, 10, 15, 20)}
    assert statuses(worker, "eni-gappy") == {
        (0, "OK"): 10, (5, "NODATA"): 0, (10, "NODATA"): 0, (15, "NODATA"): 0, (20, "OK"): 10,
    }


def _frame(eni: str, sequence: int, times_s: list[float]) -> bytes:
    rows = np.zeros(len(times_s), frame.PACKET_DTYPE)
    rows["capture_time_ns"] = [T0 + int(t * S) for t in times_s]
    rows["src_addr"] = frame.ipv4_mapped(np.full(len(times_s), 0x0A000001, np.uint32))
    rows["dst_addr"] = frame.ipv4_mapped(np.full(len(times_s), 0x0A000002, np.uint32))
    rows["ip_length"], rows["protocol"], rows["src_port"], rows["dst_port"] = 100, 6, 1000, 443
    return frame.encode(rows, [eni], agent_id="planted", agent_start_ns=7, sequence=sequence)


def test_a_sequence_gap_is_skipdata_and_late_packets_are_late(settings_factory, worker_factory) -> None:
    settings = settings_factory(worker={"window_seconds": 5, "allowed_lateness_seconds": 1.0, "idle_close_seconds": 30.0})
    ensure_topics(settings)
    worker = worker_factory(settings)
    producer = Producer(client_config(settings))
    topic = settings.topic(topics.FRAMES.suffix)
    planted = [
        (0, [1, 2]),
        (1, [6]),
        (3, [16]),  # frames 2 was lost on its way: windows 5 … 15 are incomplete
        (4, [40]),  # the watermark moves on: windows up to 30 close
        (5, [3, 4]),  # late: window 0 closed long ago
        (6, [60]),
    ]
    for sequence, times in planted:
        producer.produce(topic, _frame("eni-x", sequence, times), b"eni-x")
    assert producer.flush(30) == 0

    def done() -> bool:
        return worker.stats()["late_packets"] == 2 and (0, "LATE") in statuses(worker, "eni-x")

    wait_for(done, 60, "the late packets' record")
    stats = worker.stats()
    assert stats["lost_frames"] == 1
    got = statuses(worker, "eni-x")
    assert got[(0, "OK")] == 2 and got[(0, "LATE")] == 2  # apart: the closed record is untouched
    assert got[(5, "SKIPDATA")] == 1 and got[(10, "SKIPDATA")] == 0 and got[(15, "SKIPDATA")] == 1
    assert (5, "OK") not in got and (15, "OK") not in got
