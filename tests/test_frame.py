import numpy as np
import pytest

from flowlogs.errors import BadMagicError, FrameError, TruncatedFrameError, UnsupportedVersionError
from schemas import frame


def _rows(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    rows = np.zeros(n, frame.PACKET_DTYPE)
    rows["capture_time_ns"] = 1_700_000_000_000_000_000 + rng.integers(0, 10**9, n).astype(np.uint64)
    rows["src_addr"] = frame.ipv4_mapped(rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32))
    rows["dst_addr"] = rng.integers(0, 256, (n, 16), dtype=np.uint8).view("V16").reshape(-1)
    rows["ip_length"] = rng.integers(20, 9000, n)
    rows["wire_length"] = rows["ip_length"] + 14
    rows["src_port"] = rng.integers(0, 65536, n)
    rows["dst_port"] = rng.integers(0, 65536, n)
    rows["eni"] = rng.integers(0, 3, n)
    rows["protocol"] = rng.choice([1, 6, 17, 47], n)
    rows["tcp_flags"] = rng.integers(0, 256, n)
    rows["direction"] = rng.integers(0, 2, n)
    return rows


def test_round_trip_keeps_every_column_and_header_field() -> None:
    rows = _rows(5000)
    data = frame.encode(rows, ["eni-a", "eni-b", "eni-c"], agent_id="mirror-7", sequence=42, dropped_packets=3)
    decoded = frame.decode(data)
    assert decoded.agent_id == "mirror-7"
    assert decoded.sequence == 42
    assert decoded.dropped_packets == 3
    assert decoded.eni_ids == ("eni-a", "eni-b", "eni-c")
    assert decoded.packet_count == 5000
    assert decoded.first_time_ns == int(rows["capture_time_ns"].min())
    assert decoded.last_time_ns == int(rows["capture_time_ns"].max())
    for column in frame.COLUMNS:
        np.testing.assert_array_equal(getattr(decoded.packets, column.name), rows[column.name])


def test_decode_is_zero_copy() -> None:
    data = frame.encode(_rows(100), ["eni-a", "eni-b", "eni-c"], agent_id="a", sequence=0)
    decoded = frame.decode(data)
    backing = np.frombuffer(data, np.uint8)
    for column in decoded.packets:
        assert np.shares_memory(backing, column)


def test_layout_matches_the_documented_offsets() -> None:
    n, enis = 10, 3
    data = frame.encode(_rows(n), ["eni-a", "eni-b", "eni-c"], agent_id="a", sequence=1)
    assert data[:4] == b"FLPM"
    assert int.from_bytes(data[4:6], "little") == 1
    assert int.from_bytes(data[40:44], "little") == n  # packet_count, after magic..sequence
    offset = frame.HEADER_SIZE + enis * frame.ENI_ID_SIZE
    first_ts = int.from_bytes(data[offset : offset + 8], "little")
    assert first_ts == int(frame.decode(data).packets.capture_time_ns[0])
    assert len(data) == frame.HEADER_SIZE + enis * frame.ENI_ID_SIZE + n * frame.PACKET_SIZE


def test_a_frame_of_no_packets_reports_drops() -> None:
    empty = frame.Packets(*(np.zeros(0, c.dtype) for c in frame.COLUMNS))
    data = frame.encode(empty, ["eni-a"], agent_id="a", sequence=5, agent_start_ns=7, dropped_packets=12, dropped_time_ns=(100, 200))
    report = frame.decode(data)
    assert report.packet_count == 0 and report.dropped_packets == 12 and report.agent_start_ns == 7
    assert (report.first_time_ns, report.last_time_ns) == (100, 200)
    assert (report.dropped_first_time_ns, report.dropped_last_time_ns) == (100, 200)
    with pytest.raises(ValueError, match="0 only to report drops"):
        frame.encode(empty, ["eni-a"], agent_id="a", sequence=5)


def test_bad_magic_is_rejected() -> None:
    data = bytearray(frame.encode(_rows(10), ["e", "f", "g"], agent_id="a", sequence=0))
    data[:4] = b"NOPE"
    with pytest.raises(BadMagicError):
        frame.decode(bytes(data))


def test_unknown_version_is_rejected() -> None:
    data = bytearray(frame.encode(_rows(10), ["e", "f", "g"], agent_id="a", sequence=0))
    data[4:6] = (2).to_bytes(2, "little")
    with pytest.raises(UnsupportedVersionError, match="version 2"):
        frame.decode(bytes(data))


@pytest.mark.parametrize("cut", [1, 7, 63, 100, 17])
def test_truncated_frames_are_rejected(cut: int) -> None:
    data = frame.encode(_rows(10), ["e", "f", "g"], agent_id="a", sequence=0)
    with pytest.raises(TruncatedFrameError):
        frame.decode(data[: len(data) - cut] if cut != 1 else data[:3])


def test_trailing_bytes_are_rejected() -> None:
    data = frame.encode(_rows(10), ["e", "f", "g"], agent_id="a", sequence=0)
    with pytest.raises(TruncatedFrameError):
        frame.decode(data + b"\0")


def test_eni_index_outside_the_table_is_rejected() -> None:
    rows = _rows(10)
    rows["eni"][3] = 5
    data = frame.encode(rows, ["e", "f", "g"], agent_id="a", sequence=0)
    with pytest.raises(FrameError, match="ENI index 5"):
        frame.decode(data)


def test_encode_refuses_oversized_identifiers() -> None:
    with pytest.raises(ValueError):
        frame.encode(_rows(1), ["e" * 33], agent_id="a", sequence=0)
    with pytest.raises(ValueError):
        frame.encode(_rows(1), ["e"], agent_id="a" * 17, sequence=0)


def test_ipv4_mapping() -> None:
    mapped = frame.ipv4_mapped(np.array([0x0A000001], np.uint32))
    assert mapped.tobytes() == bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1])
    assert frame.is_ipv4_mapped(mapped).tolist() == [True]
    v6 = np.frombuffer(bytes.fromhex("20010db8000000000000000000000001"), "V16")
    assert frame.is_ipv4_mapped(v6).tolist() == [False]
