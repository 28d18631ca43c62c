"""Run capture sources into the frames topic: decode → ENI → frames, with progress and a summary."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress, TextColumn, TimeElapsedColumn

from agents.decode import DecodeStats, decode
from agents.enis import EniResolver
from agents.metrics import AgentMetrics
from agents.pcap import CaptureReader
from agents.publisher import FramePublisher, PublisherStats
from agents.source import CaptureSource, PacketBatch
from agents.synthetic import SyntheticConfig, SyntheticTraffic
from flowlogs.kafka import ensure_topics
from flowlogs.settings import Settings
from schemas import frame

log = logging.getLogger(__name__)


def run_synthetic(
    settings: Settings,
    config: SyntheticConfig,
    *,
    stop: threading.Event | None = None,
    on_progress: Callable[[PublisherStats], None] | None = None,
) -> PublisherStats:
    """Generate and publish until the configured duration is made or ``stop`` is set."""
    ensure_topics(settings)
    traffic = SyntheticTraffic(config)
    publisher = FramePublisher(settings)
    publisher.start()
    last = 0.0
    try:
        for batch in traffic.batches():
            publisher.publish(batch)
            now = time.monotonic()
            if on_progress and now - last >= 0.5:
                on_progress(publisher.stats)
                last = now
            if stop is not None and stop.is_set():
                break
    finally:
        publisher.stop()
    if on_progress:
        on_progress(publisher.stats)
    return publisher.stats


class CaptureRun:
    """One agent run: sources in turn → decode → ENI resolution → publisher; its counters."""

    def __init__(self, settings: Settings, sources: Sequence[CaptureSource], resolver: EniResolver, *, live: bool) -> None:
        """``live``: sources capture now (capture time is the clock; when Kafka cannot keep
        up the oldest frames are dropped) rather than replay files (capture time comes from
        the packets; the agent waits for Kafka)."""
        self.settings = settings
        self.sources = list(sources)
        self.resolver = resolver
        self.live = live
        self.decoded = DecodeStats()
        self.publisher = FramePublisher(settings, overflow="drop-oldest" if live else "block")
        self.started = time.monotonic()
        self._watched_from: int | None = None  # capture time the next heartbeat covers from
        self._clock_ns = 0  # capture time reached

    def source_counters(self) -> dict[str, int]:
        """The sources' own counters (kernel drops, garbage, truncated records …), summed."""
        totals: dict[str, int] = {}
        for source in self.sources:
            for name, value in source.counters().items():
                if name != "packets":  # the decoder counts what the sources delivered
                    totals[name] = totals.get(name, 0) + value
        return totals

    def summary(self) -> dict[str, Any]:
        """Totals of the run so far (the agent's JSON summary and its metrics read this)."""
        sent = self.publisher.stats
        source_counters = self.source_counters()
        decoded = asdict(self.decoded)
        return {
            "sources": len(self.sources),
            "packets_read": decoded.pop("packets"),
            **{k: v for k, v in decoded.items() if k != "unknown_linktype"},
            "unknown_linktype": {str(k): v for k, v in self.decoded.unknown_linktype.items()},
            **source_counters,
            "unmatched": self.resolver.stats.unmatched,
            "unknown_session": self.resolver.stats.unknown_session,
            "packets_sent": sent.packets,
            "bytes_sent": sent.bytes,
            "frames": sent.frames,
            "delivered_frames": sent.delivered_frames,
            "failed_frames": sent.failed_frames,
            "dropped_packets": sent.dropped_packets,
            "dropped_frames": sent.dropped_frames,
            "seconds": round(time.monotonic() - self.started, 3),
        }

    def run(self, *, stop: threading.Event | None = None, speed: float | None = None, progress: bool = True) -> dict[str, Any]:
        """Capture until every source ends or ``stop`` is set; then flush and summarise.

        ``speed`` paces replay: None = as fast as possible, 1.0 = capture pace.
        """
        stop = stop or threading.Event()
        ensure_topics(self.settings)
        metrics = AgentMetrics(self, self.settings.agent) if self.settings.agent.metrics_port is not None else None
        self.publisher.start()
        self.started = time.monotonic()
        try:
            with Progress(
                TextColumn("{task.description}"), TextColumn("{task.fields[packets]:,} packets"),
                TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[loss]}"), TimeElapsedColumn(),
                console=Console(stderr=True), disable=not progress,
            ) as bar:
                for source in self.sources:
                    task = bar.add_task(source.name, total=None, packets=0, rate="", loss="")
                    self._capture(source, stop, speed, lambda: bar.update(task, **self._progress_fields()))
                    if stop.is_set():
                        break
            self._heartbeat(time.time_ns() if self.live else self._clock_ns, final=True)
        finally:
            self.publisher.stop(timeout=self.settings.agent.delivery_timeout_seconds + 5)
            if metrics is not None:
                metrics.close()
        return self.summary()

    def _capture(self, source: CaptureSource, stop: threading.Event, speed: float | None, show: Callable[[], None]) -> None:
        first_ns: int | None = None
        paced_from = time.monotonic()
        shown = 0.0
        for raw in source.chunks(stop):
            if raw.size:
                packets = decode(raw, self.decoded)
                if speed and packets.size:
                    if first_ns is None:
                        first_ns, paced_from = int(packets.capture_time_ns.min()), time.monotonic()
                    due = (int(packets.capture_time_ns.max()) - first_ns) / 1e9 / speed
                    if (delay := due - (time.monotonic() - paced_from)) > 0:
                        stop.wait(delay)
                batch = self.resolver.resolve(packets)
                if self.live:
                    self.publisher.publish(batch)
                else:
                    self._publish_replayed(batch)
            if self.live:
                self._heartbeat(time.time_ns())
            self.publisher.service()
            if (now := time.monotonic()) - shown >= 0.25:
                show()
                shown = now
        show()

    def _publish_replayed(self, batch: PacketBatch) -> None:
        """Publish replayed packets with a heartbeat at every ``agent.heartbeat_seconds`` of
        their capture time, in capture-time order: a chunk of a file may span minutes, and a
        heartbeat must reach the pipeline before the watermark passes the windows it covers."""
        times = batch.packets.capture_time_ns.astype(np.int64)
        if times.size == 0:
            return
        if self._watched_from is None:
            self._watched_from = int(times.min())
        interval = int(self.settings.agent.heartbeat_seconds * 1e9)
        base = self._watched_from
        period = np.maximum((times - base) // interval, 0)
        for p in np.unique(period).tolist():
            if p > 0:
                self._heartbeat(base + p * interval)
            rows = period == p
            self.publisher.publish(PacketBatch(batch.eni_ids, frame.Packets(*(np.asarray(c)[rows] for c in batch.packets))))
        self._clock_ns = max(self._clock_ns, int(times.max()))

    def _heartbeat(self, until_ns: int, *, final: bool = False) -> None:
        """Tell the pipeline every inventory ENI was watched up to ``until_ns`` (capture time)
        since the previous heartbeat, once ``agent.heartbeat_seconds`` have passed (or at the end)."""
        start = self._watched_from
        if start is None:
            self._watched_from = until_ns
            return
        if until_ns > start and (final or until_ns - start >= self.settings.agent.heartbeat_seconds * 1e9):
            self.publisher.heartbeat(self.resolver.eni_ids, start, until_ns)
            self._watched_from = until_ns

    def _progress_fields(self) -> dict[str, str | int]:
        rate = self.decoded.packets / max(time.monotonic() - self.started, 1e-9)
        dropped = self.publisher.stats.dropped_packets
        return {
            "packets": self.decoded.packets,
            "rate": f"{rate:,.0f} packets/s",
            "loss": f"[red]{dropped:,} dropped[/]" if dropped else "",
        }


def run_pcap(settings: Settings, files: list[Path], resolver: EniResolver, *, speed: float | None = None) -> dict[str, Any]:
    """Replay capture files into the frames topic; returns the run's summary."""
    run = CaptureRun(settings, [CaptureReader(path) for path in files], resolver, live=False)
    return run.run(speed=speed)
