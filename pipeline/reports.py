"""Named reports: ``flowlogs report NAME`` and the worker's HTTP API run them by name.

:data:`REPORTS` maps each name to a :class:`ReportSpec`: a one-line description, its
parameters (:class:`ReportParam`, declarative, so the CLI flags and the API's fields and its
OpenAPI document are generated from them) and the function that runs it. Parameters arrive
as text and are checked here; the SQL itself is in :mod:`pipeline.report_sql`, which also
holds the console's :func:`top_talkers`, :func:`totals` and :func:`traffic_per_eni`
(re-exported here for their callers).

Every report reads flow windows that start in ``[since, until)`` (default: the last hour).
Reports per time step widen ``since`` down and narrow ``until`` down to whole steps, so
each step they show is whole; the :class:`ReportResult` says which range and table it read.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Mapping, Sequence
import dataclasses
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from flowlogs.errors import ConfigError
from flowlogs.settings import Settings
from pipeline import report_sql
from pipeline.geoip import CountryLookup
from pipeline.query import Reader
from pipeline.report_sql import (
    DIMENSIONS,
    METRICS,
    TALKER_COLUMNS,
    address_text,
    top_talkers,
    totals,
    traffic_per_eni,
)
from pipeline.table_choice import RAW, Table, choose_table, retention_days
from schemas import addresses, saved
from schemas.flow_record import DIRECTIONS, sql_string
from schemas.inventory import load_inventory

__all__ = [
    "REPORTS",
    "ReportParam",
    "ReportResult",
    "ReportSpec",
    "address_text",
    "report_spec",
    "run_report",
    "top_talkers",
    "totals",
    "traffic_per_eni",
]

ParamKind = Literal["time", "int", "seconds", "choice", "list", "text"]
ID_PATTERN = r"^[A-Za-z0-9._:-]+$"  # ENI / VPC / subnet ids as reports accept them

_SECONDS = re.compile(r"(\d+)\s*([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_HOUR = 3600
_WEEK = 7 * 24 * _HOUR


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ReportParam:
    """One parameter of a report: the CLI flag ``--NAME``, the API field ``NAME``.

    Values arrive as text and :meth:`parse` turns them into a Python value, by ``kind``:

    * ``time``: an age (``30m``, ``24h``, ``4w``) or an ISO time, UTC without a zone → Unix seconds;
    * ``int`` → int; ``seconds``: ``90``, ``5m``, ``1h`` → int seconds; both at least ``minimum``;
    * ``choice``: one of ``choices``; ``list``: a comma-separated list of distinct ``choices`` → tuple;
    * ``text``: a string that wholly matches ``pattern``.
    """

    name: str
    kind: ParamKind
    default: str | None  # as a user would write it; None: unset, and ``help`` says what that means
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    pattern: str | None = None

    def parse(self, text: str, now: int) -> Any:
        """The value of ``text``; ConfigError naming the parameter and what it accepts."""
        value = text.strip()
        if self.kind == "time":
            # Imported here: pipeline.export imports this module.
            from pipeline.export import parse_time

            return parse_time(value, option=self.name, now=now)
        if self.kind in ("int", "seconds"):
            return self._number(value)
        if self.kind == "choice":
            if value not in self.choices:
                raise ConfigError(f"{self.name} {text!r} is not one of {', '.join(self.choices)}")
            return value
        if self.kind == "list":
            items = tuple(item.strip() for item in value.split(","))
            unknown = [item for item in items if item not in self.choices]
            if unknown or not value:
                raise ConfigError(
                    f"{self.name}: {', '.join(map(repr, unknown)) or 'nothing'} is not in"
                    f" {', '.join(self.choices)} (give a comma-separated list)"
                )
            if len(set(items)) != len(items):
                raise ConfigError(f"{self.name} {text!r} names a value twice")
            return items
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise ConfigError(f"{self.name} {text!r} is not valid: it must match {self.pattern}")
        return value

    def _number(self, value: str) -> int:
        matched = _SECONDS.fullmatch(value) if self.kind == "seconds" else re.fullmatch(r"(\d+)()", value)
        if matched is None:
            example = "a number of seconds or 90s, 5m, 1h, 1d" if self.kind == "seconds" else "a whole number"
            raise ConfigError(f"{self.name} {value!r} is not {example}")
        number = int(matched[1]) * _UNIT_SECONDS[matched[2]]
        if self.minimum is not None and number < self.minimum:
            raise ConfigError(f"{self.name} must be at least {self.minimum}, not {number}")
        return number

    def as_dict(self) -> dict[str, Any]:
        """The parameter as plain data (for API documents)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ReportResult:
    """What a report found: ``columns`` and ``rows`` (plain numbers and text), the table it
    read and the range ``[since, until)`` it covered (Unix seconds)."""

    columns: list[str]
    rows: list[list[Any]]
    table: str
    since: int
    until: int

    def row_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]

    def describe(self) -> str:
        """One line for a title: the range and the table read."""
        return f"{_iso(self.since)} – {_iso(self.until)}, from {self.table}"


