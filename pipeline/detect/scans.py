"""Scans: one source reaching many hosts on one port, or many ports on one host.

In the spirit of Zeek's scan policy, per VPC and over a sliding period (default 5 min):

* flows are turned into **contacts** — (client, server, protocol, service port) — so a
  request and its reply are one contact. The client is the sender of a SYN without ACK or
  of a rejected flow; otherwise the side with the higher port (the ephemeral one).
* a contact **failed** when it was rejected, when the client's TCP flow is SYN-only, or when
  the server answered with a RST; it was **answered** when the server replied (TCP ACK
  without RST, any UDP reply) or the client's TCP flow carries an ACK (it saw the SYN-ACK).
  UDP has no handshake to judge: an unanswered UDP contact is not counted as failed.
* a contact scores ``failed_weight`` (default 1) when it failed and was never answered,
  else ``answered_weight`` (default 0, as in Zeek: a NAT gateway or a proxy reaches
  thousands of servers a minute, all answered); a sweep of closed ports or dark addresses
  counts fully. With answered contacts weighing nothing, only flows of contacts that
  failed are kept — a small share of a busy window.
* an **address scan** is a (client, protocol, port) whose contacts to distinct servers
  score ``scan.hosts`` (25) or more; a **port scan** is a (client, server) whose contacts
  on distinct ports score ``scan.ports`` (15) or more.

Thresholds are those of the VPC the flows were seen in. TCP and UDP only. The state is
the distinct contacts of the period, in numpy arrays, merged once per batch.
"""

from __future__ import annotations

import numpy as np

from pipeline.detect.batch import ACK, RST, SYN, TCP, UDP, DetectionContext, Finding, FlowBatch, address_text, stable_hash

_PROTO_NAMES = {TCP: "tcp", UDP: "udp"}
_HIGH = 4.0  # a scan scoring this many times its threshold is "high" severity

# The per-contact state, one array each, aligned.
_FIELDS = ("contact", "address_group", "port_group", "client", "server", "service", "vpc", "answered", "failed", "first", "last")


