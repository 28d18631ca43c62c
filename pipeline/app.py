"""The Faust application of `flowlogs worker`: one agent on the frames topic, a timer, an HTTP API.

Faust owns the consumer group, partition assignment and the offset commits of what was
acknowledged; :class:`FlowWorker` owns the windows and decides when a frame is acknowledged.
The agent runs with ``noack()``, and ``stream_wait_empty`` is off because frames stay
unacknowledged, by design, until their window is written.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

import faust
import orjson
import pyarrow as pa
from faust.types import TP
from faust.web import Request, Response, View

from flowlogs.errors import ConfigError, FlowLogsError, StoreError
from flowlogs.kafka import bootstrap_servers
from flowlogs.settings import Settings
from pipeline import management_api, store_client
from pipeline.api_auth import ApiGuard
from pipeline.export import parse_time
from pipeline.metrics import CONTENT_TYPE, Readiness, WorkerMetrics
from pipeline.frames_consumer import bound_fetch_wait
from pipeline.query import Reader
from pipeline.reports import REPORTS, run_report
from pipeline.results import ResultSets
from pipeline.flow_log_registry import FlowLogFollower
from pipeline.rules_topic import RulesFollower
from pipeline.store import Store
from pipeline.store_client import OwnerApiStore
from pipeline.whatif import what_if
from pipeline.worker import FlowWorker
from schemas import alerts, topics, window_closes
from schemas.rules import parse_rules

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5
_ROW_TABLES = (window_closes.TABLE, alerts.TABLE)  # small tables other workers write through the owner


def _faust_broker(settings: Settings) -> tuple[str, dict[str, Any]]:
    servers = bootstrap_servers(settings).split(",")
    url = ";".join(f"kafka://{s.strip()}" for s in servers)
    extra: dict[str, Any] = {}
    k = settings.kafka
    # TLS as the confluent clients see it: the system's CAs, or only ``ssl_cafile``'s; host names checked.
    tls = ssl.create_default_context(cafile=k.ssl_cafile) if k.security_protocol.endswith("SSL") else None
    if k.sasl_mechanism:
        extra["broker_credentials"] = faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password,
            mechanism=k.sasl_mechanism,
            ssl_context=tls,
        )
    elif tls is not None:
        extra["broker_credentials"] = faust.SSLCredentials(tls)
    return url, extra


def create_app(
    settings: Settings, worker: FlowWorker, store: Store | OwnerApiStore, rules: RulesFollower, flow_logs: FlowLogFollower
) -> faust.App:
    cfg = settings.worker
    url, extra = _faust_broker(settings)
    # Frames wait unacknowledged for a window plus lateness; don't call that a livelock.
    quiet_for = cfg.window_seconds + cfg.allowed_lateness_seconds + cfg.idle_close_seconds + 60
    app = faust.App(
        cfg.app_id,
        broker=url,
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        topic_disable_leader=True,
        topic_allow_declare=False,
        stream_wait_empty=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=settings.kafka.session_timeout_seconds,
        broker_heartbeat_interval=settings.kafka.session_timeout_seconds / 4,
        broker_commit_livelock_soft_timeout=quiet_for,
        # The frames read but not yet counted: each partition's last fetch, the frames of the
        # last poll and the stream buffer (Faust's default of 4096 frames alone is ~1.9 GB).
        # Smaller than these defaults costs throughput where the worker waits for frames
        # (docs/capacity.md has the trade, measured).
        consumer_max_fetch_size=cfg.fetch_partition_mb * 1024 * 1024,
        broker_max_poll_records=cfg.poll_frames,
        stream_buffer_maxsize=cfg.prefetch_frames,
        web_host=cfg.api_host,
        web_port=cfg.api_port,
        web_in_thread=False,
        # Other workers send a close's flow rows in one request (pipeline/store_client.py).
        web_application_options={"client_max_size": store_client.MAX_REQUEST_BYTES},
        datadir=str(settings.home / "faust"),
        **extra,
    )
    bound_fetch_wait(app, cfg.fetch_wait_ms)
    frames_topic = settings.topic(topics.FRAMES.suffix)
    frames = app.topic(frames_topic, value_serializer="raw", key_serializer="raw")
    worker.bind_consumer(
        ack=lambda message: message.ack(app.consumer),
        highwater=lambda partition: app.consumer.highwater(TP(frames_topic, partition)),
    )

    @app.agent(frames, name="flow-windows")
    async def flow_windows(stream: faust.StreamT) -> None:
        async for event in stream.noack().events():
            await worker.on_message(event.message)

    @app.on_partitions_revoked.connect
    async def forget_revoked(_app: faust.App, revoked: set[TP], **_kw: Any) -> None:
        # Every rebalance revokes first (eager protocol); whoever gets a partition next
        # replays it from its committed offset, repeating the recorded closes.
        await worker.revoke({tp.partition for tp in revoked if tp.topic == frames_topic})

    @app.timer(TICK_SECONDS)
    async def close_due_windows() -> None:
        await worker.offer_rules(rules.latest())
        worker.offer_flow_logs(flow_logs.flow_logs(), flow_logs.changes)
        await worker.tick()

    @app.on_before_shutdown.connect
    async def drain_on_shutdown(_app: faust.App, **_kw: Any) -> None:
        # The consumer is paused but still in the group: write everything, then commit it.
        await worker.drain()
        await app.consumer.commit()
        log.info("drained and committed at shutdown: %s", worker.snapshot())

    guard = ApiGuard(settings)

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "store": store.describe()})

    readiness = Readiness(app, store, (rules, flow_logs), frames_topic)
    metrics = WorkerMetrics(settings, worker, readiness.partitions)

    # No token, even with api.token_for_reads: scrapers (Prometheus, the Kubernetes probe)
    # are set up per target and seldom carry a bearer token, and neither page holds flow data.
    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            ready, body = await readiness.check()
            return self.json(body, status=200 if ready else 503)

    @app.page("/stats")
    class Stats(View):
        @guard.read
        async def get(self, request: Request) -> Response:
            return self.json(worker.snapshot())

    @app.page("/drain")
    class Drain(View):
        @guard.mutation
        async def post(self, request: Request) -> Response:
            await worker.drain()
            await app.consumer.commit()
            return self.json(worker.snapshot())

    @app.page("/query")
    class Query(View):
        @guard.read
        async def post(self, request: Request) -> Response:
            body = await request.json()
            sql = body.get("sql") if isinstance(body, dict) else None
            parameters = body.get("parameters") or {} if isinstance(body, dict) else {}
            if not isinstance(sql, str) or not sql.strip() or not isinstance(parameters, dict):
                return self.json({"error": 'POST {"sql": "SELECT ...", "parameters": {...}}'}, status=400)
            try:
                columns, rows = await asyncio.to_thread(store.query, sql, parameters, readonly=True)
            except FlowLogsError as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({"columns": columns, "rows": [[_jsonable(v) for v in r] for r in rows]})

    @app.page("/alerts")
    class Alerts(View):
        @guard.read
        async def get(self, request: Request) -> Response:
            try:
                sql, parameters = alerts_query(request.query, now=int(time.time()))
                columns, rows = await asyncio.to_thread(store.query, sql, parameters, readonly=True)
            except FlowLogsError as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({"alerts": alert_records(columns, rows)})

    @app.page("/reports")
    class Reports(View):
        @guard.read
        async def get(self, request: Request) -> Response:
            return self.json({
                "reports": [
                    {"name": spec.name, "description": spec.description, "parameters": [p.as_dict() for p in spec.params]}
                    for spec in REPORTS.values()
                ]
            })

    @app.page("/reports/{name}")
    class Report(View):
        @guard.read
        async def get(self, request: Request, name: str) -> Response:
            try:
                result = await asyncio.to_thread(run_report, _read_only(store), name, dict(request.query), settings)
            except FlowLogsError as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({
                "report": name, "table": result.table, "since": result.since, "until": result.until,
                "columns": result.columns, "rows": [[_jsonable(v) for v in r] for r in result.rows],
            })

    # Result sets (rewinds, snapshots) for tools in other processes: pipeline/results.py.
    @app.page("/results")
    class ResultSetList(View):
        @guard.read
        async def get(self, request: Request) -> Response:
            try:
                return self.json({"results": await asyncio.to_thread(_result_sets(store).list)})
            except FlowLogsError as exc:
                return self.json({"error": str(exc)}, status=400)

    @app.page("/results/{name}")
    class ResultSet(View):
        @guard.read
        async def get(self, request: Request, name: str) -> Response:
            try:
                return self.json(await asyncio.to_thread(_result_sets(store).show, name))
            except FlowLogsError as exc:
                return self.json({"error": str(exc)}, status=400)

        @guard.mutation
        async def delete(self, request: Request, name: str) -> Response:
            try:
                return self.json({"deleted": await asyncio.to_thread(_result_sets(store).delete, name)})
            except FlowLogsError as exc:
                return self.json({"error": str(exc)}, status=400)

    @app.page("/results/{name}/{step}")
    class ResultSetStep(View):
        @guard.mutation
        async def post(self, request: Request, name: str, step: str) -> Response:
            try:
                results = _result_sets(store)
                if step == "rows":
                    data = pa.ipc.open_stream(await request.read()).read_all()
                    await asyncio.to_thread(results.insert, name, str(request.query.get("table")), data)
                    return self.json({"rows": data.num_rows})
                body = await request.json()
                if step == "begin":
                    await asyncio.to_thread(results.begin, name)
                    return self.json({"name": name})
                if step == "snapshot":
                    await asyncio.to_thread(results.snapshot, name, int(body["since"]), int(body["until"]), str(body["scope"]))
                    return self.json({"name": name})
                if step == "describe":
                    return self.json(await asyncio.to_thread(results.describe, {**body, "name": name}))
            except (pa.ArrowInvalid, KeyError, TypeError, ValueError, FlowLogsError) as exc:
                return self.json({"error": f"{type(exc).__name__}: {exc}" if not isinstance(exc, FlowLogsError) else str(exc)}, status=400)
            return self.json({"error": f"no result-set step {step!r}: begin, rows, snapshot or describe"}, status=404)

    @app.page("/whatif")
    class WhatIf(View):
        @guard.read
        async def post(self, request: Request) -> Response:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("rules"), dict) or "since" not in body:
                return self.json({"error": 'POST {"rules": {rule set}, "since": "24h", "until": optional}'}, status=400)
            try:
                now = time.time()
                since = parse_time(str(body["since"]), option="since", now=now)
                until = parse_time(str(body["until"]), option="until", now=now) if body.get("until") else int(now)
                rules = parse_rules(body["rules"], "the request's rules")
                report = await asyncio.to_thread(
                    what_if, _read_only(store), rules, worker.rulebook.inventory, since, until,
                    examples=int(body.get("top", 20)), page_rows=settings.export.page_rows,
                )
            except FlowLogsError as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json(report.as_dict())

    # Writes of the other workers of this group on this machine (pipeline/store_client.py).
    @app.page(store_client.FLOWS_PATH)
    class StoreFlows(View):
        @guard.mutation
        async def post(self, request: Request) -> Response:
            try:
                table = pa.ipc.open_stream(await request.read()).read_all()
                token = request.headers.get(store_client.TOKEN_HEADER)
                await asyncio.to_thread(store.insert_flows, table, token)
            except (pa.ArrowInvalid, FlowLogsError) as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({"rows": table.num_rows})

    @app.page(store_client.ROWS_PATH)
    class StoreRows(View):
        @guard.mutation
        async def post(self, request: Request) -> Response:
            body = await request.json()
            if not isinstance(body, dict) or body.get("table") not in _ROW_TABLES:
                return self.json({"error": f"only {' and '.join(_ROW_TABLES)} rows are accepted here"}, status=400)
            try:
                await asyncio.to_thread(store.insert_rows, body["table"], body["columns"], body["rows"])
            except (KeyError, FlowLogsError) as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({"rows": len(body["rows"])})

    management_api.add_routes(app, guard, settings, worker, store, flow_logs)
    return app


def _alert_column(f: alerts.AlertField) -> str:
    """SQL giving a column as the alert record has it in JSON (times as Unix seconds)."""
    kind = f.clickhouse_type
    if kind.startswith("DateTime64"):
        return f"toUnixTimestamp64Milli({f.column}) / 1000"
    if kind.startswith("DateTime"):
        return f"toUnixTimestamp({f.column})"
    if kind.startswith(("Map", "Enum")):
        return f"toJSONString({f.column})" if kind.startswith("Map") else f"toString({f.column})"
    return f.column


_JSON_FIELDS = ("counts", "sample-flows")  # JSON text in the table


def alert_records(columns: list[str], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    records = [dict(zip(columns, r)) for r in rows]
    for record in records:
        for name in _JSON_FIELDS:
            record[name] = orjson.loads(record[name])
    return records


def alerts_query(query: Any, *, now: int) -> tuple[str, dict[str, Any]]:
    """SQL and parameters for ``GET /alerts?since=1h&state=open&detector=port_scan&limit=100``
    (the newest state of each alert, newest first)."""
    since = parse_time(str(query.get("since", "24h")), option="since", now=now)
    where, parameters = ["last_seen >= {since:UInt32}"], {"since": since}
    for name, allowed in (("state", alerts.STATES), ("detector", alerts.DETECTORS), ("severity", alerts.SEVERITIES)):
        value = query.get(name)
        if value is not None:
            if value not in allowed:
                raise ConfigError(f"{name} {value!r} is not one of {', '.join(allowed)}")
            where.append(f"{name} = {{{name}:String}}")
            parameters[name] = value
    try:
        limit = int(query.get("limit", 100))
    except ValueError:
        raise ConfigError(f"limit {query.get('limit')!r} is not a number") from None
    if not 1 <= limit <= 10_000:
        raise ConfigError("limit must be between 1 and 10000")
    columns = ", ".join(f"{_alert_column(f)} AS `{f.name}`" for f in alerts.ALERT_FIELDS)
    sql = f"SELECT {columns} FROM {alerts.TABLE} FINAL WHERE {' AND '.join(where)} ORDER BY raised_at DESC LIMIT {limit}"
    return sql, parameters


def _result_sets(store: Store | OwnerApiStore) -> ResultSets:
    if not isinstance(store, Store):
        raise StoreError("this worker does not own the store; ask the worker that does")
    return ResultSets(store)


def _read_only(store: Store | OwnerApiStore) -> Reader:
    def read(sql: str) -> tuple[list[str], list[list[Any]]]:
        columns, rows = store.query_readonly(sql)
        return columns, [list(r) for r in rows]

    return read


def _jsonable(value: Any) -> Any:
    if isinstance(value, (int, float, str)) or value is None:
        return value
    return str(value)