ReportFunction = Callable[[Reader, Mapping[str, Any], Settings, int], ReportResult]


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """A named report: what it shows, what it takes, how it runs (``run(read, values,
    settings, now)`` with the parsed values of every parameter)."""

    name: str
    description: str
    params: tuple[ReportParam, ...]
    run: ReportFunction

    def parse(self, given: Mapping[str, str], now: int) -> dict[str, Any]:
        """Values of every parameter: parsed from ``given``, else from the default (None if
        it has none). ConfigError for a parameter the report does not take."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigError(
                f"report {self.name} has no parameter {', '.join(unknown)}; it takes {', '.join(known)}"
            )
        values: dict[str, Any] = {}
        for param in self.params:
            text = given.get(param.name, param.default)
            values[param.name] = None if text is None else param.parse(text, now)
        return values


def run_report(
    read: Reader, name: str, params: Mapping[str, str], settings: Settings, *, now: int | None = None
) -> ReportResult:
    """Run the report ``name`` with ``params`` (text, as given on a command line or in a
    request) through ``read``. ``now`` (Unix seconds, default the clock) is where ages and
    the default ``until`` count from.

    Raises ConfigError, listing what is valid, for an unknown report, an unknown parameter
    or a bad value; StoreError when the store fails.
    """
    spec = report_spec(name)
    current = int(time.time()) if now is None else int(now)
    return spec.run(read, spec.parse(params, current), settings, current)


def report_spec(name: str) -> ReportSpec:
    """The report named ``name``; ConfigError listing the reports when there is none."""
    spec = REPORTS.get(name)
    if spec is None:
        raise ConfigError(f"no report named {name!r}; the reports are {', '.join(REPORTS)}")
    return spec


# --- parameters ------------------------------------------------------------------------------

SINCE = ReportParam(
    "since", "time", "1h", "flow windows starting at or after: an age (30m, 24h, 4w) or an ISO time (UTC if no zone)"
)
UNTIL = ReportParam("until", "time", None, "flow windows starting before this (same forms; default: now)")
LIMIT = ReportParam("limit", "int", None, "rows to show (default: the report.top setting)", minimum=1)
STEP = ReportParam("step", "seconds", "60", "time step: seconds or 5m, 1h… (at least 60)", minimum=60)
INTERFACE = ReportParam("interface", "text", None, "only this ENI (default: every ENI)", pattern=ID_PATTERN)
LIVE = "live"
SOURCE = ReportParam(
    "source", "text", LIVE, "live flows, or a snapshot's or rewind's flows by its name", pattern=saved.NAME_PATTERN.pattern
)


# --- shared steps ---------------------------------------------------------------------------


def _time_range(values: Mapping[str, Any], now: int) -> tuple[int, int]:
    since = values["since"]
    until = values["until"] if values["until"] is not None else now
    if until <= since:
        raise ConfigError(f"until ({_iso(until)}) must be later than since ({_iso(since)})")
    return since, until


def _whole_steps(since: int, until: int, step: int) -> tuple[int, int]:
    """``[since, until)`` widened to the start of its first step and cut to the end of its
    last whole one: a partial step would show as a dip in a rate."""
    first, end = since - since % step, until - until % step
    if end <= first:
        raise ConfigError(f"{_iso(since)} – {_iso(until)} holds no whole {step} s step; widen the range")
    return first, end


def _choose(
    settings: Settings, values: Mapping[str, Any], since: int, until: int, step: int | None, needs: tuple[str, ...], now: int
) -> Table:
    if values["source"] != LIVE:  # a result set: its own flow records, raw (result sets have no rollups)
        rows = f"(SELECT * FROM {saved.FLOWS_TABLE} WHERE result_set = {sql_string(values['source'])})"
        return dataclasses.replace(RAW, name=rows)
    return choose_table(since, until, step, needs, retention=retention_days(settings.store), now=now)


def _limit(values: Mapping[str, Any], settings: Settings) -> int:
    return int(values["limit"]) if values["limit"] is not None else settings.report.top


def _read(read: Reader, sql: str, columns: Sequence[str], table: Table, since: int, until: int) -> ReportResult:
    named, rows = read(sql)
    # chDB names no columns when a result is empty; the report knows its own.
    return ReportResult(list(named) or list(columns), [list(r) for r in rows], table.name, since, until)


# --- the reports ----------------------------------------------------------------------------


def _top_talkers(read: Reader, values: Mapping[str, Any], settings: Settings, now: int) -> ReportResult:
    since, until = _time_range(values, now)
    by = tuple(values["by"])
    table = _choose(settings, values, since, until, None, by, now)
    sql = report_sql.talkers_sql(table, by, values["metric"], _limit(values, settings), since, until)
    return _read(read, sql, report_sql.talkers_columns(by), table, since, until)


def _bandwidth(read: Reader, values: Mapping[str, Any], settings: Settings, now: int) -> ReportResult:
    step = values["step"]
    since, until = _whole_steps(*_time_range(values, now), step)
    table = _choose(settings, values, since, until, step, ("interface_id",), now)
    sql = report_sql.bandwidth_sql(table, step, since, until, values["interface"])
    return _read(read, sql, report_sql.BANDWIDTH_COLUMNS, table, since, until)


def _subnet_broadcasts(settings: Settings) -> dict[str, ipaddress.IPv4Address]:
    """Subnet id → its directed broadcast address, from the inventory (none without one)."""
    if settings.worker.inventory is None:
        return {}
    found = {}
    for subnet in load_inventory(settings.worker.inventory).subnets:
        address = addresses.directed_broadcast(str(subnet.cidr)) if subnet.cidr is not None else None
        if address is not None:
            found[subnet.id] = address
    return found


def _storm_sources(read: Reader, values: Mapping[str, Any], settings: Settings, now: int) -> ReportResult:
    since, until = _time_range(values, now)
    table = _choose(settings, values, since, until, None, ("srcaddr", "dstaddr", "interface_id", "subnet_id"), now)
    sql = report_sql.storm_sources_sql(table, since, until, _limit(values, settings), _subnet_broadcasts(settings))
    return _read(read, sql, report_sql.STORM_SOURCE_COLUMNS, table, since, until)


def _overuse(read: Reader, values: Mapping[str, Any], settings: Settings, now: int) -> ReportResult:
    step = values["step"]
    since, until = _whole_steps(*_time_range(values, now), step)
    table = _choose(settings, values, since, until, step, ("interface_id", "vpc_id", "subnet_id"), now)
    sql = report_sql.eni_peaks_sql(table, step, since, until)
    peaks = _read(read, sql, report_sql.ENI_PEAK_COLUMNS, table, since, until)
    ranked = []
    for row, eni in zip(peaks.rows, peaks.row_dicts(), strict=True):
        limit_bps = settings.detect.for_scope(eni["vpc_id"], eni["subnet_id"], eni["interface_id"]).bandwidth.limit_bps
        peak, p95 = float(eni["peak_bps"]), float(eni["p95_bps"])
        over_limit = peak / limit_bps if limit_bps is not None else None
        over_p95 = peak / p95 if p95 > 0 else None
        ratios = [r for r in (over_limit, over_p95) if r is not None]
        rank = (-max(ratios) if ratios else 0.0, -peak, eni["interface_id"])
        ranked.append((rank, [*row, limit_bps, over_limit, over_p95]))
    ranked.sort(key=lambda item: item[0])
    return ReportResult(
        [*peaks.columns, "limit_bps", "peak_over_limit", "peak_over_p95"],
        [row for _, row in ranked[: _limit(values, settings)]],
        table.name,
        since,
        until,
    )


def _rejects_by_rule(read: Reader, values: Mapping[str, Any], settings: Settings, now: int) -> ReportResult:
    since, until = _time_range(values, now)
    table = _choose(settings, values, since, until, None, ("action", "rule_layer", "rule_id", "srcaddr"), now)
    sql = report_sql.rejects_by_rule_sql(table, since, until, _limit(values, settings))
    return _read(read, sql, report_sql.REJECT_COLUMNS, table, since, until)


def _access_regions(read: Reader, values: Mapping[str, Any], settings: Settings, now: int) -> ReportResult:
    since, until = _time_range(values, now)
    direction = None if values["direction"] == "both" else values["direction"]
    table = _choose(settings, values, since, until, None, ("flow_direction", "srcaddr", "dstaddr"), now)
    _, rows = read(report_sql.remote_addresses_sql(table, since, until, direction))
    columns = ["country", "bytes", "packets", "records", "remotes"]
    if not rows:
        return ReportResult(columns, [], table.name, since, until)
    remote_addresses = np.frombuffer(bytes.fromhex("".join(r[0] for r in rows)), np.uint8).reshape(-1, 16)
    lookup = CountryLookup.from_settings(settings.report.geoip_mmdb)
    try:
        countries = lookup.countries(remote_addresses)
    finally:
        lookup.close()
    names, of_row = np.unique(countries, return_inverse=True)
    of_row = of_row.reshape(-1)
    sums = np.zeros((len(names), 3), np.uint64)
    np.add.at(sums, of_row, np.array([r[1:4] for r in rows], np.uint64))
    remote_counts = np.bincount(of_row, minlength=len(names))
    per_country = [
        (str(country), int(total_bytes), int(total_packets), int(total_records), int(remotes))
        for country, (total_bytes, total_packets, total_records), remotes in zip(names, sums, remote_counts)
    ]
    per_country.sort(key=lambda r: (-r[1], -r[2], r[0]))  # most bytes, then packets, first
    return ReportResult(columns, [list(r) for r in per_country], table.name, since, until)


def _hour_of_week(seconds: int) -> int:
    """0 for Monday 00:00–01:00 UTC … 167 (ClickHouse's ``(toDayOfWeek - 1) * 24 + toHour``)."""
    return (seconds // 86_400 + 3) % 7 * 24 + seconds % 86_400 // _HOUR  # 1970-01-01 was a Thursday


def _baselines(read: Reader, values: Mapping[str, Any], settings: Settings, now: int) -> ReportResult:
    since, until = _whole_steps(*_time_range(values, now), _HOUR)
    latest = until - _HOUR  # the latest complete hour: judged against the hours before it
    if latest <= since:
        raise ConfigError("baselines need more than one hour: give an earlier since (default 4w)")
    table = _choose(settings, values, since, until, _HOUR, ("interface_id",), now)
    if values["show"] == "baseline":
        weeks = [0] * report_sql.HOURS_PER_WEEK
        for hour in range(since, latest, _HOUR):
            weeks[_hour_of_week(hour)] += 1
        sql = report_sql.hour_of_week_baselines_sql(table, since, latest, weeks)
        return _read(read, sql, report_sql.BASELINE_COLUMNS, table, since, latest)
    hour_of_week = _hour_of_week(latest)
    weeks_before = (latest - since) // _WEEK  # earlier hours with the latest one's hour of the week
    sql = report_sql.hour_deviation_sql(table, since, latest, hour_of_week, weeks_before)
    return _read(read, sql, report_sql.DEVIATION_COLUMNS, table, since, until)


def _traffic(read: Reader, values: Mapping[str, Any], settings: Settings, now: int) -> ReportResult:
    step = values["step"]
    since, until = _whole_steps(*_time_range(values, now), step)
    table = _choose(settings, values, since, until, step, (values["by"],), now)
    sql = report_sql.traffic_sql(table, values["by"], values["metric"], values["top"], step, since, until)
    return _read(read, sql, report_sql.TRAFFIC_COLUMNS, table, since, until)


def _sankey(read: Reader, values: Mapping[str, Any], settings: Settings, now: int) -> ReportResult:
    since, until = _time_range(values, now)
    needs = ("flow_direction", "srcaddr", "dstaddr", report_sql.SANKEY_LEVELS[values["level"]])
    table = _choose(settings, values, since, until, None, needs, now)
    sql = report_sql.sankey_sql(table, values["level"], since, until, values["limit"])
    return _read(read, sql, report_sql.SANKEY_COLUMNS, table, since, until)


REPORTS: dict[str, ReportSpec] = {
    spec.name: spec
    for spec in (
        ReportSpec(
            "top-talkers",
            "the biggest groups of flows by bytes, packets or records, over any flow columns",
            (
                SINCE,
                UNTIL,
                ReportParam(
                    "by", "list", ",".join(TALKER_COLUMNS), "flow columns to group by, comma-separated",
                    choices=DIMENSIONS,
                ),
                ReportParam("metric", "choice", "bytes", "what to rank by (records: flow records)", choices=METRICS),
                LIMIT,
            ),
            _top_talkers,
        ),
        ReportSpec(
            "bandwidth",
            "bits and packets per second per ENI per time step",
            (SINCE, UNTIL, STEP, INTERFACE),
            _bandwidth,
        ),
        ReportSpec(
            "storm-sources",
            "sources of broadcast and multicast traffic per ENI (subnet broadcasts from worker.inventory)",
            (SINCE, UNTIL, LIMIT),
            _storm_sources,
        ),
        ReportSpec(
            "overuse",
            "ENIs by peak bits/s over their limit (detect.bandwidth.limit_bps, per scope) or over their own p95",
            (SINCE, UNTIL, STEP, LIMIT),
            _overuse,
        ),
        ReportSpec(
            "rejects-by-rule",
            "REJECT flows per deciding rule, with their sources",
            (SINCE, UNTIL, LIMIT),
            _rejects_by_rule,
        ),
        ReportSpec(
            "access-regions",
            "traffic per country of the remote address (report.geoip_mmdb, else the bundled DB-IP data)",
            (
                SINCE,
                UNTIL,
                ReportParam(
                    "direction", "choice", "both", "remote sources (ingress), destinations (egress) or both",
                    choices=("both", *DIRECTIONS),
                ),
            ),
            _access_regions,
        ),
        ReportSpec(
            "baselines",
            "per ENI the latest complete hour's bits/s against the p95 of that hour of the week",
            (
                ReportParam("since", "time", "4w", "weeks the baselines are taken over: an age or an ISO time"),
                UNTIL,
                ReportParam(
                    "show", "choice", "deviation",
                    "deviation: the latest hour per ENI; baseline: the p95 per ENI and hour of the week",
                    choices=("deviation", "baseline"),
                ),
            ),
            _baselines,
        ),
        ReportSpec(
            "traffic",
            "bits or packets per second per time step, one series per value of a flow column (the top ones, then other)",
            (
                SINCE,
                UNTIL,
                STEP,
                ReportParam(
                    "by", "choice", "interface_id", "the flow column whose values are the series",
                    choices=report_sql.TRAFFIC_DIMENSIONS,
                ),
                ReportParam(
                    "metric", "choice", "bps", "bits (bps) or packets (pps) per second", choices=report_sql.TRAFFIC_METRICS
                ),
                ReportParam(
                    "top", "int", "10", "series: the values with the most bytes (bps) or packets (pps), the rest as other",
                    minimum=1,
                ),
            ),
            _traffic,
        ),
        ReportSpec(
            "sankey",
            "bytes from remote /24 or /48 to ENI or subnet (ingress) and from ENI or subnet to remote prefix (egress)",
            (
                SINCE,
                UNTIL,
                ReportParam(
                    "level", "choice", "eni", "nodes inside: ENIs or their subnets", choices=tuple(report_sql.SANKEY_LEVELS)
                ),
                ReportParam("limit", "int", "50", "links to show, the most bytes first", minimum=1),
            ),
            _sankey,
        ),
    )
}
# Every report reads live flows or a result set (schemas/saved.py): --source NAME.
REPORTS = {name: dataclasses.replace(spec, params=(*spec.params, SOURCE)) for name, spec in REPORTS.items()}
