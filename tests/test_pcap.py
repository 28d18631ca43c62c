"""Capture files built in the test (scapy builds the packets) → vectorised decoding.

Every encapsulation the agent claims to read, IPv4 and IPv6, and the broken cases:
records cut by the snap length, a file cut mid-record, garbage, unknown link types.
"""

from __future__ import annotations

import gzip
import ipaddress
import struct
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapNgWriter

from agents.decode import DecodeStats, decode
from agents.enis import EniResolver
from agents.pcap import CaptureFileError, CaptureReader
from flowlogs.errors import ConfigError
from schemas.inventory import Eni, Inventory, Subnet, Vpc

T0 = 1_764_000_000


def write_pcap(path: Path, packets: list[bytes], *, linktype: int = 1, snaplen: int = 65535, nanos: bool = False,
               wirelen: list[int] | None = None, t0: int = T0) -> Path:
    """Classic pcap, by hand, so caplen/wirelen/link type are exactly what the test says."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, data in enumerate(packets):
        cap = data[:snaplen]
        frac = i * (1000 if nanos else 1)
        orig = wirelen[i] if wirelen else len(data)
        out.append(struct.pack("<IIII", t0 + i, frac, len(cap), orig) + cap)
    path.write_bytes(b"".join(out))
    return path


def decode_file(path: Path):
    stats = DecodeStats()
    reader = CaptureReader(path, chunk_bytes=256)  # tiny chunks: records straddle chunk ends
    parts = [decode(raw, stats) for raw in reader.chunks()]
    cols = {name: np.concatenate([getattr(p, name) for p in parts]) for name in parts[0].__slots__} if parts else {}
    return cols, stats, reader.stats


def addr(col: np.ndarray, i: int) -> str:
    raw = bytes(col[i])
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped else str(ip)


def row(cols: dict, i: int) -> tuple:
    return (
        addr(cols["src_addr"], i), addr(cols["dst_addr"], i), int(cols["protocol"][i]),
        int(cols["src_port"][i]), int(cols["dst_port"][i]), int(cols["ip_length"][i]), int(cols["tcp_flags"][i]),
    )


E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
V4 = dict(src="10.0.1.10", dst="198.51.100.7")
V6 = dict(src="2001:db8::10", dst="2001:db8:ffff::7")


def cases() -> list[tuple[Packet, tuple]]:
    tcp = IP(**V4) / TCP(sport=40000, dport=443, flags="S")
    return [
        (E / tcp, ("10.0.1.10", "198.51.100.7", 6, 40000, 443, 40, 0x02)),
        (E / Dot1Q(vlan=10) / IP(**V4) / UDP(sport=5353, dport=53) / Raw(b"x" * 10), ("10.0.1.10", "198.51.100.7", 17, 5353, 53, 38, 0)),
        (E / Dot1AD(vlan=100) / Dot1Q(vlan=10) / IP(**V4) / TCP(sport=1, dport=2, flags="FA"), ("10.0.1.10", "198.51.100.7", 6, 1, 2, 40, 0x11)),
        (E / IP(**V4) / ICMP(type=8, code=0) / Raw(b"p" * 56), ("10.0.1.10", "198.51.100.7", 1, 0, 8 << 8, 84, 0)),
        (E / IP(src="192.0.2.1", dst="192.0.2.9") / GRE() / IP(**V4) / UDP(sport=6000, dport=6001), ("10.0.1.10", "198.51.100.7", 17, 6000, 6001, 28, 0)),  # tunnel: its inner packet
        (E / IPv6(**V6) / TCP(sport=50000, dport=22, flags="PA") / Raw(b"y" * 100), ("2001:db8::10", "2001:db8:ffff::7", 6, 50000, 22, 160, 0x18)),
        (E / IPv6(**V6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=7, dport=8), ("2001:db8::10", "2001:db8:ffff::7", 17, 7, 8, 64, 0)),
        (E / IPv6(**V6) / ICMPv6EchoRequest(), ("2001:db8::10", "2001:db8:ffff::7", 58, 0, 128 << 8, 48, 0)),
        (E / IPv6(**V6) / IPv6ExtHdrFragment(offset=0, m=1, id=7) / UDP(sport=9, dport=10) / Raw(b"z" * 32), ("2001:db8::10", "2001:db8:ffff::7", 17, 9, 10, 88, 0)),
        (E / IPv6(**V6) / IPv6ExtHdrFragment(offset=5, m=0, id=7, nh=17) / Raw(b"z" * 16), ("2001:db8::10", "2001:db8:ffff::7", 17, 0, 0, 64, 0)),
    ]


def test_every_encapsulation_decodes(tmp_path: Path) -> None:
    packets, expected = zip(*cases())
    frags = fragment(IP(**V4) / UDP(sport=1000, dport=2000) / Raw(b"f" * 3000), fragsize=1400)
    assert len(frags) == 3
    packets = list(packets) + [E / f for f in frags] + [E / ARP()]
    expected = list(expected) + [
        ("10.0.1.10", "198.51.100.7", 17, 1000, 2000, 1420, 0),  # first fragment keeps the ports
        ("10.0.1.10", "198.51.100.7", 17, 0, 0, 1420, 0),  # later ones have none
        ("10.0.1.10", "198.51.100.7", 17, 0, 0, 228, 0),
    ]
    cols, stats, _ = decode_file(write_pcap(tmp_path / "all.pcap", [bytes(p) for p in packets]))
    assert [row(cols, i) for i in range(len(expected))] == expected
    assert stats.non_ip == 1  # the ARP
    assert cols["capture_time_ns"][3] == (T0 + 3) * 10**9 + 3_000
    assert cols["wire_length"][0] == len(bytes(packets[0]))


@pytest.mark.parametrize("flavour", ["pcap-ns", "pcapng", "gzip"])
def test_file_formats_agree(tmp_path: Path, flavour: str) -> None:
    packets = [bytes(p) for p, _ in cases()]
    expected = [e for _, e in cases()]
    if flavour == "pcap-ns":
        path = write_pcap(tmp_path / "ns.pcap", packets, nanos=True)
    elif flavour == "gzip":
        plain = write_pcap(tmp_path / "plain.pcap", packets)
        path = tmp_path / "c.pcap.gz"
        path.write_bytes(gzip.compress(plain.read_bytes()))
    else:
        path = tmp_path / "c.pcapng"
        with PcapNgWriter(str(path)) as writer:
            for i, p in enumerate(cases()):
                p[0].time = T0 + i + 0.25
                writer.write(p[0])
    cols, _, _ = decode_file(path)
    assert [row(cols, i) for i in range(len(expected))] == expected
    if flavour == "pcapng":
        assert cols["capture_time_ns"][1] == (T0 + 1) * 10**9 + 250_000_000


def test_other_link_types(tmp_path: Path) -> None:
    ip = IP(**V4) / UDP(sport=3, dport=4)
    raw, _, _ = decode_file(write_pcap(tmp_path / "raw.pcap", [bytes(ip), bytes(IPv6(**V6) / TCP(sport=5, dport=6))], linktype=101))
    assert [row(raw, i)[:5] for i in range(2)] == [
        ("10.0.1.10", "198.51.100.7", 17, 3, 4), ("2001:db8::10", "2001:db8:ffff::7", 6, 5, 6)
    ]
    sll, _, _ = decode_file(write_pcap(tmp_path / "sll.pcap", [bytes(CookedLinux(proto=0x0800) / ip)], linktype=113))
    assert row(sll, 0)[:5] == ("10.0.1.10", "198.51.100.7", 17, 3, 4)
    odd, stats, _ = decode_file(write_pcap(tmp_path / "odd.pcap", [bytes(ip)] * 3, linktype=147))
    assert odd["protocol"].size == 0 and stats.unknown_linktype == {147: 3}


def test_snaplen_cut_packets_keep_what_they_hold(tmp_path: Path) -> None:
    tcp = bytes(E / IP(**V4) / TCP(sport=11, dport=12, flags="S") / Raw(b"d" * 500))
    path = write_pcap(tmp_path / "snap.pcap", [tcp, tcp, tcp], snaplen=14 + 20 + 4)  # IP header + ports only
    cols, stats, _ = decode_file(path)
    assert [row(cols, i) for i in range(3)] == [("10.0.1.10", "198.51.100.7", 6, 11, 12, 540, 0)] * 3
    assert int(cols["wire_length"][0]) == len(tcp)
    short = write_pcap(tmp_path / "short.pcap", [tcp], snaplen=14 + 12)  # cut inside the IP header
    cols, stats, _ = decode_file(short)
    assert cols["protocol"].size == 0 and stats.too_short == 1


def test_file_cut_mid_record_keeps_the_complete_ones(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "cut.pcap", [bytes(p) for p, _ in cases()])
    path.write_bytes(path.read_bytes()[:-7])
    cols, _, read = decode_file(path)
    assert cols["protocol"].size == len(cases()) - 1
    assert read.truncated_records == 1


def test_garbage_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture" * 10)
    with pytest.raises(CaptureFileError, match="not a pcap or pcapng"):
        list(CaptureReader(junk).chunks())
    with pytest.raises(CaptureFileError, match="cannot open"):
        list(CaptureReader(tmp_path / "missing.pcap").chunks())


def test_eni_resolution_sets_direction_and_counts_strangers(tmp_path: Path) -> None:
    inventory = Inventory(
        vpcs=(Vpc(id="vpc-1"),),
        subnets=(Subnet(id="subnet-1", vpc="vpc-1"),),
        enis=(
            Eni(id="eni-a", subnet="subnet-1", ips=("10.0.1.10",)),
            Eni(id="eni-b", subnet="subnet-1", ips=("10.0.1.20", "2001:db8::10")),
        ),
    )
    resolver = EniResolver(inventory)
    packets = [
        E / IP(src="10.0.1.10", dst="198.51.100.7") / UDP(),  # egress of a
        E / IP(src="198.51.100.7", dst="10.0.1.20") / UDP(),  # ingress of b
        E / IP(src="10.0.1.10", dst="10.0.1.20") / UDP(),  # a → b: both
        E / IPv6(src="2001:db8::10", dst="2001:db8::99") / UDP(),  # egress of b (IPv6)
        E / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(),  # nobody's
    ]
    stats = DecodeStats()
    raw = next(CaptureReader(write_pcap(tmp_path / "e.pcap", [bytes(p) for p in packets])).chunks())
    batch = resolver.resolve(decode(raw, stats))
    got = sorted(
        (batch.eni_ids[int(e)], int(d), addr(batch.packets.src_addr, i))
        for i, (e, d) in enumerate(zip(batch.packets.eni, batch.packets.direction))
    )
    assert got == sorted([
        ("eni-a", 1, "10.0.1.10"), ("eni-b", 0, "198.51.100.7"), ("eni-a", 1, "10.0.1.10"),
        ("eni-b", 0, "10.0.1.10"), ("eni-b", 1, "2001:db8::10"),
    ])
    assert resolver.stats.unmatched == 1


def test_one_address_on_two_enis_is_a_config_error() -> None:
    inventory = Inventory(
        vpcs=(Vpc(id="v"),), subnets=(Subnet(id="s", vpc="v"),),
        enis=(Eni(id="eni-a", subnet="s", ips=("10.0.0.1",)), Eni(id="eni-b", subnet="s", ips=("10.0.0.1",))),
    )
    with pytest.raises(ConfigError, match="10.0.0.1 belongs to both eni-a and eni-b"):
        EniResolver(inventory)


def test_eni_addresses_sharing_their_low_bytes_still_resolve_exactly(tmp_path: Path) -> None:
    inventory = Inventory(
        vpcs=(Vpc(id="v"),), subnets=(Subnet(id="s", vpc="v"),),
        enis=(Eni(id="eni-1", subnet="s", ips=("2001:db8:1::10",)), Eni(id="eni-2", subnet="s", ips=("2001:db8:2::10",))),
    )
    resolver = EniResolver(inventory)
    packets = [E / IPv6(src="2001:db8:9::1", dst=d) / UDP() for d in ("2001:db8:2::10", "2001:db8:1::10", "2001:db8:3::10")]
    raw = next(CaptureReader(write_pcap(tmp_path / "low.pcap", [bytes(p) for p in packets])).chunks())
    batch = resolver.resolve(decode(raw, DecodeStats()))
    got = {(batch.eni_ids[int(e)], addr(batch.packets.dst_addr, i)) for i, e in enumerate(batch.packets.eni)}
    assert got == {("eni-2", "2001:db8:2::10"), ("eni-1", "2001:db8:1::10")}
    assert resolver.stats.unmatched == 1
