"""Detectors: every detector on each batch of flow records, findings → alerts.

Detection state (scan contacts, baselines, open alerts) is this worker's memory, built
from the partitions it consumes: with several workers, each sees the flows of its own
partitions (an ENI's flows stay in one partition), so per-ENI detectors see everything of
their ENI while a scan spread over ENIs owned by different workers is judged per worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from flowlogs.settings import Settings
from pipeline.detect.alarms import AlertBook
from pipeline.detect.bandwidth import BandwidthOveruseDetector
from pipeline.detect.batch import DetectionContext, Finding, FlowBatch
from pipeline.detect.scans import ScanDetector
from pipeline.detect.storms import BroadcastStormDetector
from pipeline.detect.threat_ips import ThreatIpDetector
from pipeline.detect.threat_lists import ThreatLists
from pipeline.detect.uncommon import UncommonProtocolDetector, parse_allow
from schemas.inventory import Inventory

log = logging.getLogger(__name__)

# Columns detectors read (FlowRecordBuilder.columns makes them).
COLUMNS = ("eni", "srcaddr", "dstaddr", "srcport", "dstport", "protocol", "packets", "bytes",
           "window_start", "action", "log_status", "tcp_flags", "flow_direction")


class Detectors:
    def __init__(self, settings: Settings, inventory: Inventory, eni_ids: list[str]) -> None:
        cfg = settings.detect
        parse_allow(cfg.uncommon.allow)  # a bad allowlist fails at start
        for scope in cfg.overrides:
            parse_allow(cfg.for_scope(scope).uncommon.allow)
        self.enabled = cfg.enabled
        self.context = DetectionContext(cfg, inventory, eni_ids, settings.worker.window_seconds)
        self.threat_lists = ThreatLists(cfg.threat_ip.lists)
        self.threat_lists.reload_if_changed()
        self.scans = ScanDetector(self.context, cfg.max_scan_contacts)
        self._detectors: list[Any] = [self.scans]
        if cfg.threat_ip.enabled:
            self._detectors.append(ThreatIpDetector(self.context, self.threat_lists))
        self._detectors += [
            UncommonProtocolDetector(self.context),
            BroadcastStormDetector(self.context),
            BandwidthOveruseDetector(self.context),
        ]
        self.book = AlertBook(cfg.quiet_seconds)
        self._reload_every = cfg.threat_ip.reload_seconds
        self._reloaded_at = time.monotonic()
        self.seconds = 0.0  # time spent detecting

    def observe(self, closes: list[Mapping[str, np.ndarray]]) -> list[dict[str, Any]]:
        """Alert records raised by the flow records of ``closes`` (columns of each close)."""
        if not self.enabled or not closes:
            return []
        started = time.perf_counter()
        # One close (the usual batch at a million flows a window) is used as it is, not copied.
        cols = {name: closes[0][name] if len(closes) == 1 else np.concatenate([c[name] for c in closes]) for name in COLUMNS}
        if cols["eni"].size == 0:
            return []
        batch = FlowBatch(cols, self.context)
        findings: list[Finding] = []
        for detector in self._detectors:
            findings += detector.observe(batch)
        event_time = int(cols["window_start"].max()) + self.context.window_seconds
        alerts = self.book.update(findings, event_time, time.time())
        self.seconds += time.perf_counter() - started
        return alerts

    def reload_threat_lists_when_due(self) -> bool:
        """Re-read changed threat-list files every ``threat_ip.reload_seconds``; True if the lists changed."""
        if time.monotonic() - self._reloaded_at < self._reload_every:
            return False
        self._reloaded_at = time.monotonic()
        changed = self.threat_lists.reload_if_changed()
        if changed:
            log.info("threat lists reloaded (version %d): %s", self.threat_lists.version, ", ".join(self.threat_lists.names))
        return changed

    def snapshot(self) -> dict[str, Any]:
        return {
            "alerts_raised": self.book.raised,
            "alerts_updated": self.book.updated,
            "alerts_closed": self.book.closed,
            "alerts_open": self.book.open_alerts,
            "scan_contacts": self.scans.contacts,
            "scan_contacts_evicted": self.scans.evicted,
            "threat_lists_version": self.threat_lists.version,
            "detect_seconds": round(self.seconds, 3),
        }
