"""The SQL of every report: plain ClickHouse SQL over the flows table or its rollups, in one place.

A report states what it reads — a time range, maybe a time step, the columns it groups or
filters on — and reads the table :func:`pipeline.table_choice.choose_table` names: the
coarsest one that gives exactly the raw table's answer. Rollup rows with equal keys are
summed only when parts merge, so every query groups and sums whichever table it reads.
Times are Unix seconds; a range is ``[since, until)`` of flow window starts.

Each builder's result columns are named beside it (``*_COLUMNS``): chDB names none when a
result is empty. The builders take a chosen :class:`~pipeline.table_choice.Table` and values already checked
(``pipeline/reports.py`` checks what users give): column names from the whitelists below,
numbers as ints, strings quoted with :func:`schemas.flow_record.sql_string`. Times come
back as ISO text and addresses as text, the same through a worker's API as from chDB.

In ClickHouse an alias stands for its expression anywhere in the query: after
``sum(bytes) AS bytes``, ``bytes * 8`` is the sum's bits. A sum gets a name of its own
(``remote_bytes``, ``source_packets``) where the query must still read the column itself:
in WHERE, or as an inner query's column summed again outside.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from pipeline.table_choice import Table, choose_table
from schemas import addresses
from schemas.flow_record import COLUMN_NAMES, sql_string

TALKER_COLUMNS = ("srcaddr", "dstaddr", "protocol", "dstport")
# What a report may group by: every flow column but the measures and the per-record fields
# that mean nothing as a group (the record's id and version, its times).
DIMENSIONS = tuple(
    c for c in COLUMN_NAMES if c not in ("version", "flow_id", "packets", "bytes", "start", "end", "window_start")
)
METRICS = ("bytes", "packets", "records")
ADDRESS_COLUMNS = {"srcaddr": "src", "dstaddr": "dst"}  # shown as text under these names

HOURS_PER_WEEK = 168


def address_text(column: str) -> str:
    """SQL for an address column as flow logs write it: IPv4 (stored IPv4-mapped) dotted."""
    return f"replaceRegexpOne(IPv6NumToString({column}), '^::ffff:', '')"


def _iso(column: str) -> str:
    return f"formatDateTime({column}, '%Y-%m-%dT%H:%i:%SZ')"


def _step_start(table: Table, step: int) -> str:
    """The start of the ``step``-second interval (aligned to the Unix epoch) a row's time is in."""
    return f"toDateTime(intDiv(toUInt32({table.time_column}), {int(step)}) * {int(step)}, 'UTC')"


def _where(table: Table, since: int | None, until: int | None, *conditions: str) -> str:
    parts = [
        *([f"{table.time_column} >= toDateTime({int(since)})"] if since is not None else []),
        *([f"{table.time_column} < toDateTime({int(until)})"] if until is not None else []),
        *conditions,
    ]
    return "WHERE " + " AND ".join(parts) if parts else ""


def _quantile_with_idle(samples: str, expected: str) -> str:
    """SQL for the p95 of ``samples`` (a groupArray) padded with zeros up to ``expected`` values:
    steps without rows had no traffic, and count as 0 bits/s."""
    return (
        f"arrayReduce('quantileExact(0.95)', arrayConcat({samples},"
        f" arrayWithConstant(greatest(toInt64({expected}) - toInt64(length({samples})), 0), 0.)))"
    )


# --- the reports of the console (called by flowlogs up and the tests) ----------------------


def talkers_columns(by: Sequence[str]) -> tuple[str, ...]:
    """The columns :func:`talkers_sql` returns."""
    return (*(ADDRESS_COLUMNS.get(c, c) for c in by), "packets", "bytes", "records")


def talkers_sql(
    table: Table,
    by: Sequence[str],
    metric: str,
    limit: int,
    since: int | None,
    until: int | None,
) -> str:
    """Packets, bytes and records per distinct value of the ``by`` columns, the ``limit``
    biggest by ``metric``; ties go by the other measures, then the ``by`` values ascending."""
    selected = [f"{address_text(c)} AS {ADDRESS_COLUMNS[c]}" if c in ADDRESS_COLUMNS else c for c in by]
    order = [f"{m} DESC" for m in (metric, *(m for m in METRICS if m != metric))] + list(by)
    return f"""
SELECT
    {', '.join(selected)},
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    {table.records} AS records
FROM {table.name}
{_where(table, since, until)}
GROUP BY {', '.join(by)}
ORDER BY {', '.join(order)}
LIMIT {int(limit)}
"""


