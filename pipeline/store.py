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
from flowlogs.settings import Settings
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
            try:
                self._client = clickhouse_connect.get_client(interface="chdb", path=str(path))
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
        """Create the database and tables if missing (idempotent)."""
        db = self.settings.store.database
        self.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        self.command(flow_record.create_table_ddl(f"{db}.{flow_record.FLOWS_TABLE}", self.settings.store.ttl_days))
        self._client.database = db  # unqualified names in queries mean the flows database

    def command(self, sql: str) -> Any:
        with self._lock:
            try:
                return self._client.command(sql)
            except ClickHouseError as exc:
                raise StoreError(f"ClickHouse rejected a command: {exc}") from exc

    def insert_flows(self, table: pa.Table, dedup_token: str | None = None) -> None:
        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None
        target = f"{self.settings.store.database}.{flow_record.FLOWS_TABLE}"
        with self._lock:
            try:
                self._client.insert_arrow(target, table, settings=settings)
            except ClickHouseError as exc:
                raise StoreError(f"insert of {table.num_rows} flow rows into {target} failed: {exc}") from exc

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, *, readonly: bool = False
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run SQL in the flows database; returns (column names, rows)."""
        with self._lock:
            try:
                result = self._client.query(sql, parameters=parameters, settings={"readonly": 1} if readonly else None)
            except ClickHouseError as exc:
                raise StoreError(f"query failed: {exc}") from exc
        return list(result.column_names), [tuple(r) for r in result.result_rows]

    def query_readonly(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """A query from outside (the HTTP API): ClickHouse refuses anything but reads."""
        return self.query(sql, readonly=True)
