"""Vectorised header decoding: raw captured packets → packet metadata columns.

Link layers: Ethernet (with 802.1Q / 802.1ad / QinQ tags), raw IP, Linux cooked (SLL and
SLL2). Network: IPv4 and IPv6 (hop-by-hop, routing, destination-options, fragment, AH and
mobility extension headers skipped). Transport: TCP and UDP ports (and SCTP, UDP-Lite),
TCP flags, ICMP/ICMPv6 type and code. Non-first IP fragments carry no ports (0). A packet
cut by the snap length keeps whatever fields it still holds; one too short for its IP
header is counted and dropped. Every step works on whole columns at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents.pcap import RawPackets

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

    @property
    def size(self) -> int:
        return int(self.capture_time_ns.shape[0])


# Readers clip positions into the buffer: a damaged length may point anywhere, and what is
# read there is discarded by the bounds checks of the caller.
def _at(data: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    return np.clip(at, 0, data.size - width)


def _u8(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    return data[_at(data, at, 1)].astype(np.int64)


def _u16(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    at = _at(data, at, 2)
    return (data[at].astype(np.int64) << 8) | data[at + 1]


def _bytes(data: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    return data[_at(data, at, width)[:, None] + np.arange(width)]


def decode(raw: RawPackets, stats: DecodeStats) -> IpPackets:
    data, start, caplen = raw.data, raw.offsets, raw.caplen
    end = start + caplen
    n = raw.size
    stats.packets += n
    # Where the network layer starts and which protocol it is (an ethertype).
    l3 = np.full(n, -1, np.int64)
    ethertype = np.zeros(n, np.int64)
    link = raw.linktype.astype(np.int64)
    eth = link == ETHERNET
    if eth.any():
        at = start[eth]
        et = _u16(data, at + 12)
        off = np.full(at.shape, 14, np.int64)
        for _ in range(3):  # up to three stacked VLAN tags
            tagged = np.isin(et, _VLAN_TYPES)
            if not tagged.any():
                break
            et = np.where(tagged, _u16(data, at + off + 2), et)
            off += np.where(tagged, 4, 0)
        ethertype[eth], l3[eth] = et, at + off
    raw_ip = np.isin(link, RAW_ALIASES + (RAW_IPV4, RAW_IPV6))
    if raw_ip.any():
        version = _u8(data, start[raw_ip]) >> 4
        ethertype[raw_ip] = np.where(version == 4, 0x0800, np.where(version == 6, 0x86DD, 0))
        l3[raw_ip] = start[raw_ip]
    for linktype, type_at, header in ((LINUX_SLL, 14, 16), (LINUX_SLL2, 0, 20)):
        sel = link == linktype
        if sel.any():
            ethertype[sel] = _u16(data, start[sel] + type_at)
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
    stats.ip_packets += int(keep.sum())

    src = np.zeros((n, 16), np.uint8)
    dst = np.zeros((n, 16), np.uint8)
    ip_length = np.zeros(n, np.int64)
    proto = np.zeros(n, np.int64)
    l4 = np.full(n, -1, np.int64)  # -1: no transport header to read (non-first fragment)

    if v4.any():
        at = l3[v4]
        ihl = (_u8(data, at) & 0xF) * 4
        frag = _u16(data, at + 6)
        ip_length[v4] = _u16(data, at + 2)
        proto[v4] = _u8(data, at + 9)
        src[v4, 10:12] = 0xFF
        dst[v4, 10:12] = 0xFF
        src[v4, 12:] = _bytes(data, at + 12, 4)
        dst[v4, 12:] = _bytes(data, at + 16, 4)
        l4[v4] = np.where((frag & 0x1FFF) == 0, at + ihl, -1)

    if v6.any():
        at = l3[v6]
        ip_length[v6] = _u16(data, at + 4) + 40
        nxt = _u8(data, at + 6)
        src[v6] = _bytes(data, at + 8, 16)
        dst[v6] = _bytes(data, at + 24, 16)
        pos = at + 40
        limit = end[v6]
        first_fragment = np.ones(at.shape, bool)
        for _ in range(8):  # extension header chain
            ext = np.isin(nxt, _IPV6_EXTENSIONS) | (nxt == _AH) | (nxt == _FRAGMENT)
            ext &= pos + 8 <= limit
            if not ext.any():
                break
            length = np.where(
                nxt == _AH, (_u8(data, pos + 1) + 2) * 4, np.where(nxt == _FRAGMENT, 8, (_u8(data, pos + 1) + 1) * 8)
            )
            first_fragment &= ~((nxt == _FRAGMENT) & ext & ((_u16(data, pos + 2) >> 3) != 0))
            nxt = np.where(ext, _u8(data, pos), nxt)
            pos = np.where(ext, pos + length, pos)
        proto[v6] = nxt
        l4[v6] = np.where(first_fragment, pos, -1)

    src_port = np.zeros(n, np.int64)
    dst_port = np.zeros(n, np.int64)
    flags = np.zeros(n, np.int64)
    has_ports = keep & (l4 >= 0) & np.isin(proto, _PORTS) & (l4 + 4 <= end)
    at = l4[has_ports]
    src_port[has_ports] = _u16(data, at)
    dst_port[has_ports] = _u16(data, at + 2)
    tcp = keep & (l4 >= 0) & (proto == 6) & (l4 + 14 <= end)
    flags[tcp] = _u8(data, l4[tcp] + 13)
    icmp = keep & (l4 >= 0) & np.isin(proto, _ICMP) & (l4 + 2 <= end)
    dst_port[icmp] = _u16(data, l4[icmp])  # type << 8 | code

    return IpPackets(
        capture_time_ns=raw.time_ns[keep],
        src_addr=np.ascontiguousarray(src[keep]).view("V16").reshape(-1),
        dst_addr=np.ascontiguousarray(dst[keep]).view("V16").reshape(-1),
        ip_length=ip_length[keep].astype(np.uint32),
        wire_length=raw.wirelen[keep].astype(np.uint32),
        src_port=src_port[keep].astype(np.uint16),
        dst_port=dst_port[keep].astype(np.uint16),
        protocol=proto[keep].astype(np.uint8),
        tcp_flags=flags[keep].astype(np.uint8),
    )
