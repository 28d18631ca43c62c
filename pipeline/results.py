"""ResultSets: rewinds and snapshots in the store (``schemas/saved.py``), by name.

:class:`ResultSets` works on a :class:`~pipeline.store.Store` this process owns; a worker
that owns the embedded chDB serves the same operations on its API
(:class:`ResultSetsApi` calls them), so the CLI works the same with or without a running
worker. A name is taken once: delete a result set before making another under its name.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import pyarrow as pa

from flowlogs.errors import ConfigError, StoreError
from flowlogs.settings import Settings
from pipeline.api_auth import bearer
from pipeline.store import Store, read_owner
from schemas import saved
from schemas.cluster import LOCAL_SUFFIX
from schemas.flow_record import COLUMN_NAMES, FLOWS_TABLE, sql_string

_ID = re.compile(r"^[A-Za-z0-9._:-]+$")
_SCOPE_COLUMNS = {"vpc": "vpc_id", "subnet": "subnet_id", "eni": "interface_id"}
INSERT_TABLES = (saved.FLOWS_TABLE, saved.PACKETS_TABLE)


def scope_condition(scope: str) -> str:
    """SQL condition on flow records for a scope: ``all``, ``vpc:ID``, ``subnet:ID``, ``eni:ID``."""
    if scope == "all":
        return "1"
    kind, _, ident = scope.partition(":")
    if kind not in _SCOPE_COLUMNS or not _ID.fullmatch(ident):
        raise ConfigError(f"scope {scope!r}: give all, vpc:ID, subnet:ID or eni:ID")
    return f"{_SCOPE_COLUMNS[kind]} = {sql_string(ident)}"


def check_name(name: str) -> str:
    try:
        return saved.check_name(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class ResultSetStore(Protocol):
    def begin(self, name: str) -> None: ...
    def insert(self, name: str, table: str, data: pa.Table) -> None: ...
    def snapshot(self, name: str, since: int, until: int, scope: str) -> None: ...
    def describe(self, description: dict[str, Any]) -> dict[str, Any]: ...
    def list(self) -> list[dict[str, Any]]: ...
    def show(self, name: str) -> dict[str, Any]: ...
    def delete(self, name: str) -> bool: ...


class ResultSets:
    """The result-set operations, on a store this process owns."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _exists(self, name: str) -> bool:
        _, rows = self.store.query(
            f"SELECT (SELECT count() FROM {saved.RESULT_SETS_TABLE} WHERE name = {{n:String}})"
            f" + (SELECT count() FROM {saved.FLOWS_TABLE} WHERE result_set = {{n:String}})",
            {"n": name},
        )
        return int(rows[0][0]) > 0

    def begin(self, name: str) -> None:
        """Claim ``name`` for a new result set (ConfigError when it is taken)."""
        if self._exists(check_name(name)):
            raise ConfigError(f"a result set named {name!r} exists: delete it first (flowlogs snapshot delete {name})")

    def insert(self, name: str, table: str, data: pa.Table) -> None:
        """Rows of ``name`` into saved_flows or saved_packets (their first column is result_set)."""
        if table not in INSERT_TABLES:
            raise ConfigError(f"result-set rows go to {' or '.join(INSERT_TABLES)}, not {table}")
        values = data.column(0).combine_chunks()
        if data.column_names[0] != "result_set" or values.dictionary.to_pylist() != [check_name(name)]:
            raise ConfigError(f"the rows' result_set column must hold {name!r} only")
        self.store.insert_arrow(table, data)

    def snapshot(self, name: str, since: int, until: int, scope: str) -> None:
        """Copy the live flow records of windows starting in ``[since, until)`` into ``name``."""
        columns = ", ".join(COLUMN_NAMES)
        self.store.command(
            f"INSERT INTO {saved.FLOWS_TABLE} (result_set, {columns})"
            f" SELECT {sql_string(check_name(name))}, {columns} FROM {FLOWS_TABLE}"
            f" WHERE window_start >= toDateTime({int(since)}) AND window_start < toDateTime({int(until)})"
            f" AND {scope_condition(scope)}"
        )

    def describe(self, description: dict[str, Any]) -> dict[str, Any]:
        """Record what ``description['name']`` is; its flows and packets are counted here."""
        name = check_name(str(description["name"]))
        _, rows = self.store.query(
            f"SELECT count(), sum(packets) FROM {saved.FLOWS_TABLE} WHERE result_set = {{n:String}}", {"n": name}
        )
        row = {
            **{c: description.get(c) for c, _, _ in saved.RESULT_SET_COLUMNS},
            "name": name, "flows": int(rows[0][0]), "packets": int(rows[0][1] or 0),
            "created_at": int(time.time() * 1000),
        }
        missing = [c for c, v in row.items() if v is None]
        if missing:
            raise ConfigError(f"a result set's description needs {', '.join(missing)}")
        self.store.insert_rows(saved.RESULT_SETS_TABLE, list(row), [list(row.values())])
        return {**row, "created_at": row["created_at"] / 1000}

    def list(self) -> list[dict[str, Any]]:
        columns = ", ".join(
            f"toUnixTimestamp(`{c}`) AS `{c}`" if t.startswith("DateTime(") else f"toString(`{c}`) AS `{c}`" if t.startswith("Enum") else f"`{c}`"
            for c, t, _ in saved.RESULT_SET_COLUMNS
        )
        names, rows = self.store.query(f"SELECT {columns} FROM {saved.RESULT_SETS_TABLE} FINAL ORDER BY created_at")
        return [dict(zip(names, (v.timestamp() if hasattr(v, "timestamp") else v for v in r))) for r in rows]

    def show(self, name: str) -> dict[str, Any]:
        for found in self.list():
            if found["name"] == name:
                return found
        raise ConfigError(f"no result set named {name!r} (flowlogs snapshot list)")

    def delete(self, name: str) -> bool:
        """Drop ``name`` and its rows; False when there was none."""
        if not self._exists(check_name(name)):
            return False
        partition = sql_string(name)
        cluster = self.store.settings.store.cluster
        # In cluster mode the rows are in each shard's local table (the named ones distribute).
        where = f"{LOCAL_SUFFIX} ON CLUSTER {cluster}" if cluster else ""
        for table in INSERT_TABLES:
            self.store.command(f"ALTER TABLE {table}{where} DROP PARTITION {partition}")
        self.store.command(f"DELETE FROM {saved.RESULT_SETS_TABLE}{where} WHERE name = {partition}")
        return True


