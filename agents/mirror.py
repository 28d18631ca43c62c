"""Mirror-session receivers: VXLAN over UDP, and GRE/ERSPAN over raw IP.

Cloud traffic mirroring sends every mirrored packet to the collector as its own
datagram. Reading them one ``recv`` at a time would put Python on every packet, so a
receiver asks the kernel for up to ``batch`` datagrams per ``recvmmsg(2)`` call into
fixed slots of one buffer, with the kernel's receive timestamp for each
(``SO_TIMESTAMPNS``). Only the first ``snaplen`` bytes of a datagram are kept: the
headers are all a flow needs, and the IP total length inside still gives its size.

Both receivers yield :class:`~agents.source.RawPackets`. The VXLAN receiver's packets
are the inner Ethernet frames, with their VNI as the session; a datagram that is not
VXLAN is counted as garbage and dropped. The GRE receiver's are whole outer IPv4 packets
(a raw socket gets the IP header), opened the same way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from agents import tunnels
from agents.source import ETHERNET, PAD, RAW_IPV4, RawPackets, no_packets
from flowlogs.errors import FlowLogsError

_SO_TIMESTAMPNS = 35
_MSG_DONTWAIT, _MSG_TRUNC = 0x40, 0x20
_CONTROL_SIZE = 64  # one cmsghdr (16 B) + struct timespec (16 B), with room
_IPPROTO_GRE = 47


class MirrorReceiverError(FlowLogsError):
    """A mirror-session receiver cannot start (address in use, no permission, bad address)."""


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int


@dataclass(slots=True)
class ReceiveStats:
    datagrams: int = 0
    bytes: int = 0  # datagram payload bytes, as received
    truncated: int = 0  # longer than snaplen (headers kept; normal for big packets)
    garbage: int = 0  # not a tunnel packet we can open


class _BatchSocket:
    """A socket read with recvmmsg(2) into ``batch`` slots of ``snaplen`` bytes."""

    def __init__(self, sock: socket.socket, batch: int, snaplen: int) -> None:
        self.sock = sock
        self.batch, self.snaplen = batch, snaplen
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        # A deep kernel queue rides out the moments the agent spends encoding and sending.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024 * 1024)
        self._data = np.zeros(batch * snaplen + PAD, np.uint8)
        self._control = np.zeros(batch * _CONTROL_SIZE, np.uint8)
        self._iov = (_IoVec * batch)()
        self._msgs = (_MMsgHdr * batch)()
        data_at, control_at = self._data.ctypes.data, self._control.ctypes.data
        for i in range(batch):  # once, at start: the slots never move
            self._iov[i].base, self._iov[i].len = data_at + i * snaplen, snaplen
            hdr = self._msgs[i].hdr
            hdr.iov, hdr.iovlen = ctypes.addressof(self._iov[i]), 1
            hdr.control, hdr.controllen = control_at + i * _CONTROL_SIZE, _CONTROL_SIZE
        # A numpy view of the headers, so per-call resets and reads are whole-column.
        self._view = np.frombuffer(
            (ctypes.c_uint8 * ctypes.sizeof(self._msgs)).from_buffer(self._msgs), np.uint8
        ).reshape(batch, ctypes.sizeof(_MMsgHdr))
        self._controllen_at = _MsgHdr.controllen.offset
        self._flags_at = _MsgHdr.flags.offset
        self._len_at = _MMsgHdr.len.offset

    def _column(self, at: int, dtype: str) -> np.ndarray:
        width = np.dtype(dtype).itemsize
        return self._view[:, at : at + width].copy().view(dtype).reshape(-1)

    def receive(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Whatever is queued, up to ``batch`` datagrams: (bytes, length, time_ns, truncated)."""
        self._view[:, self._controllen_at : self._controllen_at + 8] = np.frombuffer(
            np.uint64(_CONTROL_SIZE).tobytes(), np.uint8
        )
        n = _recvmmsg(self.sock.fileno(), ctypes.addressof(self._msgs), self.batch, _MSG_DONTWAIT | _MSG_TRUNC, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return None
            raise OSError(err, os.strerror(err))
        length = self._column(self._len_at, "<u4")[:n].astype(np.int64)
        truncated = (self._column(self._flags_at, "<i4")[:n] & _MSG_TRUNC) != 0
        control = self._control[: n * _CONTROL_SIZE].reshape(n, _CONTROL_SIZE)
        stamped = (control[:, 8:12].copy().view("<i4").reshape(-1) == socket.SOL_SOCKET) & (
            control[:, 12:16].copy().view("<i4").reshape(-1) == _SO_TIMESTAMPNS
        )
        seconds = control[:, 16:24].copy().view("<i8").reshape(-1)
        nanos = control[:, 24:32].copy().view("<i8").reshape(-1)
        time_ns = np.where(stamped, seconds * 1_000_000_000 + nanos, time.time_ns()).astype(np.uint64)
        data = np.concatenate([self._data[: n * self.snaplen], np.zeros(PAD, np.uint8)])
        return data, length, time_ns, truncated


def _bind_address(spec: str, default_port: int | None) -> tuple[socket.AddressFamily, tuple]:
    """"ADDR:PORT", "PORT", "[v6]:PORT" or just "ADDR" (when there is a default port)."""
    host, port = "0.0.0.0", default_port
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif spec.isdigit():
        port = int(spec)
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
        port = int(port_text) if port_text else default_port
    elif spec:
        host = spec
    if port is None or not 0 <= port < 65536:
        raise MirrorReceiverError(f"bad listen address {spec!r}: give [ADDR:]PORT")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, port)