def top_talkers(
    limit: int = 10,
    since: int | None = None,
    until: int | None = None,
    *,
    by: Sequence[str] = TALKER_COLUMNS,
    metric: str = "bytes",
    retention: Mapping[str, int] | None = None,
    now: int | None = None,
) -> str:
    """The ``limit`` biggest groups by ``metric`` (default: source/destination pairs with
    protocol and destination port, by bytes); see :func:`talkers_sql`.

    ``retention`` (days by table) and ``now`` are passed to :func:`choose_table`.
    """
    table = choose_table(since, until, None, by, retention=retention, now=now)
    return talkers_sql(table, by, metric, limit, since, until)


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
    {_step_start(table, step)} AS step_start,
    interface_id,
    sum(packets) AS packets,
    sum(bytes) AS bytes,
    {table.records} AS records
FROM {table.name}
{_where(table, since, until, *only)}
GROUP BY step_start, interface_id
ORDER BY step_start, interface_id
"""


# --- the named reports of pipeline/reports.py ----------------------------------------------


BANDWIDTH_COLUMNS = ("step_start", "interface_id", "bps", "pps", "bytes", "packets")


def bandwidth_sql(table: Table, step: int, since: int, until: int, interface_id: str | None) -> str:
    """Bits and packets per second per ENI per ``step`` seconds, in time order."""
    only = (f"interface_id = {sql_string(interface_id)}",) if interface_id is not None else ()
    return f"""
WITH {_step_start(table, step)} AS step
SELECT
    {_iso('step')} AS step_start,
    interface_id,
    bytes * 8 / {int(step)} AS bps,
    packets / {int(step)} AS pps,
    sum(bytes) AS bytes,
    sum(packets) AS packets
FROM {table.name}
{_where(table, since, until, *only)}
GROUP BY step, interface_id
ORDER BY step, interface_id
"""


def _ipv6(value: int) -> str:
    return f"toIPv6({sql_string(str(ipaddress.IPv6Address(value)))})"


def reaches_many_hosts_sql(subnet_broadcasts: Mapping[str, ipaddress.IPv4Address]) -> str:
    """SQL condition: ``dstaddr`` is broadcast or multicast (``schemas/addresses.py``), the
    directed broadcast counting only from an ENI in that subnet (``subnet_broadcasts``)."""
    ranges = [
        f"dstaddr = {_ipv6(first)}" if first == last else f"dstaddr BETWEEN {_ipv6(first)} AND {_ipv6(last)}"
        for first, last in addresses.many_host_ranges()
    ]
    if subnet_broadcasts:
        pairs = ", ".join(
            f"({sql_string(subnet)}, {_ipv6(addresses.stored(address))})"
            for subnet, address in sorted(subnet_broadcasts.items())
        )
        ranges.append(f"(subnet_id, dstaddr) IN ({pairs})")
    return "(" + " OR ".join(ranges) + ")"


STORM_SOURCE_COLUMNS = ("src", "interface_id", "packets", "pps", "bytes", "destinations", "records")


def storm_sources_sql(
    table: Table, since: int, until: int, limit: int, subnet_broadcasts: Mapping[str, ipaddress.IPv4Address]
) -> str:
    """Broadcast/multicast traffic per source address and ENI, the most packets first."""
    return f"""
SELECT
    {address_text('srcaddr')} AS src,
    interface_id,
    sum(packets) AS packets,
    packets / {int(until) - int(since)} AS pps,
    sum(bytes) AS bytes,
    uniqExact(dstaddr) AS destinations,
    {table.records} AS records
FROM {table.name}
{_where(table, since, until, reaches_many_hosts_sql(subnet_broadcasts))}
GROUP BY srcaddr, interface_id
ORDER BY packets DESC, bytes DESC, srcaddr, interface_id
LIMIT {int(limit)}
"""


ENI_PEAK_COLUMNS = ("interface_id", "vpc_id", "subnet_id", "peak_bps", "peak_at", "p95_bps")


def eni_peaks_sql(table: Table, step: int, since: int, until: int) -> str:
    """Per ENI: its VPC and subnet, the peak bits/s over the ``step``-second steps of the range
    and the first step at the peak, and the p95 bits/s over all steps (those without traffic
    count as 0)."""
    steps = (int(until) - int(since)) // int(step)
    return f"""
SELECT
    interface_id,
    max(vpc_id) AS vpc_id,
    max(subnet_id) AS subnet_id,
    max(step_bps) AS peak_bps,
    {_iso('argMin(step, (-step_bps, step))')} AS peak_at,
    {_quantile_with_idle('groupArray(step_bps)', str(steps))} AS p95_bps
