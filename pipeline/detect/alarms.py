"""AlertBook: findings in, alerts out — one alert per incident, updated, then closed.

A finding whose (detector, key) has an open alert updates it: same ``alert-id``,
``updates`` + 1, ``last-seen`` and the evidence replaced by the newest. An open alert
not raised again for ``detect.quiet_seconds`` of event time (window ends, not the wall
clock, so a replay closes it at the same point) is sent once more with ``state`` closed
and forgotten; the next finding for its key opens a new alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.detect.batch import Finding
from schemas.alerts import ALERT_VERSION, alert_id


@dataclass(slots=True)
class _Open:
    id: str
    first_seen: int
    updates: int
    record: dict[str, Any]


class AlertBook:
    def __init__(self, quiet_seconds: float) -> None:
        self.quiet_seconds = quiet_seconds
        self._open: dict[tuple[str, str], _Open] = {}
        self.raised = 0  # alerts opened
        self.updated = 0
        self.closed = 0

    @property
    def open_alerts(self) -> int:
        return len(self._open)

    def update(self, findings: list[Finding], event_time: int, raised_at: float) -> list[dict[str, Any]]:
        """Alert records for ``findings`` (one per incident), then closes of quiet incidents.

        ``event_time`` is the end of the newest window the batch covered (Unix seconds).
        """
        latest: dict[tuple[str, str], Finding] = {}
        for f in findings:
            earlier = latest.get((f.detector, f.key))
            if earlier is not None:
                f.first_seen = min(f.first_seen, earlier.first_seen)
            latest[(f.detector, f.key)] = f
        out = []
        for key, f in latest.items():
            current = self._open.get(key)
            if current is None:
                current = _Open(alert_id(f.detector, f.key, f.first_seen), f.first_seen, 0, {})
                self._open[key] = current
                self.raised += 1
            else:
                current.updates += 1
                self.updated += 1
            current.record = _record(current, f, raised_at)
            out.append(current.record)
        for key, current in list(self._open.items()):
            if current.record["last-seen"] + self.quiet_seconds <= event_time:
                del self._open[key]
                self.closed += 1
                out.append({**current.record, "state": "closed", "updates": current.updates + 1, "raised-at": raised_at})
        return out


def _record(current: _Open, f: Finding, raised_at: float) -> dict[str, Any]:
    return {
        "version": ALERT_VERSION,
        "alert-id": current.id,
        "detector": f.detector,
        "severity": f.severity,
        "state": "open",
        "updates": current.updates,
        "first-seen": min(current.first_seen, f.first_seen),
        "last-seen": max(f.last_seen, current.record.get("last-seen", 0)),
        "raised-at": round(raised_at, 3),
        "vpc-id": f.vpc_id,
        "interface-id": f.interface_id,
        "source": f.source,
        "target": f.target,
        "summary": f.summary,
        "counts": {k: float(v) for k, v in f.counts.items()},
        "sample-flows": f.samples,
    }