class _Receiver:
    name: str
    linktype: int

    def __init__(self, sock: socket.socket, *, batch: int, snaplen: int) -> None:
        self.stats = ReceiveStats()
        self._socket = _BatchSocket(sock, batch, snaplen)
        self._sock = sock
        self._snaplen = snaplen

    def _packets(self, data: np.ndarray, length: np.ndarray, time_ns: np.ndarray) -> RawPackets:
        n = length.size
        return RawPackets(
            data=data,
            offsets=np.arange(n, dtype=np.int64) * self._snaplen,
            caplen=np.minimum(length, self._snaplen),
            wirelen=length,
            time_ns=time_ns,
            linktype=np.full(n, self.linktype, np.int32),
        )

    def chunks(self, stop: threading.Event) -> Iterator[RawPackets]:
        """Received packets until ``stop`` is set; an empty chunk after each idle 0.2 s."""
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        while not stop.is_set():
            if not poller.poll(200):
                yield no_packets()
                continue
            got = self._socket.receive()
            if got is None:
                continue
            data, length, time_ns, truncated = got
            self.stats.datagrams += length.size
            self.stats.bytes += int(length.sum())
            self.stats.truncated += int(truncated.sum())
            raw = self._open(self._packets(data, length, time_ns))
            if raw.size:
                yield raw

    def _open(self, datagrams: RawPackets) -> RawPackets:
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        return asdict(self.stats)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> _Receiver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class VxlanReceiver(_Receiver):
    """Mirror sessions delivered as VXLAN (UDP, RFC 7348), as AWS Traffic Mirroring sends them."""

    linktype = ETHERNET

    def __init__(self, listen: str = str(tunnels.VXLAN_PORT), *, batch: int = 1024, snaplen: int = 512) -> None:
        family, address = _bind_address(listen, tunnels.VXLAN_PORT)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise MirrorReceiverError(f"cannot listen for VXLAN on {listen}: {exc.strerror}") from exc
        self.address = sock.getsockname()
        self.name = f"vxlan {self.address[0]}:{self.address[1]}"
        super().__init__(sock, batch=batch, snaplen=snaplen)

    def _open(self, datagrams: RawPackets) -> RawPackets:
        at = datagrams.offsets
        inner = tunnels.vxlan(datagrams.data, at, at + datagrams.caplen)
        self.stats.garbage += int((~inner.valid).sum())
        return tunnels.inner_packets(datagrams, np.arange(datagrams.size), inner)


class GreReceiver(_Receiver):
    """Mirror sessions delivered as GRE or ERSPAN (IPv4), read from a raw IP socket."""

    linktype = RAW_IPV4

    def __init__(self, listen: str = "", *, batch: int = 1024, snaplen: int = 512) -> None:
        host = listen or "0.0.0.0"
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, _IPPROTO_GRE)
        except PermissionError as exc:
            raise MirrorReceiverError("receiving GRE/ERSPAN needs root or CAP_NET_RAW (a raw IP socket)") from exc
        try:
            sock.bind((host, 0))
        except OSError as exc:
            sock.close()
            raise MirrorReceiverError(f"cannot receive GRE on {host}: {exc.strerror}") from exc
        self.name = f"gre {host}"
        super().__init__(sock, batch=batch, snaplen=snaplen)

    def _open(self, datagrams: RawPackets) -> RawPackets:
        at = datagrams.offsets
        header = (datagrams.data[at].astype(np.int64) & 0xF) * 4  # the raw socket's IPv4 header
        inner = tunnels.gre(datagrams.data, at + header, at + datagrams.caplen)
        self.stats.garbage += int((~inner.valid).sum())
        return tunnels.inner_packets(datagrams, np.arange(datagrams.size), inner)
