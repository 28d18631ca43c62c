"""A write holds at most ``store.max_batch_rows`` rows of whole closes, the oldest first;
closes beyond wait for the next write, and a drain writes them all. Real chDB and Kafka."""

from __future__ import annotations

import asyncio
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


def test_closes_beyond_max_batch_rows_wait_for_the_next_write(settings_factory) -> None:
    settings = settings_factory(store={"batch_rows": 1_000_000, "batch_seconds": 60, "max_batch_rows": 500})
    ensure_topics(settings)
    store = Store(settings)
    store.start()
    flows_sink = FlowTopicSink(settings)
    worker = FlowWorker(
        settings, store_sink=ClickHouseSink(store), flows_sink=flows_sink, dead_letter=DeadLetterSink(settings),
        inventory=Inventory(), close_log=CloseLog(store, "frames", settings.worker.window_seconds * 10**9),
    )
    acked: list[int] = []
    worker.bind_consumer(ack=lambda m: acked.append(m.offset), highwater=lambda _p: None)
    window_ns = settings.worker.window_seconds * 10**9
    start_ns = (time.time_ns() - 120 * 10**9) // window_ns * window_ns
    config = SyntheticConfig(enis=2, flows=300, rate=20_000, duration=18, pace=False, start_ns=start_ns, zipf=0.0, seed=8)
    messages, sent = frame_carriers(config, "batches")

    async def run() -> None:
        for m in messages:
            await worker.on_message(m)
        # Three 5 s windows closed on the watermark, ~300 rows each; nothing due yet.
        assert worker.stats.batches_written == 0 and worker.windows.stats.windows_closed == 3
        await worker.drain()  # those three and the last window, one close per write

    try:
        asyncio.run(run())
        assert worker.stats.batches_written == worker.windows.stats.windows_closed == 4
        assert sorted(acked) == [m.offset for m in messages]
        _, rows = store.query("SELECT sum(packets), count() FROM flows")
        assert rows[0] == (sent, worker.stats.rows_written)
    finally:
        flows_sink.stop()
        store.stop()
