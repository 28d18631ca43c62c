"""Live capture through the AF_PACKET ring, on a veth inside our own network namespaces:
every ping request and reply is seen exactly once and decodes to the right ICMP flow.
Plus the operator-facing errors: unknown interface, unknown namespace, no privilege."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from agents.afpacket import CaptureError, InterfaceCapture
from agents.decode import DecodeStats, decode
from agents.source import RawPackets
from tests.test_pcap import addr

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, AF_PACKET)"),
]

ROOT = Path(__file__).resolve().parents[2]
A_IP, B_IP = "10.78.0.1", "10.78.0.2"


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)


@pytest.fixture
def namespaces():
    """Two hosts joined by a veth pair; removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    a, b = f"flla{tag}", f"fllb{tag}"
    _run("ip", "netns", "add", a)
    try:
        _run("ip", "netns", "add", b)
        _run("ip", "link", "add", f"lva{tag}", "netns", a, "type", "veth", "peer", "name", f"lvb{tag}", "netns", b)
        for ns, dev, v4 in ((a, f"lva{tag}", f"{A_IP}/24"), (b, f"lvb{tag}", f"{B_IP}/24")):
            _run("ip", "-n", ns, "addr", "add", v4, "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        yield a, b, f"lvb{tag}"
    finally:
        subprocess.run(["ip", "netns", "del", a], check=False)
        subprocess.run(["ip", "netns", "del", b], check=False)


def _icmp(chunks: list[RawPackets]) -> Counter:
    """(src, dst, ICMP type<<8|code, IP length) of every ICMP packet captured."""
    seen: Counter = Counter()
    stats = DecodeStats()
    for raw in list(chunks):
        p = decode(raw, stats)
        for i in range(p.size):
            if int(p.protocol[i]) == 1:
                seen[(addr(p.src_addr, i), addr(p.dst_addr, i), int(p.dst_port[i]), int(p.ip_length[i]))] += 1
    return seen


def test_ping_through_veth_is_captured_once_per_packet(namespaces) -> None:
    a, b, dev = namespaces
    request, reply = (A_IP, B_IP, 8 << 8, 228), (B_IP, A_IP, 0, 228)
    chunks: list[RawPackets] = []
    stop = threading.Event()
    started = time.time_ns()
    with InterfaceCapture(dev, netns=b) as capture:
        assert capture.linktype == 1
        reader = threading.Thread(target=lambda: chunks.extend(capture.chunks(stop)), daemon=True)
        reader.start()
        try:
            _run("ip", "netns", "exec", a, "ping", "-c", "20", "-i", "0.05", "-s", "200", B_IP)
            deadline = time.monotonic() + 5  # blocks are handed over within block_timeout_ms (plus slack)
            while time.monotonic() < deadline:
                seen = _icmp(chunks)
                if seen[request] >= 20 and seen[reply] >= 20:
                    break
                time.sleep(0.1)
            time.sleep(0.3)  # a duplicate would turn up here
        finally:
            stop.set()
            asked = time.monotonic()
            reader.join(5)
        assert not reader.is_alive()
        assert time.monotonic() - asked < 1.0, "stop must be honoured promptly"
        stats = capture.stats
    finished = time.time_ns()

    seen = _icmp(chunks)
    assert seen[request] == 20 and seen[reply] == 20, seen
    assert set(seen) == {request, reply}, seen
    assert any(raw.size == 0 for raw in chunks)  # idle moments yield empty chunks (housekeeping turns)
    assert all(started <= int(t) <= finished for raw in chunks for t in raw.time_ns)
    assert stats.packets == sum(raw.size for raw in chunks) >= 40
    assert stats.bytes_captured == sum(int(raw.caplen.sum()) for raw in chunks)
    assert stats.kernel_drops == 0


def test_unknown_interface_names_it_and_lists_the_real_ones() -> None:
    with pytest.raises(CaptureError) as err:
        InterfaceCapture("nosuch0")
    message = str(err.value)
    assert "nosuch0" in message and "lo" in message


def test_unknown_interface_inside_a_namespace_lists_that_namespace(namespaces) -> None:
    _a, b, dev = namespaces
    with pytest.raises(CaptureError) as err:
        InterfaceCapture("nosuch0", netns=b)
    message = str(err.value)
    assert "nosuch0" in message and dev in message and b in message
    assert dev not in {name for _, name in socket.if_nameindex()}, "the thread must be back in its own namespace"


def test_unknown_namespace() -> None:
    with pytest.raises(CaptureError, match="network namespace 'flnosuch' not found"):
        InterfaceCapture("lo", netns="flnosuch")


def test_without_cap_net_raw_the_error_says_what_to_do(tmp_path: Path) -> None:
    # Root without CAP_NET_RAW (dropped from the bounding and inheritable sets) is refused
    # exactly like an unprivileged user; an unprivileged user cannot run the interpreter here.
    script = "from agents.afpacket import InterfaceCapture, CaptureError\ntry:\n    InterfaceCapture('lo')\nexcept CaptureError as e:\n    print(e)\n"
    result = subprocess.run(
        ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", sys.executable, "-c", script],
        check=False, capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "live capture on lo needs root or CAP_NET_RAW" in result.stdout
    assert "setcap cap_net_raw+ep" in result.stdout