class ResultSetsApi:
    """The same operations, done by the worker that owns the store (``/results`` on its API)."""

    def __init__(self, api_url: str, settings: Settings, timeout: float = 600.0) -> None:
        self.api_url, self.timeout = api_url, timeout
        self._auth = bearer(settings)

    def _call(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json") -> Any:
        request = urllib.request.Request(self.api_url + path, data=body, method=method, headers={"Content-Type": content_type, **self._auth})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            exc.close()
            try:
                detail = json.loads(detail)["error"]
            except (ValueError, KeyError):
                pass
            raise (ConfigError if exc.code == 400 else StoreError)(f"the worker at {self.api_url}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise StoreError(f"cannot reach the worker API at {self.api_url}: {exc}") from exc

    def _path(self, name: str, *rest: str) -> str:
        return "/".join(["/results", urllib.parse.quote(check_name(name)), *rest])

    def begin(self, name: str) -> None:
        self._call("POST", self._path(name, "begin"), b"{}")

    def insert(self, name: str, table: str, data: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        self._call("POST", self._path(name, "rows") + f"?table={table}", sink.getvalue().to_pybytes(), "application/vnd.apache.arrow.stream")

    def snapshot(self, name: str, since: int, until: int, scope: str) -> None:
        self._call("POST", self._path(name, "snapshot"), json.dumps({"since": since, "until": until, "scope": scope}).encode())

    def describe(self, description: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", self._path(str(description["name"]), "describe"), json.dumps(description).encode()))

    def list(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/results")["results"])

    def show(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", self._path(name)))

    def delete(self, name: str) -> bool:
        return bool(self._call("DELETE", self._path(name))["deleted"])


@contextmanager
def open_result_sets(settings: Settings) -> Iterator[ResultSetStore]:
    """Result sets of the configured store: through the owning worker's API when one holds
    the embedded chDB, else on the store opened here for the block."""
    if settings.store.url is None:
        owner = read_owner(settings.chdb_path)
        if owner is not None:
            if not owner.get("api_url"):
                raise StoreError(f"the chDB dir {settings.chdb_path} is held by process {owner.get('pid')} which has no API")
            yield ResultSetsApi(str(owner["api_url"]), settings)
            return
    store = Store(settings)
    store.start()
    try:
        yield ResultSets(store)
    finally:
        store.stop()
