"""Flow-record cost: the CPU each flow record costs after aggregation, stage by stage.

A worker's CPU goes to packets (decode, aggregate) and to flow records (verdicts and
building, detection, the flows topic, the store). The window length sets how many records
a packet rate makes: 1 M flows per 5 s window are 200 k records/s, per 60 s window 17 k/s.
This bench prices the records, so that a records/s target can be sized in cores.

The records are those of bench/worker.py's 1 M-flow phase: --windows windows of --flows
distinct flows (synthetic traffic, 16 ENIs, uniform flow popularity, 10 packets a flow,
5 s windows) under the same rule set (bench/verdicts.py's generator), aggregated by the
worker's FlowTable in four partitions (ENI index mod 4), each window of each partition one
close, as the worker makes them. Then each stage alone, CPU as user + system time of every
thread of the processes it runs in:

* ``build``: verdicts and record columns (``FlowRecordBuilder.columns``) and the Arrow table
  (``.arrow``), close by close.
* ``detect``: the detectors (``Detectors.observe``) close by close, their state growing as
  in a worker.
* ``flows_topic``: the closes' tables through ``FlowTopicSink`` to a real broker, until
  acknowledged: the worker's side (Arrow IPC to the pipe), the producer process (JSON
  rendering, the Kafka client) and the broker, each reported.
* ``store``: the records inserted into a fresh chDB as ``ClickHouseSink`` does (inserts of
  131 k rows under deduplication tokens), CPU until no merge has run for --settle seconds;
  once with the schema as it is and once with the rollup views dropped, each in its own
  process (chDB opens one data directory per process). The split by thread name covers the
  threads alive at the end (chDB's insert threads are unnamed, "Unknown"; its merges
  "MergeMutate").

Prints progress on stderr and a final JSON line: CPU-µs per record of each stage, their
sum, and the records per second one core sustains at that cost.

    python bench/record_cost.py [--flows 1000000] [--windows 3] [--settle 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.synthetic import SyntheticConfig, SyntheticTraffic  # noqa: E402
from bench._common import broker, fresh_settings, machine  # noqa: E402
from bench.worker import ENIS, SEED, verdict_files  # noqa: E402
from flowlogs.kafka import ensure_topics  # noqa: E402
from flowlogs.settings import Settings  # noqa: E402
from pipeline.detect.detectors import Detectors  # noqa: E402
from pipeline.flow_table import FlowTable  # noqa: E402
from pipeline.records import FlowRecordBuilder  # noqa: E402
from pipeline.rulebook import RuleBook  # noqa: E402
from pipeline.sinks.clickhouse import ClickHouseSink  # noqa: E402
from pipeline.sinks.flows_process import FlowTopicSink  # noqa: E402
from pipeline.store import Store  # noqa: E402
from schemas.frame import Packets  # noqa: E402
from schemas.inventory import Inventory, load_inventory  # noqa: E402
from schemas.rollups import ROLLUPS  # noqa: E402

WINDOW_S = 5
PACKETS_PER_FLOW = 10
PARTITIONS = 4
STORE_VARIANTS = ("views", "no_views")
_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- CPU and memory of processes and threads -----------------------------------------------
def process_cpu_seconds(pid: int | str = "self") -> float:
    """User + system seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def thread_cpu_seconds() -> dict[str, float]:
    by_name: Counter[str] = Counter()
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip().rstrip("0123456789")
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        by_name[name] += (int(fields[11]) + int(fields[12])) / _TICKS
    return {name: round(seconds, 1) for name, seconds in by_name.most_common()}


def rss_mb(field: str) -> int:
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0]) // 1024


def java_child() -> int | None:
    """The pid of the local broker this process started (a java child), if any."""
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            if b"java" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
    return None


