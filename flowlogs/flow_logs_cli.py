"""`flowlogs flowlog …`: create, list, describe, update, enable, disable and delete flow logs.

The command writes the flow-logs topic directly (as the worker API does), so it works
with or without a running worker; every worker picks the change up within seconds.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from flowlogs.errors import ConfigError
from flowlogs.output import print_table
from flowlogs.settings import Settings

_CAUGHT_UP_SECONDS = 15.0


def _current(settings: Settings) -> dict[str, Any]:
    from flowlogs.kafka import ensure_topics
    from pipeline.flow_log_registry import FlowLogFollower

    ensure_topics(settings)
    follower = FlowLogFollower(settings).start()
    try:
        if not follower.wait_caught_up(_CAUGHT_UP_SECONDS):
            raise ConfigError(f"could not read the flow-logs topic {follower.topic} within {_CAUGHT_UP_SECONDS:.0f} s")
        return dict(follower.flow_logs())
    finally:
        follower.stop()


def _change(args: argparse.Namespace, **forced: Any) -> Any:
    from pipeline.flow_log_registry import parse_change

    fields = {
        "name": args.name, "scope": args.scope, "filter": args.filter, "window_seconds": args.window,
        "destinations": args.destinations.split(",") if args.destinations else None,
    }
    return parse_change({**{k: v for k, v in fields.items() if v is not None}, **forced})


def cmd_flowlog(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline import flow_log_registry
    from schemas.flow_logs import FlowLog

    flow_logs = _current(settings)
    if args.action == "list":
        rows = [[f.id, f.name, f.scope, f.filter, f.window_seconds, ",".join(f.destinations), "yes" if f.enabled else "no", f.version]
                for f in sorted(flow_logs.values(), key=lambda f: f.name)]
        print_table(["id", "name", "scope", "filter", "window", "destinations", "enabled", "version"], rows, title="Flow logs")
        if not flow_logs:
            print("no flow log defined: every ENI is recorded (ALL, store and topic) until one is created")
        return 0
    if args.action == "create":
        if not args.name:
            raise ConfigError("flowlog create needs --name")
        made = FlowLog.create(_change(args), window_seconds=settings.worker.window_seconds)
        print(json.dumps(flow_log_registry.put(settings, made).model_dump(mode="json")))
        return 0
    if not args.id:
        raise ConfigError(f"flowlog {args.action} needs a flow-log id (flowlog list shows them)")
    found = flow_logs.get(args.id)
    if found is None:
        raise ConfigError(f"no flow log {args.id!r} (flowlog list shows them)")
    if args.action == "show":
        print(json.dumps(found.model_dump(mode="json")))
        return 0
    if args.action == "delete":
        flow_log_registry.delete(settings, found.id)
        print(json.dumps({"deleted": found.id}))
        return 0
    forced = {"enabled": True} if args.action == "enable" else {"enabled": False} if args.action == "disable" else {}
    updated = found.changed(_change(args, **forced))
    print(json.dumps(flow_log_registry.put(settings, updated).model_dump(mode="json")))
    return 0


def add_parser(sub: Any, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    fl = sub.add_parser("flowlog", help="create, list, show, update, enable, disable or delete flow logs (what is recorded, where)")
    fl.add_argument("action", choices=["list", "create", "show", "update", "enable", "disable", "delete"])
    fl.add_argument("id", nargs="?", help="the flow log's id (all but list and create)")
    fl.add_argument("--name")
    fl.add_argument("--scope", help="all, vpc:ID, subnet:ID or eni:ID (default all)")
    fl.add_argument("--filter", choices=["ALL", "ACCEPT", "REJECT"])
    fl.add_argument("--window", type=int, help="window length in seconds (default: the worker's)")
    fl.add_argument("--destinations", help="store, topic or store,topic (default both)")
    fl.set_defaults(func=lambda a: cmd_flowlog(settings_of(a), a))
