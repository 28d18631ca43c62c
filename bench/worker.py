"""Worker benchmark: throughput at 100 k and 1 M flows per window, peak memory, and latency.

One run, four phases, each with its own topics, consumer group, chDB store and worker
process (`flowlogs worker`, started by WorkerProcess) on one shared local broker:

1. Throughput, --flows[0] (100 k) distinct flows per --window (5 s, the shortest a flow log
   may ask for) and --packets packets,
2. the same with --flows[1] (1 M) distinct flows per window, and
3. throughput, --default-window-flows (1 M) distinct flows per window of the default length
   (60 s) and one whole window of packets at --rate (120 M). The window length sets the
   flow records a packet rate makes: at 2 M packets/s and 1 M flows a window, 200 k records/s
   with 5 s windows (10 packets a flow), 17 k/s with 60 s windows (120 packets a flow).
   Frames modelling a live link (--rate packets/s of capture time, uniform flow popularity
   so nearly every flow appears in every window) are pre-loaded into Kafka before the
   worker starts, so what is timed is the worker alone. Two rates per phase:
   ``packets_per_second_read`` (first frame read → last frame read; writes of the windows
   that close on the way are included, since the consumer waits for them) and
   ``packets_per_second_until_stored`` (first frame read → every row in the store; this
   also includes the final windows, which — no newer traffic coming — close only after
   ``idle_close_seconds``). Each phase checks itself against the store: stored packets
   equal packets sent, no flow row repeated.
   The 1 M phases also give the worker's peak memory (the higher of the two): VmHWM of the
   worker process (chDB, the Kafka consumer and the windows live in it) plus the VmHWM of
   its child process (the flows-topic producer), summed.
4. Latency: a worker consuming live, paced traffic (--latency-rate packets/s, capture time =
   wall clock, Zipf flow popularity as the synthetic agent's default) for --latency-seconds,
   while the store is polled every --poll seconds for each (window, ENI)'s rows. Per
   (window, ENI): queryable = time the poll that first returned its rows came back;
   latency = queryable − capture time of the window's last packet of that ENI. Per packet:
   queryable − its capture time (capture times counted in 100 ms bins). Only windows that
   close on the watermark are counted (starting after the worker began consuming, ending at
   least allowed lateness + 1 s before the traffic stops); the last ones, closed on
   idleness, are reported apart.

Prints progress on stderr and a final JSON line on stdout. Its top-level fields from
``packets`` to ``late_packets`` are those of the first throughput phase (as before).

The throughput phases' records go to both destinations, the store and the flows topic, as a
fresh install sends them; ``--destinations store`` runs them with a flow log that sends them
to the store only (bench/record_cost.py prices each destination per record).

    python bench/worker.py [--packets 30000000] [--rate 2000000] [--flows 100000 1000000]
        [--window 5] [--default-window-flows 1000000] [--latency-rate 200000]
        [--latency-seconds 90] [--latency-window 10] [--destinations store topic]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from confluent_kafka import Consumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.publisher import FramePublisher  # noqa: E402
from agents.source import PacketBatch  # noqa: E402
from agents.synthetic import SyntheticConfig, SyntheticTraffic, synthetic_inventory  # noqa: E402
from bench import verdicts as verdicts_bench  # noqa: E402
from bench._common import broker, fresh_settings, machine  # noqa: E402
from flowlogs.kafka import client_config, ensure_topics  # noqa: E402
from flowlogs.settings import Settings, WorkerSettings  # noqa: E402
from pipeline import flow_log_registry  # noqa: E402
from pipeline.process import WorkerProcess  # noqa: E402
from schemas import topics  # noqa: E402
from schemas.flow_logs import DESTINATIONS, FlowLog, FlowLogChange  # noqa: E402

ENIS = 16
SEED = 42
DEFAULT_WINDOW = WorkerSettings.model_fields["window_seconds"].default  # what a flow log gets unless it asks otherwise
# How often /stats is asked while the worker reads and writes. At 20 times a second the HTTP
# handling took 13.5 % of the worker's main thread (py-spy, 100 k flows per window): time a
# deployed worker does not spend.
STATS_POLL_SECONDS = 0.25
ROW_CHECK_SQL = (
    "SELECT count(), sum(packets), uniqExact(interface_id, srcaddr, dstaddr, srcport, dstport, protocol,"
    " flow_direction, window_start) FROM flows"
)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- what the machine and the worker process are doing ------------------------------------
def load_average() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def proc_status_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM … of /proc/<pid>/status, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Vm"):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def describe_process(pid: int) -> dict[str, Any]:
    """Is WorkerProcess.pid the Python worker itself? Its command line, executable, children."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return {
        "pid_command": " ".join(a.decode() for a in cmdline if a),
        "pid_executable": os.readlink(f"/proc/{pid}/exe"),
        "child_processes": len(children(pid)),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of the same name summed)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return out


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class Usage:
    """CPU used by the worker process and the whole machine between two points in time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.monotonic()
        self.cpu0 = cpu_seconds(pid)
        self.threads0 = thread_cpu_seconds(pid)
        self.machine0 = machine_busy()

    def report(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        busy0, total0 = self.machine0
        busy1, total1 = machine_busy()
        threads = thread_cpu_seconds(self.pid)
        used = {name: round(cpu - self.threads0.get(name, 0.0), 1) for name, cpu in threads.items()}
        top = dict(sorted(used.items(), key=lambda kv: -kv[1])[:6])
        return {
            "worker_cpu_cores": round((cpu_seconds(self.pid) - self.cpu0) / wall, 2),
            "machine_cpu_busy": round((busy1 - busy0) / max(1, total1 - total0), 2),
            "worker_thread_cpu_seconds": top,
        }


def non_default(settings: Settings) -> dict[str, Any]:
    """Settings that differ from the defaults, except the per-run names, ports and paths."""
    volatile = {("kafka", "bootstrap_servers"), ("kafka", "topic_prefix"), ("worker", "app_id"), ("worker", "api_port"), ("agent", "agent_id")}
    out = {}
    for section, value in settings.model_dump(mode="json").items():
        field = Settings.model_fields[section]
        if not isinstance(value, dict):
            continue
        default = field.annotation().model_dump(mode="json") if isinstance(field.annotation, type) else {}
        for key, v in value.items():
            if (section, key) not in volatile and default.get(key) != v:
                out[f"{section}.{key}"] = v
    return out


def wait_until_written(worker: WorkerProcess, timeout: float, on_poll: Any = None) -> dict[str, Any]:
    """Poll /stats until no window is open and no row waits to be written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = worker.stats()
        if on_poll:
            on_poll(stats)
        if not stats["open_windows"] and not stats["pending_rows"]:
            return stats
        time.sleep(STATS_POLL_SECONDS)
    raise SystemExit(f"the worker did not write everything within {timeout:.0f} s: {worker.stats()}")


