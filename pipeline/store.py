"""The ClickHouse store: one clickhouse-connect client, embedded chDB or a server over HTTP.

chDB lets one process open a data directory. The process that opens it writes an owner
file (pid, command, HTTP API address) under an exclusive lock; a second process gets a
:class:`StoreLockedError` naming the owner and where to send queries instead.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.exceptions import ClickHouseError

from flowlogs.errors import StoreError, StoreLockedError
from flowlogs.malloc import chdb_frees_soon
from flowlogs.settings import Settings
from pipeline import migrations
from schemas import flow_record

log = logging.getLogger(__name__)

OWNER_FILE = "flowlogs-owner.json"


def read_owner(path: Path) -> dict[str, Any] | None:
    """The owner record of a chDB dir if a live process holds it, else None."""
    owner = path / OWNER_FILE
    if not owner.exists():
        return None
    with owner.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            try:
                return dict(json.loads(fh.read() or "{}"))
            except ValueError:
                return {"pid": "?"}
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def merge_pool(threads: int) -> dict[str, str]:
    """chDB engine options that let ``threads`` merges run at once, and no more.

    chDB's default pool (2 threads on a 2-core machine, twice as many merges scheduled) ran
    three merges at once beside the worker's own threads at 1 M flows per window. One at a
    time, the worker read 2.11–2.31 M packets/s at 100 k flows per window against 1.88–2.08 M
    (three runs each, alternating; bench/worker.py), with the same peak memory and rate at
    1 M flows, where parts still merged as fast as they came (42 active at most). With one
    task per thread no merge is ever shortened to leave room for others: ClickHouse lowers
    the size of a merge only while two or more are scheduled."""
    return {"background_pool_size": str(threads), "background_merges_mutations_concurrency_ratio": "1"}


class Store:
    """Tables from schemas/, inserts of Arrow tables, SQL queries. Thread-safe (one lock)."""

    def __init__(self, settings: Settings, *, api_url: str | None = None) -> None:
        self.settings = settings
        self.api_url = api_url
        self._client: Any = None
        self._lock = threading.Lock()
        self._owner_fh: Any = None

    @property
    def embedded(self) -> bool:
        return self.settings.store.url is None

    def describe(self) -> str:
        return f"chDB at {self.settings.chdb_path}" if self.embedded else f"ClickHouse at {self.settings.store.url}"

    def start(self) -> None:
        cfg = self.settings.store
        if self.embedded:
            path = self.settings.chdb_path
            path.mkdir(parents=True, exist_ok=True)
            self._take_ownership(path)
            chdb_frees_soon()
            try:
                self._client = clickhouse_connect.get_client(
                    interface="chdb", path=str(path), chdb_options=merge_pool(cfg.merge_threads)
                )
            except Exception as exc:  # chDB raises ProgrammingError/RuntimeError variants
                self._release_ownership()
                raise StoreError(f"cannot open chDB at {path}: {exc}") from exc
        else:
            try:
                self._client = clickhouse_connect.get_client(dsn=cfg.url)
            except (ClickHouseError, OSError) as exc:
                raise StoreError(f"cannot reach ClickHouse at {cfg.url}: {exc}") from exc
        self.migrate()

    def _take_ownership(self, path: Path) -> None:
        fh = (path / OWNER_FILE).open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read()
            fh.close()
            try:
                info = json.loads(owner)
            except ValueError:
                info = {}
            where = f"; query it through {info['api_url']} (flowlogs query does)" if info.get("api_url") else ""
            raise StoreLockedError(
                f"the chDB data dir {path} is open in process {info.get('pid', '?')}"
                f" ({info.get('command', 'unknown command')}){where}. Only one process may open it."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv), "api_url": self.api_url}))
        fh.flush()
        self._owner_fh = fh

    def _release_ownership(self) -> None:
        if self._owner_fh is not None:
            self._owner_fh.seek(0)
            self._owner_fh.truncate()
            fcntl.flock(self._owner_fh, fcntl.LOCK_UN)
            self._owner_fh.close()
            self._owner_fh = None

    def stop(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
        self._release_ownership()

    def migrate(self) -> None:
        """Bring the flows database to the current schema: pipeline/migrations.py applies the
        versioned migrations not yet recorded in ``schema_migrations``, then creates any table
        or view of schemas/ that is missing (a new rollup filled from the stored flows first),
        adds any missing flow-record column and applies the configured TTLs — on one server, or
        ON CLUSTER to the local and Distributed tables of ``store.cluster`` (schemas/cluster.py).

        Idempotent: a second run applies nothing.
        """
        migrations.migrate(self, self.settings.store)
        self._client.database = self.settings.store.database  # unqualified names in queries mean the flows database

    def command(self, sql: str) -> Any:
        with self._lock:
            try:
                return self._client.command(sql)
            except ClickHouseError as exc:
                raise StoreError(f"ClickHouse rejected a command: {exc}") from exc

    def insert_flows(self, table: pa.Table, dedup_token: str | None = None) -> None:
        settings: dict[str, Any] = {
            # A replayed insert dropped by the flows table must be dropped by the rollups' views too.
            "deduplicate_blocks_in_dependent_materialized_views": 1,
            # The views already GROUP BY the rollups' whole key, so summing equal keys within
            # an inserted block would find nothing; skipping it ~halves the views' insert cost.
            "optimize_on_insert": 0,
        }
        if dedup_token:
            settings["insert_deduplication_token"] = dedup_token
        if self.settings.store.cluster:
            # Return only once the rows are on their shards: the worker then acknowledges
            # frames whose rows are durable there, not queued on the node that took them.
            settings["distributed_foreground_insert"] = 1
        target = f"{self.settings.store.database}.{flow_record.FLOWS_TABLE}"
        with self._lock:
            try:
                self._client.insert_arrow(target, table, settings=settings)
            except ClickHouseError as exc:
                raise StoreError(f"insert of {table.num_rows} flow rows into {target} failed: {exc}") from exc

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """An Arrow table into a table of the flows database (result sets' rows)."""
        target = f"{self.settings.store.database}.{table}"
        with self._lock:
            try:
                self._client.insert_arrow(target, data)
            except ClickHouseError as exc:
                raise StoreError(f"insert of {data.num_rows} rows into {target} failed: {exc}") from exc

    def insert_rows(self, table: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Plain rows into a small table of the flows database (the close log)."""
        target = f"{self.settings.store.database}.{table}"
        with self._lock:
            try:
                self._client.insert(target, rows, column_names=columns)
            except ClickHouseError as exc:
                raise StoreError(f"insert of {len(rows)} rows into {target} failed: {exc}") from exc

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, *, readonly: bool = False
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run SQL in the flows database; returns (column names, rows)."""
        with self._lock:
            try:
                result = self._client.query(sql, parameters=parameters, settings={"readonly": 1} if readonly else None)
            except ClickHouseError as exc:
                raise StoreError(f"query failed: {exc}") from exc
            except (ValueError, TypeError, KeyError) as exc:  # the client binding parameters into the SQL
                raise StoreError(f"query failed: the SQL or its parameters do not fit together: {exc!r}") from exc
        return list(result.column_names), [tuple(r) for r in result.result_rows]

    def query_readonly(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """A query from outside (the HTTP API): ClickHouse refuses anything but reads."""
        return self.query(sql, readonly=True)
