"""Cluster mode: the tables of schemas/ sharded and replicated over a ClickHouse cluster.

With ``store.cluster`` naming a cluster of the servers' ``remote_servers``, each table of the
single-node store becomes two, both created ``ON CLUSTER`` (every node runs the DDL) by the
same schemas/ functions — nothing here restates a column, codec, partition, key or TTL:

* ``<table>_local`` holds one shard's rows: the single-node table with the Replicated form of
  its engine (``MergeTree`` → ``ReplicatedMergeTree``, ``SummingMergeTree`` →
  ``ReplicatedSummingMergeTree``, ``ReplacingMergeTree(ver)`` →
  ``ReplicatedReplacingMergeTree(…, ver)``). The replicas of a shard share its Keeper path,
  ``/clickhouse/tables/{shard}/<db>/<table>`` (``store.replication_path``; ``{shard}`` and
  the replica name ``{replica}`` are each server's macros).
* ``<table>`` is ``Distributed(<cluster>, <db>, <table>_local, <sharding key>)``, under the
  single-node name, so every insert and query the project writes goes there unchanged: an
  insert is split by the sharding key and each part written to its shard; a query runs on
  every shard and the answers are merged.

Sharding keys
-------------
* ``flows``, the rollups, ``saved_flows`` and ``saved_packets``: ``cityHash64(interface_id)``.
  An ENI's rows stay on one shard, so each rollup row is made on the shard that holds the raw
  rows it sums (below), a query for one ENI can skip the other shards
  (``optimize_skip_unused_shards``), and — the key being deterministic — a replayed insert
  splits exactly as the first one did, so every shard recognises its part by the insert's
  deduplication token. ``rand()`` would send a replay's rows to other shards, where nothing
  would drop them.
* ``window_closes``: ``cityHash64(topic, partition)``. A replayed close is recorded again,
  identically; it must land beside the first record for ReplacingMergeTree to keep one.
* ``alerts``: ``cityHash64(alert_id)``. Every update of an alert on one shard, so merges and
  ``FINAL`` keep its newest: a ReplacingMergeTree only replaces rows within a shard.
* ``result_sets``: ``cityHash64(name)``, for the same reason: a description made again under
  the same name replaces the previous one.

None is ``rand()``: each of these tables either replaces or deduplicates rows by key, or wants
an ENI's rows together.

Rollup views live on the shards
-------------------------------
A materialized view is an insert trigger on the table rows are written to. The rollup views
are made on every node ``FROM <db>.flows_local TO <db>.flows_<label>_local``: the rows a
Distributed insert hands to a shard are rolled up there, in that same insert, into the
shard's own rollup table. Each raw row is summed once, on the shard that keeps it, next to
its rollup rows (same sharding key); and a replayed insert dropped by the local flows table
is dropped by its views too (``deduplicate_blocks_in_dependent_materialized_views``). A view
on the Distributed ``flows`` would fire on whichever node took the insert, roll up replays
that the shards then drop (a Distributed table deduplicates nothing), and send its rows
through a second Distributed hop. A replica does not fire views for the parts it fetches from
another: it fetches the rollup parts the same way, so no row is summed twice.

Deduplication
-------------
A single-node table remembers the last 10 000 insert tokens on its disk
(``non_replicated_deduplication_window``); a replicated one in Keeper
(``replicated_deduplication_window``, with ``replicated_deduplication_window_seconds``
raised from ClickHouse's one hour to the close log's week: ``flow_record.dedup_settings``).
The store inserts a close's flow rows into the Distributed ``flows`` under the close's
token; each shard receives its part under that token and checks it against its own Keeper
path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from schemas import alerts, flow_record, rollups, saved, window_closes
from schemas.flow_record import FLOWS_TABLE, on_cluster_clause, sql_string

SAMPLE_CLUSTER = "flowlogs_cluster"  # schemas/generated/cluster.sql is rendered for it
SAMPLE_DATABASE = "flowlogs"
REPLICATION_PATH = "/clickhouse/tables/{shard}/{database}/{table}"  # StoreSettings.replication_path
LOCAL_SUFFIX = "_local"
BY_ENI = "cityHash64(interface_id)"


@dataclass(frozen=True, slots=True)
class Cluster:
    """The flows database spread over a cluster: its name in ``remote_servers``, the database,
    and the Keeper path of a replicated table (``{database}`` and ``{table}`` are filled in
    here, ``{shard}`` and any other macro by each server)."""

    name: str
    database: str
    replication_path: str = REPLICATION_PATH

    def local(self, table: str) -> str:
        """The qualified name of ``table``'s shard-local part."""
        return f"{self.database}.{table}{LOCAL_SUFFIX}"

    def replicated(self, engine: str, table: str) -> str:
        """The Replicated form of a single-node ``engine`` (``Family`` or ``Family(args)``) for ``table``."""
        family, _, args = engine.partition("(")
        path = self.replication_path.replace("{database}", self.database).replace("{table}", table)
        params = [sql_string(path), "'{replica}'", *filter(None, [args.removesuffix(")")])]
        return f"Replicated{family}({', '.join(params)})"


