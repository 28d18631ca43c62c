"""The worker's Faust application reads ahead of the flow tables only as far as its settings say."""

import asyncio
from pathlib import Path
from types import SimpleNamespace

from flowlogs.settings import Settings
from pipeline.app import create_app


def test_the_consumer_reads_ahead_as_far_as_the_worker_settings_say(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        kafka={"bootstrap_servers": "127.0.0.1:9"},  # nothing connects while the app is only built
        worker={"prefetch_frames": 8, "poll_frames": 16, "fetch_partition_mb": 2},
    )
    worker = SimpleNamespace(bind_consumer=lambda **_kw: None, bind_observer=lambda _observe: None)
    stub = SimpleNamespace()  # store, rules and flow logs are only referred to until the app runs
    app = create_app(settings, worker, store=stub, rules=stub, flow_logs=stub)  # type: ignore[arg-type]
    assert app.conf.stream_buffer_maxsize == 8
    assert app.conf.broker_max_poll_records == 16
    assert app.conf.consumer_max_fetch_size == 2 * 1024 * 1024


def test_the_broker_holds_a_fetch_no_longer_than_the_worker_settings_say(tmp_path: Path) -> None:
    # Faust fixes fetch.max.wait.ms at 1.5 s; a fetch held that long for quiet partitions
    # keeps the frames of the others waiting (pipeline/frames_consumer.py).
    settings = Settings(home=tmp_path, kafka={"bootstrap_servers": "127.0.0.1:9"}, worker={"fetch_wait_ms": 40})
    worker = SimpleNamespace(bind_consumer=lambda **_kw: None, bind_observer=lambda _observe: None)
    stub = SimpleNamespace()
    app = create_app(settings, worker, store=stub, rules=stub, flow_logs=stub)  # type: ignore[arg-type]
    thread = app.consumer._new_consumer_thread()

    async def fetch_wait_ms() -> int:
        kafka_consumer = thread._create_worker_consumer(app.transport)  # made, not started: nothing connects
        try:
            return int(kafka_consumer._fetch_max_wait_ms)
        finally:
            await kafka_consumer.stop()

    assert asyncio.run(fetch_wait_ms()) == 40
