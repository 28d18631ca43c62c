"""What-if over stored flows (embedded chDB): read in pages of whole windows, or in flow-id
slices of a window bigger than a page, every stored flow is judged once and the report is
the same whatever the page size."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from agents.synthetic import SyntheticConfig, SyntheticTraffic
from flowlogs.settings import Settings
from pipeline.flow_table import ALL_WINDOWS, FlowTable
from pipeline.query import Result
from pipeline.records import FlowRecordBuilder
from pipeline.sinks.clickhouse import ClickHouseSink
from pipeline.store import Store
from pipeline.verdicts import VerdictEvaluator
from pipeline.whatif import what_if
from schemas import flow_record
from schemas.rules import parse_rules

WINDOW_S = 5


def proposed(eni_ids: list[str]):
    """TCP in and DNS out allowed on half the ENIs; everything else there falls to the defaults."""
    return parse_rules({
        "version": 7,
        "security_groups": [{
            "id": "sg-half",
            "ingress": [{"id": "in-tcp", "action": "ACCEPT", "protocol": "tcp", "source": "0.0.0.0/0"}],
            "egress": [{"id": "out-dns", "action": "ACCEPT", "protocol": "udp", "ports": "53", "destination": "0.0.0.0/0"}],
        }],
        "bindings": [{"eni": e, "security_groups": ["sg-half"]} for e in eni_ids[::2]],
    }, "the test")


def test_what_if_judges_every_stored_flow_once_whatever_the_page_size(tmp_path: Path) -> None:
    now = int(time.time())
    start = (now - 3600) // WINDOW_S * WINDOW_S
    traffic = SyntheticTraffic(SyntheticConfig(
        enis=4, flows=400, rate=2_000, duration=4 * WINDOW_S, pace=False, start_ns=start * 10**9, seed=3,
    ))
    table = FlowTable()
    for batch in traffic.batches():
        table.add_packets(batch.packets, batch.packets.eni.astype(np.uint32), WINDOW_S * 10**9)
    eni_ids = list(traffic.eni_ids)
    builder = FlowRecordBuilder(eni_ids, traffic.inventory.placement(), WINDOW_S * 10**9)  # no rule set: ACCEPT, "-"
    cols = builder.columns(table.take(ALL_WINDOWS))
    rules = proposed(eni_ids)

    # The reference: the proposed rules' verdict of each record as it was built.
    verdicts = VerdictEvaluator.compile(rules, traffic.inventory, eni_ids).evaluate(
        cols["eni"].astype(np.uint32), cols["flow_direction"].astype(np.uint8), cols["srcaddr"], cols["dstaddr"],
        cols["srcport"], cols["dstport"], cols["protocol"], cols["tcp_flags"],
    )
    expected: Counter[tuple[str, str, str, str, str]] = Counter()
    for e, a, r in zip(cols["eni"].tolist(), verdicts.action.tolist(), verdicts.rule.tolist()):
        if (a, verdicts.rule_ids[r]) != (1, "-"):
            expected[(eni_ids[e], "ACCEPT", "-", flow_record.ACTIONS[a - 1], verdicts.rule_ids[r])] += 1
    assert len({k[4] for k in expected}) >= 3  # in-tcp, out-dns and a default at least

    store = Store(Settings(home=tmp_path))
    store.start()
    try:
        ClickHouseSink(store).write([builder.arrow(cols)], dedup_token="what-if")
        _, [(windows,)] = store.query("SELECT uniqExact(window_start) FROM flows")
        assert windows >= 4

        def read(sql: str) -> Result:
            columns, rows = store.query_readonly(sql)
            return columns, [list(r) for r in rows]

        told: dict[int, list[tuple[int, int]]] = {}
        reports = {}
        for page_rows in (10**9, 900, 37):  # one page; pages of whole windows; flow-id slices of every window
            progress = told.setdefault(page_rows, [])
            reports[page_rows] = what_if(
                read, rules, traffic.inventory, start, start + 3600, examples=5, page_rows=page_rows,
                progress=lambda done, total, progress=progress: progress.append((done, total)),
            )
    finally:
        store.stop()

    for page_rows, report in reports.items():
        got = Counter({(c.interface_id, c.action, c.rule_id, c.new_action, c.new_rule_id): c.flows for c in report.changes})
        assert got == expected, page_rows
        assert report.flows == len(cols["eni"]), page_rows
        assert report.changed_flows == sum(expected.values()), page_rows
        assert report.changed_action == sum(n for k, n in expected.items() if k[3] == "REJECT"), page_rows
        changed = (verdicts.action != 1) | (np.array(verdicts.rule_ids)[verdicts.rule] != "-")
        assert sum(c.bytes for c in report.changes) == int(cols["bytes"][changed].sum()), page_rows
        biggest = np.sort(cols["bytes"][changed])[::-1][:5].tolist()
        assert [e["bytes"] for e in report.examples] == biggest, page_rows
        assert all(e["new-rule-id"] != "-" or e["new-action"] != "ACCEPT" for e in report.examples)
    assert reports[37].as_dict() == reports[10**9].as_dict() or _same_but_ties(reports[37], reports[10**9])
    rows = len(cols["eni"])
    for page_rows, progress in told.items():  # (records read, records stored) from the start to the end, page by page
        assert progress[0] == (0, rows) and progress[-1] == (rows, rows), page_rows
        assert [d for d, _ in progress] == sorted(d for d, _ in progress), page_rows
        assert len(progress) >= rows // page_rows, page_rows


def _same_but_ties(a, b) -> bool:
    """Equal reports, examples of equal bytes possibly in another order."""
    da, db = a.as_dict(), b.as_dict()
    ea, eb = da.pop("examples"), db.pop("examples")
    return da == db and sorted(map(repr, ea)) == sorted(map(repr, eb))
