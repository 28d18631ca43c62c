"""Result sets in real chDB: a snapshot outlives the live rows it came from (their TTL
expired), reports and exports read it, names are taken once, delete removes it all."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowlogs.errors import ConfigError
from flowlogs.settings import Settings
from pipeline.export import ExportRange, export_records, open_writer
from pipeline.reports import run_report
from pipeline.results import ResultSets
from pipeline.sinks.clickhouse import ClickHouseSink
from pipeline.snapshots import create_snapshot
from pipeline.store import Store
from tests.test_rollups import _today, flow_rows

DAY = 86_400


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


@pytest.fixture
def store(tmp_path: Path):
    s = Store(Settings(home=tmp_path))
    s.start()
    yield s
    s.stop()


def _read(store: Store):
    def read(sql: str):
        columns, rows = store.query_readonly(sql)
        return columns, [list(r) for r in rows]

    return read


def test_a_snapshot_outlives_the_expiry_of_its_live_rows(store: Store, tmp_path: Path) -> None:
    yesterday = _today() - DAY
    ClickHouseSink(store).write([flow_rows(yesterday, 2, seed=4)])
    since, until = yesterday + 1800, yesterday + 5400  # 1.5 h of the 2 h stored
    settings = Settings(home=tmp_path)
    results = ResultSets(store)
    live = run_report(_read(store), "top-talkers", {"since": _iso(since), "until": _iso(until), "by": "interface_id"}, settings)
    made = create_snapshot(settings, results, "incident-7", since, until, scope="all")
    assert made is not None and made["kind"] == "snapshot" and (made["from"], made["to"]) == (since, until)
    _, counted = store.query(
        f"SELECT count(), sum(packets) FROM flows WHERE window_start >= toDateTime({since}) AND window_start < toDateTime({until})"
    )
    assert (made["flows"], made["packets"]) == (counted[0][0], counted[0][1]) and made["flows"] > 0

    # The live rows expire: a TTL of one second, applied now.
    store.command("ALTER TABLE flows MODIFY TTL window_start + INTERVAL 1 SECOND")
    store.command("OPTIMIZE TABLE flows FINAL")
    assert store.query("SELECT count() FROM flows")[1] == [(0,)]
    frozen = run_report(
        _read(store), "top-talkers", {"since": _iso(since), "until": _iso(until), "by": "interface_id", "source": "incident-7"}, settings
    )
    assert frozen.rows == live.rows

    out = io.BytesIO()
    summary = export_records(
        _read(store), ExportRange(since=since, until=until, result_set="incident-7"), open_writer("jsonl", out), page_rows=500
    )
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == summary.rows == made["flows"] and sum(r["packets"] for r in records) == made["packets"]
    assert [r["name"] for r in results.list()] == ["incident-7"] and results.show("incident-7")["flows"] == made["flows"]


def test_names_are_taken_once_and_delete_removes_everything(store: Store, tmp_path: Path) -> None:
    ClickHouseSink(store).write([flow_rows(_today() - DAY, 1, seed=5)])
    settings = Settings(home=tmp_path)
    results = ResultSets(store)
    create_snapshot(settings, results, "one", _today() - DAY, _today(), scope="eni:" + "eni-a")
    with pytest.raises(ConfigError, match="exists: delete it first"):
        create_snapshot(settings, results, "one", _today() - DAY, _today())
    for bad in ("One", "../x", "a b", ""):
        with pytest.raises(ConfigError, match="cannot name a result set"):
            results.begin(bad)
    with pytest.raises(ConfigError, match="scope"):
        create_snapshot(settings, results, "two", _today() - DAY, _today(), scope="eni:x' OR 1=1")
    assert results.list() and [r["name"] for r in results.list()] == ["one"]  # the failed one left nothing
    assert results.delete("one") is True and results.delete("one") is False
    assert results.list() == [] and store.query("SELECT count() FROM saved_flows")[1] == [(0,)]
    with pytest.raises(ConfigError, match="no result set named"):
        results.show("one")


def test_the_snapshot_commands(tmp_path: Path) -> None:
    from tests.test_cli import flowlogs

    store = Store(Settings(home=tmp_path))
    store.start()
    ClickHouseSink(store).write([flow_rows(_today() - DAY, 1, seed=6)])
    store.stop()
    since, until = _iso(_today() - DAY), _iso(_today() - DAY + 1800)
    made = flowlogs("snapshot", "create", "half-hour", "--from", since, "--to", until, home=tmp_path)
    assert made.returncode == 0, made.stderr
    flows = json.loads(made.stdout)["flows"]
    listed = flowlogs("snapshot", "list", "--format", "jsonl", home=tmp_path)
    assert [(r["name"], r["kind"], r["flows"]) for r in map(json.loads, listed.stdout.splitlines())] == [("half-hour", "snapshot", flows)]
    exported = flowlogs("snapshot", "export", "half-hour", "--format", "aws", home=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == flows + 1  # the AWS header line, then one line per record
    assert flowlogs("snapshot", "create", "half-hour", "--from", since, home=tmp_path).returncode == 2  # taken
    missing = flowlogs("snapshot", "show", home=tmp_path)
    assert missing.returncode == 2 and "needs a name" in missing.stderr and "Traceback" not in missing.stderr
    assert flowlogs("snapshot", "delete", "half-hour", home=tmp_path).returncode == 0
    assert flowlogs("snapshot", "delete", "half-hour", home=tmp_path).returncode == 1
