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
the distinct contacts of the period, sorted by contact id, and per address group and per
port group a running tally of its contacts (how many, how many failed, how many answered,
first and last seen), sorted by group. A batch is merged in by binary search and its
changes are applied to the tallies as deltas, as are the contacts forgotten, so the work
per batch follows the batch, not the state: no sort of the state, ever. A group's first
seen is that of its earliest contact since the group last had none. The state holds at
most ``detect.max_scan_contacts`` contacts (34 bytes each, plus up to 64 bytes of
tallies); beyond, those seen longest ago are forgotten first (counted in ``evicted``; a
warning says so), like the memcap of Snort's port-scan tracker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from pipeline.detect.batch import ACK, RST, SYN, TCP, UDP, DetectionContext, Finding, FlowBatch, address_text, stable_hash

log = logging.getLogger(__name__)

_PROTO_NAMES = {TCP: "tcp", UDP: "udp"}
_HIGH = 4.0  # a scan scoring this many times its threshold is "high" severity
_EVICTION_WARNING_SECONDS = 60.0

# The per-contact state, one array each, aligned, sorted by contact.
_STATE_TYPES = {
    "contact": np.uint64, "address_group": np.uint64, "port_group": np.uint64, "vpc": np.int32,
    "answered": np.bool_, "failed": np.bool_, "last": np.uint32,  # times: Unix seconds
}
_GROUP_OF = {"address_scan": "address_group", "port_scan": "port_group"}
_NEVER = np.iinfo(np.int64).max


