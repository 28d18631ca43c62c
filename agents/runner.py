"""Run a capture source into the frames topic, with progress and a final summary."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pathlib import Path

from rich.console import Console
from rich.progress import Progress, TextColumn, TimeElapsedColumn

from agents.decode import DecodeStats, decode
from agents.enis import EniResolver
from agents.pcap import CaptureReader
from agents.publisher import FramePublisher, PublisherStats
from agents.synthetic import SyntheticConfig, SyntheticTraffic
from flowlogs.kafka import ensure_topics
from flowlogs.settings import Settings

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


def run_pcap(settings: Settings, files: list[Path], resolver: EniResolver, *, speed: float | None = None) -> dict[str, object]:
    """Replay capture files into the frames topic; returns a summary of what was read and sent.

    ``speed`` None = as fast as possible; 1.0 = capture pace; 2.0 = twice as fast.
    """
    ensure_topics(settings)
    publisher = FramePublisher(settings)
    publisher.start()
    decoded = DecodeStats()
    readers = [CaptureReader(path) for path in files]
    started = time.monotonic()
    first_capture_ns: int | None = None
    try:
        with Progress(
            TextColumn("{task.description}"), TextColumn("{task.fields[packets]:,} packets"),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=Console(stderr=True),
        ) as progress:
            for reader in readers:
                task = progress.add_task(reader.path.name, total=None, packets=0, rate="")
                for raw in reader.chunks():
                    packets = decode(raw, decoded)
                    if speed and packets.size:
                        first = int(packets.capture_time_ns.min())
                        first_capture_ns = first if first_capture_ns is None else first_capture_ns
                        due = (int(packets.capture_time_ns.max()) - first_capture_ns) / 1e9 / speed
                        if (delay := due - (time.monotonic() - started)) > 0:
                            time.sleep(delay)
                    batch = resolver.resolve(packets)
                    if batch.packets.size:
                        publisher.publish(batch)
                    rate = decoded.packets / max(time.monotonic() - started, 1e-9)
                    progress.update(task, packets=reader.stats.packets, rate=f"{rate:,.0f} packets/s")
    finally:
        publisher.stop()
    return {
        "files": len(files),
        "packets_read": decoded.packets,
        "ip_packets": decoded.ip_packets,
        "non_ip": decoded.non_ip,
        "too_short": decoded.too_short,
        "unknown_linktype": decoded.unknown_linktype,
        "truncated_records": sum(r.stats.truncated_records for r in readers),
        "unmatched": resolver.stats.unmatched,
        "packets_sent": publisher.stats.packets,
        "frames": publisher.stats.frames,
        "failed_frames": publisher.stats.failed_frames,
        "seconds": round(time.monotonic() - started, 3),
    }
