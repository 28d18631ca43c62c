"""Export stored flow records: Tencent Cloud / AWS flow-log text, JSON lines, Parquet.

Reads go through :func:`pipeline.query.open_reader` (the worker's API while a worker owns
the embedded chDB, else the store itself) in pages planned from per-window row counts:
runs of whole windows up to ``export.page_rows`` rows, and a window that alone holds more
in slices of its own, each the next ``export.page_rows`` rows after the last one read (in
(interface-id, flow-id) order: a slice costs the same however far into the window it is,
where an OFFSET costs more with every slice). Neither this process nor the worker ever holds
more than one page. Records are written in (window-start, interface-id, flow-id) order.

A window is exported when its ``window-start`` lies in [since, until). The export reads
what is stored while it runs: rows of a window the worker is still writing may be missed,
so stay behind the worker (``--until``) for complete windows.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from flowlogs.errors import ConfigError
from flowlogs.settings import Settings
from pipeline.query import Reader, open_reader
from pipeline.records import arrow_type
from pipeline.reports import address_text
from schemas.flow_record import FIELD_NAMES, FLOW_FIELDS, FLOWS_TABLE, FlowField, sql_string
from schemas import saved

FORMATS = ("tencent", "aws", "jsonl", "parquet")

# --- what to export --------------------------------------------------------------------

_AGE = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_UNIX_SECONDS_DIGITS = 9  # 100000000 is 1973-03-03: anything shorter is an age missing its unit


def parse_time(text: str, *, option: str = "--since", now: float | None = None) -> int:
    """Unix seconds of an export bound.

    An age before ``now`` (``45s``, ``30m``, ``1h``, ``2d``, ``1w``), an ISO 8601 time
    (``2024-05-01T12:00:00Z``, ``2024-05-01 12:00``, ``2024-05-01``; a time without a zone
    is UTC, like every time in the store), or Unix seconds as flow records print them
    (``start``, ``end``: ``1714564800``, at least 9 digits — a shorter bare number is
    refused as an age without its unit).
    """
    value = text.strip()
    age = _AGE.fullmatch(value)
    if age:
        return int(time.time() if now is None else now) - int(age[1]) * _UNIT_SECONDS[age[2]]
    if value.isdigit():
        if len(value) < _UNIX_SECONDS_DIGITS:
            raise ConfigError(
                f"{option} {text!r} is a number without a unit: give an age such as {value}m or {value}h,"
                f" or Unix seconds ({_UNIX_SECONDS_DIGITS} digits or more, e.g. 1714564800)"
            )
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not a time: give an age such as 30m, 1h or 2d,"
            " or an ISO time such as 2024-05-01T12:00:00Z (no zone = UTC)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportRange:
    """Windows starting in [since, until), Unix seconds; optionally one ENI; live flows or
    the flows of a result set (a rewind or a snapshot, ``schemas/saved.py``)."""

    since: int
    until: int
    interface: str | None = None
    result_set: str | None = None

    @property
    def table(self) -> str:
        return FLOWS_TABLE if self.result_set is None else saved.FLOWS_TABLE

    def __post_init__(self) -> None:
        if self.until <= self.since:
            raise ConfigError(f"--until ({_iso(self.until)}) must be later than --since ({_iso(self.since)})")

    def where(self, first: int | None = None, last: int | None = None) -> str:
        """The WHERE condition; ``first``/``last`` narrow it to the windows of one page."""
        if first is None or last is None:
            parts = [f"window_start >= toDateTime({self.since})", f"window_start < toDateTime({self.until})"]
        else:
            parts = [f"window_start BETWEEN toDateTime({first}) AND toDateTime({last})"]
        if self.interface is not None:
            parts.append(f"interface_id = {sql_string(self.interface)}")
        if self.result_set is not None:
            parts.append(f"result_set = {sql_string(self.result_set)}")
        return " AND ".join(parts)


# --- reading in pages ------------------------------------------------------------------


def _select_expression(f: FlowField) -> str:
    # Plain ints and strings, so rows read the same through the worker's JSON API and directly.
    column, kind = f"`{f.column}`", f.clickhouse_type
    if kind.startswith("DateTime"):
        return f"toUnixTimestamp({column})"
    if kind == "IPv6":
        return address_text(column)
    if kind.startswith("Enum"):
        return f"toString({column})"
    return column


_SELECT = ", ".join(_select_expression(f) for f in FLOW_FIELDS)


@dataclass(frozen=True, slots=True)
class Page:
    """Windows ``first``..``last`` (window-start, Unix seconds), or one slice of one window."""

    first: int
    last: int
    offset: int = 0
    limit: int | None = None


def plan_pages(window_rows: Iterable[tuple[int, int]], page_rows: int) -> Iterator[Page]:
    """Pages of at most ``page_rows`` rows, in window order, from (window-start, rows) counts."""
    first: int | None = None
    last = rows = 0
    for window, count in window_rows:
        if first is not None and rows + count > page_rows:
            yield Page(first, last)
            first = None
        if count > page_rows:
            for offset in range(0, count, page_rows):
                yield Page(window, window, offset, page_rows)
            continue
        if first is None:
            first, rows = window, 0
        last, rows = window, rows + count
    if first is not None:
        yield Page(first, last)


def window_rows_sql(scope: ExportRange, condition: str | None = None) -> str:
    """(window-start, rows) of each window of ``scope``, counting the rows ``condition`` keeps."""
    where = scope.where() + (f" AND {condition}" if condition else "")
    return (
        f"SELECT toUnixTimestamp(window_start), count() FROM {scope.table} WHERE {where}"
        " GROUP BY window_start ORDER BY window_start"
    )


def page_sql(scope: ExportRange, page: Page, after: tuple[str, int] | None = None) -> str:
    """The page's records; for a slice of a window, those after ``after`` (the (interface-id,
    flow-id) of the previous slice's last record; None for the first slice)."""
    query = f"SELECT {_SELECT} FROM {scope.table} WHERE {scope.where(page.first, page.last)}"
    if page.limit is None:
        return query + " ORDER BY window_start, interface_id, flow_id"
    if after is not None:
        query += f" AND (interface_id, flow_id) > ({sql_string(after[0])}, {int(after[1])})"
    return query + f" ORDER BY interface_id, flow_id LIMIT {page.limit}"


