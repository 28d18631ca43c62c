"""Header decoding: raw captured packets → packet metadata columns.

Link layers: Ethernet (with 802.1Q / 802.1ad / QinQ tags), raw IP, Linux cooked (SLL and
SLL2). Network: IPv4 and IPv6 (hop-by-hop, routing, destination-options, fragment, AH and
mobility extension headers skipped). Transport: TCP and UDP ports (and SCTP, UDP-Lite),
TCP flags, ICMP/ICMPv6 type and code. Non-first IP fragments carry no ports (0). A packet
cut by the snap length keeps whatever fields it still holds; one too short for its IP
header is counted and dropped. Mirror-session tunnels (VXLAN to UDP 4789, GRE, ERSPAN;
``agents/tunnels.py``) are taken off and the inner packet is decoded in their place, with
its session key. Headers are parsed by one numba-compiled pass (a chain of dependent reads
per packet); everything around it works on whole columns. No Python runs per packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from agents import tunnels
from agents.source import ETHERNET, LINUX_SLL, LINUX_SLL2, RAW, RAW_ALIASES, RAW_IPV4, RAW_IPV6, RawPackets

_AH, _FRAGMENT = 51, 44  # IPv6 extension headers with their own length rules


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


_IP, _NON_IP, _TOO_SHORT, _UNKNOWN_LINK = 0, 1, 2, 3  # per-packet outcome of _parse_headers


@numba.njit(inline="always")
def _be16(data: np.ndarray, at: int) -> int:
    return (int(data[at]) << 8) | int(data[at + 1])


@numba.njit(cache=True, nogil=True)
def _parse_headers(data, start, caplen, linktype, src, dst, ip_length, proto, src_port, dst_port, flags, l4, outcome):  # type: ignore[no-untyped-def]
    """Link, network and transport headers of every packet, in one compiled pass.

    Each packet is a short chain of dependent header reads (a VLAN tag moves the IP header,
    an IPv6 extension header moves the next one), which vectorised code can only do as
    many masked passes over every column; compiled, it is one pass. Writes the output
    arrays in place; ``outcome`` says per packet whether it is IP or why not.
    """
    limit = data.size
    for i in range(start.size):
        s = start[i]
        end = min(s + caplen[i], limit)
        lt = linktype[i]
        et = 0
        if lt == ETHERNET:
            if s + 14 > end:
                outcome[i] = _TOO_SHORT
                continue
            et = _be16(data, s + 12)
            l3 = s + 14
            for _ in range(3):  # up to three stacked VLAN tags (802.1Q, 802.1ad, QinQ)
                if (et == 0x8100 or et == 0x88A8 or et == 0x9100) and l3 + 4 <= end:
                    et = _be16(data, l3 + 2)
                    l3 += 4
                else:
                    break
        elif lt == RAW_ALIASES[0] or lt == RAW_ALIASES[1] or lt == RAW or lt == RAW_IPV4 or lt == RAW_IPV6:
            l3 = s
            version = data[s] >> 4 if s < end else 0
            et = 0x0800 if version == 4 else (0x86DD if version == 6 else 0)
        elif lt == LINUX_SLL:
            et = _be16(data, s + 14) if s + 16 <= end else 0
            l3 = s + 16
        elif lt == LINUX_SLL2:
            et = _be16(data, s) if s + 20 <= end else 0
            l3 = s + 20
        else:
            outcome[i] = _UNKNOWN_LINK
            continue

        if et == 0x0800:
            if l3 + 20 > end:
                outcome[i] = _TOO_SHORT
                continue
            ip_length[i] = _be16(data, l3 + 2)
            p = data[l3 + 9]
            src[i, 10] = src[i, 11] = dst[i, 10] = dst[i, 11] = 0xFF
            for k in range(4):
                src[i, 12 + k] = data[l3 + 12 + k]
                dst[i, 12 + k] = data[l3 + 16 + k]
            at = l3 + (data[l3] & 0xF) * 4 if (_be16(data, l3 + 6) & 0x1FFF) == 0 else -1
        elif et == 0x86DD:
            if l3 + 40 > end:
                outcome[i] = _TOO_SHORT
                continue
            ip_length[i] = _be16(data, l3 + 4) + 40
            for k in range(16):
                src[i, k] = data[l3 + 8 + k]
                dst[i, k] = data[l3 + 24 + k]
            p = data[l3 + 6]
            at = l3 + 40
            first_fragment = True
            for _ in range(8):  # the extension header chain
                if at + 8 > end:
                    break
                if p == _AH:
                    length = (int(data[at + 1]) + 2) * 4
                elif p == _FRAGMENT:
                    length = 8
                    if (_be16(data, at + 2) >> 3) != 0:
                        first_fragment = False
                elif p == 0 or p == 43 or p == 60 or p == 135 or p == 139 or p == 140:
                    length = (int(data[at + 1]) + 1) * 8
                else:
                    break
                p = data[at]
                at += length
            if not first_fragment:
                at = -1
        else:
            outcome[i] = _NON_IP
            continue

        outcome[i] = _IP
        proto[i] = p
        l4[i] = at  # -1: a non-first fragment, no transport header to read
        if at < 0:
            continue
        if (p == 6 or p == 17 or p == 132 or p == 136) and at + 4 <= end:
            src_port[i] = _be16(data, at)
            dst_port[i] = _be16(data, at + 2)
        if p == 6 and at + 14 <= end:
            flags[i] = data[at + 13]
        if (p == 1 or p == 58) and at + 2 <= end:
            dst_port[i] = _be16(data, at)  # ICMP type << 8 | code


def _decode(raw: RawPackets, stats: DecodeStats, tunnel_depth: int) -> tuple[IpPackets, np.ndarray]:
    """The IP packets of ``raw``, and for each the row of ``raw`` it came from."""
    data, n = raw.data, raw.size
    src = np.zeros((n, 16), np.uint8)
    dst = np.zeros((n, 16), np.uint8)
    ip_length = np.zeros(n, np.uint32)
    proto = np.zeros(n, np.uint8)
    src_port = np.zeros(n, np.uint16)
    dst_port = np.zeros(n, np.uint16)
    flags = np.zeros(n, np.uint8)
    l4 = np.full(n, -1, np.int64)
    outcome = np.zeros(n, np.uint8)
    _parse_headers(data, raw.offsets, raw.caplen, raw.linktype, src, dst, ip_length, proto, src_port, dst_port, flags, l4, outcome)
    counts = np.bincount(outcome, minlength=4)
    stats.non_ip += int(counts[_NON_IP])
    stats.too_short += int(counts[_TOO_SHORT])
    if counts[_UNKNOWN_LINK]:
        links, per_link = np.unique(raw.linktype[outcome == _UNKNOWN_LINK], return_counts=True)
        for lt, count in zip(links.tolist(), per_link.tolist()):
            stats.unknown_linktype[lt] = stats.unknown_linktype.get(lt, 0) + count
    keep = outcome == _IP
    end = raw.offsets + raw.caplen

    packets = IpPackets(
        capture_time_ns=raw.time_ns,
        src_addr=src.view("V16").reshape(-1),
        dst_addr=dst.view("V16").reshape(-1),
        ip_length=ip_length,
        wire_length=raw.wirelen.astype(np.uint32),
        src_port=src_port,
        dst_port=dst_port,
        protocol=proto,
        tcp_flags=flags,
        session=raw.session if raw.session is not None else np.zeros(n, np.int64),
    )
    if tunnel_depth == 0:
        stats.ip_packets += int(keep.sum())
        rows = np.flatnonzero(keep)
        return packets.take(rows), rows
    # Mirror-session tunnels: the outer packet gives way to the packet it carries.
    to_vxlan = np.flatnonzero(keep & (l4 >= 0) & (proto == 17) & (dst_port == tunnels.VXLAN_PORT))
    to_gre = np.flatnonzero(keep & (l4 >= 0) & (proto == 47))
    data = raw.data
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
