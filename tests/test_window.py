"""Windows close by event time (watermark + lateness) or idleness; frames are released for
acknowledgement only when every window they fed has closed."""

from dataclasses import dataclass

import numpy as np

from pipeline.window import FlowWindows
from schemas import frame

S = 1_000_000_000
T0 = 1_700_000_000 * S  # a multiple of 10 s


@dataclass
class Msg:
    value: bytes | None
    offset: int


def _frame(times_s: list[float], eni: str = "eni-a") -> frame.Frame:
    n = len(times_s)
    rows = np.zeros(n, frame.PACKET_DTYPE)
    rows["capture_time_ns"] = [T0 + int(t * S) for t in times_s]
    rows["src_addr"] = frame.ipv4_mapped(np.full(n, 0x0A000001, np.uint32))
    rows["dst_addr"] = frame.ipv4_mapped(np.full(n, 0x0A000002, np.uint32))
    rows["ip_length"] = 100
    rows["protocol"] = 6
    rows["src_port"] = 1234
    rows["dst_port"] = 443
    return frame.decode(frame.encode(rows, [eni], agent_id="a", sequence=0))


def _windows(idle: float = 1000.0) -> FlowWindows:
    return FlowWindows(window_seconds=10, lateness_seconds=2, idle_seconds=idle, batch_packets=1000)


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
    assert closed[0].partition == 3
    assert sorted(closed[0].windows) == [T0 // (10 * S), T0 // (10 * S) + 1]
    assert int(closed[0].flows.packets.sum()) == 2
    assert closed[0].messages == [m]


def test_partitions_have_their_own_watermarks() -> None:
    w = _windows()
    w.add(0, _frame([1]), Msg(b"", 0))
    w.add(1, _frame([30]), Msg(b"", 0))  # far ahead, but on another partition
    closed = w.due(now=0)
    assert [c.partition for c in closed] == []  # partition 1's only window (30 s) is open
    w.add(0, _frame([13]), Msg(b"", 1))
    assert [c.partition for c in w.due(now=0)] == [0]


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


def test_frame_bytes_are_released_once_aggregated() -> None:
    w = _windows()
    m = Msg(b"payload", 0)
    w.add(0, _frame([1]), m)
    w.partition(0).aggregate_staged()
    assert m.value is None
