"""`flowlogs up`: the whole stack on one machine, live progress, then a top-talkers table."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from agents.publisher import PublisherStats
from agents.runner import run_synthetic
from agents.synthetic import SyntheticConfig, synthetic_inventory
from deploy.broker import LocalBroker, free_port, running_bootstrap
from flowlogs.errors import FlowLogsError
from flowlogs.kafka import ensure_topics
from flowlogs.settings import Settings
from pipeline import reports
from pipeline.query import query_api

console = Console()


def _get(url: str, timeout: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return dict(json.loads(response.read()))


def _post(url: str, timeout: float = 120.0) -> dict[str, Any]:
    request = urllib.request.Request(url, data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return dict(json.loads(response.read()))


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def start_worker(settings: Settings, *, window: int, inventory: Path, api_port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """`flowlogs worker` as a child process; returns once its API answers."""
    env = {
        **os.environ,
        "FLOWLOGS_HOME": str(settings.home),
        "FLOWLOGS_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers or "",
    }
    cmd = [
        sys.executable, "-m", "flowlogs.cli", "worker",
        "--window", str(window), "--api-port", str(api_port), "--inventory", str(inventory), "--idle-close", "3",
    ]
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FlowLogsError(f"the worker exited with code {proc.returncode}; {log_path}:\n{_tail(log_path)}")
        try:
            _get(f"http://127.0.0.1:{api_port}/health")
            return proc
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    proc.kill()
    raise FlowLogsError(f"the worker API did not answer within 90 s; see {log_path}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _progress(sent: PublisherStats, worker: dict[str, Any], elapsed: float) -> Table:
    table = Table(title=f"flowlogs up — {elapsed:5.1f} s", show_header=True)
    for col in ("packets sent", "packets in", "lag (packets)", "flows out", "rows stored", "open windows", "dead letters"):
        table.add_column(col, justify="right")
    packets_in = int(worker.get("packets_in", 0))
    table.add_row(
        f"{sent.packets:,}",
        f"{packets_in:,}",
        f"{max(sent.packets - packets_in, 0):,}",
        f"{int(worker.get('flows_out', 0)):,}",
        f"{int(worker.get('rows_written', 0)):,}",
        str(worker.get("open_windows", 0)),
        str(worker.get("dead_letters", 0)),
    )
    return table


def run_up(settings: Settings, args: argparse.Namespace) -> int:
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    broker: LocalBroker | None = None
    bootstrap = settings.kafka.bootstrap_servers or running_bootstrap(home)
    if bootstrap is None:
        broker = LocalBroker(home / "broker", kind=settings.broker.kind, host=settings.broker.host, port=0, heap=settings.broker.heap)
        console.print(f"starting a local {broker.resolved_kind()} broker (first run fetches its jars)…")
        bootstrap = broker.start()
        console.print(f"broker at [bold]{bootstrap}[/]")
    settings = settings.with_section("kafka", bootstrap_servers=bootstrap)
    worker: subprocess.Popen[bytes] | None = None
    try:
        ensure_topics(settings)
        seed = 1
        inventory = home / "synthetic-inventory.yaml"
        synthetic_inventory(args.enis, seed).dump(inventory)
        api_port = free_port()
        api = f"http://127.0.0.1:{api_port}"
        console.print("starting the worker…")
        worker = start_worker(settings, window=args.window, inventory=inventory, api_port=api_port, log_path=home / "worker.log")
        console.print(f"worker API at [bold]{api}[/]; log {home / 'worker.log'}")
        stop = threading.Event()
        sent = PublisherStats()
        failure: list[BaseException] = []

        def produce() -> None:
            config = SyntheticConfig(enis=args.enis, flows=args.flows, rate=args.rate, duration=args.duration, seed=seed)
            try:
                run_synthetic(settings, config, stop=stop, on_progress=lambda s: _copy(s, sent))
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)

        agent = threading.Thread(target=produce, name="synthetic-agent", daemon=True)
        started = time.monotonic()
        agent.start()
        stats: dict[str, Any] = {}
        try:
            with Live(_progress(sent, stats, 0), console=console, refresh_per_second=4) as live:
                while agent.is_alive():
                    agent.join(0.5)
                    stats = _safe_stats(api, stats)
                    live.update(_progress(sent, stats, time.monotonic() - started))
                # Let the worker catch up with everything sent, then write every open window.
                deadline = time.monotonic() + 60
                while int(stats.get("packets_in", 0)) < sent.packets and time.monotonic() < deadline:
                    time.sleep(0.5)
                    stats = _safe_stats(api, stats)
                    live.update(_progress(sent, stats, time.monotonic() - started))
                stats = _post(f"{api}/drain")
                live.update(_progress(sent, stats, time.monotonic() - started))
        except KeyboardInterrupt:
            console.print("stopping…")
            stop.set()
            agent.join()
            stats = _post(f"{api}/drain")
        if failure:
            raise FlowLogsError(f"the synthetic agent failed: {failure[0]}")
        columns, rows = query_api(api, reports.top_talkers(10))
        from flowlogs.cli import print_table

        print_table(columns, rows, title="Top talkers (bytes)")
        t_cols, t_rows = query_api(api, reports.TOTALS)
        totals = dict(zip(t_cols, t_rows[0]))
        console.print(
            f"sent {sent.packets:,} packets / {sent.bytes:,} bytes; stored {int(totals['packets'] or 0):,} packets /"
            f" {int(totals['bytes'] or 0):,} bytes in {int(totals['records']):,} flow records."
            f" Query more with: flowlogs query \"SELECT …\" (store: {settings.chdb_path})"
        )
        return 0
    finally:
        if worker is not None:
            stop_process(worker)
        if broker is not None:
            broker.stop()


def _safe_stats(api: str, previous: dict[str, Any]) -> dict[str, Any]:
    try:
        return _get(f"{api}/stats")
    except (urllib.error.URLError, OSError):
        return previous


def _copy(source: PublisherStats, target: PublisherStats) -> None:
    target.packets, target.bytes, target.frames = source.packets, source.bytes, source.frames
