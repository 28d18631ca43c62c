"""Rollups: the flows table summed into 1 m, 5 m and 1 h buckets, and the DDL that keeps them.

Each rollup is a SummingMergeTree table filled by a materialized view on the raw ``flows``
table. A view is an insert trigger: the rows of every INSERT into ``flows`` are grouped and
added to each rollup in that same INSERT, so a rollup is never behind the raw table. Rows
with the same key are summed only when parts merge, so a query must still ``GROUP BY`` and
``sum()``.

A row holds a ``bucket`` (the start of the 1 m / 5 m / 1 h interval the flow *window*
started in: a window is never split between buckets), the kept dimensions, and three
measures: ``packets`` and ``bytes`` summed, ``records`` the number of flow records summed.

Which dimensions each rollup keeps
----------------------------------
The console asks for top talkers (source → destination, protocol, destination port), traffic
per ENI / VPC / subnet over time, and traffic per port.

* **1 m and 5 m** keep everything those questions group or filter on: ENI, VPC, subnet,
  source and destination address, destination port, protocol, action, log status,
  direction, IP type. They drop ``srcport`` — a client's ephemeral port is new with every
  connection and is what makes raw 5-tuples numerous, and no report groups by it — and the
  per-record fields that mean nothing once summed (``flow-id``, ``version``, ``start``,
  ``end``, and ``tcp-flags``, a bitwise OR that summing would corrupt).
* **1 h** keeps a year of per-ENI/VPC/subnet trends: ENI, VPC, subnet, protocol, action,
  log status, direction, IP type. It drops addresses and ports, whose cardinality grows
  with the number of peers and connections (a scanned public ENI alone brings thousands of
  new source addresses and destination ports an hour), so its size stays bounded by
  ENIs × hours. Questions about addresses or ports older than the 5 m retention cannot be
  answered; ``pipeline.table_choice`` sends them to the finest table that can.

To add a rollup: add a :class:`Rollup` to ``ROLLUPS``, a TTL setting for it in
``flowlogs/settings.py`` (``StoreSettings.rollup_ttl_days``), run ``flowlogs schemas --write``.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.flow_record import FLOW_FIELDS, FLOWS_TABLE, FlowField, dedup_settings, on_cluster_clause, sql_string

BUCKET = "bucket"
MEASURES = ("packets", "bytes")  # flow columns summed as they are
RECORDS = "records"  # count of flow records summed into a row
TIME_COLUMN = "window_start"  # the raw column a bucket is cut from
ENGINE = "SummingMergeTree"  # on a cluster, its Replicated form (schemas/cluster.py)

_FIELDS = {f.column: f for f in FLOW_FIELDS}
_BUCKET_CODEC = _FIELDS[TIME_COLUMN].codec
_RECORDS_CODEC = _FIELDS["packets"].codec


@dataclass(frozen=True, slots=True)
class Rollup:
    """One rollup table: bucket width, kept dimensions (sort-key order), default retention."""

    label: str  # "1m": names the table, the view and the TTL setting
    seconds: int  # bucket width; divides a day, so buckets are aligned to UTC midnight
    dimensions: tuple[str, ...]  # flow columns kept; interface_id first
    default_ttl_days: int

    @property
    def table(self) -> str:
        return f"{FLOWS_TABLE}_{self.label}"

    @property
    def view(self) -> str:
        return f"{self.table}_mv"

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns of the rollup table, in table order."""
        return (BUCKET, *self.dimensions, *MEASURES, RECORDS)

    @property
    def interval(self) -> str:
        """The bucket width as a ClickHouse INTERVAL."""
        for unit, size in (("DAY", 86_400), ("HOUR", 3_600), ("MINUTE", 60)):
            if self.seconds % size == 0:
                return f"INTERVAL {self.seconds // size} {unit}"
        return f"INTERVAL {self.seconds} SECOND"

    @property
    def sort_key(self) -> tuple[str, ...]:
        # Every dimension is in the key: SummingMergeTree sums rows with equal keys and keeps
        # an arbitrary value of any other non-numeric column.
        return (self.dimensions[0], BUCKET, *self.dimensions[1:])

    @property
    def primary_key(self) -> tuple[str, ...]:
        # A prefix of the sort key keeps the in-memory index small; queries filter on time
        # and sometimes the ENI.
        return (self.dimensions[0], BUCKET)


# Per ENI over time: what the 1 h rollup keeps for a year.
ENI_DIMENSIONS = ("interface_id", "protocol", "flow_direction", "action", "log_status", "type", "vpc_id", "subnet_id")
# Top talkers and ports too: the 1 m and 5 m rollups.
TALKER_DIMENSIONS = (*ENI_DIMENSIONS[:1], "srcaddr", "dstaddr", "dstport", *ENI_DIMENSIONS[1:])