# --- writing ---------------------------------------------------------------------------

_INDEX = {name: i for i, name in enumerate(FIELD_NAMES)}


class RecordWriter(Protocol):
    """Writes pages of rows (values in FLOW_FIELDS order, as :func:`page_sql` selects them)."""

    def write(self, rows: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None: ...


# The default flow-log record of both clouds. AWS VPC Flow Logs, default format = the
# version 2 fields (https://docs.aws.amazon.com/vpc/latest/userguide/flow-log-records.html).
# Tencent Cloud Flow Logs lists the same fields in the same order for ENI flow logs
# (https://intl.cloud.tencent.com/document/product/614/48462,
#  https://www.tencentcloud.com/document/product/682/18933).
TEXT_FIELDS = (
    "version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport",
    "protocol", "packets", "bytes", "start", "end", "action", "log-status",
)  # fmt: skip
_ACCOUNT = "account-id"  # not a field of ours: a setting
assert set(TEXT_FIELDS) - {_ACCOUNT} <= set(FIELD_NAMES), "text flow-log fields must come from schemas/"

# A NODATA/SKIPDATA record of no traffic: both clouds write "-" for what it cannot have.
_NO_TRAFFIC = ("srcaddr", "dstaddr", "srcport", "dstport", "protocol", "packets", "bytes", "action")
_ICMP = (1, 58)  # our dstport holds ICMP/ICMPv6 type << 8 | code
_TCP_UDP = (6, 17)


@dataclass(frozen=True, slots=True)
class TextFormat:
    version: str  # the layout's version in that cloud, not our RECORD_VERSION
    header: bool  # AWS starts each S3 log file with a line of the field names
    has_ports: Callable[[int], bool]
    no_port: str  # what a protocol without ports shows in srcport/dstport


TEXT_FORMATS = {
    # AWS writes 0 0 as the ports of ICMP traffic.
    "aws": TextFormat("2", True, lambda protocol: protocol not in _ICMP, "0"),
    # Tencent: ports "take effect only for UDP/TCP protocols and will be displayed as '-'
    # for other protocols"; packets and bytes are "-" when log-status is NODATA.
    "tencent": TextFormat("2", False, lambda protocol: protocol in _TCP_UDP, "-"),
}


class TextWriter:
    """Space-separated flow-log lines, ``-`` for what a record does not have."""

    def __init__(self, out: BinaryIO, layout: TextFormat, account_id: str | None) -> None:
        self._out = out
        self._layout = layout
        self._account = account_id or "-"
        self._fields = [(name, _INDEX.get(name)) for name in TEXT_FIELDS]
        if layout.header:
            out.write((" ".join(TEXT_FIELDS) + "\n").encode())

    def line(self, row: Sequence[Any]) -> str:
        values = {name: "-" if i is None or row[i] in (None, "") else str(row[i]) for name, i in self._fields}
        values["version"], values[_ACCOUNT] = self._layout.version, self._account
        if not self._layout.has_ports(row[_INDEX["protocol"]]):
            values["srcport"] = values["dstport"] = self._layout.no_port
        if row[_INDEX["packets"]] == 0:
            values.update(dict.fromkeys(_NO_TRAFFIC, "-"))
        return " ".join(values[name] for name in TEXT_FIELDS)

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self._out.write("".join(self.line(row) + "\n" for row in rows).encode())

    def close(self) -> None:
        self._out.flush()


class JsonLinesWriter:
    """One JSON object per line, named and ordered as the flows topic's records (schemas/)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self._out.write(b"".join(orjson.dumps(dict(zip(FIELD_NAMES, row))) + b"\n" for row in rows))

    def close(self) -> None:
        self._out.flush()


def parquet_type(f: FlowField) -> pa.DataType:
    """The store's types: exact integer widths, UTC timestamps, dictionary-encoded enums and
    LowCardinality strings. Addresses are text (Parquet has no IP type), IPv4 dotted."""
    if f.clickhouse_type.startswith("DateTime"):
        return pa.timestamp("s", tz="UTC")
    if f.clickhouse_type == "IPv6":
        return pa.string()
    return arrow_type(f)


PARQUET_SCHEMA = pa.schema([pa.field(f.column, parquet_type(f), nullable=False) for f in FLOW_FIELDS])


class ParquetFileWriter:
    """One row group per page, columns named as in the store."""

    def __init__(self, out: BinaryIO) -> None:
        self._writer = pq.ParquetWriter(out, PARQUET_SCHEMA, compression="zstd")

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        columns = list(zip(*rows))
        arrays = []
        for field, values in zip(PARQUET_SCHEMA, columns):
            if pa.types.is_dictionary(field.type):
                arrays.append(pa.array(values, pa.string()).dictionary_encode())
            else:
                arrays.append(pa.array(values, field.type))
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=PARQUET_SCHEMA))

    def close(self) -> None:
        self._writer.close()


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")


def open_writer(fmt: str, out: BinaryIO, *, account_id: str | None = None) -> RecordWriter:
    check_format(fmt)
    if fmt == "jsonl":
        return JsonLinesWriter(out)
    if fmt == "parquet":
        return ParquetFileWriter(out)
    return TextWriter(out, TEXT_FORMATS[fmt], account_id)


# --- the export ------------------------------------------------------------------------


@dataclass(slots=True)
class ExportSummary:
    rows: int = 0
    packets: int = 0
    bytes: int = 0

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        self.rows += len(rows)
        self.packets += sum(int(r[_INDEX["packets"]]) for r in rows)
        self.bytes += sum(int(r[_INDEX["bytes"]]) for r in rows)


Progress = Callable[[int, int], None]  # (rows written, rows expected)


def export_records(
    read: Reader, scope: ExportRange, writer: RecordWriter, *, page_rows: int, progress: Progress | None = None
) -> ExportSummary:
    """Read the records of ``scope`` page by page and hand each page to ``writer``."""
    _, counts = read(window_rows_sql(scope))
    expected = sum(int(count) for _, count in counts)
    summary = ExportSummary()
    if progress:
        progress(0, expected)
    after: tuple[str, int] | None = None  # where the slices of a big window have got to
    for page in plan_pages(((int(w), int(c)) for w, c in counts), page_rows):
        _, rows = read(page_sql(scope, page, after if page.offset else None))
        if page.limit is not None and rows:
            after = (str(rows[-1][_INDEX["interface-id"]]), int(rows[-1][_INDEX["flow-id"]]))
        writer.write(rows)
        summary.add(rows)
        if progress:
            progress(summary.rows, max(expected, summary.rows))
    return summary


@contextmanager
def _output(path: Path | None) -> Iterator[BinaryIO]:
    """stdout, or ``path`` written as ``path.partial`` and renamed once complete."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as fh:
            yield fh
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def export_flows(
    settings: Settings, fmt: str, scope: ExportRange, output: Path | None = None, *, progress: Progress | None = None
) -> ExportSummary:
    """Write the stored records of ``scope`` as ``fmt`` to ``output`` (stdout when None)."""
    check_format(fmt)
    if fmt == "parquet" and output is None and sys.stdout.isatty():
        raise ConfigError("Parquet is binary: give --output FILE or redirect stdout")
    if output is not None and not output.parent.is_dir():
        raise ConfigError(f"--output {output}: directory {output.parent} does not exist")
    with open_reader(settings) as read, _output(output) as out:
        writer = open_writer(fmt, out, account_id=settings.export.account_id)
        summary = export_records(read, scope, writer, page_rows=settings.export.page_rows, progress=progress)
        writer.close()
    return summary
