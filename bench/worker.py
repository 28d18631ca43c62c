"""Worker throughput: frames pre-loaded in Kafka, then one worker process reads them all.

The traffic models a live link: --rate packets/s of capture time (default 2 M, the target),
--flows distinct flows per window (uniform popularity, so nearly all appear), --window
seconds per window. Prints a final JSON line: packets/s from the first frame read to the
last, and how long until every flow row was in the store.

    python bench/worker.py [--packets 30000000] [--rate 2000000] [--flows 100000] [--window 5]
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
from pipeline.process import WorkerProcess  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--packets", type=int, default=30_000_000)
    p.add_argument("--rate", type=float, default=2_000_000, help="capture-time packets per second")
    p.add_argument("--flows", type=int, default=100_000, help="distinct flows per window")
    p.add_argument("--window", type=int, default=5, help="window seconds")
    args = p.parse_args()

    with bench_settings(window_seconds=args.window, idle_close_seconds=2.0) as settings:
        ensure_topics(settings)
        duration = args.packets / args.rate
        start_ns = (int(time.time()) // args.window * args.window - int(duration) - 120) * 1_000_000_000
        config = SyntheticConfig(
            enis=16, flows=args.flows, rate=args.rate, duration=duration,
            pace=False, start_ns=start_ns, zipf=0.0, seed=42,
        )
        publisher = FramePublisher(settings)
        publisher.start()
        t0 = time.monotonic()
        for batch in SyntheticTraffic(config).batches():
            publisher.publish(batch)
        publisher.stop()
        preload_s = time.monotonic() - t0
        sent = publisher.stats.packets
        print(f"pre-loaded {sent:,} packets in {publisher.stats.frames:,} frames ({preload_s:.1f} s)", file=sys.stderr)

        worker = WorkerProcess(settings).start()
        try:
            first = done = None
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                stats = worker.stats()
                now = time.monotonic()
                if first is None and stats["packets_in"] > 0:
                    first = now
                if stats["packets_in"] >= sent:
                    done = now
                    break
                time.sleep(0.05)
            if first is None or done is None:
                raise SystemExit(f"worker did not read everything: {worker.stats()}")
            while worker.stats()["open_windows"] or worker.stats()["pending_rows"]:
                time.sleep(0.1)
            stored = time.monotonic()
            final = worker.stats()
            _, rows = worker.query("SELECT count(), sum(packets), uniqExact(interface_id, srcaddr, dstaddr, srcport, dstport, protocol, flow_direction, window_start) FROM flows")
        finally:
            worker.stop()
    records, stored_packets, distinct = (int(v) for v in rows[0])
    result = {
        "bench": "worker",
        "packets": sent,
        "capture_rate": args.rate,
        "window_seconds": args.window,
        "flows_per_window": round(records / max(1, round(duration / args.window))),
        "worker_packets_per_second": round(sent / (done - first)),
        "read_seconds": round(done - first, 2),
        "seconds_until_all_rows_stored": round(stored - first, 2),
        "flow_rows": records,
        "stored_packets_equal_sent": stored_packets == sent,
        "rows_unique": distinct == records,
        "write_failures": final["write_failures"],
        "late_packets": final["late_packets"],
        "machine": machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