# -- phases 1 to 3: throughput on a pre-loaded backlog -----------------------------------
class Phase(NamedTuple):
    """One throughput phase: distinct flows per window, window seconds, packets pre-loaded."""

    flows: int
    window: int
    packets: int


def preload(settings: Settings, phase: Phase, args: argparse.Namespace) -> tuple[int, float]:
    """Publish the phase's packets at --rate of capture time, ending two minutes ago; (sent, seconds)."""
    duration = phase.packets / args.rate
    start_ns = (int(time.time()) // phase.window * phase.window - int(duration) - 120) * 1_000_000_000
    config = SyntheticConfig(
        enis=ENIS, flows=phase.flows, rate=args.rate, duration=duration,
        pace=False, start_ns=start_ns, zipf=0.0, seed=SEED,
    )
    publisher = FramePublisher(settings)
    publisher.start()
    t0 = time.monotonic()
    for batch in SyntheticTraffic(config).batches():
        publisher.publish(batch)
    publisher.stop()
    seconds = time.monotonic() - t0
    stats = publisher.stats
    log(f"  pre-loaded {stats.packets:,} packets in {stats.frames:,} frames ({seconds:.1f} s)")
    # What the worker must read, checked before it starts: else a frame lost on the way makes
    # the phase wait for packets that will never come.
    held = frames_held(settings)
    if stats.delivered_frames != stats.frames or stats.dropped_packets or held != stats.delivered_frames:
        raise SystemExit(
            f"pre-load incomplete: {stats.frames} frames produced, {stats.delivered_frames} acknowledged by Kafka,"
            f" {stats.failed_frames} refused, {stats.dropped_packets} packets dropped; the frames topic holds {held}"
        )
    return stats.packets, seconds


def frames_held(settings: Settings) -> int:
    """Messages in the (fresh) frames topic: the sum of its partitions' high watermarks."""
    topic = settings.topic(topics.FRAMES.suffix)
    consumer = Consumer(client_config(settings, **{"group.id": f"{settings.worker.app_id}-bench-count"}))
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions)
    finally:
        consumer.close()


