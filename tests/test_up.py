"""`flowlogs up`'s rule set: the demo set decides the synthetic traffic both ways, naming
the rules that decided; a rule file of the user's is checked before anything starts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from agents.synthetic import SyntheticConfig, SyntheticTraffic
from flowlogs.errors import ConfigError
from flowlogs.up import _rules_in_force, demo_rules
from pipeline.flow_table import FlowTable
from pipeline.verdicts import VerdictEvaluator
from schemas import flow_record, frame
from schemas.rules import load_rules

ENIS = 8


def ipv4_of(addresses: np.ndarray) -> np.ndarray:
    """IPv4-mapped V16 addresses as host-order uint32."""
    return addresses.view(np.uint8).reshape(-1, 16)[:, 12:].copy().view(">u4").reshape(-1).astype(np.uint32)


def synthetic_verdicts() -> tuple[SyntheticTraffic, dict[str, np.ndarray]]:
    """Ten seconds of `up`'s synthetic traffic as flows, with their verdicts under the demo set."""
    traffic = SyntheticTraffic(SyntheticConfig(enis=ENIS, flows=5000, rate=50_000, duration=10, pace=False, seed=1))
    table = FlowTable()
    for batch in traffic.batches():
        table.add_packets(batch.packets, batch.packets.eni.astype(np.uint32), 10**10)
    flows = table.take((1 << 48) - 1)
    evaluator = VerdictEvaluator.compile(demo_rules(traffic.inventory), traffic.inventory, list(traffic.eni_ids))
    src, dst = flows.address("src"), flows.address("dst")
    verdicts = evaluator.evaluate(
        flows.eni, flows.direction, src, dst, flows.src_port, flows.dst_port, flows.protocol, flows.tcp_flags
    )
    return traffic, {
        "eni": flows.eni, "ingress": flows.direction == frame.DIRECTION_INGRESS,
        "src": ipv4_of(src), "dst": ipv4_of(dst), "action": np.array([flow_record.ACTIONS[a - 1] for a in verdicts.action]),
        "rule": np.array([verdicts.rule_ids[r] for r in verdicts.rule]),
    }


def test_the_demo_rule_set_decides_the_synthetic_traffic_both_ways() -> None:
    _, v = synthetic_verdicts()
    decided = Counter(zip(v["action"], v["rule"]))
    accepted = {"web-out-all", "data-out-all", "web-in-ping", "data-in-ping"}
    rejected = {"edge-in-untrusted", "edge-out-untrusted"}
    assert set(decided) == {("ACCEPT", r) for r in accepted} | {("REJECT", r) for r in rejected}
    # Rejected: exactly the flows whose remote peer is in the untrusted ranges, a few per cent.
    remote = np.where(v["ingress"], v["src"], v["dst"]) >> 24
    assert ((v["action"] == "REJECT") == np.isin(remote, (45, 185))).all()
    assert 0.002 < (v["action"] == "REJECT").mean() < 0.05


def test_a_rule_file_given_to_up_is_used_as_it_is(tmp_path: Path) -> None:
    traffic = SyntheticTraffic(SyntheticConfig(enis=ENIS, flows=10, rate=10, duration=1, pace=False, seed=1))
    mine = tmp_path / "mine.json"
    mine.write_bytes(demo_rules(traffic.inventory).model_copy(update={"version": 3}).to_json_bytes())
    assert _rules_in_force(mine, traffic.inventory, tmp_path) == mine
    demo = _rules_in_force(None, traffic.inventory, tmp_path)
    assert demo.parent == tmp_path and load_rules(demo) == demo_rules(traffic.inventory)


def test_a_bad_rule_file_stops_up_before_it_starts(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("security_groups:\n  - id: sg\n    ingress:\n      - {id: x, action: MAYBE}\n")
    traffic = SyntheticTraffic(SyntheticConfig(enis=ENIS, flows=10, rate=10, duration=1, pace=False, seed=1))
    with pytest.raises(ConfigError, match=r"rules\.yaml.*line 4"):
        _rules_in_force(bad, traffic.inventory, tmp_path)
