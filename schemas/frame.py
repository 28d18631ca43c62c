"""Packet-metadata frame, version 1: the one wire format between agents and the pipeline.

A frame is one Kafka message carrying the metadata of many packets (normally 1k–10k) as
fixed-width little-endian columns behind an 88-byte header::

    +-----------------+------------------------+----------------------------------+
    | header (88 B)   | ENI table              | columns, in COLUMNS order        |
    |                 | eni_count × 32 B ASCII | each packet_count × width bytes  |
    +-----------------+------------------------+----------------------------------+

Columns are ordered widest first, so every column starts naturally aligned when the
buffer is. An agent sends one ENI's packets per frame, keyed by the ENI, so each ENI's
frames stay in order on one partition; their ``sequence`` numbers let the pipeline see a
frame lost after it left the agent. Packets the agent itself had to drop (its send
buffer overflowed, or Kafka refused a frame) are reported in the next frame of that ENI
— a frame of no packets when nothing else is going — so the pipeline can mark those
windows ``SKIPDATA``. Every frame also says the agent was capturing for its ENIs from
``first_time_ns`` to ``last_time_ns``; a heartbeat (a frame of no packets, flag
``HEARTBEAT``) says just that, so an ENI's windows with no traffic become ``NODATA``
records and windows close on time when nothing flows. Decoding is zero-copy: :func:`decode` returns numpy views into the message
bytes. ``schemas/generated/frame.md`` is the byte-level reference for agents written in
other languages; it is generated from the definitions below (``flowlogs schemas --write``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from flowlogs.errors import BadMagicError, FrameError, TruncatedFrameError, UnsupportedVersionError

MAGIC = b"FLPM"  # "Flow Logs Packet Metadata"
VERSION = 1
HEADER_SIZE = 88
ENI_ID_SIZE = 32
MAX_PACKETS = 65_535  # so the frame fits Kafka's default 1 MiB message limit with room
MAX_ENIS = 65_535  # the `eni` column is an index into the frame's ENI table

FLAG_HEARTBEAT = 0x0001  # no packets: the agent captured for these ENIs over [first, last]

DIRECTION_INGRESS = 0
DIRECTION_EGRESS = 1


class FieldSpec(NamedTuple):
    """One header field or packet column: name, numpy dtype string, meaning."""

    name: str
    dtype: str
    doc: str


HEADER_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("magic", "S4", 'ASCII "FLPM"'),
    FieldSpec("version", "<u2", "frame format version; this document describes 1"),
    FieldSpec("header_size", "<u2", "bytes before the ENI table; 88 in version 1"),
    FieldSpec("agent_id", "S16", "agent name, ASCII, NUL-padded"),
    FieldSpec("agent_start_ns", "<u8", "when this run of the agent started (ns since the epoch): with agent_id, names the run"),
    FieldSpec("sequence", "<u8", "frame number within this agent run and ENI (the ENI table's first entry): from 0, +1 per frame"),
    FieldSpec("packet_count", "<u4", "rows in every column; 0 only in a frame that just reports drops"),
    FieldSpec("eni_count", "<u2", "entries in the ENI table"),
    FieldSpec("flags", "<u2", "bit 0 HEARTBEAT: a frame of no packets covering [first_time_ns, last_time_ns]; others 0"),
    FieldSpec("first_time_ns", "<u8", "smallest capture_time_ns in the frame (a drop report: of the dropped packets)"),
    FieldSpec("last_time_ns", "<u8", "largest capture_time_ns in the frame (a drop report: of the dropped packets)"),
    FieldSpec("dropped_packets", "<u4", "packets of these ENIs the agent dropped since its previous frame for them"),
    FieldSpec("body_size", "<u4", "bytes after the header: ENI table plus columns"),
    FieldSpec("dropped_first_time_ns", "<u8", "smallest capture time of those dropped packets; 0 when none"),
    FieldSpec("dropped_last_time_ns", "<u8", "largest capture time of those dropped packets; 0 when none"),
)

HEADER_DTYPE = np.dtype([(f.name, f.dtype) for f in HEADER_FIELDS])
assert HEADER_DTYPE.itemsize == HEADER_SIZE, HEADER_DTYPE.itemsize


COLUMNS: tuple[FieldSpec, ...] = (
    FieldSpec("capture_time_ns", "<u8", "capture time, nanoseconds since the Unix epoch (UTC)"),
    FieldSpec("src_addr", "V16", "source IP address, network byte order; IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d)"),
    FieldSpec("dst_addr", "V16", "destination IP address, same encoding as src_addr"),
    FieldSpec("ip_length", "<u4", "IP total length (IPv4 total length, IPv6 40 + payload length): the flow record's bytes"),
    FieldSpec("wire_length", "<u4", "length of the packet on the wire (link layer included)"),
    FieldSpec("src_port", "<u2", "TCP/UDP/SCTP source port; 0 for other protocols"),
    FieldSpec("dst_port", "<u2", "TCP/UDP/SCTP destination port; ICMP/ICMPv6: type << 8 | code; 0 otherwise"),
    FieldSpec("eni", "<u2", "index of the packet's ENI in the frame's ENI table"),
    FieldSpec("protocol", "u1", "IP protocol number (IPv6: the upper-layer header)"),
    FieldSpec("tcp_flags", "u1", "TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN); 0 for non-TCP"),
    FieldSpec("direction", "u1", "0 = ingress, 1 = egress, relative to the ENI"),
)

PACKET_DTYPE = np.dtype([(c.name, c.dtype) for c in COLUMNS])
"""One packet as a record: the row view used by agents that build frames from structs."""

PACKET_SIZE = PACKET_DTYPE.itemsize


def body_dtype(packet_count: int, eni_count: int) -> np.dtype:
    """The structured dtype of a frame body: the ENI table then one sub-array per column."""
    fields: list[tuple[str, str, tuple[int, ...]]] = [("eni_ids", f"S{ENI_ID_SIZE}", (eni_count,))]
    fields += [(c.name, c.dtype, (packet_count,)) for c in COLUMNS]
    return np.dtype(fields)


class Packets(NamedTuple):
    """Columns of one frame (views into the message bytes) — or of several, concatenated."""

    capture_time_ns: np.ndarray
    src_addr: np.ndarray
    dst_addr: np.ndarray
    ip_length: np.ndarray
    wire_length: np.ndarray
    src_port: np.ndarray
    dst_port: np.ndarray
    eni: np.ndarray
    protocol: np.ndarray
    tcp_flags: np.ndarray
    direction: np.ndarray

    @property
    def size(self) -> int:
        """Number of packets (``len()`` of a NamedTuple is its field count, so not that)."""
        return int(self.capture_time_ns.shape[0])


assert Packets._fields == tuple(c.name for c in COLUMNS)


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: header values, the ENI table and the packet columns."""

    agent_id: str
    agent_start_ns: int
    sequence: int
    first_time_ns: int
    last_time_ns: int
    dropped_packets: int
    dropped_first_time_ns: int
    dropped_last_time_ns: int
    flags: int
    eni_ids: tuple[str, ...]
    packets: Packets

    @property
    def packet_count(self) -> int:
        return self.packets.size


