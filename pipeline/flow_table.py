"""FlowTable: the open flows of a partition, counted in place in a compiled hash table.

Each frame's packets go straight into the table: one compiled pass computes each packet's
flow key (the layout of ``pipeline.aggregate``), looks it up and adds to the flow's
counters. The table is laid out like a CPython dict: flows are dense rows (key and
counters, appended in arrival order), found through a sparse index of row numbers (open
addressing, linear probing, power-of-two size, at most half full). So memory is about
82 bytes per open flow plus 8–16 bytes of index — it grows with flows, not packets — and
no Python runs per packet or per flow.

A close takes the flows of the windows it closes out of the table, ordered by key hash
(exact lexicographic key order among equal hashes), so the same set of flows always comes
out in the same order: a replayed close must slice its rows identically.
"""

from __future__ import annotations

import numba
import numpy as np

from pipeline.aggregate import KEY_WIDTH, FlowAggregate, flow_keys, hash_rows
from schemas.frame import Packets

_MIN_ROWS = 1 << 12
_MAX_LOAD = 0.5  # of the index
_GROWTH = 1.5  # of the rows
_EMPTY = -1
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)
_WINDOW_SHIFT = np.uint64(16)
_ALL_WINDOWS = (1 << 48) - 1  # window indexes fill the key's top 48 bits


@numba.njit(cache=True, nogil=True)
def _key_hash(keys: np.ndarray, i: int) -> np.uint64:
    # The mix of ``aggregate.hash_rows``, one key (column ``i`` of ``keys``) at a time.
    h = np.uint64(0)
    for c in range(keys.shape[0]):
        h ^= keys[c, i]
        h *= _MIX
        h ^= h >> np.uint64(31)
    h *= _MIX2
    h ^= h >> np.uint64(29)
    return h


@numba.njit(cache=True, nogil=True)
def _upsert(
    index: np.ndarray, rows: np.ndarray, packets: np.ndarray, byte_counts: np.ndarray,
    first_ns: np.ndarray, last_ns: np.ndarray, flags: np.ndarray,
    keys: np.ndarray, add_packets: np.ndarray, add_bytes: np.ndarray,
    add_first: np.ndarray, add_last: np.ndarray, add_flags: np.ndarray,
    start: int, size: int, limit: int,
) -> tuple[int, int]:
    """Add columns ``start…`` of (keys, counters) until a new flow would make ``size``
    exceed ``limit``; returns (next column, new size). ``rows`` is (row capacity, KEY_WIDTH)
    keys of the dense rows, ``index`` the row number of each used index slot."""
    mask = np.uint64(index.size - 1)
    width = keys.shape[0]
    i = start
    while i < keys.shape[1]:
        s = _key_hash(keys, i) & mask
        while True:
            r = index[s]
            if r == -1:
                if size >= limit:
                    return i, size
                index[s] = size
                for c in range(width):
                    rows[size, c] = keys[c, i]
                packets[size] = add_packets[i]
                byte_counts[size] = add_bytes[i]
                first_ns[size] = add_first[i]
                last_ns[size] = add_last[i]
                flags[size] = add_flags[i]
                size += 1
                break
            same = True
            for c in range(width):
                if rows[r, c] != keys[c, i]:
                    same = False
                    break
            if same:
                packets[r] += add_packets[i]
                byte_counts[r] += add_bytes[i]
                first_ns[r] = min(first_ns[r], add_first[i])
                last_ns[r] = max(last_ns[r], add_last[i])
                flags[r] |= add_flags[i]
                break
            s = (s + np.uint64(1)) & mask
        i += 1
    return i, size


