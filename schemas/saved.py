"""Saved result sets: rewinds and snapshots, kept apart from live flows and exempt from TTLs.

A result set has a name and a row in ``result_sets`` saying what it is: a **rewind** (raw
frames of a time range aggregated again, maybe with a finer window or another rule set)
or a **snapshot** (live flow records of a range, frozen). Its flow records are rows of
``saved_flows`` — the flow record's columns plus ``result_set`` — and a snapshot taken
``--with-frames`` keeps the raw packet metadata of the range in ``saved_packets`` (the
frame's packet columns, the ENI by id). Both are partitioned by result set, so deleting one
drops its partitions; neither has a TTL.
"""

from __future__ import annotations

import re

from schemas import flow_record, frame
from schemas.flow_record import FLOW_FIELDS, column_ddl, enum_type, on_cluster_clause, sql_string

RESULT_SETS_TABLE = "result_sets"
FLOWS_TABLE = "saved_flows"
PACKETS_TABLE = "saved_packets"
KINDS = ("rewind", "snapshot")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# A result set made again under the same name replaces the description.
RESULT_SETS_ENGINE = "ReplacingMergeTree(created_at)"
ROWS_ENGINE = "MergeTree"  # saved_flows and saved_packets; on a cluster, the Replicated forms (schemas/cluster.py)

# (column, type, meaning) of a result set's description.
RESULT_SET_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("name", "String", "the result set's name"),
    ("kind", enum_type(KINDS), "rewind: frames aggregated again; snapshot: live flows frozen"),
    ("from", "DateTime('UTC')", "start of the range (capture time / window start), inclusive"),
    ("to", "DateTime('UTC')", "end of the range, exclusive"),
    ("scope", "String", "'all', or vpc:ID, subnet:ID, eni:ID"),
    ("window_seconds", "UInt32", "aggregation window of its flow records"),
    ("rules", "String", "rewind: the rule set its verdicts come from ('topic vN' or a file); snapshot: '-'"),
    ("with_frames", "UInt8", "1 when its raw packet metadata is kept in saved_packets"),
    ("flows", "UInt64", "flow records it holds"),
    ("packets", "UInt64", "packets its flow records count"),
    ("created_at", "DateTime64(3, 'UTC')", "when it was made"),
)

_PACKET_TYPES = {"<u8": "UInt64", "V16": "IPv6", "<u4": "UInt32", "<u2": "UInt16", "u1": "UInt8"}
PACKET_COLUMNS: tuple[tuple[str, str, str], ...] = tuple(
    ("interface_id", "LowCardinality(String)", "ENI the packet was seen on") if c.name == "eni" else (c.name, _PACKET_TYPES[c.dtype], c.doc)
    for c in frame.COLUMNS
)


def check_name(name: str) -> str:
    """``name`` if it can name a result set, else ValueError saying what can."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{name!r} cannot name a result set: use 1–63 of a-z, 0-9, '_' and '-', starting with a letter or digit")
    return name


def _columns(rows: tuple[tuple[str, str, str], ...]) -> str:
    return ",\n".join(f"    `{name}` {ctype} COMMENT {sql_string(doc)}" for name, ctype, doc in rows)


def result_sets_ddl(table: str = RESULT_SETS_TABLE, *, engine: str = RESULT_SETS_ENGINE, on_cluster: str | None = None) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table}{on_cluster_clause(on_cluster)}\n(\n{_columns(RESULT_SET_COLUMNS)}\n)\n"
        f"ENGINE = {engine}\nORDER BY name"
    )


def saved_flows_ddl(table: str = FLOWS_TABLE, *, engine: str = ROWS_ENGINE, on_cluster: str | None = None) -> str:
    lines = ["    `result_set` LowCardinality(String) COMMENT 'the result set the row belongs to'"]
    lines += [f"    {column_ddl(f)}" for f in FLOW_FIELDS]
    return (
        f"CREATE TABLE IF NOT EXISTS {table}{on_cluster_clause(on_cluster)}\n(\n" + ",\n".join(lines) + "\n)\n"
        f"ENGINE = {engine}\nPARTITION BY result_set\n"
        f"ORDER BY (result_set, {', '.join(flow_record.SORT_KEY)})"
    )


def saved_packets_ddl(table: str = PACKETS_TABLE, *, engine: str = ROWS_ENGINE, on_cluster: str | None = None) -> str:
    rows = (("result_set", "LowCardinality(String)", "the result set the packet belongs to"), *PACKET_COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS {table}{on_cluster_clause(on_cluster)}\n(\n{_columns(rows)}\n)\n"
        f"ENGINE = {engine}\nPARTITION BY result_set\nORDER BY (result_set, interface_id, capture_time_ns)"
    )
