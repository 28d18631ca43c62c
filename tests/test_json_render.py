"""The JSON renderer agrees with Python's own formatting."""

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


def test_addresses_of_both_families_render_as_python_writes_them() -> None:
    addresses = [ipaddress.ip_address(a) for a in ("10.0.0.1", "fd77::2", "255.255.255.255", "2001:db8::1:0:0:1", "0.0.0.0")]
    raw = np.array(
        [list((a.packed if a.version == 6 else b"\0" * 10 + b"\xff\xff" + a.packed)) for a in addresses], np.uint8
    )
    texts = json_render._ip_texts(raw.view("V16").ravel())
    assert texts.to_pylist() == [f'"{a}"' for a in addresses]
