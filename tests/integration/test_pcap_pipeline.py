"""`flowlogs agent --pcap` → real Kafka → worker → chDB: per-flow packets and bytes.

Plain packets of every link/network encapsulation, and mirror-session tunnels (VXLAN,
GRE, ERSPAN) whose sessions name the ENI.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.process import WorkerProcess
from flowlogs.settings import Settings
from schemas.inventory import Eni, Inventory, MirrorSession, SessionKind, Subnet, Vpc
from tests.integration.helpers import run_agent
from tests.integration.helpers import wait_for
from tests.integration.test_spine import _stored_totals
from tests.test_pcap import cases, write_pcap
from tests.test_tunnels import tunnel_cases

pytestmark = pytest.mark.integration
REPEATS = 50


def replay(settings: Settings, worker: WorkerProcess, tmp_path: Path, inventory: Inventory, packets: list[bytes]) -> Counter:
    """Replay ``packets`` REPEATS times through the agent CLI; per (ENI, proto, ports, direction) sums."""
    capture = write_pcap(tmp_path / "replay.pcap", packets * REPEATS, t0=int(time.time()) - 300)
    summary = run_agent(settings, tmp_path, inventory, "--pcap", str(capture))
    total = len(packets) * REPEATS
    assert summary["packets_read"] == total and summary["packets_sent"] == total and summary["unmatched"] == 0
    wait_for(lambda: _stored_totals(worker)[0] >= total, 90, "the replayed packets in the store")
    _, rows = worker.query(
        "SELECT interface_id, protocol, srcport, dstport, flow_direction, sum(packets), sum(bytes)"
        " FROM flows WHERE log_status != 'NODATA' GROUP BY interface_id, protocol, srcport, dstport, flow_direction"
    )
    got: Counter = Counter()
    for eni, proto, sport, dport, direction, pk, by in rows:
        got[(eni, proto, sport, dport, direction, "packets")] += pk
        got[(eni, proto, sport, dport, direction, "bytes")] += by
    return got


def test_pcap_replay_lands_per_flow(settings_factory, worker_factory, tmp_path: Path) -> None:
    settings = settings_factory()
    worker = worker_factory(settings)
    inventory = Inventory(
        vpcs=(Vpc(id="vpc-p"),),
        subnets=(Subnet(id="subnet-p", vpc="vpc-p"),),
        enis=(
            Eni(id="eni-v4", subnet="subnet-p", ips=("10.0.1.10",)),
            Eni(id="eni-v6", subnet="subnet-p", ips=("2001:db8::10",)),
        ),
    )
    packets, expected = zip(*cases())
    want: Counter = Counter()
    for src, _dst, proto, sport, dport, length, _flags in expected:
        eni = "eni-v6" if ":" in src else "eni-v4"
        want[(eni, proto, sport, dport, "egress", "packets")] += REPEATS
        want[(eni, proto, sport, dport, "egress", "bytes")] += length * REPEATS
    assert replay(settings, worker, tmp_path, inventory, [bytes(p) for p in packets]) == want


def test_mirror_sessions_land_on_their_enis(settings_factory, worker_factory, tmp_path: Path) -> None:
    """Every tunnel kind; sessions alternate between the two ends' ENIs. By address each
    packet would count for both ENIs; through a session it counts once, for the session's
    ENI, in the direction its addresses give."""
    settings = settings_factory()
    worker = worker_factory(settings)
    packets, expected, sessions = zip(*tunnel_cases())
    field = {SessionKind.VXLAN: "vni", SessionKind.GRE: "gre_key", SessionKind.ERSPAN: "erspan_id"}
    owner = ["eni-src" if i % 2 == 0 else "eni-dst" for i in range(len(sessions))]
    inventory = Inventory(
        vpcs=(Vpc(id="vpc-m"),),
        subnets=(Subnet(id="subnet-m", vpc="vpc-m"),),
        enis=(
            Eni(id="eni-src", subnet="subnet-m", ips=("10.0.1.10", "2001:db8::10")),
            Eni(id="eni-dst", subnet="subnet-m", ips=("198.51.100.7", "2001:db8:ffff::7")),
        ),
        mirror_sessions=tuple(
            MirrorSession(eni=eni, **{field[SessionKind(key >> 32)]: key & 0xFFFFFFFF}) for eni, key in zip(owner, sessions)
        ),
    )
    want: Counter = Counter()
    for eni, (_src, _dst, proto, sport, dport, length, _flags) in zip(owner, expected):
        direction = "egress" if eni == "eni-src" else "ingress"
        want[(eni, proto, sport, dport, direction, "packets")] += REPEATS
        want[(eni, proto, sport, dport, direction, "bytes")] += length * REPEATS
    assert replay(settings, worker, tmp_path, inventory, [bytes(p) for p in packets]) == want
