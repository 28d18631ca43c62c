"""Cluster mode and migrations: the cluster DDL is the single-node DDL placed on a cluster, the
generated file matches it, migrations are versioned and idempotent, and the DDL really runs.

chDB has no Keeper-backed replication (a replicated table stays read-only: it needs the
server's interserver endpoint) and runs no ``ON CLUSTER`` DDL, but it reads ``remote_servers``,
macros and an in-memory test Keeper from a config file. So, in a child process with such a
config (chDB opens one engine per process):

* the generated statements, ``ON CLUSTER`` aside, create every replicated table, Distributed
  table and view, and the replicas register at the Keeper paths the macros make;
* the store in cluster mode, its statements in their cluster-free form (``ON CLUSTER`` aside,
  each Replicated engine its single-node family), migrates, takes flow rows with replays
  through the Distributed tables, and its rollups and raw totals agree;
* on a cluster of three shards of which only one is this process, each ENI's rows all land
  on one shard and that shard rolls up exactly its own rows.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flowlogs.errors import ConfigError, StoreError
from flowlogs.settings import Settings, StoreSettings, load_settings
from pipeline import migrations
from pipeline.store import Store
from schemas import cluster, flow_record, generate, rollups, window_closes
from schemas.flow_record import COLUMN_NAMES, FLOWS_TABLE

ROOT = Path(__file__).resolve().parent.parent
C = cluster.Cluster(cluster.SAMPLE_CLUSTER, cluster.SAMPLE_DATABASE)
EXPECTED_MIGRATIONS = [(1, "tables"), (2, "flow_record_v2_columns")]
V2_COLUMNS = ("rule_layer", "rule_id", "rule_set_version")
UNUSED_URL = "http://cluster-free-chdb.invalid:8123"  # cluster mode needs a server; chDB stands in

ON_CLUSTER = re.compile(r" ON CLUSTER \w+")
REPLICATED = re.compile(r"Replicated(\w*MergeTree)\('[^']*', '[^']*'(?:, )?")


def without_on_cluster(sql: str) -> str:
    return ON_CLUSTER.sub("", sql)


def cluster_free(sql: str) -> str:
    """``sql`` as one server without Keeper runs it: no ON CLUSTER, single-node engines and dedup."""
    sql = REPLICATED.sub(r"\1(", without_on_cluster(sql))
    return re.sub(r"\breplicated_deduplication_window\b", "non_replicated_deduplication_window", sql)


# --- the DDL -----------------------------------------------------------------------------


def test_local_tables_are_the_single_node_tables_replicated() -> None:
    families = {"flows": "MergeTree", "window_closes": "ReplacingMergeTree", "alerts": "ReplacingMergeTree(updates)",
                "result_sets": "ReplacingMergeTree(created_at)", "saved_flows": "MergeTree", "saved_packets": "MergeTree",
                **{r.table: "SummingMergeTree" for r in rollups.ROLLUPS}}
    tables = cluster.tables()
    assert {t.name: t.engine for t in tables} == families
    for t in tables:
        single = t.single_node("flowlogs")[0]
        local, distributed = t.on_cluster(C)
        path = f"'/clickhouse/tables/{{shard}}/flowlogs/{t.name}', '{{replica}}'"
        family, _, version = t.engine.partition("(")
        replicated = f"Replicated{family}({path}{', ' + version.rstrip(')') if version else ''})"
        assert f"CREATE TABLE IF NOT EXISTS flowlogs.{t.name}_local ON CLUSTER flowlogs_cluster\n(" in local
        assert f"\nENGINE = {replicated}\n" in local
        # Everything else — columns, codecs, comments, partitions, keys, TTL — is the single-node table's.
        same = (
            cluster_free(local)
            .replace(f"flowlogs.{t.name}_local", f"flowlogs.{t.name}")
            .replace(f"ENGINE = {family}()", f"ENGINE = {family}")
            .replace(", replicated_deduplication_window_seconds = 604800", "")
        )
        assert same == single, t.name
        assert distributed == (
            f"CREATE TABLE IF NOT EXISTS flowlogs.{t.name} ON CLUSTER flowlogs_cluster AS flowlogs.{t.name}_local\n"
            f"ENGINE = Distributed(flowlogs_cluster, flowlogs, {t.name}_local, {t.sharding_key})"
        )


def test_sharding_keys_keep_what_belongs_together_on_one_shard() -> None:
    keys = {t.name: t.sharding_key for t in cluster.tables()}
    for table in (FLOWS_TABLE, *(r.table for r in rollups.ROLLUPS), "saved_flows", "saved_packets"):
        assert keys[table] == "cityHash64(interface_id)", table
    assert keys["window_closes"] == "cityHash64(topic, partition)"
    assert keys["alerts"] == "cityHash64(alert_id)"
    assert keys["result_sets"] == "cityHash64(name)"
    assert "rand()" not in keys.values()  # deterministic: a replay meets its first copy


def test_rollup_views_read_and_write_the_shards_own_tables() -> None:
    for r in rollups.ROLLUPS:
        view = cluster.view_ddl(r, "flowlogs", C)
        assert view.startswith(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS flowlogs.{r.view} ON CLUSTER flowlogs_cluster"
            f" TO flowlogs.{r.table}_local\nAS SELECT\n"
        )
        assert view.endswith(rollups.select_sql(r, "flowlogs", source="flows_local"))
        assert "\nFROM flowlogs.flows_local\n" in view
        assert cluster.view_ddl(r, "flowlogs") == rollups.create_view_ddl(r, "flowlogs")


def test_replicated_tables_remember_insert_tokens_as_long_as_a_replay_can_come() -> None:
    ddl = "\n".join(cluster.statements(C))
    assert "non_replicated_deduplication_window" not in ddl
    for table in (FLOWS_TABLE, *(r.table for r in rollups.ROLLUPS)):
        local = next(t for t in cluster.tables() if t.name == table).on_cluster(C)[0]
        assert "SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800" in local
    assert flow_record.DEDUP_WINDOW_SECONDS == window_closes.RETENTION_DAYS * 86_400
    assert "SETTINGS non_replicated_deduplication_window = 10000" in flow_record.create_table_ddl()


def test_the_replication_path_and_ttls_come_from_the_settings() -> None:
    assert StoreSettings().replication_path == cluster.REPLICATION_PATH
    store = StoreSettings(url="http://ch:8123", cluster="prod", database="fl", replication_path="/ch/{shard}/t/{table}", ttl_days=20)
    target = migrations.Target(None, store)  # type: ignore[arg-type]  # no I/O
    assert target.cluster == cluster.Cluster("prod", "fl", "/ch/{shard}/t/{table}")
    local = cluster.tables(target.ttl)[0].on_cluster(target.cluster)[0]
    assert "ReplicatedMergeTree('/ch/{shard}/t/flows', '{replica}')" in local and "INTERVAL 20 DAY" in local


def test_cluster_mode_needs_a_server_and_a_path_per_shard_and_table() -> None:
    with pytest.raises(ConfigError, match="store.cluster needs store.url"):
        load_settings(store={"cluster": "prod"})
    with pytest.raises(ConfigError, match=r"needs \{shard\}"):
        load_settings(store={"url": "http://ch:8123", "cluster": "prod", "replication_path": "/ch/{table}"})
    with pytest.raises(ConfigError, match="cluster"):
        load_settings(store={"url": "http://ch:8123", "cluster": "prod; DROP"})


def test_generated_cluster_sql_matches_the_definitions() -> None:
    text = (generate.GENERATED_DIR / "cluster.sql").read_text()
    assert text == generate.rendered()["cluster.sql"], "run `flowlogs schemas --write`"
    statements = text[text.index("CREATE"):].removesuffix(";\n").split(";\n\n")
    assert statements == cluster.statements(C)
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS flowlogs ON CLUSTER flowlogs_cluster"
    assert len(statements) == len(cluster.statements(C)) == 1 + 2 * len(cluster.tables()) + len(rollups.ROLLUPS)


# --- migrations, single node (chDB) -----------------------------------------------------------


def _applied(store: Store) -> list[tuple[int, str]]:
    return [(v, n) for v, n, _ in migrations.applied(store, store.settings.store)]


def _flow_columns(store: Store) -> list[str]:
    _, rows = store.query(
        "SELECT name FROM system.columns WHERE database = 'flowlogs' AND table = 'flows' ORDER BY position"
    )
    return [r[0] for r in rows]


def test_migrations_are_recorded_once_and_a_rerun_applies_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.store")
    store = Store(Settings(home=tmp_path))
    store.start()
    try:
        first = migrations.applied(store, store.settings.store)
        assert [(v, n) for v, n, _ in first] == EXPECTED_MIGRATIONS
        issued: list[str] = []
        command = store.command

        def recording(sql: str) -> Any:
            issued.append(sql)
            return command(sql)

        store.command = recording  # type: ignore[method-assign]
        store.migrate()
        assert migrations.applied(store, store.settings.store) == first  # same rows, same applied_at
        assert issued and all(s.startswith(("CREATE DATABASE IF NOT EXISTS", "CREATE TABLE IF NOT EXISTS",
                                            "CREATE MATERIALIZED VIEW IF NOT EXISTS")) for s in issued)
    finally:
        store.stop()
    store = Store(Settings(home=tmp_path))  # a second process start
    store.start()
    try:
        assert migrations.applied(store, store.settings.store) == first
    finally:
        store.stop()
    applying = [r.getMessage() for r in caplog.records if r.getMessage().startswith("applying migration")]
    assert applying == ["applying migration 1 (tables) to flowlogs", "applying migration 2 (flow_record_v2_columns) to flowlogs"]


def test_a_store_made_by_an_older_version_gets_the_later_migrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.test_rollups import _today, flow_rows

    # A Flow Logs that knew migration 1 only, whose flows table was of record version 1.
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
    old = Store(Settings(home=tmp_path))
    old.start()
    old.insert_flows(flow_rows(_today(), 1, seed=5), dedup_token="old")
    old.command("ALTER TABLE flowlogs.flows " + ", ".join(f"DROP COLUMN {c}" for c in V2_COLUMNS))
    assert _applied(old) == EXPECTED_MIGRATIONS[:1]
    rows = old.query("SELECT count(), sum(bytes) FROM flows")[1]
    old.stop()
    monkeypatch.undo()
    caplog.set_level(logging.INFO, logger="pipeline.store")
    store = Store(Settings(home=tmp_path))
    store.start()
    try:
        assert _applied(store) == EXPECTED_MIGRATIONS
        assert _flow_columns(store) == list(COLUMN_NAMES)  # back in record order
        assert store.query("SELECT count(), sum(bytes) FROM flows")[1] == rows
        _, defaults = store.query("SELECT DISTINCT rule_layer, rule_id, rule_set_version FROM flows")
        assert defaults == [("sg", "", 0)]  # the types' defaults for rows stored before
    finally:
        store.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert "applying migration 2 (flow_record_v2_columns) to flowlogs" in messages
    assert [m for m in messages if m.startswith("adding column")] == [f"adding column {c} to flowlogs.flows" for c in V2_COLUMNS]


def test_an_interrupted_migration_runs_again_whole(tmp_path: Path) -> None:
    store = Store(Settings(home=tmp_path))
    store.start()
    # Migration 2 stopped after its first ALTER, before either was recorded.
    store.command("ALTER TABLE flowlogs.flows DROP COLUMN rule_id, DROP COLUMN rule_set_version")
    store.command("TRUNCATE TABLE flowlogs.schema_migrations")
    store.stop()
    store = Store(Settings(home=tmp_path))
    store.start()
    try:
        assert _applied(store) == EXPECTED_MIGRATIONS
        assert store.query("SELECT count() FROM schema_migrations")[1] == [(2,)]
        assert _flow_columns(store) == list(COLUMN_NAMES)
    finally:
        store.stop()


def test_a_single_node_store_is_not_taken_for_a_clusters(tmp_path: Path) -> None:
    store = Store(Settings(home=tmp_path))
    store.start()
    try:
        with pytest.raises(StoreError, match=r"flowlogs holds single-node tables \(flows, flows_1m,.*store.cluster is set"):
            migrations.migrate(store, StoreSettings(url=UNUSED_URL, cluster="flowlogs_cluster"))
    finally:
        store.stop()


# --- the DDL in chDB, in a child process --------------------------------------------------------

CHDB_CONFIG = """<clickhouse>
  <!-- 127.0.0.1:9000 is this process (is_local), though chDB listens on nothing -->
  <tcp_port>9000</tcp_port>
  <remote_servers>
    <flowlogs_cluster>
      <shard><replica><host>127.0.0.1</host><port>9000</port></replica></shard>
    </flowlogs_cluster>
    <flowlogs_three_shards>
      <shard><replica><host>127.0.0.2</host><port>9000</port></replica></shard>
      <shard><replica><host>127.0.0.1</host><port>9000</port></replica></shard>
      <shard><replica><host>127.0.0.3</host><port>9000</port></replica></shard>
    </flowlogs_three_shards>
  </remote_servers>
  <zookeeper><implementation>testkeeper</implementation></zookeeper>
  <macros><shard>01</shard><replica>r1</replica></macros>
