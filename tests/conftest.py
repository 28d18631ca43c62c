"""Shared fixtures. Integration tests run against a real Apache Kafka (KRaft) and a real
ClickHouse; nothing is mocked.

Where a Docker engine answers, Kafka and a ClickHouse server come from testcontainers (the
official images, once per session; each test gets its own database on the server). Where
none does — as on the development machines — Kafka is started from the pinned jars and the
store is embedded chDB. The same tests run either way; ``FLOWLOGS_TEST_CONTAINERS=0``
forces the local processes. Tests of chDB-only behaviour (the data-dir lock, the owner's
API) use the embedded store whatever the session has.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.broker import LocalBroker, free_port
from flowlogs.settings import Settings
from pipeline.process import WorkerProcess


KAFKA_IMAGE = "apache/kafka:4.1.1"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"


def docker_answers() -> bool:
    """True when testcontainers can run containers here (an engine answers on DOCKER_HOST or
    the default socket)."""
    if os.environ.get("FLOWLOGS_TEST_CONTAINERS") == "0":
        return False
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(3)
                probe.connect(host.removeprefix("unix://"))
        else:
            address = host.split("://", 1)[-1].rsplit(":", 1)
            socket.create_connection((address[0], int(address[1]) if len(address) > 1 else 2375), timeout=3).close()
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="session")
def containers() -> bool:
    return docker_answers()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory, containers: bool) -> Iterator[str]:
    if containers:
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), kind="kafka", port=0, heap="768m")
    bootstrap = broker.start(timeout=180)
    yield bootstrap
    broker.stop()


@pytest.fixture(scope="session")
def clickhouse_url(containers: bool) -> Iterator[str | None]:
    """``http://user:password@host:port`` of a ClickHouse server container, or None (chDB)."""
    if not containers:
        yield None
        return
    from testcontainers.community.clickhouse import ClickHouseContainer

    with ClickHouseContainer(CLICKHOUSE_IMAGE, port=8123, username="flowlogs", password="flowlogs") as server:
        yield f"http://flowlogs:flowlogs@{server.get_container_host_ip()}:{server.get_exposed_port(8123)}"


@pytest.fixture
def settings_factory(tmp_path: Path, kafka_bootstrap: str, clickhouse_url: str | None) -> Callable[..., Settings]:
    """Settings isolated per test: own home, topics, consumer group, API port and database."""
    run = uuid.uuid4().hex[:8]
    store: dict[str, Any] = {"url": clickhouse_url, "database": f"flowlogs_{run}"} if clickhouse_url else {}

    def make(**sections: dict[str, Any]) -> Settings:
        base: dict[str, Any] = {
            "home": tmp_path / "home",
            "store": store,
            "kafka": {"bootstrap_servers": kafka_bootstrap, "topic_prefix": f"t{run}.", "partitions": 4},
            "worker": {"app_id": f"worker-{run}", "window_seconds": 5, "idle_close_seconds": 2.0, "api_port": free_port()},
            "agent": {"agent_id": f"agent-{run}"},
        }
        for name, values in sections.items():
            base[name] = {**base.get(name, {}), **values}
        return Settings(**base)

    return make


@pytest.fixture
def worker_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[Settings], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- worker log {worker.log_path} ---\n{worker.log_tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
