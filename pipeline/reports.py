"""Named reports: plain ClickHouse SQL over the flows table, kept in one place."""

from __future__ import annotations

from schemas.flow_record import FLOWS_TABLE


def _addr(column: str) -> str:
    # IPv4 is stored IPv4-mapped; show it dotted, as flow logs do.
    return f"replaceRegexpOne(IPv6NumToString({column}), '^::ffff:', '')"


def top_talkers(limit: int = 10) -> str:
    """Source/destination pairs with the most bytes."""
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
GROUP BY srcaddr, dstaddr, protocol, dstport
ORDER BY bytes DESC
LIMIT {int(limit)}
"""


TOTALS = f"SELECT count() AS records, sum(packets) AS packets, sum(bytes) AS bytes FROM {FLOWS_TABLE}"
