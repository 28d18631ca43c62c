"""FrameRange: the raw frames of a capture-time range, read back from the frames topic.

Kafka finds offsets by message timestamp, and a frame's timestamp is when the agent
produced it — never before its packets were captured. So each partition is read from the
first message stamped at or after ``since − margin`` (nothing stamped earlier can hold a
packet of the range) and until the first frame whose own capture time starts at or after
``until + margin`` (frames go out oldest first, out of order only by producer retries
within ``agent.delivery_timeout_seconds``; ``margin`` = that timeout + a frame's span + a
few seconds) or the partition's end. Packets are then kept by their capture time,
exactly ``[since, until)``: both range ends are exact, for live capture and replays alike.

A range whose start is older than what the topic still holds is refused, naming the
oldest time still there and the retention setting.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from confluent_kafka import Consumer, KafkaException, TopicPartition

from flowlogs.errors import FlowLogsError, FrameError
from flowlogs.kafka import client_config
from flowlogs.settings import Settings
from schemas import frame, topics
from schemas.frame import Frame, Packets

log = logging.getLogger(__name__)

_NS_PER_MS = 1_000_000
_SLACK_SECONDS = 5.0


class RangeNotRetainedError(FlowLogsError):
    """The frames topic no longer holds the start of the range."""


@dataclass(slots=True)
class RangeProgress:
    """Messages read of those the range spans (offsets), frames kept, packets kept."""

    messages: int = 0
    messages_total: int = 0
    frames: int = 0
    packets: int = 0
    rejected_frames: int = 0


class FrameRange:
    """Frames of capture times ``[since_ns, until_ns)``, restricted to ``enis`` (all when None)."""

    def __init__(self, settings: Settings, since_ns: int, until_ns: int, enis: frozenset[str] | None = None) -> None:
        if until_ns <= since_ns:
            raise FlowLogsError("the range is empty: its end must be later than its start")
        self.settings = settings
        self.since_ns, self.until_ns = since_ns, until_ns
        self.enis = enis
        agent = settings.agent
        self.margin_ms = int((agent.delivery_timeout_seconds + agent.frame_seconds + _SLACK_SECONDS) * 1000)
        self.topic = settings.topic(topics.FRAMES.suffix)
        self.progress = RangeProgress()

    def _bounds(self, consumer: Consumer, timeout: float) -> list[tuple[int, int, int]]:
        """(partition, first offset, high watermark) of every partition with messages in range."""
        try:
            metadata = consumer.list_topics(self.topic, timeout=timeout).topics[self.topic]
        except KafkaException as exc:
            raise FlowLogsError(f"cannot read the frames topic {self.topic}: {exc}") from exc
        if metadata.error is not None:
            raise FlowLogsError(f"cannot read the frames topic {self.topic}: {metadata.error}")
        partitions = sorted(metadata.partitions)
        start_ms = self.since_ns // _NS_PER_MS - self.margin_ms
        wanted = [TopicPartition(self.topic, p, max(start_ms, 0)) for p in partitions]
        found = consumer.offsets_for_times(wanted, timeout=timeout)
        bounds = []
        for tp in found:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, tp.partition), timeout=timeout)
            first = tp.offset if tp.offset >= 0 else high  # -1: nothing stamped that late
            if low > 0 and first <= low:
                self._refuse_if_deleted(consumer, tp.partition, low, timeout)
            if first < high:
                bounds.append((tp.partition, first, high))
        return bounds

    def _refuse_if_deleted(self, consumer: Consumer, partition: int, low: int, timeout: float) -> None:
        """Retention has deleted the start of this partition: is the range's start gone with it?"""
        _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=timeout)
        oldest_ms: int | None = None
        if high > low:
            consumer.assign([TopicPartition(self.topic, partition, low)])
            message = consumer.poll(timeout)
            consumer.unassign()
            if message is None or message.error():
                raise FlowLogsError(f"cannot read {self.topic} partition {partition} at offset {low}: {message and message.error()}")
            _, oldest_ms = message.timestamp()
        # A frame stamped before `since` holds no packet captured at or after it: what the
        # range needs is every frame stamped from `since` on.
        if oldest_ms is None or oldest_ms > self.since_ns // _NS_PER_MS:
            held = f"frames before {_iso_ms(oldest_ms)} are" if oldest_ms is not None else "no frame is"
            raise RangeNotRetainedError(
                f"{held} no longer on {self.topic} (partition {partition}, retention removed offsets below {low});"
                f" the range starts at {_iso_ms(self.since_ns // _NS_PER_MS)}. Frames are kept"
                f" {self.settings.kafka.frame_retention_hours:g} h (kafka.frame_retention_hours);"
                " take a snapshot --with-frames to keep an incident longer"
            )

    def frames(self, timeout: float = 30.0, cancelled: Callable[[], bool] = lambda: False) -> Iterator[tuple[int, Frame]]:
        """(partition, frame with only the packets in range and in scope): one partition after
        the other, each in its order — so a reader's open windows are one partition's."""
        consumer = Consumer(client_config(self.settings, **{"group.id": "flowlogs-rewind", "enable.auto.commit": False}))
        try:
            bounds = self._bounds(consumer, timeout)
            self.progress.messages_total = sum(high - first for _, first, high in bounds)
            stop_ns = self.until_ns + self.margin_ms * _NS_PER_MS
            for partition, first, high in bounds:
                consumer.assign([TopicPartition(self.topic, partition, first)])
                offset = first - 1
                while offset + 1 < high and not cancelled():
                    message = consumer.poll(1.0)
                    if message is None:
                        continue
                    if message.error():
                        raise FlowLogsError(f"reading {self.topic}: {message.error()}")
                    offset = message.offset()
                    self.progress.messages += 1
                    try:
                        decoded = frame.decode(message.value())
                    except FrameError as exc:
                        self.progress.rejected_frames += 1
                        log.warning("frame at %s/%d/%d skipped (%s): %s", self.topic, partition, offset, exc.reason, exc)
                        continue
                    if decoded.first_time_ns >= stop_ns and decoded.packet_count:
                        break  # captured a margin past the range: what follows is later still
                    kept = self._in_range(decoded)
                    if kept is not None:
                        yield partition, kept
                self.progress.messages += max(high - offset - 1, 0)  # skipped: past the range
                consumer.unassign()
                if cancelled():
                    return
        finally:
            consumer.close()

    def _in_range(self, decoded: Frame) -> Frame | None:
        times = decoded.packets.capture_time_ns
        keep = (times >= np.uint64(self.since_ns)) & (times < np.uint64(self.until_ns))
        if self.enis is not None:
            in_scope = np.array([e in self.enis for e in decoded.eni_ids], dtype=bool)
            keep &= in_scope[decoded.packets.eni] if in_scope.size else False
        if not keep.any():
            return None
        packets = Packets(*(column[keep] for column in decoded.packets))
        self.progress.frames += 1
        self.progress.packets += packets.size
        return dataclasses.replace(decoded, packets=packets)


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
