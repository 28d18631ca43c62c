"""What-if: replay stored flows through a proposed rule set and report what would change.

``flowlogs whatif --rules proposed.yaml --since 24h`` (and ``POST /whatif`` on a worker)
reads the flow records of the period from the store, evaluates them with the proposed
rules (the same compiled evaluator the workers run), and compares with the verdict each
record was stored with: how many flows, packets and bytes would change action or deciding
rule, per ENI and rule, with the biggest examples. Nothing is written.

A day of a busy network is hundreds of millions of records, and ``POST /whatif`` runs in a
worker: the records are read in pages of whole windows (as exports read them,
``export.page_rows`` rows at most), each page evaluated and compared as columns, and only the
changes per (ENI, rule → rule) and the biggest examples so far are kept between pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.detect.batch import address_text
from pipeline.export import ExportRange, Page, Progress, plan_pages, window_rows_sql
from pipeline.query import Reader
from pipeline.verdicts import VerdictEvaluator
from schemas import flow_record
from schemas.inventory import Inventory
from schemas.rules import RuleSet

# Per record: what the evaluator reads, the stored verdict, the measures — as numbers where
# they can be (addresses as hex, enums as their codes), which numpy reads at once, through the
# worker's JSON API as well as directly.
_COLUMNS = (
    "interface_id, hex(srcaddr), hex(dstaddr), srcport, dstport, protocol, tcp_flags, toInt8(flow_direction),"
    " toInt8(action), rule_id, rule_set_version, packets, bytes, toUnixTimestamp(window_start)"
)
_TRAFFIC = "log_status IN ('OK', 'LATE')"  # NODATA/SKIPDATA rows carry no flow to judge
_GROUP_KEY = ("eni", "old_action", "old_rule", "new_action", "new_rule")  # a change's identity
_ENI, _SRC, _DST, _SPORT, _DPORT, _PROTO, _FLAGS, _DIRECTION, _ACTION, _RULE, _VERSION, _PACKETS, _BYTES, _WINDOW = range(14)


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


def _codes(values: tuple[Any, ...], index: dict[str, int]) -> np.ndarray:
    """Each value's number in ``index`` (new values are appended to it)."""
    return np.fromiter((index.setdefault(str(v), len(index)) for v in values), np.int64, len(values))


def _pages(read: Reader, scope: ExportRange, page_rows: int, progress: Progress | None) -> Iterator[list[list[Any]]]:
    _, counts = read(window_rows_sql(scope, _TRAFFIC))
    rows_of = {int(w): int(n) for w, n in counts}
    expected, done = sum(rows_of.values()), 0
    if progress:
        progress(0, expected)
    for page in plan_pages(rows_of.items(), page_rows):
        rows = read(_page_sql(scope, page, rows_of[page.first]))[1]
        yield rows
        done += len(rows)
        if progress:
            progress(done, max(done, expected))


