"""Rollups: DDL generated from schemas/rollups.py, and in real chDB the 1 m / 5 m / 1 h tables
hold exactly the raw totals, survive replays and merges, and reports answer the same from them."""

import inspect
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flowlogs.settings import Settings, StoreSettings
from pipeline import reports
from pipeline.records import FlowRecordBuilder
from pipeline.store import Store
from schemas import flow_record, rollups
from schemas.flow_record import FLOW_FIELDS, FLOWS_TABLE

FIELDS = {f.column: f for f in FLOW_FIELDS}
ONE_M, FIVE_M, ONE_H = rollups.ROLLUPS


# --- DDL ---------------------------------------------------------------------------------


def test_rollup_tables_sum_every_measure_and_key_every_dimension() -> None:
    for r in rollups.ROLLUPS:
        ddl = rollups.create_table_ddl(r)
        assert f"CREATE TABLE IF NOT EXISTS {r.table}\n" in ddl
        assert "ENGINE = SummingMergeTree\n" in ddl
        assert "PARTITION BY toDate(bucket)\n" in ddl
        assert f"TTL bucket + INTERVAL {r.default_ttl_days} DAY\n" in ddl
        assert f"ORDER BY ({', '.join(r.sort_key)})" in ddl
        assert sorted(r.sort_key) == sorted(("bucket", *r.dimensions))  # measures are never in the key
        assert r.primary_key == r.sort_key[:2] == ("interface_id", "bucket")
        for column in r.columns:
            assert f"`{column}` " in ddl
        # Codecs as the flow record defines them; the bucket is coded like window_start.
        assert f"`bucket` DateTime('UTC') {FIELDS['window_start'].codec} " in ddl
        for m in ("packets", "bytes"):
            assert f"`{m}` UInt64 {FIELDS[m].codec} " in ddl
        for d in r.dimensions:
            f = FIELDS[d]
            assert f"`{d}` {f.clickhouse_type}{' ' + f.codec if f.codec else ''} COMMENT" in ddl
    assert "INTERVAL 30 DAY" in rollups.create_table_ddl(FIVE_M, ttl_days=30)
    assert "CREATE TABLE IF NOT EXISTS db.flows_5m\n" in rollups.create_table_ddl(FIVE_M, database="db")


def test_views_group_raw_flows_into_buckets() -> None:
    intervals = {"1m": "INTERVAL 1 MINUTE", "5m": "INTERVAL 5 MINUTE", "1h": "INTERVAL 1 HOUR"}
    for r in rollups.ROLLUPS:
        ddl = rollups.create_view_ddl(r)
        assert ddl.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {r.view} TO {r.table}\nAS SELECT\n")
        assert f"toStartOfInterval(window_start, {intervals[r.label]}) AS bucket" in ddl
        assert f"\nFROM {FLOWS_TABLE}\nGROUP BY {', '.join(('bucket', *r.dimensions))}" in ddl
        assert "sum(packets) AS packets" in ddl and "sum(bytes) AS bytes" in ddl and "count() AS records" in ddl
        qualified = rollups.create_view_ddl(r, "db")
        assert f" db.{r.view} TO db.{r.table}\n" in qualified and f"FROM db.{FLOWS_TABLE}\n" in qualified


def test_dimension_choice() -> None:
    talkers = {"srcaddr", "dstaddr", "dstport", "protocol", "interface_id", "vpc_id", "subnet_id"}
    assert talkers <= set(ONE_M.dimensions) and ONE_M.dimensions == FIVE_M.dimensions
    assert not {"srcaddr", "dstaddr", "srcport", "dstport"} & set(ONE_H.dimensions)
    for r in rollups.ROLLUPS:  # per-record fields mean nothing once summed
        assert not {"srcport", "tcp_flags", "flow_id", "version", "start", "end", "window_start"} & set(r.dimensions)


def test_ttl_defaults_live_in_the_settings_and_match_the_schema() -> None:
    store = StoreSettings()
    assert store.rollup_ttl_days() == {r.label: r.default_ttl_days for r in rollups.ROLLUPS}
    assert store.rollup_ttl_days() == {"1m": 7, "5m": 90, "1h": 365}
    assert store.ttl_days == inspect.signature(flow_record.create_table_ddl).parameters["ttl_days"].default == 15


# --- real chDB ---------------------------------------------------------------------------

DAY = 86_400
WINDOW_S = 20  # raw windows shorter than a minute: several windows per 1 m bucket
ENIS = ["eni-a", "eni-b", "eni-c"]
PLACEMENT = {"eni-a": ("vpc-1", "subnet-1"), "eni-b": ("vpc-1", "subnet-2")}


def _addresses(last_octets: np.ndarray, v6: np.ndarray) -> np.ndarray:
    raw = np.zeros((last_octets.size, 16), np.uint8)
    raw[:, 10:12] = 0xFF
    raw[:, 12:15] = (10, 0, 0)
    raw[:, 15] = last_octets
    raw[v6] = np.frombuffer(bytes.fromhex("20010db8" + "00" * 11 + "01"), np.uint8)
    raw[v6, 15] = last_octets[v6]
    return np.ascontiguousarray(raw).view("V16").reshape(-1)


