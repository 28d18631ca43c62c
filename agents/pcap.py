"""Capture files: classic pcap (µs and ns) and pcapng, plain or gzip-compressed.

A file is read in chunks; each chunk becomes a :class:`RawPackets` — the chunk's bytes
plus, per packet, where its data starts, its captured and original length, its capture
time and link type. Finding record boundaries is the one sequential step (each record's
length says where the next begins): for classic pcap it is compiled with numba and reads
each record's header on the way; pcapng blocks are still walked in Python (one struct read
per block). Every packet header field is then read with vectorised gathers (``agents/decode.py``).
"""

from __future__ import annotations

import gzip
import struct
import threading
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numba
import numpy as np

from agents.source import PAD, RawPackets
from flowlogs.errors import FlowLogsError

CHUNK_BYTES = 32 * 1024 * 1024

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_SHB = 0x0A0D0D0A
_GZIP_MAGIC = b"\x1f\x8b"


@numba.njit(cache=True, nogil=True)
def _u32(buf: np.ndarray, pos: int, big_endian: bool) -> int:
    """The unsigned 32-bit field at ``pos``, in the file's byte order."""
    b0, b1, b2, b3 = np.int64(buf[pos]), np.int64(buf[pos + 1]), np.int64(buf[pos + 2]), np.int64(buf[pos + 3])
    return int((b0 << 24 | b1 << 16 | b2 << 8 | b3) if big_endian else (b3 << 24 | b2 << 16 | b1 << 8 | b0))


@numba.njit(cache=True, nogil=True)
def _pcap_records(
    buf: np.ndarray, big_endian: bool, ns_per_tick: int,
    offsets: np.ndarray, caplen: np.ndarray, wirelen: np.ndarray, time_ns: np.ndarray,
) -> tuple[int, int]:
    """Fill data offset, caplen, wirelen and time of the complete pcap records in ``buf``;
    return how many there are and where the first incomplete one begins.

    The one sequential step of reading a capture (each record's length says where the next
    begins), compiled, so no Python runs per packet; the header fields are read on the same
    walk, while the header is in cache, rather than gathered again afterwards.
    """
    size = buf.size
    count = 0
    pos = 0
    while pos + 16 <= size:
        incl = _u32(buf, pos + 8, big_endian)
        end = pos + 16 + incl
        if end > size:
            break
        offsets[count] = pos + 16
        caplen[count] = incl
        wirelen[count] = _u32(buf, pos + 12, big_endian)
        # int64 throughout (numba turns int64 and uint64 mixed into float): < 2**63 for any u32 pair
        time_ns[count] = _u32(buf, pos, big_endian) * 1_000_000_000 + _u32(buf, pos + 4, big_endian) * ns_per_tick
        count += 1
        pos = end
    return count, pos


