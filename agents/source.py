"""What every capture source produces, and how its output is cut into per-ENI frames."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from schemas import frame


@dataclass(frozen=True, slots=True)
class PacketBatch:
    """Packets from a source; ``packets.eni`` indexes ``eni_ids``."""

    eni_ids: tuple[str, ...]
    packets: frame.Packets


def per_eni_slices(batch: PacketBatch, max_packets: int) -> Iterator[tuple[str, frame.Packets]]:
    """Split a batch into runs of one ENI's packets, at most ``max_packets`` each.

    Frames are keyed by ENI, so each frame carries one ENI (its ENI table has one entry and
    its ``eni`` column is all zero). Packet order within an ENI is kept.
    """
    eni = batch.packets.eni
    order = np.argsort(eni, kind="stable")
    sorted_eni = eni[order]
    bounds = np.flatnonzero(np.diff(sorted_eni)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(order)]))
    columns = [np.asarray(col)[order] for col in batch.packets]
    for start, end in zip(starts.tolist(), ends.tolist()):
        eni_id = batch.eni_ids[int(sorted_eni[start])]
        for lo in range(start, end, max_packets):
            hi = min(lo + max_packets, end)
            cols = [c[lo:hi] for c in columns]
            cols[frame.Packets._fields.index("eni")] = np.zeros(hi - lo, dtype=np.uint16)
            yield eni_id, frame.Packets(*cols)
