"""The flow record: one definition from which the ClickHouse DDL and the JSON Schema come.

Field names follow the AWS VPC / Tencent Cloud flow-log vocabulary (``interface-id``,
``srcaddr``, ``log-status``…). JSON records on the flows topic use those names as they
are; ClickHouse columns use the same names with ``-`` turned into ``_``.

To add a field: add a :class:`FlowField` to ``FLOW_FIELDS``, fill it in
``pipeline/records.py``, decide whether the rollups keep it (``schemas/rollups.py``), run
``flowlogs schemas --write`` and commit the regenerated files (a test fails while they drift).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.rules import LAYERS, NO_RULE

RECORD_VERSION = 2  # 2: rule-layer, rule-id, rule-set-version
FLOWS_TABLE = "flows"

ACTIONS = ("ACCEPT", "REJECT")
# AWS's three, plus LATE: packets that came after their window had closed (past the
# allowed lateness), recorded apart from the window's on-time record, never merged into it.
LOG_STATUSES = ("OK", "NODATA", "SKIPDATA", "LATE")
DIRECTIONS = ("ingress", "egress")  # index = frame `direction` value
TYPES = ("IPv4", "IPv6")


@dataclass(frozen=True, slots=True)
class FlowField:
    """One field of the flow record (or of another record kept the same way: schemas/alerts.py)."""

    name: str  # AWS/Tencent spelling, used in JSON
    clickhouse_type: str
    json_schema: dict[str, Any]
    description: str
    codec: str = ""

    @property
    def column(self) -> str:
        return self.name.replace("-", "_")


def enum_type(values: tuple[str, ...], codes: tuple[int, ...] | None = None) -> str:
    """A ClickHouse Enum8 of ``values``, coded from 1 unless ``codes`` are given."""
    codes = codes or tuple(range(1, len(values) + 1))
    return "Enum8(" + ", ".join(f"'{v}' = {c}" for v, c in zip(values, codes)) + ")"


_U16 = {"type": "integer", "minimum": 0, "maximum": 65535}
_U64 = {"type": "integer", "minimum": 0}
_ID = {"type": "string", "minLength": 1}

FLOW_FIELDS: tuple[FlowField, ...] = (
    FlowField("version", "UInt8", {"const": RECORD_VERSION}, "flow record format version"),
    FlowField("flow-id", "UInt64", _U64, "deterministic id of (ENI, 5-tuple, direction, window): replays repeat it"),
    FlowField("interface-id", "LowCardinality(String)", _ID, "ENI the packets were seen on"),
    FlowField("vpc-id", "LowCardinality(String)", _ID, "VPC of the ENI, '-' when unknown"),
    FlowField("subnet-id", "LowCardinality(String)", _ID, "subnet of the ENI, '-' when unknown"),
    FlowField("srcaddr", "IPv6", {"type": "string", "format": "ip"}, "source address (IPv4 stored IPv4-mapped)"),
    FlowField("dstaddr", "IPv6", {"type": "string", "format": "ip"}, "destination address"),
    FlowField("srcport", "UInt16", _U16, "source port; 0 when the protocol has none"),
    FlowField("dstport", "UInt16", _U16, "destination port; ICMP type << 8 | code"),
    FlowField("protocol", "UInt8", {"type": "integer", "minimum": 0, "maximum": 255}, "IANA protocol number"),
    FlowField("packets", "UInt64", _U64, "packets in the window", "CODEC(T64, ZSTD(1))"),
    FlowField("bytes", "UInt64", _U64, "sum of IP total lengths in the window", "CODEC(T64, ZSTD(1))"),
    FlowField("start", "DateTime('UTC')", {"type": "integer", "minimum": 0}, "first packet, Unix seconds", "CODEC(DoubleDelta, ZSTD(1))"),
    FlowField("end", "DateTime('UTC')", {"type": "integer", "minimum": 0}, "last packet, Unix seconds", "CODEC(DoubleDelta, ZSTD(1))"),
    FlowField("window-start", "DateTime('UTC')", {"type": "integer", "minimum": 0}, "start of the aggregation window, Unix seconds", "CODEC(DoubleDelta, ZSTD(1))"),
    FlowField("action", enum_type(ACTIONS), {"enum": list(ACTIONS)}, "security-group / network-ACL verdict (schemas/rules.py)"),
    FlowField("rule-layer", enum_type(LAYERS), {"enum": list(LAYERS)}, "what decided the action: a security group (sg), a network ACL (acl), or a default (default)"),
    FlowField("rule-id", "LowCardinality(String)", _ID, f"id of the policy or ACL entry that decided; sg/default or <acl-id>/default for a default deny; '{NO_RULE}' for none"),
    FlowField("rule-set-version", "UInt32", {"type": "integer", "minimum": 0}, "version of the rule set the verdict was evaluated against (0: none loaded)"),
    FlowField("log-status", enum_type(LOG_STATUSES), {"enum": list(LOG_STATUSES)}, "OK; NODATA (no traffic); SKIPDATA (packets lost); LATE (arrived after the window closed)"),
    FlowField("tcp-flags", "UInt8", {"type": "integer", "minimum": 0, "maximum": 255}, "bitwise OR of the TCP flags of the flow's packets"),
    FlowField("flow-direction", enum_type(DIRECTIONS), {"enum": list(DIRECTIONS)}, "relative to the ENI"),
    FlowField("type", enum_type(TYPES, (4, 6)), {"enum": list(TYPES)}, "IP version of the traffic"),
)

FIELD_NAMES = tuple(f.name for f in FLOW_FIELDS)
COLUMN_NAMES = tuple(f.column for f in FLOW_FIELDS)

SORT_KEY = ("interface_id", "window_start", "srcaddr", "dstaddr", "flow_id")
PARTITION_KEY = "toDate(window_start)"
ENGINE = "MergeTree"  # on a cluster, its Replicated form (schemas/cluster.py)

# How many inserts' deduplication tokens a table remembers, and for how long a replicated
# table keeps them in Keeper (ClickHouse's default is an hour): a replay comes well within
# the close log's retention (schemas/window_closes.py), and the count bounds it before then.
DEDUP_WINDOW = 10_000
DEDUP_WINDOW_SECONDS = 7 * 86_400


def sql_string(text: str) -> str:
    """``text`` as a ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def column_ddl(f: FlowField) -> str:
    """A column's definition as CREATE TABLE and ALTER TABLE … ADD COLUMN write it."""
    return f"`{f.column}` {f.clickhouse_type}{' ' + f.codec if f.codec else ''} COMMENT {sql_string(f.description)}"


