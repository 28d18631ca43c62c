"""Run a capture source into the frames topic, with progress and a final summary."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

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
