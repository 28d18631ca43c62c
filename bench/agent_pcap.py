"""Agent throughput on a capture file: pcap → decode → ENI resolution → frames → Kafka.

Writes a ≥ 5 M packet pcap (Ethernet/IPv4/TCP+UDP headers, snap length 64 as a mirror
port would capture) with numpy, replays it with `flowlogs agent --pcap`'s code path, and
times `softflowd -r` (Debian) on the same file, side by side: start to exit, exporting
NetFlow v5 to a collector socket here, whose records must add up to the file's packets.
Prints a final JSON line.

    python bench/agent_pcap.py [--packets 5000000] [--flows 100000]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
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


class NetflowV5Collector:
    """A local NetFlow v5 collector for softflowd: keeps every datagram, counts the records after.

    Receiving is all the thread does while softflowd runs (a big socket buffer absorbs the
    burst softflowd sends when it flushes its flow table at the end of the file); the
    header's flow sequence number then tells whether any record was lost on the way.
    """

    HEADER = np.dtype([("version", ">u2"), ("count", ">u2"), ("uptime", ">u4"), ("secs", ">u4"), ("nsecs", ">u4"),
                       ("flow_sequence", ">u4"), ("engine", ">u2"), ("sampling", ">u2")])
    RECORD = np.dtype([("src", ">u4"), ("dst", ">u4"), ("nexthop", ">u4"), ("input", ">u2"), ("output", ">u2"),
                       ("packets", ">u4"), ("octets", ">u4"), ("first", ">u4"), ("last", ">u4"), ("sport", ">u2"),
                       ("dport", ">u2"), ("pad1", "u1"), ("tcp_flags", "u1"), ("protocol", "u1"), ("tos", "u1"),
                       ("src_as", ">u2"), ("dst_as", ">u2"), ("src_mask", "u1"), ("dst_mask", "u1"), ("pad2", ">u2")])
    assert HEADER.itemsize == 24 and RECORD.itemsize == 48

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):  # FORCE: root may pass rmem_max
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, option, 64 * 1024 * 1024)
                break
            except OSError:
                continue
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.datagrams: list[bytes] = []
        self._stop = threading.Event()
        self._last_rx = time.monotonic()
        self._thread = threading.Thread(target=self._receive, name="netflow-collector", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                self.datagrams.append(self.sock.recv(65535))
                self._last_rx = time.monotonic()
            except TimeoutError:
                pass

    def close(self, idle: float = 0.3, limit: float = 5.0) -> None:
        """Stop once the socket has been quiet for ``idle`` seconds (softflowd has exited by then)."""
        deadline = time.monotonic() + limit
        while time.monotonic() - self._last_rx < idle and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def summary(self) -> dict[str, int]:
        records = packets = octets = bad = 0
        expected = 0  # flow_sequence counts the flows exported before each datagram
        for dgram in self.datagrams:
            if len(dgram) < 24:
                bad += 1
                continue
            head = np.frombuffer(dgram, self.HEADER, count=1)[0]
            count = int(head["count"])
            if int(head["version"]) != 5 or len(dgram) != 24 + 48 * count:
                bad += 1
                continue
            rows = np.frombuffer(dgram, self.RECORD, count=count, offset=24)
            records += count
            packets += int(rows["packets"].sum(dtype=np.uint64))
            octets += int(rows["octets"].sum(dtype=np.uint64))
            expected = max(expected, int(head["flow_sequence"]) + count)
        return {"datagrams": len(self.datagrams), "records": records, "packets": packets, "octets": octets,
                "lost_records": expected - records, "bad_datagrams": bad}


_SOFTFLOWD_STATS = {
    "packets_processed": re.compile(r"^Packets processed: (\d+)", re.MULTILINE),
    "ignored_packets": re.compile(r"^Ignored packets: (\d+)", re.MULTILINE),
    "flows_exported": re.compile(r"^Flows exported: (\d+)", re.MULTILINE),
    "export_failures": re.compile(r"^Flows exported: .*\((\d+) failures\)", re.MULTILINE),
}


@dataclass(frozen=True, slots=True)
class SoftflowdRun:
    seconds: float  # wall time from start to exit
    stats: dict[str, int]  # softflowd's own end-of-file statistics (_SOFTFLOWD_STATS)
    received: dict[str, int]  # what the collector got (NetflowV5Collector.summary)


def time_softflowd(binary: str, capture: Path, tmp: Path, max_flows: int, timeout: float) -> SoftflowdRun:
    """Run `softflowd -r` on the file to its exit, exporting NetFlow v5 to a local collector.

    Raises TimeoutError if softflowd has not exited within ``timeout`` seconds (it is
    killed then), RuntimeError if it exits with an error.

    Why it used to hang: `-r` turns the control socket off, but a `-c PATH` after it turns
    it back on; in file mode softflowd never poll()s, yet still tests the control socket's
    entry of its (uninitialised) pollfd array and, when that stack garbage is non-zero,
    blocks in accept() on the socket before reading a packet. So: `-c none`, placed after
    `-r`. `-p` keeps softflowd's exit-time unlink() of its pid file away from /var/run.
    """
    collector = NetflowV5Collector()
    command = [
        binary, "-r", str(capture), "-d", "-c", "none", "-p", str(tmp / "softflowd.pid"),
        "-v", "5", "-m", str(max_flows), "-n", f"127.0.0.1:{collector.port}",
    ]
    try:
        started = time.monotonic()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            tail = " | ".join((out + err).strip().splitlines()[-3:])
            raise TimeoutError(
                f"softflowd did not exit within {timeout:g} s and was killed ({' '.join(command)}); "
                f"{len(collector.datagrams)} NetFlow datagrams received; last output: {tail or '(none)'}"
            ) from None
        seconds = time.monotonic() - started
    finally:
        collector.close()
    if proc.returncode != 0:
        raise RuntimeError(f"softflowd exited with {proc.returncode}: {(err or out).strip()[-500:]}")
    stats = {name: int(m.group(1)) for name, pattern in _SOFTFLOWD_STATS.items() if (m := pattern.search(out))}
    return SoftflowdRun(seconds, stats, collector.summary())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--packets", type=int, default=5_000_000)
    p.add_argument("--flows", type=int, default=100_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="flowlogs-pcap-") as tmp:
        Path(tmp).chmod(0o755)  # readable by softflowd even where it runs as another user
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
                sfd = time_softflowd(softflowd, capture, Path(tmp), 2 * args.flows, timeout=max(60.0, 20 * agent_s))
            except (TimeoutError, RuntimeError) as exc:
                result["softflowd_error"] = str(exc)
            else:
                got = sfd.received
                result.update(
                    softflowd_seconds=round(sfd.seconds, 2),
                    softflowd_packets_per_second=round(written / sfd.seconds),
                    speedup_vs_softflowd=round(sfd.seconds / agent_s, 2),  # > 1: the agent is faster
                    softflowd_packets_processed=sfd.stats.get("packets_processed"),
                    softflowd_ignored_packets=sfd.stats.get("ignored_packets"),
                    softflowd_flows_exported=sfd.stats.get("flows_exported"),
                    softflowd_export_failures=sfd.stats.get("export_failures"),
                    netflow_datagrams=got["datagrams"],
                    netflow_records=got["records"],
                    netflow_lost_records=got["lost_records"],
                    netflow_packets=got["packets"],
                    # every packet of the file is in softflowd's exported flow records:
                    softflowd_packets_match=got["packets"] == written and got["lost_records"] == 0,
                )
        else:
            result["softflowd_error"] = "softflowd not installed (apt-get install softflowd)"
        result["machine"] = machine()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
