"""FramePublisher: packet batches → per-ENI frames → the frames topic, with confluent-kafka.

Between capture and Kafka sits a bounded send buffer. When Kafka is slow or down, a live
capture must not stall (the kernel would drop packets blindly) and must not grow without
limit, so the publisher drops the *oldest* buffered frames first (``overflow="drop-oldest"``)
and counts them per ENI; replaying a file instead waits for room (``"block"``), since
nothing is lost by waiting. Frames that Kafka finally refuses (delivery timeout) count as
dropped too. Every drop is reported in the next frame of the same ENI — a frame of no
packets when that ENI has nothing else to send — with the capture-time range of the lost
packets, so the pipeline marks exactly those windows ``SKIPDATA``.

Frames are numbered per ENI (a frame carries one ENI and goes to that ENI's partition) so
the pipeline can also see a frame lost after it left the agent.

Frames are assembled per ENI across capture batches: an ENI's packets wait until they fill
``agent.frame_packets``, or until they are ``agent.frame_seconds`` of capture time behind
the newest packet captured, or have waited ``ASSEMBLY_WAIT_SECONDS`` of wall-clock time, or
until a heartbeat or a flush of that ENI — whichever comes first. A capture chunk spread
over many ENIs would otherwise make many small frames, and every Kafka message costs the
pipeline about a millisecond of Python however few packets it carries. The wall-clock wait
is short so live frames stay fresh (the worker's allowed lateness must cover their age):
at 8192 packets a frame fills within it above ~40 k packets/s per ENI.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from agents.source import PacketBatch, per_eni_slices
from flowlogs.kafka import client_config
from flowlogs.settings import Settings
from schemas import frame, topics

log = logging.getLogger(__name__)

Overflow = Literal["block", "drop-oldest"]
_REPORT_AFTER_SECONDS = 1.0  # an undelivered drop report waits this long for a frame to ride on
_EMPTY = frame.Packets(*(np.zeros(0, c.dtype) for c in frame.COLUMNS))
ASSEMBLY_WAIT_SECONDS = 0.2  # wall-clock time a frame in the making waits at most


@dataclass(slots=True)
class EniCounters:
    packets: int = 0  # accepted from capture
    bytes: int = 0  # sum of ip_length, as flow records count
    frames: int = 0  # handed to Kafka
    dropped_packets: int = 0  # lost: send buffer overflow or refused by Kafka


@dataclass(slots=True)
class PublisherStats:
    packets: int = 0
    bytes: int = 0
    frames: int = 0
    delivered_frames: int = 0
    failed_frames: int = 0  # refused by Kafka (their packets are in dropped_packets)
    dropped_packets: int = 0
    dropped_frames: int = 0  # dropped from the send buffer before reaching Kafka
    buffered_bytes: int = 0
    heartbeats: int = 0
    per_eni: dict[str, EniCounters] = field(default_factory=dict)

    def eni(self, eni_id: str) -> EniCounters:
        counters = self.per_eni.get(eni_id)
        if counters is None:
            counters = self.per_eni[eni_id] = EniCounters()
        return counters


@dataclass(slots=True)
class _DropReport:
    packets: int = 0
    first_ns: int = 0
    last_ns: int = 0
    since: float = 0.0  # monotonic time of the first unreported drop

    def add(self, packets: int, first_ns: int, last_ns: int) -> None:
        if packets <= 0:
            return
        if self.packets == 0:
            self.first_ns, self.last_ns, self.since = first_ns, last_ns, time.monotonic()
        else:
            self.first_ns, self.last_ns = min(self.first_ns, first_ns), max(self.last_ns, last_ns)
        self.packets += packets


@dataclass(slots=True)
class _Outgoing:
    eni_id: str
    packets: frame.Packets
    size: int  # bytes it holds in the send buffer
    message: bytes | None = None  # encoded when first offered to Kafka
    carried: _DropReport | None = None  # the drop report encoded into ``message``
    heartbeat_ns: tuple[int, int] | None = None  # a heartbeat covering this capture-time range


@dataclass(slots=True)
class _Assembling:
    """An ENI's packets waiting to fill a frame."""

    parts: list[frame.Packets]
    count: int
    first_ns: int  # capture time of the oldest
    since: float  # monotonic time the oldest was taken