def verdict_files(home: Path, seed: int) -> dict[str, str]:
    """Worker settings that put a realistic rule set in force for the synthetic ENIs: the
    generator of bench/verdicts.py (30 groups of 200 policies per direction, 3 groups per
    ENI, a 50-entry ACL per subnet), bound to the ENIs and subnets of the traffic."""
    inventory = synthetic_inventory(ENIS, seed)
    shape = argparse.Namespace(enis=ENIS, groups=30, groups_per_eni=3, policies=200, acl_entries=50)
    _, generated = verdicts_bench.build(shape, random.Random(seed))
    subnets = [s.id for s in inventory.subnets]
    rules = generated.model_copy(update={
        "bindings": tuple(b.model_copy(update={"eni": e.id}) for b, e in zip(generated.bindings, inventory.enis)),
        "network_acls": tuple(a.model_copy(update={"subnets": (subnets[i],)}) for i, a in enumerate(generated.network_acls[: len(subnets)])),
    })
    home.mkdir(parents=True, exist_ok=True)
    (home / "rules.json").write_bytes(rules.to_json_bytes())
    inventory.dump(home / "inventory.yaml")
    return {"rules": str(home / "rules.json"), "inventory": str(home / "inventory.yaml")}


def throughput_phase(bootstrap: str, home: Path, phase: Phase, args: argparse.Namespace) -> dict[str, Any]:
    log(f"throughput phase: {phase.flows:,} flows per {phase.window} s window, {phase.packets:,} packets")
    verdicts = {} if args.no_rules else verdict_files(home, SEED)
    settings = fresh_settings(bootstrap, home, window_seconds=phase.window, idle_close_seconds=2.0, **verdicts)
    ensure_topics(settings)
    if set(args.destinations) != set(DESTINATIONS):
        # Read by the worker before its first frame: one flow log over everything, as asked.
        change = FlowLogChange(name="bench", destinations=tuple(args.destinations))
        flow_log_registry.put(settings, FlowLog.create(change, window_seconds=phase.window))
    sent, preload_s = preload(settings, phase, args)
    duration = phase.packets / args.rate

    worker = WorkerProcess(settings).start()
    log(f"  worker pid {worker.pid} (py-spy record --pid {worker.pid} to profile it)")
    try:
        process = describe_process(worker.pid)
        peak = {"rss_kb": 0, "open_windows": 0}

        def sample(stats: dict[str, Any]) -> None:
            peak["rss_kb"] = max(peak["rss_kb"], proc_status_kb(worker.pid)["VmRSS"])
            peak["open_windows"] = max(peak["open_windows"], stats["open_windows"])

        first = done = None
        usage = None
        load_before = load_average()
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            stats = worker.stats()
            now = time.monotonic()
            sample(stats)
            if first is None and stats["packets_in"] > 0:
                first, usage = now, Usage(worker.pid)
            if stats["packets_in"] >= sent:
                done = now
                break
            # The start is caught to 50 ms; the end is known late by up to a poll, which can
            # only understate the rate.
            time.sleep(0.05 if first is None else STATS_POLL_SECONDS)
        if first is None or done is None or usage is None:
            raise SystemExit(f"worker did not read everything: {worker.stats()}")
        cpu = usage.report()
        load_read = load_average()
        hwm_read_kb = proc_status_kb(worker.pid)["VmHWM"]
        final = wait_until_written(worker, 600, on_poll=sample)
        stored = time.monotonic()
        memory = proc_status_kb(worker.pid)
        # Idle now: within worker.malloc_trim_seconds (and a tick) it gives freed memory back.
        time.sleep(settings.worker.malloc_trim_seconds + 1.0)
        idle_rss_kb = proc_status_kb(worker.pid)["VmRSS"]
        child_idle_rss_kb = sum(proc_status_kb(c).get("VmRSS", 0) for c in children(worker.pid))
        process["child_processes_after"] = len(children(worker.pid))
        child_hwm_kb = sum(proc_status_kb(c).get("VmHWM", 0) for c in children(worker.pid))
        _, rows = worker.query(ROW_CHECK_SQL)
        _, verdict_rows = worker.query("SELECT countIf(action = 'REJECT'), max(rule_set_version) FROM flows")
    finally:
        worker.stop()
    records, stored_packets, distinct = (int(v) for v in rows[0])
    rejected, rule_set_version = (int(v) for v in verdict_rows[0])
    windows = max(1, round(duration / phase.window))
    result = {
        "flows_requested": phase.flows,
        "packets": sent,
        "capture_rate": args.rate,
        "window_seconds": phase.window,
        "flows_per_window": round(records / windows),
        "preload_seconds": round(preload_s, 1),
        "packets_per_second_read": round(sent / (done - first)),
        "packets_per_second_until_stored": round(sent / (stored - first)),
        "read_seconds": round(done - first, 2),
        "seconds_until_all_rows_stored": round(stored - first, 2),
        "flow_rows": records,
        "stored_packets_equal_sent": stored_packets == sent,
        "stored_packets": stored_packets,
        "rows_unique": distinct == records,
        "write_failures": final["write_failures"],
        "late_packets": final["late_packets"],
        "worker_stats": final,
        "rule_set_version_stored": rule_set_version,
        "rejected_rows": rejected,
        "rule_set": "none" if args.no_rules else "bench/verdicts.py generator: 30 groups x 200 policies per direction, 3 per ENI, 50-entry ACLs",
        "destinations": list(args.destinations),
        "peak_rss_mb": round((memory["VmHWM"] + child_hwm_kb) / 1024),
        "worker_process_peak_rss_mb": round(memory["VmHWM"] / 1024),
        "child_processes_peak_rss_mb": round(child_hwm_kb / 1024),
        "worker_process_peak_rss_mb_when_last_frame_read": round(hwm_read_kb / 1024),
        "worker_process_rss_mb_after_all_written": round(memory["VmRSS"] / 1024),
        "worker_process_rss_mb_idle": round(idle_rss_kb / 1024),
        "child_processes_rss_mb_idle": round(child_idle_rss_kb / 1024),
        "max_open_windows_all_partitions": peak["open_windows"],
        **cpu,
        "load_average_before": load_before,
        "load_average_after_read": load_read,
        "worker_process": process,
        "non_default_settings": non_default(settings),
    }
    log(f"  {json.dumps(result)}")
    return result


