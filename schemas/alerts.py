"""The alert record: what a detector raises, on the alerts topic (JSON) and in the alerts table.

One alert is one incident: a scan by one source, one threat address talking to the
network, one ENI over its bandwidth. While the incident goes on the detector raises it
again, window after window, under the same ``alert-id`` with a higher ``updates`` count and
fresher ``last-seen`` and ``counts`` (suppression: one alarm that updates, not a flood);
once it has not been seen for the detector's quiet period it is raised one last time with
``state`` ``closed``. A later recurrence is a new alert.

The alerts table keeps the newest state of each alert (ReplacingMergeTree on ``updates``):
``SELECT … FROM alerts FINAL`` reads one row per alert.
"""

from __future__ import annotations

import hashlib
from typing import Any

from schemas.flow_record import FlowField, column_ddl, enum_type, on_cluster_clause, record_json_schema

ALERT_VERSION = 1
TABLE = "alerts"

DETECTORS = (
    "address_scan",  # one source → many hosts on one port
    "port_scan",  # one source → many ports on one host
    "threat_ip",  # a flow to or from an address on a threat list
    "uncommon_protocol",  # a protocol/port outside an ENI's learned baseline and the allowlist
    "broadcast_storm",  # broadcast/multicast packets per second over a threshold
    "bandwidth_overuse",  # an ENI's bits per second over its limit or k × its p95 baseline
)
SEVERITIES = ("low", "medium", "high", "critical")
STATES = ("open", "closed")

SAMPLE_FLOW_FIELDS = ("interface-id", "srcaddr", "dstaddr", "srcport", "dstport", "protocol", "packets", "bytes", "action", "tcp-flags")
MAX_SAMPLE_FLOWS = 5


AlertField = FlowField  # name (JSON spelling), ClickHouse type, JSON Schema, description


_TEXT = {"type": "string"}
_SECONDS = {"type": "integer", "minimum": 0}
_SAMPLE = {
    "type": "object",
    "required": list(SAMPLE_FLOW_FIELDS),
    "properties": {
        "interface-id": _TEXT, "srcaddr": _TEXT, "dstaddr": _TEXT,
        "srcport": {"type": "integer"}, "dstport": {"type": "integer"}, "protocol": {"type": "integer"},
        "packets": {"type": "integer"}, "bytes": {"type": "integer"}, "action": _TEXT, "tcp-flags": {"type": "integer"},
    },
}

ALERT_FIELDS: tuple[AlertField, ...] = (
    AlertField("version", "UInt8", {"const": ALERT_VERSION}, "alert record format version"),
    AlertField("alert-id", "String", {"type": "string", "pattern": "^[0-9a-f]{32}$"}, "stable id of the incident: every update of it carries the same id"),
    AlertField("detector", enum_type(DETECTORS), {"enum": list(DETECTORS)}, "what raised it"),
    AlertField("severity", enum_type(SEVERITIES), {"enum": list(SEVERITIES)}, "how urgent"),
    AlertField("state", enum_type(STATES), {"enum": list(STATES)}, "open while the incident goes on; closed after its quiet period"),
    AlertField("updates", "UInt32", {"type": "integer", "minimum": 0}, "0 when first raised, +1 each time it is raised again"),
    AlertField("first-seen", "DateTime('UTC')", _SECONDS, "start of the first flow window that showed it, Unix seconds"),
    AlertField("last-seen", "DateTime('UTC')", _SECONDS, "end of the latest flow window that showed it, Unix seconds"),
    AlertField("raised-at", "DateTime64(3, 'UTC')", {"type": "number", "minimum": 0}, "wall-clock time of this update, Unix seconds"),
    AlertField("vpc-id", "LowCardinality(String)", _TEXT, "VPC it was seen in, '-' when unknown"),
    AlertField("interface-id", "LowCardinality(String)", _TEXT, "ENI it concerns, '-' when several or none"),
    AlertField("source", "String", _TEXT, "the address (or ENI) behind it, '-' when none"),
    AlertField("target", "String", _TEXT, "what it reached: an address, a port, a list entry; '-' when none"),
    AlertField("summary", "String", _TEXT, "one line for a person"),
    AlertField("counts", "Map(LowCardinality(String), Float64)", {"type": "object", "additionalProperties": {"type": "number"}}, "the evidence in numbers (flows, packets, hosts, ports, bps…)"),
    AlertField("sample-flows", "String", {"type": "array", "maxItems": MAX_SAMPLE_FLOWS, "items": _SAMPLE}, "up to 5 flows that show it (a JSON array in the table)"),
)

FIELD_NAMES = tuple(f.name for f in ALERT_FIELDS)
COLUMN_NAMES = tuple(f.column for f in ALERT_FIELDS)


def alert_id(detector: str, key: str, first_seen: int) -> str:
    """The id of an incident: the detector, what it is about, and when it started."""
    return hashlib.blake2b(f"{detector}/{key}/{first_seen}".encode(), digest_size=16).hexdigest()


# Every update of an alert is inserted; merges keep the one with the most updates.
ENGINE = "ReplacingMergeTree(updates)"


def create_table_ddl(table: str = TABLE, ttl_days: int = 365, *, engine: str = ENGINE, on_cluster: str | None = None) -> str:
    lines = [f"    {column_ddl(f)}" for f in ALERT_FIELDS]
    return (
        f"CREATE TABLE IF NOT EXISTS {table}{on_cluster_clause(on_cluster)}\n(\n" + ",\n".join(lines) + "\n)\n"
        f"ENGINE = {engine}\n"
        "PARTITION BY toYYYYMM(first_seen)\n"
        "ORDER BY (alert_id)\n"
        f"TTL last_seen + INTERVAL {ttl_days} DAY"
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one record on the alerts topic."""
    return record_json_schema(f"alert-v{ALERT_VERSION}", f"Flow Logs alert v{ALERT_VERSION}", ALERT_FIELDS)
