"""Flow records as JSON text, rendered by Arrow's compute kernels over whole columns.

The flows topic carries one JSON document per flow record, and a window can close with a
million flows: rendering them one ``%``-format at a time in Python costs microseconds per
record and holds the GIL. Here every field becomes a column of text (Arrow's casts for
numbers, dictionary takes for strings, table lookups for IPv4 addresses), and one
element-wise join puts the field names between them. No Python per record.

This runs in the flows-producer process (pipeline/sinks/flows_process.py), whose memory is
mostly its imports: it needs no compiler (without numba and LLVM its peak at 1 M flows per
window went 370 → ~300 MB), and Arrow's join is as fast as the compiled loop it replaced.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Iterator, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from schemas.flow_record import FLOW_FIELDS
from schemas.frame import is_ipv4_mapped


@functools.cache
def _octet_pairs() -> pa.Array:
    """The text a.b of each of the 65 536 pairs of octets, indexed by a << 8 | b."""
    return pa.array([f"{i >> 8}.{i & 255}" for i in range(65_536)], pa.string())


def dotted_quads(raw: np.ndarray) -> pa.Array:
    """JSON-quoted dotted quads of IPv4-mapped addresses given as (n, 16) uint8 rows."""
    octets = raw[:, 12:16].astype(np.int32)
    pairs = _octet_pairs()
    high = pairs.take(octets[:, 0] << 8 | octets[:, 1])
    low = pairs.take(octets[:, 2] << 8 | octets[:, 3])
    return pc.binary_join_element_wise('"', high, ".", low, '"', "")


def join(literals: list[bytes], columns: list[pa.Array]) -> pa.Array:
    """Documents ``literals[0] + columns[0][i] + literals[1] + … + literals[-1]`` per row
    (``len(literals) == len(columns) + 1``), as a binary array."""
    assert len(literals) == len(columns) + 1
    parts: list[str | pa.Array] = []
    for literal, column in zip(literals, columns):
        parts += [literal.decode(), column]
    parts.append(literals[-1].decode())
    return pc.binary_join_element_wise(*parts, "").cast(pa.binary())


def json_batches(table: pa.Table, rows: int = 16_384) -> Iterator[tuple[pa.Array, pa.Array]]:
    """:func:`json_records` of ``rows`` records at a time: a million-flow window is never
    rendered all at once."""
    for start in range(0, table.num_rows, rows):
        yield json_records(table.slice(start, rows))


def json_records(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """(keys, JSON records) of a flow-record table (``FlowRecordBuilder.arrow``) as binary
    arrays; key = interface-id, field names as in the JSON Schema."""
    columns = []
    for f in FLOW_FIELDS:
        column = table.column(f.column).combine_chunks()
        if pa.types.is_dictionary(column.type):
            columns.append(_quoted(column.dictionary.to_pylist()).take(column.indices))
        elif pa.types.is_fixed_size_binary(column.type):
            raw = np.frombuffer(column.buffers()[1], np.uint8, count=16 * len(column), offset=16 * column.offset)
            columns.append(_ip_texts(raw.view("V16")))
        else:
            columns.append(pc.cast(column, pa.string()))
    literals = [(("{" if i == 0 else ",") + f'"{f.name}":').encode() for i, f in enumerate(FLOW_FIELDS)] + [b"}"]
    interface = table.column("interface_id").combine_chunks()
    keys = pa.array([e.encode() for e in interface.dictionary.to_pylist()], pa.binary()).take(interface.indices)
    return keys, join(literals, columns)


def _quoted(values: Sequence[str]) -> pa.Array:
    return pa.array([orjson.dumps(v).decode() for v in values], pa.string())


def _ip_texts(addr: np.ndarray) -> pa.Array:
    """JSON-quoted text of V16 addresses: IPv4-mapped as dotted quads (by table lookups),
    IPv6 as ``inet_ntop`` writes it (per address, IPv6 rows only)."""
    raw = addr.view(np.uint8).reshape(-1, 16)
    texts = dotted_quads(raw)
    v6 = np.flatnonzero(~is_ipv4_mapped(addr))
    if v6.size:
        full = np.array(texts.to_pylist(), dtype=object)
        full[v6] = ['"' + socket.inet_ntop(socket.AF_INET6, raw[i].tobytes()) + '"' for i in v6.tolist()]
        texts = pa.array(full.tolist(), pa.string())
    return texts
