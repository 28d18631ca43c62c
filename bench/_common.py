"""Shared set-up for the benchmarks: a broker (the local one unless one is configured)."""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from deploy.broker import LocalBroker, free_port
from flowlogs.settings import Settings


@contextlib.contextmanager
def broker(tmp: Path) -> Iterator[str]:
    """Bootstrap address: FLOWLOGS_KAFKA__BOOTSTRAP_SERVERS if set, else a local Kafka under ``tmp``."""
    bootstrap = os.environ.get("FLOWLOGS_KAFKA__BOOTSTRAP_SERVERS")
    if bootstrap:
        yield bootstrap
        return
    local = LocalBroker(tmp / "kafka", kind="kafka", port=0, heap="2g")
    try:
        yield local.start(timeout=180)
    finally:
        local.stop()


def fresh_settings(bootstrap: str, home: Path, **worker: object) -> Settings:
    """Settings on a fresh topic set, consumer group and store (under ``home``)."""
    run = uuid.uuid4().hex[:8]
    return Settings(
        home=home,
        kafka={"bootstrap_servers": bootstrap, "topic_prefix": f"bench{run}.", "partitions": 4},
        worker={"app_id": f"bench-{run}", "api_port": free_port(), **worker},
        agent={"agent_id": f"bench-{run}"},
    )


@contextlib.contextmanager
def bench_settings(**worker: object) -> Iterator[Settings]:
    """Settings on a fresh topic set; starts a local Kafka unless FLOWLOGS_KAFKA__BOOTSTRAP_SERVERS is set."""
    with tempfile.TemporaryDirectory(prefix="flowlogs-bench-") as tmp, broker(Path(tmp)) as bootstrap:
        yield fresh_settings(bootstrap, Path(tmp) / "home", **worker)


def machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"
