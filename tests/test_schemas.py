"""schemas/ is the single source of truth: generated files match it, the DDL runs in the real
engine, and records the pipeline builds satisfy the published JSON Schema."""

from pathlib import Path

import jsonschema
import numpy as np
import orjson

from agents.synthetic import SyntheticConfig, SyntheticTraffic
from flowlogs.settings import Settings
from pipeline.flow_table import aggregate_packets
from pipeline.json_render import json_records
from pipeline.records import FlowRecordBuilder
from pipeline.store import Store
from schemas import flow_record, generate


def test_generated_files_match_the_definitions() -> None:
    assert generate.drifted() == [], "run `flowlogs schemas --write` and commit schemas/generated"


def test_ddl_creates_exactly_the_defined_columns(tmp_path: Path) -> None:
    store = Store(Settings(home=tmp_path))
    store.start()
    try:
        store.migrate()  # a second run must be harmless
        _, rows = store.query(
            "SELECT name, type FROM system.columns WHERE database = 'flowlogs' AND table = 'flows' ORDER BY position"
        )
    finally:
        store.stop()
    assert [r[0] for r in rows] == list(flow_record.COLUMN_NAMES)
    assert [r[1] for r in rows] == [f.clickhouse_type for f in flow_record.FLOW_FIELDS]


def _sample_flows():
    cfg = SyntheticConfig(enis=3, flows=200, rate=5_000, duration=2, pace=False, start_ns=1_700_000_000 * 10**9)
    batch = next(SyntheticTraffic(cfg).batches())
    flows = aggregate_packets(batch.packets, batch.packets.eni.astype(np.uint32), 60 * 10**9)
    return list(batch.eni_ids), flows


def test_json_records_satisfy_the_published_schema() -> None:
    eni_ids, flows = _sample_flows()
    builder = FlowRecordBuilder(eni_ids, {eni_ids[0]: ("vpc-1", "subnet-1")}, 60 * 10**9)
    schema = orjson.loads((generate.GENERATED_DIR / "flow-record.schema.json").read_bytes())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    keys, values = json_records(builder.arrow(builder.columns(flows)))
    lines = list(zip(keys.to_pylist(), values.to_pylist()))
    assert len(lines) == flows.size
    for key, value in lines:
        record = orjson.loads(value)
        validator.validate(record)
        assert key == record["interface-id"].encode()
    placed = [orjson.loads(v) for k, v in lines if k == eni_ids[0].encode()]
    assert placed and all(r["vpc-id"] == "vpc-1" and r["subnet-id"] == "subnet-1" for r in placed)


def test_arrow_table_has_the_table_columns_in_order() -> None:
    eni_ids, flows = _sample_flows()
    builder = FlowRecordBuilder(eni_ids, {}, 60 * 10**9)
    table = builder.arrow(builder.columns(flows))
    assert table.column_names == list(flow_record.COLUMN_NAMES)
    assert table.num_rows == flows.size
    assert sum(table.column("packets").to_pylist()) == int(flows.packets.sum())
