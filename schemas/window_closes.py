"""The close log: one row per window close of a worker, written before the close's rows.

A close is "on partition P of topic T, after the frame at offset O, every window up to
index W (windows of ``window_ns``) was closed". Rows are written by the worker that made
the close, before the flow rows it produced, and those rows are inserted under
:func:`insert_token` of the close; a worker that replays the partition repeats the closes
it finds here at the same offsets, so a repeated insert carries the same token and the
store drops it (``non_replicated_deduplication_window`` on the flows table).
"""

from __future__ import annotations

import hashlib

from schemas.flow_record import on_cluster_clause, sql_string

TABLE = "window_closes"
RETENTION_DAYS = 7  # far longer than any replay: Kafka keeps frames for hours, not days

# (name, type, meaning); the columns a worker writes, then those the store fills in.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("topic", "LowCardinality(String)", "frames topic"),
    ("partition", "UInt32", "partition of the frames topic"),
    ("offset", "UInt64", "offset of the last frame consumed before the close"),
    ("target", "Int64", "every window with index ≤ target was closed (index = capture time // window_ns)"),
    ("window_ns", "UInt64", "window length the indices refer to"),
)
WRITTEN_AT = ("written_at", "DateTime DEFAULT now()", "when the close was recorded")
# A replayed close is recorded again, identically: keep one row per close.
ENGINE = "ReplacingMergeTree"


def create_table_ddl(table: str = TABLE, *, engine: str = ENGINE, on_cluster: str | None = None) -> str:
    lines = [f"    `{name}` {ctype} COMMENT {sql_string(doc)}" for name, ctype, doc in (*COLUMNS, WRITTEN_AT)]
    return (
        f"CREATE TABLE IF NOT EXISTS {table}{on_cluster_clause(on_cluster)}\n(\n" + ",\n".join(lines) + "\n)\n"
        f"ENGINE = {engine}\n"
        "ORDER BY (topic, partition, offset, target)\n"
        f"TTL written_at + INTERVAL {RETENTION_DAYS} DAY"
    )


def insert_token(topic: str, partition: int, offset: int, target: int, window_ns: int) -> str:
    """The deduplication token of the flow rows one close produced."""
    identity = f"{topic}/{partition}/{offset}/{target}/{window_ns}"
    return hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()
