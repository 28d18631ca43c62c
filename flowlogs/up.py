"""`flowlogs up`: the whole stack on one machine, live progress, then a top-talkers table."""

from __future__ import annotations

import argparse
import signal
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from agents import scenarios
from agents.publisher import PublisherStats
from agents.runner import run_synthetic
from agents.synthetic import SyntheticConfig, synthetic_inventory
from deploy.broker import LocalBroker, free_port, running_bootstrap
from flowlogs.errors import FlowLogsError, interrupt
from flowlogs.kafka import ensure_topics
from flowlogs.output import print_table
from flowlogs.settings import Settings
from pipeline import reports
from pipeline.process import WorkerProcess
from schemas.inventory import Inventory
from schemas.rules import RuleSet, load_rules, parse_rules

console = Console()


def _progress(sent: PublisherStats, worker: dict[str, Any], elapsed: float) -> Table:
    table = Table(
        title=f"flowlogs up — {elapsed:5.1f} s",
        caption="packets sent by the agent / received by the worker; flow records out / stored; open windows; dead letters; alerts raised",
    )
    for col in ("sent", "received", "lag", "flows", "stored", "windows", "dead", "alerts"):
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
        str(worker.get("alerts_raised", 0)),
    )
    return table


def run_up(settings: Settings, args: argparse.Namespace) -> int:
    # A closed terminal or a `kill` stops `up` the way Ctrl-C does: children are cleaned up.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
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
    worker: WorkerProcess | None = None
    try:
        ensure_topics(settings)
        seed = 1
        layout = synthetic_inventory(args.enis, seed)
        inventory = home / "synthetic-inventory.yaml"
        layout.dump(inventory)
        rules = _rules_in_force(args.rules, layout, home)
        settings = settings.with_section(
            "worker", window_seconds=args.window, api_port=free_port(), inventory=inventory.resolve(), idle_close_seconds=3,
            rules=rules.resolve(),
        )
        planted = tuple(args.scenario)
        if planted:
            settings = _demo_detection(settings, planted, args, seed)
        console.print("starting the worker…")
        worker = WorkerProcess(settings, home / "worker.log").start()
        console.print(f"worker API at [bold]{worker.api}[/]; log {worker.log_path}")
        stop = threading.Event()
        sent = PublisherStats()
        failure: list[Exception] = []

        def produce() -> None:
            config = SyntheticConfig(
                enis=args.enis, flows=args.flows, rate=args.rate, duration=args.duration, seed=seed, scenarios=planted,
                # Uncommon protocols need a learned baseline first (2 windows in the demo).
                scenario_starts_after=3 * args.window if "uncommon" in planted else 0.0,
            )
            try:
                run_synthetic(settings, config, stop=stop, on_progress=lambda s: _copy(s, sent))
            except Exception as exc:  # reported by the main thread, after cleanup of the others
                failure.append(exc)

        agent = threading.Thread(target=produce, name="synthetic-agent", daemon=True)
        # This run's windows: the synthetic agent stamps packets with the wall clock, from now on.
        since = int(time.time()) // args.window * args.window
        started = time.monotonic()
        agent.start()
        stats: dict[str, Any] = {}
        with Live(_progress(sent, stats, 0), console=console, refresh_per_second=4) as live:

            def refresh() -> None:
                nonlocal stats
                stats = _safe_stats(worker, stats)
                live.update(_progress(sent, stats, time.monotonic() - started))

            try:
                while agent.is_alive():
                    agent.join(0.5)
                    refresh()
            except KeyboardInterrupt:
                console.print("stopping the agent…")
                stop.set()
                agent.join()
            # Let the worker catch up with everything sent, then write every open window.
            deadline = time.monotonic() + 60
            while int(stats.get("packets_in", 0)) < sent.packets and time.monotonic() < deadline:
                time.sleep(0.5)
                refresh()
            worker.post("/drain")
            refresh()
        if failure:
            raise FlowLogsError(f"the synthetic agent failed: {failure[0]}")
        console.print()
        columns, rows = worker.query(reports.top_talkers(10, since))
        print_table(columns, rows, title="Top talkers (bytes)")
        v_cols, v_rows = worker.query(reports.top_talkers(10, since, by=VERDICT_COLUMNS, metric="packets"))
        print_table(v_cols, v_rows, title=f"Verdicts by deciding rule (packets; rule set {rules.name})")
        t_cols, t_rows = worker.query(reports.totals(since))
        totals = dict(zip(t_cols, t_rows[0]))
        if planted:
            a_cols, a_rows = worker.query(ALERTS_SQL)
            print_table(a_cols, a_rows, title="Alerts")
        console.print(
            f"this run: sent {sent.packets:,} packets / {sent.bytes:,} bytes;"
            f" stored {int(totals['packets'] or 0):,} packets / {int(totals['bytes'] or 0):,} bytes"
            f" in {int(totals['records']):,} flow records."
            f" Query more with: flowlogs query \"SELECT …\" (store: {settings.chdb_path})"
        )
        return 0
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()


