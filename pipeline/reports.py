"""Named reports: plain ClickHouse SQL over the flows table or its rollups, kept in one place.

A report states what it reads — a time range, maybe a time step, the columns it groups or
filters on — and reads the table :func:`pipeline.table_choice.choose_table` names: the
coarsest one that gives exactly the raw table's answer. Rollup rows with equal keys are
summed only when parts merge, so every report groups and sums whichever table it reads.
Times are Unix seconds; a range is ``[since, until)`` of flow window starts.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.table_choice import Table, choose_table
from schemas.flow_record import sql_string


def address_text(column: str) -> str:
    """SQL for an address column as flow logs write it: IPv4 (stored IPv4-mapped) dotted."""
    return f"replaceRegexpOne(IPv6NumToString({column}), '^::ffff:', '')"


TALKER_COLUMNS = ("srcaddr", "dstaddr", "protocol", "dstport")


def _where(table: Table, since: int | None, until: int | None, *conditions: str) -> str:
    parts = [
        *([f"{table.time_column} >= toDateTime({int(since)})"] if since is not None else []),
        *([f"{table.time_column} < toDateTime({int(until)})"] if until is not None else []),
        *conditions,
    ]
    return "WHERE " + " AND ".join(parts) if parts else ""


def top_talkers(
    limit: int = 10,
    since: int | None = None,
    until: int | None = None,
    *,
    retention: Mapping[str, int] | None = None,
    now: int | None = None,
) -> str:
    """Source/destination pairs (with protocol and destination port) with the most bytes.

    ``retention`` (days by table) and ``now`` are passed to :func:`choose_table`.
    """
    table = choose_table(since, until, None, TALKER_COLUMNS, retention=retention, now=now)
    return f"""
SELECT
    {address_text('srcaddr')} AS src,
    {address_text('dstaddr')} AS dst,
    protocol,
    dstport,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    {table.records} AS records
FROM {table.name}
{_where(table, since, until)}
GROUP BY srcaddr, dstaddr, protocol, dstport
ORDER BY bytes DESC, packets DESC, srcaddr, dstaddr, protocol, dstport
LIMIT {int(limit)}
"""


def totals(
    since: int | None = None,
    until: int | None = None,
    *,
    retention: Mapping[str, int] | None = None,
    now: int | None = None,
) -> str:
    """Records, packets and bytes stored."""
    table = choose_table(since, until, None, (), retention=retention, now=now)
    return (
        f"SELECT {table.records} AS records, sum(packets) AS packets, sum(bytes) AS bytes"
        f" FROM {table.name} {_where(table, since, until)}"
    )


def traffic_per_eni(
    step: int,
    since: int | None = None,
    until: int | None = None,
    *,
    interface_id: str | None = None,
    retention: Mapping[str, int] | None = None,
    now: int | None = None,
) -> str:
    """Packets, bytes and records per ENI per ``step`` seconds (steps aligned to the Unix epoch).

    One row per (step_start, interface_id) with traffic, in time order; ``interface_id``
    keeps one ENI.
    """
    step = int(step)
    table = choose_table(since, until, step, ("interface_id",), retention=retention, now=now)
    only = (f"interface_id = {sql_string(interface_id)}",) if interface_id is not None else ()
    return f"""
SELECT
    toDateTime(intDiv(toUInt32({table.time_column}), {step}) * {step}, 'UTC') AS step_start,
    interface_id,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    {table.records} AS records
FROM {table.name}
{_where(table, since, until, *only)}
GROUP BY step_start, interface_id
ORDER BY step_start, interface_id
"""
