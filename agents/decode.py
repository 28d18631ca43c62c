"""Vectorised header decoding: raw captured packets → packet metadata columns.

Link layers: Ethernet (with 802.1Q / 802.1ad / QinQ tags), raw IP, Linux cooked (SLL and
SLL2). Network: IPv4 and IPv6 (hop-by-hop, routing, destination-options, fragment, AH and
mobility extension headers skipped). Transport: TCP and UDP ports (and SCTP, UDP-Lite),
TCP flags, ICMP/ICMPv6 type and code. Non-first IP fragments carry no ports (0). A packet
cut by the snap length keeps whatever fields it still holds; one too short for its IP
header is counted and dropped. Mirror-session tunnels (VXLAN to UDP 4789, GRE, ERSPAN;
``agents/tunnels.py``) are taken off and the inner packet is decoded in their place, with
its session key. Every step works on whole columns at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents import tunnels
from agents.source import RawPackets
from agents.wire import octets, u8, u16

ETHERNET, RAW, RAW_IPV4, RAW_IPV6, LINUX_SLL, LINUX_SLL2 = 1, 101, 228, 229, 113, 276
RAW_ALIASES = (12, 14, RAW)
_VLAN_TYPES = np.array([0x8100, 0x88A8, 0x9100], np.int64)
_IPV6_EXTENSIONS = np.array([0, 43, 60, 135, 139, 140], np.int64)  # (len + 1) * 8 bytes
_AH, _FRAGMENT = 51, 44
_PORTS = np.array([6, 17, 132, 136], np.int64)  # TCP, UDP, SCTP, UDP-Lite
_ICMP = np.array([1, 58], np.int64)


@dataclass(slots=True)
class DecodeStats:
    packets: int = 0
    ip_packets: int = 0
    non_ip: int = 0  # ARP, LLDP, …: not flows
    too_short: int = 0  # cut before the end of the IP header
    decapsulated: int = 0  # tunnel packets replaced by the packet they carry
    bad_tunnel: int = 0  # to the VXLAN port or GRE, but not a tunnel we can open: kept as is
    unknown_linktype: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IpPackets:
    """Metadata of the IP packets of a chunk (columns as in the frame, without ENI/direction)."""

    capture_time_ns: np.ndarray
    src_addr: np.ndarray  # V16, IPv4-mapped for IPv4
    dst_addr: np.ndarray
    ip_length: np.ndarray  # uint32
    wire_length: np.ndarray  # uint32
    src_port: np.ndarray  # uint16
    dst_port: np.ndarray
    protocol: np.ndarray  # uint8
    tcp_flags: np.ndarray  # uint8
    session: np.ndarray  # int64 mirror-session key, 0 = none (agents/tunnels.py)

    @property
    def size(self) -> int:
        return int(self.capture_time_ns.shape[0])

    def take(self, rows: np.ndarray) -> IpPackets:
        return IpPackets(*(np.asarray(getattr(self, f))[rows] for f in self.__slots__))

    @staticmethod
    def concatenate(parts: list[IpPackets]) -> IpPackets:
        if len(parts) == 1:
            return parts[0]
        return IpPackets(*(np.concatenate([getattr(p, f) for p in parts]) for f in IpPackets.__slots__))


def decode(raw: RawPackets, stats: DecodeStats, *, decapsulate: bool = True) -> IpPackets:
    """Metadata of the IP packets in ``raw``; what is not an IP packet is counted in ``stats``.

    With ``decapsulate``, mirror-session tunnel packets are replaced by their inner packet
    (one level of tunnel inside a tunnel is opened too).
    """
    stats.packets += raw.size
    return _decode(raw, stats, 2 if decapsulate else 0)[0]


def _decode(raw: RawPackets, stats: DecodeStats, tunnel_depth: int) -> tuple[IpPackets, np.ndarray]:
    """The IP packets of ``raw``, and for each the row of ``raw`` it came from."""
    data, start, caplen = raw.data, raw.offsets, raw.caplen
    end = start + caplen
    n = raw.size
    # Where the network layer starts and which protocol it is (an ethertype).
    l3 = np.full(n, -1, np.int64)
    ethertype = np.zeros(n, np.int64)
    link = raw.linktype.astype(np.int64)
    eth = link == ETHERNET
    if eth.any():
        at = start[eth]
        et = u16(data, at + 12)
        off = np.full(at.shape, 14, np.int64)
        for _ in range(3):  # up to three stacked VLAN tags
            tagged = np.isin(et, _VLAN_TYPES)
            if not tagged.any():
                break
            et = np.where(tagged, u16(data, at + off + 2), et)
            off += np.where(tagged, 4, 0)
        ethertype[eth], l3[eth] = et, at + off
    raw_ip = np.isin(link, RAW_ALIASES + (RAW_IPV4, RAW_IPV6))
    if raw_ip.any():
        version = u8(data, start[raw_ip]) >> 4
        ethertype[raw_ip] = np.where(version == 4, 0x0800, np.where(version == 6, 0x86DD, 0))
        l3[raw_ip] = start[raw_ip]
    for linktype, type_at, header in ((LINUX_SLL, 14, 16), (LINUX_SLL2, 0, 20)):
        sel = link == linktype
        if sel.any():
            ethertype[sel] = u16(data, start[sel] + type_at)
            l3[sel] = start[sel] + header
    known = eth | raw_ip | (link == LINUX_SLL) | (link == LINUX_SLL2)
    for lt in np.unique(link[~known]).tolist():
        stats.unknown_linktype[int(lt)] = stats.unknown_linktype.get(int(lt), 0) + int((link == lt).sum())

    v4 = known & (ethertype == 0x0800) & (l3 + 20 <= end)
    v6 = known & (ethertype == 0x86DD) & (l3 + 40 <= end)
    ip_like = known & np.isin(ethertype, [0x0800, 0x86DD])
    stats.too_short += int((ip_like & ~v4 & ~v6).sum())
    stats.non_ip += int((known & ~ip_like).sum())
    keep = v4 | v6

    src = np.zeros((n, 16), np.uint8)
    dst = np.zeros((n, 16), np.uint8)
    ip_length = np.zeros(n, np.int64)
    proto = np.zeros(n, np.int64)
    l4 = np.full(n, -1, np.int64)  # -1: no transport header to read (non-first fragment)

    if v4.any():
        at = l3[v4]
        ihl = (u8(data, at) & 0xF) * 4
        frag = u16(data, at + 6)
        ip_length[v4] = u16(data, at + 2)
        proto[v4] = u8(data, at + 9)
        src[v4, 10:12] = 0xFF
        dst[v4, 10:12] = 0xFF
        src[v4, 12:] = octets(data, at + 12, 4)
        dst[v4, 12:] = octets(data, at + 16, 4)
        l4[v4] = np.where((frag & 0x1FFF) == 0, at + ihl, -1)

    if v6.any():
        at = l3[v6]
        ip_length[v6] = u16(data, at + 4) + 40
        nxt = u8(data, at + 6)
        src[v6] = octets(data, at + 8, 16)
        dst[v6] = octets(data, at + 24, 16)
        pos = at + 40
        limit = end[v6]
        first_fragment = np.ones(at.shape, bool)
        for _ in range(8):  # extension header chain
            ext = np.isin(nxt, _IPV6_EXTENSIONS) | (nxt == _AH) | (nxt == _FRAGMENT)
            ext &= pos + 8 <= limit
            if not ext.any():
                break
            length = np.where(
                nxt == _AH, (u8(data, pos + 1) + 2) * 4, np.where(nxt == _FRAGMENT, 8, (u8(data, pos + 1) + 1) * 8)
            )
            first_fragment &= ~((nxt == _FRAGMENT) & ext & ((u16(data, pos + 2) >> 3) != 0))
            nxt = np.where(ext, u8(data, pos), nxt)
            pos = np.where(ext, pos + length, pos)
        proto[v6] = nxt
        l4[v6] = np.where(first_fragment, pos, -1)

    src_port = np.zeros(n, np.int64)
    dst_port = np.zeros(n, np.int64)
    flags = np.zeros(n, np.int64)
    has_ports = keep & (l4 >= 0) & np.isin(proto, _PORTS) & (l4 + 4 <= end)
    at = l4[has_ports]
    src_port[has_ports] = u16(data, at)
    dst_port[has_ports] = u16(data, at + 2)
    tcp = keep & (l4 >= 0) & (proto == 6) & (l4 + 14 <= end)
    flags[tcp] = u8(data, l4[tcp] + 13)
    icmp = keep & (l4 >= 0) & np.isin(proto, _ICMP) & (l4 + 2 <= end)
    dst_port[icmp] = u16(data, l4[icmp])  # type << 8 | code

    packets = IpPackets(
        capture_time_ns=raw.time_ns,
        src_addr=src.view("V16").reshape(-1),
        dst_addr=dst.view("V16").reshape(-1),
        ip_length=ip_length.astype(np.uint32),
        wire_length=raw.wirelen.astype(np.uint32),
        src_port=src_port.astype(np.uint16),
        dst_port=dst_port.astype(np.uint16),
        protocol=proto.astype(np.uint8),
        tcp_flags=flags.astype(np.uint8),
        session=raw.session if raw.session is not None else np.zeros(n, np.int64),
    )
    if tunnel_depth == 0:
        stats.ip_packets += int(keep.sum())
        rows = np.flatnonzero(keep)
        return packets.take(rows), rows
    # Mirror-session tunnels: the outer packet gives way to the packet it carries.
    to_vxlan = np.flatnonzero(keep & (l4 >= 0) & (proto == 17) & (dst_port == tunnels.VXLAN_PORT))
    to_gre = np.flatnonzero(keep & (l4 >= 0) & (proto == 47))
    vxlan = tunnels.vxlan(data, l4[to_vxlan] + 8, end[to_vxlan])
    gre = tunnels.gre(data, l4[to_gre], end[to_gre])
    opened = np.concatenate([to_vxlan[vxlan.valid], to_gre[gre.valid]])
    stats.bad_tunnel += int((~vxlan.valid).sum() + (~gre.valid).sum())
    stats.decapsulated += int(opened.size)
    keep[opened] = False
    stats.ip_packets += int(keep.sum())
    rows = np.flatnonzero(keep)
    if opened.size == 0:
        return packets.take(rows), rows
    parts, origin = [packets.take(rows)], [rows]
    for candidates, found in ((to_vxlan, vxlan), (to_gre, gre)):
        if found.valid.any():
            inner, inner_rows = _decode(tunnels.inner_packets(raw, candidates, found), stats, tunnel_depth - 1)
            parts.append(inner)
            origin.append(candidates[found.valid][inner_rows])
    # Inner packets take their tunnel packet's place, so capture order is kept.
    origin_rows = np.concatenate(origin)
    order = np.argsort(origin_rows, kind="stable")
    return IpPackets.concatenate(parts).take(order), origin_rows[order]
