"""Mirror-session encapsulations: VXLAN, GRE and ERSPAN type I/II/III, taken off vectorised.

Cloud traffic mirroring delivers each mirrored packet inside a tunnel from the mirror
source to the collector: VXLAN (UDP 4789, the VNI names the session), plain GRE
(transparent Ethernet bridging or IP inside; the GRE key names the session) or ERSPAN
(GRE protocol 0x88BE for types I/II, 0x22EB for type III; the ERSPAN session id).

Functions here take column arrays — where each packet's tunnel header starts and where
its captured bytes end — and return, per packet, whether it is a valid tunnel packet,
where the inner packet starts, the inner link type and the mirror session key. A session
key is ``kind << 32 | id`` (``schemas.inventory.session_key``); 0 means "no session".
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from agents.source import ETHERNET, RAW, RawPackets
from agents.wire import u8, u16, u32
from schemas.inventory import SessionKind, session_key

VXLAN_PORT = 4789

_GRE_CHECKSUM, _GRE_ROUTING, _GRE_KEY, _GRE_SEQUENCE = 0x8000, 0x4000, 0x2000, 0x1000
_TEB, _IPV4, _IPV6, _ERSPAN_II, _ERSPAN_III = 0x6558, 0x0800, 0x86DD, 0x88BE, 0x22EB


class Inner(NamedTuple):
    """Per tunnel candidate: valid?, inner packet start, inner link type, session key."""

    valid: np.ndarray  # bool
    at: np.ndarray  # int64
    linktype: np.ndarray  # int32
    session: np.ndarray  # int64


def vxlan(data: np.ndarray, at: np.ndarray, end: np.ndarray) -> Inner:
    """VXLAN headers (RFC 7348) at ``at``: the I flag must be set; an Ethernet frame follows."""
    valid = (at + 8 + 14 <= end) & ((u8(data, at) & 0x08) != 0)
    vni = u32(data, at + 4) >> 8
    session = np.where(valid, session_key(SessionKind.VXLAN, 0) | vni, 0)
    return Inner(valid, at + 8, np.full(at.shape, ETHERNET, np.int32), session)


def gre(data: np.ndarray, at: np.ndarray, end: np.ndarray) -> Inner:
    """GRE headers (RFC 2784/2890) at ``at``, with ERSPAN I/II/III inside where present."""
    flags = u16(data, at)
    protocol = u16(data, at + 2)
    has_key = (flags & _GRE_KEY) != 0
    has_sequence = (flags & _GRE_SEQUENCE) != 0
    key_at = at + 4 + np.where((flags & (_GRE_CHECKSUM | _GRE_ROUTING)) != 0, 4, 0)
    payload = key_at + np.where(has_key, 4, 0) + np.where(has_sequence, 4, 0)
    # Version 0 only, no source routing (obsolete, variable length).
    valid = ((flags & 0x7) == 0) & ((flags & _GRE_ROUTING) == 0) & (payload <= end)
    key = np.where(has_key, u32(data, key_at), 0)

    inner_at = payload.copy()
    linktype = np.full(at.shape, ETHERNET, np.int32)
    session = session_key(SessionKind.GRE, 0) | key
    plain_ip = (protocol == _IPV4) | (protocol == _IPV6)
    linktype[plain_ip] = RAW
    # ERSPAN type I has no ERSPAN header (and no GRE sequence number); type II has 8 bytes.
    erspan_ii = protocol == _ERSPAN_II
    type_ii = erspan_ii & has_sequence
    inner_at = np.where(type_ii, payload + 8, inner_at)
    erspan_id = u16(data, payload + 2) & 0x3FF
    session = np.where(erspan_ii, session_key(SessionKind.ERSPAN, 0) | np.where(type_ii, erspan_id, 0), session)
    valid &= ~type_ii | ((u8(data, payload) >> 4) == 1)
    # Type III: 12 bytes, 8 more when the O flag says a platform sub-header follows; the
    # frame type says whether an Ethernet frame (0) or an IP packet (2) is inside.
    type_iii = protocol == _ERSPAN_III
    optional = (u8(data, payload + 11) & 0x01) != 0
    frame_type = (u8(data, payload + 10) >> 2) & 0x1F
    inner_at = np.where(type_iii, payload + 12 + np.where(optional, 8, 0), inner_at)
    linktype[type_iii & (frame_type == 2)] = RAW
    session = np.where(type_iii, session_key(SessionKind.ERSPAN, 0) | erspan_id, session)
    valid &= ~type_iii | (((u8(data, payload) >> 4) == 2) & ((frame_type == 0) | (frame_type == 2)))

    valid &= plain_ip | (protocol == _TEB) | erspan_ii | type_iii
    valid &= inner_at + np.where(linktype == ETHERNET, 14, 20) <= end
    return Inner(valid, inner_at, linktype, np.where(valid, session, 0))


def inner_packets(raw: RawPackets, rows: np.ndarray, inner: Inner) -> RawPackets:
    """The inner packets of ``raw[rows]`` (valid tunnel packets only), sharing its buffer."""
    keep = rows[inner.valid]
    at = inner.at[inner.valid]
    header = at - raw.offsets[keep]
    return RawPackets(
        data=raw.data,
        offsets=at,
        caplen=raw.caplen[keep] - header,
        # What the mirrored packet measured on the wire, when the mirror truncated it.
        wirelen=np.maximum(raw.wirelen[keep] - header, 0),
        time_ns=raw.time_ns[keep],
        linktype=inner.linktype[inner.valid],
        session=inner.session[inner.valid],
    )
