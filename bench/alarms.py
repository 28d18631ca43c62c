"""Alarm latency: from the close of the window that shows an incident to its alert on the topic.

A paced synthetic agent plants every scenario (agents/scenarios.py) into ordinary traffic;
one worker (real Apache Kafka, real chDB) detects; an alerts-topic consumer reads what it
raises. Two figures per alert update:

* ``close_to_topic``: the worker's own measure — from the first close of the batch the
  alert came from to Kafka acknowledging the alert (the issue's "window close → alerts
  topic"), p50/p99/max over every batch that raised alerts;
* ``window_end_to_topic``: from the end of the alert's newest window (event time) to the
  alert's Kafka timestamp — includes the allowed lateness the window waits before closing.

Prints progress on stderr and one JSON line of results on stdout.

    python bench/alarms.py --seconds 120 --window 10
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Consumer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import scenarios  # noqa: E402
from agents.publisher import PublisherStats  # noqa: E402
from agents.runner import run_synthetic  # noqa: E402
from agents.synthetic import SyntheticConfig, synthetic_inventory  # noqa: E402
from bench._common import bench_settings, machine  # noqa: E402
from flowlogs.kafka import client_config, ensure_topics  # noqa: E402
from pipeline.process import WorkerProcess  # noqa: E402
from schemas import topics  # noqa: E402


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    a = np.array(values)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3), "max": round(float(a.max()), 3), "n": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50_000, help="packets per second")
    parser.add_argument("--flows", type=int, default=20_000)
    parser.add_argument("--enis", type=int, default=8)
    args = parser.parse_args()
    with bench_settings(window_seconds=args.window) as settings:
        home = settings.home
        home.mkdir(parents=True, exist_ok=True)
        inventory = home / "inventory.yaml"
        synthetic_inventory(args.enis, 1).dump(inventory)
        lists = home / "lists"
        lists.mkdir()
        (lists / "demo-threats.netset").write_text(scenarios.THREAT_LIST)
        eni_ids = [e.id for e in synthetic_inventory(args.enis, 1).enis]
        detect = scenarios.scenario_settings(scenarios.SCENARIOS, eni_ids, args.rate, args.window)
        settings = settings.model_copy(update={
            "worker": settings.worker.model_copy(update={"inventory": inventory}),
            "detect": settings.detect.model_validate({**settings.detect.model_dump(), **detect, "threat_ip": {"lists": [lists]}}),
        })
        ensure_topics(settings)
        consumer = Consumer(client_config(settings, **{"group.id": "bench-alerts", "auto.offset.reset": "earliest"}))
        consumer.subscribe([settings.topic(topics.ALERTS.suffix)])
        worker = WorkerProcess(settings).start()
        sent: list[PublisherStats] = []
        config = SyntheticConfig(
            enis=args.enis, flows=args.flows, rate=args.rate, duration=args.seconds, seed=1,
            scenarios=scenarios.SCENARIOS, scenario_starts_after=3 * args.window, chunk_packets=8192,
        )
        agent = threading.Thread(target=lambda: sent.append(run_synthetic(settings, config)), daemon=True)
        agent.start()
        lateness = settings.worker.allowed_lateness_seconds
        window_end_to_topic: list[float] = []
        alerts: dict[str, dict] = {}
        deadline = time.monotonic() + args.seconds + 4 * args.window + 60
        while (agent.is_alive() or time.monotonic() < deadline - 50) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            alert = orjson.loads(message.value())
            alerts[alert["alert-id"]] = alert
            _, stamp_ms = message.timestamp()
            if alert["state"] == "open":  # a close comes a quiet period after its last window, by design
                window_end_to_topic.append(stamp_ms / 1000 - alert["last-seen"])
            print(f"{alert['detector']} {alert['state']} #{alert['updates']}: {alert['summary']}", file=sys.stderr)
        stats = worker.stats()
        worker.stop()
        consumer.close()
        result = {
            "bench": "alarms",
            "window_seconds": args.window,
            "allowed_lateness_seconds": lateness,
            "batch_seconds": settings.store.batch_seconds,
            "packets_per_second": args.rate,
            "flows": args.flows,
            "close_to_topic_seconds": percentiles(stats["alert_latencies"]),
            "window_end_to_topic_seconds": percentiles(window_end_to_topic),
            "alerts": sorted({(a["detector"], a["source"]) for a in alerts.values()}),
            "alert_messages": len(window_end_to_topic),
            "detect_seconds_total": stats["detect_seconds"],
            "packets_sent": sent[0].packets if sent else None,
            "machine": machine(),
        }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