@dataclass(frozen=True, slots=True)
class Table:
    """A table of the flows database: its single-node engine, its sharding key on a cluster, and
    the schemas/ function writing its CREATE TABLE from a qualified name (and, on a cluster,
    ``engine=`` and ``on_cluster=``)."""

    name: str
    engine: str
    sharding_key: str
    ddl: Callable[..., str]
    rollup: rollups.Rollup | None = None  # the rollup it holds, which a view fills

    def single_node(self, database: str) -> list[str]:
        return [self.ddl(f"{database}.{self.name}")]

    def on_cluster(self, cluster: Cluster) -> list[str]:
        """Its shard-local table, then the Distributed table over it, both ON CLUSTER."""
        return [
            self.ddl(cluster.local(self.name), engine=cluster.replicated(self.engine, self.name), on_cluster=cluster.name),
            f"CREATE TABLE IF NOT EXISTS {cluster.database}.{self.name}{on_cluster_clause(cluster.name)}"
            f" AS {cluster.local(self.name)}\n"
            f"ENGINE = Distributed({cluster.name}, {cluster.database}, {self.name}{LOCAL_SUFFIX}, {self.sharding_key})",
        ]


def _rollup_ddl(rollup: rollups.Rollup, table: str, ttl_days: int | None = None, **placement: Any) -> str:
    return rollups.create_table_ddl(rollup, ttl_days, table=table, **placement)


def tables(ttl: Mapping[str, int] | None = None) -> tuple[Table, ...]:
    """Every table of schemas/ in the flows database, in the order they are created; ``ttl``:
    days by table name (``pipeline.table_choice.retention_days``), else the schemas' defaults."""
    days: Mapping[str, int] = ttl or {}
    flows_ddl: Callable[..., str] = flow_record.create_table_ddl
    if FLOWS_TABLE in days:
        flows_ddl = partial(flow_record.create_table_ddl, ttl_days=days[FLOWS_TABLE])
    return (
        Table(FLOWS_TABLE, flow_record.ENGINE, BY_ENI, flows_ddl),
        *(
            Table(r.table, rollups.ENGINE, BY_ENI, partial(_rollup_ddl, r, ttl_days=days.get(r.table)), rollup=r)
            for r in rollups.ROLLUPS
        ),
        Table(window_closes.TABLE, window_closes.ENGINE, "cityHash64(topic, partition)", window_closes.create_table_ddl),
        Table(alerts.TABLE, alerts.ENGINE, "cityHash64(alert_id)", alerts.create_table_ddl),
        Table(saved.RESULT_SETS_TABLE, saved.RESULT_SETS_ENGINE, "cityHash64(name)", saved.result_sets_ddl),
        Table(saved.FLOWS_TABLE, saved.ROWS_ENGINE, BY_ENI, saved.saved_flows_ddl),
        Table(saved.PACKETS_TABLE, saved.ROWS_ENGINE, BY_ENI, saved.saved_packets_ddl),
    )


def view_ddl(rollup: rollups.Rollup, database: str, cluster: Cluster | None = None) -> str:
    """The view filling ``rollup``; on a cluster, each shard's, from its local flows into its local rollup."""
    if cluster is None:
        return rollups.create_view_ddl(rollup, database)
    return rollups.create_view_ddl(
        rollup,
        cluster.database,
        source=FLOWS_TABLE + LOCAL_SUFFIX,
        target=rollup.table + LOCAL_SUFFIX,
        on_cluster=cluster.name,
    )


def statements(cluster: Cluster, ttl: Mapping[str, int] | None = None) -> list[str]:
    """Every statement making the flows database on ``cluster``, in an order they can run in:
    the database, each table's local and Distributed parts, each rollup's view after them."""
    out = [f"CREATE DATABASE IF NOT EXISTS {cluster.database}{on_cluster_clause(cluster.name)}"]
    for table in tables(ttl):
        out += table.on_cluster(cluster)
        if table.rollup is not None:
            out.append(view_ddl(table.rollup, cluster.database, cluster))
    return out
