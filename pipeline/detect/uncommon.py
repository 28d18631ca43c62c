"""Uncommon protocols: protocol/port pairs an ENI did not use while its baseline was learned.

A flow's pair is its protocol and, for TCP and UDP, its service port (the lower of the two
ports: the ephemeral side is the client). Other protocols (ICMP, GRE, ESP…) are a pair of
their own, with no port. Only flows that were used count: accepted, and for TCP not a
SYN-only opener that got nothing back (failed attempts are the scan detector's). An ENI's
baseline is every pair of its accepted flows in windows that start within
``uncommon.learn_seconds`` of its first window on this worker; afterwards an accepted pair
that is in neither the baseline nor ``uncommon.allow`` is reported — one alert per ENI and
protocol, updated while new pairs keep coming. A reported pair is not learned: allow it,
or it is reported while it is used. The baseline is this worker's memory (learned again
after a restart).
"""

from __future__ import annotations

import numpy as np

from flowlogs.errors import ConfigError
from pipeline.detect.batch import ACK, SYN, TCP, UDP, DetectionContext, Finding, FlowBatch

_NO_PORT = 1 << 16
_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 47: "gre", 50: "esp", 51: "ah", 132: "sctp"}
_NUMBERS = {name: number for number, name in _NAMES.items()}
_MAX_LISTED = 20


def pair_text(pair: int) -> str:
    proto, port = pair >> 17, pair & 0x1FFFF
    name = _NAMES.get(proto, str(proto))
    return name if port == _NO_PORT else f"{name}/{port}"


def parse_allow(entries: tuple[str, ...]) -> tuple[set[int], set[int]]:
    """(allowed pairs, protocols allowed on every port) from 'tcp/443', 'icmp', '47'."""
    pairs: set[int] = set()
    protocols: set[int] = set()
    for entry in entries:
        name, _, port = entry.strip().lower().partition("/")
        proto = _NUMBERS.get(name, int(name) if name.isdigit() else -1)
        if not 0 <= proto <= 255 or (port and not (port.isdigit() and int(port) <= 65535)):
            raise ConfigError(f"detect.uncommon.allow: {entry!r} is not 'tcp/443', 'udp/53', 'icmp' or a protocol number")
        if port:
            pairs.add(proto << 17 | int(port))
        else:
            protocols.add(proto)
    return pairs, protocols


def flow_pairs(cols: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The protocol/port pair of each flow in ``rows`` (protocol << 17 | port, or | 1 << 16 for none)."""
    proto = cols["protocol"][rows].astype(np.int64)
    service = np.minimum(cols["srcport"][rows], cols["dstport"][rows]).astype(np.int64)
    ported = (proto == TCP) | (proto == UDP)
    return (proto << 17) | np.where(ported, service, _NO_PORT)


class UncommonProtocolDetector:
    def __init__(self, context: DetectionContext) -> None:
        self.context = context
        self._learn_until: dict[int, int] = {}
        self._baseline: dict[int, set[int]] = {}
        self._allow: dict[int, tuple[set[int], set[int]]] = {}

    def _allowed(self, eni: int) -> tuple[set[int], set[int]]:
        if eni not in self._allow:
            self._allow[eni] = parse_allow(self.context.eni(eni).uncommon.allow)
        return self._allow[eni]

    def observe(self, batch: FlowBatch) -> list[Finding]:
        c, ctx = batch.cols, self.context
        unanswered_opener = (c["protocol"] == TCP) & ((c["tcp_flags"] & (SYN | ACK)) == SYN)
        rows = np.flatnonzero(batch.traffic() & batch.accepted() & ~unanswered_opener)
        if rows.size == 0:
            return []
        start = c["window_start"][rows].astype(np.int64)
        # One int64 per (ENI, pair): pairs fit in 25 bits.
        keys, inverse = np.unique((c["eni"][rows].astype(np.int64) << 32) | flow_pairs(c, rows), return_inverse=True)
        first = np.full(keys.size, np.iinfo(np.int64).max)
        np.minimum.at(first, inverse, start)
        new: dict[tuple[int, int], list[int]] = {}  # (ENI, protocol) → indexes into keys
        for k in np.argsort(first, kind="stable").tolist():
            e, pair = int(keys[k]) >> 32, int(keys[k]) & 0xFFFFFFFF
            settings = ctx.eni(e).uncommon
            learn_until = self._learn_until.setdefault(e, int(first[k]) + int(settings.learn_seconds))
            known = self._baseline.setdefault(e, set())
            if first[k] < learn_until:
                known.add(pair)
                continue
            allowed_pairs, allowed_protocols = self._allowed(e)
            if not settings.enabled or pair in known or pair in allowed_pairs or (pair >> 17) in allowed_protocols:
                continue
            new.setdefault((e, pair >> 17), []).append(k)
        findings = []
        for (e, proto), ks in new.items():
            members = rows[np.isin(inverse, ks)]
            interface_id = ctx.eni_ids[e]
            listed = [pair_text(int(keys[k]) & 0xFFFFFFFF) for k in ks]
            proto_name = _NAMES.get(proto, str(proto))
            findings.append(
                Finding(
                    detector="uncommon_protocol",
                    key=f"{interface_id}/{proto_name}",
                    severity="low",
                    first_seen=int(first[ks].min()),
                    last_seen=int(c["window_start"][members].max()) + ctx.window_seconds,
                    summary=f"{interface_id} used {', '.join(listed[:_MAX_LISTED])}{' …' if len(listed) > _MAX_LISTED else ''}"
                    " outside its baseline",
                    vpc_id=ctx.vpc_id(e),
                    interface_id=interface_id,
                    source=interface_id,
                    target=", ".join(listed[:_MAX_LISTED]),
                    counts={
                        "pairs": len(listed),
                        "flows": int(members.size),
                        "packets": int(c["packets"][members].sum()),
                        "bytes": int(c["bytes"][members].sum()),
                        "baseline_pairs": len(self._baseline[e]),
                    },
                    samples=batch.samples(members),
                )
            )
        return findings
