"""Windows close by event time (watermark + lateness) or idleness; frames are released for
acknowledgement only when every window they fed has closed."""

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from pipeline.window import FlowWindows
from schemas import flow_record, frame

S = 1_000_000_000
T0 = 1_700_000_000 * S  # a multiple of 10 s


@dataclass
class Msg:
    value: bytes | None
    offset: int


_SEQUENCE = itertools.count()


@pytest.fixture(autouse=True)
def _each_test_is_a_new_agent_run() -> Iterator[None]:
    """Frames without an explicit sequence number count from 0 in each test, as an agent's run does."""
    global _SEQUENCE
    _SEQUENCE = itertools.count()
    yield


def _frame(times_s: list[float], eni: str = "eni-a", *, sequence: int | None = None, dropped: tuple[int, float, float] | None = None) -> frame.Frame:
    n = len(times_s)
    rows = np.zeros(n, frame.PACKET_DTYPE)
    rows["capture_time_ns"] = [T0 + int(t * S) for t in times_s]
    rows["src_addr"] = frame.ipv4_mapped(np.full(n, 0x0A000001, np.uint32))
    rows["dst_addr"] = frame.ipv4_mapped(np.full(n, 0x0A000002, np.uint32))
    rows["ip_length"] = 100
    rows["protocol"] = 6
    rows["src_port"] = 1234
    rows["dst_port"] = 443
    drops = {}
    if dropped:
        count, first, last = dropped
        drops = dict(dropped_packets=count, dropped_time_ns=(T0 + int(first * S), T0 + int(last * S)))
    seq = next(_SEQUENCE) if sequence is None else sequence
    return frame.decode(frame.encode(rows, [eni], agent_id="a", agent_start_ns=1, sequence=seq, **drops))


def _windows(idle: float = 1000.0) -> FlowWindows:
    return FlowWindows(window_seconds=10, lateness_seconds=2, idle_seconds=idle)


def test_window_closes_only_after_watermark_passes_end_plus_lateness() -> None:
    w = _windows()
    m0, m1, m2 = Msg(b"", 0), Msg(b"", 1), Msg(b"", 2)
    w.add(0, _frame([1, 2, 3]), m0)
    w.add(0, _frame([9, 11]), m1)  # straddles windows 0 and 1
    assert w.due(now=0) == []
    w.add(0, _frame([11.9]), m2)  # watermark 11.9 < 10 + 2
    assert w.due(now=0) == []
    m3 = Msg(b"", 3)
    w.add(0, _frame([12.0]), m3)  # watermark reaches 12 = end of window 0 + lateness
    closed = w.due(now=0)
    assert len(closed) == 1
    flows = closed[0].flows
    assert int(flows.packets.sum()) == 4  # 1, 2, 3 and 9
    # m1 also fed window 1, which is still open: only m0 may be acknowledged.
    assert closed[0].messages == [m0]
    rest = w.close_partitions()
    assert int(rest[0].flows.packets.sum()) == 3  # 11, 11.9, 12
    assert rest[0].messages == [m1, m2, m3]


