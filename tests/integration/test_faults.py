"""Crash safety on real Apache Kafka and chDB: the worker is killed with SIGKILL at random
moments while frames flow and restarted each time; the store ends up with exactly what
the agent sent, per ENI — nothing lost, nothing counted twice."""

from __future__ import annotations

import random
import threading
import time

import pytest

from agents.publisher import PublisherStats
from agents.runner import run_synthetic
from agents.synthetic import SyntheticConfig
from flowlogs.kafka import ensure_topics
from pipeline.process import WorkerProcess
from tests.integration.test_spine import _wait_for

pytestmark = pytest.mark.integration
KILLS = 10


def stored_per_eni(worker: WorkerProcess) -> dict[str, tuple[int, int]]:
    _, rows = worker.query("SELECT interface_id, sum(packets), sum(bytes) FROM flows GROUP BY interface_id")
    return {eni: (int(p), int(b)) for eni, p, b in rows}


def test_sigkill_at_random_moments_neither_loses_nor_double_counts(settings_factory, worker_factory) -> None:
    settings = settings_factory(
        kafka={"session_timeout_seconds": 6},
        worker={"window_seconds": 5, "idle_close_seconds": 2.0, "allowed_lateness_seconds": 1.0},
        store={"batch_seconds": 0.3},
    )
    ensure_topics(settings)
    sent: list[PublisherStats] = []
    # Small chunks: a steady stream, so windows close by watermark and frames straddle them.
    config = SyntheticConfig(enis=6, flows=3000, rate=25_000, duration=45, pace=True, seed=21, chunk_packets=2048)
    agent = threading.Thread(target=lambda: sent.append(run_synthetic(settings, config)), daemon=True)
    rng = random.Random(20261126)
    worker = worker_factory(settings)
    agent.start()
    kills = 0
    while kills < KILLS or agent.is_alive():
        time.sleep(rng.uniform(0.5, 4.0))  # a random moment: mid-window, mid-write, mid-replay
        worker.kill()
        kills += 1
        worker = worker_factory(settings)
    agent.join(120)
    assert sent and sent[0].failed_frames == 0
    want = {eni: (c.packets, c.bytes) for eni, c in sent[0].per_eni.items()}
    assert sum(p for p, _ in want.values()) == 25_000 * 45

    def settled() -> bool:
        stats = worker.stats()
        return stats["open_windows"] == 0 and stats["pending_rows"] == 0 and stored_per_eni(worker) == want

    try:
        _wait_for(settled, 120, "the store to hold exactly what was sent")
    finally:
        print(f"{kills} kills; sent {want}; stored {stored_per_eni(worker)}")
    assert kills >= KILLS
