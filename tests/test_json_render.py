"""The compiled JSON renderer agrees with Python's own formatting."""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa

from pipeline import json_render


def test_dotted_quads_of_every_digit_count() -> None:
    octets = [0, 9, 10, 99, 100, 199, 255, 1]
    raw = np.zeros((2, 16), np.uint8)
    raw[0, 12:] = octets[:4]
    raw[1, 12:] = octets[4:]
    assert json_render.dotted_quads(raw).to_pylist() == ['"0.9.10.99"', '"100.199.255.1"']
    rng = np.random.default_rng(1)
    many = rng.integers(0, 256, (1000, 16), dtype=np.uint8)
    want = [f'"{ipaddress.IPv4Address(bytes(r[12:]))}"' for r in many]
    assert json_render.dotted_quads(many).to_pylist() == want


def test_join_puts_literals_between_columns_and_handles_slices_and_empty_values() -> None:
    a = pa.array(["x", "", "zzz", "q"]).slice(1)  # an offset into its buffers
    b = pa.array(["1", "22", ""])
    out = json_render.join([b"{", b",", b"}"], [a, b])
    assert out.to_pylist() == [b"{,1}", b"{zzz,22}", b"{q,}"]