class FramePublisher:
    """Publishes packet batches as per-ENI frames, keyed by ENI id."""

    def __init__(self, settings: Settings, *, overflow: Overflow = "block") -> None:
        self.settings = settings
        self.overflow = overflow
        self.topic = settings.topic(topics.FRAMES.suffix)
        self.stats = PublisherStats()
        self.agent_start_ns = time.time_ns()
        self._limit = settings.agent.send_buffer_mb * 1024 * 1024
        self._queue: deque[_Outgoing] = deque()
        self._sequence: dict[str, int] = {}
        self._reports: dict[str, _DropReport] = {}
        self._assembling: dict[str, _Assembling] = {}
        self._newest_ns = 0  # capture time of the newest packet published
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
                    # librdkafka's own queue is the small front of the send buffer; the
                    # rest is ours, where the oldest frames can be dropped.
                    "queue.buffering.max.kbytes": max(self._limit // 4 // 1024, 8 * 1024),
                    "message.timeout.ms": int(agent.delivery_timeout_seconds * 1000),
                    # Frames of an ENI must reach their partition in sequence order: a retry
                    # without idempotence can put frame N after N+1, and a worker that met N+1
                    # first (its first frame of that ENI) takes N for a repeat. Idempotence
                    # keeps the order (and drops the retry's duplicates); Tansu supports it too.
                    "enable.idempotence": True,
                    "acks": "all",
                    # One request in flight: a broker that has no state for this producer on a
                    # partition (its first write there, e.g. to a topic created a moment ago)
                    # accepts any first sequence, so with two requests in flight the second can
                    # be appended while the first is refused as not-yet-leader, and the first is
                    # then dropped without an error (KAFKA-15591, fixed in Kafka 4.5; seen once
                    # here: a partition's log began at sequence 1). Measured cost: 4.3–5.1 M
                    # against 3.8–5.4 M packets/s (bench/agent.py, 20 M packets, 3 runs each).
                    "max.in.flight.requests.per.connection": 1,
                },
            )
        )

    # -- capture side ----------------------------------------------------------------------
    def publish(self, batch: PacketBatch) -> None:
        """Queue a batch's packets as frames; never waits in ``drop-oldest`` mode."""
        agent = self.settings.agent
        for eni_id, packets in per_eni_slices(batch, agent.frame_packets, int(agent.frame_seconds * 1e9)):
            self._assemble(eni_id, packets)
            nbytes = int(packets.ip_length.sum(dtype="u8"))
            counters = self.stats.eni(eni_id)
            counters.packets += packets.size
            counters.bytes += nbytes
            self.stats.packets += packets.size
            self.stats.bytes += nbytes
        if batch.packets.size:
            self._newest_ns = max(self._newest_ns, int(batch.packets.capture_time_ns.max()))
        self.service()
        while self.stats.buffered_bytes > self._limit:
            if self.overflow == "drop-oldest":
                self._drop(self._queue.popleft())
            else:
                self._wait(0.05)

    def _assemble(self, eni_id: str, packets: frame.Packets) -> None:
        """Add one ENI's packets (at most a frame's worth, in capture order) to its frame in the making."""
        agent = self.settings.agent
        waiting = self._assembling.get(eni_id)
        if waiting is not None and int(packets.capture_time_ns[-1]) - waiting.first_ns >= agent.frame_seconds * 1e9:
            self._release(eni_id)
            waiting = None
        if waiting is None:
            waiting = self._assembling[eni_id] = _Assembling([], 0, int(packets.capture_time_ns[0]), time.monotonic())
        waiting.parts.append(packets)
        waiting.count += packets.size
        if waiting.count >= agent.frame_packets:
            whole = _concatenate(waiting.parts)
            del self._assembling[eni_id]
            self._enqueue(eni_id, _head(whole, agent.frame_packets))
            rest = _tail(whole, agent.frame_packets)
            if rest.size:
                self._assembling[eni_id] = _Assembling([rest], rest.size, int(rest.capture_time_ns[0]), time.monotonic())

    def _enqueue(self, eni_id: str, packets: frame.Packets) -> None:
        size = packets.size * frame.PACKET_SIZE
        self._queue.append(_Outgoing(eni_id, packets, size))
        self.stats.buffered_bytes += size

    def _release(self, eni_id: str) -> None:
        """Send what an ENI has assembled so far as a frame."""
        waiting = self._assembling.pop(eni_id, None)
        if waiting is not None:
            self._enqueue(eni_id, _concatenate(waiting.parts))

    def _release_behind(self) -> None:
        """Frames in the making whose oldest packet is ``frame_seconds`` of capture time behind
        the newest packet captured, or was taken ``ASSEMBLY_WAIT_SECONDS`` ago, go out (frames
        leave the agent roughly in capture order across ENIs, and never wait long)."""
        horizon_ns = self.settings.agent.frame_seconds * 1e9
        now = time.monotonic()
        for eni_id, waiting in list(self._assembling.items()):
            if self._newest_ns - waiting.first_ns >= horizon_ns or now - waiting.since >= ASSEMBLY_WAIT_SECONDS:
                self._release(eni_id)

    def heartbeat(self, eni_ids: tuple[str, ...], first_ns: int, last_ns: int) -> None:
        """Tell the pipeline these ENIs were watched over [first_ns, last_ns] (capture time),
        so their windows without traffic become NODATA records and close on time."""
        for eni_id in eni_ids:
            self._release(eni_id)  # the packets before the heartbeat that vouches for them
            self._queue.append(_Outgoing(eni_id, _EMPTY, 0, heartbeat_ns=(first_ns, last_ns)))
        self.stats.heartbeats += len(eni_ids)
        self.service()

    def service(self) -> None:
        """Hand buffered frames to Kafka, run delivery callbacks, send due drop reports."""
        assert self._producer is not None, "start() first"
        self._producer.poll(0)
        self._release_behind()
        self._offer()
        now = time.monotonic()
        waiting = {o.eni_id for o in self._queue}
        for eni_id, report in list(self._reports.items()):
            if report.packets and eni_id not in waiting and now - report.since >= _REPORT_AFTER_SECONDS:
                self._queue.append(_Outgoing(eni_id, _EMPTY, 0))
        self._offer()

    def _wait(self, seconds: float) -> None:
        assert self._producer is not None
        self._producer.poll(seconds)
        self._offer()

    def _offer(self) -> None:
        assert self._producer is not None
        while self._queue:
            outgoing = self._queue[0]
            if outgoing.message is None:
                self._encode(outgoing)
            if outgoing.message is None:  # a drop report whose drops were already reported
                self._queue.popleft()
                continue
            try:
                self._producer.produce(
                    self.topic, outgoing.message, outgoing.eni_id.encode(),
                    on_delivery=lambda err, msg, o=outgoing: self._on_delivery(err, msg, o),
                )
            except BufferError:
                return  # librdkafka's queue is full; the rest waits in ours
            self._queue.popleft()
            self.stats.buffered_bytes -= outgoing.size
            self.stats.frames += 1
            self.stats.eni(outgoing.eni_id).frames += 1

    def _encode(self, outgoing: _Outgoing) -> None:
        report = self._reports.pop(outgoing.eni_id, None)
        if outgoing.packets.size == 0 and (report is None or report.packets == 0) and outgoing.heartbeat_ns is None:
            return
        sequence = self._sequence.get(outgoing.eni_id, 0)
        self._sequence[outgoing.eni_id] = sequence + 1
        outgoing.carried = report
        outgoing.message = frame.encode(
            outgoing.packets, (outgoing.eni_id,),
            agent_id=self.settings.agent.agent_id, agent_start_ns=self.agent_start_ns, sequence=sequence,
            dropped_packets=report.packets if report else 0,
            dropped_time_ns=(report.first_ns, report.last_ns) if report else (0, 0),
            heartbeat_ns=outgoing.heartbeat_ns,
        )

    # -- loss accounting -------------------------------------------------------------------
    def _lost(self, eni_id: str, packets: frame.Packets, carried: _DropReport | None) -> None:
        """Packets that will never reach Kafka (and any drop report they carried)."""
        report = self._reports.setdefault(eni_id, _DropReport())
        if carried is not None and carried.packets:
            report.add(carried.packets, carried.first_ns, carried.last_ns)
        n = packets.size
        if n:
            times = packets.capture_time_ns
            report.add(n, int(times.min()), int(times.max()))
            self.stats.dropped_packets += n
            self.stats.eni(eni_id).dropped_packets += n

    def _drop(self, outgoing: _Outgoing) -> None:
        self.stats.buffered_bytes -= outgoing.size
        if outgoing.message is not None:
            # Only the head of the buffer is ever encoded, so no later frame of this ENI
            # holds a sequence number yet: take it back, and the pipeline sees no gap for
            # a loss that the drop report already tells it about.
            self._sequence[outgoing.eni_id] -= 1
        self.stats.dropped_frames += 1
        if self.stats.dropped_frames == 1 or self.stats.dropped_frames % 1000 == 0:
            log.warning(
                "send buffer full (%d MB): dropping the oldest frames; %d frames, %d packets dropped so far."
                " Is Kafka at %s reachable and keeping up?",
                self.settings.agent.send_buffer_mb, self.stats.dropped_frames, self.stats.dropped_packets + outgoing.packets.size,
                self.settings.kafka.bootstrap_servers or "the local broker",
            )
        self._lost(outgoing.eni_id, outgoing.packets, outgoing.carried)

    def _on_delivery(self, err: KafkaError | None, _msg: Message, outgoing: _Outgoing) -> None:
        if err is None:
            self.stats.delivered_frames += 1
            return
        self.stats.failed_frames += 1
        if self.stats.failed_frames == 1 or self.stats.failed_frames % 1000 == 0:
            log.error("frame not delivered to %s (%d so far): %s", self.topic, self.stats.failed_frames, err)
        self._lost(outgoing.eni_id, outgoing.packets, outgoing.carried)

    # -- shutdown --------------------------------------------------------------------------
    def flush(self, timeout: float = 60.0) -> int:
        """Send everything buffered, reports of late failures included; returns frames left."""
        assert self._producer is not None
        for eni_id in list(self._assembling):
            self._release(eni_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._producer.flush(min(1.0, max(deadline - time.monotonic(), 0)))
            self._report_all()
            self._offer()
            if not self._queue and len(self._producer) == 0 and not any(r.packets for r in self._reports.values()):
                return 0
        return len(self._queue) + len(self._producer)

    def _report_all(self) -> None:
        waiting = {o.eni_id for o in self._queue}
        for eni_id, report in self._reports.items():
            if report.packets and eni_id not in waiting:
                self._queue.append(_Outgoing(eni_id, _EMPTY, 0))

    def stop(self, timeout: float = 60.0) -> None:
        if self._producer is None:
            return
        remaining = self.flush(timeout)
        if remaining:
            unsent = sum(o.packets.size for o in self._queue)
            log.error(
                "%d frames were still undelivered when the agent stopped (%d packets not yet handed to Kafka)",
                remaining, unsent,
            )
        self._producer = None


def _concatenate(parts: list[frame.Packets]) -> frame.Packets:
    return parts[0] if len(parts) == 1 else frame.Packets(*(np.concatenate(c) for c in zip(*parts)))


def _head(packets: frame.Packets, n: int) -> frame.Packets:
    return frame.Packets(*(c[:n] for c in packets))


def _tail(packets: frame.Packets, n: int) -> frame.Packets:
    return frame.Packets(*(c[n:] for c in packets))
