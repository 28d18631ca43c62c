"""FramePublisher: packet batches → frames → the frames topic, with confluent-kafka."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from agents.source import PacketBatch, per_eni_slices
from flowlogs.kafka import client_config
from flowlogs.settings import Settings
from schemas import frame, topics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PublisherStats:
    packets: int = 0
    bytes: int = 0  # sum of ip_length, as flow records count
    frames: int = 0
    delivered_frames: int = 0
    failed_frames: int = 0
    per_eni_packets: dict[str, int] = field(default_factory=dict)


class FramePublisher:
    """Encodes per-ENI frames and produces them keyed by ENI id; one sequence per agent."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic(topics.FRAMES.suffix)
        self.stats = PublisherStats()
        self._sequence = 0
        self._producer: Producer | None = None

    def start(self) -> None:
        agent = self.settings.agent
        self._producer = Producer(
            client_config(
                self.settings,
                **{
                    "client.id": f"flowlogs-agent-{agent.agent_id}",
                    "compression.type": agent.compression,
                    "linger.ms": agent.linger_ms,
                    "batch.size": 4 * 1024 * 1024,
                    "message.max.bytes": 8 * 1024 * 1024,
                    "queue.buffering.max.kbytes": 512 * 1024,
                    "enable.idempotence": False,
                    "acks": "all",
                },
            )
        )

    def publish(self, batch: PacketBatch) -> None:
        assert self._producer is not None, "start() first"
        agent = self.settings.agent
        for eni_id, packets in per_eni_slices(batch, agent.frame_packets):
            message = frame.encode(packets, (eni_id,), agent_id=agent.agent_id, sequence=self._sequence)
            self._sequence += 1
            self._produce(eni_id.encode(), message)
            n = packets.size
            self.stats.frames += 1
            self.stats.packets += n
            self.stats.bytes += int(packets.ip_length.sum(dtype="u8"))
            self.stats.per_eni_packets[eni_id] = self.stats.per_eni_packets.get(eni_id, 0) + n

    def _produce(self, key: bytes, value: bytes) -> None:
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
                break
            except BufferError:
                # The local queue is full: let librdkafka drain it before adding more.
                self._producer.poll(0.05)
        self._producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.stats.delivered_frames += 1
        else:
            self.stats.failed_frames += 1
            log.error("frame not delivered to %s: %s", self.topic, err)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for outstanding frames; returns how many are still undelivered."""
        assert self._producer is not None
        return int(self._producer.flush(timeout))

    def stop(self) -> None:
        if self._producer is not None:
            remaining = self.flush()
            if remaining:
                log.error("%d frames were still undelivered when the agent stopped", remaining)
            self._producer = None
