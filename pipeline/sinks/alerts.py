"""AlertSink: alerts onto the alerts topic first (seconds matter), then into the alerts table."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson

from pipeline.sinks.topic import AlertProducer
from schemas import alerts as alert_schema

log = logging.getLogger(__name__)


class RowStore(Protocol):
    def insert_rows(self, table: str, columns: list[str], rows: list[list[Any]]) -> None: ...


def _cell(field: alert_schema.AlertField, value: Any) -> Any:
    if field.name == "sample-flows":
        return orjson.dumps(value).decode()
    if field.clickhouse_type.startswith("DateTime64(3"):
        return int(round(value * 1000))  # the client takes integers as ticks (milliseconds)
    return value


def table_row(alert: dict[str, Any]) -> list[Any]:
    """An alert record as a row of the alerts table, in plain JSON types (it may travel to
    the chDB owner's API): sample flows as JSON text, ``raised-at`` in milliseconds."""
    return [_cell(f, alert[f.name]) for f in alert_schema.ALERT_FIELDS]


class AlertSink:
    def __init__(self, producer: AlertProducer, store: RowStore) -> None:
        self.producer = producer
        self.store = store
        self.written = 0

    def write(self, alerts: list[dict[str, Any]]) -> None:
        """Publish, then store; raises SinkError / StoreError (the caller keeps them to write again)."""
        if not alerts:
            return
        self.producer.write(alerts)
        self.store.insert_rows(alert_schema.TABLE, list(alert_schema.COLUMN_NAMES), [table_row(a) for a in alerts])
        self.written += len(alerts)
