"""A rebalance may revoke a partition while the worker reads the close log for a frame of it
(Faust fetched the frame before the rebalance). That frame must not bring the partition's
windows back; a frame of the partition given back afterwards must be taken. Real chDB and Kafka."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agents.synthetic import SyntheticConfig
from flowlogs.kafka import ensure_topics
from pipeline.close_log import CloseLog
from pipeline.sinks.clickhouse import ClickHouseSink
from pipeline.sinks.flows_process import FlowTopicSink
from pipeline.sinks.topic import DeadLetterSink
from pipeline.store import Store
from pipeline.worker import FlowWorker
from schemas.inventory import Inventory
from tests.integration.helpers import frame_carriers

pytestmark = pytest.mark.integration


class HeldCloseLog(CloseLog):
    """The real close log, whose reads wait until the test lets them go."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reading = threading.Event()
        self.go = threading.Event()

    def history(self, partition: int, from_offset: int):
        self.reading.set()
        assert self.go.wait(30), "the test never let the close-log read go"
        return super().history(partition, from_offset)


def test_a_frame_read_across_a_revoke_is_left_to_the_partitions_owner(settings_factory) -> None:
    settings = settings_factory(store={"batch_seconds": 60})
    ensure_topics(settings)
    store = Store(settings)
    store.start()
    flows_sink = FlowTopicSink(settings)
    close_log = HeldCloseLog(store, "frames", settings.worker.window_seconds * 10**9)
    worker = FlowWorker(
        settings, store_sink=ClickHouseSink(store), flows_sink=flows_sink, dead_letter=DeadLetterSink(settings),
        inventory=Inventory(), close_log=close_log,
    )
    acked: list[int] = []
    worker.bind_consumer(ack=lambda m: acked.append(m.offset), highwater=lambda _p: None)
    window_ns = settings.worker.window_seconds * 10**9
    start_ns = (time.time_ns() - 120 * 10**9) // window_ns * window_ns
    config = SyntheticConfig(enis=1, flows=50, rate=2_000, duration=3, pace=False, start_ns=start_ns, seed=3)
    messages, sent = frame_carriers(config, "revoke")

    async def run() -> None:
        taking = asyncio.create_task(worker.on_message(messages[0]))
        assert await asyncio.to_thread(close_log.reading.wait, 30)
        await worker.revoke({0})  # the rebalance overtakes the close-log read
        close_log.go.set()
        await taking
        assert not worker.windows.has(0), "a frame of a revoked partition brought its windows back"
        assert worker.snapshot()["open_windows"] == 0

        # The partition comes back to this worker: it reads from the committed offset, the same frame first.
        for m in messages:
            await worker.on_message(m)
        assert worker.windows.has(0)
        await worker.drain()

    try:
        asyncio.run(run())
        assert sorted(acked) == [m.offset for m in messages]
        _, rows = store.query("SELECT sum(packets) FROM flows")
        assert rows[0][0] == sent
    finally:
        flows_sink.stop()
        store.stop()
