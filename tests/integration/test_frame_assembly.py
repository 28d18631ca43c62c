"""Frames are assembled per ENI across capture batches: full frames when traffic is dense,
frames of at most ``agent.frame_seconds`` of capture time when it is sparse, and nothing
lost, reordered or renumbered on the way (read back from real Kafka). Traffic is published
as fast as it is made, so capture time, not the wall clock, decides."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pytest
from confluent_kafka import Consumer

from agents.publisher import FramePublisher
from agents.synthetic import SyntheticConfig, SyntheticTraffic
from flowlogs.kafka import client_config, ensure_topics
from flowlogs.settings import Settings
from schemas import frame, topics
from tests.integration.test_spine import START_NS

pytestmark = pytest.mark.integration


def publish_and_read(settings: Settings, config: SyntheticConfig) -> dict[str, list[frame.Frame]]:
    """Publish the synthetic traffic, then read every frame back: per ENI, in partition order."""
    publisher = FramePublisher(settings)
    publisher.start()
    for batch in SyntheticTraffic(config).batches():
        publisher.publish(batch)
    publisher.stop()
    assert publisher.stats.delivered_frames == publisher.stats.frames
    consumer = Consumer(client_config(settings, **{"group.id": f"read-{time.time_ns()}", "auto.offset.reset": "earliest"}))
    consumer.subscribe([settings.topic(topics.FRAMES.suffix)])
    frames: dict[str, list[frame.Frame]] = defaultdict(list)
    read, deadline = 0, time.monotonic() + 60
    try:
        while read < publisher.stats.packets and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            decoded = frame.decode(message.value())
            frames[decoded.eni_ids[0]].append(decoded)
            read += decoded.packet_count
    finally:
        consumer.close()
    assert read == publisher.stats.packets == config.rate * config.duration
    for eni_frames in frames.values():
        assert [f.sequence for f in eni_frames] == list(range(len(eni_frames)))
        times = np.concatenate([f.packets.capture_time_ns for f in eni_frames])
        assert (np.diff(times.astype(np.int64)) >= 0).all()  # an ENI's packets in capture order
    return frames


def test_dense_traffic_fills_frames_across_capture_batches(settings_factory) -> None:
    settings = settings_factory(agent={"frame_packets": 1000})
    ensure_topics(settings)
    # Chunks of 1024 packets over 4 ENIs: ~256 packets per ENI per chunk.
    config = SyntheticConfig(enis=4, flows=500, rate=200_000, duration=3, pace=False, start_ns=START_NS, seed=3, chunk_packets=1024)
    frames = publish_and_read(settings, config)
    assert len(frames) == 4
    for eni_frames in frames.values():
        assert {f.packet_count for f in eni_frames[:-1]} == {1000}  # all full but the last
        assert 0 < eni_frames[-1].packet_count <= 1000


def test_sparse_traffic_goes_out_within_frame_seconds_of_capture_time(settings_factory) -> None:
    settings = settings_factory(agent={"frame_packets": 1000, "frame_seconds": 1.0})
    ensure_topics(settings)
    # 250 packets per second per ENI: a full frame would take 4 s of capture time.
    config = SyntheticConfig(enis=4, flows=50, rate=1000, duration=6, pace=False, start_ns=START_NS, seed=4, chunk_packets=64)
    frames = publish_and_read(settings, config)
    for eni_frames in frames.values():
        spans = [f.last_time_ns - f.first_time_ns for f in eni_frames]
        assert max(spans) < 1_000_000_000
        # ~6 s of capture time in frames of up to 1 s (a few more if publishing took over
        # 0.2 s of wall-clock time); unassembled, 64-packet chunks would make ~375 frames.
        assert 5 <= len(eni_frames) < 40
        assert max(f.packet_count for f in eni_frames) < 1000
