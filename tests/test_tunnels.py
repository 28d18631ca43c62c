"""Mirror-session tunnels in capture files: VXLAN, GRE, ERSPAN I/II/III, over IPv4 and IPv6.

Each tunnel packet is replaced by the packet it carries, tagged with its session; the
resolver then gives it to the session's ENI. What only looks like a tunnel is counted
and kept as the packet it is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from agents.decode import DecodeStats, decode
from agents.enis import EniResolver
from agents.pcap import CaptureReader
from schemas.inventory import Eni, Inventory, MirrorSession, SessionKind, Subnet, Vpc, session_key
from tests.test_pcap import E, T0, decode_file, row, write_pcap

V4 = dict(src="10.0.1.10", dst="198.51.100.7")
V6 = dict(src="2001:db8::10", dst="2001:db8:ffff::7")
OUT4 = dict(src="192.0.2.1", dst="192.0.2.200")  # mirror source → collector
OUT6 = dict(src="2001:db8:aaaa::1", dst="2001:db8:aaaa::200")
I = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")


def tunnel_cases() -> list[tuple[Packet, tuple, int]]:
    """(captured packet, the inner packet's row as `row()` gives it, its session key)."""
    vxlan, gre, erspan = SessionKind.VXLAN, SessionKind.GRE, SessionKind.ERSPAN
    return [
        (E / IP(**OUT4) / UDP(sport=51000, dport=4789) / VXLAN(vni=100) / I / IP(**V4) / TCP(sport=40000, dport=443, flags="S"),
         ("10.0.1.10", "198.51.100.7", 6, 40000, 443, 40, 0x02), session_key(vxlan, 100)),
        (E / IPv6(**OUT6) / UDP(sport=51000, dport=4789) / VXLAN(vni=200) / I / Dot1Q(vlan=5) / IPv6(**V6) / UDP(sport=7, dport=8),
         ("2001:db8::10", "2001:db8:ffff::7", 17, 7, 8, 48, 0), session_key(vxlan, 200)),
        (E / IP(**OUT4) / GRE(key_present=1, key=7, proto=0x6558) / I / IP(**V4) / ICMP() / Raw(b"p" * 56),
         ("10.0.1.10", "198.51.100.7", 1, 0, 8 << 8, 84, 0), session_key(gre, 7)),
        (E / IP(**OUT4) / GRE(proto=0x86DD) / IPv6(**V6) / TCP(sport=1, dport=22, flags="PA") / Raw(b"y" * 100),
         ("2001:db8::10", "2001:db8:ffff::7", 6, 1, 22, 160, 0x18), session_key(gre, 0)),
        (E / IPv6(**OUT6) / GRE(key_present=1, key=8, proto=0x6558) / I / IP(**V4) / UDP(sport=9, dport=10),
         ("10.0.1.10", "198.51.100.7", 17, 9, 10, 28, 0), session_key(gre, 8)),
        (E / IP(**OUT4) / GRE(seqnum_present=1, proto=0x88BE) / ERSPAN_II(session_id=5) / I / IP(**V4) / UDP(sport=11, dport=12),
         ("10.0.1.10", "198.51.100.7", 17, 11, 12, 28, 0), session_key(erspan, 5)),
        (E / IP(**OUT4) / GRE(proto=0x88BE) / I / IP(**V4) / TCP(sport=13, dport=14, flags="A"),  # ERSPAN type I
         ("10.0.1.10", "198.51.100.7", 6, 13, 14, 40, 0x10), session_key(erspan, 0)),
        (E / IP(**OUT4) / GRE(proto=0x22EB) / ERSPAN_III(session_id=9) / I / IPv6(**V6) / ICMPv6EchoRequest(),
         ("2001:db8::10", "2001:db8:ffff::7", 58, 0, 128 << 8, 48, 0), session_key(erspan, 9)),
        (E / IP(**OUT4) / GRE(proto=0x22EB) / ERSPAN_III(session_id=10, o=1) / ERSPAN_PlatformSpecific() / I / IP(**V4) / UDP(sport=15, dport=16),
         ("10.0.1.10", "198.51.100.7", 17, 15, 16, 28, 0), session_key(erspan, 10)),
        (E / IP(**OUT4) / GRE(proto=0x22EB) / ERSPAN_III(session_id=11, ft=2) / IP(**V4) / UDP(sport=17, dport=18),  # IP frame type
         ("10.0.1.10", "198.51.100.7", 17, 17, 18, 28, 0), session_key(erspan, 11)),
    ]


def test_every_tunnel_yields_its_inner_packet_and_session(tmp_path: Path) -> None:
    packets, expected, sessions = zip(*tunnel_cases())
    cols, stats, _ = decode_file(write_pcap(tmp_path / "t.pcap", [bytes(p) for p in packets]))
    assert [row(cols, i) for i in range(len(expected))] == list(expected)
    assert cols["session"].tolist() == list(sessions)
    assert stats.decapsulated == len(expected) and stats.bad_tunnel == 0
    # Time and order come from the tunnel packet; wire length is the mirrored packet's.
    assert cols["capture_time_ns"].tolist() == [(T0 + i) * 10**9 + i * 1000 for i in range(len(expected))]
    assert int(cols["wire_length"][0]) == len(bytes(packets[0][VXLAN].payload))


def test_mixed_with_plain_packets_keeps_capture_order(tmp_path: Path) -> None:
    plain = E / IP(**V4) / UDP(sport=1, dport=2)
    tunnelled, inner, _ = tunnel_cases()[0]
    cols, stats, _ = decode_file(write_pcap(tmp_path / "m.pcap", [bytes(p) for p in (plain, tunnelled, plain, tunnelled)]))
    assert [row(cols, i)[3] for i in range(4)] == [1, 40000, 1, 40000]
    assert cols["session"].tolist() == [0, session_key(SessionKind.VXLAN, 100), 0, session_key(SessionKind.VXLAN, 100)]


def test_what_only_looks_like_a_tunnel_is_counted_and_kept(tmp_path: Path) -> None:
    packets = [
        E / IP(**OUT4) / UDP(sport=5000, dport=4789) / Raw(b"\x00" * 30),  # no VXLAN I flag
        E / IP(**OUT4) / UDP(sport=5000, dport=4789) / Raw(b"\x08\x00"),  # too short
        E / IP(**OUT4) / GRE(version=1, proto=0x880B) / Raw(b"\x00" * 20),  # PPTP's enhanced GRE
        E / IP(**OUT4) / GRE(proto=0x1234) / Raw(b"\x00" * 20),  # unknown payload type
    ]
    cols, stats, _ = decode_file(write_pcap(tmp_path / "g.pcap", [bytes(p) for p in packets]))
    assert stats.bad_tunnel == 4 and stats.decapsulated == 0
    assert [row(cols, i)[:3] for i in range(4)] == [("192.0.2.1", "192.0.2.200", p) for p in (17, 17, 47, 47)]
    assert cols["session"].tolist() == [0] * 4


def test_without_decapsulation_tunnels_are_plain_packets(tmp_path: Path) -> None:
    packet, _, _ = tunnel_cases()[0]
    raw = next(CaptureReader(write_pcap(tmp_path / "n.pcap", [bytes(packet)])).chunks())
    ip = decode(raw, DecodeStats(), decapsulate=False)
    assert int(ip.protocol[0]) == 17 and int(ip.dst_port[0]) == 4789


def test_a_session_decides_the_eni_and_the_addresses_the_direction(tmp_path: Path) -> None:
    inventory = Inventory(
        vpcs=(Vpc(id="v"),), subnets=(Subnet(id="s", vpc="v"),),
        enis=(Eni(id="eni-a", subnet="s", ips=("10.0.1.10",)), Eni(id="eni-b", subnet="s", ips=("10.0.1.20",))),
        mirror_sessions=(MirrorSession(eni="eni-a", vni=1), MirrorSession(eni="eni-b", erspan_id=2)),
    )
    a_to_b = IP(src="10.0.1.10", dst="10.0.1.20") / UDP(sport=3, dport=4)
    packets = [
        E / IP(**OUT4) / UDP(dport=4789) / VXLAN(vni=1) / I / a_to_b,  # a's mirror: egress of a only
        E / IP(**OUT4) / GRE(seqnum_present=1, proto=0x88BE) / ERSPAN_II(session_id=2) / I / a_to_b,  # b's: ingress
        E / IP(**OUT4) / UDP(dport=4789) / VXLAN(vni=1) / I / IP(src="192.0.2.7", dst="192.0.2.8") / UDP(),  # a's, neither end
        E / IP(**OUT4) / UDP(dport=4789) / VXLAN(vni=99) / I / a_to_b,  # unknown session: by address, both
    ]
    resolver = EniResolver(inventory)
    raw = next(CaptureReader(write_pcap(tmp_path / "s.pcap", [bytes(p) for p in packets])).chunks())
    batch = resolver.resolve(decode(raw, DecodeStats()))
    got = sorted((batch.eni_ids[int(e)], int(d)) for e, d in zip(batch.packets.eni, batch.packets.direction))
    assert got == sorted([("eni-a", 1), ("eni-b", 0), ("eni-a", 1), ("eni-b", 0)])
    assert resolver.stats.unmatched == 1 and resolver.stats.unknown_session == 1


def test_mirror_sessions_are_checked() -> None:
    base = dict(vpcs=(Vpc(id="v"),), subnets=(Subnet(id="s", vpc="v"),), enis=(Eni(id="eni-a", subnet="s"),))
    with pytest.raises(ValidationError, match="exactly one of vni, gre_key, erspan_id"):
        MirrorSession(eni="eni-a", vni=1, gre_key=2)
    with pytest.raises(ValidationError, match="unknown ENI eni-x"):
        Inventory(**base, mirror_sessions=(MirrorSession(eni="eni-x", vni=1),))
    with pytest.raises(ValidationError, match="same id"):
        Inventory(**base, mirror_sessions=(MirrorSession(eni="eni-a", vni=1), MirrorSession(eni="eni-a", vni=1)))
    with pytest.raises(ValidationError):
        MirrorSession(eni="eni-a", erspan_id=1024)  # ERSPAN session ids are 10 bits
