"""Live capture from a network interface: AF_PACKET with a TPACKET_V3 memory-mapped ring.

The kernel writes packets straight into a ring of blocks shared with this process and
hands a block over once it is full or ``block_timeout_ms`` has passed; no system call per
packet. A handed-over block is copied into a numpy buffer in one memcpy and given back to
the kernel at once, so a slow consumer holds copies, not ring space the kernel needs.
Finding the packets in a block (each packet header says where the next begins) is the one
sequential step; it is compiled with numba, so Python never touches a packet on its own.
Several blocks become one :class:`RawPackets` chunk for the vectorised decoder.

A capture can run inside a named network namespace (``ip netns``): the socket is created
there and stays there, while the calling thread returns to its own namespace.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
import socket
import struct
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import numba
import numpy as np

from agents.source import ETHERNET, PAD, RAW, RawPackets, no_packets
from flowlogs.errors import FlowLogsError

# <linux/if_packet.h>, <linux/if_ether.h>, <linux/if_arp.h>, <sched.h>
SOL_PACKET = 263
PACKET_RX_RING, PACKET_STATISTICS, PACKET_VERSION = 5, 6, 10
TPACKET_V3 = 2
TP_STATUS_KERNEL, TP_STATUS_USER = 0, 1
PACKET_OUTGOING = 4
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
BPF_RET_K = 0x06
CLONE_NEWNET = 0x40000000
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 0xFFFE

NETNS_DIR = Path("/var/run/netns")
_POLL_MS = 100  # how long one poll() waits: bounds how late a stop request is seen
_FRAME_SIZE = 2048  # TPACKET_V3 packs packets tightly; the kernel only validates this
# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1 (u32 words 2..5)
_BLOCK_STATUS, _BLOCK_NUM_PKTS, _BLOCK_LEN = 2, 3, 5
_BIG_ENDIAN = sys.byteorder == "big"  # ring headers are in host byte order


class CaptureError(FlowLogsError):
    """A live capture cannot be started or has failed."""


@dataclass(slots=True)
class CaptureStats:
    packets: int = 0  # delivered in chunks
    bytes_captured: int = 0  # sum of captured lengths delivered
    kernel_drops: int = 0  # packets the kernel could not put in the ring
    freeze_queue_count: int = 0  # times the ring was full and the kernel stopped filling it


@numba.njit(cache=True, nogil=True, inline="always")
def _u16(buf: np.ndarray, at: int) -> int:
    a, b = int(buf[at]), int(buf[at + 1])
    return (a << 8 | b) if _BIG_ENDIAN else (b << 8 | a)


@numba.njit(cache=True, nogil=True, inline="always")
def _u32(buf: np.ndarray, at: int) -> int:
    return (_u16(buf, at) << 16 | _u16(buf, at + 2)) if _BIG_ENDIAN else (_u16(buf, at + 2) << 16 | _u16(buf, at))


@numba.njit(cache=True, nogil=True)
def _walk_blocks(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, skip_outgoing: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Offsets, captured and wire lengths and times of the packets in copied ring blocks.

    ``buf[starts[i]:ends[i]]`` is one block (descriptor included). Each tpacket3_hdr gives
    the distance to the next; the walk is sequential, hence compiled. A header or packet
    that would reach past its block ends that block's walk rather than read garbage.
    """
    total = 0
    for b in range(starts.size):
        total += _u32(buf, starts[b] + 4 * _BLOCK_NUM_PKTS)
    offsets = np.empty(total, np.int64)
    caplen = np.empty(total, np.int64)
    wirelen = np.empty(total, np.int64)
    time_ns = np.empty(total, np.uint64)
    count = 0
    for b in range(starts.size):
        start, end = starts[b], ends[b]
        pos = start + _u32(buf, start + 16)  # offset_to_first_pkt
        for _ in range(_u32(buf, start + 4 * _BLOCK_NUM_PKTS)):
            if pos + 68 > end:  # tpacket3_hdr (48) + sockaddr_ll (20)
                break
            data = pos + _u16(buf, pos + 24)  # tp_mac
            snap = _u32(buf, pos + 12)
            if data + snap > end:
                break
            # Loopback shows every packet twice, leaving and arriving; keep the arrival.
            if not (skip_outgoing and buf[pos + 58] == PACKET_OUTGOING):  # sll_pkttype
                offsets[count] = data
                caplen[count] = snap
                wirelen[count] = _u32(buf, pos + 16)
                time_ns[count] = np.uint64(_u32(buf, pos + 4)) * np.uint64(1_000_000_000) + np.uint64(_u32(buf, pos + 8))
                count += 1
            step = _u32(buf, pos)  # tp_next_offset; 0 after the block's last packet
            if step == 0:
                break
            pos += step
    return offsets[:count], caplen[:count], wirelen[:count], time_ns[:count]


