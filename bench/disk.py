"""Disk per billion flows: store ≥ 10 M realistic flow records and measure their bytes on disk.

Synthetic traffic (16 ENIs, a Zipf mix of flows, 60 s windows) is aggregated by the
worker's own FlowTable and FlowRecordBuilder into flow records, which go into a fresh
embedded ClickHouse (chDB) through the ClickHouseSink — the flows table with its codecs and
the 1 m / 5 m / 1 h rollups their views fill. After the parts are merged, ``system.parts``
gives the compressed bytes on disk per table; bytes per flow × 10⁹ is the disk per
billion flows. Also reports the insert rate (rows/s into flows + three views, one node).

    python bench/disk.py --records 10000000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.synthetic import SyntheticConfig, SyntheticTraffic  # noqa: E402
from bench._common import machine  # noqa: E402
from flowlogs.settings import Settings  # noqa: E402
from pipeline.flow_table import FlowTable  # noqa: E402
from pipeline.records import FlowRecordBuilder  # noqa: E402
from pipeline.sinks.clickhouse import ClickHouseSink  # noqa: E402
from pipeline.store import Store  # noqa: E402

WINDOW_S = 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--flows", type=int, default=3_000_000, help="distinct flows the traffic draws from")
    parser.add_argument("--packets-per-window", type=int, default=4_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flowlogs-disk-") as tmp:
        store = Store(Settings(home=Path(tmp)))
        store.start()
        sink = ClickHouseSink(store)
        now = int(time.time())
        start_ns = (now - now % 86_400 - 86_400) * 10**9  # yesterday 00:00 UTC: whole windows, within every TTL
        rate = args.packets_per_window / WINDOW_S
        traffic = SyntheticTraffic(SyntheticConfig(enis=16, flows=args.flows, rate=rate, duration=10**6, pace=False, start_ns=start_ns, seed=7, chunk_packets=1_000_000))
        builder = FlowRecordBuilder(list(traffic.eni_ids), traffic.inventory.placement(), WINDOW_S * 10**9)
        window_ns = np.uint64(WINDOW_S * 10**9)
        table, current, stored, insert_seconds = FlowTable(), None, 0, 0.0
        for batch in traffic.batches():
            packets = batch.packets
            table.add_packets(packets, packets.eni.astype(np.uint32), WINDOW_S * 10**9)
            newest = int(packets.capture_time_ns[-1] // window_ns)
            if current is None:
                current = newest
            if newest > current:  # a window is complete: store its records
                records = builder.arrow(builder.columns(table.take(current)))
                started = time.monotonic()
                sink.write([records])
                insert_seconds += time.monotonic() - started
                stored += records.num_rows
                current = newest
                print(f"stored {stored:,} records", file=sys.stderr)
                if stored >= args.records:
                    break
        store.command("OPTIMIZE TABLE flows FINAL")
        _, parts = store.query(
            "SELECT table, sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes), sum(bytes_on_disk)"
            " FROM system.parts WHERE active AND database = currentDatabase() GROUP BY table ORDER BY table"
        )
        store.stop()
    tables = {t: {"rows": int(r), "compressed_bytes": int(c), "uncompressed_bytes": int(u), "bytes_on_disk": int(d)} for t, r, c, u, d in parts}
    flows = tables["flows"]
    per_flow = flows["bytes_on_disk"] / flows["rows"]
    with_rollups = sum(t["bytes_on_disk"] for name, t in tables.items() if name.startswith("flows")) / flows["rows"]
    result = {
        "bench": "disk",
        "records": flows["rows"],
        "bytes_per_flow_raw": round(per_flow, 2),
        "compression_ratio_raw": round(flows["uncompressed_bytes"] / flows["compressed_bytes"], 2),
        "bytes_per_flow_with_rollups": round(with_rollups, 2),
        "gb_per_billion_flows_raw": round(per_flow, 2),  # bytes/flow × 1e9 / 1e9
        "gb_per_billion_flows_with_rollups": round(with_rollups, 2),
        "insert_rows_per_second": round(stored / insert_seconds),
        "tables": tables,
        "machine": machine(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
