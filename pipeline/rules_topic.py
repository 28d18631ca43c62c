"""The rules topic: publish a rule set (``flowlogs rules apply``), read the one in force,
follow it from a worker.

The topic is compacted, with one partition and one key (``schemas.topics.RULES_KEY``), so
its last message is the rule set in force. Versions only go up: publishing assigns the
next one unless the file names a newer one. Workers follow it with a
:class:`~pipeline.compacted_topic.CompactedTopicFollower` (see there why not a Faust table).
"""

from __future__ import annotations

import uuid

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition

from flowlogs.errors import BrokerError, ConfigError
from flowlogs.kafka import bootstrap_servers, client_config, ensure_topics
from flowlogs.settings import Settings
from pipeline.compacted_topic import CompactedTopicFollower, produce, watermarks
from schemas import topics
from schemas.rules import RuleSet, parse_rules

def published(settings: Settings, timeout: float = 10.0) -> RuleSet | None:
    """The rule set in force (the topic's last message), or None if none was published."""
    topic = settings.topic(topics.RULES.suffix)
    consumer = Consumer(
        client_config(settings, **{"group.id": f"flowlogs-rules-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    )
    try:
        low, high = watermarks(consumer, topic, timeout)
        if high <= low:
            return None
        consumer.assign([TopicPartition(topic, 0, high - 1)])
        message = consumer.poll(timeout)
        if message is None or message.error():
            raise BrokerError(f"cannot read the rule set at {topic} offset {high - 1}: {message and message.error()}")
        return parse_rules(orjson.loads(message.value() or b"{}"), f"{topic} offset {high - 1}")
    except KafkaException as exc:
        raise BrokerError(f"cannot read {topic} at {bootstrap_servers(settings)}: {exc}") from exc
    finally:
        consumer.close()


def publish(settings: Settings, rules: RuleSet, timeout: float = 30.0) -> RuleSet:
    """Publish ``rules`` as the next version (or its own, when newer); returns what was published."""
    ensure_topics(settings)
    current = published(settings)
    current_version = current.version if current else 0
    version = rules.version or current_version + 1
    if version <= current_version:
        raise ConfigError(
            f"rule set version {version} is not newer than version {current_version} in force;"
            " leave `version` out to get the next one"
        )
    chosen = rules.model_copy(update={"version": version})
    produce(settings, settings.topic(topics.RULES.suffix), topics.RULES_KEY, chosen.to_json_bytes(), timeout)
    return chosen


class RulesFollower(CompactedTopicFollower):
    """Follows the rules topic; :meth:`latest` is the newest rule set seen (raw JSON), None before the first."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.topic(topics.RULES.suffix), "rules")

    def start(self) -> "RulesFollower":
        super().start()
        return self

    def latest(self) -> bytes | None:
        return self.values().get(topics.RULES_KEY)