def _libc_setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@contextmanager
def _inside(netns: str | None) -> Iterator[None]:
    """Run the block with the calling thread in network namespace ``netns`` (None: stay).

    setns() moves only the calling thread, so other threads keep their namespace; the
    thread's own namespace is restored whatever happens. (Python 3.11 has no os.setns.)
    """
    if netns is None:
        yield
        return
    if "/" in netns or netns in ("", ".", ".."):
        raise CaptureError(f"invalid network namespace name {netns!r}")
    try:
        target = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        known = sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else []
        raise CaptureError(
            f"network namespace {netns!r} not found in {NETNS_DIR} (known: {', '.join(known) or 'none'})"
        ) from None
    except PermissionError:
        raise CaptureError(f"capture in network namespace {netns!r} needs root") from None
    try:
        # thread-self, not self: /proc/self is the main thread, which may be elsewhere.
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _libc_setns(target)
            except PermissionError:
                raise CaptureError(f"capture in network namespace {netns!r} needs root (CAP_SYS_ADMIN)") from None
            try:
                yield
            finally:
                _libc_setns(home)  # failing here leaves the thread astray: let that error out
        finally:
            os.close(home)
    finally:
        os.close(target)


def _attach_snaplen(sock: socket.socket, snaplen: int) -> None:
    """Cut packets to ``snaplen`` in the kernel: a one-instruction BPF "accept this many bytes".

    TPACKET_V3 has no snap length of its own; libpcap does the same.
    """
    insn = ctypes.create_string_buffer(struct.pack("=HBBI", BPF_RET_K, 0, 0, snaplen))
    prog = struct.pack("@HP", 1, ctypes.addressof(insn))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)


