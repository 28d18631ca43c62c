"""Broadcast storms: broadcast and multicast packets per second, per ENI or per subnet.

A window's broadcast/multicast packets (destinations as ``schemas/addresses.py`` defines
them: the limited broadcast, the ENI's subnet's directed broadcast, multicast ranges)
divided by the window length; a group at or over ``storm.packets_per_second`` (of the
ENI's scope, or the subnet's when ``storm.per`` is ``subnet``) is a storm: one alert per
ENI or subnet while it lasts.
"""

from __future__ import annotations

import numpy as np

from pipeline.detect.batch import DetectionContext, Finding, FlowBatch, address_text
from schemas import addresses

_LOW = 2**64 - 1


def _words(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 64-bit halves of (n, 16) uint8 addresses, as integers."""
    be = np.ascontiguousarray(raw).view(">u8").reshape(-1, 2)
    return be[:, 0].astype(np.uint64), be[:, 1].astype(np.uint64)


def _in_range(high: np.ndarray, low: np.ndarray, first: int, last: int) -> np.ndarray:
    fh, fl, lh, ll = (np.uint64(v) for v in (first >> 64, first & _LOW, last >> 64, last & _LOW))
    return ((high > fh) | ((high == fh) & (low >= fl))) & ((high < lh) | ((high == lh) & (low <= ll)))


def reaches_many_hosts(raw: np.ndarray, directed: np.ndarray) -> np.ndarray:
    """Which (n, 16) uint8 destinations are broadcast or multicast; ``directed`` (n, 2) holds
    the (high, low) words of each row's subnet directed broadcast, or zeros when it has none."""
    high, low = _words(raw)
    has_directed = (directed[:, 0] | directed[:, 1]) != 0
    hit = has_directed & (high == directed[:, 0]) & (low == directed[:, 1])
    for first, last in addresses.many_host_ranges():
        hit |= _in_range(high, low, first, last)
    return hit


class BroadcastStormDetector:
    def __init__(self, context: DetectionContext) -> None:
        self.context = context
        self._directed: list[tuple[int, int]] = []  # per ENI index

    def _directed_broadcasts(self) -> np.ndarray:
        ctx = self.context
        while len(self._directed) < len(ctx.eni_ids):
            cidr = ctx.subnet_cidr(ctx.subnet_id(len(self._directed)))
            address = addresses.directed_broadcast(str(cidr)) if cidr is not None else None
            value = addresses.stored(address) if address is not None else 0
            self._directed.append((value >> 64, value & _LOW))
        return np.array(self._directed, dtype=np.uint64).reshape(-1, 2)

    def observe(self, batch: FlowBatch) -> list[Finding]:
        c, ctx = batch.cols, self.context
        rows = np.flatnonzero(batch.traffic())
        eni = c["eni"][rows]
        many = reaches_many_hosts(batch.raw_addresses("dstaddr")[rows], self._directed_broadcasts()[eni])
        rows, eni = rows[many], eni[many]
        if rows.size == 0:
            return []
        per_subnet = np.array([ctx.eni(int(e)).storm.per == "subnet" for e in range(len(ctx.eni_ids))])
        subnets = sorted({ctx.subnet_id(i) for i in range(len(ctx.eni_ids))})
        group_of_eni = np.array(
            [len(ctx.eni_ids) + subnets.index(ctx.subnet_id(i)) if per_subnet[i] else i for i in range(len(ctx.eni_ids))]
        )
        window = c["window_start"][rows].astype(np.int64)
        keys = np.stack([window, group_of_eni[eni]])
        pairs, inverse = np.unique(keys, axis=1, return_inverse=True)
        inverse = inverse.reshape(-1)
        packets = np.bincount(inverse, weights=c["packets"][rows], minlength=pairs.shape[1])
        seconds = ctx.window_seconds
        findings = []
        for p in np.flatnonzero(packets > 0).tolist():
            start, group = int(pairs[0, p]), int(pairs[1, p])
            members = rows[inverse == p]
            first_eni = int(c["eni"][members[0]])
            if group < len(ctx.eni_ids):
                scope, interface_id, settings = ctx.eni_ids[group], ctx.eni_ids[group], ctx.eni(group).storm
            else:
                subnet = subnets[group - len(ctx.eni_ids)]
                scope, interface_id = subnet, "-"
                settings = ctx.settings.for_scope(ctx.vpc_id(first_eni), subnet).storm
            pps = packets[p] / seconds
            if not settings.enabled or pps < settings.packets_per_second:
                continue
            sources = c["srcaddr"][members]
            per_source = np.unique(sources, return_counts=False)
            top = members[np.argmax(c["packets"][members])]
            findings.append(
                Finding(
                    detector="broadcast_storm",
                    key=scope,
                    severity="high",
                    first_seen=start,
                    last_seen=start + seconds,
                    summary=f"{pps:.0f} broadcast/multicast packets/s on {scope} (limit {settings.packets_per_second:.0f})",
                    vpc_id=ctx.vpc_id(first_eni),
                    interface_id=interface_id,
                    source=address_text(c["srcaddr"][top]),
                    target="broadcast/multicast",
                    counts={
                        "packets_per_second": round(float(pps), 3),
                        "packets": int(packets[p]),
                        "sources": int(per_source.size),
                        "threshold": float(settings.packets_per_second),
                    },
                    samples=batch.samples(members),
                )
            )
        return findings
