"""`flowlogs export` against real Kafka and chDB: every format carries exactly what is stored.

Traffic goes agent → Kafka → worker → chDB; the CLI exports it while the worker owns the
store (through its API), then once more after the worker stopped (the store opened directly).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from agents.synthetic import SyntheticConfig
from flowlogs.settings import Settings
from pipeline.export import TEXT_FIELDS
from schemas import topics
from tests.integration.helpers import wait_for
from tests.integration.test_spine import START_NS, _consume, _publish, _stored_totals

pytestmark = pytest.mark.integration

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas/generated/flow-record.schema.json").read_text())
PACKETS, BYTES = TEXT_FIELDS.index("packets"), TEXT_FIELDS.index("bytes")
ENI = TEXT_FIELDS.index("interface-id")


def export(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """`flowlogs export …` in a child process that finds the store (and its owner) by FLOWLOGS_HOME."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLOGS_")}
    environment.update(FLOWLOGS_HOME=str(settings.home), **env)
    out = subprocess.run(
        [sys.executable, "-m", "flowlogs.cli", "export", *args],
        env=environment, capture_output=True, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert b"Traceback" not in out.stderr
    return out


def text_totals(text: str, *, header: bool) -> Counter:
    lines = text.splitlines()
    if header:
        assert lines.pop(0).split(" ") == list(TEXT_FIELDS)
    totals: Counter = Counter()
    for line in lines:
        fields = line.split(" ")
        assert len(fields) == len(TEXT_FIELDS), line
        no_traffic = fields[PACKETS] == "-"  # a NODATA/SKIPDATA record
        totals[(fields[ENI], "packets")] += 0 if no_traffic else int(fields[PACKETS])
        totals[(fields[ENI], "bytes")] += 0 if no_traffic else int(fields[BYTES])
        totals[(fields[ENI], "records")] += 1
    return totals


def test_every_format_carries_the_stored_records(settings_factory, worker_factory, tmp_path: Path) -> None:
    settings = settings_factory()
    worker = worker_factory(settings)
    config = SyntheticConfig(enis=4, flows=3000, rate=20_000, duration=16, pace=False, start_ns=START_NS, seed=21)
    _, publisher = _publish(settings, config)
    wait_for(lambda: _stored_totals(worker)[0] >= publisher.stats.packets, 120, "all packets in the store")
    assert _stored_totals(worker) == (publisher.stats.packets, publisher.stats.bytes)

    _, rows = worker.query("SELECT interface_id, sum(packets), sum(bytes), count() FROM flows GROUP BY interface_id")
    stored: Counter = Counter()
    for eni, packets, nbytes, records in rows:
        stored.update({(eni, "packets"): packets, (eni, "bytes"): nbytes, (eni, "records"): records})
    record_count = sum(v for (_, what), v in stored.items() if what == "records")
    assert len(rows) == 4 and record_count > 5000
    start = datetime.fromtimestamp(START_NS // 10**9 - 60, UTC).isoformat()

    # Text formats to stdout, in small pages: windows of ~3000 records are read in slices.
    small_pages = {"FLOWLOGS_EXPORT__PAGE_ROWS": "700"}
    aws = export(settings, "--since", "2h", "--format", "aws", "--account-id", "123456789012", **small_pages)
    assert text_totals(aws.stdout.decode(), header=True) == stored
    assert f"exported {record_count:,} flow records".encode() in aws.stderr
    assert {line.split(" ")[1] for line in aws.stdout.decode().splitlines()[1:]} == {"123456789012"}
    tencent = export(settings, "--since", start, "--until", "10m", "--format", "tencent", **small_pages)
    assert text_totals(tencent.stdout.decode(), header=False) == stored

    one_eni = rows[0][0]
    only = export(settings, "--since", "2h", "--format", "aws", "--interface", one_eni)
    assert text_totals(only.stdout.decode(), header=True) == {k: v for k, v in stored.items() if k[0] == one_eni}

    # JSON lines: records of the schema, the very records the flows topic carried.
    jsonl_path = tmp_path / "flows.jsonl"
    export(settings, "--since", "2h", "--format", "jsonl", "--output", str(jsonl_path))
    lines = jsonl_path.read_bytes().splitlines()
    validator = jsonschema.Draft202012Validator(SCHEMA)
    totals: Counter = Counter()
    for line in lines:
        record = orjson.loads(line)
        validator.validate(record)
        eni = record["interface-id"]
        totals.update({(eni, "packets"): record["packets"], (eni, "bytes"): record["bytes"], (eni, "records"): 1})
    assert totals == stored
    published = _consume(settings, settings.topic(topics.FLOWS.suffix), len(lines))
    assert sorted(m.value() for m in published) == sorted(lines)

    # Parquet, typed as in the store.
    parquet_path = tmp_path / "flows.parquet"
    export(settings, "--since", "2h", "--format", "parquet", "--output", str(parquet_path))
    table = pq.read_table(parquet_path)
    assert str(table.schema.field("packets").type) == "uint64"
    assert str(table.schema.field("window_start").type).startswith("timestamp[")
    sums = table.group_by("interface_id").aggregate([("packets", "sum"), ("bytes", "sum"), ("packets", "count")])
    parquet_totals: Counter = Counter()
    columns = ("interface_id", "packets_sum", "bytes_sum", "packets_count")
    for eni, packets, nbytes, records in zip(*(sums.column(c).to_pylist() for c in columns)):
        parquet_totals.update({(eni, "packets"): packets, (eni, "bytes"): nbytes, (eni, "records"): records})
    assert parquet_totals == stored
    assert pc.all(pc.greater_equal(table.column("end"), table.column("start"))).as_py()

    # With the worker gone the export opens the store itself, and finds the same records.
    assert worker.stop() == 0
    direct = export(settings, "--since", "2h", "--format", "jsonl")
    assert sorted(direct.stdout.splitlines()) == sorted(lines)
