"""Real traffic, captured by tcpdump inside our own network namespaces, decoded two ways:
by the agent's vectorised decoder and by tshark. Per 5-tuple, packets and bytes (IP total
length) must be equal. Then the same file goes through the whole pipeline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from agents.decode import DecodeStats, decode
from agents.pcap import CaptureReader
from tests.test_pcap import addr

pytestmark = pytest.mark.integration

SERVER = r"""
import socket, sys
tcp = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((sys.argv[1], 5001)); tcp.listen()
udp = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((sys.argv[1], 5002)); udp.settimeout(10)
print("ready", flush=True)
conn, _ = tcp.accept()
got = 0
while got < 200_000:
    chunk = conn.recv(65536)
    if not chunk: break
    got += len(chunk)
conn.sendall(b"ok" * 1000); conn.close()
for _ in range(20):
    data, peer = udp.recvfrom(65535)
    udp.sendto(data[:100], peer)
"""

CLIENT = r"""
import socket, sys, time
family = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
tcp = socket.create_connection((sys.argv[1], 5001))
tcp.sendall(b"t" * 200_000); tcp.shutdown(socket.SHUT_WR)
while tcp.recv(65536): pass
tcp.close()
udp = socket.socket(family, socket.SOCK_DGRAM); udp.settimeout(5)
for size in [10, 100, 1000, 1400, 3000] * 4:  # 3000 bytes: IP fragments
    udp.sendto(b"u" * size, (sys.argv[1], 5002)); udp.recvfrom(65535)
"""


def _run(*cmd: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture
def namespaces():
    """Two hosts joined by a veth pair, IPv4 and IPv6; removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    a, b = f"fla{tag}", f"flb{tag}"
    _run("ip", "netns", "add", a)
    _run("ip", "netns", "add", b)
    try:
        _run("ip", "link", "add", f"va{tag}", "netns", a, "type", "veth", "peer", "name", f"vb{tag}", "netns", b)
        for ns, dev, v4, v6 in ((a, f"va{tag}", "10.77.0.1/24", "fd77::1/64"), (b, f"vb{tag}", "10.77.0.2/24", "fd77::2/64")):
            _run("ip", "-n", ns, "addr", "add", v4, "dev", dev)
            _run("ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad")
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        yield a, b, f"va{tag}"
    finally:
        subprocess.run(["ip", "netns", "del", a], check=False)
        subprocess.run(["ip", "netns", "del", b], check=False)


def _exchange(a: str, b: str, server_ip: str) -> None:
    server = subprocess.Popen(
        ["ip", "netns", "exec", b, sys.executable, "-c", SERVER, server_ip], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        _run("ip", "netns", "exec", a, sys.executable, "-c", CLIENT, server_ip)
        server.wait(30)
    finally:
        server.kill()
        server.wait()
        assert server.stdout is not None
        server.stdout.close()


def _wait_until_written(path: Path, quiet: float = 1.0, timeout: float = 20.0) -> None:
    """Until tcpdump (-U: a write per packet) has written nothing new for ``quiet`` seconds:
    on a busy machine it lags, and packets it has not read when interrupted are lost."""
    deadline, size, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = path.stat().st_size if path.exists() else 0
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


def _capture(namespaces, path: Path) -> None:
    a, b, dev = namespaces
    dump = subprocess.Popen(
        ["ip", "netns", "exec", a, "tcpdump", "-i", dev, "-w", str(path), "-U", "-n"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert dump.stderr is not None
        assert "listening" in dump.stderr.readline()
        _run("ip", "netns", "exec", a, "ping", "-c", "4", "-i", "0.2", "10.77.0.2")
        _run("ip", "netns", "exec", a, "ping", "-6", "-c", "3", "-i", "0.2", "fd77::2")
        _run("ip", "netns", "exec", a, "ping", "-c", "2", "-s", "3000", "10.77.0.2")  # fragmented ICMP
        _exchange(a, b, "10.77.0.2")
        _exchange(a, b, "fd77::2")
        _wait_until_written(path)
    finally:
        dump.send_signal(2)
        dump.wait(10)
        assert dump.stderr is not None
        dump.stderr.close()


def _tshark_flows(path: Path) -> Counter:
    fields = [
        "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.proto", "ipv6.nxt", "tcp.srcport", "tcp.dstport",
        "udp.srcport", "udp.dstport", "icmp.type", "icmp.code", "icmpv6.type", "icmpv6.code", "ip.len", "ipv6.plen",
        "ipv6.fraghdr.nxt",
    ]
    cmd = ["tshark", "-n", "-r", str(path), "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
           "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    out = _run(*cmd).stdout
    flows: Counter = Counter()
    for line in out.splitlines():
        v = dict(zip(fields, line.split("|")))
        src, dst = (v["ip.src"], v["ip.dst"]) if v["ip.src"] else (v["ipv6.src"], v["ipv6.dst"])
        if not src:
            continue  # not IP (ARP)
        if v["tcp.srcport"]:
            key = (6, int(v["tcp.srcport"]), int(v["tcp.dstport"]))
        elif v["udp.srcport"]:
            key = (17, int(v["udp.srcport"]), int(v["udp.dstport"]))
        elif v["icmp.type"]:
            key = (1, 0, int(v["icmp.type"]) << 8 | int(v["icmp.code"]))
        elif v["icmpv6.type"]:
            key = (58, 0, int(v["icmpv6.type"]) << 8 | int(v["icmpv6.code"]))
        else:  # a later fragment: no transport header; the protocol is the upper layer's
            key = (int(v["ip.proto"] or v["ipv6.fraghdr.nxt"] or v["ipv6.nxt"]), 0, 0)
        length = int(v["ip.len"]) if v["ip.len"] else int(v["ipv6.plen"]) + 40
        flows[(src, dst, *key, "packets")] += 1
        flows[(src, dst, *key, "bytes")] += length
    return flows


def _our_flows(path: Path) -> Counter:
    flows: Counter = Counter()
    stats = DecodeStats()
    for raw in CaptureReader(path).chunks():
        p = decode(raw, stats)
        for i in range(p.size):
            key = (addr(p.src_addr, i), addr(p.dst_addr, i), int(p.protocol[i]), int(p.src_port[i]), int(p.dst_port[i]))
            flows[(*key, "packets")] += 1
            flows[(*key, "bytes")] += int(p.ip_length[i])
    return flows


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("tshark"), reason="needs root and tshark (CI has both)")
def test_decoder_agrees_with_tshark_on_real_traffic(namespaces, tmp_path: Path) -> None:
    capture = tmp_path / "real.pcap"
    _capture(namespaces, capture)
    ours, theirs = _our_flows(capture), _tshark_flows(capture)
    assert sum(v for k, v in theirs.items() if k[-1] == "packets") > 100
    assert any(k[2] == 17 and k[3] == 0 for k in theirs), "the capture must hold later IP fragments"
    assert any(k[2] == 58 for k in theirs) and any(k[2] == 6 and ":" in k[0] for k in theirs)
    assert ours == theirs
