"""Kafka plumbing shared by agents, the worker and the tools: where the broker is, topics."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.broker import running_bootstrap
from flowlogs.errors import BrokerError
from flowlogs.settings import Settings
from schemas import topics

log = logging.getLogger(__name__)


def bootstrap_servers(settings: Settings) -> str:
    """The configured cluster, else the local broker started by `flowlogs broker`."""
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers
    running = running_bootstrap(settings.home)
    if running:
        return running
    raise BrokerError(
        "no Kafka broker: start one with `flowlogs broker` (or use `flowlogs up`),"
        " or set FLOWLOGS_KAFKA__BOOTSTRAP_SERVERS to an existing cluster"
    )


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka configuration for this project's clients."""
    return {"bootstrap.servers": bootstrap_servers(settings), **settings.kafka.confluent_config(), **extra}


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create the project's topics if missing (idempotent)."""
    refused: list[str] = []  # why the cluster turned the login down, when it did
    untrusted: list[str] = []  # why the TLS handshake failed, when it did

    def on_error(err: KafkaError) -> None:
        if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            refused.append(err.str())
        elif err.code() == KafkaError._SSL:
            untrusted.append(err.str())

    admin = AdminClient(client_config(settings, error_cb=on_error))
    retention_ms = int(settings.kafka.frame_retention_hours * 3600 * 1000)
    wanted = {
        topics.FRAMES: {"retention.ms": str(retention_ms), "max.message.bytes": str(8 * 1024 * 1024)},
        topics.FLOWS: {},
        topics.DEAD_LETTER: {"max.message.bytes": str(8 * 1024 * 1024)},
        topics.RULES: {"cleanup.policy": "compact", "max.message.bytes": str(8 * 1024 * 1024)},
        topics.ALERTS: {},
        topics.FLOW_LOGS: {"cleanup.policy": "compact"},
    }
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        admin.poll(0)  # serves the error callbacks
        if refused:
            raise BrokerError(
                f"Kafka at {bootstrap_servers(settings)} refused the {settings.kafka.sasl_mechanism} login of"
                f" {settings.kafka.sasl_username!r}: {refused[0]} (kafka.sasl_username / kafka.sasl_password)"
            ) from exc
        if untrusted:
            raise BrokerError(
                f"the TLS handshake with Kafka at {bootstrap_servers(settings)} failed: {untrusted[0]}"
                " (kafka.ssl_cafile: the CA certificate that signed the broker's)"
            ) from exc
        raise BrokerError(f"cannot reach Kafka at {bootstrap_servers(settings)}: {exc}") from exc
    new = [
        NewTopic(
            spec.name(settings.kafka.topic_prefix),
            # Configuration topics (rule sets, flow logs) are read whole, in order: one partition.
            num_partitions=1 if spec.compacted else settings.kafka.partitions,
            replication_factor=settings.kafka.replication_factor,
            config=config,
        )
        for spec, config in wanted.items()
        if spec.name(settings.kafka.topic_prefix) not in existing
    ]
    if not new:
        return
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
            log.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise BrokerError(f"cannot create topic {name}: {exc}") from exc
