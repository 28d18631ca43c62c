"""`flowlogs rewind` and `flowlogs snapshot …`: go back to a moment, keep an incident's evidence."""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flowlogs.output import print_table
from flowlogs.settings import Settings

console = Console(stderr=True)
Command = Callable[[argparse.Namespace], int]


def _range(args: argparse.Namespace) -> tuple[int, int]:
    from pipeline.export import parse_time

    now = time.time()
    return parse_time(args.from_, option="--from", now=now), parse_time(args.to, option="--to", now=now) if args.to else int(now)


def _run_cancellable(work: Callable[[Callable[[], bool], Any], dict[str, Any] | None], what: str) -> dict[str, Any] | None:
    """Run ``work(cancelled, progress)`` with a progress bar; Ctrl-C cancels it cleanly."""
    from pipeline.frame_range import RangeProgress

    stop = threading.Event()
    progress = RangeProgress()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    result: list[dict[str, Any] | None] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work(stop.is_set, progress))
        except BaseException as exc:  # re-raised in the main thread
            failure.append(exc)

    thread = threading.Thread(target=target, name=what, daemon=True)
    try:
        with Progress(
            TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn("frames read"), TimeElapsedColumn(),
            console=console, disable=not console.is_terminal,
        ) as bar:
            task = bar.add_task(what, total=None)
            thread.start()
            while thread.is_alive():
                thread.join(0.25)
                bar.update(task, completed=progress.messages, total=progress.messages_total or None)
    finally:
        signal.signal(signal.SIGINT, previous)
    if failure:
        raise failure[0]
    if stop.is_set():
        console.print(f"{what} cancelled; nothing was kept")
        return None
    return result[0]


def cmd_rewind(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.results import check_name, open_result_sets
    from pipeline.snapshots import create_rewind

    since, until = _range(args)
    name = check_name(args.name or f"rewind-{since}-{until}")
    with open_result_sets(settings) as results:
        made = _run_cancellable(
            lambda cancelled, progress: create_rewind(
                settings, results, name, since, until, scope=args.scope, window_seconds=args.window,
                rules_file=args.rules, progress=progress, cancelled=cancelled,
            ),
            "rewinding",
        )
    if made is None:
        return 130
    print(json.dumps(made))
    console.print(f"result set [bold]{name}[/]: {made['flows']:,} flow records; read it with --source {name} on reports, or export it")
    return 0


def cmd_snapshot(settings: Settings, args: argparse.Namespace, export: Command) -> int:
    from pipeline.results import check_name, open_result_sets
    from pipeline.snapshots import create_snapshot

    if args.action == "export":
        args.result_set, args.format = args.name, args.format or "jsonl"
        return export(args)
    with open_result_sets(settings) as results:
        if args.action == "list":
            found = results.list()
            if args.format == "jsonl":
                for r in found:
                    print(json.dumps(r))
                return 0
            print_table(["name", "kind", "from", "to", "scope", "window", "flows", "packets", "frames"], [
                [r["name"], r["kind"], _iso(r["from"]), _iso(r["to"]), r["scope"], r["window_seconds"], r["flows"], r["packets"], "yes" if r["with_frames"] else "no"]
                for r in found
            ], title="Result sets (snapshots and rewinds)")
            return 0
        if args.action == "show":
            print(json.dumps(results.show(args.name)))
            return 0
        if args.action == "delete":
            deleted = results.delete(args.name)
            console.print(f"result set {args.name} {'deleted' if deleted else 'does not exist'}")
            return 0 if deleted else 1
        since, until = _range(args)
        name = check_name(args.name)
        made = _run_cancellable(
            lambda cancelled, progress: create_snapshot(
                settings, results, name, since, until, scope=args.scope, with_frames=args.with_frames,
                progress=progress, cancelled=cancelled,
            ),
            "snapshotting",
        )
    if made is None:
        return 130
    print(json.dumps(made))
    return 0


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def add_parsers(sub: Any, settings_of: Callable[[argparse.Namespace], Settings], export: Command) -> None:
    """The rewind and snapshot subcommands; ``export`` is `flowlogs export` (snapshot export uses it)."""
    range_help = "an age (30m, 2h), an ISO time (UTC if no zone) or Unix seconds"
    scope_help = "all, vpc:ID, subnet:ID or eni:ID"

    rw = sub.add_parser("rewind", help="re-aggregate the raw frames of a time range (finer window, other rules) into a named result set")
    rw.add_argument("--from", dest="from_", required=True, help=f"capture time the range starts at: {range_help}")
    rw.add_argument("--to", help="capture time it ends before (default: now)")
    rw.add_argument("--name", help="the result set's name (default rewind-FROM-TO)")
    rw.add_argument("--scope", default="all", help=scope_help)
    rw.add_argument("--window", type=int, help="window length in seconds (default: the worker's)")
    rw.add_argument("--rules", type=Path, help="rule set file for the verdicts (default: the one in force on the rules topic)")
    rw.set_defaults(func=lambda a: cmd_rewind(settings_of(a), a))

    sn = sub.add_parser("snapshot", help="freeze an incident's flows (and raw frames) beyond every TTL; list, show, export, delete")
    sn.add_argument("action", choices=["create", "list", "show", "export", "delete"])
    sn.add_argument("name", nargs="?", help="the snapshot's name (create, show, export, delete)")
    sn.add_argument("--from", dest="from_", help=f"create: first window start of the range: {range_help}")
    sn.add_argument("--to", help="create: windows starting before this (default: now)")
    sn.add_argument("--scope", default="all", help=scope_help)
    sn.add_argument("--with-frames", action="store_true", help="create: keep the raw packet metadata too (read back from the frames topic)")
    sn.add_argument("--format", metavar="tencent|aws|jsonl|parquet", help="export: output format (default jsonl); list: jsonl for JSON lines")
    sn.add_argument("--output", type=Path, metavar="FILE", help="export: write here (default: stdout)")
    sn.add_argument("--since", default=None, help=argparse.SUPPRESS)
    sn.add_argument("--until", default=None, help=argparse.SUPPRESS)
    sn.add_argument("--interface", default=None, help=argparse.SUPPRESS)
    sn.add_argument("--account-id", default=None, help=argparse.SUPPRESS)
    sn.set_defaults(func=lambda a: _snapshot(settings_of, export, a))


def _snapshot(settings_of: Callable[[argparse.Namespace], Settings], export: Command, args: argparse.Namespace) -> int:
    from flowlogs.errors import ConfigError

    if args.action != "list" and not args.name:
        raise ConfigError(f"snapshot {args.action} needs a name")
    if args.action == "create" and not args.from_:
        raise ConfigError("snapshot create needs --from")
    return cmd_snapshot(settings_of(args), args, export)
