"""Agent throughput: packet batches → per-ENI frames → the frames topic (confluent-kafka, lz4).

Batches are generated first (timed separately), so the figure is what the agent's
publishing path sustains: splitting by ENI, encoding frames and producing them until the
brokers acknowledged every one. Prints a final JSON line.

    python bench/agent.py [--packets 10000000] [--enis 16] [--compression lz4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.publisher import FramePublisher  # noqa: E402
from agents.synthetic import SyntheticConfig, SyntheticTraffic  # noqa: E402
from bench._common import bench_settings, machine  # noqa: E402
from flowlogs.kafka import ensure_topics  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--packets", type=int, default=10_000_000)
    p.add_argument("--enis", type=int, default=16)
    p.add_argument("--flows", type=int, default=100_000)
    p.add_argument("--compression", default="lz4", choices=["none", "lz4", "zstd", "snappy", "gzip"])
    args = p.parse_args()

    with bench_settings() as settings:
        settings = settings.with_section("agent", compression=args.compression)
        ensure_topics(settings)
        config = SyntheticConfig(
            enis=args.enis, flows=args.flows, rate=1_000_000, duration=args.packets / 1_000_000,
            pace=False, start_ns=time.time_ns(), seed=7,
        )
        t0 = time.monotonic()
        batches = list(SyntheticTraffic(config).batches())
        generated = time.monotonic() - t0

        publisher = FramePublisher(settings)
        publisher.start()
        t1 = time.monotonic()
        for batch in batches:
            publisher.publish(batch)
        undelivered = publisher.flush(120)
        published = time.monotonic() - t1
        publisher.stop()
    stats = publisher.stats
    print(
        json.dumps(
            {
                "bench": "agent",
                "packets": stats.packets,
                "frames": stats.frames,
                "packets_per_frame": round(stats.packets / stats.frames),
                "compression": args.compression,
                "agent_packets_per_second": round(stats.packets / published),
                "publish_seconds": round(published, 2),
                "generator_packets_per_second": round(stats.packets / generated),
                "delivered_frames": stats.delivered_frames,
                "undelivered_frames": undelivered + stats.failed_frames,
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
