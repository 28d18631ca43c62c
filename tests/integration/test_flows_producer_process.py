"""The flows-topic producer process behind FlowTopicSink, against real Kafka: killed between
writes it is started again by the next write; killed during a write, that write raises
SinkError (its records are not confirmed, so the worker keeps their frames) and the next
write succeeds. Every confirmed record is on the topic."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import orjson
import pyarrow as pa
import pytest
from confluent_kafka import Consumer

from agents.synthetic import SyntheticConfig, SyntheticTraffic
from flowlogs.kafka import client_config, ensure_topics
from flowlogs.settings import Settings
from pipeline.flow_table import ALL_WINDOWS, FlowTable
from pipeline.records import FlowRecordBuilder
from pipeline.sinks.flows_process import FlowTopicSink
from pipeline.sinks.topic import SinkError
from schemas import topics

pytestmark = pytest.mark.integration

WINDOW_NS = 5 * 10**9


def _records(flows: int, seed: int) -> pa.Table:
    """Flow records of ``flows`` synthetic flows, as the worker hands them to the sink."""
    config = SyntheticConfig(enis=4, flows=flows, rate=flows * 2, duration=1, pace=False,
                             start_ns=time.time_ns() - 60 * 10**9, zipf=0.0, seed=seed)
    traffic = SyntheticTraffic(config)
    table = FlowTable()
    for batch in traffic.batches():
        table.add_packets(batch.packets, batch.packets.eni.astype(np.uint32), WINDOW_NS)
    builder = FlowRecordBuilder(list(traffic.eni_ids), {}, WINDOW_NS)
    return builder.arrow(builder.columns(table.take(ALL_WINDOWS)))


def _flow_ids_on_topic(settings: Settings, wanted: set[int], timeout: float = 60.0) -> set[int]:
    """Flow ids read from the flows topic until all of ``wanted`` were seen (or ``timeout``)."""
    consumer = Consumer(client_config(settings, **{
        "group.id": f"check-{time.monotonic_ns()}", "auto.offset.reset": "earliest", "enable.auto.commit": False,
    }))
    consumer.subscribe([settings.topic(topics.FLOWS.suffix)])
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while not wanted <= seen and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                if msg.error() is None:
                    seen.add(orjson.loads(msg.value())["flow-id"])
    finally:
        consumer.close()
    return seen


def _wait_gone(sink: FlowTopicSink, timeout: float = 10.0) -> None:
    """Until the sink sees its process dead (a killed child stays a zombie until reaped, which
    the liveness check behind ``pid`` does)."""
    deadline = time.monotonic() + timeout
    while sink.pid is not None:
        assert time.monotonic() < deadline, f"the producer process is still alive {timeout} s after SIGKILL"
        time.sleep(0.05)


def test_a_killed_producer_process_is_replaced_and_loses_no_confirmed_record(settings_factory) -> None:
    settings = settings_factory()
    ensure_topics(settings)
    first, second, big, last = (_records(n, seed) for n, seed in ((2_000, 1), (2_000, 2), (300_000, 3), (2_000, 4)))
    sink = FlowTopicSink(settings)
    try:
        assert sink.pid is None  # started by the first write
        sink.write([first])
        killed = sink.pid
        assert killed is not None

        # Killed between writes: the next write starts a new process and succeeds.
        os.kill(killed, signal.SIGKILL)
        _wait_gone(sink)
        sink.write([second])
        assert sink.pid not in (None, killed)

        # Killed during a write: that write is not confirmed.
        outcome: list[BaseException | None] = []

        def write_big() -> None:
            try:
                sink.write([big], timeout=120)
                outcome.append(None)
            except SinkError as exc:
                outcome.append(exc)

        writer = threading.Thread(target=write_big)
        writer.start()
        time.sleep(0.1)  # the write has begun; rendering and producing 300 k records takes seconds
        assert writer.is_alive(), "the 300 k-record write ended before the kill: make it bigger"
        during = sink.pid
        assert during is not None
        os.kill(during, signal.SIGKILL)
        writer.join(150)
        assert len(outcome) == 1 and isinstance(outcome[0], SinkError), outcome
        assert "producer process" in str(outcome[0])

        sink.write([last])  # and the next write goes through
        assert sink.pid not in (None, during)
    finally:
        sink.stop()
    assert sink.pid is None

    confirmed = {int(i) for t in (first, second, last) for i in t.column("flow_id").to_pylist()}
    missing = confirmed - _flow_ids_on_topic(settings, confirmed)
    assert not missing, f"{len(missing)} of {len(confirmed)} confirmed records are not on the topic"
