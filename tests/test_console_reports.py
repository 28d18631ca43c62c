"""The web console: its two reports (traffic over time, the source → destination Sankey) in
real chDB with known flows and exact numbers, and its assets bundled — every file
index.html loads is in pipeline/console/, and none reaches outside the worker."""

from __future__ import annotations

import importlib.util
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from flowlogs.errors import ConfigError
from flowlogs.settings import Settings
from pipeline.reports import ReportResult, run_report
from pipeline.store import Store
from tests.test_reports import HOUR, Flow, flow_table, iso
from tests.test_rollups import flow_rows

H = int(time.time()) // HOUR * HOUR  # the current hour
NOW = H + 600
T0 = H - 2 * HOUR  # the known flows: three minutes of them
TB = H - 30 * HOUR  # random traffic of tests/test_rollups.py, for the rollup against raw rows

# ENI placement (tests/test_reports.py): eni-1 subnet-1; eni-2, eni-5 subnet-2; eni-3, eni-4, eni-6 subnet-3.
FLOWS = [
    Flow("eni-1", "10.0.1.10", "8.8.8.8", 100, 600_000, T0),
    Flow("eni-1", "10.0.1.10", "8.8.8.8", 50, 300_000, T0 + 60),
    Flow("eni-2", "10.0.2.20", "1.1.1.1", 200, 30_000, T0, dstport=53, protocol=17),
    Flow("eni-3", "203.0.113.7", "10.0.3.5", 30, 1_800, T0, 22, 6, "ingress", "REJECT", "sg", "sg-ssh"),
    Flow("eni-3", "203.0.113.99", "10.0.3.5", 10, 600, T0 + 60, 22, 6, "ingress", "REJECT", "sg", "sg-ssh"),
    Flow("eni-5", "10.0.2.50", "1.1.1.1", 10, 1_000, T0 + 60, dstport=53, protocol=17),
    Flow("eni-4", "2001:db8:1:2::5", "fd00::4", 20, 2_000, T0 + 120, direction="ingress"),
    Flow("eni-4", "fd00::4", "2001:db8:1:ffff::1", 5, 500, T0 + 120),  # the same /48 back: no cycle in the report
    Flow("eni-5", "10.0.2.50", "198.51.100.9", 40, 40_000, T0 + 120, dstport=80),
    Flow("eni-6", "0.0.0.0", "0.0.0.0", 0, 0, T0),  # a NODATA marker: no traffic, no series, no link
]
THREE_MIN = (T0, T0 + 180)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One chDB for the module (a process opens chDB once at a time), filled once."""
    s = Store(Settings(home=tmp_path_factory.mktemp("console-reports"), store={"ttl_days": 60}))
    s.start()
    s.insert_flows(flow_table(FLOWS), dedup_token="known")
    s.insert_flows(flow_rows(TB, 1, seed=5), dedup_token="random")
    yield s
    s.stop()


def report(store: Store, name: str, **params: Any) -> ReportResult:
    given = {k: iso(v) if k in ("since", "until") and isinstance(v, int) else str(v) for k, v in params.items()}
    return run_report(store.query_readonly, name, given, store.settings, now=NOW)


# --- traffic -----------------------------------------------------------------------------------


def test_traffic_stacks_the_top_series_and_sums_the_rest_as_other(store: Store) -> None:
    since, until = THREE_MIN
    result = report(store, "traffic", since=since, until=until, by="interface_id", top=2)
    assert result.columns == ["step_start", "series", "value"]
    assert result.table == "flows_1m" and (result.since, result.until) == THREE_MIN
    # Bytes over the range: eni-1 900 000, eni-5 41 000 lead; eni-2, eni-3, eni-4 are other.
    assert result.rows == [
        [iso(T0), "eni-1", pytest.approx(600_000 * 8 / 60)],
        [iso(T0), "other", pytest.approx((30_000 + 1_800) * 8 / 60)],
        [iso(T0 + 60), "eni-1", pytest.approx(300_000 * 8 / 60)],
        [iso(T0 + 60), "eni-5", pytest.approx(1_000 * 8 / 60)],
        [iso(T0 + 60), "other", pytest.approx(600 * 8 / 60)],
        [iso(T0 + 120), "eni-5", pytest.approx(40_000 * 8 / 60)],
        [iso(T0 + 120), "other", pytest.approx((2_000 + 500) * 8 / 60)],
    ]
    every = report(store, "traffic", since=since, until=until)  # top 10: every ENI with traffic, no other
    assert sorted({r[1] for r in every.rows}) == ["eni-1", "eni-2", "eni-3", "eni-4", "eni-5"]  # not eni-6's marker


def test_traffic_in_packets_per_second_by_any_whitelisted_column(store: Store) -> None:
    result = report(store, "traffic", since=T0 + 30, until=T0 + 250, step="2m", by="protocol", metric="pps")
    assert (result.since, result.until) == (T0, T0 + 240)  # whole steps only
    assert result.rows == [  # tcp has 255 packets, udp 210: tcp ranks first
        [iso(T0), "6", pytest.approx((100 + 50 + 30 + 10) / 120)],
        [iso(T0), "17", pytest.approx((200 + 10) / 120)],
        [iso(T0 + 120), "6", pytest.approx((20 + 5 + 40) / 120)],
    ]
    by_action = report(store, "traffic", since=T0, until=T0 + 60, by="action", metric="bps", top=1)
    assert by_action.rows == [
        [iso(T0), "ACCEPT", pytest.approx(630_000 * 8 / 60)],
        [iso(T0), "other", pytest.approx(1_800 * 8 / 60)],
    ]
    hourly = report(store, "traffic", since=T0, until=T0 + HOUR, step="1h", by="flow_direction")
    assert hourly.table == "flows_1h"
    assert hourly.rows == [
        [iso(T0), "egress", pytest.approx(971_500 * 8 / HOUR)],
        [iso(T0), "ingress", pytest.approx(4_400 * 8 / HOUR)],
    ]


def test_traffic_from_a_rollup_matches_the_raw_rows(store: Store) -> None:
    """Random traffic: per 5 minutes by destination port, the top 2 ports and the rest, from
    flows_5m, against sums over the raw table done here."""
    result = report(store, "traffic", since=TB, until=TB + HOUR, step="5m", by="dstport", top=2)
    assert result.table == "flows_5m"
    _, raw = store.query(
        f"SELECT intDiv(toUInt32(window_start), 300) * 300, toString(dstport), sum(bytes) FROM flows"
        f" WHERE window_start >= {TB} AND window_start < {TB + HOUR} GROUP BY 1, 2"
    )
    totals: dict[str, int] = defaultdict(int)
    for _, port, sent in raw:
        totals[port] += sent
    leaders = sorted(totals, key=lambda port: (-totals[port], port))[:2]
    expected: dict[tuple[str, str], int] = defaultdict(int)
    for step, port, sent in raw:
        expected[iso(step), port if port in leaders else "other"] += sent
    order = {port: i for i, port in enumerate([*leaders, "other"])}
    assert len(totals) == 4 and len(result.rows) == 12 * 3
    assert result.rows == [
        [step, series, pytest.approx(sent * 8 / 300)]
        for (step, series), sent in sorted(expected.items(), key=lambda item: (item[0][0], order[item[0][1]]))
    ]


# --- sankey ------------------------------------------------------------------------------------


def test_sankey_links_remote_prefixes_and_enis(store: Store) -> None:
    since, until = THREE_MIN
    result = report(store, "sankey", since=since, until=until)
    assert result.columns == ["source", "target", "bytes", "packets"] and result.table == "flows_1m"
    assert result.rows == [
        ["eni-1", "8.8.8.0/24", 900_000, 150],
        ["eni-5", "198.51.100.0/24", 40_000, 40],
        ["eni-2", "1.1.1.0/24", 30_000, 200],
        ["203.0.113.0/24", "eni-3", 2_400, 40],  # two sources of one /24
        ["2001:db8:1::/48", "eni-4", 2_000, 20],
        ["eni-5", "1.1.1.0/24", 1_000, 10],
        ["eni-4", "2001:db8:1::/48", 500, 5],
    ]
    assert report(store, "sankey", since=since, until=until, limit=2).rows == result.rows[:2]


def test_sankey_per_subnet_merges_the_enis_of_a_subnet(store: Store) -> None:
    since, until = THREE_MIN
    result = report(store, "sankey", since=since, until=until, level="subnet")
    assert result.rows == [
        ["subnet-1", "8.8.8.0/24", 900_000, 150],
        ["subnet-2", "198.51.100.0/24", 40_000, 40],
        ["subnet-2", "1.1.1.0/24", 31_000, 210],  # eni-2 and eni-5
        ["203.0.113.0/24", "subnet-3", 2_400, 40],
        ["2001:db8:1::/48", "subnet-3", 2_000, 20],
        ["subnet-3", "2001:db8:1::/48", 500, 5],
    ]
    assert report(store, "sankey", since=T0 + HOUR, until=T0 + 2 * HOUR).rows == []


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("traffic", {"by": "srcaddr"}, "by 'srcaddr' is not one of interface_id, vpc_id, subnet_id, protocol"),
        ("traffic", {"metric": "bytes"}, "metric 'bytes' is not one of bps, pps"),
        ("traffic", {"top": "0"}, "top must be at least 1"),
        ("traffic", {"step": "10s"}, "step must be at least 60"),
        ("sankey", {"level": "vpc"}, "level 'vpc' is not one of eni, subnet"),
        ("sankey", {"limit": "5; DROP TABLE flows"}, "is not a whole number"),
    ],
)
def test_bad_parameters_are_refused(name: str, params: dict[str, str], message: str) -> None:
    def refuse(sql: str) -> Any:
        raise AssertionError(f"no SQL should run: {sql}")

    with pytest.raises(ConfigError, match=re.escape(message)):
        run_report(refuse, name, params, Settings(), now=NOW)


# --- the console's assets ----------------------------------------------------------------------

CONSOLE = Path(__file__).resolve().parents[1] / "pipeline" / "console"
VENDOR_SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "console" / "vendor.py"
# URLs that are names, never fetched: XML namespaces (an SVG file must declare its own), and
# in the vendored ECharts the license texts it cites.
NAMESPACES = {"http://www.w3.org/2000/svg"}
VENDOR_URLS = {
    "http://www.apache.org/licenses/LICENSE-2.0",
    "http://www.w3.org/1999/xlink",
    "http://www.w3.org/2000/svg",
    "http://www.w3.org/2000/xmlns/",
    "http://www.w3.org/XML/1998/namespace",
    "https://github.com/ecomfe/zrender/blob/master/LICENSE",
}
_IMPORT = re.compile(r"""^\s*(?:import|export)\b[^'"]*?from\s*["']([^"']+)["']|^\s*import\s*["']([^"']+)["']""", re.M)


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("#")]


def _loaded_files() -> set[Path]:
    """index.html and every file it loads, and every module those import, in turn."""
    parser = _References()
    parser.feed((CONSOLE / "index.html").read_text())
    todo = [CONSOLE / ref for ref in parser.found]
    seen = {CONSOLE / "index.html"}
    while todo:
        path = todo.pop().resolve()
        assert path.is_relative_to(CONSOLE) and path.is_file(), f"{path} is not a file of pipeline/console"
        if path not in seen and path.suffix == ".js" and path.parent == CONSOLE:
            todo += [path.parent / (a or b) for a, b in _IMPORT.findall(path.read_text())]
        seen.add(path)
    return seen


def test_every_file_the_console_loads_is_bundled() -> None:
    parser = _References()
    parser.feed((CONSOLE / "index.html").read_text())
    assert all(not re.match(r"^(?:[a-z]+:|//|/)", ref) for ref in parser.found), parser.found  # relative only
    loaded = {p.relative_to(CONSOLE).as_posix() for p in _loaded_files()}
    assert {"index.html", "console.css", "app.js", "vendor/echarts.min.js"} <= loaded
    pages = {"traffic.js", "talkers.js", "sankey.js", "rejects.js", "alarms.js", "flows.js", "flow_logs.js"}
    assert pages <= loaded
    unused = {p.name for p in CONSOLE.glob("*.js")} - loaded
    assert not unused, f"not loaded by the console: {unused}"


def test_no_asset_reaches_outside_the_worker() -> None:
    for path in CONSOLE.rglob("*"):
        if not path.is_file() or path.suffix not in (".html", ".css", ".js", ".svg"):
            continue
        text = path.read_text()
        urls = set(re.findall(r"https?://[^\s\"'`)]*", text))
        if path.relative_to(CONSOLE).as_posix() == "vendor/echarts.min.js":
            assert urls <= VENDOR_URLS, urls - VENDOR_URLS
        else:
            assert urls <= NAMESPACES, f"{path.name} names {urls - NAMESPACES}"
            assert not re.search(r"""(?:src|href)\s*=\s*["']//|url\(\s*["']?//|@import""", text), path.name


def test_vendored_echarts_is_the_pinned_release_with_its_licenses() -> None:
    spec = importlib.util.spec_from_file_location("console_vendor", VENDOR_SCRIPT)
    assert spec is not None and spec.loader is not None
    vendor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vendor)
    assert vendor.check(CONSOLE / "vendor") == []  # every file there, with its pinned sha256