def encode(
    packets: Packets | np.ndarray,
    eni_ids: list[str] | tuple[str, ...],
    *,
    agent_id: str,
    sequence: int,
    agent_start_ns: int = 0,
    dropped_packets: int = 0,
    dropped_time_ns: tuple[int, int] = (0, 0),
    heartbeat_ns: tuple[int, int] | None = None,
) -> bytes:
    """Build one frame from columns (a :class:`Packets`) or rows (an array of PACKET_DTYPE).

    A frame of no packets reports drops (``dropped_packets`` > 0; ``dropped_time_ns`` is the
    (first, last) capture time of the dropped packets) or is a heartbeat covering
    ``heartbeat_ns`` = (first, last).
    """
    count = len(packets) if isinstance(packets, np.ndarray) else packets.size
    if not (0 < count or dropped_packets > 0 or heartbeat_ns) or count > MAX_PACKETS:
        raise ValueError(f"a frame holds 1..{MAX_PACKETS} packets (0 only to report drops or beat), got {count}")
    if heartbeat_ns and count:
        raise ValueError("a heartbeat frame carries no packets")
    if not 0 < len(eni_ids) <= MAX_ENIS:
        raise ValueError(f"a frame holds 1..{MAX_ENIS} ENIs, got {len(eni_ids)}")
    agent = agent_id.encode("ascii")
    if len(agent) > 16:
        raise ValueError(f"agent id {agent_id!r} is longer than 16 bytes")
    body = np.zeros((), dtype=body_dtype(count, len(eni_ids)))
    for i, eni in enumerate(eni_ids):
        raw = eni.encode("ascii")
        if len(raw) > ENI_ID_SIZE:
            raise ValueError(f"ENI id {eni!r} is longer than {ENI_ID_SIZE} bytes")
        body["eni_ids"][i] = raw
    for column in COLUMNS:
        body[column.name] = packets[column.name] if isinstance(packets, np.ndarray) else getattr(packets, column.name)
    times = body["capture_time_ns"]
    first, last = (int(times.min()), int(times.max())) if count else (heartbeat_ns or dropped_time_ns)
    header = np.zeros(1, dtype=HEADER_DTYPE)
    header[0] = (
        MAGIC,
        VERSION,
        HEADER_SIZE,
        agent,
        agent_start_ns,
        sequence,
        count,
        len(eni_ids),
        FLAG_HEARTBEAT if heartbeat_ns else 0,
        first,
        last,
        dropped_packets,
        body.dtype.itemsize,
        *dropped_time_ns,
    )
    return header.tobytes() + body.tobytes()