class ScanDetector:
    """Address and port scans over a sliding period (see the module docstring)."""

    def __init__(self, context: DetectionContext) -> None:
        self.context = context
        self._state: dict[str, np.ndarray] | None = None

    @property
    def contacts(self) -> int:
        return 0 if self._state is None else len(self._state["contact"])

    def observe(self, batch: FlowBatch) -> list[Finding]:
        c = batch.cols
        if c["window_start"].size:
            self._forget_before(int(c["window_start"].max()) + self.context.window_seconds)
        rows = np.flatnonzero(batch.traffic() & np.isin(c["protocol"], (TCP, UDP)))
        facts = self._flow_facts(batch, rows)
        if not any(self.context.vpc(v).scan.answered_weight for v in self.context.vpc_ids):
            # Answered contacts score nothing: only contacts with a failed flow, and those
            # already remembered (a later answer cancels a failure), can make a scan. At a
            # million flows per window that is a small share of the rows.
            remembered = self._state["contact"] if self._state is not None else np.empty(0, np.uint64)
            keep = np.isin(facts["contact"], np.concatenate([facts["contact"][facts["failed"]], remembered]))
            facts = {k: v[keep] for k, v in facts.items()}
        rows = facts.pop("row")
        if rows.size == 0:
            return []
        new, row_groups = self._contacts(facts)
        self._merge(new)
        state = self._state
        assert state is not None
        touched = np.isin(state["contact"], new["contact"])
        findings = self._groups(batch, rows, row_groups[0], state, touched, "address_scan")
        findings += self._groups(batch, rows, row_groups[1], state, touched, "port_scan")
        return findings

    def _forget_before(self, window_end: int) -> None:
        """Drop contacts last seen a whole period before ``window_end`` (event time)."""
        state = self._state
        if state is None:
            return
        period = np.array([self.context.vpc(v).scan.period_seconds for v in self.context.vpc_ids])
        keep = state["last"] > window_end - period[state["vpc"]]
        self._state = {k: v[keep] for k, v in state.items()}

    def _flow_facts(self, batch: FlowBatch, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Per flow of ``rows``: its contact's parts and id, and whether it failed or was answered."""
        c = batch.cols
        proto = c["protocol"][rows].astype(np.uint64)
        tcp = proto == TCP
        sport, dport = c["srcport"][rows], c["dstport"][rows]
        flags = c["tcp_flags"][rows]
        rejected = ~batch.accepted()[rows]
        syn_only = tcp & ((flags & (SYN | ACK)) == SYN)
        from_client = syn_only | rejected | (sport >= dport)
        src, dst = c["srcaddr"][rows], c["dstaddr"][rows]
        client = np.where(from_client, src, dst)
        server = np.where(from_client, dst, src)
        service = np.where(from_client, dport, sport).astype(np.uint64)
        vpc = self.context.vpc_codes()[c["eni"][rows]].astype(np.uint64)
        reset = (flags & RST) != 0
        failed = rejected | syn_only | (tcp & ~from_client & reset)
        what = (vpc << np.uint64(24)) | (proto << np.uint64(16)) | service
        return {
            "row": rows,
            "client": client,
            "server": server,
            "proto": proto,
            "service": service,
            "vpc": vpc,
            "what": what,
            "contact": stable_hash(client, server, what),
            "failed": failed,
            "answered": ~failed & ((tcp & ((flags & ACK) != 0) & ~reset) | (~tcp & ~from_client)),
            "start": c["window_start"][rows].astype(np.int64),
        }

    def _contacts(self, f: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The flows as contacts, one row per distinct contact; and the address and port
        group of each flow."""
        client, server, proto, vpc = f["client"], f["server"], f["proto"], f["vpc"]
        row_groups = (stable_hash(client, f["what"]), stable_hash(client, server, (vpc << np.uint64(8)) | proto))
        unique, first_row, inverse = np.unique(f["contact"], return_index=True, return_inverse=True)
        k = unique.size

        def any_of(flag: np.ndarray) -> np.ndarray:
            return np.bincount(inverse, weights=flag, minlength=k) > 0

        first = np.full(k, np.iinfo(np.int64).max)
        np.minimum.at(first, inverse, f["start"])
        last = np.zeros(k, np.int64)
        np.maximum.at(last, inverse, f["start"] + self.context.window_seconds)
        return {
            "contact": unique,
            "address_group": row_groups[0][first_row],
            "port_group": row_groups[1][first_row],
            "client": client[first_row],
            "server": server[first_row],
            "service": (f["service"] | (proto << np.uint64(16)))[first_row],
            "vpc": vpc[first_row].astype(np.int64),
            "answered": any_of(f["answered"]),
            "failed": any_of(f["failed"]),
            "first": first,
            "last": last,
        }, row_groups

    def _merge(self, new: dict[str, np.ndarray]) -> None:
        if self._state is None:
            self._state = new
            return
        both = {k: np.concatenate([self._state[k], new[k]]) for k in _FIELDS}
        unique, first_row, inverse = np.unique(both["contact"], return_index=True, return_inverse=True)
        k = unique.size
        merged = {name: both[name][first_row] for name in _FIELDS}
        for flag in ("answered", "failed"):
            merged[flag] = np.bincount(inverse, weights=both[flag], minlength=k) > 0
        merged["first"] = np.full(k, np.iinfo(np.int64).max)
        np.minimum.at(merged["first"], inverse, both["first"])
        merged["last"] = np.zeros(k, np.int64)
        np.maximum.at(merged["last"], inverse, both["last"])
        self._state = merged

    def _groups(
        self,
        batch: FlowBatch,
        rows: np.ndarray,
        row_group: np.ndarray,
        state: dict[str, np.ndarray],
        touched: np.ndarray,
        detector: str,
    ) -> list[Finding]:
        address = detector == "address_scan"
        settings = [self.context.vpc(v).scan for v in self.context.vpc_ids]
        enabled = np.array([s.enabled for s in settings])
        threshold = np.array([s.hosts if address else s.ports for s in settings])
        failed_weight = np.array([s.failed_weight for s in settings])
        answered_weight = np.array([s.answered_weight for s in settings])
        counts_full = state["failed"] & ~state["answered"]
        weight = np.where(counts_full, failed_weight[state["vpc"]], answered_weight[state["vpc"]])
        group = state["address_group" if address else "port_group"]
        groups, first_row, inverse = np.unique(group, return_index=True, return_inverse=True)
        score = np.bincount(inverse, weights=weight, minlength=groups.size)
        vpc = state["vpc"][first_row]
        hot = enabled[vpc] & (score >= threshold[vpc]) & (np.bincount(inverse, weights=touched, minlength=groups.size) > 0)
        findings = []
        for g in np.flatnonzero(hot).tolist():
            members = inverse == g
            at = first_row[g]
            client = address_text(state["client"][at])
            proto, service = int(state["service"][at]) >> 16, int(state["service"][at]) & 0xFFFF
            vpc_id = self.context.vpc_ids[int(vpc[g])]
            evidence = rows[row_group == groups[g]]
            enis = np.unique(batch.cols["eni"][evidence])
            if address:
                target = f"{_PROTO_NAMES[proto]}/{service}"
                reached = "hosts"
                key = f"{vpc_id}/{client}/{target}"
            else:
                target = address_text(state["server"][at])
                reached = "ports"
                key = f"{vpc_id}/{client}/{target}/{_PROTO_NAMES[proto]}"
            distinct = int(members.sum())
            failed = int((members & counts_full).sum())
            findings.append(
                Finding(
                    detector=detector,
                    key=key,
                    severity="high" if score[g] >= _HIGH * threshold[vpc[g]] else "medium",
                    first_seen=int(state["first"][members].min()),
                    last_seen=int(state["last"][members].max()),
                    summary=(
                        f"{client} reached {distinct} {reached} on {target} ({failed} failed)"
                        if address
                        else f"{client} reached {distinct} {_PROTO_NAMES[proto]} ports on {target} ({failed} failed)"
                    ),
                    vpc_id=vpc_id,
                    interface_id=self.context.eni_ids[int(enis[0])] if enis.size == 1 else "-",
                    source=client,
                    target=target,
                    counts={
                        reached: distinct,
                        "failed": failed,
                        "answered": int((members & state["answered"]).sum()),
                        "score": round(float(score[g]), 3),
                        "threshold": float(threshold[vpc[g]]),
                        "flows": int(evidence.size),
                        "packets": int(batch.cols["packets"][evidence].sum()),
                    },
                    samples=batch.samples(evidence),
                )
            )
        return findings
