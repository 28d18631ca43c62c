"""Making result sets: snapshots of live flows (optionally with their raw frames) and rewinds.

Both claim the name first, write rows, and describe the result set last: a result set
listed in ``result_sets`` is complete. A cancelled or failed one is deleted again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from flowlogs.settings import Settings
from pipeline.frame_range import FrameRange, RangeProgress
from pipeline.results import ResultSetStore
from pipeline.rewind import Rewind, scope_enis
from schemas import frame, saved
from schemas.frame import Frame
from schemas.inventory import Inventory, load_inventory

_NS = 1_000_000_000
PACKETS_PER_INSERT = 1 << 20


def packets_table(name: str, frames: list[Frame]) -> pa.Table:
    """The packets of ``frames`` as rows of saved_packets (ENI by id)."""
    n = sum(f.packets.size for f in frames)
    ids = sorted({e for f in frames for e in f.eni_ids})
    code = {e: i for i, e in enumerate(ids)}
    eni = np.concatenate([np.array([code[e] for e in f.eni_ids], np.int32)[f.packets.eni] for f in frames])
    arrays: dict[str, pa.Array] = {
        "result_set": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [name]),
    }
    for column in frame.COLUMNS:
        values = np.concatenate([getattr(f.packets, column.name) for f in frames])
        if column.name == "eni":
            arrays["interface_id"] = pa.DictionaryArray.from_arrays(pa.array(eni), ids)
        elif column.dtype == "V16":
            raw = np.ascontiguousarray(values).tobytes()
            arrays[column.name] = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(raw)])
        else:
            arrays[column.name] = pa.array(values)
    return pa.table({c: arrays[c] for c in ("result_set", *(c for c, _, _ in saved.PACKET_COLUMNS))})


def _made(results: ResultSetStore, name: str, make: Callable[[], dict[str, Any]], cancelled: Callable[[], bool]) -> dict[str, Any] | None:
    results.begin(name)
    try:
        description = make()
    except BaseException:
        results.delete(name)
        raise
    if cancelled():
        results.delete(name)
        return None
    return results.describe({"name": name, **description})


def create_snapshot(
    settings: Settings,
    results: ResultSetStore,
    name: str,
    since: int,
    until: int,
    *,
    scope: str = "all",
    with_frames: bool = False,
    progress: RangeProgress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> dict[str, Any] | None:
    """Freeze the live flows of windows starting in ``[since, until)`` (and, ``with_frames``,
    the raw packet metadata captured then) as ``name``; its description, or None if cancelled."""

    def make() -> dict[str, Any]:
        results.snapshot(name, since, until, scope)
        if with_frames:
            inventory = load_inventory(settings.worker.inventory) if settings.worker.inventory else Inventory()
            frames_range = FrameRange(settings, since * _NS, until * _NS, scope_enis(scope, inventory))
            if progress is not None:
                frames_range.progress = progress
            pending: list[Frame] = []
            for _, kept in frames_range.frames(cancelled=cancelled):
                pending.append(kept)
                if sum(f.packets.size for f in pending) >= PACKETS_PER_INSERT:
                    results.insert(name, saved.PACKETS_TABLE, packets_table(name, pending))
                    pending = []
            if pending:
                results.insert(name, saved.PACKETS_TABLE, packets_table(name, pending))
        return {
            "kind": "snapshot", "from": since, "to": until, "scope": scope,
            "window_seconds": settings.worker.window_seconds, "rules": "-", "with_frames": int(with_frames),
        }

    return _made(results, name, make, cancelled)


def create_rewind(
    settings: Settings,
    results: ResultSetStore,
    name: str,
    since: int,
    until: int,
    *,
    scope: str = "all",
    window_seconds: int | None = None,
    rules_file: Path | None = None,
    progress: RangeProgress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> dict[str, Any] | None:
    """Aggregate the frames of ``[since, until)`` again into ``name``; its description, or None if cancelled."""
    rewind = Rewind(settings, name, since, until, scope=scope, window_seconds=window_seconds, rules_file=rules_file)
    if progress is not None:
        rewind.range.progress = progress

    def make() -> dict[str, Any]:
        summary = rewind.run(lambda table: results.insert(name, saved.FLOWS_TABLE, table), cancelled)
        return {
            "kind": "rewind", "from": since, "to": until, "scope": scope,
            "window_seconds": rewind.window_ns // _NS, "rules": summary.rules, "with_frames": 0,
        }

    return _made(results, name, make, cancelled)
