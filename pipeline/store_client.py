"""OwnerApiStore: the store as seen by a worker that does not own the embedded chDB dir.

Only one process may open a chDB data dir. A second worker of the same group (scale-out
on one machine) therefore writes and reads through the owner worker's HTTP API: flow rows
as an Arrow IPC stream under their deduplication token, close-log rows as JSON, reads as
read-only SQL. If the owner goes away, the next call tries to take the dir over itself.
A ClickHouse server (``store.url``) needs none of this: every worker connects to it.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

import pyarrow as pa

from flowlogs.errors import StoreError, StoreLockedError
from flowlogs.settings import Settings
from pipeline.api_auth import bearer
from pipeline.query import query_api
from pipeline.store import Store, read_owner

log = logging.getLogger(__name__)

FLOWS_PATH = "/store/flows"
ROWS_PATH = "/store/rows"
TOKEN_HEADER = "X-Flowlogs-Dedup-Token"
MAX_REQUEST_BYTES = 1 << 30  # a close's rows go in one request: one insert, one token


def open_store(settings: Settings, api_url: str) -> Store | OwnerApiStore:
    """The store itself when this process can own it, else the owner's API."""
    store = Store(settings, api_url=api_url)
    try:
        store.start()
        return store
    except StoreLockedError:
        owner = read_owner(settings.chdb_path) or {}
        if not owner.get("api_url"):
            raise
        log.info("the store %s is owned by process %s: writing through its API %s", settings.chdb_path, owner.get("pid"), owner["api_url"])
        return OwnerApiStore(settings, str(owner["api_url"]), own_api_url=api_url)


class OwnerApiStore:
    """Store operations a worker needs, done by the owner worker (see module docstring)."""

    def __init__(self, settings: Settings, owner_url: str, *, own_api_url: str, timeout: float = 120.0) -> None:
        self.settings = settings
        self.owner_url = owner_url
        self.api_url = own_api_url
        self.timeout = timeout
        self._local: Store | None = None  # after a takeover

    def describe(self) -> str:
        if self._local is not None:
            return self._local.describe()
        return f"chDB at {self.settings.chdb_path}, through its owner's API {self.owner_url}"

    def stop(self) -> None:
        if self._local is not None:
            self._local.stop()

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        request = urllib.request.Request(self.owner_url + path, data=body, headers={**headers, **bearer(self.settings)}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise StoreError(f"the store owner at {self.owner_url} refused {path}: {exc.read().decode(errors='replace')}") from exc
        except (urllib.error.URLError, OSError) as exc:
            self._take_over()
            raise StoreError(f"cannot reach the store owner at {self.owner_url}: {exc}") from exc

    def _take_over(self) -> None:
        """The owner is gone: open the dir here if it is free (the caller's retry then uses it)."""
        store = Store(self.settings, api_url=self.api_url)
        try:
            store.start()
        except StoreLockedError:
            owner = read_owner(self.settings.chdb_path) or {}
            if owner.get("api_url"):
                self.owner_url = str(owner["api_url"])
            return
        log.warning("the store owner at %s is gone: this worker now owns %s", self.owner_url, self.settings.chdb_path)
        self._local = store

    def insert_flows(self, table: pa.Table, dedup_token: str | None = None) -> None:
        if self._local is not None:
            return self._local.insert_flows(table, dedup_token)
        # One request, one insert under the close's token, exactly as the owner would do it
        # itself: the token must not depend on which worker writes.
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        headers = {"Content-Type": "application/vnd.apache.arrow.stream"}
        if dedup_token:
            headers[TOKEN_HEADER] = dedup_token
        self._post(FLOWS_PATH, sink.getvalue().to_pybytes(), headers)

    def insert_rows(self, table: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self._local is not None:
            return self._local.insert_rows(table, columns, rows)
        body = json.dumps({"table": table, "columns": columns, "rows": rows}).encode()
        self._post(ROWS_PATH, body, {"Content-Type": "application/json"})

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, *, readonly: bool = False
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        if self._local is not None:
            return self._local.query(sql, parameters, readonly=readonly)
        try:
            columns, rows = query_api(self.owner_url, sql, self.timeout, parameters=parameters)
        except StoreError:
            self._take_over()
            raise
        return columns, [tuple(r) for r in rows]

    def query_readonly(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        return self.query(sql, readonly=True)
