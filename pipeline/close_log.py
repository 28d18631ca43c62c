"""CloseLog: the worker's record of its window closes, kept in the store (schemas/window_closes.py).

Written before the rows a close produced; read when a worker starts consuming a
partition, to know which windows were already closed before the committed offset and
which closes after it must be repeated exactly (see ``pipeline/window.py``).
"""

from __future__ import annotations

import logging

from pipeline.store import Store
from pipeline.store_client import OwnerApiStore
from pipeline.window import CloseEvent
from schemas import window_closes

log = logging.getLogger(__name__)


class CloseLog:
    def __init__(self, store: Store | OwnerApiStore, topic: str, window_ns: int) -> None:
        self.store = store
        self.topic = topic
        self.window_ns = window_ns

    def token(self, event: CloseEvent) -> str:
        """Name of the rows ``event`` produced: the same on every repetition of the close."""
        return window_closes.insert_token(self.topic, event.partition, event.offset, event.target, self.window_ns)

    def record(self, events: list[CloseEvent]) -> None:
        if events:
            self.store.insert_rows(
                window_closes.TABLE,
                [name for name, _, _ in window_closes.COLUMNS],
                [[self.topic, e.partition, e.offset, e.target, self.window_ns] for e in events],
            )

    def history(self, partition: int, from_offset: int) -> tuple[int, list[CloseEvent]]:
        """(highest window closed before ``from_offset``, the closes at or after it, in order)."""
        params = {"topic": self.topic, "partition": partition, "offset": from_offset, "window_ns": self.window_ns}
        where = "topic = {topic:String} AND partition = {partition:UInt32} AND window_ns = {window_ns:UInt64}"
        _, before = self.store.query(
            f"SELECT max(target), count() FROM {window_closes.TABLE} WHERE {where} AND offset < {{offset:UInt64}}", params
        )
        _, after = self.store.query(
            f"SELECT DISTINCT offset, target FROM {window_closes.TABLE} WHERE {where} AND offset >= {{offset:UInt64}}"
            " ORDER BY offset, target",
            params,
        )
        closed_through = int(before[0][0]) if before and before[0][1] else -1
        events = [CloseEvent(partition, int(offset), int(target)) for offset, target in after]
        if events:
            log.info(
                "partition %d: resuming at offset %d; repeating %d recorded closes up to offset %d",
                partition, from_offset, len(events), events[-1].offset,
            )
        return closed_through, events
