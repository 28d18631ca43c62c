"""Flow records as JSON text, rendered by compiled loops over whole columns.

The flows topic carries one JSON document per flow record, and a window can close with a
million flows: rendering them one ``%``-format at a time in Python costs microseconds per
record and holds the GIL the consumer needs. Here every field becomes a column of text
(Arrow's casts for numbers, dictionary takes for strings, a compiled loop for IPv4
addresses), and one compiled pass joins the columns and the field names into documents.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa


@numba.njit(cache=True, nogil=True)
def _dotted_quads(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """'"a.b.c.d"' of the last four bytes of each 16-byte row: (offsets, data)."""
    n = raw.shape[0]
    data = np.empty(n * 17, np.uint8)
    offsets = np.empty(n + 1, np.int32)
    at = 0
    for i in range(n):
        offsets[i] = at
        data[at] = 34  # "
        at += 1
        for k in range(4):
            v = raw[i, 12 + k]
            if v >= 100:
                data[at] = 48 + v // 100
                at += 1
            if v >= 10:
                data[at] = 48 + (v // 10) % 10
                at += 1
            data[at] = 48 + v % 10
            at += 1
            data[at] = 46 if k < 3 else 34  # . or the closing "
            at += 1
    offsets[n] = at
    return offsets, data[:at]


def dotted_quads(raw: np.ndarray) -> pa.Array:
    """JSON-quoted dotted quads of IPv4-mapped addresses given as (n, 16) uint8 rows."""
    offsets, data = _dotted_quads(np.ascontiguousarray(raw))
    return pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))


@numba.njit(cache=True, nogil=True)
def _join(starts: np.ndarray, data: np.ndarray, literal_offsets: np.ndarray, literals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row i = literal 0, column 0 of row i, literal 1, column 1, …, last literal.

    ``starts`` is (columns, rows + 1): where each column's value of each row begins in
    ``data`` (all columns' bytes concatenated).
    """
    columns, rows = starts.shape[0], starts.shape[1] - 1
    total = (literal_offsets[-1] - literal_offsets[0]) * rows
    for c in range(columns):
        total += starts[c, rows] - starts[c, 0]
    out = np.empty(total, np.uint8)
    offsets = np.empty(rows + 1, np.int64)
    at = 0
    for i in range(rows):
        offsets[i] = at
        for c in range(columns + 1):
            for b in range(literal_offsets[c], literal_offsets[c + 1]):
                out[at] = literals[b]
                at += 1
            if c < columns:
                for b in range(starts[c, i], starts[c, i + 1]):
                    out[at] = data[b]
                    at += 1
    offsets[rows] = at
    return offsets, out


def join(literals: list[bytes], columns: list[pa.Array]) -> pa.Array:
    """Documents ``literals[0] + columns[0][i] + literals[1] + … + literals[-1]`` per row
    (``len(literals) == len(columns) + 1``), as a large binary array."""
    assert len(literals) == len(columns) + 1
    rows = len(columns[0])
    parts, starts, base = [], np.empty((len(columns), rows + 1), np.int64), 0
    for c, column in enumerate(columns):
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        offsets_buffer, data_buffer = column.buffers()[1:3]
        offsets = np.frombuffer(offsets_buffer, np.int32, count=rows + 1, offset=column.offset * 4)
        chunk = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.empty(0, np.uint8)
        parts.append(chunk[offsets[0] : offsets[-1]])
        starts[c] = offsets.astype(np.int64) - offsets[0] + base
        base += int(offsets[-1] - offsets[0])
    data = np.concatenate(parts) if parts else np.empty(0, np.uint8)
    literal_offsets = np.cumsum([0] + [len(x) for x in literals]).astype(np.int64)
    offsets, out = _join(starts, data, literal_offsets, np.frombuffer(b"".join(literals), np.uint8))
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(out)])
