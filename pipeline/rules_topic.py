"""The rules topic: publish a rule set (``flowlogs rules apply``), read the one in force,
follow it from a worker.

The topic is compacted, with one partition and one key (``schemas.topics.RULES_KEY``), so
its last message is the rule set in force. Versions only go up: publishing assigns the
next one unless the file names a newer one.

Every worker reads the whole topic with a :class:`RulesFollower` — a consumer outside any
consumer group, assigned the partition from its beginning. (A Faust GlobalTable would be
the textbook way, but in faust-streaming 0.15 one in the same app as the frames agent
breaks its hand-over: with it, the 1 → 2 → 1 rebalance test lost packets in 2 of 3 runs,
without it none; and its partition assignor cannot find a changelog that has its own name.)
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from flowlogs.errors import BrokerError, ConfigError
from flowlogs.kafka import bootstrap_servers, client_config, ensure_topics
from flowlogs.settings import Settings
from schemas import topics
from schemas.rules import RuleSet, parse_rules

log = logging.getLogger(__name__)


def published(settings: Settings, timeout: float = 10.0) -> RuleSet | None:
    """The rule set in force (the topic's last message), or None if none was published."""
    topic = settings.topic(topics.RULES.suffix)
    consumer = Consumer(
        client_config(settings, **{"group.id": f"flowlogs-rules-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    )
    try:
        low, high = _watermarks(consumer, topic, timeout)
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


_NO_LEADER_YET = {
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC,
}


def _watermarks(consumer: Consumer, topic: str, timeout: float) -> tuple[int, int]:
    # A topic created a moment ago may not have a leader yet: that passes.
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            if exc.args[0].code() not in _NO_LEADER_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


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
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer(client_config(settings, **{"acks": "all"}))
    producer.produce(settings.topic(topics.RULES.suffix), chosen.to_json_bytes(), topics.RULES_KEY, on_delivery=delivered)
    if producer.flush(timeout) or errors:
        raise BrokerError(f"rule set version {version} was not published: {errors[:1] or 'timed out'}")
    return chosen


class RulesFollower:
    """Reads the rules topic from its beginning and keeps following it, in a thread;
    :meth:`latest` is the newest rule set seen (raw JSON), None before the first."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic(topics.RULES.suffix)
        self._consumer = Consumer(
            client_config(
                settings,
                **{"group.id": f"flowlogs-rules-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                   "auto.offset.reset": "earliest", "enable.partition.eof": True},
            )
        )
        self._latest: bytes | None = None
        self._at_end = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rules-follower", daemon=True)

    def start(self) -> "RulesFollower":
        self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self._thread.start()
        return self

    def latest(self) -> bytes | None:
        return self._latest

    def wait_caught_up(self, timeout: float) -> bool:
        """Block until the topic has been read to its end once (so a worker starts with the
        rule set in force, not a stale one); False if that took longer than ``timeout``."""
        return self._at_end.wait(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    self._at_end.set()
                else:
                    log.warning("reading the rules topic %s: %s (retrying)", self.topic, message.error())
                continue
            if message.key() == topics.RULES_KEY and message.value():
                self._latest = message.value()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._consumer.close()
