"""Versioned, idempotent migrations of the flows database, on one server or across a cluster.

``schema_migrations`` (version, name, applied_at), in the flows database, records the
migrations applied. :func:`migrate`, which ``Store.migrate()`` runs at every start:

1. creates the database and ``schema_migrations`` if missing;
2. runs each migration of :data:`MIGRATIONS` not recorded yet, in version order, recording it
   once all its statements have run. Every statement is idempotent (``IF NOT EXISTS``, or
   issued only when the system tables show it is needed), so a migration interrupted half-way
   runs again whole, and a second ``migrate`` applies nothing;
3. converges on what follows the definitions and the settings rather than history: a table or
   view of schemas/ that is missing is created (a rollup new beside stored flows is filled
   from them first — that is all adding a rollup to schemas/rollups.py takes), a flow-record
   column that is missing is added, and each TTL is set to the settings'.

With ``store.cluster`` set every statement goes ``ON CLUSTER`` to the tables schemas/cluster.py
lays out: the shard-local replicated tables and the Distributed tables over them
(``schema_migrations`` too, sharded by version, read through its Distributed table).

Migrations
----------
1. ``tables``: the tables and views of schemas/ as they are today.
2. ``flow_record_v2_columns``: ``rule-layer``, ``rule-id`` and ``rule-set-version`` on a flows
   table made before record version 2.

To change an existing table in a way ``CREATE … IF NOT EXISTS`` cannot (a column, a codec, a
key): append a :class:`Migration` with the next version, whose statements can run twice, made
through :class:`Target` so they reach a cluster's local and Distributed tables alike. Never
edit or renumber a migration that has shipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from flowlogs.errors import StoreError
from flowlogs.settings import StoreSettings
from pipeline.table_choice import retention_days
from schemas import cluster, flow_record, rollups
from schemas.flow_record import FLOW_FIELDS, FLOWS_TABLE, on_cluster_clause, sql_string

# Under the store's logger: these are what Store.migrate() does, and its log level is theirs.
log = logging.getLogger("pipeline.store.migrations")

TABLE = "schema_migrations"
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("version", "UInt32", "number of the migration: they are applied in this order"),
    ("name", "LowCardinality(String)", "what the migration does"),
    ("applied_at", "DateTime64(3, 'UTC') DEFAULT now64(3)", "when it was applied"),
)
# Two processes migrating at once may both record a version: merges keep one row.
ENGINE = "ReplacingMergeTree"


def create_table_ddl(table: str = TABLE, *, engine: str = ENGINE, on_cluster: str | None = None) -> str:
    lines = [f"    `{name}` {ctype} COMMENT {sql_string(doc)}" for name, ctype, doc in COLUMNS]
    return (
        f"CREATE TABLE IF NOT EXISTS {table}{on_cluster_clause(on_cluster)}\n(\n" + ",\n".join(lines) + "\n)\n"
        f"ENGINE = {engine}\nORDER BY version"
    )


LOG_TABLE = cluster.Table(TABLE, ENGINE, "version", create_table_ddl)


class Database(Protocol):
    """What migrations need of the store: ``pipeline.store.Store`` is one."""

    def command(self, sql: str) -> Any: ...

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]: ...


class Target:
    """The flows database a migration changes: on one server, or across ``store.cluster``."""

    def __init__(self, db: Database, settings: StoreSettings) -> None:
        self.db = db
        self.database = settings.database
        self.ttl = retention_days(settings)
        self.cluster = (
            cluster.Cluster(settings.cluster, settings.database, settings.replication_path) if settings.cluster else None
        )
        self.on_cluster = on_cluster_clause(settings.cluster)

    def name(self, table: str) -> str:
        """What inserts and queries name: the table, or on a cluster its Distributed table."""
        return f"{self.database}.{table}"

    def storage(self, table: str) -> str:
        """The table holding the rows (qualified): the table, or on a cluster its shard-local part."""
        return self.cluster.local(table) if self.cluster else self.name(table)

    def create(self, table: cluster.Table) -> None:
        for sql in table.on_cluster(self.cluster) if self.cluster else table.single_node(self.database):
            self.db.command(sql)

    def create_view(self, rollup: rollups.Rollup) -> None:
        self.db.command(cluster.view_ddl(rollup, self.database, self.cluster))

    def alter(self, table: str, change: str, *, columns: bool) -> None:
        """ALTER TABLE … ``change``; on a cluster, of the local part on every node, and when the
        change is to ``columns``, of the Distributed table too (it has the same columns)."""
        self.db.command(f"ALTER TABLE {self.storage(table)}{self.on_cluster} {change}")
        if self.cluster and columns:
            self.db.command(f"ALTER TABLE {self.name(table)}{self.on_cluster} {change}")

    def _system(self, sql: str, table: str) -> list[tuple[Any, ...]]:
        """``sql`` on a system table, with ``{db:String}``, ``{table:String}`` naming the storage table."""
        database, _, name = self.storage(table).partition(".")
        return self.db.query(sql, {"db": database, "table": name})[1]

    def exists(self, table: str) -> bool:
        return bool(self._system("SELECT count() FROM system.tables WHERE database = {db:String} AND name = {table:String}", table)[0][0])

    def columns(self, table: str) -> set[str]:
        rows = self._system("SELECT name FROM system.columns WHERE database = {db:String} AND table = {table:String}", table)
        return {r[0] for r in rows}

    def engine_full(self, table: str) -> str:
        rows = self._system("SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {table:String}", table)
        return str(rows[0][0])

    def partitions(self, table: str) -> list[str]:
        """Partitions holding rows of ``table``, on every node of a cluster."""
        parts = f"clusterAllReplicas({self.cluster.name}, system.parts)" if self.cluster else "system.parts"
        rows = self._system(
            f"SELECT DISTINCT partition FROM {parts} WHERE database = {{db:String}} AND table = {{table:String}}"
            " AND active ORDER BY partition",
            table,
        )
        return [r[0] for r in rows]

    @property
    def foreground(self) -> str:
        """INSERT settings that return once a Distributed insert is on its shards, not queued."""
        return " SETTINGS distributed_foreground_insert = 1" if self.cluster else ""


def create_tables(target: Target) -> None:
    """Every table and view of schemas/ that is missing. A rollup created beside a flows table
    that holds rows is filled from it before its view starts adding new inserts: exact when
    nothing else inserts meanwhile (a worker migrates before it consumes)."""
    for table in cluster.tables(target.ttl):
        is_new = table.rollup is not None and not target.exists(table.name)
        target.create(table)
        if table.rollup is not None:
            if is_new:
                _backfill(target, table.rollup)
            target.create_view(table.rollup)


def _backfill(target: Target, rollup: rollups.Rollup) -> None:
    """Fill a new rollup from the flows rows already stored, one day partition at a time
    (buckets never cross midnight), so no GROUP BY has to hold more than a day. On a cluster
    through the Distributed tables: each rollup row goes to the shard of its ENI's raw rows."""
    days = target.partitions(FLOWS_TABLE)
    for day in days:
        where = f"{flow_record.PARTITION_KEY} = toDate({sql_string(day)})"
        target.db.command(
            f"INSERT INTO {target.name(rollup.table)}{target.foreground} " + rollups.select_sql(rollup, target.database, where)
        )
    if days:
        log.info("filled %s from %d days of stored flows", target.name(rollup.table), len(days))


