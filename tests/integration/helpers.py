"""What several integration tests do the same way: run `flowlogs agent` as a child process,
stream paced synthetic traffic from a thread, read per-ENI totals from the store, hand
frames to an in-process FlowWorker as Faust would."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agents.publisher import PublisherStats
from agents.runner import run_synthetic
from agents.source import per_eni_slices
from agents.synthetic import SyntheticConfig, SyntheticTraffic
from flowlogs.settings import Settings
from pipeline.process import WorkerProcess
from schemas import frame
from schemas.inventory import Inventory


def agent_command(settings: Settings, tmp_path: Path, inventory: Inventory, *args: str) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of `flowlogs agent ARGS --inventory …` on the test's broker and topics."""
    inventory_path = tmp_path / "inventory.yaml"
    inventory.dump(inventory_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLOGS_")}
    env.update(
        FLOWLOGS_HOME=str(tmp_path / "agent-home"),
        FLOWLOGS_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers or "",
        FLOWLOGS_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix,
    )
    return [sys.executable, "-m", "flowlogs.cli", "agent", *args, "--inventory", str(inventory_path)], env


def run_agent(settings: Settings, tmp_path: Path, inventory: Inventory, *args: str) -> dict[str, Any]:
    """Run the agent to the end; its JSON summary."""
    argv, env = agent_command(settings, tmp_path, inventory, *args)
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(orjson.loads(out.stdout.strip().splitlines()[-1]))


def streaming_settings(settings_factory: Callable[..., Settings]) -> Settings:
    """Short windows and timeouts, so workers come and go within a test."""
    return settings_factory(
        kafka={"session_timeout_seconds": 6},
        worker={"window_seconds": 5, "idle_close_seconds": 2.0, "allowed_lateness_seconds": 1.0},
        store={"batch_seconds": 0.3},
    )


def paced_agent(settings: Settings, config: SyntheticConfig) -> tuple[threading.Thread, list[PublisherStats]]:
    """A synthetic agent publishing in a thread (not started); its stats land in the list."""
    sent: list[PublisherStats] = []
    return threading.Thread(target=lambda: sent.append(run_synthetic(settings, config)), daemon=True), sent


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until it holds; the seconds that took (AssertionError naming ``what`` after ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stored_per_eni(worker: WorkerProcess) -> dict[str, tuple[int, int]]:
    _, rows = worker.query("SELECT interface_id, sum(packets), sum(bytes) FROM flows GROUP BY interface_id")
    return {eni: (int(p), int(b)) for eni, p, b in rows}


def wait_until_stored_exactly(worker: WorkerProcess, want: dict[str, tuple[int, int]], timeout: float = 120) -> None:
    """Wait until the worker has nothing open or pending and the store holds exactly ``want``
    (ENI → (packets, bytes)); on failure the message shows both."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = worker.stats()
        if stats["open_windows"] == 0 and stats["pending_rows"] == 0 and stored_per_eni(worker) == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"after {timeout:.0f} s the store holds {stored_per_eni(worker)}, not what was sent: {want}")


@dataclass
class Carrier:
    """What the worker reads from a Faust message."""

    value: bytes | None
    key: bytes
    topic: str
    partition: int
    offset: int


def frame_carriers(config: SyntheticConfig, agent_id: str) -> tuple[list[Carrier], int]:
    """The traffic of ``config`` as frames (4096 packets, 1 s at most) of one partition, in
    order; and how many packets they hold."""
    messages: list[Carrier] = []
    sequences: dict[str, int] = {}
    for batch in SyntheticTraffic(config).batches():
        for eni, packets in per_eni_slices(batch, 4096, 10**9):
            sequences[eni] = sequences.get(eni, -1) + 1
            data = frame.encode(packets, (eni,), agent_id=agent_id, sequence=sequences[eni])
            messages.append(Carrier(data, eni.encode(), "frames", 0, len(messages)))
    return messages, sum(frame.decode(m.value).packet_count for m in messages if m.value is not None)
