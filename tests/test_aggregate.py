import numpy as np
import pytest

from agents.synthetic import SyntheticConfig, SyntheticTraffic
from pipeline import aggregate
from pipeline.records import FlowRecordBuilder
from schemas.frame import concatenate
from tests import reference

WINDOW_S = 5


def _vectorised(batches, window_seconds: int = WINDOW_S) -> dict:
    eni_ids = batches[0][0]
    packets = concatenate([p for _, p in batches])
    flows = aggregate.aggregate_packets(packets, packets.eni.astype(np.uint32), window_seconds * 10**9)
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


def test_exact_even_when_every_hash_collides(monkeypatch: pytest.MonkeyPatch) -> None:
    batches = _traffic(enis=3, flows=500, rate=10_000, duration=6)
    monkeypatch.setattr(aggregate, "hash_rows", lambda keys: np.zeros(keys.shape[1], np.uint64))
    assert _vectorised(batches) == reference.aggregate(batches, WINDOW_S)


def test_merge_of_partials_equals_one_pass() -> None:
    batches = _traffic(enis=2, flows=800, rate=20_000, duration=4)
    parts = [aggregate.aggregate_packets(p, p.eni.astype(np.uint32), WINDOW_S * 10**9) for _, p in batches]
    merged = aggregate.merge(parts)
    whole = concatenate([p for _, p in batches])
    one = aggregate.aggregate_packets(whole, whole.eni.astype(np.uint32), WINDOW_S * 10**9)
    order_m = np.lexsort(merged.keys[::-1])
    order_o = np.lexsort(one.keys[::-1])
    np.testing.assert_array_equal(merged.keys[:, order_m], one.keys[:, order_o])
    for a, b in zip(merged[1:], one[1:]):
        np.testing.assert_array_equal(a[order_m], b[order_o])


def test_flow_id_is_stable_across_eni_numbering() -> None:
    batches = _traffic(enis=3, flows=50, rate=5_000, duration=1)
    packets = concatenate([p for _, p in batches])
    eni_ids = list(batches[0][0])
    flows = aggregate.aggregate_packets(packets, packets.eni.astype(np.uint32), WINDOW_S * 10**9)
    ids_a = FlowRecordBuilder(eni_ids, {}, WINDOW_S * 10**9).columns(flows)["flow_id"]
    # Same flows, ENIs numbered in reverse by another worker process.
    renumbered = flows._replace(keys=flows.keys.copy())
    eni = flows.eni
    renumbered.keys[4] = (renumbered.keys[4] & np.uint64(0xFFFFFFFF)) | ((2 - eni).astype(np.uint64) << np.uint64(32))
    ids_b = FlowRecordBuilder(eni_ids[::-1], {}, WINDOW_S * 10**9).columns(renumbered)["flow_id"]
    np.testing.assert_array_equal(ids_a, ids_b)
    assert len(set(ids_a.tolist())) == flows.size
