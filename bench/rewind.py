"""Rewind memory and speed: a long range streams through a bounded amount of memory.

Pre-loads ``--packets`` packets (``--flows`` flows, ``--rate`` packets/s of capture time)
onto a fresh frames topic, then rewinds the first quarter of the range and the whole range
(5 s windows), each in a fresh process writing to its own chDB, and reports each one's
peak RSS and packets/s. The documented bound (pipeline/rewind.py): the flows of one
partition's frames within ``FrameRange.margin`` + one window are open at a time, so peak
memory depends on flows per window, not on the range's length.

    python bench/rewind.py --packets 40000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.publisher import FramePublisher  # noqa: E402
from agents.synthetic import SyntheticConfig, SyntheticTraffic  # noqa: E402
from bench._common import bench_settings, machine  # noqa: E402
from flowlogs.kafka import ensure_topics  # noqa: E402
from flowlogs.settings import Settings  # noqa: E402


def child(settings_json: str, since: int, until: int) -> None:
    """One rewind in this process; prints its figures as JSON."""
    from pipeline.results import open_result_sets
    from pipeline.snapshots import create_rewind

    settings = Settings.model_validate_json(settings_json)
    started = time.monotonic()
    with open_result_sets(settings) as results:
        made = create_rewind(settings, results, f"bench-{until - since}", since, until, window_seconds=5)
    seconds = time.monotonic() - started
    assert made is not None
    print(json.dumps({
        "range_seconds": until - since, "packets": made["packets"], "flows": made["flows"], "seconds": round(seconds, 2),
        "packets_per_second": round(made["packets"] / seconds), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=40_000_000)
    parser.add_argument("--rate", type=float, default=200_000, help="packets per second of capture time")
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    with bench_settings(window_seconds=60) as settings:
        ensure_topics(settings)
        duration = args.packets / args.rate
        since = int(time.time()) - int(duration) - 60
        since -= since % 60
        config = SyntheticConfig(enis=16, flows=args.flows, rate=args.rate, duration=duration, pace=False, start_ns=since * 10**9, seed=3)
        publisher = FramePublisher(settings)
        publisher.start()
        for batch in SyntheticTraffic(config).batches():
            publisher.publish(batch)
        publisher.stop()
        print(f"pre-loaded {publisher.stats.packets:,} packets", file=sys.stderr)
        runs = []
        for part in (4, 1):
            until = since + int(duration / part)
            home = settings.home / f"rewind-{part}"
            one = settings.model_copy(update={"home": home})
            out = subprocess.run(
                [sys.executable, __file__, "--child", one.model_dump_json(), str(since), str(until)],
                capture_output=True, text=True, check=True,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(runs[-1], file=sys.stderr)
    print(json.dumps({"bench": "rewind", "flows_per_window": args.flows, "rate": args.rate, "runs": runs, "machine": machine()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
