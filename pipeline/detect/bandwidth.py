"""Bandwidth overuse: an ENI's bits per second over its limit, or over k × its own p95.

Per (window, ENI) the bits per second of the window (bytes of both directions × 8 ÷
window length; a NODATA window counts 0). It is overuse when it exceeds the ENI's
``bandwidth.limit_bps``, or — once the ENI has ``baseline_min_windows`` windows of history —
``baseline_factor`` × the p95 of its last ``baseline_windows`` windows (and at least
``baseline_min_bps``). The history is this worker's memory: it starts empty after a restart.
A window whose packets were partly lost (SKIPDATA) or late is left out of both.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from pipeline.detect.batch import DetectionContext, Finding, FlowBatch
from schemas import flow_record

_COUNTED = [flow_record.LOG_STATUSES.index(s) for s in ("OK", "NODATA")]
_SKIPPED = flow_record.LOG_STATUSES.index("SKIPDATA")
_ENI_BITS = 24
_ENI_MASK = (1 << _ENI_BITS) - 1


def _pair_keys(c: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """One int64 per (window start, ENI index) of ``rows`` (indices or a mask): sorting them
    sorts by window, then ENI."""
    return (c["window_start"][rows].astype(np.int64) << _ENI_BITS) | c["eni"][rows].astype(np.int64)


class BandwidthOveruseDetector:
    def __init__(self, context: DetectionContext) -> None:
        self.context = context
        self._history: dict[int, deque[float]] = {}

    def baseline(self, eni_index: int) -> float | None:
        """The ENI's p95 bits/s over its history, None while the history is too short."""
        history = self._history.get(eni_index)
        settings = self.context.eni(eni_index).bandwidth
        if history is None or len(history) < settings.baseline_min_windows:
            return None
        return float(np.percentile(np.fromiter(history, float), 95))

    def observe(self, batch: FlowBatch) -> list[Finding]:
        c, ctx = batch.cols, self.context
        status = c["log_status"]
        rows = np.flatnonzero(np.isin(status, _COUNTED))
        lost = set(np.unique(_pair_keys(c, status == _SKIPPED)).tolist())
        pairs, inverse = np.unique(_pair_keys(c, rows), return_inverse=True)  # sorted: windows in time order
        total = np.bincount(inverse, weights=c["bytes"][rows], minlength=pairs.size)
        seconds = ctx.window_seconds
        findings = []
        for p, key in enumerate(pairs.tolist()):
            start, eni = key >> _ENI_BITS, key & _ENI_MASK
            if key in lost:
                continue
            settings = ctx.eni(eni).bandwidth
            bps = total[p] * 8 / seconds
            p95 = self.baseline(eni)
            history = self._history.setdefault(eni, deque(maxlen=settings.baseline_windows))
            history.append(bps)
            over_limit = settings.limit_bps is not None and bps > settings.limit_bps
            over_baseline = p95 is not None and bps > settings.baseline_factor * p95 and bps >= settings.baseline_min_bps
            if not settings.enabled or not (over_limit or over_baseline):
                continue
            interface_id = ctx.eni_ids[eni]
            reason = (
                f"over its limit of {settings.limit_bps:,.0f} bit/s"
                if over_limit
                else f"over {settings.baseline_factor:g} × its p95 of {p95:,.0f} bit/s"
            )
            counts = {"bps": round(bps, 3), "bytes": int(total[p])}
            if settings.limit_bps is not None:
                counts["limit_bps"] = float(settings.limit_bps)
            if p95 is not None:
                counts["p95_bps"] = round(p95, 3)
            members = rows[inverse == p]
            findings.append(
                Finding(
                    detector="bandwidth_overuse",
                    key=interface_id,
                    severity="medium" if over_limit else "low",
                    first_seen=start,
                    last_seen=start + seconds,
                    summary=f"{interface_id} carried {bps:,.0f} bit/s, {reason}",
                    vpc_id=ctx.vpc_id(eni),
                    interface_id=interface_id,
                    source=interface_id,
                    target="limit" if over_limit else "baseline",
                    counts=counts,
                    samples=batch.samples(members[c["packets"][members] > 0]),
                )
            )
        return findings