def decode(message: bytes | memoryview) -> Frame:
    """Decode a frame without copying its columns; raises a :class:`FrameError` subclass."""
    size = len(message)
    if size < 8:
        raise TruncatedFrameError(f"frame of {size} bytes is shorter than the fixed header start")
    if bytes(message[:4]) != MAGIC:
        raise BadMagicError(f"bad magic {bytes(message[:4])!r}, expected {MAGIC!r}")
    version = int.from_bytes(message[4:6], "little")
    if version != VERSION:
        raise UnsupportedVersionError(f"frame version {version} is not supported (this build reads {VERSION})")
    if size < HEADER_SIZE:
        raise TruncatedFrameError(f"frame of {size} bytes is shorter than its {HEADER_SIZE}-byte header")
    header = np.frombuffer(message, dtype=HEADER_DTYPE, count=1)[0]
    count, eni_count = int(header["packet_count"]), int(header["eni_count"])
    dtype = body_dtype(count, eni_count)
    expected = int(header["header_size"]) + dtype.itemsize
    if int(header["header_size"]) != HEADER_SIZE or int(header["body_size"]) != dtype.itemsize or size != expected:
        raise TruncatedFrameError(
            f"frame says {count} packets and {eni_count} ENIs ({expected} bytes) but is {size} bytes"
        )
    flags = int(header["flags"])
    if (count == 0 and int(header["dropped_packets"]) == 0 and not flags & FLAG_HEARTBEAT) or eni_count == 0:
        raise TruncatedFrameError("frame has no packets (and is no drop report or heartbeat) or no ENIs")
    body = np.frombuffer(message, dtype=dtype, count=1, offset=HEADER_SIZE).reshape(())
    packets = Packets(*(body[c.name] for c in COLUMNS))
    if count and int(packets.eni.max()) >= eni_count:
        raise FrameError(f"a packet names ENI index {int(packets.eni.max())} of a {eni_count}-entry table")
    return Frame(
        agent_id=header["agent_id"].decode("ascii", "replace"),
        agent_start_ns=int(header["agent_start_ns"]),
        sequence=int(header["sequence"]),
        first_time_ns=int(header["first_time_ns"]),
        last_time_ns=int(header["last_time_ns"]),
        dropped_packets=int(header["dropped_packets"]),
        dropped_first_time_ns=int(header["dropped_first_time_ns"]),
        dropped_last_time_ns=int(header["dropped_last_time_ns"]),
        flags=flags,
        eni_ids=tuple(e.decode("ascii", "replace") for e in body["eni_ids"]),
        packets=packets,
    )


def concatenate(parts: list[Packets]) -> Packets:
    """Join the columns of several frames into one contiguous batch."""
    if len(parts) == 1:
        return parts[0]
    return Packets(*(np.concatenate(cols) for cols in zip(*parts)))


def ipv4_mapped(ipv4: np.ndarray) -> np.ndarray:
    """IPv4 addresses (uint32, host order) as 16-byte IPv4-mapped IPv6 values (V16)."""
    out = np.zeros((len(ipv4), 16), dtype=np.uint8)
    out[:, 10] = 0xFF
    out[:, 11] = 0xFF
    out[:, 12:16] = ipv4.astype(">u4").view(np.uint8).reshape(-1, 4)
    return out.view("V16").reshape(-1)


def is_ipv4_mapped(addr: np.ndarray) -> np.ndarray:
    """True where a V16 address column holds an IPv4-mapped address."""
    raw = addr.view(np.uint8).reshape(-1, 16)
    return (raw[:, :10] == 0).all(axis=1) & (raw[:, 10] == 0xFF) & (raw[:, 11] == 0xFF)
