"""Flow keys and flow counters: what a flow is, per (window, ENI, 5-tuple, direction).

A flow key is six uint64 words (layout below); ``FlowAggregate`` holds the counters of
distinct keys with the keys column-major (each word contiguous, which makes hashing and
gathering them cheap). ``pipeline.flow_table`` builds the keys of packets and counts them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


KEY_WIDTH = 6
# Key layout (uint64 key rows, i.e. keys[i] is column i of the flow key):
#   0,1  source address (16 bytes)        2,3  destination address
#   4    ENI index << 32 | src_port << 16 | dst_port
#   5    window index << 16 | protocol << 8 | direction
_ENI_SHIFT = np.uint64(32)
_SPORT_SHIFT = np.uint64(16)
_WINDOW_SHIFT = np.uint64(16)
_PROTO_SHIFT = np.uint64(8)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)


class FlowAggregate(NamedTuple):
    """Counters for distinct flow keys; ``keys`` is (KEY_WIDTH, n) uint64, unique per column."""

    keys: np.ndarray
    packets: np.ndarray  # uint64
    bytes: np.ndarray  # uint64
    start: np.ndarray  # uint32, Unix second of the first packet
    end: np.ndarray  # uint32, Unix second of the last packet
    tcp_flags: np.ndarray  # uint8

    @property
    def size(self) -> int:
        """Number of flows (``len()`` of a NamedTuple is its field count, so not that)."""
        return int(self.keys.shape[1])

    @property
    def window(self) -> np.ndarray:
        return self.keys[5] >> _WINDOW_SHIFT

    @property
    def eni(self) -> np.ndarray:
        return (self.keys[4] >> _ENI_SHIFT).astype(np.uint32)

    @property
    def src_port(self) -> np.ndarray:
        return ((self.keys[4] >> _SPORT_SHIFT) & np.uint64(0xFFFF)).astype(np.uint16)

    @property
    def dst_port(self) -> np.ndarray:
        return (self.keys[4] & np.uint64(0xFFFF)).astype(np.uint16)

    @property
    def protocol(self) -> np.ndarray:
        return ((self.keys[5] >> _PROTO_SHIFT) & np.uint64(0xFF)).astype(np.uint8)

    @property
    def direction(self) -> np.ndarray:
        return (self.keys[5] & np.uint64(0xFF)).astype(np.uint8)

    def address(self, which: str) -> np.ndarray:
        """``src`` or ``dst`` addresses as a contiguous (n,) V16 column."""
        rows = self.keys[0:2] if which == "src" else self.keys[2:4]
        return np.ascontiguousarray(rows.T).view("V16").reshape(-1)

    def select(self, mask: np.ndarray) -> "FlowAggregate":
        return FlowAggregate(self.keys[:, mask], *(col[mask] for col in self[1:]))


def markers(window: np.ndarray, eni: np.ndarray, window_ns: int) -> FlowAggregate:
    """Zero-traffic rows for (window, ENI) pairs: the carriers of NODATA/SKIPDATA records."""
    n = window.size
    keys = np.zeros((KEY_WIDTH, n), np.uint64)
    keys[4] = eni.astype(np.uint64) << _ENI_SHIFT
    keys[5] = window.astype(np.uint64) << _WINDOW_SHIFT
    start = (window.astype(np.uint64) * np.uint64(window_ns) // np.uint64(1_000_000_000)).astype(np.uint32)
    zeros = np.zeros(n, np.uint64)
    return FlowAggregate(keys, zeros, zeros.copy(), start, start.copy(), np.zeros(n, np.uint8))


def window_eni_codes(window: np.ndarray, eni: np.ndarray) -> np.ndarray:
    """One uint64 per (window, ENI) pair, for set operations on them."""
    return (window.astype(np.uint64) << np.uint64(32)) | eni.astype(np.uint64)


def hash_rows(keys: np.ndarray) -> np.ndarray:
    """A 64-bit mix of each key (column of ``keys``); not cryptographic, callers handle collisions."""
    h = np.zeros(keys.shape[1], dtype=np.uint64)
    tmp = np.empty_like(h)
    for column in keys:
        h ^= column
        h *= _MIX
        np.right_shift(h, np.uint64(31), out=tmp)
        h ^= tmp
    h *= _MIX2
    np.right_shift(h, np.uint64(29), out=tmp)
    h ^= tmp
    return h


def concatenate(parts: list[FlowAggregate]) -> FlowAggregate:
    """Join aggregates whose keys are known to be disjoint (no regrouping)."""
    return FlowAggregate(np.concatenate([p.keys for p in parts], axis=1), *(np.concatenate(c) for c in zip(*(p[1:] for p in parts))))
