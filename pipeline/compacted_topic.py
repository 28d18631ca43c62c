"""Compacted configuration topics (rule sets, flow logs): publish a key's value, follow them all.

Each topic has one partition; compaction keeps the newest value per key, and a key whose
newest value is empty (a tombstone) is deleted. Every worker reads the whole topic with a
:class:`CompactedTopicFollower` — a consumer outside any consumer group, assigned the
partition from its beginning. (A Faust GlobalTable would be the textbook way, but in
faust-streaming 0.15 one in the same app as the frames agent breaks its hand-over: with it,
the 1 → 2 → 1 rebalance test lost packets in 2 of 3 runs, without it none; and its
partition assignor cannot find a changelog that has its own name.)
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from flowlogs.errors import BrokerError
from flowlogs.kafka import client_config
from flowlogs.settings import Settings

log = logging.getLogger(__name__)

_NO_LEADER_YET = {
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC,
}


def watermarks(consumer: Consumer, topic: str, timeout: float) -> tuple[int, int]:
    """(low, high) offsets of the topic's partition 0."""
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


def produce(settings: Settings, topic: str, key: bytes, value: bytes | None, timeout: float = 30.0) -> None:
    """Write ``key`` = ``value`` (None: delete the key) and wait until Kafka has it."""
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer(client_config(settings, **{"acks": "all"}))
    producer.produce(topic, value, key, on_delivery=delivered)
    if producer.flush(timeout) or errors:
        raise BrokerError(f"{key.decode(errors='replace')} was not written to {topic}: {errors[:1] or 'timed out'}")


class CompactedTopicFollower:
    """Reads a compacted topic from its beginning and keeps following it, in a thread.

    :meth:`values` is the newest value of every live key; :attr:`changes` counts updates.
    """

    def __init__(self, settings: Settings, topic: str, name: str) -> None:
        self.topic = topic
        self.name = name
        self._consumer = Consumer(
            client_config(
                settings,
                **{"group.id": f"flowlogs-{name}-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                   "auto.offset.reset": "earliest", "enable.partition.eof": True},
            )
        )
        self._values: dict[bytes, bytes] = {}
        self.changes = 0
        self._at_end = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-follower", daemon=True)

    def start(self) -> "CompactedTopicFollower":
        self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self._thread.start()
        return self

    def values(self) -> dict[bytes, bytes]:
        return dict(self._values)

    def wait_caught_up(self, timeout: float) -> bool:
        """Block until the topic has been read to its end once (so a worker starts with what
        is in force, not a stale state); False if that took longer than ``timeout``."""
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
                    log.warning("reading the %s topic %s: %s (retrying)", self.name, self.topic, message.error())
                continue
            key = message.key()
            if key is None:
                continue
            if message.value():
                self._values[key] = message.value()
            else:
                self._values.pop(key, None)
            self.changes += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._consumer.close()