# -- phase 4: latency on live, paced traffic ---------------------------------------------
BIN_NS = 100_000_000  # capture times are counted in 100 ms bins per (window, ENI)


class CaptureLedger:
    """What was sent, per window: packets per (ENI, 100 ms bin) and each ENI's newest capture time."""

    def __init__(self, window_ns: int, enis: int) -> None:
        self.window_ns = window_ns
        self.enis = enis
        self.bins_per_window = window_ns // BIN_NS
        self.counts: dict[int, np.ndarray] = {}
        self.last_ns: dict[int, np.ndarray] = {}
        self.lock = threading.Lock()

    def add(self, batch: PacketBatch) -> None:
        times = batch.packets.capture_time_ns.astype(np.int64)
        eni = batch.packets.eni.astype(np.int64)
        windows = times // self.window_ns
        for w in np.unique(windows).tolist():
            chosen = windows == w
            t, e = times[chosen], eni[chosen]
            slot = e * self.bins_per_window + (t - w * self.window_ns) // BIN_NS
            counts = np.bincount(slot, minlength=self.enis * self.bins_per_window).reshape(self.enis, -1)
            newest = np.zeros(self.enis, np.int64)
            np.maximum.at(newest, e, t)
            with self.lock:
                if w not in self.counts:
                    self.counts[w] = np.zeros((self.enis, self.bins_per_window), np.int64)
                    self.last_ns[w] = np.zeros(self.enis, np.int64)
                self.counts[w] += counts
                np.maximum(self.last_ns[w], newest, out=self.last_ns[w])

    def expected(self, w: int) -> int:
        """ENIs that sent packets in window ``w``."""
        with self.lock:
            return int(np.count_nonzero(self.counts[w].sum(axis=1))) if w in self.counts else 0