# -- the records ------------------------------------------------------------------------------
def make_closes(home: Path, flows: int, windows: int) -> tuple[list[Any], FlowRecordBuilder, Inventory, list[str]]:
    """The flows of each (window, partition), as the worker's closes hand them to the builder."""
    files = verdict_files(home, SEED)
    now = int(time.time())
    start_ns = (now - now % 86_400 - 86_400) * 10**9  # yesterday 00:00 UTC: whole windows, within every TTL
    traffic = SyntheticTraffic(SyntheticConfig(
        enis=ENIS, flows=flows, rate=flows * PACKETS_PER_FLOW / WINDOW_S, duration=windows * WINDOW_S,
        pace=False, start_ns=start_ns, zipf=0.0, seed=SEED,
    ))
    inventory = load_inventory(Path(files["inventory"]))
    eni_ids = list(traffic.eni_ids)
    builder = FlowRecordBuilder(eni_ids, inventory.placement(), WINDOW_S * 10**9, RuleBook(inventory, eni_ids, Path(files["rules"])))
    tables = [FlowTable() for _ in range(PARTITIONS)]
    for batch in traffic.batches():
        eni = batch.packets.eni.astype(np.uint32)
        for p, table in enumerate(tables):
            mine = np.flatnonzero(eni % PARTITIONS == p)
            table.add_packets(Packets(*(column[mine] for column in batch.packets)), eni[mine], WINDOW_S * 10**9)
    first = start_ns // (WINDOW_S * 10**9)
    closes = [table.take(first + w) for w in range(windows) for table in tables]
    return [c for c in closes if c.size], builder, inventory, eni_ids


def stage_build(closes: list[Any], builder: FlowRecordBuilder) -> tuple[float, list[dict[str, Any]], list[pa.Table]]:
    cpu = process_cpu_seconds()
    columns = [builder.columns(c) for c in closes]
    tables = [builder.arrow(c) for c in columns]
    return process_cpu_seconds() - cpu, columns, tables


def stage_detect(settings: Settings, inventory: Inventory, eni_ids: list[str], columns: list[dict[str, Any]]) -> tuple[float, int]:
    detectors = Detectors(settings, inventory, eni_ids)
    cpu, alerts = process_cpu_seconds(), 0
    for cols in columns:
        alerts += len(detectors.observe([cols]))
    return process_cpu_seconds() - cpu, alerts


def stage_flows_topic(settings: Settings, tables: list[pa.Table]) -> dict[str, float | None]:
    ensure_topics(settings)
    sink = FlowTopicSink(settings)
    broker_pid = java_child()
    try:
        sink.write([tables[0].slice(0, 1)])  # the producer process started and connected, not timed
        child = sink.pid
        assert child is not None
        before = (process_cpu_seconds(), process_cpu_seconds(child), process_cpu_seconds(broker_pid) if broker_pid else 0.0)
        started = time.monotonic()
        for table in tables:
            sink.write([table], timeout=300)
        seconds = time.monotonic() - started
        after = (process_cpu_seconds(), process_cpu_seconds(child), process_cpu_seconds(broker_pid) if broker_pid else 0.0)
    finally:
        sink.stop()
    worker, producer, kafka = (a - b for a, b in zip(after, before))
    return {"worker": worker, "producer_process": producer, "broker": kafka if broker_pid else None, "seconds": seconds}


def store_variant(variant: str, records_path: Path, settle: float) -> dict[str, object]:
    """One store variant in this process (a fresh chDB under a temporary directory)."""
    records = pa.ipc.open_file(str(records_path)).read_all()
    with tempfile.TemporaryDirectory(prefix="flowlogs-insert-") as tmp:
        store = Store(Settings(home=Path(tmp)))
        store.start()
        if variant == "no_views":
            for rollup in ROLLUPS:
                store.command(f"DROP VIEW {rollup.view}")
        sink = ClickHouseSink(store)
        base_rss = rss_mb("VmRSS")
        cpu_before, started = process_cpu_seconds(), time.monotonic()
        sink.write([records], dedup_token="bench-record-cost")
        inserted_seconds = time.monotonic() - started
        quiet_since, deadline = time.monotonic(), time.monotonic() + 300
        while time.monotonic() - quiet_since < settle and time.monotonic() < deadline:
            _, [(merging,)] = store.query("SELECT count() FROM system.merges")
            if merging:
                quiet_since = time.monotonic()
            time.sleep(0.2)
        cpu = process_cpu_seconds() - cpu_before
        _, parts = store.query("SELECT table, count(), sum(rows) FROM system.parts WHERE active AND database = currentDatabase() GROUP BY table")
        threads = thread_cpu_seconds()
        store.stop()
    return {
        "variant": variant,
        "records": records.num_rows,
        "cpu_seconds": round(cpu, 2),
        "cpu_us_per_record": round(cpu / records.num_rows * 1e6, 2),
        "insert_seconds": round(inserted_seconds, 2),
        "peak_rss_growth_mb": rss_mb("VmHWM") - base_rss,
        "thread_cpu_seconds": threads,
        "parts": {table: {"parts": int(count), "rows": int(rows)} for table, count, rows in parts},
    }


