"""Agent throughput on a capture file: pcap → decode → ENI resolution → frames → Kafka.

Writes a ≥ 5 M packet pcap (Ethernet/IPv4/TCP+UDP headers, snap length 64 as a mirror
port would capture) with numpy, replays it with `flowlogs agent --pcap`'s code path, and
times `softflowd -r` (Debian) on the same file, side by side. Prints a final JSON line.

    python bench/agent_pcap.py [--packets 5000000] [--flows 100000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.enis import EniResolver  # noqa: E402
from agents.runner import run_pcap  # noqa: E402
from agents.synthetic import SyntheticConfig, SyntheticTraffic  # noqa: E402
from bench._common import bench_settings, machine  # noqa: E402

SNAPLEN = 64


def write_capture(path: Path, packets: int, flows: int) -> tuple[EniResolver, int]:
    """A classic pcap of synthetic traffic, built column-wise; returns the resolver for its ENIs."""
    traffic = SyntheticTraffic(
        SyntheticConfig(enis=16, flows=flows, rate=1_000_000, duration=packets / 1_000_000, pace=False,
                        start_ns=time.time_ns() - 600 * 10**9, seed=9, chunk_packets=1_000_000)
    )
    written = 0
    with path.open("wb") as out:
        out.write(np.array([0xA1B2C3D4, 0x00040002, 0, 0, SNAPLEN, 1], "<u4").tobytes()[:24])
        for batch in traffic.batches():
            p = batch.packets
            n = p.size
            tcp = p.protocol == 6
            l4 = np.where(tcp, 20, 8)
            cap = np.minimum(14 + 20 + l4, SNAPLEN)
            rec = np.zeros((n, 16 + SNAPLEN), np.uint8)
            hdr = rec[:, :16].view("<u4")
            hdr[:, 0] = p.capture_time_ns // 10**9
            hdr[:, 1] = (p.capture_time_ns % 10**9) // 1000
            hdr[:, 2] = cap
            hdr[:, 3] = p.ip_length + 14
            eth = rec[:, 16:]
            eth[:, 12], eth[:, 13] = 0x08, 0x00
            ip = eth[:, 14:]
            ip[:, 0] = 0x45
            ip[:, 2:4] = p.ip_length.astype(">u2").view(np.uint8).reshape(n, 2)
            ip[:, 8] = 64
            ip[:, 9] = np.where(p.protocol == 1, 17, p.protocol)  # keep it to TCP/UDP
            ip[:, 12:16] = p.src_addr.view(np.uint8).reshape(n, 16)[:, 12:]
            ip[:, 16:20] = p.dst_addr.view(np.uint8).reshape(n, 16)[:, 12:]
            ip[:, 20:22] = p.src_port.astype(">u2").view(np.uint8).reshape(n, 2)
            ip[:, 22:24] = p.dst_port.astype(">u2").view(np.uint8).reshape(n, 2)
            ip[:, 33] = np.where(tcp, p.tcp_flags, 0)
            ip[:, 32] = np.where(tcp, 0x50, 0)
            # Variable caplen: pack each record to 16 + cap bytes.
            keep = np.arange(16 + SNAPLEN)[None, :] < (16 + cap)[:, None]
            out.write(rec[keep].tobytes())
            written += n
    return EniResolver(traffic.inventory), written


def time_softflowd(binary: str, capture: Path, tmp: Path, max_flows: int, timeout: float) -> float:
    """Seconds until softflowd has read the whole file (it then prints its statistics).

    Run from some parent processes, softflowd 1.1.0 stays up after the file (waiting on its
    control socket) instead of exiting, so the end of its statistics marks the finish.
    """
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a real, draining NetFlow collector
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(0.5)

    def drain() -> None:
        while not done.is_set():
            try:
                collector.recv(65535)
            except TimeoutError:
                pass

    done = threading.Event()
    threading.Thread(target=drain, daemon=True).start()
    started = time.monotonic()
    proc = subprocess.Popen(
        [binary, "-r", str(capture), "-n", f"127.0.0.1:{collector.getsockname()[1]}", "-m", str(max_flows), "-d",
         "-p", str(tmp / "sfd.pid"), "-c", str(tmp / "sfd.ctl")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    # Some runs of softflowd 1.1.0 under this script never finish the file (it sits in
    # accept() on its control socket; the same command from a shell finishes): bound the wait.
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith("Per-protocol statistics"):  # printed once the file is done
                return time.monotonic() - started
        raise TimeoutError(f"softflowd did not finish the file within {timeout:.0f} s (exit {proc.wait()})")
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()
        proc.stdout.close()
        done.set()
        collector.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--packets", type=int, default=5_000_000)
    p.add_argument("--flows", type=int, default=100_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="flowlogs-pcap-") as tmp:
        Path(tmp).chmod(0o755)  # softflowd drops privileges before it opens the file
        capture = Path(tmp) / "bench.pcap"
        resolver, written = write_capture(capture, args.packets, args.flows)
        result: dict[str, object] = {"bench": "agent_pcap", "packets": written, "file_bytes": capture.stat().st_size}
        with bench_settings() as settings:
            t0 = time.monotonic()
            summary = run_pcap(settings, [capture], resolver)
            agent_s = time.monotonic() - t0
        result.update(
            agent_packets_per_second=round(written / agent_s),
            agent_seconds=round(agent_s, 2),
            packets_sent=summary["packets_sent"],
            unmatched=summary["unmatched"],
        )
        softflowd = shutil.which("softflowd")
        if softflowd:
            try:
                softflowd_s = time_softflowd(softflowd, capture, Path(tmp), 2 * args.flows, timeout=max(60.0, 20 * agent_s))
            except TimeoutError as exc:
                result["softflowd_error"] = str(exc)
            else:
                result.update(
                    softflowd_seconds=round(softflowd_s, 2),
                    softflowd_packets_per_second=round(written / softflowd_s),
                    speedup_vs_softflowd=round(softflowd_s / agent_s, 2),
                )
        result["machine"] = machine()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
