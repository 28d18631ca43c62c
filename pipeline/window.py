"""Event-time tumbling windows, owned by the worker (not a Faust windowed table).

Each Kafka partition has its own :class:`PartitionWindows`: every frame's packets are
counted into the partition's :class:`FlowTable` as the frame arrives, and a flow's counters
stay there until its window closes.
A window closes when the partition's watermark (the newest capture time seen) passes the
window's end plus the allowed lateness, or when the partition has been idle for a while.

A frame's Kafka message is handed back for acknowledgement only once every window it fed
is closed — so the committed offset never passes the first frame of the oldest open
window, and a crash replays exactly what was only in memory.

Every close is a :class:`CloseEvent`: "after the frame at offset O, windows up to T were
closed". The worker records it before writing what it produced, and names the write after
it. A restarted worker (or a partition's new owner after a rebalance) replays from the
committed offset and repeats the recorded closes at exactly the same offsets, so each
produces the same rows under the same name and the store keeps only one copy; after the
last recorded close, windows close by watermark and idleness again.

Loss is marked, never hidden: an agent's drop report (``dropped_packets`` in a frame
header) or a gap in an agent's per-ENI frame sequence (a run's first frames too, when the
partition is read from its first message) marks the ENI's windows it covers as skipped;
their records get log-status SKIPDATA, and a window that has no flows for that ENI gets
one record that says so. Every frame says its agent watched its ENIs over
its time range (a heartbeat frame says only that): an ENI window watched with no traffic
gets one NODATA record. A frame seen twice (a producer retry) is counted once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline import aggregate
from pipeline.aggregate import FlowAggregate, window_eni_codes
from pipeline.flow_table import FlowTable
from schemas.frame import FLAG_HEARTBEAT, Frame

log = logging.getLogger(__name__)

_MISSING_KEPT = 4096  # per agent run and ENI: skipped sequence numbers a late frame may still fill


@dataclass(frozen=True, slots=True)
class CloseEvent:
    """After consuming ``offset``, the partition closed every window ≤ ``target``."""

    partition: int
    offset: int
    target: int


@dataclass(slots=True)
class ClosedWindows:
    """Flows of the windows a partition just closed, and the messages now safe to ack."""

    event: CloseEvent
    windows: list[int]
    flows: FlowAggregate  # including one zero-traffic row per skipped (window, ENI) without flows
    messages: list[Any]
    skipped: np.ndarray  # window_eni_codes of the (window, ENI) pairs that lost packets
    nodata: np.ndarray  # window_eni_codes of the pairs watched by an agent with no traffic
    late_through: int  # flows of windows ≤ this were closed before: late packets (log-status LATE)
    closed_at: float = field(default_factory=time.monotonic)  # when the close was made (alert latency)


@dataclass(slots=True)
class WindowStats:
    packets_in: int = 0
    frames_in: int = 0
    late_packets: int = 0
    windows_closed: int = 0
    flows_out: int = 0
    dropped_packets_reported: int = 0  # by agents, in frame headers
    lost_frames: int = 0  # gaps in agents' frame sequences (less those that came late)
    reordered_frames: int = 0  # came after a later frame of theirs (producer retries), counted
    duplicate_frames: int = 0
    skipped_windows: int = 0  # (window, ENI) pairs marked SKIPDATA


class PartitionWindows:
    """Open windows of one partition."""

    def __init__(self, partition: int, window_ns: int, lateness_ns: int) -> None:
        self.partition = partition
        self.window_ns = window_ns
        self.lateness_ns = lateness_ns
        self.watermark_ns = 0
        self.closed_through = -1  # highest window index already closed
        self.open_windows: set[int] = set()
        self.last_arrival = time.monotonic()
        self._flows = FlowTable()
        # (message, newest window it fed), oldest first
        self._messages: deque[tuple[Any, int]] = deque()
        # (agent id, agent run, ENI index) → (next expected sequence, newest capture time seen)
        self._sequences: dict[tuple[str, int, int], tuple[int, int]] = {}
        # … and the sequence numbers a gap skipped: a producer retry can deliver a frame
        # after a later one, and then it is late, not a repeat.
        self._missing: dict[tuple[str, int, int], set[int]] = {}
        self._skipped: set[int] = set()  # window_eni_codes
        self._observed: set[int] = set()  # window_eni_codes the agents watched (open windows only)
        self.consumed_offset = -1  # offset of the last message added
        # Read from the partition's first message on (offset 0: nothing deleted, nothing
        # skipped): every agent run's frames are then all seen, its first one included.
        self._from_start = False
        self._replay: deque[CloseEvent] = deque()  # recorded closes still to repeat

    def resume(self, closed_through: int, replay: list[CloseEvent]) -> None:
        """Start from a recorded history: windows ≤ ``closed_through`` were closed before the
        first message this partition will get; ``replay`` are the closes to repeat, in order."""
        self.closed_through = closed_through
        self._replay = deque(sorted(replay, key=lambda e: e.offset))

    @property
    def replaying(self) -> bool:
        return bool(self._replay)

    def _skip(self, enis: np.ndarray, first_ns: int, last_ns: int, stats: WindowStats) -> int:
        """Mark the ENIs' windows covering [first_ns, last_ns] skipped; the newest such window."""
        first_w, last_w = first_ns // self.window_ns, last_ns // self.window_ns
        windows = np.arange(first_w, last_w + 1)
        codes = window_eni_codes(np.repeat(windows, enis.size), np.tile(enis, windows.size))
        fresh = set(codes.tolist()) - self._skipped
        stats.skipped_windows += len(fresh)
        self._skipped.update(fresh)
        self.open_windows.update(range(first_w, last_w + 1))
        return last_w

    def _observe(self, enis: np.ndarray, first_ns: int, last_ns: int) -> int:
        """Open the windows of [first_ns, last_ns] and note the ENIs were watched in them
        (those not closed yet: a closed window's records are out). The newest window."""
        first_w, last_w = max(first_ns // self.window_ns, self.closed_through + 1), last_ns // self.window_ns
        if first_w <= last_w:
            windows = np.arange(first_w, last_w + 1)
            self._observed.update(window_eni_codes(np.repeat(windows, enis.size), np.tile(enis, windows.size)).tolist())
            self.open_windows.update(range(first_w, last_w + 1))
        return last_w

    def _check_sequence(self, decoded: Frame, enis: np.ndarray, stats: WindowStats) -> tuple[bool, int]:
        """(duplicate?, newest window a gap marked, or -1)."""
        key = (decoded.agent_id, decoded.agent_start_ns, int(enis[0]))
        # A run's first frame seen is its first frame, unless this partition was read from
        # part-way (a committed offset, retention): then it is where the reading started.
        first_expected = 0 if self._from_start else decoded.sequence
        expected, seen_ns = self._sequences.get(key, (first_expected, decoded.first_time_ns))
        if decoded.sequence < expected:
            missing = self._missing.get(key)
            if missing is None or decoded.sequence not in missing:
                stats.duplicate_frames += 1
                return True, -1
            missing.discard(decoded.sequence)
            stats.lost_frames -= 1
            stats.reordered_frames += 1
            log.info(
                "partition %d: frame %d of agent %s for %s came after a later one (a producer retry);"
                " its packets are counted, as late ones where their window has closed",
                self.partition, decoded.sequence, decoded.agent_id, decoded.eni_ids[0],
            )
            return False, -1
        self._sequences[key] = (decoded.sequence + 1, max(seen_ns, decoded.last_time_ns))
        if decoded.sequence == expected:
            return False, -1
        lost = decoded.sequence - expected
        missing = self._missing.setdefault(key, set())
        missing.update(range(max(expected, decoded.sequence - _MISSING_KEPT), decoded.sequence))
        if len(missing) > _MISSING_KEPT:  # a long outage: only the newest gaps can still be filled
            missing.difference_update(sorted(missing)[: len(missing) - _MISSING_KEPT])
        stats.lost_frames += lost
        log.warning(
            "partition %d: %d frames of agent %s for %s never arrived (sequence %d, expected %d);"
            " windows from the last frame seen to this one are marked SKIPDATA",
            self.partition, lost, decoded.agent_id, decoded.eni_ids[0], decoded.sequence, expected,
        )
        return False, self._skip(enis, seen_ns, max(decoded.first_time_ns, seen_ns), stats)

    def add(self, decoded: Frame, enis: np.ndarray, eni_index: np.ndarray, message: Any, stats: WindowStats) -> None:
        """Take one frame; ``enis`` maps its ENI table, ``eni_index`` its packets, to ENI indices."""
        self.last_arrival = time.monotonic()
        if self.consumed_offset < 0:
            self._from_start = int(message.offset) == 0
        self.consumed_offset = max(self.consumed_offset, int(message.offset))
        duplicate, newest = self._check_sequence(decoded, enis, stats)
        if decoded.dropped_packets and not duplicate:
            stats.dropped_packets_reported += decoded.dropped_packets
            newest = max(newest, self._skip(enis, decoded.dropped_first_time_ns, decoded.dropped_last_time_ns, stats))
        if not duplicate and (decoded.packet_count or decoded.flags & FLAG_HEARTBEAT):
            # The agent was capturing for these ENIs all through the frame's time range.
            newest = max(newest, self._observe(enis, decoded.first_time_ns, decoded.last_time_ns))
            self.watermark_ns = max(self.watermark_ns, decoded.last_time_ns)
        if duplicate or decoded.packet_count == 0:
            self._messages.append((message, newest))
            return
        first_w = decoded.first_time_ns // self.window_ns
        last_w = decoded.last_time_ns // self.window_ns
        if first_w <= self.closed_through:
            late = int(np.count_nonzero(decoded.packets.capture_time_ns // np.uint64(self.window_ns) <= self.closed_through))
            stats.late_packets += late
            log.warning(
                "partition %d: %d packets of frame %s#%d arrived after their window closed;"
                " they are emitted as separate records (log-status LATE) with the next close",
                self.partition, late, decoded.agent_id, decoded.sequence,
            )
        self._flows.add_packets(decoded.packets, eni_index, self.window_ns)
        # The packets are counted; the frame's bytes are no longer needed, only its offset.
        message.value = None
        self._messages.append((message, max(last_w, newest)))

    def close_target(self, idle_seconds: float, now: float, caught_up: bool) -> int | None:
        """Highest window index that may close now, or None.

        Idleness counts only when the partition is caught up: a partition that merely waits
        its turn behind a backlog is not idle, and closing its windows early would split
        flows that are still on their way.
        """
        if self._replay:
            # Repeating recorded closes: exactly where they happened, and no other.
            if self._replay[0].offset <= self.consumed_offset:
                return self._replay.popleft().target
            return None
        if not self.open_windows:
            return None
        if caught_up and now - self.last_arrival >= idle_seconds:
            return max(self.open_windows)
        target = (self.watermark_ns - self.lateness_ns) // self.window_ns - 1
        return target if target >= min(self.open_windows) else None

    def close(self, target: int) -> ClosedWindows:
        """Remove and return every flow of windows ≤ target."""
        late_through = self.closed_through
        flows = self._flows.take(target)
        skipped = self._take_codes(self._skipped, target)
        observed = self._take_codes(self._observed, target)
        # One record for each (window, ENI) that has no flows: packets lost (SKIPDATA), or
        # watched with nothing to see (NODATA).
        with_flows = window_eni_codes(flows.window, flows.eni)
        silent = np.union1d(skipped, observed)
        silent = silent[~np.isin(silent, with_flows)]
        nodata = silent[~np.isin(silent, skipped)]
        if silent.size:
            carriers = aggregate.markers(silent >> np.uint64(32), silent & np.uint64(0xFFFFFFFF), self.window_ns)
            flows = aggregate.concatenate([flows, carriers])
        closed = sorted(w for w in self.open_windows if w <= target)
        self.open_windows.difference_update(closed)
        self.closed_through = max(self.closed_through, target)
        ready: list[Any] = []
        kept: deque[tuple[Any, int]] = deque()
        for message, newest in self._messages:
            if newest <= target:
                ready.append(message)
            else:
                kept.append((message, newest))
        self._messages = kept
        event = CloseEvent(self.partition, self.consumed_offset, target)
        return ClosedWindows(event, closed, flows, ready, skipped, nodata, late_through)

    @staticmethod
    def _take_codes(codes: set[int], target: int) -> np.ndarray:
        """Remove and return the window_eni_codes of windows ≤ target, sorted."""
        taken = np.array(sorted(c for c in codes if c >> 32 <= target), np.uint64)
        codes.difference_update(taken.tolist())
        return taken

    def close_all(self) -> ClosedWindows:
        target = max(self.open_windows) if self.open_windows else self.closed_through
        return self.close(target)


@dataclass(slots=True)
class EniRegistry:
    """ENI ids seen by this worker ↔ small integers used inside flow keys."""

    ids: list[str] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)

    def indices(self, eni_ids: tuple[str, ...]) -> np.ndarray:
        out = np.empty(len(eni_ids), dtype=np.uint32)
        for i, eni in enumerate(eni_ids):
            idx = self._index.get(eni)
            if idx is None:
                idx = self._index[eni] = len(self.ids)
                self.ids.append(eni)
            out[i] = idx
        return out


class FlowWindows:
    """All partitions' windows in one worker, plus the shared ENI registry."""

    def __init__(self, *, window_seconds: int, lateness_seconds: float, idle_seconds: float) -> None:
        self.window_ns = int(window_seconds * 1_000_000_000)
        self.lateness_ns = int(lateness_seconds * 1_000_000_000)
        self.idle_seconds = idle_seconds
        self.enis = EniRegistry()
        self.stats = WindowStats()
        self._partitions: dict[int, PartitionWindows] = {}

    def partition(self, partition: int) -> PartitionWindows:
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = PartitionWindows(partition, self.window_ns, self.lateness_ns)
        return state

    def add(self, partition: int, decoded: Frame, message: Any) -> None:
        table = self.enis.indices(decoded.eni_ids)
        eni_index = table[decoded.packets.eni]
        self.partition(partition).add(decoded, table, eni_index, message, self.stats)
        self.stats.frames_in += 1
        self.stats.packets_in += decoded.packet_count

    def due(self, now: float | None = None, caught_up: Callable[[int], bool] = lambda _p: True) -> list[ClosedWindows]:
        """Close what the watermarks and idle timers allow; ``caught_up(partition)`` says
        whether a partition has no unread frames (only then can it be idle)."""
        now = time.monotonic() if now is None else now
        closed = []
        for partition, state in self._partitions.items():
            while (target := state.close_target(self.idle_seconds, now, caught_up(partition))) is not None:
                closed.append(self._record(state.close(target)))
        return closed

    def has(self, partition: int) -> bool:
        return partition in self._partitions

    def discard_partitions(self, partitions: set[int]) -> None:
        """Forget partitions (revoked): their new owner replays them from the committed offset."""
        for p in partitions:
            self._partitions.pop(p, None)

    def close_partitions(self, partitions: set[int] | None = None) -> list[ClosedWindows]:
        """Close every open window (of the given partitions), e.g. at shutdown or revocation."""
        chosen = [p for p in self._partitions if partitions is None or p in partitions]
        closed = [self._record(self._partitions[p].close_all()) for p in chosen]
        for p in chosen:
            del self._partitions[p]
        return closed

    def open_window_count(self) -> int:
        return sum(len(state.open_windows) for state in self._partitions.values())

    def _record(self, closed: ClosedWindows) -> ClosedWindows:
        self.stats.windows_closed += len(closed.windows)
        self.stats.flows_out += closed.flows.size
        return closed
