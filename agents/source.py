"""What every capture source produces, and how its output is cut into per-ENI frames.

A source (capture file, live interface, mirror-session receiver, synthetic generator)
yields :class:`RawPackets`: a buffer of captured bytes and, per packet, where its data
starts and how long it is. Nothing per packet is a Python object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from schemas import frame


PAD = 128  # zero bytes after a chunk, so header reads past a short packet stay in bounds

# Link types of RawPackets.linktype: the pcap LINKTYPE_* values (12 and 14 are older
# spellings of raw IP that capture files still carry).
ETHERNET, RAW, RAW_IPV4, RAW_IPV6, LINUX_SLL, LINUX_SLL2 = 1, 101, 228, 229, 113, 276
RAW_ALIASES = (12, 14)


@dataclass(frozen=True, slots=True)
class RawPackets:
    """One chunk of captured packets; ``data`` is followed by at least PAD zero bytes."""

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64, start of each packet's data in ``data``
    caplen: np.ndarray  # int64
    wirelen: np.ndarray  # int64
    time_ns: np.ndarray  # uint64
    linktype: np.ndarray  # int32, per packet (pcapng interfaces may differ)
    # Mirror session each packet arrived on (agents/tunnels.py: kind << 32 | id), 0 = none.
    session: np.ndarray | None = None  # int64

    @property
    def size(self) -> int:
        return int(self.offsets.shape[0])


def no_packets() -> RawPackets:
    """An empty chunk: what a live source yields when idle, so its reader can do housekeeping."""
    return RawPackets(
        data=np.zeros(PAD, np.uint8), offsets=np.zeros(0, np.int64), caplen=np.zeros(0, np.int64),
        wirelen=np.zeros(0, np.int64), time_ns=np.zeros(0, np.uint64), linktype=np.zeros(0, np.int32),
    )


class CaptureSource(Protocol):
    """Anything packets come from: a capture file, an interface, a mirror-session receiver."""

    name: str

    def chunks(self, stop: threading.Event) -> Iterator[RawPackets]:
        """Packets until the source ends or ``stop`` is set; live sources yield empty chunks when idle."""
        ...

    def counters(self) -> dict[str, int]:
        """The source's own counters (read errors, kernel drops, garbage …) for summaries and metrics."""
        ...


@dataclass(frozen=True, slots=True)
class PacketBatch:
    """Packets from a source; ``packets.eni`` indexes ``eni_ids``."""

    eni_ids: tuple[str, ...]
    packets: frame.Packets


def per_eni_slices(batch: PacketBatch, max_packets: int, span_ns: int) -> Iterator[tuple[str, frame.Packets]]:
    """Cut a batch into frames: one ENI's packets of at most ``span_ns`` of capture time,
    at most ``max_packets`` each, in capture-time order across ENIs.

    Frames are keyed by ENI, so each frame carries one ENI (its ENI table has one entry and
    its ``eni`` column is all zero). Several ENIs share a partition, whose event-time
    watermark is the newest capture time seen: were one ENI's frame to span a minute
    ahead of another ENI's frame behind it, the second would arrive after its windows
    closed. Short spans sent oldest first keep the partition in capture order. Packet
    order within an ENI is kept.
    """
    packets = batch.packets
    if packets.size == 0:
        return
    times = packets.capture_time_ns
    span = (times - times.min()) // np.uint64(span_ns)
    key = (span << np.uint64(16)) | packets.eni.astype(np.uint64)
    order = np.argsort(key, kind="stable")
    key = key[order]
    columns = [np.asarray(col)[order] for col in packets]
    bounds = np.flatnonzero(np.diff(key)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [key.size]))
    eni_at = frame.Packets._fields.index("eni")
    for start, end in zip(starts.tolist(), ends.tolist()):
        eni_id = batch.eni_ids[int(columns[eni_at][start])]
        for lo in range(start, end, max_packets):
            hi = min(lo + max_packets, end)
            cols = [c[lo:hi] for c in columns]
            cols[eni_at] = np.zeros(hi - lo, dtype=np.uint16)
            yield eni_id, frame.Packets(*cols)
