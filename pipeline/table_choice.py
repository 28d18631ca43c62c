"""Which table answers a query: the raw flows table or the coarsest rollup that can.

Reports describe what they read — a time range, an optional time step, the columns they
group or filter on — and :func:`choose_table` names the table. The tables and what each
keeps are defined in ``schemas/flow_record.py`` and ``schemas/rollups.py``.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from flowlogs.settings import StoreSettings
from schemas import rollups
from schemas.flow_record import COLUMN_NAMES, FLOWS_TABLE


@dataclass(frozen=True, slots=True)
class Table:
    """A table reports can read, and how to read it."""

    name: str
    seconds: int  # bucket width; 0 for the raw table (rows at their window start)
    time_column: str  # the column a time range and a time step apply to
    columns: frozenset[str]  # what a query may group or filter on
    records: str  # SQL for the number of flow records behind a group of rows

    @property
    def raw(self) -> bool:
        return self.seconds == 0


RAW = Table(FLOWS_TABLE, 0, "window_start", frozenset(COLUMN_NAMES), "count()")
ROLLUP_TABLES: tuple[Table, ...] = tuple(
    Table(r.table, r.seconds, rollups.BUCKET, frozenset(r.dimensions), f"sum({rollups.RECORDS})")
    for r in rollups.ROLLUPS
)


def retention_days(store: StoreSettings) -> dict[str, int]:
    """Days each table keeps rows, by table name, from the store settings."""
    by_label = store.rollup_ttl_days()
    return {FLOWS_TABLE: store.ttl_days, **{r.table: by_label[r.label] for r in rollups.ROLLUPS}}


def choose_table(
    since: int | None,
    until: int | None,
    step: int | None = None,
    needs: Collection[str] = (),
    *,
    retention: Mapping[str, int] | None = None,
    now: int | None = None,
) -> Table:
    """The coarsest table that gives exactly the answer the raw table would.

    The query reads the flow windows that start in ``[since, until)`` (Unix seconds; None
    leaves that end open), optionally summed per ``step`` seconds (aligned to the Unix
    epoch), grouping or filtering on the columns in ``needs``. A rollup answers it when

    * it keeps every column in ``needs`` (1 h keeps no addresses or ports);
    * its bucket width divides ``since``, ``until`` and ``step``: every bucket then lies
      wholly inside or outside the range and inside one step, so whole buckets sum to
      exactly the raw windows. A range ending "now", cut mid-bucket, goes to a finer table.

    The newest, still-filling buckets need no special case: a materialized view adds the
    rows of an INSERT into ``flows`` to every rollup in that same INSERT, so a rollup
    always holds exactly the raw rows written so far.

    Among the tables that answer, the coarsest whose retention (``retention``: days by
    table name, default the store defaults) reaches back to ``since`` wins. When none
    does — ``since`` is older than all of them, or None (all of history) — the one that
    keeps the longest history wins (the coarsest on a tie): it holds the most of the range.
    The raw table answers everything, so there is always a choice.
    """
    unknown = set(needs) - RAW.columns
    if unknown:
        raise ValueError(f"no flow column named {', '.join(sorted(unknown))}")
    if step is not None and step <= 0:
        raise ValueError(f"step must be a positive number of seconds, not {step}")
    days = retention if retention is not None else retention_days(StoreSettings())
    candidates = [RAW] + [
        t
        for t in ROLLUP_TABLES
        if set(needs) <= t.columns
        and all(edge is None or edge % t.seconds == 0 for edge in (since, until, step))
    ]
    coarsest_first = sorted(candidates, key=lambda t: t.seconds, reverse=True)
    if since is not None:
        current = int(time.time()) if now is None else now
        for table in coarsest_first:
            if since >= current - days[table.name] * 86_400:
                return table
    return max(coarsest_first, key=lambda t: days[t.name])  # max keeps the first (coarsest) on a tie
