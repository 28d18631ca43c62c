"""Threat IPs: flows to or from an address on a threat list (FireHOL, Spamhaus DROP).

Both addresses of every flow are matched against the lists at once
(:class:`~pipeline.detect.threat_lists.ThreatLists`, longest prefix wins); one alert per
listed address while it keeps talking to the network. Severity ``high`` when any of its
flows was accepted (it got in, or we reached it), ``low`` when all were rejected. A flow
between two listed addresses counts for its source.
"""

from __future__ import annotations

import numpy as np

from pipeline.detect.batch import DetectionContext, Finding, FlowBatch, address_text
from pipeline.detect.threat_lists import ThreatLists


class ThreatIpDetector:
    def __init__(self, context: DetectionContext, lists: ThreatLists) -> None:
        self.context = context
        self.lists = lists

    def observe(self, batch: FlowBatch) -> list[Finding]:
        if not len(self.lists):
            return []
        c, ctx = batch.cols, self.context
        rows = np.flatnonzero(batch.traffic())
        n = rows.size
        # One match call for both sides: one snapshot of the lists, even across a reload.
        matches = self.lists.match(np.concatenate([batch.raw_addresses("srcaddr")[rows], batch.raw_addresses("dstaddr")[rows]]))
        src_entry, dst_entry = matches.entry[:n], matches.entry[n:]
        from_source = src_entry >= 0
        hit = from_source | (dst_entry >= 0)
        rows = rows[hit]
        listed = np.where(from_source[hit], c["srcaddr"][rows], c["dstaddr"][rows])
        entry = np.where(from_source[hit], src_entry[hit], dst_entry[hit])
        if rows.size == 0:
            return []
        accepted = batch.accepted()
        addresses, inverse = np.unique(listed, return_inverse=True)
        inverse = inverse.reshape(-1)
        findings = []
        for a in range(addresses.size):
            members = rows[inverse == a]
            text = address_text(addresses[a])
            matched = matches.describe(int(entry[inverse == a][0]))
            enis = np.unique(c["eni"][members])
            ok = int(accepted[members].sum())
            label = f" {matched.label}" if matched.label else ""
            findings.append(
                Finding(
                    detector="threat_ip",
                    key=text,
                    severity="high" if ok else "low",
                    first_seen=int(c["window_start"][members].min()),
                    last_seen=int(c["window_start"][members].max()) + ctx.window_seconds,
                    summary=f"{text} (on {matched.list_name}: {matched.cidr}{label}) in {members.size} flows, {ok} accepted",
                    vpc_id=ctx.vpc_id(int(enis[0])),
                    interface_id=ctx.eni_ids[int(enis[0])] if enis.size == 1 else "-",
                    source=text,
                    target=f"{matched.list_name}:{matched.cidr}",
                    counts={
                        "flows": int(members.size),
                        "accepted": ok,
                        "rejected": int(members.size) - ok,
                        "packets": int(c["packets"][members].sum()),
                        "bytes": int(c["bytes"][members].sum()),
                        "enis": int(enis.size),
                    },
                    samples=batch.samples(members),
                )
            )
        return findings
