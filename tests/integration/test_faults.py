"""Crash safety on real Apache Kafka and chDB: the worker is killed with SIGKILL at random
moments while frames flow and restarted each time; the store ends up with exactly what
the agent sent, per ENI — nothing lost, nothing counted twice."""

from __future__ import annotations

import random
import time

import pytest

from agents.synthetic import SyntheticConfig
from flowlogs.kafka import ensure_topics
from tests.integration.helpers import paced_agent, streaming_settings, wait_until_stored_exactly

pytestmark = pytest.mark.integration
KILLS = 10


def test_sigkill_at_random_moments_neither_loses_nor_double_counts(settings_factory, worker_factory) -> None:
    settings = streaming_settings(settings_factory)
    ensure_topics(settings)
    # Small chunks: a steady stream, so windows close by watermark and frames straddle them.
    config = SyntheticConfig(enis=6, flows=3000, rate=25_000, duration=45, pace=True, seed=21, chunk_packets=2048)
    agent, sent = paced_agent(settings, config)
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

    wait_until_stored_exactly(worker, want)
    assert kills >= KILLS
