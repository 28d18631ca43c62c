"""ClickHouseSink: flow records → the flows table, one Arrow insert per batch."""

from __future__ import annotations

import pyarrow as pa

from pipeline.store import Store
from pipeline.store_client import OwnerApiStore


class ClickHouseSink:
    def __init__(self, store: Store | OwnerApiStore) -> None:
        self.store = store
        self.rows_written = 0
        self.inserts = 0

    def write(self, tables: list[pa.Table], dedup_token: str | None = None) -> None:
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return
        # One record batch with one dictionary per column: what an Arrow IPC insert expects.
        table = pa.concat_tables(tables).unify_dictionaries().combine_chunks()
        self.store.insert_flows(table, dedup_token)
        self.rows_written += table.num_rows
        self.inserts += 1
