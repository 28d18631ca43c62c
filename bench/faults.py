"""Crash-safety soak: SIGKILL the worker at many random moments while frames flow.

A paced synthetic agent publishes for ``--seconds``; meanwhile the worker (real Apache
Kafka, real chDB) is killed with SIGKILL ``--kills`` times at random moments and restarted
each time. Afterwards the stored totals per ENI must equal what the agent sent, exactly.
Prints progress on stderr and one JSON line of results on stdout.

    python bench/faults.py --kills 50
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.publisher import PublisherStats  # noqa: E402
from agents.runner import run_synthetic  # noqa: E402
from agents.synthetic import SyntheticConfig  # noqa: E402
from bench._common import bench_settings, machine  # noqa: E402
from flowlogs.kafka import ensure_topics  # noqa: E402
from pipeline.process import WorkerProcess  # noqa: E402


def stored_per_eni(worker: WorkerProcess) -> dict[str, list[int]]:
    _, rows = worker.query("SELECT interface_id, sum(packets), sum(bytes) FROM flows GROUP BY interface_id")
    return {eni: [int(p), int(b)] for eni, p, b in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--rate", type=int, default=25_000, help="packets per second")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    # Long enough for every kill: a restart (Faust start, group join) takes a few seconds.
    seconds = args.kills * 5
    with bench_settings(window_seconds=5, idle_close_seconds=2.0, allowed_lateness_seconds=1.0) as settings:
        settings = settings.with_section("kafka", session_timeout_seconds=6).with_section("store", batch_seconds=0.3)
        ensure_topics(settings)
        sent: list[PublisherStats] = []
        config = SyntheticConfig(enis=6, flows=3000, rate=args.rate, duration=seconds, pace=True, seed=args.seed, chunk_packets=2048)
        agent = threading.Thread(target=lambda: sent.append(run_synthetic(settings, config)), daemon=True)
        worker = WorkerProcess(settings).start()
        agent.start()
        started = time.monotonic()
        kills = 0
        while kills < args.kills or agent.is_alive():
            time.sleep(rng.uniform(0.5, 4.0))
            worker.kill()
            kills += 1
            worker = WorkerProcess(settings).start()
            print(f"kill {kills}: {time.monotonic() - started:.0f} s", file=sys.stderr)
        agent.join(300)
        want = {eni: [c.packets, c.bytes] for eni, c in sent[0].per_eni.items()}
        deadline = time.monotonic() + 300
        stored: dict[str, list[int]] = {}
        while time.monotonic() < deadline:
            stats = worker.stats()
            stored = stored_per_eni(worker)
            if stats["open_windows"] == 0 and stats["pending_rows"] == 0 and stored == want:
                break
            time.sleep(1)
        worker.stop()
        result = {
            "bench": "faults",
            "kills": kills,
            "packets_sent": sum(p for p, _ in want.values()),
            "packets_stored": sum(p for p, _ in stored.values()),
            "exact_per_eni": stored == want,
            "failed_frames": sent[0].failed_frames,
            "seconds": round(time.monotonic() - started, 1),
            "machine": machine(),
        }
    print(json.dumps(result), flush=True)
    return 0 if result["exact_per_eni"] else 1


if __name__ == "__main__":
    sys.exit(main())
