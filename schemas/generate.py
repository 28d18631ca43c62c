"""Render the checked-in reference files under ``schemas/generated/`` from the definitions.

``flowlogs schemas --write`` rewrites them; ``flowlogs schemas --check`` (and a test) fail
when the files on disk drift from what the definitions produce.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from schemas import alerts, cluster, flow_record, frame, rollups, topics, window_closes

GENERATED_DIR = Path(__file__).with_name("generated")


def _frame_markdown() -> str:
    out = [
        f"# Packet-metadata frame, version {frame.VERSION}",
        "",
        "Generated from `schemas/frame.py` — do not edit. All integers are little-endian.",
        "One Kafka message on the frames topic is one frame. The Kafka key is the ENI id.",
        "",
        "```",
        f"header ({frame.HEADER_SIZE} bytes) | ENI table (eni_count x {frame.ENI_ID_SIZE} bytes)"
        " | columns (packet_count x width each, in the order below)",
        "```",
        "",
        "## Header",
        "",
        "| offset | size | type | field | meaning |",
        "|---:|---:|---|---|---|",
    ]
    for f in frame.HEADER_FIELDS:
        dt = frame.HEADER_DTYPE.fields[f.name]
        out.append(f"| {dt[1]} | {dt[0].itemsize} | `{f.dtype}` | `{f.name}` | {f.doc} |")
    out += [
        "",
        "## ENI table",
        "",
        f"`eni_count` entries of {frame.ENI_ID_SIZE} bytes: the ENI id in ASCII, NUL-padded.",
        "The `eni` column indexes this table.",
        "",
        "## Columns",
        "",
        f"Column *k* starts at `{frame.HEADER_SIZE} + eni_count*{frame.ENI_ID_SIZE}"
        " + packet_count * (sum of the widths of columns before k)`.",
        "Widest first, so each column is naturally aligned.",
        "",
        "| # | width | type | column | meaning |",
        "|---:|---:|---|---|---|",
    ]
    for i, c in enumerate(frame.COLUMNS):
        out.append(f"| {i} | {np.dtype(c.dtype).itemsize} | `{c.dtype}` | `{c.name}` | {c.doc} |")
    out += [
        "",
        "## Validity",
        "",
        f"A reader rejects a frame whose magic is not `{frame.MAGIC.decode()}`, whose version it does not",
        "know, or whose size differs from `header_size + body_size` as computed from",
        "`packet_count` and `eni_count`. The worker sends such a message, unchanged, to the",
        f"dead-letter topic `<prefix>{topics.DEAD_LETTER.suffix}` with headers "
        + ", ".join(f"`{h}`" for h in topics.DEAD_LETTER_HEADERS)
        + ".",
        "",
        "## Bytes",
        "",
        "A flow record's `bytes` is the sum of `ip_length` (the IP total length, as AWS VPC",
        "Flow Logs count it), not of `wire_length`.",
        "",
    ]
    return "\n".join(out)


def _flows_sql() -> str:
    statements = [flow_record.create_table_ddl()]
    for rollup in rollups.ROLLUPS:
        statements += [rollups.create_table_ddl(rollup), rollups.create_view_ddl(rollup)]
    statements.append(window_closes.create_table_ddl())
    statements.append(alerts.create_table_ddl())
    header = (
        "-- Generated from schemas/flow_record.py, schemas/rollups.py, schemas/window_closes.py and schemas/alerts.py — do not edit.\n"
        "-- The raw flows table, then each rollup table and the materialized view that fills it.\n"
        "-- TTLs are the defaults; the store applies the configured ones.\n\n"
    )
    return header + "".join(s + ";\n\n" for s in statements).rstrip("\n") + "\n"


def _cluster_sql() -> str:
    statements = cluster.statements(cluster.Cluster(cluster.SAMPLE_CLUSTER, cluster.SAMPLE_DATABASE))
    header = (
        "-- Generated from schemas/cluster.py and the definitions it places — do not edit.\n"
        f"-- Cluster mode (store.cluster), for a cluster named {cluster.SAMPLE_CLUSTER} and the database"
        f" {cluster.SAMPLE_DATABASE}: each table's replicated\n"
        "-- shard-local part, the Distributed table over it, and each rollup's view on the shards.\n"
        "-- TTLs are the defaults; the store applies the configured ones.\n\n"
    )
    return header + "".join(s + ";\n\n" for s in statements).rstrip("\n") + "\n"


def rendered() -> dict[str, str]:
    """File name → content for every generated reference file."""
    return {
        "flows.sql": _flows_sql(),
        "cluster.sql": _cluster_sql(),
        "flow-record.schema.json": orjson.dumps(
            flow_record.json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        ).decode()
        + "\n",
        "alert.schema.json": orjson.dumps(alerts.json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
        + "\n",
        "frame.md": _frame_markdown(),
    }


def write(directory: Path = GENERATED_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def drifted(directory: Path = GENERATED_DIR) -> list[str]:
    """Names of generated files whose content on disk differs from the definitions."""
    return [
        name
        for name, text in rendered().items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