class InterfaceCapture:
    """Captures every packet on one interface (both directions) into :class:`RawPackets`."""

    def __init__(
        self,
        interface: str,
        *,
        netns: str | None = None,
        block_size: int = 1 << 20,
        block_count: int = 64,
        block_timeout_ms: int = 100,
        snaplen: int | None = None,
    ) -> None:
        if block_size <= 0 or block_size % mmap.PAGESIZE or block_count <= 0:
            raise CaptureError(f"block_size must be a positive multiple of the page size ({mmap.PAGESIZE}), block_count at least 1")
        if snaplen is not None and snaplen <= 0:
            raise CaptureError(f"snaplen must be positive, not {snaplen}")
        self.interface, self.netns = interface, netns
        self.name = f"{netns}:{interface}" if netns else interface
        self.block_size, self.block_count = block_size, block_count
        self.stats = CaptureStats()
        self._next = 0  # the ring block the kernel hands over next
        where = f" in network namespace {netns!r}" if netns else ""
        with _inside(netns):
            try:
                socket.if_nametoindex(interface)
            except OSError:
                # Listed from inside the namespace: /sys/class/net shows the namespace sysfs was mounted in.
                names = sorted(name for _, name in socket.if_nameindex())
                raise CaptureError(f"no interface {interface!r}{where} (available: {', '.join(names)})") from None
            try:
                # Protocol 0: nothing is queued until bind() picks the interface and ETH_P_ALL,
                # so no packet of another interface slips into the ring in between.
                self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            except PermissionError:
                python = os.path.realpath(sys.executable)
                raise CaptureError(
                    f"live capture on {interface} needs root or CAP_NET_RAW "
                    f"(run as root, or: setcap cap_net_raw+ep {python})"
                ) from None
            try:
                self._sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
                if snaplen is not None:
                    _attach_snaplen(self._sock, snaplen)
                frames = block_size // _FRAME_SIZE * block_count
                req = struct.pack("=7I", block_size, block_count, _FRAME_SIZE, frames, block_timeout_ms, 0, 0)
                self._sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)  # tpacket_req3
                self._mmap: mmap.mmap | None = mmap.mmap(self._sock.fileno(), block_size * block_count, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                self._sock.bind((interface, ETH_P_ALL))
                # The device type, from the socket: sysfs may show another namespace.
                hatype = self._sock.getsockname()[3]
            except OSError as exc:
                self._release()
                raise CaptureError(f"cannot start capture on {interface}{where}: {exc.strerror or exc}") from exc
        self.linktype = ETHERNET if hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK) else RAW
        self._skip_outgoing = hatype == ARPHRD_LOOPBACK
        self._ring: np.ndarray | None = np.frombuffer(self._mmap, np.uint8)  # type: ignore[arg-type]
        self._words: np.ndarray | None = self._ring.view(np.uint32)

    # -- reading --------------------------------------------------------------------------
    def chunks(self, stop: threading.Event | None = None) -> Iterator[RawPackets]:
        """Chunks of captured packets, until ``stop`` is set (seen within ~0.1 s) or close();
        an empty chunk after each idle ~0.1 s.

        On stop, the blocks the kernel has already handed over are still delivered; a block
        it is filling is not (it is handed over after ``block_timeout_ms``).
        """
        if self._words is None:
            return
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN | select.POLLERR)
        try:
            while self._words is not None:
                if stop is not None and stop.is_set():
                    raw = self._take_ready()  # what the kernel has already handed over
                    if raw is not None:
                        yield raw
                    return
                raw = self._take_ready()
                if raw is not None:
                    yield raw
                    continue
                events = poller.poll(_POLL_MS)
                if not events:
                    yield no_packets()  # idle: the reader gets to do its housekeeping
                for _fd, event in events:
                    if event & select.POLLNVAL:
                        return
                    if event & select.POLLERR:
                        self._socket_error()
        finally:
            self._read_kernel_stats()

    def counters(self) -> dict[str, int]:
        return asdict(self.stats)

    def _ready_blocks(self) -> Iterable[int]:
        """Blocks the kernel has handed over, in ring order, starting at the next one."""
        words, index = self._words, self._next
        assert words is not None
        per_block = self.block_size // 4
        for _ in range(self.block_count):
            if not words[index * per_block + _BLOCK_STATUS] & TP_STATUS_USER:
                return
            yield index
            index = (index + 1) % self.block_count

    def _take_ready(self) -> RawPackets | None:
        """Copy every handed-over block into one buffer, give the blocks back, find the packets."""
        ring, words = self._ring, self._words
        assert ring is not None and words is not None
        per_block = self.block_size // 4
        blocks = list(self._ready_blocks())
        if not blocks:
            return None
        lengths = [
            min(int(words[i * per_block + _BLOCK_LEN]), self.block_size) if words[i * per_block + _BLOCK_NUM_PKTS] else 0
            for i in blocks
        ]  # a block retired by its timer may be empty: nothing to copy
        starts = np.cumsum([0] + [(n + 15) & ~15 for n in lengths[:-1]], dtype=np.int64)  # 16-aligned, as in the ring
        total = int(starts[-1]) + lengths[-1]
        data = np.empty(total + PAD, np.uint8)
        data[total:] = 0
        for i, start, length in zip(blocks, starts.tolist(), lengths):
            data[start : start + length] = ring[i * self.block_size : i * self.block_size + length]
            # Only after the copy: from here the kernel may overwrite the block.
            words[i * per_block + _BLOCK_STATUS] = TP_STATUS_KERNEL
        self._next = (blocks[-1] + 1) % self.block_count
        keep = np.asarray(lengths) > 0
        ends = starts + np.asarray(lengths, np.int64)
        offsets, caplen, wirelen, time_ns = _walk_blocks(data, starts[keep], ends[keep], self._skip_outgoing)
        self._read_kernel_stats()
        if offsets.size == 0:
            return None
        self.stats.packets += int(offsets.size)
        self.stats.bytes_captured += int(caplen.sum())
        return RawPackets(
            data=data, offsets=offsets, caplen=caplen, wirelen=wirelen, time_ns=time_ns,
            linktype=np.full(offsets.size, self.linktype, np.int32),
        )

    def _socket_error(self) -> None:
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # reading clears it
        if code == errno.ENETDOWN and self._sock.getsockname()[0]:
            return  # the interface went down; it may come up again and the socket is still bound to it
        if code == errno.ENETDOWN:
            raise CaptureError(f"interface {self.interface} disappeared during capture")
        if code:
            raise CaptureError(f"capture on {self.interface} failed: {os.strerror(code)}")

    def _read_kernel_stats(self) -> None:
        """Add the kernel's counters; reading them resets them, hence the sums."""
        if self._words is None:
            return
        _packets, drops, freezes = struct.unpack("=3I", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
        self.stats.kernel_drops += drops
        self.stats.freeze_queue_count += freezes

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop capturing and unmap the ring. Not while chunks() runs in another thread: use ``stop``."""
        if getattr(self, "_words", None) is not None:
            self._read_kernel_stats()
        self._release()

    def _release(self) -> None:
        self._ring = self._words = None  # the mmap cannot close while numpy views of it exist
        ring_map: mmap.mmap | None = getattr(self, "_mmap", None)
        if ring_map is not None:
            self._mmap = None
            ring_map.close()
        if getattr(self, "_sock", None) is not None:
            self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
