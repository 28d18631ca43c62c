import numpy as np
import pytest

from agents.synthetic import SyntheticConfig, SyntheticTraffic
from pipeline import aggregate, flow_table
from pipeline.flow_table import FlowTable, aggregate_packets
from pipeline.records import FlowRecordBuilder
from schemas.frame import concatenate
from tests import reference

WINDOW_S = 5


def _vectorised(batches, window_seconds: int = WINDOW_S) -> dict:
    eni_ids = batches[0][0]
    packets = concatenate([p for _, p in batches])
    flows = aggregate_packets(packets, packets.eni.astype(np.uint32), window_seconds * 10**9)
    builder = FlowRecordBuilder(list(eni_ids), {}, window_seconds * 10**9)
    cols = builder.columns(flows)
    out = {}
    for i in range(flows.size):
        key = (
            eni_ids[int(cols["eni"][i])], bytes(cols["srcaddr"][i]), bytes(cols["dstaddr"][i]),
            int(cols["srcport"][i]), int(cols["dstport"][i]), int(cols["protocol"][i]),
            int(cols["flow_direction"][i]), int(cols["window_start"][i]),
        )
        assert key not in out, "aggregate rows must be unique per key"
        out[key] = [int(cols["packets"][i]), int(cols["bytes"][i]), int(cols["start"][i]), int(cols["end"][i]), int(cols["tcp_flags"][i])]
    return out


def _traffic(**kw) -> list:
    cfg = SyntheticConfig(pace=False, start_ns=1_700_000_003_000_000_000, chunk_packets=20_000, **kw)
    return [(b.eni_ids, b.packets) for b in SyntheticTraffic(cfg).batches()]


def test_matches_reference_across_windows_and_enis() -> None:
    batches = _traffic(enis=5, flows=3000, rate=40_000, duration=12)
    assert _vectorised(batches) == reference.aggregate(batches, WINDOW_S)


def test_close_order_is_exact_even_when_every_hash_collides(monkeypatch: pytest.MonkeyPatch) -> None:
    batches = _traffic(enis=3, flows=500, rate=10_000, duration=6)
    closing_rows = flow_table._closing_rows

    def colliding(*args: object) -> tuple[np.ndarray, np.ndarray]:
        at, _hashes = closing_rows(*args)
        return at, np.zeros(at.size, np.uint64)

    monkeypatch.setattr(flow_table, "_closing_rows", colliding)
    assert _vectorised(batches) == reference.aggregate(batches, WINDOW_S)
    whole = concatenate([p for _, p in batches])
    flows = aggregate_packets(whole, whole.eni.astype(np.uint32), WINDOW_S * 10**9)
    assert (np.lexsort(flows.keys[::-1]) == np.arange(flows.size)).all()  # ties broken by key


def _by_key(flows) -> list:
    order = np.lexsort(flows.keys[::-1])
    return [flows.keys[:, order], *(c[order] for c in flows[1:])]


def test_table_fed_frame_by_frame_and_closed_window_by_window_equals_one_pass() -> None:
    batches = _traffic(enis=2, flows=20_000, rate=200_000, duration=12)  # grows the table many times
    table = FlowTable()
    closed = []
    for i, (_, p) in enumerate(batches):
        table.add_packets(p, p.eni.astype(np.uint32), WINDOW_S * 10**9)
        if i % 5 == 4:  # close what is older than the newest packet's window
            closed.append(table.take(int(p.capture_time_ns.max()) // (WINDOW_S * 10**9) - 1))
    closed.append(table.take((1 << 48) - 1))
    assert table.size == 0
    whole = concatenate([p for _, p in batches])
    one = aggregate_packets(whole, whole.eni.astype(np.uint32), WINDOW_S * 10**9)
    merged = aggregate.concatenate(closed)
    assert merged.size == one.size  # no flow split between two closes
    for a, b in zip(_by_key(merged), _by_key(one)):
        np.testing.assert_array_equal(a, b)


def test_same_flows_and_counters_come_out_in_the_same_order_whatever_the_arrival_order() -> None:
    batches = _traffic(enis=2, flows=3000, rate=40_000, duration=4)
    forward, backward = FlowTable(), FlowTable()
    for _, p in batches:
        forward.add_packets(p, p.eni.astype(np.uint32), WINDOW_S * 10**9)
    for _, p in reversed(batches):  # a flow's later seconds first: its start moves back
        backward.add_packets(p, p.eni.astype(np.uint32), WINDOW_S * 10**9)
    a, b = forward.take((1 << 48) - 1), backward.take((1 << 48) - 1)
    assert (a.end > a.start).any()  # flows spanning seconds, or the reversal tests nothing
    for column_a, column_b in zip(a, b):
        np.testing.assert_array_equal(column_a, column_b)


def test_flow_id_is_stable_across_eni_numbering() -> None:
    batches = _traffic(enis=3, flows=50, rate=5_000, duration=1)
    packets = concatenate([p for _, p in batches])
    eni_ids = list(batches[0][0])
    flows = aggregate_packets(packets, packets.eni.astype(np.uint32), WINDOW_S * 10**9)
    ids_a = FlowRecordBuilder(eni_ids, {}, WINDOW_S * 10**9).columns(flows)["flow_id"]
    # Same flows, ENIs numbered in reverse by another worker process.
    renumbered = flows._replace(keys=flows.keys.copy())
    eni = flows.eni
    renumbered.keys[4] = (renumbered.keys[4] & np.uint64(0xFFFFFFFF)) | ((2 - eni).astype(np.uint64) << np.uint64(32))
    ids_b = FlowRecordBuilder(eni_ids[::-1], {}, WINDOW_S * 10**9).columns(renumbered)["flow_id"]
    np.testing.assert_array_equal(ids_a, ids_b)
    assert len(set(ids_a.tolist())) == flows.size


def test_a_close_keeps_the_room_of_steady_traffic_and_gives_back_that_of_a_burst() -> None:
    batches = _traffic(enis=2, flows=20_000, rate=200_000, duration=3 * WINDOW_S)
    table = FlowTable()
    for _, p in batches:
        table.add_packets(p, p.eni.astype(np.uint32), WINDOW_S * 10**9)
    first_window = int(batches[0][1].capture_time_ns.min()) // (WINDOW_S * 10**9)
    held = table.nbytes
    assert table.take(first_window).size > 0 and table.nbytes == held  # the next windows need the room again
    assert table.take((1 << 48) - 1).size > 0 and table.size == 0  # then traffic stops
    assert table.nbytes < held / 4
    table.add_packets(batches[0][1], batches[0][1].eni.astype(np.uint32), WINDOW_S * 10**9)  # and comes back
    again = aggregate_packets(batches[0][1], batches[0][1].eni.astype(np.uint32), WINDOW_S * 10**9)
    assert all(np.array_equal(a, b) for a, b in zip(table.take((1 << 48) - 1), again))
