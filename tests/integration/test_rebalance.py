"""Scale-out on real Apache Kafka and chDB: 1 → 2 → 1 workers of one group while frames
flow. The second worker shares the embedded store through the first one's API; every
rebalance hands partitions over through the committed offset and the close log. The store
ends up with exactly what was sent."""

from __future__ import annotations

import time

import pytest

from agents.synthetic import SyntheticConfig
from deploy.broker import free_port
from flowlogs.kafka import ensure_topics
from tests.integration.helpers import paced_agent, streaming_settings, wait_until_stored_exactly
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


def test_one_two_one_workers_mid_stream_keep_totals_exact(settings_factory, worker_factory) -> None:
    settings = streaming_settings(settings_factory)
    ensure_topics(settings)
    config = SyntheticConfig(enis=8, flows=4000, rate=20_000, duration=40, pace=True, seed=8, chunk_packets=2048)
    agent, sent = paced_agent(settings, config)
    first = worker_factory(settings)
    agent.start()
    time.sleep(8)
    second = worker_factory(settings.with_section("worker", api_port=free_port()))  # 1 → 2
    wait_for(lambda: second.stats()["packets_in"] > 0, 60, "the second worker to get partitions")
    assert "through its owner's API" in second.get("/health")["store"]
    time.sleep(8)
    first_before = first.stats()["packets_in"]
    assert second.stop() == 0  # 2 → 1: it writes what it holds and commits, then leaves
    wait_for(lambda: first.stats()["packets_in"] > first_before, 60, "the first worker to take the partitions back")
    agent.join(120)
    assert sent and sent[0].failed_frames == 0
    want = {eni: (c.packets, c.bytes) for eni, c in sent[0].per_eni.items()}

    wait_until_stored_exactly(first, want)