VERDICT_COLUMNS = ("action", "rule_layer", "rule_id")
ALERTS_SQL = (
    "SELECT detector, severity, state, updates, source, target, summary FROM alerts FINAL ORDER BY first_seen, detector, source"
)


def _rules_in_force(path: Path | None, layout: Inventory, home: Path) -> Path:
    """The rule set file the worker starts with: ``path`` once it validates (a bad file
    stops `up` here, naming file, line and field), else :func:`demo_rules` written to ``home``."""
    if path is not None:
        load_rules(path)
        return path
    demo = home / "synthetic-rules.json"
    demo.write_bytes(demo_rules(layout).to_json_bytes())
    return demo


def demo_rules(layout: Inventory) -> RuleSet:
    """Security groups and a network ACL for the synthetic layout, so the demo's records carry
    both verdicts and the rules that decided them. The first subnet is a web tier, open to
    the world on 80 and 443; the second a data tier whose database and queue ports answer
    its VPC only; both answer pings. Both reach anywhere out (the synthetic ENIs are clients
    of public services: requests out, replies in), except the address ranges of an
    ``untrusted`` set, which the subnets' ACL refuses both ways. Rejects stay few and spread
    over many peers, as in a real VPC: a block per port would make every client a "scanner"
    of that port."""
    anywhere, vpc = "0.0.0.0/0", str(layout.vpcs[0].cidr)
    untrusted = {"address_set": "untrusted"}

    def ingress(tier: str, ports: tuple[str, ...], source: str) -> list[dict[str, str]]:
        ping = {"id": f"{tier}-in-ping", "action": "ACCEPT", "protocol": "icmp", "source": anywhere}
        return [
            *({"id": f"{tier}-in-{port}", "action": "ACCEPT", "protocol": "tcp", "ports": port, "source": source} for port in ports),
            ping,
        ]

    def egress(tier: str) -> list[dict[str, str]]:
        return [{"id": f"{tier}-out-all", "action": "ACCEPT", "protocol": "all", "destination": anywhere}]

    web = layout.subnets[0].id
    return parse_rules(
        {
            "address_sets": [{"id": "untrusted", "cidrs": ["45.0.0.0/8", "185.0.0.0/8"]}],
            "security_groups": [
                {"id": "sg-web", "ingress": ingress("web", ("80", "443"), anywhere), "egress": egress("web")},
                {"id": "sg-data", "ingress": ingress("data", ("5432", "6379", "9092"), vpc), "egress": egress("data")},
            ],
            "bindings": [
                {"eni": e.id, "security_groups": ["sg-web" if e.subnet == web else "sg-data"]} for e in layout.enis
            ],
            "network_acls": [{
                "id": "acl-edge",
                "subnets": [s.id for s in layout.subnets],
                "inbound": [
                    {"id": "edge-in-untrusted", "action": "DROP", "protocol": "all", "source": untrusted},
                    {"id": "edge-in", "action": "ACCEPT", "protocol": "all", "source": anywhere},
                ],
                "outbound": [
                    {"id": "edge-out-untrusted", "action": "DROP", "protocol": "all", "destination": untrusted},
                    {"id": "edge-out", "action": "ACCEPT", "protocol": "all", "destination": anywhere},
                ],
            }],
        },
        "the demo rule set of `flowlogs up`",
    )


def _demo_detection(settings: Settings, planted: tuple[str, ...], args: argparse.Namespace, seed: int) -> Settings:
    """Detection settings the planted scenarios need: the demo threat list, a limit, a short learn period."""
    if args.enis < 4:
        raise FlowLogsError("planted scenarios use ENIs 0–3: give --enis 4 or more")
    lists = settings.home / "threat-lists"
    lists.mkdir(exist_ok=True)
    (lists / "demo-threats.netset").write_text(scenarios.THREAT_LIST)
    eni_ids = [e.id for e in synthetic_inventory(args.enis, seed).enis]
    detect = scenarios.scenario_settings(planted, eni_ids, args.rate, args.window)
    return settings.model_copy(
        update={"detect": settings.detect.model_validate({**settings.detect.model_dump(), **detect, "threat_ip": {"lists": [lists.resolve()]}})}
    )


def _safe_stats(worker: WorkerProcess, previous: dict[str, Any]) -> dict[str, Any]:
    try:
        return worker.stats()
    except (urllib.error.URLError, OSError):
        return previous


def _copy(source: PublisherStats, target: PublisherStats) -> None:
    target.packets, target.bytes, target.frames = source.packets, source.bytes, source.frames