def on_cluster_clause(cluster: str | None) -> str:
    """`` ON CLUSTER <cluster>`` for DDL every node of a cluster runs; nothing on one server."""
    return f" ON CLUSTER {cluster}" if cluster else ""


def dedup_settings(engine: str) -> str:
    """The table settings that make ``engine`` drop a repeated insert (same ``insert_deduplication_token``):
    a non-replicated table keeps the tokens on its disk, a replicated one in Keeper."""
    if engine.startswith("Replicated"):
        return (
            f"replicated_deduplication_window = {DEDUP_WINDOW},"
            f" replicated_deduplication_window_seconds = {DEDUP_WINDOW_SECONDS}"
        )
    return f"non_replicated_deduplication_window = {DEDUP_WINDOW}"


def create_table_ddl(
    table: str = FLOWS_TABLE, ttl_days: int = 15, *, engine: str = ENGINE, on_cluster: str | None = None
) -> str:
    """CREATE TABLE for the raw flows table (``engine`` and ``on_cluster``: schemas/cluster.py).

    ``non_replicated_deduplication_window`` lets a replayed insert carrying the same
    ``insert_deduplication_token`` be dropped by the server.
    """
    lines = [f"    {column_ddl(f)}" for f in FLOW_FIELDS]
    return (
        f"CREATE TABLE IF NOT EXISTS {table}{on_cluster_clause(on_cluster)}\n(\n"
        + ",\n".join(lines)
        + f"\n)\nENGINE = {engine}\n"
        + f"PARTITION BY {PARTITION_KEY}\n"
        + f"ORDER BY ({', '.join(SORT_KEY)})\n"
        + f"TTL window_start + INTERVAL {ttl_days} DAY\n"
        + f"SETTINGS {dedup_settings(engine)}"
    )


def record_json_schema(name: str, title: str, fields: tuple[FlowField, ...]) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a record made of ``fields``, every one required."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://flowlogs.dev/schemas/{name}.json",
        "title": title,
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in fields],
        "properties": {f.name: {**f.json_schema, "description": f.description} for f in fields},
    }


def json_schema() -> dict[str, Any]:
    """JSON Schema of one record on the flows topic."""
    return record_json_schema(f"flow-record-v{RECORD_VERSION}", f"Flow Logs flow record v{RECORD_VERSION}", FLOW_FIELDS)
