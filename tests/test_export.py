"""pipeline/export.py without a store: time bounds, page plans, the writers' output."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pyarrow.parquet as pq
import pytest

from flowlogs.errors import ConfigError
from pipeline.export import (
    ExportRange,
    Page,
    export_records,
    open_writer,
    parse_time,
    plan_pages,
)
from schemas.flow_record import FIELD_NAMES

NOW = 1_700_000_000
SCHEMA = json.loads((Path(__file__).parents[1] / "schemas/generated/flow-record.schema.json").read_text())


def record(**changes: Any) -> list[Any]:
    """One row as the export selects it: FLOW_FIELDS order, plain ints and strings."""
    values: dict[str, Any] = {
        "version": 2, "flow-id": 2**64 - 5, "interface-id": "eni-a", "vpc-id": "vpc-1", "subnet-id": "-",
        "srcaddr": "10.0.0.1", "dstaddr": "2001:db8::7", "srcport": 40000, "dstport": 443, "protocol": 6,
        "packets": 10, "bytes": 5200, "start": NOW, "end": NOW + 4, "window-start": NOW, "action": "ACCEPT",
        "rule-layer": "sg", "rule-id": "web-https", "rule-set-version": 3, "log-status": "OK", "tcp-flags": 18, "flow-direction": "egress", "type": "IPv6",
    }  # fmt: skip
    values.update({k.replace("_", "-"): v for k, v in changes.items()})
    return [values[name] for name in FIELD_NAMES]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", NOW - 45),
        ("30m", NOW - 1800),
        ("1h", NOW - 3600),
        ("2d", NOW - 2 * 86400),
        ("1w", NOW - 7 * 86400),
        ("2023-11-14T22:13:20Z", NOW),
        ("2023-11-14T23:13:20+01:00", NOW),
        ("2023-11-14 22:13:20", NOW),  # no zone: UTC, like the store
        ("2023-11-14", int(datetime(2023, 11, 14, tzinfo=UTC).timestamp())),
        (str(NOW), NOW),  # Unix seconds, as a record's start and end print them
        (" 100000000 ", 100_000_000),
    ],
)
def test_since_accepts_ages_iso_times_and_unix_seconds(text: str, expected: int) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "1y", "-1h", "h", "2023-13-01", ""])
def test_a_bad_time_names_the_option_and_the_forms(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--until .* is not a time: give an age such as 30m"):
        parse_time(text, option="--until", now=NOW)


@pytest.mark.parametrize("text", ["30", "12345678"])
def test_a_short_bare_number_is_an_age_missing_its_unit(text: str) -> None:
    with pytest.raises(ConfigError, match=rf"--since '{text}' is a number without a unit: give an age such as {text}m"):
        parse_time(text, option="--since", now=NOW)


def test_until_must_follow_since() -> None:
    with pytest.raises(ConfigError, match="must be later than --since"):
        ExportRange(since=NOW, until=NOW)


def test_a_bad_format_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown export format 'csv': choose one of tencent, aws, jsonl, parquet"):
        open_writer("csv", io.BytesIO())


def test_pages_group_small_windows_and_slice_big_ones() -> None:
    counts = [(0, 40), (5, 50), (10, 30), (15, 250), (20, 10), (25, 100)]
    assert list(plan_pages(counts, 100)) == [
        Page(0, 5),  # 90 rows; adding 30 would pass 100
        Page(10, 10),
        Page(15, 15, 0, 100), Page(15, 15, 100, 100), Page(15, 15, 200, 100),
        Page(20, 20),
        Page(25, 25),
    ]  # fmt: skip
    assert list(plan_pages([], 100)) == []


def test_export_reads_page_by_page_in_window_order() -> None:
    queries: list[str] = []
    rows = {0: [record(window_start=0)] * 3, 5: [record(window_start=5)] * 2}

    def read(sql: str) -> tuple[list[str], list[list[Any]]]:
        queries.append(sql)
        if "count()" in sql:
            return ["w", "n"], [[0, 3], [5, 2]]
        window = 0 if "toDateTime(0)" in sql else 5
        return [], rows[window]

    out = io.BytesIO()
    seen: list[tuple[int, int]] = []
    summary = export_records(
        read, ExportRange(since=0, until=10, interface="eni-'a"), open_writer("jsonl", out),
        page_rows=3, progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert (summary.rows, summary.packets, summary.bytes) == (5, 50, 26000)
    assert seen == [(0, 5), (3, 5), (5, 5)]
    assert len(queries) == 3 and all("interface_id = 'eni-\\'a'" in q for q in queries)
    assert [orjson.loads(line)["window-start"] for line in out.getvalue().splitlines()] == [0, 0, 0, 5, 5]


def test_aws_lines_are_version_2_with_a_header_and_dashes_for_no_traffic() -> None:
    out = io.BytesIO()
    writer = open_writer("aws", out, account_id="123456789012")
    icmp = record(protocol=1, srcport=0, dstport=0x0800, srcaddr="10.0.0.1", dstaddr="10.0.0.2")
    nodata = record(
        packets=0, bytes=0, srcaddr="::", dstaddr="::", srcport=0, dstport=0, protocol=0, log_status="NODATA"
    )
    writer.write([record(), icmp, nodata])
    writer.close()
    header, tcp_line, icmp_line, nodata_line = out.getvalue().decode().splitlines()
    assert header.split(" ") == [
        "version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport",
        "protocol", "packets", "bytes", "start", "end", "action", "log-status",
    ]  # fmt: skip
    assert tcp_line == f"2 123456789012 eni-a 10.0.0.1 2001:db8::7 40000 443 6 10 5200 {NOW} {NOW + 4} ACCEPT OK"
    assert icmp_line.split(" ")[3:8] == ["10.0.0.1", "10.0.0.2", "0", "0", "1"]  # AWS: ICMP has ports 0 0
    assert nodata_line == f"2 123456789012 eni-a - - - - - - - {NOW} {NOW + 4} - NODATA"


def test_tencent_lines_have_no_header_and_ports_only_for_tcp_and_udp() -> None:
    out = io.BytesIO()
    writer = open_writer("tencent", out)
    writer.write([record(protocol=17), record(protocol=1, srcport=0, dstport=0x0800)])
    udp, icmp = out.getvalue().decode().splitlines()
    assert udp == f"2 - eni-a 10.0.0.1 2001:db8::7 40000 443 17 10 5200 {NOW} {NOW + 4} ACCEPT OK"
    assert icmp.split(" ")[5:8] == ["-", "-", "1"]


def test_jsonl_records_are_flow_records_of_the_schema() -> None:
    out = io.BytesIO()
    open_writer("jsonl", out).write([record(), record(log_status="SKIPDATA", packets=0, bytes=0)])
    lines = out.getvalue().splitlines()
    for line in lines:
        jsonschema.validate(orjson.loads(line), SCHEMA)
    assert list(orjson.loads(lines[0])) == list(FIELD_NAMES)
    assert orjson.loads(lines[0])["flow-id"] == 2**64 - 5


def test_parquet_columns_are_typed_as_in_the_store() -> None:
    out = io.BytesIO()
    writer = open_writer("parquet", out)
    writer.write([record(), record(interface_id="eni-b", packets=3)])
    writer.write([])
    writer.close()
    table = pq.read_table(io.BytesIO(out.getvalue()))
    types = {f.name: str(f.type) for f in table.schema}
    assert types["packets"] == "uint64" and types["srcport"] == "uint16" and types["protocol"] == "uint8"
    assert types["window_start"].startswith("timestamp[") and "UTC" in types["window_start"]
    assert types["interface_id"].startswith("dictionary<values=string")
    assert table.column("interface_id").to_pylist() == ["eni-a", "eni-b"]
    assert table.column("packets").to_pylist() == [10, 3]
    assert table.column("flow_id").to_pylist() == [2**64 - 5] * 2
    assert table.column("start").to_pylist()[0] == datetime.fromtimestamp(NOW, UTC)
