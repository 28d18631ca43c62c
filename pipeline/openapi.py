"""The OpenAPI 3.1 document of the worker API (``GET /openapi.json``).

Built from the same definitions the API uses: report parameters from the report registry,
flow logs from their pydantic model, alerts from ``schemas/alerts.py``. Every mutation
declares the bearer token (``pipeline/api_auth.py``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pipeline.reports import REPORTS, ReportParam
from schemas import alerts
from schemas.flow_logs import FlowLog, FlowLogChange

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_ANY = {"type": "object"}
_BEARER = [{"bearer": []}]


def _response(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


def _errors(*codes: int) -> dict[str, Any]:
    words = {400: "invalid input", 401: "no or wrong API token", 404: "not found"}
    return {str(c): _response(words[c], _ERROR) for c in codes}


def _query(name: str, description: str, schema: dict[str, Any] | None = None, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema or {"type": "string"}}


def _path_param(name: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _report_param(p: ReportParam) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if p.kind == "choice":
        schema["enum"] = list(p.choices)
    return _query(p.name, p.help, schema)


def _read(summary: str, schema: dict[str, Any] | None = None, parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": parameters or [],
        "responses": {"200": _response("ok", schema or _ANY), **_errors(400)},
    }


def _mutation(summary: str, body: dict[str, Any] | None, ok: str = "200", parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "security": _BEARER,
        "parameters": parameters or [],
        "responses": {ok: _response("done", _ANY), **_errors(400, 401)},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return operation


@cache
def document() -> dict[str, Any]:
    flow_log = FlowLog.model_json_schema()
    change = FlowLogChange.model_json_schema()
    flow_log_id = _path_param("flow_log_id", r"^fl-[0-9a-z-]{1,40}$")
    result_name = _path_param("name", r"^[a-z0-9][a-z0-9_-]{0,62}$")
    paths: dict[str, Any] = {
        "/health": {"get": _read("liveness and the store in use")},
        "/stats": {"get": _read("the worker's counters")},
        "/ready": {"get": {
            "summary": "readiness: partitions assigned, store answering, rules and flow logs read (503 says what is missing)",
            "responses": {"200": _response("ready", _ANY), "503": _response("not ready yet", _ANY)},
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (text exposition format; no token: scrapers)",
            "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
        "/drain": {"post": _mutation("close every open window now, write and commit it", None)},
        "/query": {"post": {
            **_read("read-only SQL against the store"),
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["sql"],
                "properties": {"sql": {"type": "string"}, "parameters": {"type": "object"}},
            }}}},
        }},
        "/whatif": {"post": {
            **_read("replay stored flows through a proposed rule set"),
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["rules", "since"],
                "properties": {"rules": {"type": "object"}, "since": {"type": "string"}, "until": {"type": "string"}, "top": {"type": "integer"}},
            }}}},
        }},
        "/alerts": {"get": _read("the newest state of each alert", {"type": "object", "properties": {"alerts": {"type": "array", "items": alerts.json_schema()}}}, [
            _query("since", "alerts seen since: an age (24h), an ISO time or Unix seconds"),
            _query("state", "open or closed", {"type": "string", "enum": list(alerts.STATES)}),
            _query("detector", "one detector", {"type": "string", "enum": list(alerts.DETECTORS)}),
            _query("severity", "one severity", {"type": "string", "enum": list(alerts.SEVERITIES)}),
            _query("limit", "at most this many (1–10000)", {"type": "integer"}),
        ])},
        "/reports": {"get": _read("every report and its parameters")},
        "/results": {"get": _read("result sets: snapshots and rewinds")},
        "/results/{name}": {
            "get": {**_read("one result set", parameters=[result_name]), "responses": {"200": _response("ok", _ANY), **_errors(400)}},
            "delete": _mutation("delete a result set and its rows", None, parameters=[result_name]),
        },
        "/api/v1/flow-logs": {
            "get": _read("the flow logs in force", {"type": "object", "properties": {"flow_logs": {"type": "array", "items": flow_log}}}),
            "post": _mutation("create a flow log", change, ok="201"),
        },
        "/api/v1/flow-logs/{flow_log_id}": {
            "get": {**_read("one flow log", flow_log, [flow_log_id]), "responses": {"200": _response("ok", flow_log), **_errors(404)}},
            "patch": {**_mutation("change a flow log (enable, disable, filter…)", change, parameters=[flow_log_id]), "responses": {"200": _response("ok", flow_log), **_errors(400, 401, 404)}},
            "delete": {**_mutation("delete a flow log", None, parameters=[flow_log_id]), "responses": {"200": _response("ok", _ANY), **_errors(401, 404)}},
        },
        "/api/v1/enis": {"get": _read("ENIs of the inventory and seen in traffic")},
        "/api/v1/flows": {"get": _read("flow search: a filter expression over stored flow records", parameters=[
            _query("filter", "e.g. srcaddr = 10.0.0.0/8 and dstport in (22, 3389) and action = REJECT"),
            _query("since", "windows starting at or after: an age, an ISO time or Unix seconds"),
            _query("until", "windows starting before"),
            _query("limit", "rows (1–10000)", {"type": "integer"}),
        ])},
    }
    for name, spec in REPORTS.items():
        paths[f"/reports/{name}"] = {"get": _read(spec.description, parameters=[_report_param(p) for p in spec.params])}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Flow Logs worker API", "version": "1"},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