</clickhouse>
"""


class ClusterFree:
    """A clickhouse-connect client whose SQL is rewritten (``rewrite``) before chDB runs it."""

    def __init__(self, client: Any, rewrite: Any = cluster_free) -> None:
        object.__setattr__(self, "_inner", client)
        object.__setattr__(self, "_rewrite", rewrite)

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        return self._inner.command(self._rewrite(sql), *args, **kwargs)

    def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        return self._inner.query(self._rewrite(sql), *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)


def _cluster_store(client: Any, home: Path, **store: Any) -> Store:
    s = Store(Settings(home=home, store={"url": UNUSED_URL, "cluster": "flowlogs_cluster", **store}))
    s._client = ClusterFree(client)  # instead of start(), which would dial the URL
    return s


def _engines(client: Any, database: str) -> dict[str, str]:
    rows = client.query(f"SELECT name, engine FROM system.tables WHERE database = '{database}'").result_rows
    return dict(rows)


def _replicated_ddl_runs(client: Any) -> dict[str, Any]:
    """The generated statements, only ON CLUSTER aside: real Replicated engines, read-only here."""
    c = cluster.Cluster("flowlogs_cluster", "flowlogs_replicated")
    for sql in [*cluster.statements(c), *migrations.LOG_TABLE.on_cluster(c)]:
        client.command(without_on_cluster(sql))
    engines = _engines(client, c.database)
    replicas = client.query(
        "SELECT table, zookeeper_path, replica_name FROM system.replicas WHERE database = {d:String} ORDER BY table",
        parameters={"d": c.database},
    ).result_rows
    tables = [*cluster.tables(), migrations.LOG_TABLE]
    for t in tables:
        assert engines[f"{t.name}_local"] == "Replicated" + t.engine.partition("(")[0], t.name
        assert engines[t.name] == "Distributed", t.name
    for r in rollups.ROLLUPS:
        assert engines[r.view] == "MaterializedView"
    assert sorted(replicas) == sorted((f"{t.name}_local", f"/clickhouse/tables/01/{c.database}/{t.name}", "r1") for t in tables)
    counted = client.query(f"SELECT count() FROM {c.database}.flows").result_rows  # Distributed over the replica
    client.command(f"DROP DATABASE {c.database} SYNC")  # a replica left behind keeps chDB from exiting
    return {"replicated_tables": len(replicas), "distributed_count": counted[0][0], "engines": engines}


def _store_in_cluster_mode(client: Any, home: Path) -> dict[str, Any]:
    from tests.test_rollups import _raw_vs_rollup, _today, _totals, flow_rows

    store = _cluster_store(client, home)
    store.migrate()
    first = migrations.applied(store, store.settings.store)
    assert [(v, n) for v, n, _ in first] == EXPECTED_MIGRATIONS
    store.migrate()
    assert migrations.applied(store, store.settings.store) == first
    engines = _engines(client, "flowlogs")
    for t in [*cluster.tables(), migrations.LOG_TABLE]:
        assert engines[t.name] == "Distributed" and engines[f"{t.name}_local"] == t.engine.partition("(")[0], t.name
    views = dict(client.query("SELECT name, create_table_query FROM system.tables WHERE engine = 'MaterializedView'"
                              " AND database = 'flowlogs'").result_rows)
    for r in rollups.ROLLUPS:
        assert f"TO flowlogs.{r.table}_local" in views[r.view] and "FROM flowlogs.flows_local" in views[r.view]

    t0 = _today() - 3 * 3600  # across midnight: two day partitions
    chunks = [flow_rows(t0 + i * 3600, 1, seed=i) for i in range(4)]
    for i, chunk in enumerate(chunks):
        store.insert_flows(chunk, dedup_token=f"close-{i}")
    store.insert_flows(chunks[2], dedup_token="close-2")  # a replayed close: dropped on its shard, views too
    rows = sum(c.num_rows for c in chunks)
    assert _totals(store, FLOWS_TABLE)[2] == rows
    assert store.query("SELECT count() FROM flows_local")[1] == [(rows,)]
    for r in rollups.ROLLUPS:
        assert _totals(store, r.table) == _totals(store, FLOWS_TABLE), r.table
        raw, rolled = _raw_vs_rollup(store, r)
        assert rolled == raw, r.table

    # A rollup new beside stored flows is filled through the Distributed tables.
    for r in rollups.ROLLUPS:
        for name in (r.view, r.table, f"{r.table}_local"):
            store.command(f"DROP TABLE flowlogs.{name} ON CLUSTER flowlogs_cluster")
    store.migrate()
    for r in rollups.ROLLUPS:
        raw, rolled = _raw_vs_rollup(store, r)
        assert rolled == raw and raw, r.table

    # A store from before record v2: the column comes back on the local and Distributed tables.
    for table in ("flows_local", "flows"):
        store.command(f"ALTER TABLE flowlogs.{table} ON CLUSTER flowlogs_cluster DROP COLUMN rule_set_version")
    store.command("DELETE FROM flowlogs.schema_migrations_local WHERE version = 2")
    store.migrate()
    assert [(v, n) for v, n, _ in migrations.applied(store, store.settings.store)] == EXPECTED_MIGRATIONS
    for table in ("flows_local", "flows"):
        columns = client.query(f"SELECT name FROM system.columns WHERE database = 'flowlogs' AND table = '{table}'"
                               " ORDER BY position").result_rows
        assert [c for (c,) in columns] == list(COLUMN_NAMES), table

    # TTLs go to the shard-local tables.
    _cluster_store(client, home, ttl_days=20, ttl_1h_days=400).migrate()
    local_engines = dict(client.query("SELECT name, engine_full FROM system.tables WHERE database = 'flowlogs'").result_rows)
    assert "TTL window_start + toIntervalDay(20)" in local_engines["flows_local"]
    assert "TTL bucket + toIntervalDay(400)" in local_engines["flows_1h_local"]

    # The same database opened as a single-node store is refused, not half-migrated.
    single = Store(Settings(home=home, store={"url": UNUSED_URL}))
    single._client = ClusterFree(client)
    try:
        single.migrate()
        raise AssertionError("a cluster-mode store was migrated as a single-node one")
    except StoreError as exc:
        assert "holds cluster-mode (Distributed) tables (flows, flows_1m" in str(exc), exc

    # A replayed close record meets its first copy: one row FINAL.
    close = [["flowlogs.frames", 3, 1200, 77, 5 * 10**9]]
    for _ in range(2):
        store.insert_rows(window_closes.TABLE, [c for c, _, _ in window_closes.COLUMNS], close)
    assert store.query("SELECT count() FROM window_closes FINAL")[1] == [(1,)]
    totals = _totals(store, FLOWS_TABLE)
    return {"migrations": [(v, n) for v, n, _ in first], "flow_rows": rows, "totals": list(totals)}


def _rows_stay_with_their_eni_on_three_shards(client: Any, home: Path) -> dict[str, Any]:
    """Shards 1 and 3 are unreachable: what they are sent waits in the Distributed queue."""
    from tests.test_rollups import ENIS, _today, flow_rows

    c = cluster.Cluster("flowlogs_three_shards", "flowlogs_three")
    for sql in cluster.statements(c):
        client.command(cluster_free(sql))
    store = _cluster_store(client, home, cluster=c.name, database=c.database)
    flows = flow_rows(_today(), 1, seed=9)
    # The worker's insert waits for every shard (distributed_foreground_insert): with two of
    # them down it fails, so the frames stay unacknowledged and are written again later.
    try:
        store.insert_flows(flows, dedup_token="close-9")
    except StoreError as exc:
        assert "NETWORK_ERROR" in str(exc) or "Connection refused" in str(exc), exc
    else:
        raise AssertionError("an insert that could not reach two shards was acknowledged")
    # Sent in the background instead, the rows for the unreachable shards wait in the queue.
    client.insert_arrow(
        f"{c.database}.flows", flows,
        settings={"insert_deduplication_token": "close-9", "distributed_foreground_insert": 0},
    )
    per_eni = Counter(flows.column("interface_id").to_pylist())
    # Shard k (weight 1 each) takes the rows whose sharding key % 3 = k - 1; this process is shard 2.
    here = {e for (e,) in client.query(f"SELECT e FROM (SELECT arrayJoin({ENIS}) AS e) WHERE cityHash64(e) % 3 = 1").result_rows}
    local = dict(client.query("SELECT interface_id, count() FROM flowlogs_three.flows_local GROUP BY interface_id").result_rows)
    assert set(local) == here and {e: per_eni[e] for e in here} == local, (local, here)
    assert here and set(ENIS) - here, "the sample ENIs should land on this shard and on others"
    raw = client.query("SELECT sum(packets), sum(bytes), count() FROM flowlogs_three.flows_local").result_rows
    for r in rollups.ROLLUPS:
        rolled = client.query(f"SELECT sum(packets), sum(bytes), sum(records) FROM flowlogs_three.{r.table}_local").result_rows
        assert rolled == raw, r.table  # this shard rolled up exactly its own rows
    queued = client.query("SELECT sum(data_files) FROM system.distribution_queue WHERE database = 'flowlogs_three'"
                          " AND table = 'flows'").result_rows[0][0]
    assert queued >= 1
    client.command(f"DROP DATABASE {c.database} SYNC")
    return {"local_enis": sorted(here), "local_rows": sum(local.values()), "queued_files": int(queued)}


def run_in_chdb(workdir: Path) -> dict[str, Any]:
    import clickhouse_connect

    config = workdir / "chdb-cluster.xml"
    config.write_text(CHDB_CONFIG)
    client = clickhouse_connect.get_client(interface="chdb", path=str(workdir / "chdb"), chdb_options={"config-file": str(config)})
    try:
        return {
            "replicated": _replicated_ddl_runs(client),
            "cluster_mode": _store_in_cluster_mode(client, workdir),
            "three_shards": _rows_stay_with_their_eni_on_three_shards(client, workdir),
        }
    finally:
        client.close()


def test_the_cluster_ddl_runs_in_chdb(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_cluster_ddl", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, f"child failed ({time.monotonic() - started:.0f}s):\n{done.stderr[-6000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    tables = len(cluster.tables()) + 1  # and schema_migrations
    assert result["replicated"]["replicated_tables"] == tables and result["replicated"]["distributed_count"] == 0
    assert result["cluster_mode"]["migrations"] == [list(m) for m in EXPECTED_MIGRATIONS]
    assert result["cluster_mode"]["totals"][2] == result["cluster_mode"]["flow_rows"] > 0
    assert result["three_shards"]["local_rows"] > 0 and result["three_shards"]["queued_files"] >= 1


if __name__ == "__main__":
    print(json.dumps(run_in_chdb(Path(sys.argv[1])), default=str))