@numba.njit(cache=True, nogil=True)
def _reindex(index: np.ndarray, rows: np.ndarray, size: int) -> None:
    """Point a cleared index at rows 0…size-1 (keys known to be distinct)."""
    mask = np.uint64(index.size - 1)
    keys = rows[:size].T
    for r in range(size):
        s = _key_hash(keys, r) & mask
        while index[s] != -1:
            s = (s + np.uint64(1)) & mask
        index[s] = r


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class FlowTable:
    """Counters per flow key (window, ENI, 5-tuple, direction) of one partition's open windows."""

    def __init__(self) -> None:
        self.size = 0
        self._index = np.full(2 * _MIN_ROWS, _EMPTY, np.int32)
        self._resize_rows(_MIN_ROWS)

    def _resize_rows(self, capacity: int) -> None:
        n = self.size
        old = getattr(self, "_rows", None)
        rows = np.empty((capacity, KEY_WIDTH), np.uint64)
        counters = [np.empty(capacity, np.uint64) for _ in range(4)] + [np.empty(capacity, np.uint8)]
        if old is not None:
            rows[:n] = old[:n]
            for new, current in zip(counters, self._counters()):
                new[:n] = current[:n]
        self._rows = rows
        self._packets, self._bytes, self._first, self._last, self._flags = counters

    def _counters(self) -> tuple[np.ndarray, ...]:
        return self._packets, self._bytes, self._first, self._last, self._flags

    def _resize_index(self, slots: int) -> None:
        self._index = np.full(slots, _EMPTY, np.int32)
        _reindex(self._index, self._rows, self.size)

    def add_packets(self, packets: Packets, eni_index: np.ndarray, window_ns: int) -> None:
        """Count a batch of packets (``eni_index`` per packet) into their flows."""
        n = packets.size
        if n:
            self._add(
                flow_keys(packets, eni_index, window_ns), np.ones(n, np.uint64), packets.ip_length.astype(np.uint64),
                packets.capture_time_ns, packets.capture_time_ns, packets.tcp_flags,
            )

    def add_flows(self, flows: FlowAggregate) -> None:
        """Merge already-counted flows in (same keys add up)."""
        if flows.size:
            self._add(flows.keys, flows.packets, flows.bytes, flows.first_ns, flows.last_ns, flows.tcp_flags)

    def _add(self, keys: np.ndarray, *counters: np.ndarray) -> None:
        column = 0
        while column < keys.shape[1]:
            if self.size >= self._index.size * _MAX_LOAD:
                self._resize_index(self._index.size * 2)
            if self.size >= len(self._rows):
                self._resize_rows(int(len(self._rows) * _GROWTH))
            limit = min(int(self._index.size * _MAX_LOAD), len(self._rows))
            column, self.size = _upsert(
                self._index, self._rows, *self._counters(), keys, *counters, column, self.size, limit
            )

    def take(self, through_window: int) -> FlowAggregate:
        """Remove and return the flows of windows ≤ ``through_window``, in key-hash order."""
        n = self.size
        window = self._rows[:n, 5] >> _WINDOW_SHIFT
        done = window <= np.uint64(through_window) if through_window >= 0 else np.zeros(n, bool)
        if not done.any():
            return _in_hash_order(FlowAggregate(np.empty((KEY_WIDTH, 0), np.uint64), *(c[:0] for c in self._counters())))
        taken_rows = np.flatnonzero(done)
        taken = FlowAggregate(
            np.ascontiguousarray(self._rows[taken_rows].T), *(c[taken_rows] for c in self._counters())
        )
        kept = np.flatnonzero(~done)
        self.size = kept.size
        # Keep the open flows in fresh, smaller arrays: a closed million-flow window's room is given back.
        capacity = max(_MIN_ROWS, int(kept.size * _GROWTH))
        rows = np.empty((capacity, KEY_WIDTH), np.uint64)
        rows[: kept.size] = self._rows[kept]
        counters = []
        for current in self._counters():
            fresh = np.empty(capacity, current.dtype)
            fresh[: kept.size] = current[kept]
            counters.append(fresh)
        self._rows = rows
        self._packets, self._bytes, self._first, self._last, self._flags = counters
        self._resize_index(max(2 * _MIN_ROWS, _pow2_at_least(int(capacity / _MAX_LOAD))))
        return _in_hash_order(taken)


def aggregate_packets(packets: Packets, eni_index: np.ndarray, window_ns: int) -> FlowAggregate:
    """The flows of one batch of packets, in key-hash order."""
    table = FlowTable()
    table.add_packets(packets, eni_index, window_ns)
    return table.take(_ALL_WINDOWS)


def _in_hash_order(flows: FlowAggregate) -> FlowAggregate:
    if flows.size < 2:
        return flows
    h = hash_rows(flows.keys)
    order = np.argsort(h, kind="stable")
    hs = h[order]
    if (hs[1:] == hs[:-1]).any():
        order = np.lexsort((*flows.keys[::-1], h))  # equal hashes: by key, exactly
    return FlowAggregate(flows.keys[:, order], *(col[order] for col in flows[1:]))
