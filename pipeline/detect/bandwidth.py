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
        skipped = np.unique(np.stack([c["window_start"][status == _SKIPPED], c["eni"][status == _SKIPPED]]), axis=1)
        keys = np.stack([c["window_start"][rows].astype(np.int64), c["eni"][rows].astype(np.int64)])
        pairs, inverse = np.unique(keys, axis=1, return_inverse=True)
        inverse = inverse.reshape(-1)
        total = np.bincount(inverse, weights=c["bytes"][rows], minlength=pairs.shape[1])
        lost = {(int(w), int(e)) for w, e in skipped.T}
        seconds = ctx.window_seconds
        findings = []
        for p in np.lexsort((pairs[1], pairs[0])).tolist():  # windows in time order
            start, eni = int(pairs[0, p]), int(pairs[1, p])
            if (start, eni) in lost:
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
