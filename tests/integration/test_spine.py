"""The spine end to end on real Apache Kafka and chDB: agent → frames → worker → store and topic."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from agents.publisher import FramePublisher
from agents.synthetic import SyntheticConfig, SyntheticTraffic
from flowlogs.kafka import ensure_topics
from flowlogs.settings import Settings
from pipeline.process import WorkerProcess
from pipeline.query import run_sql
from schemas import flow_record, frame, topics
from tests import reference
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

# Recent enough to be inside the store's retention (TTL), fixed for the whole run.
START_NS = (int(time.time()) // 60 * 60 - 1800) * 1_000_000_000 + 1_000_000_000



def _publish(settings: Settings, config: SyntheticConfig) -> tuple[list, FramePublisher]:
    ensure_topics(settings)
    publisher = FramePublisher(settings)
    publisher.start()
    batches = []
    for batch in SyntheticTraffic(config).batches():
        publisher.publish(batch)
        batches.append((batch.eni_ids, batch.packets))
    publisher.stop()
    assert publisher.stats.failed_frames == 0
    return batches, publisher


def _consume(settings: Settings, topic: str, count: int, timeout: float = 60.0) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"check-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                messages.append(msg)
        # Anything beyond `count` would be a duplicate: give it a moment to show up.
        end = time.monotonic() + 2
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def _stored_totals(worker: WorkerProcess) -> tuple[int, int]:
    _, rows = worker.query("SELECT sum(packets), sum(bytes) FROM flows")
    return int(rows[0][0] or 0), int(rows[0][1] or 0)


def test_conservation_every_packet_and_byte_lands_exactly_once(settings_factory, worker_factory) -> None:
    settings = settings_factory()
    worker = worker_factory(settings)
    config = SyntheticConfig(enis=6, flows=5000, rate=30_000, duration=21, pace=False, start_ns=START_NS, seed=11)
    batches, publisher = _publish(settings, config)
    sent_packets, sent_bytes = publisher.stats.packets, publisher.stats.bytes
    assert sent_packets == 630_000

    wait_for(lambda: _stored_totals(worker)[0] >= sent_packets, 120, "all packets in the store")
    assert _stored_totals(worker) == (sent_packets, sent_bytes)

    # Row by row against a pure-Python aggregation of the very same packets.
    expected = reference.aggregate(batches, settings.worker.window_seconds)
    _, rows = run_sql(  # the worker owns the chDB dir: this goes through its HTTP API
        settings,
        "SELECT interface_id, hex(srcaddr), hex(dstaddr), srcport, dstport, protocol, toString(flow_direction),"
        " toUnixTimestamp(window_start), packets, bytes, toUnixTimestamp(start), toUnixTimestamp(end), tcp_flags,"
        " vpc_id, action, log_status, type FROM flows",
    )
    got = {}
    for eni, src, dst, sport, dport, proto, direction, window, packets, nbytes, start, end, flags, vpc, action, status, kind in rows:
        key = (eni, bytes.fromhex(src), bytes.fromhex(dst), sport, dport, proto, flow_record.DIRECTIONS.index(direction), window)
        assert key not in got, f"duplicate flow row {key}"
        got[key] = [packets, nbytes, start, end, flags]
        assert (vpc, action, status, kind) == ("-", "ACCEPT", "OK", "IPv4")
    assert got == expected
    windows = {k[-1] for k in expected}
    assert len(windows) >= 4, "the traffic must span several windows"

    # The flows topic carries the same records, once each.
    records = _consume(settings, settings.topic(topics.FLOWS.suffix), len(rows))
    assert len(records) == len(rows)
    decoded = [orjson.loads(m.value()) for m in records]
    assert sum(r["packets"] for r in decoded) == sent_packets
    assert sum(r["bytes"] for r in decoded) == sent_bytes
    assert len({r["flow-id"] for r in decoded}) == len(rows)
    assert all(m.key() == r["interface-id"].encode() for m, r in zip(records, decoded))

    stats = worker.stats()
    assert stats["packets_in"] == sent_packets
    assert stats["dead_letters"] == 0 and stats["write_failures"] == 0


def test_graceful_restart_neither_loses_nor_repeats(settings_factory, worker_factory) -> None:
    settings = settings_factory(worker={"idle_close_seconds": 30.0})
    first = worker_factory(settings)
    config = SyntheticConfig(enis=3, flows=500, rate=20_000, duration=8, pace=False, start_ns=START_NS, seed=3)
    _, publisher = _publish(settings, config)
    wait_for(lambda: first.stats()["packets_in"] == publisher.stats.packets, 60, "the worker to read every frame")
    assert first.stop() == 0  # SIGTERM: open windows are written and committed
    second = worker_factory(settings)
    later = SyntheticConfig(enis=3, flows=500, rate=20_000, duration=4, pace=False, start_ns=START_NS + 60 * 10**9, seed=4)
    _, publisher2 = _publish(settings.with_section("agent", agent_id="second"), later)
    wait_for(lambda: second.stats()["packets_in"] >= publisher2.stats.packets, 60, "the second worker to read")
    second.post("/drain")
    total = publisher.stats.packets + publisher2.stats.packets
    assert _stored_totals(second) == (total, publisher.stats.bytes + publisher2.stats.bytes)
    assert second.stats()["packets_in"] == publisher2.stats.packets  # nothing replayed


def test_bad_frames_go_to_the_dead_letter_topic_and_the_worker_goes_on(settings_factory, worker_factory) -> None:
    settings = settings_factory()
    worker = worker_factory(settings)
    config = SyntheticConfig(
        enis=2, flows=100, rate=10_000, duration=3, pace=False, start_ns=START_NS, seed=5, chunk_packets=2000
    )
    ensure_topics(settings)
    good = next(SyntheticTraffic(config).batches())
    valid = frame.encode(good.packets, good.eni_ids, agent_id="bad-agent", sequence=0)
    wrong_version = bytearray(valid)
    wrong_version[4:6] = (9).to_bytes(2, "little")
    bad = {
        "bad_magic": b"GARBAGE" * 20,
        "unsupported_version": bytes(wrong_version),
        "truncated": valid[: len(valid) // 2],
    }
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    frames_topic = settings.topic(topics.FRAMES.suffix)
    for reason, payload in bad.items():
        producer.produce(frames_topic, payload, reason.encode())
    producer.flush(30)
    _, publisher = _publish(settings, config)

    wait_for(lambda: _stored_totals(worker)[0] >= publisher.stats.packets, 90, "the good frames in the store")
    assert _stored_totals(worker) == (publisher.stats.packets, publisher.stats.bytes)
    assert worker.stats()["dead_letters"] == 3

    letters = _consume(settings, settings.topic(topics.DEAD_LETTER.suffix), 3)
    assert len(letters) == 3
    by_reason = {dict(m.headers())["flowlogs-reason"].decode(): m for m in letters}
    assert set(by_reason) == set(bad)
    for reason, message in by_reason.items():
        assert message.value() == bad[reason]  # unchanged
        headers = dict(message.headers())
        assert headers["flowlogs-error"]
        assert headers["flowlogs-source"].decode().startswith(frames_topic + "/")


def test_flowlogs_up_shows_flows_and_top_talkers(settings_factory, tmp_path: Path) -> None:
    settings = settings_factory()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLOGS_")}
    env.update(
        FLOWLOGS_HOME=str(tmp_path / "up-home"),
        FLOWLOGS_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers or "",
        FLOWLOGS_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix,
        FLOWLOGS_WORKER__APP_ID=settings.worker.app_id,
        COLUMNS="200",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "flowlogs.cli", "up", "--duration", "6", "--rate", "20000", "--window", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Top talkers" in proc.stdout
    # The demo rule set was in force: records of both verdicts, named by their deciding rules.
    verdicts = proc.stdout[proc.stdout.index("Verdicts by deciding rule") :]
    assert "synthetic-rules.json" in verdicts
    assert all(word in verdicts for word in ("ACCEPT", "REJECT", "web-out-all", "edge-out-untrusted")), verdicts
    m = re.search(r"this run: sent ([\d,]+) packets / ([\d,]+) bytes; stored ([\d,]+) packets / ([\d,]+) bytes", proc.stdout)
    assert m, proc.stdout
    sent_packets, sent_bytes, stored_packets, stored_bytes = (int(g.replace(",", "")) for g in m.groups())
    assert sent_packets == 120_000
    assert (stored_packets, stored_bytes) == (sent_packets, sent_bytes)
    # After `up` the store is free again and `flowlogs query` opens it directly.
    query = subprocess.run(
        [sys.executable, "-m", "flowlogs.cli", "query", "SELECT sum(packets) AS p FROM flows", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert query.returncode == 0, query.stderr
    assert orjson.loads(query.stdout.splitlines()[0])["p"] == sent_packets
