"""A failed write keeps its frames unacknowledged and is retried unchanged; nothing is lost
or stored twice. Real chDB and real Kafka; the messages are in-process frame carriers."""

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


def test_failed_insert_is_retried_without_loss_or_duplicates(settings_factory) -> None:
    settings = settings_factory(store={"batch_seconds": 0.2})
    ensure_topics(settings)
    store = Store(settings)
    store.start()
    acked: list[int] = []
    close_log = CloseLog(store, "frames", settings.worker.window_seconds * 10**9)
    flows_sink = FlowTopicSink(settings)
    worker = FlowWorker(
        settings,
        store_sink=ClickHouseSink(store),
        flows_sink=flows_sink,
        dead_letter=DeadLetterSink(settings),
        inventory=Inventory(),
        close_log=close_log,
    )
    worker.bind_consumer(ack=lambda m: acked.append(m.offset), highwater=lambda _p: None)
    config = SyntheticConfig(enis=2, flows=300, rate=20_000, duration=3, pace=False, start_ns=time.time_ns() - 60 * 10**9)
    messages, sent = frame_carriers(config, "retry")

    async def run() -> None:
        store.command(f"DROP TABLE {settings.store.database}.flows")  # the store "fails"
        for m in messages:
            await worker.on_message(m)
        await worker.drain()
        assert worker.stats.write_failures == 1
        assert acked == []  # nothing acknowledged while the rows are not durable
        store.migrate()  # the store is back
        await asyncio.sleep(0.3)
        await worker.tick()  # the timer starts the retry in the background…
        await worker.drain()  # …and this waits for it
        assert worker.stats.write_failures == 1
        assert sorted(acked) == [m.offset for m in messages]

    try:
        asyncio.run(run())
        _, rows = store.query("SELECT sum(packets), count() FROM flows")
        assert rows[0][0] == sent
        assert rows[0][1] == worker.stats.rows_written
    finally:
        flows_sink.stop()
        store.stop()
