"""Flow records: closed-window aggregates → the schemas/ flow record, as Arrow.

The Arrow table feeds the ClickHouse sink (one columnar insert) and, rendered as JSON lines
by ``pipeline.json_render``, the flows topic. Column types are derived from
``schemas.flow_record.FLOW_FIELDS``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from pipeline.aggregate import FlowAggregate, hash_rows, window_eni_codes
from schemas import flow_record
from schemas.flow_record import FLOW_FIELDS, FlowField
from pipeline.rulebook import RuleBook
from schemas.frame import is_ipv4_mapped
from schemas.inventory import Inventory
from schemas.rules import LAYERS, NO_RULE

_NS = np.uint64(1_000_000_000)
_UNKNOWN = "-"

_INT_TYPES = {
    "UInt8": pa.uint8(),
    "UInt16": pa.uint16(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
}


def arrow_type(f: FlowField) -> pa.DataType:
    """The Arrow type a ClickHouse column of ``f`` is inserted from."""
    t = f.clickhouse_type
    if t in _INT_TYPES:
        return _INT_TYPES[t]
    if t.startswith(("Enum8", "LowCardinality(String")):
        return pa.dictionary(pa.int32(), pa.string())
    if t == "IPv6":
        return pa.binary(16)
    if t.startswith("DateTime"):
        return pa.uint32()
    raise TypeError(f"no Arrow mapping for ClickHouse type {t} of field {f.name}")


ARROW_SCHEMA = pa.schema([pa.field(f.column, arrow_type(f), nullable=False) for f in FLOW_FIELDS])


def _stable_eni_hash(eni_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(eni_id.encode(), digest_size=8).digest(), "little")


class FlowRecordBuilder:
    """Turns :class:`FlowAggregate` rows into flow records for one worker.

    ``placement`` maps ENI id → (vpc-id, subnet-id) from the inventory; ENIs it does not
    know get ``-`` (AWS's spelling of "not available").
    """

    def __init__(
        self,
        eni_ids: list[str],
        placement: Mapping[str, tuple[str, str]],
        window_ns: int,
        rulebook: RuleBook | None = None,
    ) -> None:
        self._eni_ids = eni_ids  # shared with the EniRegistry: grows as ENIs appear
        self.placement = placement
        self.rulebook = rulebook or RuleBook(Inventory(), eni_ids)
        self._window_ns = np.uint64(window_ns)
        self._eni_hash: list[int] = []

    def _eni_hashes(self) -> np.ndarray:
        while len(self._eni_hash) < len(self._eni_ids):
            self._eni_hash.append(_stable_eni_hash(self._eni_ids[len(self._eni_hash)]))
        return np.array(self._eni_hash, dtype=np.uint64)

    def columns(
        self,
        flows: FlowAggregate,
        *,
        skipped: np.ndarray | None = None,
        nodata: np.ndarray | None = None,
        late_through: int = -1,
    ) -> dict[str, np.ndarray]:
        """Record fields as numpy columns (strings as small-int codes plus dictionaries), with
        the verdicts of the rule set in force.

        Flows of windows ≤ ``late_through`` (closed before) are LATE; rows of the
        (window, ENI) pairs in ``skipped`` / ``nodata`` (``window_eni_codes``) get SKIPDATA /
        NODATA.
        """
        n = flows.size
        status = np.full(n, flow_record.LOG_STATUSES.index("OK"), np.int32)
        if late_through >= 0:
            status[flows.window <= np.uint64(late_through)] = flow_record.LOG_STATUSES.index("LATE")
        for codes, name in ((nodata, "NODATA"), (skipped, "SKIPDATA")):
            if codes is not None and codes.size:
                status[np.isin(window_eni_codes(flows.window, flows.eni), codes)] = flow_record.LOG_STATUSES.index(name)
        eni = flows.eni
        # flow-id must not depend on this process's ENI numbering, so hash the ENI id instead.
        stable = flows.keys.copy()
        stable[4] = (stable[4] & np.uint64(0xFFFFFFFF)) ^ self._eni_hashes()[eni]
        src = flows.address("src")
        dst = flows.address("dst")
        verdicts = self.rulebook.evaluator.evaluate(
            eni, flows.direction, src, dst, flows.src_port, flows.dst_port, flows.protocol, flows.tcp_flags
        )
        action = verdicts.action.astype(np.int32) - 1  # Enum8 codes count from 1
        layer = verdicts.layer.astype(np.int32) - 1
        rule = verdicts.rule.astype(np.int32)
        # Zero-traffic rows (NODATA/SKIPDATA) carry no flow to judge.
        markers = flows.packets == 0
        action[markers] = flow_record.ACTIONS.index("ACCEPT")
        layer[markers] = LAYERS.index("default")
        rule[markers] = verdicts.rule_ids.index(NO_RULE)
        return {
            "version": np.full(n, flow_record.RECORD_VERSION, np.uint8),
            "flow_id": hash_rows(stable),
            "eni": eni,
            "srcaddr": src,
            "dstaddr": dst,
            "srcport": flows.src_port,
            "dstport": flows.dst_port,
            "protocol": flows.protocol,
            "packets": flows.packets,
            "bytes": flows.bytes,
            "start": flows.start,
            "end": flows.end,
            "window_start": (flows.window * self._window_ns // _NS).astype(np.uint32),
            "action": action,
            "rule_layer": layer,
            "rule_id": rule,
            "rule_id_values": np.array(verdicts.rule_ids, dtype=object),
            "rule_set_version": np.full(n, verdicts.version, np.uint32),
            "log_status": status,
            "tcp_flags": flows.tcp_flags,
            "flow_direction": flows.direction.astype(np.int32),
            "type": np.where(is_ipv4_mapped(src), 0, 1).astype(np.int32),
        }

    def _placement_columns(self, eni: np.ndarray) -> tuple[pa.Array, pa.Array, pa.Array]:
        names = self._eni_ids
        vpcs = [self.placement.get(e, (_UNKNOWN, _UNKNOWN))[0] for e in names]
        subnets = [self.placement.get(e, (_UNKNOWN, _UNKNOWN))[1] for e in names]
        return _dictionary(eni, names), _dictionary(eni, vpcs), _dictionary(eni, subnets)

    def arrow(self, cols: dict[str, np.ndarray]) -> pa.Table:
        """The records of :meth:`columns` as an Arrow table in the flows table's column order."""
        rows = len(cols["eni"])
        interface, vpc, subnet = self._placement_columns(cols["eni"])
        enums = {
            "action": flow_record.ACTIONS,
            "rule_layer": LAYERS,
            "rule_id": tuple(cols["rule_id_values"]),
            "log_status": flow_record.LOG_STATUSES,
            "flow_direction": flow_record.DIRECTIONS,
            "type": flow_record.TYPES,
        }
        arrays: dict[str, pa.Array] = {"interface_id": interface, "vpc_id": vpc, "subnet_id": subnet}
        for name, values in enums.items():
            arrays[name] = pa.DictionaryArray.from_arrays(pa.array(cols[name]), pa.array(values, pa.string()))
        for name in ("srcaddr", "dstaddr"):
            raw = np.ascontiguousarray(cols[name]).tobytes()
            arrays[name] = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), rows, [None, pa.py_buffer(raw)])
        for f in FLOW_FIELDS:
            if f.column not in arrays:
                arrays[f.column] = pa.array(cols[f.column], type=arrow_type(f))
        return pa.Table.from_arrays([arrays[f.column] for f in FLOW_FIELDS], schema=ARROW_SCHEMA)


def _dictionary(codes: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    """A dictionary column of ``values[codes]``; Arrow dictionaries must not repeat a value."""
    unique, inverse = np.unique(np.array(values, dtype=object), return_inverse=True)
    return pa.DictionaryArray.from_arrays(
        pa.array(inverse.astype(np.int32)[codes]), pa.array(unique.tolist(), pa.string())
    )
