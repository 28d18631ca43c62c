"""Rewind: the raw frames of a time range, aggregated again into a named result set.

The frames come back from the frames topic (:class:`~pipeline.frame_range.FrameRange`),
one partition after the other, and go through the live code — ``FlowTable`` for flows,
``FlowRecordBuilder`` and a ``RuleBook`` for records and verdicts — with the rewind's own
window length and rule set (a file, or the one in force on the rules topic). Records go to
``saved_flows`` under the result set's name, never to the live tables.

Memory is bounded: a partition's windows are closed and written once its frames have
moved ``FrameRange.margin`` past their end (no frame can still bring packets for them), so
a rewind holds at most one partition's flows of that span, however long the range.
Rewound records are all ``OK``: with hindsight nothing is late, and gaps are not judged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from flowlogs.errors import ConfigError
from flowlogs.settings import Settings
from pipeline import rules_topic
from pipeline.flow_table import ALL_WINDOWS, FlowTable
from pipeline.frame_range import FrameRange
from pipeline.records import FlowRecordBuilder
from pipeline.rulebook import RuleBook
from pipeline.window import EniRegistry
from schemas.inventory import Inventory, load_inventory

_NS = 1_000_000_000


def scope_enis(scope: str, inventory: Inventory) -> frozenset[str] | None:
    """The ENI ids a scope names — ``all`` (None: every ENI), ``vpc:ID``, ``subnet:ID``, ``eni:ID``."""
    if scope == "all":
        return None
    kind, _, ident = scope.partition(":")
    if kind == "eni" and ident:
        return frozenset({ident})
    placement = inventory.placement()
    if kind in ("vpc", "subnet") and ident:
        at = 0 if kind == "vpc" else 1
        enis = frozenset(e for e, where in placement.items() if where[at] == ident)
        if not enis:
            raise ConfigError(f"scope {scope}: the inventory has no ENI in {kind} {ident} (worker.inventory)")
        return enis
    raise ConfigError(f"scope {scope!r}: give all, vpc:ID, subnet:ID or eni:ID")


@dataclass(slots=True)
class RewindSummary:
    flows: int = 0
    packets: int = 0
    bytes: int = 0
    per_eni: dict[str, list[int]] = field(default_factory=dict)  # ENI → [packets, bytes]
    rules: str = "-"


class Rewind:
    def __init__(
        self,
        settings: Settings,
        name: str,
        since: int,
        until: int,
        *,
        scope: str = "all",
        window_seconds: int | None = None,
        rules_file: Path | None = None,
    ) -> None:
        self.name = name
        self.window_ns = int(window_seconds or settings.worker.window_seconds) * _NS
        if not 1 <= self.window_ns // _NS <= 3600:
            raise ConfigError("--window must be between 1 s and 1 h")
        inventory = load_inventory(settings.worker.inventory) if settings.worker.inventory else Inventory()
        self.range = FrameRange(settings, since * _NS, until * _NS, scope_enis(scope, inventory))
        self.enis = EniRegistry()
        self.rulebook = RuleBook(inventory, self.enis.ids, rules_file)
        self.summary = RewindSummary(rules=str(rules_file) if rules_file else "none")
        if rules_file is None:
            published = rules_topic.published(settings)
            if published is not None:
                self.rulebook.offer(published.to_json_bytes(), "the rules topic")
                self.summary.rules = f"rules topic v{self.rulebook.version}"
        self.builder = FlowRecordBuilder(self.enis.ids, inventory.placement(), self.window_ns, self.rulebook)

    def run(self, write: Callable[[pa.Table], None], cancelled: Callable[[], bool] = lambda: False) -> RewindSummary:
        """Read, aggregate and hand each batch of records (flows-table columns) to ``write``."""
        table, partition = FlowTable(), None
        margin_ns = self.range.margin_ms * 1_000_000
        newest = 0
        for p, frame in self.range.frames(cancelled=cancelled):
            if p != partition:
                self._close(table, ALL_WINDOWS, write)
                partition, newest = p, 0
            packets = frame.packets
            table.add_packets(packets, self.enis.indices(frame.eni_ids)[packets.eni], self.window_ns)
            newest = max(newest, int(packets.capture_time_ns.max()))
            # Windows ending a margin before the newest packet can get no more packets.
            self._close(table, (newest - margin_ns) // self.window_ns - 1, write)
        if not cancelled():
            self._close(table, ALL_WINDOWS, write)
        return self.summary

    def _close(self, table: FlowTable, through_window: int, write: Callable[[pa.Table], None]) -> None:
        if through_window < 0 or table.size == 0:
            return
        flows = table.take(through_window)
        if flows.size == 0:
            return
        records = self.builder.arrow(self.builder.columns(flows))
        n = records.num_rows
        write(records.add_column(0, "result_set", pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [self.name])))
        s = self.summary
        s.flows += n
        packets, octets = records.column("packets").to_numpy(), records.column("bytes").to_numpy()
        s.packets += int(packets.sum())
        s.bytes += int(octets.sum())
        enis = records.column("interface_id").combine_chunks()
        for code, eni in enumerate(enis.dictionary.to_pylist()):
            mine = enis.indices.to_numpy() == code
            total = s.per_eni.setdefault(eni, [0, 0])
            total[0] += int(packets[mine].sum())
            total[1] += int(octets[mine].sum())