def _member(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` found in ``sorted_values`` (binary search: the cost follows ``values``)."""
    return _found(sorted_values, values, np.searchsorted(sorted_values, values))


def _found(sorted_values: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Whether ``values`` are at their insertion points ``at`` in ``sorted_values``."""
    if sorted_values.size == 0:
        return np.zeros(values.size, bool)
    return sorted_values[np.minimum(at, sorted_values.size - 1)] == values


def _unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the distinct values, sorted; a row holding each; the index of each row's value in
    them): what ``np.unique`` returns with ``return_index`` and ``return_inverse``, but by an
    unstable sort — any row of a value will do here, and numpy's stable sort is ~3× slower."""
    order = np.argsort(values)
    ordered = values[order]
    starts = np.ones(values.size, bool)
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    inverse = np.empty(values.size, np.intp)
    inverse[order] = np.cumsum(starts) - 1
    return ordered[starts], order[starts], inverse


class _Insertion:
    """Inserting sorted new rows into sorted arrays of ``size`` rows before positions ``at``
    (non-decreasing, as ``np.searchsorted`` of sorted values gives): where each old and each
    new row lands. Worked out once for all the aligned arrays; ``np.insert`` works it out
    again for each, and sorts ``at`` first."""

    def __init__(self, size: int, at: np.ndarray) -> None:
        self.new = at + np.arange(at.size)
        before = np.cumsum(np.bincount(at, minlength=size + 1)[:size])  # new rows before each old one
        self.old = np.arange(size) + before

    def __call__(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        merged = np.empty(old.size + new.size, old.dtype)
        merged[self.old] = old
        merged[self.new] = new
        return merged


def _replace_each(columns: dict[str, np.ndarray], change: Callable[[str, np.ndarray], np.ndarray]) -> None:
    """Replace each column by ``change(name, column)``, one after the other: the state is
    copied a column at a time, never whole (at two million contacts it is ~80 MB)."""
    for name in columns:
        columns[name] = change(name, columns[name])


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    ordered = np.sort(values)
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if ordered.size else ordered


def _slices(group_of: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions ordered by group, start of each group's run in it; one more at the end)."""
    order = np.argsort(group_of, kind="stable")
    return order, np.concatenate([[0], np.cumsum(np.bincount(group_of, minlength=groups))])


class _GroupTally:
    """Per group of contacts, sorted by group: its VPC, how many contacts it has (``distinct``),
    how many failed and were never answered (``full``), how many were answered, and the
    first and last time its contacts were seen. Changed by per-contact deltas only."""

    def __init__(self) -> None:
        self.group = np.empty(0, np.uint64)
        self.vpc = np.empty(0, np.int32)
        self.counts = {name: np.empty(0, np.int32) for name in ("distinct", "full", "answered")}
        self.first = np.empty(0, np.uint32)  # Unix seconds
        self.last = np.empty(0, np.uint32)

    def apply(self, group: np.ndarray, vpc: np.ndarray, deltas: dict[str, np.ndarray], first: np.ndarray, last: np.ndarray) -> None:
        """Add per-contact ``deltas`` (of ``counts``; ±1/0) to their groups; groups left
        without contacts are dropped."""
        if group.size == 0:
            return
        keys, first_row, inverse = _unique(group)
        summed = {n: np.bincount(inverse, weights=d, minlength=keys.size).astype(np.int32) for n, d in deltas.items()}
        earliest = np.full(keys.size, _NEVER)
        np.minimum.at(earliest, inverse, first)
        latest = np.zeros(keys.size, np.int64)
        np.maximum.at(latest, inverse, last)
        at = np.searchsorted(self.group, keys)
        known = _found(self.group, keys, at)
        old = at[known]
        for name, delta in summed.items():
            self.counts[name][old] += delta[known]
        self.first[old] = np.minimum(self.first[old], earliest[known])
        self.last[old] = np.maximum(self.last[old], latest[known])
        fresh = ~known
        if fresh.any():
            insert = _Insertion(self.group.size, at[fresh])
            self.group = insert(self.group, keys[fresh])
            self.vpc = insert(self.vpc, vpc[first_row][fresh])
            for n in self.counts:
                self.counts[n] = insert(self.counts[n], summed[n][fresh])
            self.first = insert(self.first, earliest[fresh])
            self.last = insert(self.last, latest[fresh])
        empty = self.counts["distinct"] <= 0
        if empty.any():
            keep = ~empty
            self.group, self.vpc, self.first, self.last = self.group[keep], self.vpc[keep], self.first[keep], self.last[keep]
            for n in self.counts:
                self.counts[n] = self.counts[n][keep]


class ScanDetector:
    """Address and port scans over a sliding period (see the module docstring)."""

    def __init__(self, context: DetectionContext, max_contacts: int) -> None:
        self.context = context
        self.max_contacts = max_contacts
        self._state = {name: np.empty(0, dtype) for name, dtype in _STATE_TYPES.items()}
        self._tallies = {"address_group": _GroupTally(), "port_group": _GroupTally()}
        self.evicted = 0  # contacts forgotten early, the state being full
        self._warned_at = -_EVICTION_WARNING_SECONDS

    @property
    def contacts(self) -> int:
        return len(self._state["contact"])

    def observe(self, batch: FlowBatch) -> list[Finding]:
        c = batch.cols
        if c["window_start"].size:
            self._forget_before(int(c["window_start"].max()) + self.context.window_seconds)
        protocol = c["protocol"]
        rows = np.flatnonzero(batch.traffic() & ((protocol == TCP) | (protocol == UDP)))
        facts = self._flow_facts(batch, rows)
        new, contact_of_flow = self._contacts(facts)
        if not any(self.context.vpc(v).scan.answered_weight for v in self.context.vpc_ids):
            # Answered contacts score nothing: only contacts with a failed flow, and those
            # already remembered (a later answer cancels a failure), can make a scan. At a
            # million flows per window that is a small share of the rows.
            keep = new["failed"] | _member(self._state["contact"], new["contact"])
            new = {k: v[keep] for k, v in new.items()}
            facts = {k: v[keep[contact_of_flow]] for k, v in facts.items()}
        if facts["row"].size == 0:
            return []
        self._merge(new)
        self._evict_over_limit()
        return self._groups(batch, facts, new, "address_scan") + self._groups(batch, facts, new, "port_scan")

    def _forget_before(self, window_end: int) -> None:
        """Drop contacts last seen a whole period before ``window_end`` (event time)."""
        state = self._state
        period = np.array([self.context.vpc(v).scan.period_seconds for v in self.context.vpc_ids])
        keep = state["last"] > window_end - period[state["vpc"]]
        if not keep.all():
            self._drop(keep)

    def _evict_over_limit(self) -> None:
        state = self._state
        over = len(state["contact"]) - self.max_contacts
        if over <= 0:
            return
        keep = np.ones(len(state["contact"]), bool)
        keep[np.argpartition(state["last"], over - 1)[:over]] = False
        self._drop(keep)
        self.evicted += over
        now = time.monotonic()
        if now - self._warned_at >= _EVICTION_WARNING_SECONDS:
            self._warned_at = now
            log.warning(
                "scan detector: more than %d contacts within the scan period; %d forgotten early so far"
                " (scans spread over more time than the newest %d contacts cover go unseen);"
                " raise detect.max_scan_contacts if memory allows (98 bytes a contact at most)",
                self.max_contacts, self.evicted, self.max_contacts,
            )

    def _drop(self, keep: np.ndarray) -> None:
        """Forget the contacts not in ``keep``, and take them out of their groups' tallies."""
        state = self._state
        gone = ~keep
        failed, answered = state["failed"][gone], state["answered"][gone]
        deltas = {"distinct": -np.ones(failed.size), "full": -(failed & ~answered).astype(np.float64), "answered": -answered.astype(np.float64)}
        never = np.full(failed.size, _NEVER)
        for column, tally in self._tallies.items():
            tally.apply(state[column][gone], state["vpc"][gone], deltas, never, np.zeros(failed.size, np.int64))
        _replace_each(state, lambda _name, column: column[keep])

    def _flow_facts(self, batch: FlowBatch, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Per flow of ``rows``: its contact's parts, id and groups, and whether it failed or was answered."""
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
            "contact": stable_hash(client, server, what),
            "address_group": stable_hash(client, what),
            "port_group": stable_hash(client, server, (vpc << np.uint64(8)) | proto),
            "failed": failed,
            "answered": ~failed & ((tcp & ((flags & ACK) != 0) & ~reset) | (~tcp & ~from_client)),
            "start": c["window_start"][rows].astype(np.int64),
        }

    def _contacts(self, f: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The flows as contacts — one row per distinct contact, sorted by contact — and the
        contact of each flow."""
        unique, first_row, inverse = _unique(f["contact"])
        k = unique.size

        def any_of(flag: np.ndarray) -> np.ndarray:
            return np.bincount(inverse, weights=flag, minlength=k) > 0

        first = np.full(k, np.iinfo(np.int64).max)
        np.minimum.at(first, inverse, f["start"])
        last = np.zeros(k, np.int64)
        np.maximum.at(last, inverse, f["start"] + self.context.window_seconds)
        return {
            "contact": unique,
            "address_group": f["address_group"][first_row],
            "port_group": f["port_group"][first_row],
            "vpc": f["vpc"][first_row].astype(np.int32),
            "answered": any_of(f["answered"]),
            "failed": any_of(f["failed"]),
            "first": first,
            "last": last,
        }, inverse

    def _merge(self, new: dict[str, np.ndarray]) -> None:
        """Contacts into the state (known ones updated in place, the others inserted in
        order), and what changed into their groups' tallies."""
        state = self._state
        at = np.searchsorted(state["contact"], new["contact"])
        known = _found(state["contact"], new["contact"], at)
        old, fresh = at[known], ~known
        before = {flag: np.zeros(known.size, bool) for flag in ("answered", "failed")}
        for flag, was in before.items():
            was[known] = state[flag][old]
            state[flag][old] |= new[flag][known]
        state["last"][old] = np.maximum(state["last"][old], new["last"][known])
        answered, failed = before["answered"] | new["answered"], before["failed"] | new["failed"]
        deltas = {
            "distinct": fresh.astype(np.float64),
            "full": (failed & ~answered).astype(np.float64) - (before["failed"] & ~before["answered"]),
            "answered": answered.astype(np.float64) - before["answered"],
        }
        for column, tally in self._tallies.items():
            tally.apply(new[column], new["vpc"], deltas, new["first"], new["last"])
        if fresh.any():
            insert = _Insertion(state["contact"].size, at[fresh])
            _replace_each(state, lambda name, column: insert(column, new[name][fresh]))

    def _groups(self, batch: FlowBatch, facts: dict[str, np.ndarray], new: dict[str, np.ndarray], detector: str) -> list[Finding]:
        """Findings of the groups the batch touched whose contacts in the state now score a scan."""
        address = detector == "address_scan"
        column = _GROUP_OF[detector]
        settings = [self.context.vpc(v).scan for v in self.context.vpc_ids]
        enabled = np.array([s.enabled for s in settings])
        threshold = np.array([s.hosts if address else s.ports for s in settings])
        failed_weight = np.array([s.failed_weight for s in settings])
        answered_weight = np.array([s.answered_weight for s in settings])
        tally = self._tallies[column]
        touched = _sorted_unique(new[column])
        touched = touched[_member(tally.group, touched)]  # not those evicted at once
        at = np.searchsorted(tally.group, touched)
        vpc = tally.vpc[at]
        distinct, full = tally.counts["distinct"][at], tally.counts["full"][at]
        score = full * failed_weight[vpc] + (distinct - full) * answered_weight[vpc]
        hot = np.flatnonzero(enabled[vpc] & (score >= threshold[vpc]))
        if hot.size == 0:
            return []
        # The batch's flows of each hot group (its evidence; never empty: the group was touched).
        flow_of_hot = np.flatnonzero(_member(touched[hot], facts[column]))
        flow_order, flow_start = _slices(np.searchsorted(touched[hot], facts[column][flow_of_hot]), hot.size)
        findings = []
        for j, g in enumerate(hot.tolist()):
            flows = flow_of_hot[flow_order[flow_start[j] : flow_start[j + 1]]]
            evidence = facts["row"][flows]
            one = flows[0]
            client = address_text(facts["client"][one])
            proto, service = int(facts["proto"][one]), int(facts["service"][one])
            vpc_id = self.context.vpc_ids[int(vpc[g])]
            enis = batch.cols["eni"][evidence]
            if address:
                target = f"{_PROTO_NAMES[proto]}/{service}"
                reached = "hosts"
                key = f"{vpc_id}/{client}/{target}"
            else:
                target = address_text(facts["server"][one])
                reached = "ports"
                key = f"{vpc_id}/{client}/{target}/{_PROTO_NAMES[proto]}"
            contacts, failed = int(distinct[g]), int(full[g])
            findings.append(
                Finding(
                    detector=detector,
                    key=key,
                    severity="high" if score[g] >= _HIGH * threshold[vpc[g]] else "medium",
                    first_seen=int(tally.first[at[g]]),
                    last_seen=int(tally.last[at[g]]),
                    summary=(
                        f"{client} reached {contacts} {reached} on {target} ({failed} failed)"
                        if address
                        else f"{client} reached {contacts} {_PROTO_NAMES[proto]} ports on {target} ({failed} failed)"
                    ),
                    vpc_id=vpc_id,
                    interface_id=self.context.eni_ids[int(enis[0])] if (enis == enis[0]).all() else "-",
                    source=client,
                    target=target,
                    counts={
                        reached: contacts,
                        "failed": failed,
                        "answered": int(tally.counts["answered"][at[g]]),
                        "score": round(float(score[g]), 3),
                        "threshold": float(threshold[vpc[g]]),
                        "flows": int(evidence.size),
                        "packets": int(batch.cols["packets"][evidence].sum()),
                    },
                    samples=batch.samples(evidence),
                )
            )
        return findings
