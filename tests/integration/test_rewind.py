"""Rewind and snapshots on real Apache Kafka and a worker's chDB: a 5 s rewind of a live
60 s window gives the live totals per ENI exactly and flows that sum to the live ones; another rule
set changes verdicts only in the rewind's result set; a snapshot keeps the range's raw
packets; a range whose frames retention removed is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from agents.runner import run_synthetic
from agents.synthetic import SyntheticConfig, synthetic_inventory
from flowlogs.kafka import client_config
from pipeline.frame_range import RangeNotRetainedError
from pipeline.results import open_result_sets
from pipeline.snapshots import create_rewind, create_snapshot
from schemas import topics
from tests.integration.helpers import wait_until_stored_exactly

pytestmark = pytest.mark.integration

KEY = "interface_id, srcaddr, dstaddr, srcport, dstport, protocol, flow_direction"


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def totals(worker, table: str, where: str) -> dict[str, tuple[int, int]]:
    _, rows = worker.query(f"SELECT interface_id, sum(packets), sum(bytes) FROM {table} WHERE {where} GROUP BY interface_id")
    return {eni: (int(p), int(b)) for eni, p, b in rows}


def test_rewind_snapshot_and_retention(settings_factory, worker_factory, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    synthetic_inventory(4, 9).dump(inventory)
    settings = settings_factory(
        kafka={"session_timeout_seconds": 6},
        worker={"window_seconds": 60, "idle_close_seconds": 2.0, "allowed_lateness_seconds": 1.0, "inventory": str(inventory)},
        store={"batch_seconds": 0.3},
    )
    worker = worker_factory(settings)
    # 130 s of capture time from a minute boundary five minutes ago, published as fast as it
    # is made: live 60 s windows close by event time, within seconds.
    start = (int(time.time()) // 60 - 5) * 60
    config = SyntheticConfig(enis=4, flows=800, rate=5_000, duration=130, seed=9, pace=False, start_ns=start * 10**9)
    sent = run_synthetic(settings, config)
    wait_until_stored_exactly(worker, {eni: (c.packets, c.bytes) for eni, c in sent.per_eni.items()})
    since, until = start + 60, start + 120  # one whole live 60 s window
    in_range = f"window_start >= toDateTime({since}) AND window_start < toDateTime({until})"
    live = totals(worker, "flows", in_range)
    assert live and all(p > 0 for p, _ in live.values())

    with open_result_sets(settings) as results:  # the worker owns the store: through its API
        made = create_rewind(settings, results, "fine", since, until, window_seconds=5)
    assert made is not None and made["window_seconds"] == 5
    assert totals(worker, "saved_flows", "result_set = 'fine'") == live
    _, windows = worker.query("SELECT DISTINCT toUnixTimestamp(window_start) FROM saved_flows WHERE result_set = 'fine' ORDER BY 1")
    assert [int(w[0]) for w in windows] == list(range(since, until, 5))
    # Each live 60 s flow is the sum of its 5 s flows in the rewind.
    live_flows = worker.query(
        f"SELECT {KEY}, toUnixTimestamp(window_start), sum(packets), sum(bytes) FROM flows WHERE {in_range}"
        f" GROUP BY {KEY}, window_start ORDER BY ALL"
    )[1]
    rewound = worker.query(
        f"SELECT {KEY}, intDiv(toUnixTimestamp(window_start), 60) * 60 AS w, sum(packets), sum(bytes) FROM saved_flows"
        f" WHERE result_set = 'fine' GROUP BY {KEY}, w ORDER BY ALL"
    )[1]
    assert rewound == live_flows

    # Another rule set: TCP refused both ways. Only the rewind's verdicts change.
    rules = tmp_path / "strict.yaml"
    rules.write_text(
        "security_groups:\n  - id: sg-no-tcp\n    ingress:\n      - {id: no-tcp, action: DROP, protocol: tcp, source: 0.0.0.0/0}\n"
        "      - {id: rest, action: ACCEPT, protocol: all, source: 0.0.0.0/0}\n"
        "    egress:\n      - {id: out-udp, action: ACCEPT, protocol: udp, destination: 0.0.0.0/0}\n"
        "bindings:\n" + "".join(f"  - {{eni: {e.id}, security_groups: [sg-no-tcp]}}\n" for e in synthetic_inventory(4, 9).enis)
    )
    live_actions = worker.query("SELECT toString(action), count() FROM flows GROUP BY action ORDER BY 1")[1]
    assert [a for a, _ in live_actions] == ["ACCEPT"]
    with open_result_sets(settings) as results:
        create_rewind(settings, results, "strict", since, until, rules_file=rules)
    _, verdicts = worker.query(
        "SELECT toString(flow_direction), toString(action), rule_id FROM saved_flows"
        " WHERE result_set = 'strict' AND protocol = 6 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )
    assert [tuple(v) for v in verdicts] == [("egress", "REJECT", "sg/default"), ("ingress", "REJECT", "no-tcp")]
    _, udp = worker.query("SELECT DISTINCT toString(action), rule_id FROM saved_flows WHERE result_set = 'strict' AND protocol = 17 ORDER BY 1, 2")
    assert [tuple(v) for v in udp] == [("ACCEPT", "out-udp"), ("ACCEPT", "rest")]
    assert worker.query("SELECT toString(action), count() FROM flows GROUP BY action ORDER BY 1")[1] == live_actions
    assert totals(worker, "saved_flows", "result_set = 'strict'") == live

    # A snapshot with its frames: the range's raw packets, exactly.
    with open_result_sets(settings) as results:
        snap = create_snapshot(settings, results, "evidence", since, until, with_frames=True)
    assert snap is not None and snap["flows"] == worker.query(f"SELECT count() FROM flows WHERE {in_range}")[1][0][0]
    packets = worker.query("SELECT interface_id, count(), sum(ip_length) FROM saved_packets WHERE result_set = 'evidence' GROUP BY 1")[1]
    assert {eni: (int(n), int(b)) for eni, n, b in packets} == live

    # The command does the same, through the worker that owns the store.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLOGS_")}
    env["FLOWLOGS_CONFIG"] = str(settings.home / f"worker-{settings.worker.api_port}.yaml")
    out = subprocess.run(
        [sys.executable, "-m", "flowlogs.cli", "rewind", "--from", _iso(since), "--to", _iso(until), "--name", "cli", "--window", "10"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["window_seconds"] == 10 and totals(worker, "saved_flows", "result_set = 'cli'") == live

    # Retention took the start of the range away (DeleteRecords moves the log start, as retention does).
    admin = AdminClient(client_config(settings))
    topic = settings.topic(topics.FRAMES.suffix)
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    futures = admin.delete_records([TopicPartition(topic, p, -1) for p in partitions])  # -1: up to the end
    for future in futures.values():
        future.result(30)
    with open_result_sets(settings) as results, pytest.raises(RangeNotRetainedError, match="no longer on"):
        create_rewind(settings, results, "gone", since, until)
    with open_result_sets(settings) as results:
        assert sorted(r["name"] for r in results.list()) == ["cli", "evidence", "fine", "strict"]
