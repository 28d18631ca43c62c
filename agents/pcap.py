"""Capture files: classic pcap (µs and ns) and pcapng, plain or gzip-compressed.

A file is read in chunks; each chunk becomes a :class:`RawPackets` — the chunk's bytes
plus, per packet, where its data starts, its captured and original length, its capture
time and link type. Finding record boundaries is the one sequential step (each record's
length says where the next begins): for classic pcap it is compiled with numba; pcapng
blocks are still walked in Python (one struct read per block). Every header field is
then read with vectorised gathers (``agents/decode.py``).
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
def _record_starts(buf: np.ndarray, big_endian: bool) -> tuple[np.ndarray, int]:
    """Offsets of the complete pcap records in ``buf`` and where the first incomplete one begins.

    The one sequential step of reading a capture (each record's length says where the next
    begins), compiled, so no Python runs per packet.
    """
    size = buf.size
    starts = np.empty(size // 16 + 1, np.int64)
    count = 0
    pos = 0
    while pos + 16 <= size:
        b0, b1, b2, b3 = np.int64(buf[pos + 8]), np.int64(buf[pos + 9]), np.int64(buf[pos + 10]), np.int64(buf[pos + 11])
        caplen = (b0 << 24 | b1 << 16 | b2 << 8 | b3) if big_endian else (b3 << 24 | b2 << 16 | b1 << 8 | b0)
        end = pos + 16 + caplen
        if end > size:
            break
        starts[count] = pos
        count += 1
        pos = end
    return starts[:count], pos


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
        header_dtype = np.dtype([("sec", endian + "u4"), ("frac", endian + "u4"), ("incl", endian + "u4"), ("orig", endian + "u4")])
        carry = b""
        while True:
            buf, eof = self._read(fh, carry)
            starts, pos = _record_starts(np.frombuffer(buf, np.uint8), endian == ">")
            carry = buf[pos:]
            if starts.size:
                yield self._pcap_chunk(buf[:pos], starts, header_dtype, ns_per_tick, linktype)
            if eof:
                if carry:
                    self.stats.truncated_records += 1
                return

    def _pcap_chunk(
        self, buf: bytes, starts: np.ndarray, header_dtype: np.dtype, ns_per_tick: int, linktype: int
    ) -> RawPackets:
        data = np.frombuffer(buf + bytes(PAD), np.uint8)
        headers = np.take(data, starts[:, None] + np.arange(16)).view(header_dtype).reshape(-1)
        time_ns = headers["sec"].astype(np.uint64) * np.uint64(1_000_000_000) + headers["frac"].astype(np.uint64) * np.uint64(ns_per_tick)
        self.stats.packets += len(starts)
        return RawPackets(
            data=data,
            offsets=starts + 16,
            caplen=headers["incl"].astype(np.int64),
            wirelen=headers["orig"].astype(np.int64),
            time_ns=time_ns,
            linktype=np.full(len(starts), linktype, np.int32),
        )

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
