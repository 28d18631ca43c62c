"""Named reports: plain ClickHouse SQL over the flows table, kept in one place."""

from __future__ import annotations

from schemas.flow_record import FLOWS_TABLE


def _addr(column: str) -> str:
    # IPv4 is stored IPv4-mapped; show it dotted, as flow logs do.
    return f"replaceRegexpOne(IPv6NumToString({column}), '^::ffff:', '')"


def _since(since: int | None) -> str:
    return f"WHERE window_start >= toDateTime({int(since)})" if since is not None else ""


def top_talkers(limit: int = 10, since: int | None = None) -> str:
    """Source/destination pairs with the most bytes (windows starting at ``since`` or later)."""
    return f"""
SELECT
    {_addr('srcaddr')} AS src,
    {_addr('dstaddr')} AS dst,
    protocol,
    dstport,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    count() AS records
FROM {FLOWS_TABLE}
{_since(since)}
GROUP BY srcaddr, dstaddr, protocol, dstport
ORDER BY bytes DESC
LIMIT {int(limit)}
"""


def totals(since: int | None = None) -> str:
    """Records, packets and bytes stored."""
    return f"SELECT count() AS records, sum(packets) AS packets, sum(bytes) AS bytes FROM {FLOWS_TABLE} {_since(since)}"