FROM (
    SELECT
        {_step_start(table, step)} AS step,
        interface_id,
        -- an ENI's placement is fixed; '-' (unknown) sorts before any id, so max() keeps a known one
        max(vpc_id) AS vpc_id,
        max(subnet_id) AS subnet_id,
        sum(bytes) * 8 / {int(step)} AS step_bps
    FROM {table.name}
    {_where(table, since, until)}
    GROUP BY step, interface_id
)
GROUP BY interface_id
ORDER BY interface_id
"""


REJECT_COLUMNS = ("rule_layer", "rule_id", "records", "packets", "bytes", "sources", "top_source", "top_source_packets")


def rejects_by_rule_sql(table: Table, since: int, until: int, limit: int) -> str:
    """REJECT records per deciding rule: records, packets, bytes, distinct sources, and the
    source with the most packets (the lowest address on a tie), most records first."""
    return f"""
SELECT
    rule_layer,
    rule_id,
    sum(source_records) AS records,
    sum(source_packets) AS packets,
    sum(source_bytes) AS bytes,
    count() AS sources,
    {address_text('argMin(srcaddr, (-toInt64(source_packets), srcaddr))')} AS top_source,
    max(source_packets) AS top_source_packets
FROM (
    SELECT rule_layer, rule_id, srcaddr,
        sum(packets) AS source_packets, sum(bytes) AS source_bytes, {table.records} AS source_records
    FROM {table.name}
    {_where(table, since, until, "action = 'REJECT'")}
    GROUP BY rule_layer, rule_id, srcaddr
)
GROUP BY rule_layer, rule_id
ORDER BY records DESC, packets DESC, bytes DESC, rule_layer, rule_id
LIMIT {int(limit)}
"""


def remote_addresses_sql(table: Table, since: int, until: int, direction: str | None) -> str:
    """Bytes, packets and records per remote address (the source of ingress flows, the
    destination of egress ones) as 32 hex digits; ``direction`` keeps one direction."""
    only = (f"flow_direction = {sql_string(direction)}",) if direction is not None else ()
    # packets > 0: NODATA/SKIPDATA marker rows carry no traffic and no remote address.
    return f"""
SELECT
    hex(if(flow_direction = 'ingress', srcaddr, dstaddr) AS remote) AS remote_hex,
    sum(bytes) AS remote_bytes,
    sum(packets) AS remote_packets,
    {table.records} AS remote_records
FROM {table.name}
{_where(table, since, until, "packets > 0", *only)}
GROUP BY remote
"""


def _hourly_bps(table: Table, since: int, until: int) -> str:
    """Per ENI per hour of the range: its start, its hour of the week (0 = Monday 00:00 UTC)
    and its bits/s."""
    return f"""
    SELECT
        interface_id,
        {_step_start(table, 3600)} AS hour_start,
        (toDayOfWeek(hour_start) - 1) * 24 + toHour(hour_start) AS week_hour,
        sum(bytes) * 8 / 3600 AS bps
    FROM {table.name}
    {_where(table, since, until)}
    GROUP BY interface_id, hour_start"""


DEVIATION_COLUMNS = ("interface_id", "hour", "hour_of_week", "current_bps", "p95_bps", "weeks", "deviation")


def hour_deviation_sql(table: Table, since: int, hour: int, hour_of_week: int, weeks: int) -> str:
    """Per ENI: bits/s of ``hour``, the p95 bits/s of the same hour of the week over the
    ``weeks`` earlier ones from ``since`` (hours without traffic count as 0), and their ratio
    (NULL without a baseline); the biggest deviation first."""
    earlier = f"hour_start < toDateTime({int(hour)})"
    return f"""
SELECT
    interface_id,
    {_iso(f"toDateTime({int(hour)}, 'UTC')")} AS hour,
    {int(hour_of_week)} AS hour_of_week,
    sumIf(bps, NOT {earlier}) AS current_bps,
    {_quantile_with_idle(f'groupArrayIf(bps, {earlier})', str(int(weeks)))} AS p95_bps,
    {int(weeks)} AS weeks,
    if(p95_bps > 0, current_bps / p95_bps, NULL) AS deviation
FROM ({_hourly_bps(table, since, int(hour) + 3600)}
)
WHERE week_hour = {int(hour_of_week)}
GROUP BY interface_id
ORDER BY deviation DESC NULLS LAST, interface_id
"""


BASELINE_COLUMNS = ("interface_id", "hour_of_week", "weeks", "p95_bps")


def hour_of_week_baselines_sql(table: Table, since: int, until: int, weeks: Sequence[int]) -> str:
    """Per ENI per hour of the week: the p95 bits/s over the ``weeks[hour_of_week]`` times
    that hour occurs in ``[since, until)`` (hours without traffic count as 0), in ENI and
    hour order."""
    if len(weeks) != HOURS_PER_WEEK:
        raise ValueError(f"weeks needs one count per hour of the week, not {len(weeks)}")
    counts = "[" + ", ".join(str(int(w)) for w in weeks) + "]"
    return f"""
