"""Vectorised reads of big-endian header fields: one value per packet, from positions in a buffer.

Positions are clipped into the buffer: a damaged length may point anywhere, and whatever
is read there is discarded by the caller's bounds checks.
"""

from __future__ import annotations

import numpy as np


def _clip(data: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    return np.clip(at, 0, data.size - width)


def u8(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    return data[_clip(data, at, 1)].astype(np.int64)


def u16(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    at = _clip(data, at, 2)
    return (data[at].astype(np.int64) << 8) | data[at + 1]


def u32(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    return (u16(data, at) << 16) | u16(data, at + 2)