def _scan_pcap(
    buf: np.ndarray, big_endian: bool, ns_per_tick: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """:func:`_pcap_records` with its output arrays: offsets, caplen, wirelen, time_ns, and the end.

    The arrays are allocated here rather than in the compiled walk because numpy advises huge
    pages for large arrays, so their fresh memory faults in far fewer pages (~3 ms a 32 MB chunk).
    """
    bound = buf.size // 16 + 1  # a record is at least its 16-byte header
    offsets, caplen, wirelen = np.empty(bound, np.int64), np.empty(bound, np.int64), np.empty(bound, np.int64)
    time_ns = np.empty(bound, np.uint64)
    count, pos = _pcap_records(buf, big_endian, ns_per_tick, offsets, caplen, wirelen, time_ns)
    return offsets[:count], caplen[:count], wirelen[:count], time_ns[:count], pos


# Pay numba's first-call cost (loading the cached machine code, ~0.3–0.8 s) at import rather
# than inside the first chunk of a timed replay. Same argument types as _pcap's calls.
_scan_pcap(np.zeros(16, np.uint8), False, 1)


class CaptureFileError(FlowLogsError):
    """The capture file cannot be read (not pcap/pcapng, or damaged)."""


@dataclass(slots=True)
class ReadStats:
    packets: int = 0
    truncated_records: int = 0  # the file ended inside a record
    skipped_blocks: int = 0  # pcapng blocks that carry no packet


def _open(path: Path) -> BinaryIO:
    try:
        fh: BinaryIO = path.open("rb")
    except OSError as exc:
        raise CaptureFileError(f"cannot open capture {path}: {exc.strerror}") from exc
    if fh.read(2) == _GZIP_MAGIC:
        fh.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    fh.seek(0)
    return fh


class CaptureReader:
    """Iterates :class:`RawPackets` chunks of one capture file."""

    def __init__(self, path: Path, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.path = path
        self.name = path.name
        self.chunk_bytes = chunk_bytes
        self.stats = ReadStats()

    def counters(self) -> dict[str, int]:
        return asdict(self.stats)

    def chunks(self, stop: threading.Event | None = None) -> Iterator[RawPackets]:
        """The file's packets, chunk by chunk (``stop`` is checked between chunks)."""
        for raw in self._chunks():
            yield raw
            if stop is not None and stop.is_set():
                return

    def _chunks(self) -> Iterator[RawPackets]:
        with _open(self.path) as fh:
            try:
                head = fh.read(24)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise CaptureFileError(f"{self.path}: unreadable: {exc}") from exc
            if len(head) >= 4 and head[:4] in _PCAP_MAGICS:
                yield from self._pcap(fh, head)
            elif len(head) >= 4 and struct.unpack("<I", head[:4])[0] == _PCAPNG_SHB:
                yield from self._pcapng(fh, head)
            else:
                raise CaptureFileError(f"{self.path} is not a pcap or pcapng file (first bytes {head[:4].hex()})")

    def _read(self, fh: BinaryIO, carry: bytes) -> tuple[bytes, bool]:
        try:
            more = fh.read(self.chunk_bytes)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CaptureFileError(f"{self.path}: read failed: {exc}") from exc
        return carry + more, len(more) == 0

    # -- classic pcap ---------------------------------------------------------------------
    def _pcap(self, fh: BinaryIO, head: bytes) -> Iterator[RawPackets]:
        if len(head) < 24:
            raise CaptureFileError(f"{self.path}: pcap header is truncated")
        endian, ns_per_tick = _PCAP_MAGICS[head[:4]]
        linktype = struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF
        # Each chunk gets a fresh buffer (the previous one may still be referenced by its
        # RawPackets) holding the carried partial record, then chunk_bytes read straight into
        # it, with room for the PAD zeros after the complete records — no bytes concatenation.
        carry = np.empty(0, np.uint8)  # the incomplete record at the end of the previous chunk
        while True:
            buf = np.empty(carry.size + self.chunk_bytes + PAD, np.uint8)
            buf[: carry.size] = carry
            size = carry.size + self._readinto(fh, buf[carry.size : carry.size + self.chunk_bytes])
            eof = size == carry.size
            offsets, caplen, wirelen, time_ns, pos = _scan_pcap(buf[:size], endian == ">", ns_per_tick)
            carry = buf[pos:size].copy()
            if offsets.size:
                buf[pos : pos + PAD] = 0
                self.stats.packets += offsets.size
                yield RawPackets(
                    data=buf[: pos + PAD],
                    offsets=offsets,
                    caplen=caplen,
                    wirelen=wirelen,
                    time_ns=time_ns,
                    linktype=np.full(offsets.size, linktype, np.int32),
                )
            if eof:
                if carry.size:
                    self.stats.truncated_records += 1
                return

    def _readinto(self, fh: BinaryIO, into: np.ndarray) -> int:
        try:
            return fh.readinto(into)  # type: ignore[attr-defined]
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CaptureFileError(f"{self.path}: read failed: {exc}") from exc

    # -- pcapng ---------------------------------------------------------------------------
    def _pcapng(self, fh: BinaryIO, head: bytes) -> Iterator[RawPackets]:
        carry = head
        endian = "<"
        interfaces: list[tuple[int, int, int]] = []  # (linktype, ticks per second, snaplen)
        while True:
            buf, eof = self._read(fh, carry)
            size = len(buf)
            offsets, caplens, wirelens, times, links = array("q"), array("q"), array("q"), array("Q"), array("i")
            pos = 0
            while pos + 12 <= size:
                if struct.unpack_from("<I", buf, pos)[0] == _PCAPNG_SHB:
                    endian = "<" if struct.unpack_from("<I", buf, pos + 8)[0] == 0x1A2B3C4D else ">"
                    interfaces = []
                btype, blen = struct.unpack_from(endian + "II", buf, pos)
                if blen < 12 or blen % 4:
                    raise CaptureFileError(f"{self.path}: damaged pcapng block at byte {pos} (length {blen})")
                if pos + blen > size:
                    break
                if btype == 6:  # enhanced packet block
                    iface, hi, lo, cap, orig = struct.unpack_from(endian + "IIIII", buf, pos + 8)
                    link, tps, _snap = interfaces[iface]
                    offsets.append(pos + 28)
                    caplens.append(cap)
                    wirelens.append(orig)
                    ticks = (hi << 32) | lo
                    times.append(ticks * 1_000_000_000 // tps)
                    links.append(link)
                elif btype == 3:  # simple packet block
                    (orig,) = struct.unpack_from(endian + "I", buf, pos + 8)
                    link, _tps, snap = interfaces[0]
                    offsets.append(pos + 12)
                    caplens.append(min(orig, snap or orig, blen - 16))
                    wirelens.append(orig)
                    times.append(0)
                    links.append(link)
                elif btype == 1:  # interface description block
                    link, _res, snap = struct.unpack_from(endian + "HHI", buf, pos + 8)
                    interfaces.append((link, self._tsresol(buf, pos, blen, endian), snap))
                else:
                    self.stats.skipped_blocks += 1
                pos += blen
            carry = buf[pos:]
            if offsets:
                data = np.frombuffer(buf[:pos] + bytes(PAD), np.uint8)
                self.stats.packets += len(offsets)
                yield RawPackets(
                    data=data,
                    offsets=np.frombuffer(offsets, np.int64),
                    caplen=np.frombuffer(caplens, np.int64),
                    wirelen=np.frombuffer(wirelens, np.int64),
                    time_ns=np.frombuffer(times, np.uint64),
                    linktype=np.frombuffer(links, np.int32),
                )
            if eof:
                if carry:
                    self.stats.truncated_records += 1
                return

    @staticmethod
    def _tsresol(buf: bytes, pos: int, blen: int, endian: str) -> int:
        """Ticks per second of an interface (option if_tsresol, default microseconds)."""
        opt, end = pos + 16, pos + blen - 4
        while opt + 4 <= end:
            code, length = struct.unpack_from(endian + "HH", buf, opt)
            if code == 0:
                break
            if code == 9 and length >= 1:
                value = buf[opt + 4]
                return 2 ** (value & 0x7F) if value & 0x80 else 10**value
            opt += 4 + (length + 3) // 4 * 4
        return 1_000_000
