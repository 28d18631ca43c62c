"""Run SQL against the store from any process: directly, or through the owner's HTTP API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flowlogs.errors import StoreError
from flowlogs.settings import Settings
from pipeline.store import Store, read_owner

Result = tuple[list[str], list[list[Any]]]
Reader = Callable[[str], Result]


@contextmanager
def open_reader(settings: Settings, timeout: float = 60.0) -> Iterator[Reader]:
    """A function that runs read-only SQL and returns (columns, rows), valid inside the block.

    A ClickHouse server is queried directly. An embedded chDB dir held by a running worker
    is queried through that worker's API; a free one is opened here, once for the whole
    block, so a run of queries (an export's pages) does not reopen it each time.
    """
    if settings.store.url is None:
        owner = read_owner(settings.chdb_path)
        if owner is not None:
            if not owner.get("api_url"):
                raise StoreError(
                    f"the chDB dir {settings.chdb_path} is held by process {owner.get('pid')} which has no API"
                )
            api_url = str(owner["api_url"])
            yield lambda sql: query_api(api_url, sql, timeout)
            return
    store = Store(settings)
    store.start()

    def read(sql: str) -> Result:
        columns, rows = store.query_readonly(sql)
        return columns, [list(r) for r in rows]

    try:
        yield read
    finally:
        store.stop()


def run_sql(settings: Settings, sql: str, timeout: float = 60.0) -> Result:
    """(columns, rows) of one read-only query (see :func:`open_reader` for where it runs)."""
    with open_reader(settings, timeout) as read:
        return read(sql)


def query_api(api_url: str, sql: str, timeout: float = 60.0, *, parameters: dict[str, Any] | None = None) -> Result:
    """Read-only SQL (with ClickHouse ``{name:Type}`` parameters) through a worker's API."""
    request = urllib.request.Request(
        f"{api_url}/query",
        data=json.dumps({"sql": sql, "parameters": parameters or {}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["error"]
        except (ValueError, KeyError):
            pass
        raise StoreError(f"the worker at {api_url} refused the query: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise StoreError(f"cannot reach the worker API at {api_url}: {exc}") from exc
    return body["columns"], body["rows"]
