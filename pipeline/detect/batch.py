"""What detectors read: the flow records of closed windows as numpy columns, and their context.

A :class:`FlowBatch` is the records a worker just built (``FlowRecordBuilder.columns`` of
one or more closes: several windows, ENIs and partitions), restricted to what detectors
use. A :class:`Finding` is what a detector concludes about one incident in one batch; the
:class:`~pipeline.detect.alarms.AlertBook` turns findings into alerts.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowlogs.settings import DetectorSettings, DetectSettings
from pipeline.aggregate import hash_rows
from schemas import flow_record
from schemas.alerts import MAX_SAMPLE_FLOWS, SAMPLE_FLOW_FIELDS
from schemas.inventory import Inventory

TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
SYN, RST, ACK = 0x02, 0x04, 0x10
_ACCEPT = flow_record.ACTIONS.index("ACCEPT")
_OK = flow_record.LOG_STATUSES.index("OK")
_UNKNOWN = "-"


class DetectionContext:
    """Where each ENI sits (VPC, subnet) and the detector thresholds that apply to it.

    ENIs are numbered by the worker's registry, which grows as ENIs appear; the context
    follows it. Thresholds come from ``detect.overrides``, the most specific scope winning.
    """

    def __init__(self, settings: DetectSettings, inventory: Inventory, eni_ids: list[str], window_seconds: int) -> None:
        self.settings = settings
        self.window_seconds = window_seconds
        self.eni_ids = eni_ids  # shared with the worker's EniRegistry
        self._placement = inventory.placement()
        self._subnet_cidr = {s.id: s.cidr for s in inventory.subnets}
        self._per_eni: list[DetectorSettings] = []
        self._per_vpc: dict[str, DetectorSettings] = {}
        self._vpc_ids: list[str] = []
        self._vpc_code: list[int] = []
        self._subnet_ids: list[str] = []

    def _grow(self) -> None:
        while len(self._per_eni) < len(self.eni_ids):
            eni = self.eni_ids[len(self._per_eni)]
            vpc, subnet = self._placement.get(eni, (_UNKNOWN, _UNKNOWN))
            self._per_eni.append(self.settings.for_scope(vpc, subnet, eni))
            if vpc not in self._vpc_ids:
                self._vpc_ids.append(vpc)
            self._vpc_code.append(self._vpc_ids.index(vpc))
            self._subnet_ids.append(subnet)

    def eni(self, index: int) -> DetectorSettings:
        self._grow()
        return self._per_eni[index]

    def vpc(self, vpc_id: str) -> DetectorSettings:
        if vpc_id not in self._per_vpc:
            self._per_vpc[vpc_id] = self.settings.for_scope(vpc_id)
        return self._per_vpc[vpc_id]

    def vpc_codes(self) -> np.ndarray:
        """VPC code of each ENI index (codes index :attr:`vpc_ids`)."""
        self._grow()
        return np.array(self._vpc_code, dtype=np.int64)

    @property
    def vpc_ids(self) -> list[str]:
        self._grow()
        return self._vpc_ids

    def vpc_id(self, eni_index: int) -> str:
        return self._placement.get(self.eni_ids[eni_index], (_UNKNOWN, _UNKNOWN))[0]

    def subnet_id(self, eni_index: int) -> str:
        self._grow()
        return self._subnet_ids[eni_index]

    def subnet_cidr(self, subnet_id: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        return self._subnet_cidr.get(subnet_id)


@dataclass(slots=True)
class FlowBatch:
    """Flow records of closed windows (columns as ``FlowRecordBuilder.columns`` makes them)."""

    cols: dict[str, np.ndarray]
    context: DetectionContext

    @property
    def size(self) -> int:
        return len(self.cols["eni"])

    def traffic(self) -> np.ndarray:
        """Rows that are flows on time (not NODATA/SKIPDATA markers, not LATE rows)."""
        return (self.cols["packets"] > 0) & (self.cols["log_status"] == _OK)

    def accepted(self) -> np.ndarray:
        return self.cols["action"] == _ACCEPT

    def raw_addresses(self, which: str) -> np.ndarray:
        """``srcaddr`` or ``dstaddr`` as (n, 16) uint8."""
        return np.ascontiguousarray(self.cols[which]).view(np.uint8).reshape(-1, 16)

    def samples(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """Up to MAX_SAMPLE_FLOWS of ``rows`` (the ones with most packets) as alert sample flows."""
        c = self.cols
        rows = np.asarray(rows)
        if rows.size > MAX_SAMPLE_FLOWS:
            rows = rows[np.argsort(-c["packets"][rows].astype(np.int64), kind="stable")[:MAX_SAMPLE_FLOWS]]
        actions = flow_record.ACTIONS
        out = []
        for i in rows.tolist():
            values = (
                self.context.eni_ids[int(c["eni"][i])],
                address_text(c["srcaddr"][i]),
                address_text(c["dstaddr"][i]),
                int(c["srcport"][i]),
                int(c["dstport"][i]),
                int(c["protocol"][i]),
                int(c["packets"][i]),
                int(c["bytes"][i]),
                actions[int(c["action"][i])],
                int(c["tcp_flags"][i]),
            )
            out.append(dict(zip(SAMPLE_FLOW_FIELDS, values)))
        return out


@dataclass(slots=True)
class Finding:
    """One incident as one batch shows it; ``key`` identifies the incident within its detector."""

    detector: str
    key: str
    severity: str
    first_seen: int  # window start, Unix seconds
    last_seen: int  # window end, Unix seconds
    summary: str
    vpc_id: str = _UNKNOWN
    interface_id: str = _UNKNOWN
    source: str = _UNKNOWN
    target: str = _UNKNOWN
    counts: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)


def address_text(value: np.void | bytes) -> str:
    """A 16-byte address as flows print it: IPv4-mapped as a dotted quad."""
    raw = bytes(value)
    address = ipaddress.IPv6Address(raw)
    return str(address.ipv4_mapped) if address.ipv4_mapped is not None else str(address)


def stable_hash(*columns: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row of several columns (V16 addresses or integers); equal rows, equal hashes."""
    words = []
    for column in columns:
        if column.dtype.kind == "V":
            pairs = np.ascontiguousarray(column).view(np.uint64).reshape(-1, 2)
            words += [pairs[:, 0], pairs[:, 1]]
        else:
            words.append(column.astype(np.uint64))
    return hash_rows(np.vstack(words))
