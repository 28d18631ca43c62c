"""Kafka producers: flow records and alerts as JSON on their topics; rejected frames on the dead-letter topic.

The worker does not produce flow records itself: :class:`pipeline.sinks.flows_process.FlowTopicSink`
runs a :class:`FlowRecordProducer` in a child process.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pyarrow as pa
from confluent_kafka import KafkaError, Message, Producer

from flowlogs.errors import FlowLogsError
from flowlogs.kafka import client_config
from flowlogs.settings import Settings
from pipeline.json_render import json_batches
from schemas import topics

log = logging.getLogger(__name__)


class SinkError(FlowLogsError):
    """A sink could not make its records durable; the frames stay unacknowledged."""


class _KafkaSink:
    def __init__(self, settings: Settings, topic: str, client_id: str) -> None:
        self.topic = topic
        self._producer = Producer(
            client_config(
                settings,
                **{
                    "client.id": client_id,
                    "linger.ms": 20,
                    "compression.type": "lz4",
                    "acks": "all",
                    "enable.idempotence": False,
                    "message.max.bytes": 8 * 1024 * 1024,
                    # Full queue = wait (flow control), not more memory: a million-record
                    # window goes out while the next part of it is being rendered.
                    "queue.buffering.max.messages": 1_000_000,
                    "queue.buffering.max.kbytes": 16 * 1024,
                    # A Python callback per delivered record costs more than rendering it;
                    # only failures are reported, and flush() says when the rest is in.
                    "delivery.report.only.error": True,
                },
            )
        )
        self._failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failures.append(str(err))

    def _produce(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, key, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _flush(self, timeout: float) -> None:
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if remaining or failures:
            raise SinkError(
                f"{remaining} records to {self.topic} still undelivered after {timeout:.0f} s"
                f" and {len(failures)} failed (first: {failures[:1]})"
            )


class FlowRecordProducer(_KafkaSink):
    """Publishes one JSON record per flow, keyed by interface-id."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.topic(topics.FLOWS.suffix), "flowlogs-worker-flows")

    def produce(self, table: pa.Table) -> int:
        """Hand the records of a flow-record table to the producer; how many."""
        for keys, values in json_batches(table):
            for key, value in zip(keys.to_pylist(), values.to_pylist()):
                self._produce(key, value)
            self._producer.poll(0)
        return table.num_rows

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every record produced is acknowledged (raises SinkError if not)."""
        self._flush(timeout)


class AlertProducer(_KafkaSink):
    """Publishes alert records as JSON on the alerts topic, keyed by alert-id."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.topic(topics.ALERTS.suffix), "flowlogs-worker-alerts")

    def write(self, alerts: list[dict[str, Any]], timeout: float = 30.0) -> None:
        """Produce ``alerts``; returns once Kafka acknowledged them all (raises SinkError if not)."""
        for alert in alerts:
            self._produce(alert["alert-id"].encode(), orjson.dumps(alert))
        self._flush(timeout)


class DeadLetterSink(_KafkaSink):
    """Puts a rejected message, unchanged, on the dead-letter topic with the reason in headers."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.topic(topics.DEAD_LETTER.suffix), "flowlogs-worker-deadletter")

    def write(self, key: bytes | None, value: bytes, *, reason: str, error: str, source: str, timeout: float = 30.0) -> None:
        reason_h, error_h, source_h = topics.DEAD_LETTER_HEADERS
        headers = [(reason_h, reason.encode()), (error_h, error.encode()), (source_h, source.encode())]
        self._produce(key or b"", value, headers)
        self._flush(timeout)