class StoreWatcher(threading.Thread):
    """Polls the store for (ENI, window) rows; records when each first showed up, and its row count then."""

    def __init__(self, worker: WorkerProcess, ledger: CaptureLedger, window_s: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.worker, self.ledger, self.window_s, self.interval = worker, ledger, window_s, interval
        self.first_seen: dict[tuple[str, int], tuple[float, int]] = {}  # → (wall time, rows)
        self.consuming_since: float | None = None  # wall time the worker was first seen with packets
        self.query_seconds: list[float] = []
        self.errors = 0
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def _floor(self) -> int:
        """Oldest window start (s) not yet seen for every ENI that sent in it."""
        seen: dict[int, int] = {}
        for _eni, w in self.first_seen:
            seen[w] = seen.get(w, 0) + 1
        with self.ledger.lock:
            windows = sorted(self.ledger.counts)
        for w in windows:
            start = w * self.window_s
            if seen.get(start, 0) < self.ledger.expected(w):
                return start
        return (windows[-1] + 1) * self.window_s if windows else 0

    def run(self) -> None:
        sql = (
            "SELECT interface_id, toUnixTimestamp(window_start) AS w, count() FROM flows"
            " WHERE window_start >= toDateTime({floor}) GROUP BY interface_id, w"
        )
        while not self._stop_event.is_set():
            started = time.monotonic()
            try:
                if self.consuming_since is None and self.worker.stats()["packets_in"] > 0:
                    self.consuming_since = time.time()
                _, rows = self.worker.query(sql.format(floor=self._floor()))
                answered = time.time()
                self.query_seconds.append(time.monotonic() - started)
                for eni, w, n in rows:
                    self.first_seen.setdefault((str(eni), int(w)), (answered, int(n)))
            except Exception as exc:  # noqa: BLE001 — a failed poll is counted, the next one retries
                self.errors += 1
                log(f"  store poll failed: {exc}")
            self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - started)))


