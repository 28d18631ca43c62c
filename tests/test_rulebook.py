"""The rule set in force in a worker: taking new versions, refusing bad ones; the record
filter; `flowlogs rules apply` on bad files."""

from pathlib import Path

import numpy as np
import orjson

from pipeline.flow_table import aggregate_packets
from pipeline.records import FlowRecordBuilder
from pipeline.flow_log_registry import Coverage
from pipeline.rulebook import RuleBook
from schemas.flow_logs import FlowLog
from schemas import flow_record, frame
from schemas.inventory import Eni, Inventory, Subnet, Vpc
from tests.test_cli import flowlogs

INVENTORY = Inventory(
    vpcs=(Vpc(id="v"),), subnets=(Subnet(id="s", vpc="v", cidr="10.0.0.0/24"),),
    enis=(Eni(id="eni-a", subnet="s", ips=("10.0.0.5",)),),
)


def rule_set(version: int, action: str) -> bytes:
    return orjson.dumps({
        "version": version,
        "security_groups": [{"id": "sg", "ingress": [{"id": f"in-{action.lower()}", "action": action, "source": "0.0.0.0/0"}]}],
        "bindings": [{"eni": "eni-a", "security_groups": ["sg"]}],
    })


def ingress_flows(packets: int = 3):
    n = packets
    p = frame.Packets(
        capture_time_ns=np.arange(n, dtype=np.uint64) + 1_700_000_000 * 10**9,
        src_addr=frame.ipv4_mapped(np.full(n, 0xC0000201, np.uint32)),  # 192.0.2.1
        dst_addr=frame.ipv4_mapped(np.full(n, 0x0A000005, np.uint32)),  # 10.0.0.5
        ip_length=np.full(n, 100, np.uint32), wire_length=np.full(n, 114, np.uint32),
        src_port=np.arange(n, dtype=np.uint16) + 40000, dst_port=np.full(n, 443, np.uint16),
        eni=np.zeros(n, np.uint16), protocol=np.full(n, 6, np.uint8), tcp_flags=np.full(n, 0x18, np.uint8),
        direction=np.zeros(n, np.uint8),
    )
    return aggregate_packets(p, np.zeros(n, np.uint32), 60 * 10**9)


def verdicts_of(book: RuleBook) -> set[tuple[str, str, int]]:
    builder = FlowRecordBuilder(["eni-a"], INVENTORY.placement(), 60 * 10**9, book)
    cols = builder.columns(ingress_flows())
    rules = cols["rule_id_values"]
    return {
        (flow_record.ACTIONS[a], str(rules[r]), int(v))
        for a, r, v in zip(cols["action"], cols["rule_id"], cols["rule_set_version"])
    }


def test_no_rule_set_accepts_everything_as_version_0() -> None:
    assert verdicts_of(RuleBook(INVENTORY, ["eni-a"])) == {("ACCEPT", "-", 0)}


def test_a_newer_rule_set_takes_over_and_an_older_or_broken_one_does_not() -> None:
    book = RuleBook(INVENTORY, ["eni-a"])
    assert book.offer(rule_set(3, "DROP"), "test")
    assert verdicts_of(book) == {("REJECT", "in-drop", 3)}
    assert not book.offer(rule_set(2, "ACCEPT"), "test")  # older: ignored
    assert not book.offer(b"{not json", "test")
    assert not book.offer(orjson.dumps({"version": 4, "bindings": [{"eni": "eni-a", "security_groups": ["nope"]}]}), "test")
    assert book.refused == 2
    assert verdicts_of(book) == {("REJECT", "in-drop", 3)}  # what was in force stays
    assert book.offer(rule_set(4, "ACCEPT"), "test")
    assert verdicts_of(book) == {("ACCEPT", "in-accept", 4)}


def test_a_flow_log_filter_keeps_one_action_and_the_status_rows() -> None:
    book = RuleBook(INVENTORY, ["eni-a"])
    book.offer(rule_set(1, "DROP"), "test")
    builder = FlowRecordBuilder(["eni-a"], INVENTORY.placement(), 60 * 10**9, book)
    cols = builder.columns(ingress_flows())

    def kept(filter_: str, destination: str = "store") -> dict:
        flow_log = FlowLog(id="fl-1", name="one", scope="eni:eni-a", filter=filter_, destinations=("store",))
        coverage = Coverage.compile([flow_log], INVENTORY.placement(), ["eni-a"], 60)
        rows = coverage.rows(destination, cols["eni"], cols["action"], cols["packets"])
        return {k: v if k == "rule_id_values" else v[rows] for k, v in cols.items()}

    assert len(kept("ACCEPT")["packets"]) == 0
    rejects = kept("REJECT")
    assert len(rejects["packets"]) == 3
    assert set(builder.arrow(rejects).column("action").to_pylist()) == {"REJECT"}
    assert len(kept("ALL", "topic")["packets"]) == 0  # this flow log writes to the store only


def test_rules_apply_names_the_file_line_and_field_and_publishes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("security_groups:\n  - id: sg\n    ingress:\n      - id: r1\n        action: ACCEPT\n        ports: 70000\n"
                   "        protocol: tcp\n        source: 0.0.0.0/0\n")
    out = flowlogs("rules", "apply", str(bad), home=tmp_path)  # no broker: it must fail before publishing
    assert out.returncode == 2 and "Traceback" not in out.stderr
    said = "".join(out.stderr.split())  # the console wraps long lines
    assert str(bad) in said and "line6" in said and "ports" in said


def test_rules_apply_dry_run_validates_only(tmp_path: Path) -> None:
    good = tmp_path / "rules.json"
    good.write_bytes(rule_set(0, "ACCEPT"))
    out = flowlogs("rules", "apply", str(good), "--dry-run", home=tmp_path)
    assert out.returncode == 0, out.stderr
    said = " ".join(out.stderr.split())  # the console wraps long lines
    assert "is valid" in said and "1 security groups" in said