def _page_sql(scope: ExportRange, page: Page, window_rows: int) -> str:
    query = f"SELECT {_COLUMNS} FROM {scope.table} WHERE {scope.where(page.first, page.last)} AND {_TRAFFIC}"
    if page.limit is None:
        return query + " ORDER BY window_start, interface_id, flow_id"
    # A window bigger than a page: its slice of the flow-id range (flow ids are hashes, so
    # slices hold about equal shares), each read by a scan. Export, which must keep an order,
    # reads the rows after the last one instead: a top-N sort per slice, ~3x the query here.
    slices = -(-window_rows // page.limit)
    low, high = (page.offset // page.limit * (1 << 64) // slices, (page.offset // page.limit + 1) * (1 << 64) // slices)
    query += f" AND flow_id >= {low}" + (f" AND flow_id < {high}" if high < 1 << 64 else "")
    return query + " ORDER BY interface_id, flow_id"


class _Tally:
    """What the pages read so far change: per (ENI, action, rule → action, rule), and the
    biggest changed flows (ties: the one read first)."""

    def __init__(self, report: WhatIfReport, examples: int) -> None:
        self.report = report
        self.examples = examples
        self.grouped: dict[tuple[int, int, int, int, int], Change] = {}
        self.best: list[tuple[int, int, dict[str, Any]]] = []  # (-bytes, order read, example)

    def add(self, col: list[tuple[Any, ...]], page: dict[str, np.ndarray], rule_ids: tuple[str, ...], rule_codes: int) -> None:
        """One page: its columns as read (``col``) and as numbers (``page``: eni, old/new action
        and rule codes, addresses); ``rule_codes`` rule codes in use (stored ids beyond ``rule_ids``)."""
        report = self.report
        old_action, new_action = page["old_action"], page["new_action"]
        changed = np.flatnonzero((old_action != new_action) | (page["old_rule"] != page["new_rule"]))
        read_before, report.flows = report.flows, report.flows + old_action.size
        if changed.size == 0:
            return
        report.changed_flows += int(changed.size)
        report.changed_action += int(np.count_nonzero(old_action[changed] != new_action[changed]))
        packets = np.array(col[_PACKETS], np.uint64)[changed]
        nbytes = np.array(col[_BYTES], np.uint64)[changed]
        # One number per (ENI, action, rule → action, rule), grouped by sorting.
        key = page["eni"][changed]
        for part, size in zip(_GROUP_KEY[1:], (3, rule_codes, 3, rule_codes)):
            key = key * size + page[part][changed]
        order = np.argsort(key, kind="stable")
        starts = np.flatnonzero(np.r_[True, key[order][1:] != key[order][:-1]])
        flows = np.diff(np.r_[starts, key.size])
        packet_sums, byte_sums = np.add.reduceat(packets[order], starts), np.add.reduceat(nbytes[order], starts)
        for k, i in enumerate(changed[order[starts]].tolist()):
            eni, action, rule, new_action_code, new_rule_code = (int(page[name][i]) for name in _GROUP_KEY)
            group = (eni, action, rule, new_action_code, new_rule_code)
            change = self.grouped.get(group)
            if change is None:
                change = self.grouped[group] = Change(
                    str(col[_ENI][i]), flow_record.ACTIONS[action - 1], str(col[_RULE][i]),
                    flow_record.ACTIONS[new_action_code - 1], rule_ids[new_rule_code],
                )
            change.flows += int(flows[k])
            change.packets += int(packet_sums[k])
            change.bytes += int(byte_sums[k])
        for j in np.argsort(-nbytes.astype(np.float64), kind="stable")[: self.examples].tolist():
            i = int(changed[j])
            self.best.append((-int(nbytes[j]), read_before + i, {
                "interface-id": col[_ENI][i], "srcaddr": address_text(page["src"][i]),
                "dstaddr": address_text(page["dst"][i]), "srcport": col[_SPORT][i], "dstport": col[_DPORT][i],
                "protocol": col[_PROTO][i], "flow-direction": flow_record.DIRECTIONS[int(col[_DIRECTION][i]) - 1],
                "window-start": col[_WINDOW][i], "packets": col[_PACKETS][i], "bytes": col[_BYTES][i],
                "action": flow_record.ACTIONS[int(old_action[i]) - 1], "rule-id": col[_RULE][i],
                "rule-set-version": col[_VERSION][i], "new-action": flow_record.ACTIONS[int(new_action[i]) - 1],
                "new-rule-id": rule_ids[int(page["new_rule"][i])],
            }))
        self.best = sorted(self.best, key=lambda b: b[:2])[: self.examples]

    def finish(self) -> WhatIfReport:
        self.report.changes = sorted(self.grouped.values(), key=lambda c: (-c.bytes, -c.flows))
        self.report.examples = [example for _, _, example in self.best]
        return self.report


def what_if(
    read: Reader, rules: RuleSet, inventory: Inventory, since: int, until: int, *, examples: int = 20,
    page_rows: int = 50_000, progress: Progress | None = None,
) -> WhatIfReport:
    """Changes ``rules`` would make to the verdicts of the flows stored for windows in
    [since, until), read ``page_rows`` records at a time at most; ``progress`` is told
    (records read, records stored in the period) after each page."""
    scope = ExportRange(since=int(since), until=int(until))
    tally = _Tally(WhatIfReport(since, until, rules.version), examples)
    _, enis = read(f"SELECT DISTINCT interface_id FROM {scope.table} WHERE {scope.where()} AND {_TRAFFIC}")
    if not enis:
        return tally.finish()
    eni_ids = sorted(str(e[0]) for e in enis)
    eni_index = {e: i for i, e in enumerate(eni_ids)}
    evaluator = VerdictEvaluator.compile(rules, inventory, eni_ids)  # follows eni_ids as it grows
    rule_index = {r: i for i, r in enumerate(evaluator.rule_ids)}  # stored rule ids numbered alike; others appended
    for rows in _pages(read, scope, page_rows, progress):
        if not rows:
            continue
        col = list(zip(*rows))
        eni = _codes(col[_ENI], eni_index)
        eni_ids += list(eni_index)[len(eni_ids):]  # ENIs first stored after the list above was read
        src = np.frombuffer(bytes.fromhex("".join(col[_SRC])), "V16")
        dst = np.frombuffer(bytes.fromhex("".join(col[_DST])), "V16")
        verdicts = evaluator.evaluate(
            eni.astype(np.uint32), np.array(col[_DIRECTION], np.uint8) - 1, src, dst,
            np.array(col[_SPORT], np.uint16), np.array(col[_DPORT], np.uint16), np.array(col[_PROTO], np.uint8),
            np.array(col[_FLAGS], np.uint8),
        )
        page = {
            "eni": eni, "src": src, "dst": dst,
            "old_action": np.array(col[_ACTION], np.int64), "old_rule": _codes(col[_RULE], rule_index),
            "new_action": verdicts.action.astype(np.int64), "new_rule": verdicts.rule.astype(np.int64),
        }
        tally.add(col, page, evaluator.rule_ids, len(rule_index))
    return tally.finish()
