"""Shared fixtures. Integration tests run against a real Apache Kafka (KRaft) started once
per session from the pinned jars, and real chDB; nothing is mocked."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.broker import LocalBroker, free_port
from flowlogs.settings import Settings
from pipeline.process import WorkerProcess


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), kind="kafka", port=0, heap="768m")
    bootstrap = broker.start(timeout=180)
    yield bootstrap
    broker.stop()


@pytest.fixture
def settings_factory(tmp_path: Path, kafka_bootstrap: str) -> Callable[..., Settings]:
    """Settings isolated per test: own home, topics, consumer group and API port."""
    run = uuid.uuid4().hex[:8]

    def make(**sections: dict[str, Any]) -> Settings:
        base: dict[str, Any] = {
            "home": tmp_path / "home",
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
