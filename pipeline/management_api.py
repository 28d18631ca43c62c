"""The worker API's management part: flow logs, ENIs, flow search, the OpenAPI document and
the web console (``/api/v1/…``, ``/openapi.json``, ``/console/``)."""

from __future__ import annotations

import asyncio
import mimetypes
import time
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View

from flowlogs.errors import ConfigError, FlowLogsError
from flowlogs.settings import Settings
from pipeline import flow_log_registry, openapi
from pipeline.api_auth import ApiGuard
from pipeline.export import parse_time
from pipeline.flow_log_registry import FlowLogFollower
from pipeline.flow_search import search_sql
from pipeline.store import Store
from pipeline.store_client import OwnerApiStore
from pipeline.worker import FlowWorker
from schemas.flow_logs import FlowLog

CONSOLE_DIR = Path(__file__).with_name("console")
_SEEN_WITHIN_SECONDS = 10.0


def add_routes(
    app: faust.App,
    guard: ApiGuard,
    settings: Settings,
    worker: FlowWorker,
    store: Store | OwnerApiStore,
    follower: FlowLogFollower,
) -> None:
    async def written(flow_log_id: str, present: bool) -> None:
        """Wait until this worker's follower has read a change back (read-your-writes)."""
        deadline = time.monotonic() + _SEEN_WITHIN_SECONDS
        while time.monotonic() < deadline:
            if (flow_log_id in follower.flow_logs()) == present:
                return
            await asyncio.sleep(0.05)

    def known_scope(flow_log: FlowLog) -> None:
        kind, ident = flow_log.scope_parts()
        placement = worker.builder.placement
        if kind in ("vpc", "subnet") and ident not in {where[0 if kind == "vpc" else 1] for where in placement.values()}:
            raise ConfigError(f"scope {flow_log.scope}: the inventory (worker.inventory) has no ENI in {kind} {ident}")

    @app.page("/api/v1/flow-logs")
    class FlowLogs(View):
        @guard.read
        async def get(self, request: Request) -> Response:
            flow_logs = sorted(follower.flow_logs().values(), key=lambda f: f.name)
            return self.json({
                "flow_logs": [f.model_dump(mode="json") for f in flow_logs],
                "recording_everything": follower.changes == 0,
            })

        @guard.mutation
        async def post(self, request: Request) -> Response:
            try:
                change = flow_log_registry.parse_change(await _json(request))
                if change.name is None:
                    raise ConfigError("invalid flow log: name: a flow log needs a name")
                flow_log = FlowLog.create(change, window_seconds=settings.worker.window_seconds)
                known_scope(flow_log)
                await asyncio.to_thread(flow_log_registry.put, settings, flow_log)
            except FlowLogsError as exc:
                return self.json({"error": str(exc)}, status=400)
            await written(flow_log.id, True)
            return self.json(flow_log.model_dump(mode="json"), status=201)

    @app.page("/api/v1/flow-logs/{flow_log_id}")
    class OneFlowLog(View):
        @guard.read
        async def get(self, request: Request, flow_log_id: str) -> Response:
            found = follower.flow_logs().get(flow_log_id)
            if found is None:
                return self.json({"error": f"no flow log {flow_log_id!r}"}, status=404)
            return self.json(found.model_dump(mode="json"))

        @guard.mutation
        async def patch(self, request: Request, flow_log_id: str) -> Response:
            found = follower.flow_logs().get(flow_log_id)
            if found is None:
                return self.json({"error": f"no flow log {flow_log_id!r}"}, status=404)
            try:
                updated = found.changed(flow_log_registry.parse_change(await _json(request)))
                known_scope(updated)
                await asyncio.to_thread(flow_log_registry.put, settings, updated)
            except FlowLogsError as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json(updated.model_dump(mode="json"))

        @guard.mutation
        async def delete(self, request: Request, flow_log_id: str) -> Response:
            if flow_log_id not in follower.flow_logs():
                return self.json({"error": f"no flow log {flow_log_id!r}"}, status=404)
            try:
                await asyncio.to_thread(flow_log_registry.delete, settings, flow_log_id)
            except FlowLogsError as exc:
                return self.json({"error": str(exc)}, status=400)
            await written(flow_log_id, False)
            return self.json({"deleted": flow_log_id})

    @app.page("/api/v1/enis")
    class Enis(View):
        @guard.read
        async def get(self, request: Request) -> Response:
            inventory = worker.rulebook.inventory
            placement = worker.builder.placement
            listed = {e.id: {"id": e.id, "vpc": placement[e.id][0], "subnet": e.subnet, "ips": [str(ip) for ip in e.ips]} for e in inventory.enis}
            for eni in worker.windows.enis.ids:  # seen in traffic, not in the inventory
                listed.setdefault(eni, {"id": eni, "vpc": "-", "subnet": "-", "ips": []})
            return self.json({"enis": sorted(listed.values(), key=lambda e: e["id"])})

    @app.page("/api/v1/flows")
    class Flows(View):
        @guard.read
        async def get(self, request: Request) -> Response:
            query = request.query
            try:
                now = time.time()
                since = parse_time(str(query.get("since", "1h")), option="since", now=now)
                until = parse_time(str(query["until"]), option="until", now=now) if query.get("until") else int(now)
                sql, parameters = search_sql(
                    str(query.get("filter", "")), since=since, until=until, limit=_int(query.get("limit", "100"), "limit")
                )
                columns, rows = await asyncio.to_thread(store.query, sql, parameters, readonly=True)
            except FlowLogsError as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({"columns": columns, "rows": [[_plain(v) for v in r] for r in rows]})

    @app.page("/openapi.json")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            return self.json(openapi.document())

    @app.page("/console")
    class ConsoleHome(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(b"", status=302, headers={"Location": "/console/"})

    @app.page("/console/{path:.*}")
    class Console(View):
        async def get(self, request: Request, path: str) -> Response:
            target = (CONSOLE_DIR / (path or "index.html")).resolve()
            if not target.is_relative_to(CONSOLE_DIR.resolve()) or not target.is_file():
                return self.json({"error": f"no console file {path!r}"}, status=404)
            kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            return self.bytes(target.read_bytes(), content_type=kind)


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise ConfigError("the body is not JSON") from None


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} {text!r} is not a whole number") from None


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str)) or value is None else str(value)