def flow_rows(t0: int, hours: int, seed: int) -> pa.Table:
    """Raw flow records every WINDOW_S from t0, as the worker builds them (pipeline/records.py)."""
    rng = np.random.default_rng(seed)
    per_window = 12
    n = hours * 3600 // WINDOW_S * per_window
    window_start = (t0 + np.arange(n) // per_window * WINDOW_S).astype(np.uint32)
    v6 = rng.random(n) < 0.1
    packets = rng.integers(1, 1_000, n, dtype=np.uint64)
    cols = {
        "version": np.full(n, flow_record.RECORD_VERSION, np.uint8),
        "flow_id": rng.integers(0, 2**63, n, dtype=np.uint64),
        "eni": rng.integers(0, len(ENIS), n),
        "srcaddr": _addresses(rng.integers(1, 7, n).astype(np.uint8), v6),
        "dstaddr": _addresses(rng.integers(100, 104, n).astype(np.uint8), v6),
        "srcport": rng.integers(32_768, 61_000, n, dtype=np.uint16),  # ephemeral: the rollups drop it
        "dstport": rng.choice(np.array([53, 80, 443, 8080], np.uint16), n),
        "protocol": rng.choice(np.array([6, 17], np.uint8), n),
        "packets": packets,
        "bytes": packets * rng.integers(40, 1_500, n, dtype=np.uint64),
        "start": window_start + rng.integers(0, WINDOW_S // 2, n, dtype=np.uint32),
        "end": window_start + np.uint32(WINDOW_S - 1),
        "window_start": window_start,
        "action": (rng.random(n) < 0.05).astype(np.int32),
        "rule_layer": np.full(n, 2, np.int32),
        "rule_id": np.zeros(n, np.int32),
        "rule_id_values": np.array(["-"], dtype=object),
        "rule_set_version": np.zeros(n, np.uint32),
        "log_status": np.where(rng.random(n) < 0.02, 2, 0).astype(np.int32),
        "tcp_flags": rng.integers(0, 64, n, dtype=np.uint8),
        "flow_direction": rng.integers(0, 2, n).astype(np.int32),
        "type": v6.astype(np.int32),
    }
    return FlowRecordBuilder(ENIS, PLACEMENT, WINDOW_S * 10**9).arrow(cols)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(Settings(home=tmp_path))
    s.start()
    yield s
    s.stop()


def _today() -> int:
    now = int(time.time())
    return now - now % DAY


def _raw_vs_rollup(store: Store, r: rollups.Rollup) -> tuple[list, list]:
    dims = ", ".join(r.dimensions)
    _, raw = store.query(
        f"SELECT toStartOfInterval(window_start, {r.interval}) AS b, {dims}, sum(packets), sum(bytes), count()"
        f" FROM flows GROUP BY b, {dims} ORDER BY ALL"
    )
    _, rolled = store.query(
        f"SELECT bucket, {dims}, sum(packets), sum(bytes), sum(records) FROM {r.table}"
        f" GROUP BY bucket, {dims} ORDER BY ALL"
    )
    return raw, rolled


def _totals(store: Store, table: str) -> tuple:
    records = "count()" if table == FLOWS_TABLE else "sum(records)"
    return store.query(f"SELECT sum(packets), sum(bytes), {records} FROM {table}")[1][0]


def test_rollup_columns_in_the_engine_are_the_defined_ones(store: Store) -> None:
    store.migrate()  # a second run must be harmless
    for r in rollups.ROLLUPS:
        _, rows = store.query(
            "SELECT name, type FROM system.columns WHERE database = 'flowlogs' AND table = {t:String} ORDER BY position",
            {"t": r.table},
        )
        assert [c for c, _ in rows] == list(r.columns)
        dimension_types = [FIELDS[d].clickhouse_type for d in r.dimensions]
        assert [t for _, t in rows] == ["DateTime('UTC')", *dimension_types, "UInt64", "UInt64", "UInt64"]
        _, engines = store.query(f"SELECT engine FROM system.tables WHERE database = 'flowlogs' AND name = '{r.view}'")
        assert engines == [("MaterializedView",)]


def test_rollups_hold_the_raw_totals_through_replays_and_merges(store: Store) -> None:
    t0 = _today() - 3 * 3600  # four hours across midnight: two day partitions
    chunks = [flow_rows(t0 + i * 3600, 1, seed=i) for i in range(4)]
    for i, chunk in enumerate(chunks):
        store.insert_flows(chunk, dedup_token=f"close-{i}")
    store.insert_flows(chunks[2], dedup_token="close-2")  # a replayed close: dropped everywhere
    assert _totals(store, FLOWS_TABLE)[2] == sum(c.num_rows for c in chunks)
    for r in rollups.ROLLUPS:
        assert _totals(store, r.table) == _totals(store, FLOWS_TABLE), r.table
        raw, rolled = _raw_vs_rollup(store, r)
        assert rolled == raw, r.table
    _, partitions = store.query("SELECT DISTINCT partition FROM system.parts WHERE table = 'flows_1h' AND active")
    assert len(partitions) == 2
    # Summing happens at merge time; the answers do not change with it.
    for r in rollups.ROLLUPS:
        store.command(f"OPTIMIZE TABLE flowlogs.{r.table} FINAL")
        raw, rolled = _raw_vs_rollup(store, r)
        assert rolled == raw, r.table
        stored = store.query(f"SELECT count() FROM {r.table}")[1][0][0]
        assert stored == len(raw) < _totals(store, FLOWS_TABLE)[2]  # one row per key once merged


# Retention that only the raw table covers: choose_table must then read raw.
RAW_ONLY = {FLOWS_TABLE: 15, ONE_M.table: 0, FIVE_M.table: 0, ONE_H.table: 0}


def test_reports_answer_the_same_from_raw_and_rollups(store: Store) -> None:
    t0 = _today() - 3 * 3600
    for i in range(4):
        store.insert_flows(flow_rows(t0 + i * 3600, 1, seed=10 + i), dedup_token=f"c{i}")
    now = int(time.time())
    h = 3600
    cases = [
        (ONE_H.table, lambda **kw: reports.totals(t0, t0 + 3 * h, **kw)),
        (ONE_H.table, lambda **kw: reports.traffic_per_eni(h, t0, t0 + 4 * h, **kw)),
        (ONE_H.table, lambda **kw: reports.traffic_per_eni(2 * h, t0 + h, **kw)),
        (FIVE_M.table, lambda **kw: reports.top_talkers(1_000, t0 + h, t0 + 3 * h, **kw)),
        (FIVE_M.table, lambda **kw: reports.traffic_per_eni(600, t0, t0 + 2 * h, interface_id="eni-b", **kw)),
        (FIVE_M.table, lambda **kw: reports.totals(t0 + 300, t0 + 2 * h, **kw)),
        (ONE_M.table, lambda **kw: reports.top_talkers(1_000, t0 + 7 * 60, t0 + h + 13 * 60, **kw)),
        (ONE_M.table, lambda **kw: reports.traffic_per_eni(60, t0 + 60, t0 + h, **kw)),
        (FLOWS_TABLE, lambda **kw: reports.top_talkers(1_000, t0 + 40, t0 + h, **kw)),
    ]
    for expected, report in cases:
        rolled_sql, raw_sql = report(now=now), report(now=now, retention=RAW_ONLY)
        assert f"FROM {expected}" in rolled_sql and f"FROM {FLOWS_TABLE}" in raw_sql
        rolled, raw = store.query(rolled_sql), store.query(raw_sql)
        assert raw[1], f"the case reading {expected} selects nothing"
        assert rolled == raw, rolled_sql
    # The talkers report over the 1 m case sums exactly the raw windows in range.
    _, rows = store.query(reports.top_talkers(1_000, t0 + 7 * 60, t0 + h + 13 * 60, now=now))
    _, direct = store.query(
        f"SELECT sum(bytes) FROM flows WHERE window_start >= {t0 + 7 * 60} AND window_start < {t0 + h + 13 * 60}"
    )
    assert sum(r[5] for r in rows) == direct[0][0]


def test_a_store_that_predates_the_rollups_is_backfilled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t0 = _today() - 3600  # across midnight: filled one day partition at a time
    store = Store(Settings(home=tmp_path))
    store.start()
    store.insert_flows(flow_rows(t0, 2, seed=7), dedup_token="old")
    for r in rollups.ROLLUPS:  # as it was before rollups existed
        store.command(f"DROP TABLE flowlogs.{r.view}")
        store.command(f"DROP TABLE flowlogs.{r.table}")
    store.stop()
    caplog.set_level(logging.INFO, logger="pipeline.store")
    for _ in range(2):  # the second start must not fill them twice
        store = Store(Settings(home=tmp_path))
        store.start()
        for r in rollups.ROLLUPS:
            raw, rolled = _raw_vs_rollup(store, r)
            assert rolled == raw and raw, r.table
        store.stop()
    filled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("filled")]
    assert filled == [f"filled flowlogs.{r.table} from 2 days of stored flows" for r in rollups.ROLLUPS]


def test_changed_ttls_are_applied_to_existing_tables(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = Store(Settings(home=tmp_path))
    first.start()
    first.stop()
    caplog.set_level(logging.INFO, logger="pipeline.store")
    changed = Settings(home=tmp_path, store={"ttl_days": 20, "ttl_1h_days": 400})
    for _ in range(2):
        store = Store(changed)
        store.start()
        _, rows = store.query("SELECT name, engine_full FROM system.tables WHERE database = 'flowlogs'")
        store.stop()
        engines = dict(rows)
        assert "TTL window_start + toIntervalDay(20)" in engines["flows"]
        assert "TTL bucket + toIntervalDay(400)" in engines["flows_1h"]
        assert "TTL bucket + toIntervalDay(90)" in engines["flows_5m"]
    altered = [r.getMessage() for r in caplog.records if "setting the TTL" in r.getMessage()]
    assert altered == [  # once: the second start finds the TTLs in place
        "setting the TTL of flowlogs.flows to 20 days",
        "setting the TTL of flowlogs.flows_1h to 400 days",
    ]
