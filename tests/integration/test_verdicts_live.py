"""Verdicts end to end (real Kafka, workers, chDB): a rule set published while traffic flows
changes verdicts within seconds; every stored record's verdict is what the reference
evaluator says for the rule-set version the record names; a REJECT-only flow log stores
only rejects; what-if over the stored flows reports exactly the reference's changes, through the
worker's API and through `flowlogs whatif` reading the worker's store in small pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from agents.synthetic import SyntheticConfig, synthetic_inventory
from flowlogs.kafka import ensure_topics
from pipeline import rules_topic
from schemas.rules import parse_rules
from tests.integration.helpers import paced_agent, wait_until_stored_exactly
from tests.integration.helpers import wait_for
from tests.reference_verdicts import Flow, Reference

pytestmark = pytest.mark.integration

ENIS = 4
ROWS_SQL = (
    "SELECT interface_id, flow_direction = 'egress', hex(srcaddr), hex(dstaddr), srcport, dstport, protocol, tcp_flags,"
    " toString(action), rule_id, rule_set_version, toUnixTimestamp(window_start), packets FROM flows"
    " WHERE log_status = 'OK'"
)


def open_rules(eni_ids: list[str]) -> dict:
    return {
        "security_groups": [{
            "id": "sg-open",
            "ingress": [{"id": "in-all", "action": "ACCEPT", "protocol": "all", "source": "0.0.0.0/0"}],
            "egress": [{"id": "out-all", "action": "ACCEPT", "protocol": "all", "destination": "0.0.0.0/0"}],
        }],
        "bindings": [{"eni": e, "security_groups": ["sg-open"]} for e in eni_ids],
    }


def no_tcp_rules(eni_ids: list[str]) -> dict:
    """TCP refused both ways (inbound by an explicit rule, outbound by the default deny);
    the outbound web ports through an ACL that denies 443 to leave the subnet."""
    return {
        "security_groups": [{
            "id": "sg-strict",
            "ingress": [
                {"id": "no-tcp-in", "action": "DROP", "protocol": "tcp", "source": "0.0.0.0/0"},
                {"id": "in-rest", "action": "ACCEPT", "protocol": "all", "source": "0.0.0.0/0"},
            ],
            "egress": [{"id": "out-udp", "action": "ACCEPT", "protocol": "udp", "destination": "0.0.0.0/0"}],
        }],
        "bindings": [{"eni": e, "security_groups": ["sg-strict"]} for e in eni_ids],
        "network_acls": [{
            "id": "acl-edge",
            "subnets": ["subnet-00050000"],
            "inbound": [{"id": "edge-in", "action": "ACCEPT", "protocol": "all", "source": "0.0.0.0/0"}],
            "outbound": [
                {"id": "edge-no-dns", "action": "DROP", "protocol": "udp", "ports": "53", "destination": "0.0.0.0/0"},
                {"id": "edge-out", "action": "ACCEPT", "protocol": "all", "destination": "0.0.0.0/0"},
            ],
        }],
    }


def stored(query) -> list[tuple]:
    _, rows = query(ROWS_SQL)
    return [tuple(r) for r in rows]


def as_flow(row: tuple, eni_index: dict[str, int]) -> Flow:
    eni, egress, src, dst, sport, dport, proto, flags = row[:8]
    return Flow(eni_index[eni], int(egress), bytes.fromhex(src), bytes.fromhex(dst), int(sport), int(dport), int(proto), int(flags))


def test_rule_change_while_traffic_flows(settings_factory, worker_factory, tmp_path: Path) -> None:
    inventory = synthetic_inventory(ENIS, seed=5)
    eni_ids = [e.id for e in inventory.enis]
    inventory_path = tmp_path / "inventory.yaml"
    inventory.dump(inventory_path)
    lateness = {"window_seconds": 5, "allowed_lateness_seconds": 1.0, "idle_close_seconds": 2.0}
    settings = settings_factory(worker={**lateness, "inventory": str(inventory_path)}, store={"batch_seconds": 0.3})
    ensure_topics(settings)
    v1 = rules_topic.publish(settings, parse_rules(open_rules(eni_ids), "test"))
    assert v1.version == 1
    worker = worker_factory(settings)
    # A second flow log on the same frames: its own consumer group and store, REJECT records only.
    rejects_settings = settings.model_copy(
        update={
            "home": tmp_path / "rejects-home",
            "worker": settings.worker.model_copy(
                update={"app_id": settings.worker.app_id + "-rejects", "api_port": settings.worker.api_port + 1,
                        "record_filter": "REJECT"}
            ),
        }
    )
    rejects = worker_factory(rejects_settings)
    wait_for(lambda: worker.stats()["rule_set_version"] == 1, 60, "the worker to load rule set 1")

    config = SyntheticConfig(enis=ENIS, flows=300, rate=3_000, duration=24, seed=5, zipf=0.0)
    thread, sent = paced_agent(settings, config)
    thread.start()
    time.sleep(9)
    published_at = time.time()
    v2 = rules_topic.publish(settings, parse_rules(no_tcp_rules(eni_ids), "test"))
    assert v2.version == 2
    wait_for(lambda: worker.stats()["rule_set_version"] == 2, 10, "the worker to take rule set 2")
    taken_after = time.time() - published_at
    assert taken_after < 5, f"rule set 2 took {taken_after:.1f} s to be in force"
    thread.join(120)
    stats = sent[0]
    assert stats.dropped_packets == 0
    wait_until_stored_exactly(worker, {eni: (c.packets, c.bytes) for eni, c in stats.per_eni.items()})

    rows = stored(worker.query)
    index = {e: i for i, e in enumerate(eni_ids)}
    references = {1: Reference(v1, inventory, eni_ids), 2: Reference(v2, inventory, eni_ids)}
    versions = Counter(int(r[10]) for r in rows)
    assert set(versions) == {1, 2}, versions
    for row in rows:
        action, _layer, rule = references[int(row[10])].verdict(as_flow(row, index))
        assert (str(row[8]), str(row[9])) == (action, rule), row
    # Windows closing after the switch (start ≥ published + 1 s: they close ≥ 7 s later) carry it.
    assert all(int(r[10]) == 2 for r in rows if int(r[11]) >= published_at + 1)
    outcomes = Counter((int(r[10]), str(r[8]), str(r[9])) for r in rows)
    assert outcomes[(2, "REJECT", "no-tcp-in")] and outcomes[(2, "REJECT", "sg/default")], outcomes
    assert outcomes[(2, "REJECT", "edge-no-dns")] and outcomes[(2, "ACCEPT", "out-udp")], outcomes
    assert {a for v, a, _ in outcomes if v == 1} == {"ACCEPT"}

    # The REJECT-only flow log: exactly the rejected records, none of the accepted ones. Each
    # worker takes rule set 2 at its own moment, so a window that closed around the switch may
    # carry either set in each; those starting a second after it closed under set 2 in both.
    wait_for(lambda: not rejects.stats()["open_windows"] and not rejects.stats()["pending_rows"]
              and rejects.stats()["packets_in"] >= stats.packets, 120, "the REJECT flow log to catch up")
    rejected = stored(rejects.query)
    assert rejected and {r[8] for r in rejected} == {"REJECT"}
    after_switch = Counter(r for r in rejected if int(r[11]) >= published_at + 1)
    assert after_switch and after_switch == Counter(r for r in rows if r[8] == "REJECT" and int(r[11]) >= published_at + 1)

    # What-if: the open rules again, over everything stored; the worker's API answers.
    report = query_what_if(worker.api, open_rules(eni_ids), since="1970-01-01")
    expected = Counter()
    for row in rows:
        action, _layer, rule = references[1].verdict(as_flow(row, index))
        if (action, rule) != (str(row[8]), str(row[9])):
            expected[(row[0], str(row[8]), str(row[9]), action, rule)] += 1
    got = Counter({(c["interface_id"], c["action"], c["rule_id"], c["new_action"], c["new_rule_id"]): c["flows"]
                   for c in report["changes"]})
    assert got == expected and report["changed_flows"] == sum(expected.values()) > 0
    assert report["flows"] == len(rows)

    # The same from the command line: it reads through the worker's API, 97 records a page.
    rules_path = tmp_path / "open-rules.json"
    rules_path.write_text(json.dumps(open_rules(eni_ids)))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLOGS_")}
    environment.update(FLOWLOGS_HOME=str(settings.home), FLOWLOGS_EXPORT__PAGE_ROWS="97")
    out = subprocess.run(
        [sys.executable, "-m", "flowlogs.cli", "whatif", "--rules", str(rules_path), "--since", "1970-01-01",
         "--inventory", str(inventory_path), "--format", "json"],
        env=environment, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    from_cli = json.loads(out.stdout)
    assert from_cli["changes"] == report["changes"] and from_cli["flows"] == report["flows"]
    assert [e["bytes"] for e in from_cli["examples"]] == [e["bytes"] for e in report["examples"]]


def query_what_if(api: str, rules: dict, since: str) -> dict:
    request = urllib.request.Request(
        f"{api}/whatif", data=json.dumps({"rules": rules, "since": since}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())