SELECT
    interface_id,
    week_hour AS hour_of_week,
    {counts}[week_hour + 1] AS weeks,
    {_quantile_with_idle('groupArray(bps)', f'{counts}[week_hour + 1]')} AS p95_bps
FROM ({_hourly_bps(table, since, until)}
)
GROUP BY interface_id, week_hour
ORDER BY interface_id, week_hour
"""


# --- the web console's charts: traffic over time, source → destination --------------------

# What traffic over time may be stacked by: placement and the flow columns with few values.
# Addresses have too many to stack (top-talkers ranks them).
TRAFFIC_DIMENSIONS = ("interface_id", "vpc_id", "subnet_id", "protocol", "dstport", "action", "flow_direction")
TRAFFIC_METRICS = ("bps", "pps")
TRAFFIC_COLUMNS = ("step_start", "series", "value")
OTHER_SERIES = "other"  # the series of every value outside the top ones


def traffic_sql(table: Table, by: str, metric: str, top: int, step: int, since: int, until: int) -> str:
    """Bits (``bps``) or packets (``pps``) per second per ``step`` seconds, one series per
    value of ``by`` as text: the ``top`` values with the most bytes (bps) or packets (pps) over
    the whole range, the lowest value first on a tie; the rest summed as ``other``. Rows in
    time order, within a step the series by rank and ``other`` last; steps without traffic
    have no rows."""
    if by not in TRAFFIC_DIMENSIONS or metric not in TRAFFIC_METRICS:
        raise ValueError(f"traffic by {by!r} in {metric!r}: by is one of {TRAFFIC_DIMENSIONS}, metric of {TRAFFIC_METRICS}")
    measure, bits = ("bytes", "8 * ") if metric == "bps" else ("packets", "")
    # packets > 0: NODATA/SKIPDATA marker rows carry no traffic; they would add empty series.
    where = _where(table, since, until, "packets > 0")
    return f"""
WITH
    (
        SELECT arrayMap(t -> t.2, arraySort(t -> (-toInt64(t.1), t.2), groupArray((total, key))))
        FROM (
            SELECT toString({by}) AS key, sum({measure}) AS total
            FROM {table.name}
            {where}
            GROUP BY key
            ORDER BY total DESC, key
            LIMIT {int(top)}
        )
    ) AS leaders,
    {_step_start(table, step)} AS step,
    indexOf(leaders, toString({by})) AS series_rank
SELECT
    {_iso('step')} AS step_start,
    if(series_rank = 0, {sql_string(OTHER_SERIES)}, leaders[series_rank]) AS series,
    {bits}sum({measure}) / {int(step)} AS value
FROM {table.name}
{where}
GROUP BY step, series_rank
ORDER BY step, series_rank = 0, series_rank
"""


SANKEY_LEVELS = {"eni": "interface_id", "subnet": "subnet_id"}  # level → the flow column naming a node
SANKEY_COLUMNS = ("source", "target", "bytes", "packets")


def address_prefix(address: str) -> str:
    """SQL for the /24 (IPv4) or /48 (IPv6) holding ``address``, as text:
    ``203.0.113.0/24``, ``2001:db8:1::/48``."""
    v4 = f"({address} BETWEEN toIPv6('::ffff:0.0.0.0') AND toIPv6('::ffff:255.255.255.255'))"
    first = f"tupleElement(IPv6CIDRToRange({address}, if({v4}, 120, 48)), 1)"
    return f"concat({address_text(first)}, if({v4}, '/24', '/48'))"


def sankey_sql(table: Table, level: str, since: int, until: int, limit: int) -> str:
    """Bytes and packets from source to target: for ingress flows from the remote address's
    prefix (:func:`address_prefix`) to the ENI or its subnet (``level``), for egress ones from
    the ENI or subnet to the remote prefix. The ``limit`` links with the most bytes, then
    packets, then by source and target."""
    node = SANKEY_LEVELS[level]
    return f"""
SELECT source, target, link_bytes AS bytes, link_packets AS packets
FROM (
    WITH {address_prefix("if(flow_direction = 'ingress', srcaddr, dstaddr)")} AS remote
    SELECT
        if(flow_direction = 'ingress', remote, {node}) AS source,
        if(flow_direction = 'ingress', {node}, remote) AS target,
        sum(bytes) AS link_bytes,
        sum(packets) AS link_packets
    FROM {table.name}
    {_where(table, since, until, "packets > 0")}
    GROUP BY source, target
)
ORDER BY bytes DESC, packets DESC, source, target
LIMIT {int(limit)}
"""
