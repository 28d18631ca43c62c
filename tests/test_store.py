"""Only one process may open a chDB dir; the second is told who holds it and where to ask."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flowlogs.errors import StoreLockedError
from flowlogs.settings import Settings
from pipeline.store import Store, read_owner

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from flowlogs.settings import Settings
    from pipeline.store import Store
    store = Store(Settings(home=Path(sys.argv[1])), api_url="http://127.0.0.1:6999")
    store.start()
    print("open", flush=True)
    time.sleep(60)
    """
)


def test_second_process_gets_a_clear_error_naming_the_owner(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        owner = read_owner(tmp_path / "chdb")
        assert owner is not None and owner["pid"] == holder.pid
        with pytest.raises(StoreLockedError) as err:
            Store(Settings(home=tmp_path)).start()
        message = str(err.value)
        assert f"process {holder.pid}" in message
        assert "http://127.0.0.1:6999" in message
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    # Once the holder is gone the dir opens again.
    deadline = time.monotonic() + 10
    while read_owner(tmp_path / "chdb") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    store = Store(Settings(home=tmp_path))
    store.start()
    store.stop()


def test_readonly_queries_cannot_change_data(tmp_path: Path) -> None:
    store = Store(Settings(home=tmp_path))
    store.start()
    try:
        with pytest.raises(Exception, match="readonly"):
            store.query_readonly("DROP TABLE flows")
        assert store.query_readonly("SELECT count() FROM flows")[1] == [(0,)]
    finally:
        store.stop()


def test_a_big_write_goes_in_slices_and_a_repeated_one_is_dropped_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.sinks import clickhouse
    from tests.test_rollups import _today, flow_rows

    monkeypatch.setattr(clickhouse, "ROWS_PER_INSERT", 100)
    store = Store(Settings(home=tmp_path))
    store.start()
    try:
        sink = clickhouse.ClickHouseSink(store)
        table = flow_rows(_today(), 1, seed=3)
        slices = -(-table.num_rows // 100)
        assert slices > 10
        sink.write([table], dedup_token="close-7")
        sink.write([table], dedup_token="close-7")  # a retry or a replay of the same close
        assert sink.inserts == 2 * slices
        _, rows = store.query("SELECT count(), sum(packets) FROM flows")
        assert rows[0] == (table.num_rows, sum(table.column("packets").to_pylist()))
    finally:
        store.stop()


def test_the_embedded_store_runs_one_merge_at_a_time_and_still_merges(tmp_path: Path) -> None:
    store = Store(Settings(home=tmp_path, store={"merge_threads": 1}))
    store.start()
    try:
        _, pool = store.query(
            "SELECT name, value FROM system.server_settings"
            " WHERE name IN ('background_pool_size', 'background_merges_mutations_concurrency_ratio') ORDER BY name"
        )
        assert pool == [("background_merges_mutations_concurrency_ratio", "1"), ("background_pool_size", "1")]
        # Parts of two tables, so one merge must wait for the other: both still get merged.
        for table in ("probe_a", "probe_b"):
            store.command(f"CREATE TABLE {table} (n UInt64) ENGINE = MergeTree ORDER BY n")
            for i in range(10):
                store.command(f"INSERT INTO {table} VALUES ({i})")
        parts_sql = (
            "SELECT table, count() FROM system.parts WHERE active AND table LIKE 'probe_%' GROUP BY table ORDER BY table"
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            parts = dict(store.query(parts_sql)[1])
            if max(parts.values()) < 10:
                break
            time.sleep(0.2)
        assert parts["probe_a"] < 10 and parts["probe_b"] < 10, parts
        assert store.query("SELECT sum(n) FROM probe_a")[1] == [(45,)]
    finally:
        store.stop()
