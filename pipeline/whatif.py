"""What-if: replay stored flows through a proposed rule set and report what would change.

``flowlogs whatif --rules proposed.yaml --since 24h`` (and ``POST /whatif`` on a worker)
reads the flow records of the period from the store, evaluates them with the proposed
rules (the same compiled evaluator the workers run), and compares with the verdict each
record was stored with: how many flows, packets and bytes would change action or deciding
rule, per ENI and rule, with the biggest examples. Nothing is written.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.query import Reader
from pipeline.verdicts import VerdictEvaluator
from schemas import flow_record
from schemas.inventory import Inventory
from schemas.rules import RuleSet

_SQL = (
    "SELECT interface_id, srcaddr, dstaddr, srcport, dstport, protocol, tcp_flags, flow_direction,"
    " action, rule_id, rule_set_version, packets, bytes, toUnixTimestamp(window_start)"
    " FROM flows WHERE window_start >= toDateTime({since}) AND window_start < toDateTime({until})"
    " AND log_status IN ('OK', 'LATE') ORDER BY window_start"
)


@dataclass(slots=True)
class Change:
    """Flows of one ENI whose verdict moves from (action, rule) to (action, rule)."""

    interface_id: str
    action: str
    rule_id: str
    new_action: str
    new_rule_id: str
    flows: int = 0
    packets: int = 0
    bytes: int = 0


@dataclass(slots=True)
class WhatIfReport:
    since: int
    until: int
    proposed_version: int
    flows: int = 0  # evaluated
    changed_flows: int = 0
    changed_action: int = 0  # of those, flows whose ACCEPT/REJECT flips
    changes: list[Change] = field(default_factory=list)  # biggest (by bytes) first
    examples: list[dict[str, Any]] = field(default_factory=list)  # biggest changed flows

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since, "until": self.until, "proposed_version": self.proposed_version,
            "flows": self.flows, "changed_flows": self.changed_flows, "changed_action": self.changed_action,
            "changes": [asdict(c) for c in self.changes],
            "examples": self.examples,
        }


def _address_bytes(text: str) -> bytes:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return address.packed
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else address
    return b"\0" * 10 + b"\xff\xff" + mapped.packed  # type: ignore[union-attr]


def what_if(
    read: Reader, rules: RuleSet, inventory: Inventory, since: int, until: int, *, examples: int = 20
) -> WhatIfReport:
    """Changes ``rules`` would make to the verdicts of the flows stored for windows in [since, until)."""
    _, rows = read(_SQL.format(since=int(since), until=int(until)))
    report = WhatIfReport(since, until, rules.version, flows=len(rows))
    if not rows:
        return report
    eni_ids = sorted({str(r[0]) for r in rows})
    eni_of = {e: i for i, e in enumerate(eni_ids)}
    n = len(rows)
    src = np.frombuffer(b"".join(_address_bytes(str(r[1])) for r in rows), "V16")
    dst = np.frombuffer(b"".join(_address_bytes(str(r[2])) for r in rows), "V16")
    column = list(zip(*rows))
    direction = np.array([flow_record.DIRECTIONS.index(str(d)) for d in column[7]], np.uint8)
    verdicts = VerdictEvaluator.compile(rules, inventory, eni_ids).evaluate(
        np.array([eni_of[str(e)] for e in column[0]], np.uint32), direction, src, dst,
        np.array(column[3], np.uint16), np.array(column[4], np.uint16), np.array(column[5], np.uint8),
        np.array(column[6], np.uint8),
    )
    new_action = [flow_record.ACTIONS[a - 1] for a in verdicts.action.tolist()]
    new_rule = [verdicts.rule_ids[r] for r in verdicts.rule.tolist()]
    grouped: dict[tuple[str, str, str, str, str], Change] = {}
    changed_rows = []
    for i in range(n):
        old_action, old_rule = str(column[8][i]), str(column[9][i])
        if old_action == new_action[i] and old_rule == new_rule[i]:
            continue
        key = (str(column[0][i]), old_action, old_rule, new_action[i], new_rule[i])
        change = grouped.get(key) or grouped.setdefault(key, Change(*key))
        change.flows += 1
        change.packets += int(column[11][i])
        change.bytes += int(column[12][i])
        report.changed_flows += 1
        report.changed_action += old_action != new_action[i]
        changed_rows.append(i)
    report.changes = sorted(grouped.values(), key=lambda c: (-c.bytes, -c.flows))
    biggest = sorted(changed_rows, key=lambda i: -int(column[12][i]))[:examples]
    report.examples = [
        {
            "interface-id": column[0][i], "srcaddr": str(column[1][i]), "dstaddr": str(column[2][i]),
            "srcport": column[3][i], "dstport": column[4][i], "protocol": column[5][i],
            "flow-direction": column[7][i], "window-start": column[13][i], "packets": column[11][i],
            "bytes": column[12][i], "action": column[8][i], "rule-id": column[9][i],
            "rule-set-version": column[10][i], "new-action": new_action[i], "new-rule-id": new_rule[i],
        }
        for i in biggest
    ]
    return report