def test_idle_partition_closes_everything() -> None:
    w = _windows(idle=5)
    m = Msg(b"", 0)
    w.add(3, _frame([1, 11]), m)  # watermark 11: nothing closes by event time
    assert w.due(now=w.partition(3).last_arrival + 4.9) == []
    closed = w.due(now=w.partition(3).last_arrival + 5)
    assert closed[0].event.partition == 3
    assert sorted(closed[0].windows) == [T0 // (10 * S), T0 // (10 * S) + 1]
    assert int(closed[0].flows.packets.sum()) == 2
    assert closed[0].messages == [m]


def test_partitions_have_their_own_watermarks() -> None:
    w = _windows()
    w.add(0, _frame([1]), Msg(b"", 0))
    w.add(1, _frame([30]), Msg(b"", 0))  # far ahead, but on another partition
    closed = w.due(now=0)
    assert [c.event.partition for c in closed] == []  # partition 1's only window (30 s) is open
    w.add(0, _frame([13]), Msg(b"", 1))
    assert [c.event.partition for c in w.due(now=0)] == [0]


def test_late_packets_are_counted_and_kept_apart_from_the_closed_window() -> None:
    w = _windows()
    w.add(0, _frame([1]), Msg(b"", 0))
    w.add(0, _frame([12]), Msg(b"", 1))
    first = w.due(now=0)
    assert int(first[0].flows.packets.sum()) == 1
    w.add(0, _frame([5]), Msg(b"", 2))  # window 0 already closed
    assert w.stats.late_packets == 1
    rest = w.close_partitions()
    assert int(rest[0].flows.packets.sum()) == 2  # the late packet is a separate record
    assert _statuses(first + rest) == {(0, "eni-a", "OK"): (1, 1), (0, "eni-a", "LATE"): (1, 1), (10, "eni-a", "OK"): (1, 1)}


def test_frame_bytes_are_released_once_aggregated() -> None:
    w = _windows()
    m = Msg(b"payload", 0)
    w.add(0, _frame([1]), m)
    assert m.value is None


def _statuses(closed) -> dict[tuple[int, str], tuple[int, int]]:
    """(window offset from T0, ENI) → (packets, rows) of the windows' records, by SKIPDATA-ness."""
    from pipeline.records import FlowRecordBuilder

    out = {}
    for c in closed:
        builder = FlowRecordBuilder(["eni-a", "eni-b"], {}, 10 * S)
        cols = builder.columns(c.flows, skipped=c.skipped, nodata=c.nodata, late_through=c.late_through)
        for w, e, pk, st in zip(cols["window_start"], cols["eni"], cols["packets"], cols["log_status"]):
            key = (int(w) - T0 // S, ["eni-a", "eni-b"][int(e)], flow_record.LOG_STATUSES[int(st)])
            out[key] = (out.get(key, (0, 0))[0] + int(pk), out.get(key, (0, 0))[1] + 1)
    return out


def test_agent_drop_reports_mark_those_windows_skipdata() -> None:
    w = _windows()
    w.add(0, _frame([1, 2], "eni-a", sequence=0), Msg(b"", 0))
    w.add(0, _frame([3], "eni-b", sequence=0), Msg(b"", 1))
    # eni-a lost 5 packets from 4 s to 14 s: windows 0 and 10 of eni-a are incomplete.
    w.add(0, _frame([15], "eni-a", sequence=1, dropped=(5, 4, 14)), Msg(b"", 2))
    empty = frame.Packets(*(np.zeros(0, c.dtype) for c in frame.COLUMNS))
    report = frame.encode(empty, ["eni-b"], agent_id="a", agent_start_ns=1, sequence=1, dropped_packets=2,
                          dropped_time_ns=(T0 + 35 * S, T0 + 36 * S))
    w.add(0, frame.decode(report), Msg(b"", 3))  # a drop report alone: eni-b's window 30
    out = _statuses(w.close_partitions())
    assert out == {
        (0, "eni-a", "SKIPDATA"): (2, 1),
        (0, "eni-b", "OK"): (1, 1),
        (10, "eni-a", "SKIPDATA"): (1, 1),
        (30, "eni-b", "SKIPDATA"): (0, 1),  # no flows: one record that says packets were lost
    }
    assert w.stats.dropped_packets_reported == 7 and w.stats.skipped_windows == 3


def test_a_sequence_gap_marks_skipdata_and_a_repeated_frame_counts_once() -> None:
    w = _windows()
    w.add(0, _frame([1], sequence=0), Msg(b"", 0))
    w.add(0, _frame([2], sequence=1), Msg(b"", 1))
    w.add(0, _frame([2], sequence=1), Msg(b"", 2))  # the producer sent it twice
    w.add(0, _frame([25], sequence=4), Msg(b"", 3))  # frames 2 and 3 were lost
    closed = w.close_partitions()
    assert _statuses(closed) == {
        (0, "eni-a", "SKIPDATA"): (2, 1),
        (10, "eni-a", "SKIPDATA"): (0, 1),
        (20, "eni-a", "SKIPDATA"): (1, 1),
    }
    assert w.stats.lost_frames == 2 and w.stats.duplicate_frames == 1
    assert [m.offset for c in closed for m in c.messages] == [0, 1, 2, 3]  # all acknowledged


def test_a_runs_lost_first_frames_are_a_gap_when_the_partition_is_read_from_its_start() -> None:
    # From offset 0 every frame of the agent's run is in view: its first one here is its third.
    w = _windows()
    w.add(0, _frame([1], sequence=2), Msg(b"", 0))
    assert _statuses(w.close_partitions()) == {(0, "eni-a", "SKIPDATA"): (1, 1)}
    assert w.stats.lost_frames == 2
    # Read from part-way (a committed offset, retention), the earlier frames are simply behind.
    w = _windows()
    w.add(0, _frame([1], sequence=2), Msg(b"", 7))
    assert _statuses(w.close_partitions()) == {(0, "eni-a", "OK"): (1, 1)}
    assert w.stats.lost_frames == 0


def test_a_frame_that_comes_after_a_later_one_is_counted_not_taken_for_a_repeat() -> None:
    w = _windows()
    w.add(0, _frame([1], sequence=0), Msg(b"", 0))
    w.add(0, _frame([3], sequence=2), Msg(b"", 1))  # frame 1 is late (a producer retry)…
    w.add(0, _frame([2], sequence=1), Msg(b"", 2))  # …here it is
    w.add(0, _frame([2], sequence=1), Msg(b"", 3))  # and this is a real repeat
    closed = w.close_partitions()
    assert sum(int(c.flows.packets.sum()) for c in closed) == 3
    assert w.stats.lost_frames == 0 and w.stats.reordered_frames == 1 and w.stats.duplicate_frames == 1


def test_a_replay_repeats_the_recorded_closes_with_identical_rows() -> None:
    """A crash after some closes: replaying from the committed offset with the recorded
    closes gives the same close events with the same rows, and then carries on."""
    frames = [_frame([t, t + 0.5], "eni-a" if i % 2 else "eni-b", sequence=i // 2) for i, t in enumerate(range(0, 60, 3))]
    original = _windows(idle=1e9)
    produced = []
    for offset, f in enumerate(frames):
        original.add(0, f, Msg(b"", offset))
        produced += original.due(now=0)  # closes by watermark only: deterministic
        if offset == 14:
            produced += original.due(now=original.partition(0).last_arrival + 1e10)  # an idle close too
    events = [c.event for c in produced]
    assert len(events) >= 4
    # Crash after the 1st close was written and acknowledged, the later ones recorded (and
    # maybe written): the committed offset is the first frame not acknowledged by then.
    acked = {m.offset for m in produced[0].messages}
    committed = min(set(range(len(frames))) - acked)
    assert events[0].offset <= committed <= events[1].offset
    replay = _windows(idle=1e9)
    state = replay.partition(0)
    state.resume(max((e.target for e in events if e.offset < committed), default=-1), [e for e in events if e.offset >= committed])
    again = []
    for offset in range(committed, len(frames)):
        replay.add(0, frames[offset], Msg(b"", offset))
        again += replay.due(now=0)
    assert not state.replaying
    expected = [c for c in produced if c.event.offset >= committed]
    assert [c.event for c in again] == [c.event for c in expected]
    # A close at the committed offset itself was written before the crash (its frames are
    # acknowledged): repeated, it yields a part of the same rows under the same token, which
    # the store drops. Every later close is reproduced row for row.
    for a, b in zip(again, expected):
        if a.event.offset > committed:
            assert np.array_equal(a.flows.keys, b.flows.keys) and np.array_equal(a.flows.packets, b.flows.packets)


def test_watched_windows_without_traffic_get_one_nodata_record() -> None:
    w = _windows()
    w.add(0, _frame([1, 2], "eni-a", sequence=0), Msg(b"", 0))
    w.add(0, _frame([33], "eni-a", sequence=1), Msg(b"", 1))  # eni-a: traffic at 0 s and 30 s only
    # Between eni-a's frames nothing is known (was its agent up?): no record. Its agent's
    # heartbeats say so when it was.
    empty = frame.Packets(*(np.zeros(0, c.dtype) for c in frame.COLUMNS))
    beat = frame.encode(empty, ["eni-b"], agent_id="a", agent_start_ns=1, sequence=0, heartbeat_ns=(T0, T0 + 29 * S))
    w.add(0, frame.decode(beat), Msg(b"", 2))  # eni-b: watched from 0 to 29 s, no traffic at all
    out = _statuses(w.close_partitions())
    assert out == {
        (0, "eni-a", "OK"): (2, 1),
        (30, "eni-a", "OK"): (1, 1),
        (0, "eni-b", "NODATA"): (0, 1),
        (10, "eni-b", "NODATA"): (0, 1),
        (20, "eni-b", "NODATA"): (0, 1),
    }


def test_a_heartbeat_moves_the_watermark_so_windows_close_without_traffic() -> None:
    w = _windows()
    w.add(0, _frame([1], "eni-a", sequence=0), Msg(b"", 0))
    empty = frame.Packets(*(np.zeros(0, c.dtype) for c in frame.COLUMNS))
    beat = frame.encode(empty, ["eni-a"], agent_id="a", agent_start_ns=1, sequence=1, heartbeat_ns=(T0 + S, T0 + 13 * S))
    w.add(0, frame.decode(beat), Msg(b"", 1))
    closed = w.due(now=0)
    assert [c.windows for c in closed] == [[T0 // S // 10]]  # window 0 closed at watermark 13 s
