"""The `flowlogs` command."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from agents.scenarios import SCENARIOS
from flowlogs.errors import ConfigError, FlowLogsError, interrupt
from flowlogs.flow_logs_cli import add_parser as add_flowlog_parser
from flowlogs.incidents import add_parsers as add_incident_parsers
from flowlogs.output import print_table
from flowlogs.settings import Settings, load_settings

if TYPE_CHECKING:
    from agents.runner import CaptureRun

console = Console(stderr=True)


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    if getattr(args, "bootstrap", None):
        settings = settings.with_section("kafka", bootstrap_servers=args.bootstrap)
    return settings


def cmd_broker(args: argparse.Namespace) -> int:
    from deploy.broker import LocalBroker, running_bootstrap

    settings = _settings(args)
    if running_bootstrap(settings.home):
        raise FlowLogsError(f"a broker is already running at {running_bootstrap(settings.home)} (see {settings.home}/broker.json)")
    b = settings.broker
    broker = LocalBroker(
        settings.home / "broker", kind=args.kind or b.kind, host=b.host, port=b.port if args.port is None else args.port, heap=b.heap
    )
    bootstrap = broker.start()
    settings.home.mkdir(parents=True, exist_ok=True)
    broker.write_runfile(settings.home)
    print(bootstrap, flush=True)
    console.print(f"[green]{broker.resolved_kind()} broker ready[/] at {bootstrap}; log {broker.log_path}. Ctrl-C stops it.")
    signal.signal(signal.SIGTERM, interrupt)
    try:
        broker.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
        (settings.home / "broker.json").unlink(missing_ok=True)
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    chosen = [name for name in ("synthetic", "pcap", "interface", "vxlan", "gre") if getattr(args, name) not in (None, False)]
    if len(chosen) != 1:
        raise FlowLogsError(
            "choose one source: --synthetic, --pcap FILE…, --interface IF, --vxlan [ADDR:]PORT or --gre [ADDR]"
            + (f" (got {', '.join('--' + c for c in chosen)})" if chosen else "")
        )
    if args.netns and not args.interface:
        raise FlowLogsError("--netns names the network namespace of --interface; give --interface IF too")
    settings = _settings(args)
    changes = {
        name: value
        for name, value in (("frame_packets", args.frame_packets), ("agent_id", args.agent_id), ("metrics_port", args.metrics_port))
        if value is not None
    }
    if changes:
        settings = settings.with_section("agent", **changes)
    if args.synthetic:
        return _agent_synthetic(settings, args)
    return _agent_capture(settings, args, chosen[0])


def _agent_synthetic(settings: Settings, args: argparse.Namespace) -> int:
    from agents.runner import run_synthetic
    from agents.synthetic import SyntheticConfig

    config = SyntheticConfig(
        enis=args.enis, flows=args.flows, rate=args.rate, duration=args.duration, seed=args.seed, pace=not args.fast,
        scenarios=tuple(args.scenario), scenario_starts_after=args.scenario_after,
    )
    started = time.monotonic()
    stats = run_synthetic(settings, config)
    summary = {
        "packets": stats.packets,
        "bytes": stats.bytes,
        "frames": stats.frames,
        "delivered_frames": stats.delivered_frames,
        "failed_frames": stats.failed_frames,
        "seconds": round(time.monotonic() - started, 3),
    }
    print(json.dumps(summary), flush=True)
    return 0 if stats.failed_frames == 0 else 1


def _agent_capture(settings: Settings, args: argparse.Namespace, kind: str) -> int:
    import threading

    from agents.enis import EniResolver
    from agents.runner import CaptureRun
    from agents.source import CaptureSource
    from schemas.inventory import load_inventory

    if args.inventory is None:
        raise FlowLogsError(f"--{kind} needs --inventory FILE: it says which addresses and mirror sessions belong to which ENI")
    resolver = EniResolver(load_inventory(args.inventory))
    sources: list[CaptureSource]
    if kind == "pcap":
        from agents.pcap import CaptureReader

        sources = [CaptureReader(path) for path in args.pcap]
    elif kind == "interface":
        from agents.afpacket import InterfaceCapture

        sources = [InterfaceCapture(args.interface, netns=args.netns)]
    elif kind == "vxlan":
        from agents.mirror import VxlanReceiver

        sources = [VxlanReceiver(args.vxlan)]
    else:
        from agents.mirror import GreReceiver

        sources = [GreReceiver(args.gre)]
    live = kind != "pcap"
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if live:
        console.print(f"capturing from {sources[0].name}; Ctrl-C or SIGTERM stops")
    run = CaptureRun(settings, sources, resolver, live=live)
    summary = run.run(stop=stop, speed=args.speed, progress=console.is_terminal or args.progress)
    if args.stats:
        _print_eni_stats(run)
    print(json.dumps(summary), flush=True)
    lost = summary["failed_frames"] or summary["dropped_packets"]
    return 1 if lost and not live else 0


def _print_eni_stats(run: CaptureRun) -> None:
    stats = run.publisher.stats
    rows = [
        (eni, c.packets, c.bytes, c.frames, c.dropped_packets)
        for eni, c in sorted(stats.per_eni.items(), key=lambda item: -item[1].packets)
    ]
    rows.append(("(total)", stats.packets, stats.bytes, stats.frames, stats.dropped_packets))
    print_table(["eni", "packets", "bytes", "frames", "dropped"], rows, console=console)
    other = {k: v for k, v in run.summary().items() if k in ("unmatched", "non_ip", "too_short", "bad_tunnel") or k in run.source_counters()}
    console.print("  ".join(f"{k}={v:,}" for k, v in other.items() if isinstance(v, int)))


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline.service import run_worker

    settings = _settings(args)
    changes: dict[str, Any] = {}
    if args.window is not None:
        changes["window_seconds"] = args.window
    if args.api_port is not None:
        changes["api_port"] = args.api_port
    if args.inventory is not None:
        changes["inventory"] = args.inventory
    if args.idle_close is not None:
        changes["idle_close_seconds"] = args.idle_close
    if changes:
        settings = settings.with_section("worker", **changes)
    run_worker(settings, loglevel=args.loglevel)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from flowlogs.up import run_up

    return run_up(_settings(args), args)


def cmd_query(args: argparse.Namespace) -> int:
    from pipeline.query import run_sql

    columns, rows = run_sql(_settings(args), args.sql)
    if args.format == "json":
        for row in rows:
            print(json.dumps(dict(zip(columns, row)), default=str))
    else:
        print_table(columns, rows)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import os

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.export import ExportRange, check_format, export_flows, parse_time

    check_format(args.format)
    now = time.time()
    settings = _settings(args)
    result_set = getattr(args, "result_set", None)
    since, until = None, int(now)
    if result_set is not None:  # a snapshot or a rewind: its own range unless narrowed
        from pipeline.results import open_result_sets

        with open_result_sets(settings) as results:
            described = results.show(result_set)
        since, until = int(described["from"]), int(described["to"])
    if args.since:
        since = parse_time(args.since, option="--since", now=now)
    if args.until:
        until = parse_time(args.until, option="--until", now=now)
    if since is None:
        raise ConfigError("give --since (or --result-set NAME)")
    scope = ExportRange(since=since, until=until, interface=args.interface, result_set=result_set)
    if args.account_id is not None:
        settings = settings.with_section("export", account_id=args.account_id)
    with Progress(
        TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"), TimeElapsedColumn(),
        console=console, disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("export", total=None)
        try:
            summary = export_flows(
                settings, args.format, scope, args.output,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except BrokenPipeError:  # `flowlogs export … | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    console.print(
        f"exported {summary.rows:,} flow records ({summary.packets:,} packets, {summary.bytes:,} bytes)"
        f" to {args.output or 'stdout'}"
    )
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from pipeline import rules_topic
    from schemas.rules import load_rules

    settings = _settings(args)
    if args.action == "show":
        current = rules_topic.published(settings)
        if current is None:
            console.print("no rule set published: workers run the one of worker.rules, or accept everything")
            return 0
        sys.stdout.buffer.write(current.to_json_bytes() + b"\n")
        return 0
    if args.file is None:
        raise ConfigError("`flowlogs rules apply` needs the rule-set FILE")
    rules = load_rules(args.file)
    summary = (
        f"{len(rules.security_groups)} security groups, {len(rules.bindings)} bindings,"
        f" {len(rules.network_acls)} network ACLs, {len(rules.address_sets)} address sets"
    )
    if args.dry_run:
        console.print(f"{args.file} is valid: {summary}")
        return 0
    chosen = rules_topic.publish(settings, rules)
    console.print(f"published rule set version {chosen.version} ({summary}); workers take it within seconds")
    return 0


def cmd_whatif(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.export import parse_time
    from pipeline.query import open_reader
    from pipeline.whatif import what_if
    from schemas.inventory import Inventory, load_inventory
    from schemas.rules import load_rules

    settings = _settings(args)
    now = time.time()
    since = parse_time(args.since, option="--since", now=now)
    until = parse_time(args.until, option="--until", now=now) if args.until else int(now)
    inventory_path = args.inventory or settings.worker.inventory
    inventory = load_inventory(inventory_path) if inventory_path else Inventory()
    rules = load_rules(args.rules)
    with open_reader(settings) as read, Progress(
        TextColumn("judging"), BarColumn(), MofNCompleteColumn(), TextColumn("stored records"), TimeElapsedColumn(),
        console=console, disable=not console.is_terminal, transient=True,
    ) as bar:
        task = bar.add_task("whatif", total=None)
        report = what_if(
            read, rules, inventory, since, until, examples=args.top, page_rows=settings.export.page_rows,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if args.format == "json":
        print(json.dumps(report.as_dict(), default=str))
        return 0
    console.print(
        f"{report.flows:,} stored flows evaluated; {report.changed_flows:,} would change"
        f" ({report.changed_action:,} of them ACCEPT ↔ REJECT)"
    )
    if report.changes:
        print_table(
            ["interface-id", "action", "rule-id", "→ action", "→ rule-id", "flows", "packets", "bytes"],
            [[c.interface_id, c.action, c.rule_id, c.new_action, c.new_rule_id, c.flows, c.packets, c.bytes] for c in report.changes],
        )
    if report.examples:
        columns = list(report.examples[0])
        print_table(columns, [[e[c] for c in columns] for e in report.examples])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.query import open_reader
    from pipeline.reports import REPORTS, report_spec, run_report

    if args.list:
        print_table(
            ["report", "description", "parameters (default)"],
            [
                [s.name, s.description, "  ".join(f"--{p.name}" + (f" ({p.default})" if p.default is not None else "") for p in s.params)]
                for s in REPORTS.values()
            ],
        )
        return 0
    if args.name is None:
        raise ConfigError(f"name a report: {', '.join(REPORTS)}; `flowlogs report --list` describes them")
    spec = report_spec(args.name)
    # The report's own flags, generated from its parameters: `flowlogs report NAME --help` lists them.
    flags = argparse.ArgumentParser(prog=f"flowlogs report {spec.name}", description=spec.description)
    for param in spec.params:
        shown = f" (default: {param.default})" if param.default is not None else ""
        flags.add_argument(f"--{param.name}", metavar=param.kind.upper(), help=param.help + shown)
    flags.add_argument("--format", choices=["table", "json"], default="table", help="a table, or one JSON object per row")
    options, unknown = flags.parse_known_args(args.params)
    if unknown:
        raise ConfigError(
            f"report {spec.name} takes {', '.join('--' + p.name for p in spec.params)} and --format, not {' '.join(unknown)}"
        )
    given = {p.name: getattr(options, p.name) for p in spec.params if getattr(options, p.name) is not None}
    settings = _settings(args)
    with open_reader(settings) as read:
        result = run_report(read, spec.name, given, settings)
    if options.format == "json":
        for row in result.row_dicts():
            print(json.dumps(row, default=str))
    else:
        print_table(result.columns, result.rows, title=f"{spec.name}: {result.describe()}")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from schemas import generate

    if args.write:
        for path in generate.write():
            console.print(f"wrote {path}")
        return 0
    drift = generate.drifted()
    if drift:
        console.print(f"[red]generated files drifted from schemas/:[/] {', '.join(drift)}; run `flowlogs schemas --write`")
        return 1
    console.print("schemas/generated is up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowlogs", description="Full-flow network flow logs: agents → Kafka → Faust → ClickHouse.")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides settings; default: the local broker)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker", help="start a local Kafka broker and print its bootstrap address")
    b.add_argument("--port", type=int, help="listen port (0 = a free one; default from settings: 9092)")
    b.add_argument("--kind", choices=["auto", "kafka", "tansu"])
    b.set_defaults(func=cmd_broker)

    a = sub.add_parser("agent", help="capture packets and publish packet-metadata frames")
    a.add_argument("--synthetic", action="store_true", help="generate traffic instead of capturing")
    a.add_argument("--pcap", type=Path, nargs="+", metavar="FILE", help="replay pcap/pcapng files (gzip too)")
    a.add_argument("--interface", metavar="IF", help="capture live on this interface (AF_PACKET; root or CAP_NET_RAW)")
    a.add_argument("--netns", metavar="NAME", help="with --interface: the interface is in this network namespace (ip netns)")
    a.add_argument("--vxlan", nargs="?", const="4789", metavar="[ADDR:]PORT", help="receive VXLAN mirror sessions (default port 4789)")
    a.add_argument("--gre", nargs="?", const="", metavar="ADDR", help="receive GRE/ERSPAN mirror sessions (raw socket; root)")
    a.add_argument("--inventory", type=Path, help="inventory YAML/JSON: ENIs, their addresses and mirror sessions")
    a.add_argument("--speed", type=float, help="with --pcap: replay at this multiple of capture pace (default: as fast as possible)")
    a.add_argument("--stats", action="store_true", help="print per-ENI packets, bytes, frames and drops at the end")
    a.add_argument("--progress", action="store_true", help="show the progress line even when stderr is not a terminal")
    a.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (0 = a free one)")
    a.add_argument("--enis", type=int, default=4)
    a.add_argument("--flows", type=int, default=1000, help="distinct flows")
    a.add_argument("--rate", type=float, default=20_000, help="packets per second")
    a.add_argument("--duration", type=float, default=10.0, help="seconds of traffic")
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--fast", action="store_true", help="don't pace: capture times advance at --rate, sending as fast as possible")
    a.add_argument(
        "--scenario", action="append", default=[], choices=SCENARIOS,
        help="with --synthetic: plant traffic a detector alarms on (agents/scenarios.py); repeat for several",
    )
    a.add_argument("--scenario-after", type=float, default=0.0, metavar="SECONDS", help="capture seconds before planted traffic starts")
    a.add_argument("--frame-packets", type=int, help="packets per frame")
    a.add_argument("--agent-id")
    a.set_defaults(func=cmd_agent)

    w = sub.add_parser("worker", help="run the stream worker (Faust): frames → flow records → store and topic")
    w.add_argument("--window", type=int, help="window length, seconds (default 60)")
    w.add_argument("--api-port", type=int, help="HTTP API port (default 6066)")
    w.add_argument("--inventory", type=Path, help="inventory YAML/JSON for vpc-id/subnet-id")
    w.add_argument("--idle-close", type=float, help="close windows after this many idle seconds")
    w.add_argument("--loglevel", default="info")
    w.set_defaults(func=cmd_worker)

    u = sub.add_parser("up", help="broker + worker + synthetic agent, live progress, then top talkers")
    u.add_argument("--duration", type=float, default=30.0, help="seconds of traffic (Ctrl-C stops earlier)")
    u.add_argument("--rate", type=float, default=50_000)
    u.add_argument("--enis", type=int, default=8)
    u.add_argument("--flows", type=int, default=5000)
    u.add_argument("--window", type=int, default=10, help="window length for the demo, seconds")
    u.add_argument("--scenario", action="append", default=[], choices=SCENARIOS, help="plant traffic that raises alarms; repeat for several")
    u.add_argument(
        "--rules", type=Path, metavar="FILE",
        help="security groups and ACLs in force (default: a demo set for the synthetic layout, flowlogs/up.py demo_rules)",
    )
    u.set_defaults(func=cmd_up)

    q = sub.add_parser("query", help="run SQL against the flow store")
    q.add_argument("sql")
    q.add_argument("--format", choices=["table", "json"], default="table")
    q.set_defaults(func=cmd_query)

    e = sub.add_parser("export", help="write stored flow records as Tencent/AWS flow-log text, JSON lines or Parquet")
    e.add_argument("--since", help="windows starting at or after: an age (30m, 1h, 2d), an ISO time (UTC if no zone) or Unix seconds")
    e.add_argument("--until", help="windows starting before this (same forms; default: now)")
    e.add_argument("--format", required=True, metavar="tencent|aws|jsonl|parquet")
    e.add_argument("--output", type=Path, metavar="FILE", help="write here (default: stdout)")
    e.add_argument("--interface", metavar="ENI", help="only this ENI's records")
    e.add_argument("--account-id", help="account-id of tencent/aws lines (default: the export.account_id setting, else '-')")
    e.add_argument("--result-set", metavar="NAME", help="a snapshot's or rewind's records instead of live ones (its range unless --since/--until)")
    e.set_defaults(func=cmd_export)

    add_incident_parsers(sub, _settings, cmd_export)
    add_flowlog_parser(sub, _settings)

    r = sub.add_parser("rules", help="validate and publish a security-group / network-ACL rule set, or show the one in force")
    r.add_argument("action", choices=["apply", "show"])
    r.add_argument("file", nargs="?", type=Path, metavar="FILE", help="rule set YAML/JSON (schemas/rules.py)")
    r.add_argument("--dry-run", action="store_true", help="validate only")
    r.set_defaults(func=cmd_rules)

    wi = sub.add_parser("whatif", help="replay stored flows through a proposed rule set; report changed verdicts")
    wi.add_argument("--rules", required=True, type=Path, metavar="FILE", help="the proposed rule set")
    wi.add_argument("--since", required=True, help="windows starting at or after: an age (30m, 24h), an ISO time or Unix seconds")
    wi.add_argument("--until", help="windows starting before this (default: now)")
    wi.add_argument("--inventory", type=Path, help="inventory (default: the worker.inventory setting)")
    wi.add_argument("--top", type=int, default=20, help="examples to show (biggest by bytes)")
    wi.add_argument("--format", choices=["table", "json"], default="table")
    wi.set_defaults(func=cmd_whatif)

    rp = sub.add_parser("report", help="run a named report (top talkers, bandwidth, storms, rejects, regions, baselines…)")
    rp.add_argument("name", nargs="?", help="the report; `flowlogs report --list` names them")
    rp.add_argument("params", nargs=argparse.REMAINDER, help="the report's flags; `flowlogs report NAME --help` lists them")
    rp.add_argument("--list", action="store_true", help="list the reports and their parameters")
    rp.set_defaults(func=cmd_report)

    s = sub.add_parser("schemas", help="check or rewrite schemas/generated from the definitions")
    s.add_argument("--write", action="store_true")
    s.set_defaults(func=cmd_schemas)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except FlowLogsError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
