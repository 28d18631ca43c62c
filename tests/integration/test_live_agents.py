"""Live agents end to end (real Kafka, worker, chDB): `flowlogs agent --interface` on a veth
in our own namespace, and `--vxlan` / `--gre` receiving mirror sessions over loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.layers.inet import GRE, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from deploy.broker import free_port
from flowlogs.settings import Settings
from pipeline.process import WorkerProcess
from schemas.inventory import Eni, Inventory, MirrorSession, Subnet, Vpc
from tests.integration.helpers import agent_command
from tests.integration.test_live_capture import A_IP, B_IP, namespaces  # noqa: F401  (fixture)
from tests.integration.helpers import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, AF_PACKET, raw sockets)"),
]
INNER = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")


class Agent:
    """`flowlogs agent …` as a child process, stopped with SIGTERM like an operator would."""

    def __init__(self, settings: Settings, tmp_path: Path, inventory: Inventory, *source: str) -> None:
        self.metrics_port = free_port()
        argv, env = agent_command(settings, tmp_path, inventory, *source, "--stats", "--metrics-port", str(self.metrics_port))
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "capturing from" in line:
                return
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError(f"agent did not start: {self.proc.stderr.read()}")

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return response.read().decode()

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=90)
        assert self.proc.returncode == 0, err
        self.stderr = err
        return orjson.loads(out.strip().splitlines()[-1])


def _inventory(enis: list[Eni], sessions: tuple[MirrorSession, ...] = ()) -> Inventory:
    return Inventory(
        vpcs=(Vpc(id="vpc-l"),), subnets=(Subnet(id="subnet-l", vpc="vpc-l"),), enis=tuple(enis), mirror_sessions=sessions
    )


def _stored(worker: WorkerProcess, where: str = "1") -> dict[tuple, tuple[int, int]]:
    """Traffic per flow key (the agents' heartbeats also bring NODATA records: not traffic)."""
    _, rows = worker.query(
        "SELECT interface_id, protocol, srcport, dstport, flow_direction, sum(packets), sum(bytes)"
        f" FROM flows WHERE {where} AND log_status != 'NODATA'"
        " GROUP BY interface_id, protocol, srcport, dstport, flow_direction"
    )
    return {tuple(r[:5]): (r[5], r[6]) for r in rows}


def test_live_interface_capture_lands_in_the_store(settings_factory, worker_factory, tmp_path: Path, namespaces) -> None:  # noqa: F811
    a, b, veth_b = namespaces
    settings = settings_factory()
    worker = worker_factory(settings)
    agent = Agent(settings, tmp_path, _inventory([Eni(id="eni-live-b", subnet="subnet-l", ips=(B_IP,))]),
                  "--interface", veth_b, "--netns", b)
    subprocess.run(["ip", "netns", "exec", a, "ping", "-c", "12", "-i", "0.05", "-s", "100", B_IP],
                   check=True, capture_output=True, timeout=30)
    # 40 UDP datagrams of 300 bytes to a listener in b (so no ICMP unreachable comes back).
    server = subprocess.Popen(
        ["ip", "netns", "exec", b, sys.executable, "-c",
         "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',9999)); s.settimeout(20)\n"
         "print('ready',flush=True)\nfor _ in range(40): s.recv(2048)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    subprocess.run(
        ["ip", "netns", "exec", a, sys.executable, "-c",
         f"import socket,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('{A_IP}',5555))\n"
         f"for _ in range(40): s.sendto(b'x'*300, ('{B_IP}', 9999)); time.sleep(0.005)"],
        check=True, timeout=30,
    )
    server.communicate(timeout=30)
    assert server.returncode == 0
    time.sleep(0.5)  # the ring hands a block over within its 100 ms timeout
    summary = agent.stop()
    assert summary["kernel_drops"] == 0 and summary["dropped_packets"] == 0
    want = {
        ("eni-live-b", 1, 0, 8 << 8, "ingress"): (12, 12 * 128),  # echo request: 20 + 8 + 100
        ("eni-live-b", 1, 0, 0, "egress"): (12, 12 * 128),
        ("eni-live-b", 17, 5555, 9999, "ingress"): (40, 40 * 328),
    }
    wait_for(lambda: all(_stored(worker).get(k) == v for k, v in want.items()), 60, "the live flows in the store")
    stored = _stored(worker, "protocol IN (1, 17) AND interface_id = 'eni-live-b'")
    assert {k: v for k, v in stored.items() if k[1] == 1 or k[2] == 5555} == want


def _mirror_inventory() -> Inventory:
    return _inventory(
        [Eni(id="eni-m-src", subnet="subnet-l", ips=("10.0.1.10", "2001:db8::10")),
         Eni(id="eni-m-dst", subnet="subnet-l", ips=("198.51.100.7",))],
        (MirrorSession(eni="eni-m-src", vni=100), MirrorSession(eni="eni-m-dst", vni=200),
         MirrorSession(eni="eni-m-src", erspan_id=5), MirrorSession(eni="eni-m-dst", erspan_id=9)),
    )


def test_vxlan_mirror_sessions_over_loopback(settings_factory, worker_factory, tmp_path: Path) -> None:
    settings = settings_factory()
    worker = worker_factory(settings)
    port = free_port()
    agent = Agent(settings, tmp_path, _mirror_inventory(), "--vxlan", f"127.0.0.1:{port}")
    to_dst = VXLAN(vni=200) / INNER / IP(src="10.0.1.10", dst="198.51.100.7") / TCP(sport=40000, dport=443, flags="S")
    from_src = VXLAN(vni=100) / INNER / IPv6(src="2001:db8::10", dst="2001:db8:ffff::7") / UDP(sport=7, dport=8) / Raw(b"v" * 52)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for i in range(600):
            sender.sendto(bytes(to_dst if i % 2 else from_src), ("127.0.0.1", port))
            if i % 100 == 0:
                sender.sendto(b"\x00not vxlan at all", ("127.0.0.1", port))  # garbage: counted, dropped
                time.sleep(0.01)
    time.sleep(0.5)
    metrics = agent.metrics()
    assert 'flowlogs_agent_packets_total{eni="eni-m-dst"} 300.0' in metrics
    assert 'flowlogs_agent_source_events_total{event="garbage"} 6.0' in metrics
    summary = agent.stop()
    assert summary["datagrams"] == 606 and summary["garbage"] == 6 and summary["packets_sent"] == 600
    assert "eni-m-dst" in agent.stderr  # the --stats table
    want = {
        ("eni-m-dst", 6, 40000, 443, "ingress"): (300, 300 * 40),  # the session, not the address, picks the ENI
        ("eni-m-src", 17, 7, 8, "egress"): (300, 300 * 100),
    }
    wait_for(lambda: _stored(worker) == want, 60, "the mirrored flows in the store")


def test_gre_and_erspan_mirror_sessions_over_loopback(settings_factory, worker_factory, tmp_path: Path) -> None:
    settings = settings_factory()
    worker = worker_factory(settings)
    agent = Agent(settings, tmp_path, _mirror_inventory(), "--gre", "127.0.0.1")
    inner = IP(src="10.0.1.10", dst="198.51.100.7") / UDP(sport=11, dport=12) / Raw(b"g" * 72)
    erspan2 = GRE(seqnum_present=1, proto=0x88BE) / ERSPAN_II(session_id=5) / INNER / inner
    erspan3 = GRE(proto=0x22EB) / ERSPAN_III(session_id=9) / INNER / inner
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, 47) as sender:
        for i in range(400):
            sender.sendto(bytes(erspan2 if i % 2 else erspan3), ("127.0.0.1", 0))
            if i % 100 == 0:
                sender.sendto(bytes(GRE(proto=0x1234) / Raw(b"?" * 20)), ("127.0.0.1", 0))  # unknown payload: garbage
                time.sleep(0.01)
    time.sleep(0.5)
    summary = agent.stop()
    assert summary["datagrams"] == 404 and summary["garbage"] == 4 and summary["packets_sent"] == 400
    want = {
        ("eni-m-src", 17, 11, 12, "egress"): (200, 200 * 100),  # ERSPAN II session 5
        ("eni-m-dst", 17, 11, 12, "ingress"): (200, 200 * 100),  # ERSPAN III session 9
    }
    wait_for(lambda: _stored(worker) == want, 60, "the ERSPAN flows in the store")