def weighted_percentiles(values: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    order = np.argsort(values)
    v, cum = values[order], np.cumsum(weights[order])

    def pick(q: float) -> float:
        return float(v[np.searchsorted(cum, q * cum[-1])])

    return {"p50": round(pick(0.5), 2), "p99": round(pick(0.99), 2), "max": round(float(v[-1]), 2)}


def latency_phase(bootstrap: str, home: Path, args: argparse.Namespace) -> dict[str, Any]:
    window_s = args.latency_window
    log(f"latency phase: {args.latency_rate:,.0f} packets/s paced for {args.latency_seconds} s, {window_s} s windows")
    settings = fresh_settings(bootstrap, home, window_seconds=window_s)
    ensure_topics(settings)
    lateness = settings.worker.allowed_lateness_seconds
    ledger = CaptureLedger(window_s * 1_000_000_000, ENIS)
    config = SyntheticConfig(
        enis=ENIS, flows=args.latency_flows, rate=args.latency_rate, duration=args.latency_seconds, pace=True, seed=43,
    )
    traffic = SyntheticTraffic(config)
    eni_ids = traffic.eni_ids

    worker = WorkerProcess(settings).start()
    log(f"  worker pid {worker.pid}")
    try:
        watcher = StoreWatcher(worker, ledger, window_s, args.poll)
        watcher.start()
        publisher = FramePublisher(settings, overflow="drop-oldest")  # what a live capture uses
        publisher.start()
        usage = Usage(worker.pid)
        load_before = load_average()
        lag_max = 0.0
        last_capture_ns = 0
        for batch in traffic.batches():
            ledger.add(batch)
            publisher.publish(batch)
            last_capture_ns = int(batch.packets.capture_time_ns[-1])
            lag_max = max(lag_max, (time.time_ns() - last_capture_ns) / 1e9)
        publisher.stop()
        sent = publisher.stats.packets - publisher.stats.dropped_packets  # what reached Kafka
        cpu = usage.report()
        load_after = load_average()
        log(f"  sent {sent:,} packets ({publisher.stats.dropped_packets:,} dropped by the agent); waiting for the last windows")
        deadline = time.monotonic() + 120
        while worker.stats()["packets_in"] < sent and time.monotonic() < deadline:
            time.sleep(0.2)
        final = wait_until_written(worker, 120)
        time.sleep(2 * args.poll)  # the watcher sees the last writes
        watcher.stop()
        _, per_window = worker.query(
            "SELECT interface_id, toUnixTimestamp(window_start) AS w, count() FROM flows GROUP BY interface_id, w"
        )
        _, rows = worker.query(ROW_CHECK_SQL)
    finally:
        worker.stop()

    final_rows = {(str(e), int(w)): int(n) for e, w, n in per_window}
    last_capture_s = last_capture_ns / 1e9
    consuming_since = watcher.consuming_since or float("inf")
    after_last, packet_lat, packet_w, tail, missing = [], [], [], [], 0
    complete = 0
    measured_windows = set()
    centers = (np.arange(ledger.bins_per_window) + 0.5) * BIN_NS / 1e9
    for w in sorted(ledger.counts):
        start = w * window_s
        end = start + window_s
        for e in range(ENIS):
            counts = ledger.counts[w][e]
            if not counts.any():
                continue
            key = (eni_ids[e], start)
            if key not in watcher.first_seen:
                missing += 1
                continue
            seen_at, rows_then = watcher.first_seen[key]
            latency = seen_at - ledger.last_ns[w][e] / 1e9
            if end + lateness + 1.0 > last_capture_s:
                tail.append(latency)  # closed on idleness: no newer traffic came
                continue
            if start < consuming_since:
                continue  # the worker was not consuming yet: this window waited in Kafka
            measured_windows.add(w)
            complete += rows_then == final_rows.get(key)
            after_last.append(latency)
            packet_lat.append(seen_at - (start + centers))
            packet_w.append(counts)
    records, stored_packets, distinct = (int(v) for v in rows[0])
    measured = len(after_last)
    queries = np.array(watcher.query_seconds or [0.0])
    result = {
        "latency_definition": (
            "per (window, ENI): time the store poll that first returned the window's rows for that ENI answered"
            " minus the capture time of that ENI's last packet in the window; per packet: the same time minus the"
            " packet's capture time (100 ms bins). Capture time is the wall clock (paced synthetic agent in the"
            " bench process, same clock as the poller). Counted: windows that start after the worker was consuming"
            " and close on the watermark (end + allowed lateness + 1 s before the traffic stopped)"
        ),
        "capture_rate": args.latency_rate,
        "traffic_seconds": args.latency_seconds,
        "window_seconds": window_s,
        "allowed_lateness_seconds": lateness,
        "store_batch_seconds": settings.store.batch_seconds,
        "flows": args.latency_flows,
        "flow_popularity": f"zipf {config.zipf}",
        "poll_interval_seconds": args.poll,
        "poll_query_seconds_p50_max": [round(float(np.median(queries)), 3), round(float(queries.max()), 3)],
        "poll_errors": watcher.errors,
        "windows_measured": len(measured_windows),
        "window_enis_measured": measured,
        "after_last_packet_seconds": weighted_percentiles(np.array(after_last), np.ones(measured)),
        "per_packet_seconds": weighted_percentiles(
            np.concatenate(packet_lat) if packet_lat else np.array([]), np.concatenate(packet_w) if packet_w else np.array([])
        ),
        "target_seconds": window_s + 5,
        "tail_window_enis_closed_on_idleness": len(tail),
        "tail_after_last_packet_seconds_max": round(max(tail), 2) if tail else None,
        "idle_close_seconds": settings.worker.idle_close_seconds,
        "window_enis_never_seen": missing,
        "complete_at_first_sight": complete == measured,
        "generator_lag_max_seconds": round(lag_max, 3),
        "packets": sent,
        "agent_dropped_packets": publisher.stats.dropped_packets,
        "stored_packets_equal_sent": stored_packets == sent,
        "rows_unique": distinct == records,
        "flow_rows": records,
        "write_failures": final["write_failures"],
        "late_packets": final["late_packets"],
        **cpu,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "non_default_settings": non_default(settings),
    }
    log(f"  {json.dumps(result)}")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--packets", type=int, default=30_000_000, help="pre-loaded packets per throughput phase")
    p.add_argument("--rate", type=float, default=2_000_000, help="capture-time packets per second (throughput)")
    p.add_argument("--flows", type=int, nargs="+", default=[100_000, 1_000_000], help="distinct flows per window, one phase each")
    p.add_argument("--window", type=int, default=5, help="window seconds of the --flows phases")
    p.add_argument(
        "--default-window-flows", type=int, default=1_000_000,
        help=f"distinct flows of a last phase at the default window ({DEFAULT_WINDOW} s, --rate x that many packets); 0: none",
    )
    p.add_argument("--latency-rate", type=float, default=200_000, help="paced packets per second")
    p.add_argument("--latency-seconds", type=float, default=90)
    p.add_argument("--latency-window", type=int, default=10)
    p.add_argument("--latency-flows", type=int, default=100_000)
    p.add_argument("--poll", type=float, default=0.5, help="store poll interval (latency)")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--no-rules", action="store_true", help="throughput without a rule set (every verdict the empty one)")
    p.add_argument(
        "--destinations", nargs="+", choices=DESTINATIONS, default=list(DESTINATIONS),
        help="where the throughput phases' records go (default both: no flow log, the implicit one); `store` alone"
        " leaves the flows topic out, as a flow log created with that destination does",
    )
    args = p.parse_args()

    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="flowlogs-bench-") as tmp, broker(Path(tmp)) as bootstrap:
        root = Path(tmp)
        plan = [Phase(f, args.window, args.packets) for f in args.flows]
        if args.default_window_flows:
            # One whole window at the capture rate: as many packets per flow as a user's default window holds.
            plan.append(Phase(args.default_window_flows, DEFAULT_WINDOW, int(args.rate * DEFAULT_WINDOW)))
        phases = [
            throughput_phase(bootstrap, root / f"flows-{phase.flows}-window-{phase.window}", phase, args) for phase in plan
        ]
        latency = None if args.skip_latency else latency_phase(bootstrap, root / "latency", args)

    first = phases[0]
    # Peak memory at the most flows per window: the phase of those with the highest peak.
    most = max(r["flows_requested"] for r in phases)
    biggest = max((r for r in phases if r["flows_requested"] == most), key=lambda r: r["peak_rss_mb"])
    result = {
        "bench": "worker",
        # the first throughput phase, under the field names of earlier versions
        **{k: first[k] for k in ("packets", "capture_rate", "window_seconds", "flows_per_window")},
        "worker_packets_per_second": first["packets_per_second_read"],
        **{k: first[k] for k in ("read_seconds", "seconds_until_all_rows_stored", "flow_rows", "stored_packets_equal_sent",
                                 "rows_unique", "write_failures", "late_packets")},
        "throughput": [
            {k: r[k] for k in ("flows_per_window", "window_seconds", "packets", "packets_per_second_read", "packets_per_second_until_stored",
                               "read_seconds", "seconds_until_all_rows_stored", "stored_packets_equal_sent", "rows_unique",
                               "rule_set_version_stored", "rejected_rows", "destinations", "worker_cpu_cores", "machine_cpu_busy",
                               "load_average_after_read")}
            for r in phases
        ],
        "throughput_definition": (
            "packets pre-loaded in Kafka / seconds from the worker's first frame read (polled every 50 ms) to the"
            " last (read) or to every window written (until_stored, includes the idle close of the final windows)"
        ),
        "throughput_target": 2_000_000,
        "peak_rss_mb": biggest["peak_rss_mb"],
        "peak_rss_flows_per_window": biggest["flows_per_window"],
        "peak_rss_window_seconds": biggest["window_seconds"],
        "peak_rss_definition": (
            f"VmHWM of the worker process ({biggest['worker_process']['pid_command']}) plus the VmHWM of each of"
            f" its {biggest['worker_process']['child_processes_after']} child processes (the flows-topic producer),"
            " summed: an upper bound of their peak together; up to"
            f" {biggest['max_open_windows_all_partitions']} (partition, window) pairs were open at once"
            " (a window stays open for allowed lateness after its end)"
        ),
        "peak_rss_target_mb": 1536,
        "latency": latency,
        "throughput_phases": phases,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "machine": machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
