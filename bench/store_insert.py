"""Store insert cost per flow record: the embedded ClickHouse's CPU with and without the rollup views.

The flow records of --windows windows of --flows distinct flows each (synthetic traffic at
10 packets per flow in 5 s windows, aggregated by the worker's FlowTable and
FlowRecordBuilder: bench/worker.py's 1 M-flow phase) go through the ClickHouseSink — inserts
of 131 k rows under deduplication tokens, as the worker makes them — into a fresh chDB: once
with the schema as it is, once with the rollup views dropped. Each variant runs in its own
process (chDB opens one data directory per process). CPU is that process's user + system
time from the first insert until no merge has run for --settle seconds, all threads (its
own polls of ``system.merges`` included); the
split by thread name covers the threads alive at the end (chDB's insert threads are
unnamed, "Unknown"; its merges "MergeMutate"). Prints a final JSON line: CPU-µs per record
of each variant and the views' share.

    python bench/store_insert.py [--flows 1000000] [--windows 3] [--settle 5]
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

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.synthetic import SyntheticConfig, SyntheticTraffic  # noqa: E402
from bench._common import machine  # noqa: E402
from flowlogs.settings import Settings  # noqa: E402
from pipeline.flow_table import FlowTable  # noqa: E402
from pipeline.records import FlowRecordBuilder  # noqa: E402
from pipeline.sinks.clickhouse import ClickHouseSink  # noqa: E402
from pipeline.store import Store  # noqa: E402
from schemas.rollups import ROLLUPS  # noqa: E402

WINDOW_S = 5
PACKETS_PER_FLOW = 10
VARIANTS = ("views", "no_views")
_TICKS = os.sysconf("SC_CLK_TCK")


def write_records(path: Path, flows: int, windows: int) -> int:
    """The records of ``windows`` windows of ``flows`` flows each into an Arrow IPC file; how many."""
    now = int(time.time())
    start_ns = (now - now % 86_400 - 86_400) * 10**9  # yesterday 00:00 UTC: whole windows, within every TTL
    rate = flows * PACKETS_PER_FLOW / WINDOW_S
    traffic = SyntheticTraffic(SyntheticConfig(
        enis=16, flows=flows, rate=rate, duration=windows * WINDOW_S, pace=False, start_ns=start_ns, zipf=0.0, seed=42,
    ))
    builder = FlowRecordBuilder(list(traffic.eni_ids), traffic.inventory.placement(), WINDOW_S * 10**9)
    table = FlowTable()
    for batch in traffic.batches():
        table.add_packets(batch.packets, batch.packets.eni.astype(np.uint32), WINDOW_S * 10**9)
    records = builder.arrow(builder.columns(table.take((1 << 48) - 1)))
    with pa.OSFile(str(path), "wb") as out, pa.ipc.new_file(out, records.schema) as writer:
        writer.write_table(records)
    return records.num_rows


def process_cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
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


def run_variant(variant: str, records_path: Path, settle: float) -> dict[str, object]:
    """One variant in this process (a fresh chDB under a temporary directory)."""
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
        sink.write([records], dedup_token="bench-store-insert")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1_000_000, help="distinct flows per window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds without a merge that end a variant")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # a child run of one variant
    parser.add_argument("--records", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.records, args.settle)), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="flowlogs-insert-records-") as tmp:
        path = Path(tmp) / "records.arrow"
        rows = write_records(path, args.flows, args.windows)
        print(f"{rows:,} flow records made", file=sys.stderr)
        results = {}
        for variant in VARIANTS:
            out = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--records", str(path), "--settle", str(args.settle)],
                capture_output=True, text=True, check=True,
            )
            results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {variant}: {results[variant]['cpu_us_per_record']} CPU-µs per record", file=sys.stderr)
    with_views, without = results["views"]["cpu_us_per_record"], results["no_views"]["cpu_us_per_record"]
    print(json.dumps({
        "bench": "store_insert",
        "records": rows,
        "flows_per_window": args.flows,
        "windows": args.windows,
        "cpu_us_per_record_with_views": with_views,
        "cpu_us_per_record_without_views": without,
        "views_share_of_cpu": round(1 - without / with_views, 3),
        "variants": results,
        "machine": machine(),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