def add_columns(target: Target, fields: Collection[str] | None = None) -> None:
    """Flow-record fields (``fields``, by name; default all) missing from the flows table become
    columns, in record order. Rows stored before get the type's default: 0, '' or the first
    enum value."""
    present = target.columns(FLOWS_TABLE)
    previous = None
    for f in FLOW_FIELDS:
        if (fields is None or f.name in fields) and f.column not in present:
            log.info("adding column %s to %s", f.column, target.storage(FLOWS_TABLE))
            place = f" AFTER `{previous}`" if previous else " FIRST"
            target.alter(FLOWS_TABLE, f"ADD COLUMN IF NOT EXISTS {flow_record.column_ddl(f)}{place}", columns=True)
        previous = f.column


def apply_ttls(target: Target) -> None:
    """A TTL setting that differs from a table's TTL is applied with ALTER TABLE … MODIFY TTL."""
    for table, column in ((FLOWS_TABLE, "window_start"), *((r.table, rollups.BUCKET) for r in rollups.ROLLUPS)):
        days = target.ttl[table]
        if f"TTL {column} + toIntervalDay({days})" not in target.engine_full(table):
            log.info("setting the TTL of %s to %d days", target.storage(table), days)
            target.alter(table, f"MODIFY TTL {column} + INTERVAL {days} DAY", columns=False)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Target], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "tables", create_tables),
    Migration(2, "flow_record_v2_columns", partial(add_columns, fields=("rule-layer", "rule-id", "rule-set-version"))),
)
if [m.version for m in MIGRATIONS] != list(range(1, len(MIGRATIONS) + 1)):
    raise ValueError("migrations must be numbered 1, 2, 3… in order")


def applied(db: Database, settings: StoreSettings) -> list[tuple[int, str, datetime]]:
    """(version, name, applied_at) of each migration recorded, in version order."""
    _, rows = db.query(f"SELECT version, name, applied_at FROM {settings.database}.{TABLE} FINAL ORDER BY version")
    return [(int(v), str(n), at) for v, n, at in rows]


def _check_placement(target: Target) -> None:
    """Refuse a store made on one server opened as a cluster's, or the reverse: the tables'
    names are the same, so CREATE … IF NOT EXISTS would silently keep the wrong ones."""
    _, rows = target.db.query("SELECT name, engine FROM system.tables WHERE database = {db:String}", {"db": target.database})
    engines = dict(rows)
    names = [t.name for t in cluster.tables()] + [TABLE]
    wrong = [n for n in names if n in engines and (engines[n] == "Distributed") != (target.cluster is not None)]
    if wrong:
        made = "single-node" if target.cluster else "cluster-mode (Distributed)"
        raise StoreError(
            f"{target.database} holds {made} tables ({', '.join(wrong)}) but store.cluster is"
            f" {'set' if target.cluster else 'unset'}: a store cannot change mode in place;"
            " use another store.database and copy the rows over (INSERT INTO … SELECT)"
        )


def migrate(db: Database, settings: StoreSettings) -> list[Migration]:
    """Apply the migrations not applied yet, then converge (module docstring); returns those
    applied now."""
    target = Target(db, settings)
    _check_placement(target)
    db.command(f"CREATE DATABASE IF NOT EXISTS {target.database}{target.on_cluster}")
    target.create(LOG_TABLE)
    done = {version for version, _, _ in applied(db, settings)}
    ran = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        log.info("applying migration %d (%s) to %s", m.version, m.name, target.database)
        m.apply(target)
        db.command(
            f"INSERT INTO {target.name(TABLE)} (version, name){target.foreground}"
            f" VALUES ({m.version}, {sql_string(m.name)})"
        )
        ran.append(m)
    create_tables(target)
    add_columns(target)
    apply_ttls(target)
    return ran