def stage_store(tables: list[pa.Table], tmp: Path, settle: float) -> dict[str, Any]:
    path = tmp / "records.arrow"
    records = pa.concat_tables(tables)
    with pa.OSFile(str(path), "wb") as out, pa.ipc.new_file(out, records.schema) as writer:
        writer.write_table(records)
    results = {}
    for variant in STORE_VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--store-variant", variant, "--records", str(path), "--settle", str(settle)],
            capture_output=True, text=True, check=True,
        )
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        log(f"  store, {variant}: {results[variant]['cpu_us_per_record']} CPU-µs per record")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1_000_000, help="distinct flows per window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds without a merge that end a store variant")
    parser.add_argument("--store-variant", choices=STORE_VARIANTS, help=argparse.SUPPRESS)  # a child run
    parser.add_argument("--records", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.store_variant:
        print(json.dumps(store_variant(args.store_variant, args.records, args.settle)), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="flowlogs-record-cost-") as tmp_name:
        tmp = Path(tmp_name)
        closes, builder, inventory, eni_ids = make_closes(tmp / "home", args.flows, args.windows)
        rows = sum(c.size for c in closes)
        log(f"{rows:,} flow records in {len(closes)} closes")
        us = {}  # CPU-µs per record of each stage

        def per_record(seconds: float) -> float:
            return round(seconds / rows * 1e6, 2)

        seconds, columns, tables = stage_build(closes, builder)
        us["build"] = per_record(seconds)
        log(f"  build: {us['build']} CPU-µs per record")
        seconds, alerts = stage_detect(Settings(home=tmp / "home"), inventory, eni_ids, columns)
        us["detect"] = per_record(seconds)
        log(f"  detect: {us['detect']} CPU-µs per record ({alerts} alert records)")
        del columns, closes
        with broker(tmp) as bootstrap:
            topic = stage_flows_topic(fresh_settings(bootstrap, tmp / "topic"), tables)
        topic_parts = {k: per_record(v) for k, v in topic.items() if k != "seconds" and v is not None}
        us["flows_topic"] = round(sum(topic_parts.values()), 2)
        log(f"  flows topic: {us['flows_topic']} CPU-µs per record {topic_parts} in {topic['seconds']:.1f} s")
        store = stage_store(tables, tmp, args.settle)
        us["store"] = store["views"]["cpu_us_per_record"]
    total = round(sum(us.values()), 2)
    print(json.dumps({
        "bench": "record_cost",
        "records": rows,
        "flows_per_window": args.flows,
        "windows": args.windows,
        "window_seconds": WINDOW_S,
        "cpu_us_per_record": us,
        "cpu_us_per_record_total": total,
        "records_per_second_per_core": round(1e6 / total),
        "flows_topic_cpu_us_per_record": topic_parts,
        "flows_topic_seconds": round(topic["seconds"], 1),
        "store_cpu_us_per_record_without_views": store["no_views"]["cpu_us_per_record"],
        "store_views_share": round(1 - store["no_views"]["cpu_us_per_record"] / store["views"]["cpu_us_per_record"], 3),
        "store_variants": store,
        "machine": machine(),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
