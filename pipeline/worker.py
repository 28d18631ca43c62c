"""FlowWorker: frames in, flow records out — the state and the commit discipline of a worker.

The Faust app (``pipeline/app.py``) hands every frames-topic message to :meth:`on_message`
and calls :meth:`tick` on a timer. Frames are aggregated into :class:`FlowWindows`; closed
windows are buffered and written to the sinks in batches (``store.batch_rows`` rows or
``store.batch_seconds``; at most ``store.max_batch_rows`` rows of whole closes at once, the
oldest first); only after a batch is durable in both sinks are its frames acknowledged, so
Faust's committed offset never runs ahead of the store.

A batch is written in the background while the consumer goes on aggregating the next
windows (the store insert runs in a thread without the GIL); when the next batch is due
before the write in flight has finished, the consumer waits for it, so at most one batch
is written while one more accumulates.

Exactly-once in the store, across crashes and rebalances: each close is recorded in the
:class:`CloseLog` before its rows are written, and its rows are inserted under the close's
deduplication token. Whoever consumes a partition next repeats the recorded closes at the
same offsets; a repeated insert is dropped by the store. Records on the flows topic are
at-least-once, with deterministic flow ids for consumers to drop repeats.

Each batch's flow records (all of them, whatever the record filter) also go through the
detectors (``pipeline/detect``) while the batch is written; their alerts are published
at once, not after the store insert, and alerts that could not be published are kept and
sent with the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from flowlogs.errors import FlowLogsError, FrameError
from flowlogs.malloc import release_free_memory
from flowlogs.settings import Settings
from pipeline.close_log import CloseLog
from pipeline.detect.detectors import Detectors
from pipeline.flow_log_registry import Coverage, implicit_flow_log
from pipeline.records import FlowRecordBuilder
from pipeline.rulebook import RuleBook
from pipeline.sinks.alerts import AlertSink
from pipeline.sinks.clickhouse import ClickHouseSink
from pipeline.sinks.flows_process import FlowTopicSink
from pipeline.sinks.topic import DeadLetterSink
from pipeline.window import ClosedWindows, CloseEvent, FlowWindows
from schemas import frame
from schemas.flow_logs import FlowLog
from schemas.inventory import Inventory

log = logging.getLogger(__name__)

Ack = Callable[[Any], None]
Highwater = Callable[[int], int | None]
# A duration as it is measured: ("flush_duration_seconds" | "alert_latency_seconds", seconds).
# pipeline/metrics.py binds histograms here; the worker itself keeps no distribution.
Observe = Callable[[str, float], None]


@dataclass(slots=True)
class WriterStats:
    dead_letters: int = 0
    rows_written: int = 0
    batches_written: int = 0
    write_failures: int = 0
    last_flush_seconds: float = 0.0
    alert_write_failures: int = 0


_LATENCIES_KEPT = 1000


@dataclass(slots=True)
class ClosedRecords:
    """A close and its records: those for the store and those for the flows topic (the
    same table when the flow logs send the same records to both)."""

    closed: ClosedWindows
    store: pa.Table
    topic: pa.Table


def _rows(cols: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    return cols if keep.all() else {k: v if k == "rule_id_values" else v[keep] for k, v in cols.items()}


class WriteBatch:
    """Closed windows written together (one store insert per close, under the close's token)."""

    def __init__(self, closed: list[ClosedWindows]) -> None:
        self.closed = closed
        self.rows = sum(c.flows.size for c in closed)
        self.detected = False  # a batch written again is not detected again


class FlowWorker:
    def __init__(
        self,
        settings: Settings,
        *,
        store_sink: ClickHouseSink,
        flows_sink: FlowTopicSink,
        dead_letter: DeadLetterSink,
        inventory: Inventory,
        close_log: CloseLog,
        alert_sink: AlertSink | None = None,
    ) -> None:
        cfg = settings.worker
        self.settings = settings
        self.windows = FlowWindows(
            window_seconds=cfg.window_seconds,
            lateness_seconds=cfg.allowed_lateness_seconds,
            idle_seconds=cfg.idle_close_seconds,
        )
        self.rulebook = RuleBook(inventory, self.windows.enis.ids, cfg.rules)
        self.builder = FlowRecordBuilder(
            self.windows.enis.ids, inventory.placement(), self.windows.window_ns, self.rulebook
        )
        self.store_sink = store_sink
        self.flows_sink = flows_sink
        self.dead_letter = dead_letter
        self.close_log = close_log
        self.detectors = Detectors(settings, inventory, self.windows.enis.ids) if alert_sink is not None else None
        self.alert_sink = alert_sink
        self._alerts_unsent: list[dict[str, Any]] = []
        self.alert_latencies: list[float] = []  # seconds from a batch's first close to its alerts published
        self.stats = WriterStats()
        # For /metrics: records made durable per sink, failed writes and rewrites per sink
        # (the alerts sink's are stats.alert_write_failures), alerts per (detector, event).
        self.records_written: Counter[str] = Counter()
        self.sink_failures: Counter[str] = Counter()
        self.sink_retries: Counter[str] = Counter()
        self.alert_events: Counter[tuple[str, str]] = Counter()
        self._observe: Observe = lambda _name, _seconds: None
        self._ack: Ack = lambda _m: None
        self._highwater: Highwater = lambda _p: None
        self._next_offset: dict[int, int] = {}
        # Times each partition was revoked: a frame read before a revoke must not bring its windows back after it.
        self._revocations: Counter[int] = Counter()
        self._pending: list[ClosedWindows] = []
        self._pending_rows = 0
        self._pending_since: float | None = None
        self._writing_rows = 0
        self._failed: WriteBatch | None = None
        self._failed_at = 0.0
        self._memory_released_at = time.monotonic()
        self._memory_to_release = False  # a write freed memory since it was last given back
        self._flush_lock = asyncio.Lock()
        self._flush_task: asyncio.Task[None] | None = None
        self._rules_seen: bytes | None = None
        self._flow_logs: list[FlowLog] = []
        self._flow_logs_seen = 0  # updates read from the flow-logs topic; 0: none ever (implicit flow log)
        self._compiled_coverage: Coverage | None = None

    def bind_consumer(self, ack: Ack, highwater: Highwater) -> None:
        """How to acknowledge a message and read a partition's highwater mark (from Faust)."""
        self._ack = ack
        self._highwater = highwater

    def bind_observer(self, observe: Observe) -> None:
        """Where durations go as they are measured (pipeline/metrics.py)."""
        self._observe = observe

    def _caught_up(self, partition: int) -> bool:
        highwater = self._highwater(partition)
        return highwater is None or self._next_offset.get(partition, 0) >= highwater

    async def on_message(self, message: Any) -> None:
        if not self.windows.has(message.partition):
            # The first frame of a partition we (newly) consume: where did its history stop?
            revocations = self._revocations[message.partition]
            closed_through, replay = await self._history(message.partition, message.offset)
            if self._revocations[message.partition] != revocations:
                # Revoked while we read its close log: whoever owns the partition now (perhaps
                # we again) reads this frame again from the committed offset. Taking it would
                # bring back the windows of a partition Faust no longer lets us ask about.
                return
            self.windows.partition(message.partition).resume(closed_through, replay)
        self._next_offset[message.partition] = message.offset + 1
        try:
            decoded = frame.decode(message.value)
        except FrameError as exc:
            await self._reject(message, exc)
            return
        self.windows.add(message.partition, decoded, message)
        self._collect(self.windows.due(caught_up=self._caught_up))
        await self._start_flush_when_due()

    async def tick(self) -> None:
        self._collect(self.windows.due(caught_up=self._caught_up))
        await self._start_flush_when_due()
        if not self._flush_lock.locked():
            await self._release_memory_when_due()
        if self.detectors is not None:
            await asyncio.to_thread(self.detectors.reload_threat_lists_when_due)

    async def offer_rules(self, published: bytes | None) -> None:
        """The rule set on the rules topic now; a new one is compiled and put in force."""
        if published is not None and published != self._rules_seen:
            self._rules_seen = published
            await asyncio.to_thread(self.rulebook.offer, published, "the rules topic")

    async def drain(self, partitions: set[int] | None = None) -> None:
        """Close every open window (of ``partitions``) now and write it out (unless a write fails)."""
        self._collect(self.windows.close_partitions(partitions))
        await self._wait_for_write_in_flight()
        await self.flush()
        while self._pending and self._failed is None:
            await self.flush()

    async def _start_flush_when_due(self) -> None:
        await self._wait_for_write_in_flight(only_if_done=True)
        if not self._flush_due():
            return
        # A further batch is due while one is still being written: wait for that one
        # (backpressure) rather than holding more closed windows in memory.
        await self._wait_for_write_in_flight()
        self._flush_task = asyncio.create_task(self.flush(), name="flow-writer")

    async def _wait_for_write_in_flight(self, *, only_if_done: bool = False) -> None:
        """Wait for the background write; an unexpected error in it is raised here, in the agent."""
        task = self._flush_task
        if task is None or (only_if_done and not task.done()):
            return
        self._flush_task = None
        await task

    async def _history(self, partition: int, offset: int) -> tuple[int, list[CloseEvent]]:
        """The close log of a partition; without it no frame of it can be placed, so wait for the store."""
        while True:
            try:
                return await asyncio.to_thread(self.close_log.history, partition, offset)
            except FlowLogsError as exc:
                log.error("cannot read the close log for partition %d (retrying in 2 s): %s", partition, exc)
                await asyncio.sleep(2)

    async def revoke(self, partitions: set[int]) -> None:
        """Partitions taken away: forget them, unwritten closes included; their new owner
        replays from the committed offset. A write in flight finishes first, so the close
        log is complete before the new owner reads it."""
        async with self._flush_lock:
            self._revocations.update(partitions)
            self.windows.discard_partitions(partitions)
            kept = [c for c in self._pending if c.event.partition not in partitions]
            self._pending, self._pending_rows = kept, sum(c.flows.size for c in kept)
            if not kept:
                self._pending_since = None
            if self._failed is not None:
                remaining = [c for c in self._failed.closed if c.event.partition not in partitions]
                self._failed = WriteBatch(remaining) if remaining else None
            for p in partitions:
                self._next_offset.pop(p, None)

    async def _reject(self, message: Any, exc: FrameError) -> None:
        source = f"{message.topic}/{message.partition}/{message.offset}"
        log.warning("frame at %s rejected (%s): %s; sent to the dead-letter topic", source, exc.reason, exc)
        await asyncio.to_thread(
            self.dead_letter.write, message.key, message.value, reason=exc.reason, error=str(exc), source=source
        )
        self.stats.dead_letters += 1
        self._ack(message)

    def _collect(self, closed: list[ClosedWindows]) -> None:
        for c in closed:
            self._pending.append(c)
            self._pending_rows += c.flows.size
            if self._pending_since is None:
                self._pending_since = time.monotonic()

    def _flush_due(self) -> bool:
        now = time.monotonic()
        store = self.settings.store
        if self._failed is not None:
            return now - self._failed_at >= store.batch_seconds
        if self._pending_since is None:
            return False
        return self._pending_rows >= store.batch_rows or now - self._pending_since >= store.batch_seconds

    async def flush(self) -> None:
        """Write the failed batch again if there is one, else everything pending; then ack."""
        async with self._flush_lock:
            batch = self._failed
            if batch is None:
                if not self._pending:
                    return
                batch = WriteBatch(self._take_pending(self.settings.store.max_batch_rows))
            else:
                self.sink_retries.update(("store", "topic"))  # a failed batch goes to both again
            started = time.monotonic()
            self._writing_rows = batch.rows
            try:
                await self._write(batch)
            except FlowLogsError as exc:
                # Keep the batch, and its unacknowledged frames, to write again unchanged.
                self._failed, self._failed_at = batch, time.monotonic()
                self.stats.write_failures += 1
                log.error(
                    "writing %d flow rows of %d closed windows failed; retrying in %.0f s: %s",
                    batch.rows, len(batch.closed), self.settings.store.batch_seconds, exc,
                )
                return
            finally:
                self._writing_rows = 0
            self._failed = None
            for closed in batch.closed:
                for message in closed.messages:
                    self._ack(message)
            self.stats.rows_written += batch.rows
            self.stats.batches_written += 1
            self.stats.last_flush_seconds = time.monotonic() - started
            self._observe("flush_duration_seconds", self.stats.last_flush_seconds)
            self._memory_to_release = True
            await self._release_memory_when_due()

    async def _release_memory_when_due(self) -> None:
        """After a write, what the batch's closes, records and inserts used is free: give it
        back to the system, at most every ``worker.malloc_trim_seconds`` (from the tick too,
        so the last write of a burst is not left holding it)."""
        every, now = self.settings.worker.malloc_trim_seconds, time.monotonic()
        if every <= 0 or not self._memory_to_release or now - self._memory_released_at < every:
            return
        self._memory_released_at, self._memory_to_release = now, False
        released = await asyncio.to_thread(release_free_memory)
        log.debug(
            "freed memory %s the system in %.0f ms",
            "given back to" if released else "none to give back to", (time.monotonic() - now) * 1e3,
        )

    def _take_pending(self, max_rows: int) -> list[ClosedWindows]:
        """The oldest pending closes of at most ``max_rows`` rows together (at least one close)."""
        taken, rows = 1, self._pending[0].flows.size
        while taken < len(self._pending) and rows + self._pending[taken].flows.size <= max_rows:
            rows += self._pending[taken].flows.size
            taken += 1
        closes, self._pending = self._pending[:taken], self._pending[taken:]
        self._pending_rows -= rows
        if not self._pending:
            self._pending_since = None
        return closes

    async def _write(self, batch: WriteBatch) -> None:
        """The batch's closes into the close log, then its rows into the store and onto the
        flows topic at the same time (the store insert runs without the GIL)."""
        try:
            records, columns = await asyncio.to_thread(self._record_closes, batch)
        except FlowLogsError:
            self.sink_failures["store"] += 1  # the close log is in the store
            raise
        results = await asyncio.gather(
            asyncio.to_thread(self._write_store, records),
            asyncio.to_thread(self._write_topic, records),
            self._detect(batch, columns),
            return_exceptions=True,
        )
        for sink, result in zip(("store", "topic"), results):
            if isinstance(result, FlowLogsError):
                self.sink_failures[sink] += 1
        for result in results:
            if isinstance(result, BaseException):
                raise result
        self.records_written["store"] += sum(r.store.num_rows for r in records)
        self.records_written["topic"] += sum(r.topic.num_rows for r in records)

    def _record_closes(self, batch: WriteBatch) -> tuple[list[ClosedRecords], list[dict[str, Any]]]:
        """(each close and its records for the store and for the topic, as the flow logs in
        force select them; each close's record columns, all of them, for the detectors)."""
        # The closes first: from here on, whoever replays these partitions repeats them.
        self.close_log.record([c.event for c in batch.closed])
        coverage = self._coverage()
        records, columns = [], []
        for c in batch.closed:
            if c.flows.size:
                cols = self.builder.columns(c.flows, skipped=c.skipped, nodata=c.nodata, late_through=c.late_through)
                columns.append(cols)
                to_store = coverage.rows("store", cols["eni"], cols["action"], cols["packets"])
                to_topic = coverage.rows("topic", cols["eni"], cols["action"], cols["packets"])
                store = self.builder.arrow(_rows(cols, to_store))
                topic = store if (to_topic == to_store).all() else self.builder.arrow(_rows(cols, to_topic))
                records.append(ClosedRecords(c, store, topic))
        return records, columns

    def offer_flow_logs(self, flow_logs: dict[str, FlowLog], changes: int) -> None:
        """The flow logs on their topic now (``changes``: the follower's update count)."""
        if changes != self._flow_logs_seen:
            self._flow_logs_seen = changes
            self._flow_logs = list(flow_logs.values())
            self._compiled_coverage = None
            log.info(
                "flow logs in force for %d s windows: %s", self.windows.window_ns // 1_000_000_000,
                ", ".join(f"{f.id} ({f.scope}, {f.filter}{'' if f.enabled else ', disabled'})" for f in self._flow_logs) or "none",
            )

    def _coverage(self) -> Coverage:
        eni_ids = self.windows.enis.ids
        compiled = self._compiled_coverage
        if compiled is None or len(compiled.store) != len(eni_ids):
            in_force = self._flow_logs if self._flow_logs_seen else [implicit_flow_log(self.settings)]
            compiled = Coverage.compile(in_force, self.builder.placement, eni_ids, self.settings.worker.window_seconds)
            self._compiled_coverage = compiled
        return compiled

    async def _detect(self, batch: WriteBatch, columns: list[dict[str, Any]]) -> None:
        """Run the detectors on a batch once and publish their alerts (with any left unsent)."""
        if self.detectors is None or self.alert_sink is None or batch.detected:
            return
        produced = await asyncio.to_thread(self.detectors.observe, columns)
        for alert in produced:
            event = "closed" if alert["state"] == "closed" else "updated" if alert["updates"] else "raised"
            self.alert_events[(alert["detector"], event)] += 1
        if self._alerts_unsent:
            self.sink_retries["alerts"] += 1  # alerts of a failed publish go out again now
        self._alerts_unsent += produced
        batch.detected = True
        if not self._alerts_unsent:
            return
        unsent, self._alerts_unsent = self._alerts_unsent, []
        try:
            await asyncio.to_thread(self.alert_sink.write, unsent)
        except FlowLogsError as exc:
            self._alerts_unsent = unsent + self._alerts_unsent
            self.stats.alert_write_failures += 1
            log.error("publishing %d alerts failed; they go out with the next batch: %s", len(unsent), exc)
            return
        # From the batch's first close: the latency of the alerts of its oldest window.
        first_close = min(c.closed_at for c in batch.closed)
        latency = time.monotonic() - first_close
        self.alert_latencies = [*self.alert_latencies[-_LATENCIES_KEPT + 1 :], latency]
        self._observe("alert_latency_seconds", latency)

    def _write_store(self, records: list[ClosedRecords]) -> None:
        for r in records:
            # A repeated close (retry, replay) carries the same token: the store keeps one copy.
            if r.store.num_rows:
                self.store_sink.write([r.store], dedup_token=self.close_log.token(r.closed.event))

    def _write_topic(self, records: list[ClosedRecords]) -> None:
        self.flows_sink.write([r.topic for r in records if r.topic.num_rows], timeout=120.0)

    def snapshot(self) -> dict[str, Any]:
        """Counters for /stats and `flowlogs up`."""
        return {
            **asdict(self.windows.stats),
            **asdict(self.stats),
            "open_windows": self.windows.open_window_count(),
            "pending_rows": self._pending_rows + self._writing_rows,
            "enis": len(self.windows.enis.ids),
            "rule_set_version": self.rulebook.version,
            "rule_sets_refused": self.rulebook.refused,
            **(self.detectors.snapshot() if self.detectors is not None else {}),
            "alerts_unsent": len(self._alerts_unsent),
            "alert_latencies": self.alert_latencies[-100:],
        }
