"""Named reports in real chDB: known flows in, exact numbers out, from raw rows and rollups;
bad parameters refused before any SQL is built; `flowlogs report` on the command line."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from flowlogs import cli
from flowlogs.errors import ConfigError, FlowLogsError
from flowlogs.settings import Settings
from pipeline.records import FlowRecordBuilder
from pipeline.reports import REPORTS, ReportResult, run_report
from pipeline.store import Store
from schemas import flow_record
from schemas.inventory import Inventory
from schemas.rules import LAYERS
from tests.test_rollups import flow_rows

HOUR, WEEK = 3600, 7 * 86_400
WINDOW_S = 60
H = int(time.time()) // HOUR * HOUR  # the current hour
NOW = H + 600
T0 = H - HOUR  # the latest complete hour: the recent flows
T1 = H - 3 * HOUR  # two ENIs' steady traffic with one peak, for the overuse ranking
TB = H - 48 * HOUR  # random traffic of tests/test_rollups.py, for raw-versus-rollup answers

ENIS = ["eni-1", "eni-2", "eni-3", "eni-4", "eni-5", "eni-6"]
PLACEMENT = {
    "eni-1": ("vpc-1", "subnet-1"),
    "eni-2": ("vpc-1", "subnet-2"),
    "eni-3": ("vpc-2", "subnet-3"),
    "eni-4": ("vpc-2", "subnet-3"),
    "eni-5": ("vpc-1", "subnet-2"),
    "eni-6": ("vpc-2", "subnet-3"),
}
INVENTORY = {
    "vpcs": [{"id": "vpc-1"}, {"id": "vpc-2"}],
    "subnets": [
        {"id": "subnet-1", "vpc": "vpc-1", "cidr": "10.0.1.0/24"},
        {"id": "subnet-2", "vpc": "vpc-1", "cidr": "10.0.2.0/24"},
        {"id": "subnet-3", "vpc": "vpc-2", "cidr": "10.0.3.0/24"},
    ],
}
OVERRIDES = {  # the most specific scope wins: eni-5 gets 40 kb/s, eni-4 its VPC's 500 kb/s
    "vpc-2": {"bandwidth": {"limit_bps": 500_000}},
    "subnet-2": {"bandwidth": {"limit_bps": 1e9}},
    "eni-5": {"bandwidth": {"limit_bps": 40_000}},
}


@dataclass(frozen=True)
class Flow:
    eni: str
    src: str
    dst: str
    packets: int
    bytes: int
    at: int  # window start
    dstport: int = 443
    protocol: int = 6
    direction: str = "egress"
    action: str = "ACCEPT"
    layer: str = "default"
    rule: str = "-"


def _stored(address: str) -> bytes:
    ip = ipaddress.ip_address(address)
    return (ipaddress.IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip).packed


def flow_table(flows: list[Flow]) -> pa.Table:
    """The flows as the worker stores them (pipeline/records.py)."""
    n = len(flows)
    rules = sorted({f.rule for f in flows})
    window = np.array([f.at for f in flows], np.uint32)
    cols = {
        "version": np.full(n, flow_record.RECORD_VERSION, np.uint8),
        "flow_id": np.arange(n, dtype=np.uint64),
        "eni": np.array([ENIS.index(f.eni) for f in flows]),
        "srcaddr": np.frombuffer(b"".join(_stored(f.src) for f in flows), "V16"),
        "dstaddr": np.frombuffer(b"".join(_stored(f.dst) for f in flows), "V16"),
        "srcport": np.full(n, 40_000, np.uint16),
        "dstport": np.array([f.dstport for f in flows], np.uint16),
        "protocol": np.array([f.protocol for f in flows], np.uint8),
        "packets": np.array([f.packets for f in flows], np.uint64),
        "bytes": np.array([f.bytes for f in flows], np.uint64),
        "start": window,
        "end": window + np.uint32(WINDOW_S - 1),
        "window_start": window,
        "action": np.array([flow_record.ACTIONS.index(f.action) for f in flows], np.int32),
        "rule_layer": np.array([LAYERS.index(f.layer) for f in flows], np.int32),
        "rule_id": np.array([rules.index(f.rule) for f in flows], np.int32),
        "rule_id_values": np.array(rules, dtype=object),
        "rule_set_version": np.ones(n, np.uint32),
        "log_status": np.zeros(n, np.int32),
        "tcp_flags": np.zeros(n, np.uint8),
        "flow_direction": np.array([flow_record.DIRECTIONS.index(f.direction) for f in flows], np.int32),
        "type": np.array([":" in f.src for f in flows], np.int32),
    }
    return FlowRecordBuilder(ENIS, PLACEMENT, WINDOW_S * 10**9).arrow(cols)


RECENT = [  # in the latest complete hour, T0
    Flow("eni-1", "10.0.1.10", "8.8.8.8", 100, 150_000, T0),
    Flow("eni-1", "10.0.1.10", "8.8.8.8", 50, 50_000, T0 + 60),
    Flow("eni-2", "10.0.2.20", "1.1.1.1", 200, 20_000, T0, dstport=53, protocol=17),
    Flow("eni-1", "203.0.113.7", "10.0.1.10", 30, 1_800, T0, 22, 6, "ingress", "REJECT", "sg", "sg-ssh"),
    Flow("eni-1", "203.0.113.8", "10.0.1.10", 10, 600, T0 + 60, 22, 6, "ingress", "REJECT", "sg", "sg-ssh"),
    Flow("eni-1", "203.0.113.7", "10.0.1.10", 5, 300, T0 + 120, 3389, 6, "ingress", "REJECT", "acl", "acl-1/3"),
    Flow("eni-1", "81.2.69.142", "10.0.1.10", 40, 4_000, T0 + 120, direction="ingress"),
    # broadcast and multicast
    Flow("eni-2", "10.0.2.20", "255.255.255.255", 600, 200_000, T0, dstport=67, protocol=17),
    Flow("eni-2", "10.0.2.20", "224.0.0.251", 400, 100_000, T0 + 60, dstport=5353, protocol=17),
    Flow("eni-1", "10.0.1.11", "10.0.1.255", 90, 9_000, T0, dstport=137, protocol=17),  # its subnet's broadcast
    Flow("eni-3", "fe80::1", "ff02::1", 60, 6_000, T0, dstport=547, protocol=17),
    Flow("eni-3", "10.0.3.5", "10.0.1.255", 1_000, 50_000, T0, dstport=137, protocol=17),  # another subnet's
    # two flows alike in every measure: ranked by address
    Flow("eni-2", "10.0.2.23", "10.0.2.22", 7, 700, T0 + 180, dstport=8080),
    Flow("eni-2", "10.0.2.21", "10.0.2.22", 7, 700, T0 + 180, dstport=8080),
]
FIRST_10_MIN = (T0, T0 + 600)  # every flow of RECENT

# eni-4 at 200 kb/s with one minute at 1 Mb/s; eni-5 at a steady 100 kb/s.
STEADY = [
    Flow("eni-4", "10.0.3.40", "10.0.3.41", 10, 7_500_000 if m == 10 else 1_500_000, T1 + m * 60) for m in range(60)
]
STEADY += [Flow("eni-5", "10.0.2.50", "10.0.2.51", 10, 750_000, T1 + m * 60) for m in range(60)]


def _hour_of(bps: int, at: int) -> Flow:
    return Flow("eni-6", "10.0.3.60", "9.9.9.9", 1_000, bps * HOUR // 8, at)


# eni-6: the same hour of the three previous weeks at 8, 6 and 7 kb/s, then 40 kb/s in the
# latest hour: 5 × the baseline. Four weeks back (outside the default 4w) it ran at 80 kb/s.
HISTORY = [_hour_of(bps, T0 + 1800 - k * WEEK) for k, bps in ((1, 8_000), (2, 6_000), (3, 7_000), (4, 80_000))]
HISTORY += [_hour_of(2_000, T0 - HOUR - WEEK), _hour_of(40_000, T0 + 1800)]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reports")


def _settings(home: Path, **sections: dict[str, Any]) -> Settings:
    # Raw rows kept for 60 days: the baseline weeks stay in the raw table too.
    return Settings(home=home, store={"ttl_days": 60}, **sections)


@pytest.fixture(scope="module")
def store(home: Path) -> Iterator[Store]:
    """One chDB for the module (a process opens chDB once at a time), filled once."""
    s = Store(_settings(home))
    s.start()
    for i, flows in enumerate((RECENT, STEADY, HISTORY)):
        s.insert_flows(flow_table(flows), dedup_token=f"known-{i}")
    s.insert_flows(flow_rows(TB, 1, seed=3), dedup_token="random")
    yield s
    s.stop()


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report(store: Store, name: str, settings: Settings | None = None, **params: Any) -> ReportResult:
    given = {k: iso(v) if k in ("since", "until") and isinstance(v, int) else str(v) for k, v in params.items()}
    return run_report(store.query_readonly, name, given, settings or store.settings, now=NOW)


# --- top talkers ---------------------------------------------------------------------------


def test_top_talkers_rank_by_bytes_then_packets(store: Store) -> None:
    since, until = FIRST_10_MIN
    result = report(store, "top-talkers", since=since, until=until, limit=3)
    assert result.table == "flows_5m" and (result.since, result.until) == FIRST_10_MIN
    assert result.columns == ["src", "dst", "protocol", "dstport", "packets", "bytes", "records"]
    assert result.rows == [
        ["10.0.2.20", "255.255.255.255", 17, 67, 600, 200_000, 1],  # ties on bytes; more packets
        ["10.0.1.10", "8.8.8.8", 6, 443, 150, 200_000, 2],
        ["10.0.2.20", "224.0.0.251", 17, 5353, 400, 100_000, 1],
    ]


def test_top_talkers_by_any_dimension_and_metric(store: Store) -> None:
    since, until = FIRST_10_MIN
    result = report(store, "top-talkers", since=since, until=until, by="srcaddr", metric="packets")
    assert [(r["src"], r["packets"], r["bytes"], r["records"]) for r in result.row_dicts()] == [
        ("10.0.2.20", 1_200, 320_000, 3),
        ("10.0.3.5", 1_000, 50_000, 1),
        ("10.0.1.10", 150, 200_000, 2),
        ("10.0.1.11", 90, 9_000, 1),
        ("fe80::1", 60, 6_000, 1),
        ("81.2.69.142", 40, 4_000, 1),
        ("203.0.113.7", 35, 2_100, 2),
        ("203.0.113.8", 10, 600, 1),
        ("10.0.2.21", 7, 700, 1),  # a full tie: the lower address first
        ("10.0.2.23", 7, 700, 1),
    ]
    per_port = report(
        store, "top-talkers", since=since, until=until, by="flow_direction,dstport", metric="records", limit=2
    )
    assert per_port.columns == ["flow_direction", "dstport", "packets", "bytes", "records"]
    assert per_port.rows == [["egress", 443, 150, 200_000, 2], ["egress", 137, 1_090, 59_000, 2]]  # more bytes first
    by_rule = report(store, "top-talkers", since=since, until=until, by="rule_id", limit=1)
    assert by_rule.table == "flows" and by_rule.rows[0][0] == "-"  # the rollups keep no rule ids


def test_top_talkers_read_a_rollup_and_answer_as_the_raw_table(store: Store) -> None:
    """Over the random traffic of tests/test_rollups.py: an aligned range reads the 5 m rollup,
    a range one second earlier the raw table (no window starts in that second); same rows."""
    params = {"by": "interface_id,protocol,dstport", "metric": "packets", "limit": 1_000}
    rolled = report(store, "top-talkers", since=TB, until=TB + HOUR, **params)
    raw = report(store, "top-talkers", since=TB - 1, until=TB + HOUR, **params)
    assert (rolled.table, raw.table) == ("flows_5m", "flows")
    _, direct = store.query(
        "SELECT interface_id, protocol, dstport, sum(packets) AS p, sum(bytes) AS b, count() AS r FROM flows"
        f" WHERE window_start >= {TB} AND window_start < {TB + HOUR}"
        " GROUP BY interface_id, protocol, dstport ORDER BY p DESC, b DESC, r DESC, interface_id, protocol, dstport"
    )
    assert rolled.rows == raw.rows == [list(r) for r in direct]
    assert len(direct) > 10


# --- bandwidth -------------------------------------------------------------------------------


def test_bandwidth_per_eni_per_step(store: Store) -> None:
    result = report(store, "bandwidth", since=T0 + 30, until=T0 + 240, step="2m", interface="eni-2")
    assert (result.since, result.until) == (T0, T0 + 240)  # widened to whole steps
    assert result.columns == ["step_start", "interface_id", "bps", "pps", "bytes", "packets"]
    assert result.rows == [
        [iso(T0), "eni-2", pytest.approx(320_000 * 8 / 120), pytest.approx(1_200 / 120), 320_000, 1_200],
        [iso(T0 + 120), "eni-2", pytest.approx(1_400 * 8 / 120), pytest.approx(14 / 120), 1_400, 14],
    ]
    every = report(store, "bandwidth", since=T0, until=T0 + 120)  # the default step: 60 s
    assert every.table == "flows_1m"
    assert [(r["step_start"], r["interface_id"], r["bytes"]) for r in every.row_dicts()] == [
        (iso(T0), "eni-1", 150_000 + 1_800 + 9_000),
        (iso(T0), "eni-2", 220_000),
        (iso(T0), "eni-3", 56_000),
        (iso(T0 + 60), "eni-1", 50_600),
        (iso(T0 + 60), "eni-2", 100_000),
    ]
    assert report(store, "bandwidth", since=T1, until=T1 + HOUR, step="1h").table == "flows_1h"


# --- broadcast storms ------------------------------------------------------------------------


def test_storm_sources_count_broadcast_and_multicast(store: Store, home: Path) -> None:
    since, until = FIRST_10_MIN
    columns = ["src", "interface_id", "packets", "pps", "bytes", "destinations", "records"]
    limited = report(store, "storm-sources", since=since, until=until)
    assert limited.columns == columns and limited.table == "flows_5m"
    assert limited.rows == [
        ["10.0.2.20", "eni-2", 1_000, pytest.approx(1_000 / 600), 300_000, 2, 2],
        ["fe80::1", "eni-3", 60, pytest.approx(0.1), 6_000, 1, 1],
    ]
    # With the inventory, a subnet's directed broadcast counts too — from an ENI of that subnet.
    inventory = home / "inventory.yaml"
    Inventory.model_validate(INVENTORY).dump(inventory)
    with_inventory = _settings(home, worker={"inventory": inventory})
    directed = report(store, "storm-sources", with_inventory, since=since, until=until)
    assert [(r["src"], r["interface_id"], r["packets"]) for r in directed.row_dicts()] == [
        ("10.0.2.20", "eni-2", 1_000),
        ("10.0.1.11", "eni-1", 90),
        ("fe80::1", "eni-3", 60),
    ]


# --- bandwidth overuse -----------------------------------------------------------------------


def test_overuse_ranks_by_peak_over_limit_or_p95(store: Store, home: Path) -> None:
    settings = _settings(home, detect={"overrides": OVERRIDES})
    per_minute = report(store, "overuse", settings, since=T1, until=T1 + HOUR)
    assert per_minute.table == "flows_1m"
    assert per_minute.columns == [
        "interface_id", "vpc_id", "subnet_id", "peak_bps", "peak_at", "p95_bps",
        "limit_bps", "peak_over_limit", "peak_over_p95",
    ]
    assert per_minute.rows == [
        ["eni-4", "vpc-2", "subnet-3", 1_000_000, iso(T1 + 600), 200_000, 500_000, 2.0, 5.0],
        ["eni-5", "vpc-1", "subnet-2", 100_000, iso(T1), 100_000, 40_000, 2.5, 1.0],
    ]
    # Per 5 minutes eni-4's peak is 360 kb/s, its p95 the same: eni-5 now leads.
    per_5m = report(store, "overuse", settings, since=T1, until=T1 + HOUR, step="5m")
    assert per_5m.table == "flows_5m"
    ranked = [(r["interface_id"], r["peak_bps"], r["peak_over_limit"], r["peak_over_p95"]) for r in per_5m.row_dicts()]
    assert ranked == [
        ("eni-5", 100_000, 2.5, 1.0),
        ("eni-4", 360_000, 0.72, 1.0),
    ]
    # Over 21 hours the one busy hour is under 5 % of the steps: idle steps count, the p95 is 0.
    long = report(store, "overuse", settings, since=T1 - 20 * HOUR, until=T1 + HOUR)
    assert [(r["interface_id"], r["p95_bps"], r["peak_over_p95"]) for r in long.row_dicts()] == [
        ("eni-5", 0, None),
        ("eni-4", 0, None),
    ]
    # Without limits only the ratio to the p95 ranks.
    plain = report(store, "overuse", since=T1, until=T1 + HOUR)
    assert [(r["interface_id"], r["limit_bps"], r["peak_over_limit"]) for r in plain.row_dicts()] == [
        ("eni-4", None, None),
        ("eni-5", None, None),
    ]


# --- rejects ---------------------------------------------------------------------------------


def test_rejects_by_rule(store: Store) -> None:
    since, until = FIRST_10_MIN
    result = report(store, "rejects-by-rule", since=since, until=until)
    assert result.table == "flows"  # the rollups keep no rule ids
    assert result.columns == [
        "rule_layer", "rule_id", "records", "packets", "bytes", "sources", "top_source", "top_source_packets"
    ]
    assert result.rows == [
        ["sg", "sg-ssh", 2, 40, 2_400, 2, "203.0.113.7", 30],
        ["acl", "acl-1/3", 1, 5, 300, 1, "203.0.113.7", 5],
    ]


# --- access regions --------------------------------------------------------------------------


def test_access_regions_by_country_of_the_remote_address(store: Store) -> None:
    """Countries from the bundled DB-IP data: 8.8.8.8 US, 1.1.1.1 AU, 81.2.69.142 GB; private,
    documentation, broadcast and multicast addresses are nowhere ('--')."""
    since, until = FIRST_10_MIN
    both = report(store, "access-regions", since=since, until=until)
    assert both.columns == ["country", "bytes", "packets", "records", "remotes"]
    assert both.table == "flows_5m"
    assert both.rows == [
        ["--", 369_100, 2_209, 10, 7],
        ["US", 200_000, 150, 2, 1],
        ["AU", 20_000, 200, 1, 1],
        ["GB", 4_000, 40, 1, 1],
    ]
    ingress = report(store, "access-regions", since=since, until=until, direction="ingress")
    assert ingress.rows == [["GB", 4_000, 40, 1, 1], ["--", 2_700, 45, 3, 2]]
    assert report(store, "access-regions", since=T0 + 3000, until=T0 + 3300).rows == []


def test_access_regions_name_a_missing_database(store: Store, home: Path) -> None:
    settings = _settings(home, report={"geoip_mmdb": home / "missing.mmdb"})
    with pytest.raises(FlowLogsError, match="missing.mmdb does not exist"):
        report(store, "access-regions", settings, since=FIRST_10_MIN[0], until=FIRST_10_MIN[1])


# --- baselines -------------------------------------------------------------------------------


def test_baselines_show_the_latest_hour_against_its_hour_of_week(store: Store) -> None:
    result = report(store, "baselines")  # since 4w: three earlier weeks of the latest hour
    assert result.table == "flows_1h" and (result.since, result.until) == (H - 4 * WEEK, H)
    assert result.columns == ["interface_id", "hour", "hour_of_week", "current_bps", "p95_bps", "weeks", "deviation"]
    hour_of_week = datetime.fromtimestamp(T0, UTC).weekday() * 24 + datetime.fromtimestamp(T0, UTC).hour
    assert result.rows[0] == [
        "eni-6", iso(T0), hour_of_week, 40_000, 8_000, 3, 5.0  # 80 kb/s four weeks back is out of range
    ]
    recent_bytes = {"eni-1": 215_700, "eni-2": 321_400, "eni-3": 56_000}  # no history: no deviation
    assert [(r[0], r[3], r[4], r[6]) for r in result.rows[1:]] == [
        (eni, pytest.approx(b * 8 / HOUR), 0, None) for eni, b in recent_bytes.items()
    ]
    # Five weeks reach the 80 kb/s hour: it becomes the baseline.
    five = report(store, "baselines", since="5w")
    assert five.rows[0] == ["eni-6", iso(T0), hour_of_week, 40_000, 80_000, 4, 0.5]


def test_baselines_per_hour_of_week(store: Store) -> None:
    result = report(store, "baselines", show="baseline")
    assert result.columns == ["interface_id", "hour_of_week", "weeks", "p95_bps"]
    assert (result.since, result.until) == (H - 4 * WEEK, T0)
    week_hour = datetime.fromtimestamp(T0, UTC).weekday() * 24 + datetime.fromtimestamp(T0, UTC).hour
    eni_6 = [r for r in result.rows if r[0] == "eni-6"]
    assert eni_6 == sorted(
        [
            ["eni-6", week_hour, 3, 8_000],
            ["eni-6", (week_hour - 1) % 168, 4, 2_000],  # one hour in four weeks, the p95 of four
        ]
    )


def test_an_empty_result_still_names_its_columns(store: Store) -> None:
    for name in REPORTS:
        busy = report(store, name, since=T1 - 3 * HOUR, until=H)
        quiet = report(store, name, since=T1 - 10 * HOUR, until=T1 - 8 * HOUR)  # no flow starts then
        assert busy.rows and not quiet.rows, name
        assert quiet.columns == busy.columns, name


# --- parameters ------------------------------------------------------------------------------


def test_every_report_runs_with_its_defaults(store: Store) -> None:
    for name in REPORTS:
        result = run_report(store.query_readonly, name, {}, store.settings, now=NOW)
        assert result.until <= NOW and all(len(r) == len(result.columns) for r in result.rows), name


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("top-talker", {}, "no report named 'top-talker'; the reports are top-talkers, bandwidth"),
        ("top-talkers", {"sort": "bytes"}, "report top-talkers has no parameter sort; it takes since, until, by"),
        ("top-talkers", {"by": "srcaddr; DROP TABLE flows"}, "by: 'srcaddr; DROP TABLE flows' is not in interface_id"),
        ("top-talkers", {"by": "srcaddr,bytes"}, "by: 'bytes' is not in"),
        ("top-talkers", {"by": "srcaddr,srcaddr"}, "names a value twice"),
        ("top-talkers", {"metric": "flows"}, "metric 'flows' is not one of bytes, packets, records"),
        ("top-talkers", {"limit": "10 OR 1=1"}, "limit '10 OR 1=1' is not a whole number"),
        ("top-talkers", {"limit": "0"}, "limit must be at least 1"),
        ("bandwidth", {"interface": "eni-1' OR '1'='1"}, "interface \"eni-1' OR '1'='1\" is not valid"),
        ("bandwidth", {"step": "30s"}, "step must be at least 60, not 30"),
        ("bandwidth", {"step": "1 fortnight"}, "step '1 fortnight' is not a number of seconds"),
        ("bandwidth", {"since": "50s", "until": "10s"}, "holds no whole 60 s step"),
        ("rejects-by-rule", {"since": "last tuesday"}, "since 'last tuesday' is not a time"),
        ("rejects-by-rule", {"since": "1h", "until": "2h"}, "must be later than since"),
        ("access-regions", {"direction": "sideways"}, "direction 'sideways' is not one of both, ingress, egress"),
        ("baselines", {"since": "30m"}, "baselines need more than one hour"),
    ],
)
def test_bad_parameters_are_refused_with_what_is_valid(name: str, params: dict[str, str], message: str) -> None:
    def refuse(sql: str) -> Any:
        raise AssertionError(f"no SQL should run: {sql}")

    with pytest.raises(ConfigError, match=re.escape(message)):
        run_report(refuse, name, params, Settings(), now=NOW)


def test_specs_are_declarative() -> None:
    for spec in REPORTS.values():
        assert spec.description and spec.params[0].name == "since"
        for param in spec.params:
            described = json.loads(json.dumps(param.as_dict()))  # plain data, for an API document
            assert described["name"] == param.name and described["kind"] == param.kind
            if param.default is not None:
                param.parse(param.default, NOW)  # every default is a valid value


# --- the command line ------------------------------------------------------------------------


@pytest.fixture
def cli_home(store: Store, home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The module's store closed while `flowlogs` opens it (a process opens chDB once at a time)."""
    for name in [n for n in os.environ if n.startswith("FLOWLOGS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps tables and messages to the terminal width
    monkeypatch.setenv("FLOWLOGS_HOME", str(home))
    monkeypatch.setenv("FLOWLOGS_STORE__TTL_DAYS", "60")
    monkeypatch.chdir(tmp_path)
    store.stop()
    try:
        yield home
    finally:
        store.start()


def test_cli_runs_a_report_as_json_lines_or_a_table(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    since, until = (iso(t) for t in FIRST_10_MIN)
    args = ["report", "top-talkers", "--since", since, "--until", until, "--by", "srcaddr", "--metric", "packets"]
    assert cli.main([*args, "--limit", "2", "--format", "json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"src": "10.0.2.20", "packets": 1_200, "bytes": 320_000, "records": 3},
        {"src": "10.0.3.5", "packets": 1_000, "bytes": 50_000, "records": 1},
    ]
    assert cli.main(["report", "rejects-by-rule", "--since", since, "--until", until]) == 0
    table = capsys.readouterr().out
    assert "sg-ssh" in table and "203.0.113.7" in table and "from flows" in table


def test_cli_lists_the_reports_and_refuses_bad_input(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--list"]) == 0
    listing = capsys.readouterr().out
    for name in REPORTS:
        assert name in listing
    assert cli.main(["report", "top-talkers", "--by", "srcaddr; DROP TABLE flows"]) == 2
    assert "is not in interface_id" in capsys.readouterr().err
    assert cli.main(["report", "bandwidth", "--by", "srcaddr"]) == 2
    takes = "report bandwidth takes --since, --until, --step, --interface, --source and --format, not --by srcaddr"
    assert takes in capsys.readouterr().err
    assert cli.main(["report", "nope"]) == 2
    assert "no report named 'nope'" in capsys.readouterr().err
    assert cli.main(["report"]) == 2
    assert "flowlogs report --list" in capsys.readouterr().err
