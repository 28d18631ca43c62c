"""Security on the wire: a local Apache Kafka that only takes SASL/PLAIN logins; two
workers and two agents log in, every packet sent is stored exactly once per ENI; a wrong
password is refused with a message that says so."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.synthetic import SyntheticConfig
from deploy.broker import LocalBroker, free_port
from flowlogs.errors import BrokerError
from flowlogs.kafka import ensure_topics
from flowlogs.settings import Settings
from tests.integration.helpers import paced_agent, wait_until_stored_exactly

pytestmark = pytest.mark.integration

USER, PASSWORD = "flowlogs", "s3cret-pass-phrase"


@pytest.fixture(scope="module")
def sasl_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = LocalBroker(tmp_path_factory.mktemp("kafka-sasl"), kind="kafka", port=0, heap="512m", sasl_users={USER: PASSWORD})
    yield broker.start(timeout=180)
    broker.stop()


def sasl_settings(bootstrap: str, home: Path, password: str = PASSWORD, **worker: object) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(
        home=home,
        kafka={
            "bootstrap_servers": bootstrap, "topic_prefix": f"s{run}.", "partitions": 4, "session_timeout_seconds": 6,
            "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": USER, "sasl_password": password,
        },
        worker={"app_id": f"sasl-{run}", "window_seconds": 5, "idle_close_seconds": 2.0, "allowed_lateness_seconds": 1.0,
                "api_port": free_port(), **worker},
        store={"batch_seconds": 0.3},
    )


def test_two_workers_and_two_agents_over_sasl(sasl_bootstrap: str, worker_factory, tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="refused the PLAIN login"):
        ensure_topics(sasl_settings(sasl_bootstrap, tmp_path / "bad", password="wrong-password"), timeout=10)
    settings = sasl_settings(sasl_bootstrap, tmp_path / "home")
    ensure_topics(settings)
    first = worker_factory(settings)
    second = worker_factory(settings.with_section("worker", api_port=free_port()))
    agents = [
        paced_agent(settings.with_section("agent", agent_id=f"agent-{i}"),
                    SyntheticConfig(enis=4, flows=600, rate=6_000, duration=20, seed=30 + i, chunk_packets=1024))
        for i in range(2)
    ]
    for thread, _ in agents:
        thread.start()
    for thread, _ in agents:
        thread.join(90)
    sent: dict[str, tuple[int, int]] = {}
    for _, stats in agents:
        assert stats and stats[0].failed_frames == 0
        for eni, counters in stats[0].per_eni.items():
            packets, octets = sent.get(eni, (0, 0))
            sent[eni] = (packets + counters.packets, octets + counters.bytes)
    assert len(sent) == 8  # two agents, four ENIs each
    wait_until_stored_exactly(first, sent)
    assert second.stats()["packets_in"] > 0 and first.stats()["packets_in"] > 0  # both consumed