ROLLUPS: tuple[Rollup, ...] = (
    Rollup("1m", 60, TALKER_DIMENSIONS, default_ttl_days=7),
    Rollup("5m", 300, TALKER_DIMENSIONS, default_ttl_days=90),
    Rollup("1h", 3_600, ENI_DIMENSIONS, default_ttl_days=365),
)


def _check(defined: tuple[Rollup, ...]) -> None:
    for r in defined:
        unknown = [d for d in r.dimensions if d not in _FIELDS or d in MEASURES]
        if unknown or r.dimensions[0] != "interface_id" or 86_400 % r.seconds:
            raise ValueError(f"bad rollup {r.label}: dimensions {unknown or r.dimensions[:1]}, width {r.seconds}s")


_check(ROLLUPS)


def _qualified(name: str, database: str | None) -> str:
    return f"{database}.{name}" if database else name


def _column_line(name: str, clickhouse_type: str, codec: str, description: str) -> str:
    return f"    `{name}` {clickhouse_type}{' ' + codec if codec else ''} COMMENT {sql_string(description)}"


def _dimension_line(f: FlowField) -> str:
    return _column_line(f.column, f.clickhouse_type, f.codec, f.description)


def create_table_ddl(
    rollup: Rollup,
    ttl_days: int | None = None,
    database: str | None = None,
    *,
    table: str | None = None,
    engine: str = ENGINE,
    on_cluster: str | None = None,
) -> str:
    """CREATE TABLE for one rollup (SummingMergeTree, day partitions, TTL on the bucket), named
    ``table`` instead of ``rollup.table`` when given (``engine``, ``on_cluster``: schemas/cluster.py).

    ``non_replicated_deduplication_window`` lets a replayed insert into ``flows`` (same
    ``insert_deduplication_token``) be dropped here too, when the insert sets
    ``deduplicate_blocks_in_dependent_materialized_views``. ``ttl_only_drop_parts``: a day
    partition's parts expire whole, so expiry drops files instead of rewriting them.
    """
    days = rollup.default_ttl_days if ttl_days is None else ttl_days
    lines = [
        _column_line(
            BUCKET,
            _FIELDS[TIME_COLUMN].clickhouse_type,
            _BUCKET_CODEC,
            f"start of the {rollup.label} bucket the flow windows started in",
        ),
        *(_dimension_line(_FIELDS[d]) for d in rollup.dimensions),
        *(
            _column_line(m, _FIELDS[m].clickhouse_type, _FIELDS[m].codec, f"sum of the flow records' {m}")
            for m in MEASURES
        ),
        _column_line(RECORDS, "UInt64", _RECORDS_CODEC, "number of flow records summed into this row"),
    ]
    return (
        f"CREATE TABLE IF NOT EXISTS {_qualified(table or rollup.table, database)}{on_cluster_clause(on_cluster)}\n(\n"
        + ",\n".join(lines)
        + f"\n)\nENGINE = {engine}\n"
        + f"PARTITION BY toDate({BUCKET})\n"
        + f"PRIMARY KEY ({', '.join(rollup.primary_key)})\n"
        + f"ORDER BY ({', '.join(rollup.sort_key)})\n"
        + f"TTL {BUCKET} + INTERVAL {days} DAY\n"
        + f"SETTINGS {dedup_settings(engine)}, ttl_only_drop_parts = 1"
    )


def select_sql(rollup: Rollup, database: str | None = None, where: str = "", *, source: str = FLOWS_TABLE) -> str:
    """The SELECT that turns raw flow rows (of ``source``) into rollup rows: the view's query,
    and with a ``where`` condition on the raw rows, one step of a backfill."""
    selected = [
        f"    toStartOfInterval({TIME_COLUMN}, {rollup.interval}) AS {BUCKET}",
        *(f"    {d}" for d in rollup.dimensions),
        *(f"    sum({m}) AS {m}" for m in MEASURES),
        f"    count() AS {RECORDS}",
    ]
    return (
        "SELECT\n"
        + ",\n".join(selected)
        + f"\nFROM {_qualified(source, database)}\n"
        + (f"WHERE {where}\n" if where else "")
        + f"GROUP BY {', '.join((BUCKET, *rollup.dimensions))}"
    )


def create_view_ddl(
    rollup: Rollup,
    database: str | None = None,
    *,
    source: str = FLOWS_TABLE,
    target: str | None = None,
    on_cluster: str | None = None,
) -> str:
    """CREATE MATERIALIZED VIEW … TO the rollup table (``target``), from the raw flows table
    (``source``); on a cluster, the shard-local ones (schemas/cluster.py)."""
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {_qualified(rollup.view, database)}{on_cluster_clause(on_cluster)}"
        f" TO {_qualified(target or rollup.table, database)}\nAS "
        + select_sql(rollup, database, source=source)
    )
