"""Run SQL against the store from any process: directly, or through the owner's HTTP API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from flowlogs.errors import StoreError
from flowlogs.settings import Settings
from pipeline.store import Store, read_owner


def run_sql(settings: Settings, sql: str, timeout: float = 60.0) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of a read-only query.

    A ClickHouse server is queried directly. An embedded chDB dir held by a running worker
    is queried through that worker's API; a free one is opened here for the query.
    """
    if settings.store.url is None:
        owner = read_owner(settings.chdb_path)
        if owner is not None:
            if not owner.get("api_url"):
                raise StoreError(
                    f"the chDB dir {settings.chdb_path} is held by process {owner.get('pid')} which has no API"
                )
            return query_api(str(owner["api_url"]), sql, timeout)
    store = Store(settings)
    store.start()
    try:
        columns, rows = store.query_readonly(sql)
    finally:
        store.stop()
    return columns, [list(r) for r in rows]


def query_api(api_url: str, sql: str, timeout: float = 60.0) -> tuple[list[str], list[list[Any]]]:
    request = urllib.request.Request(
        f"{api_url}/query",
        data=json.dumps({"sql": sql}).encode(),
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
