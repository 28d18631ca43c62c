"""The flow logs in force: written to their compacted topic, followed by every worker, and
compiled into what a worker records for each ENI (``schemas/flow_logs.py`` says what a
flow log is)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from pydantic import ValidationError

from flowlogs.errors import ConfigError
from flowlogs.settings import Settings
from pipeline.compacted_topic import CompactedTopicFollower, produce
from schemas import flow_record, topics
from schemas.flow_logs import DEFAULT_ID, FlowLog, FlowLogChange

log = logging.getLogger(__name__)

_ACTION_BITS = {"ALL": 0b11, "ACCEPT": 0b01, "REJECT": 0b10}  # bit = 1 << ACTIONS.index(action)


def put(settings: Settings, flow_log: FlowLog) -> FlowLog:
    """Write a flow log (new or changed); every worker has it within seconds."""
    produce(settings, settings.topic(topics.FLOW_LOGS.suffix), flow_log.id.encode(), flow_log.model_dump_json().encode())
    return flow_log


def delete(settings: Settings, flow_log_id: str) -> None:
    produce(settings, settings.topic(topics.FLOW_LOGS.suffix), flow_log_id.encode(), None)


def parse_change(body: object) -> FlowLogChange:
    """A create or update request's body (ConfigError saying which field is wrong)."""
    try:
        return FlowLogChange.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid flow log: {problems}") from None


class FlowLogFollower(CompactedTopicFollower):
    """Follows the flow-logs topic."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.topic(topics.FLOW_LOGS.suffix), "flow-logs")

    def start(self) -> "FlowLogFollower":
        super().start()
        return self

    def flow_logs(self) -> dict[str, FlowLog]:
        """Every flow log on the topic, by id (one that does not parse is logged and left out)."""
        found = {}
        for key, value in self.values().items():
            try:
                flow_log = FlowLog.model_validate(orjson.loads(value))
            except (orjson.JSONDecodeError, ValidationError) as exc:
                log.error("flow log %s on %s is invalid and ignored: %s", key.decode(errors="replace"), self.topic, exc)
                continue
            found[flow_log.id] = flow_log
        return found


def implicit_flow_log(settings: Settings) -> FlowLog:
    """What is recorded while no flow log exists: everything, as the settings say."""
    return FlowLog(
        id=DEFAULT_ID, name="everything (no flow log defined yet)", filter=settings.worker.record_filter,
        window_seconds=settings.worker.window_seconds,
    )


@dataclass(frozen=True, slots=True)
class Coverage:
    """Per ENI index: which actions' records go to the store and to the flows topic.

    ``store[i]`` / ``topic[i]`` are action bitmasks (bit 0 ACCEPT, bit 1 REJECT; 0 = nothing):
    the union over the enabled flow logs of this window length that cover ENI ``i``.
    """

    store: np.ndarray
    topic: np.ndarray

    @classmethod
    def compile(
        cls,
        flow_logs: Sequence[FlowLog],
        placement: Mapping[str, tuple[str, str]],
        eni_ids: Sequence[str],
        window_seconds: int,
    ) -> "Coverage":
        store = np.zeros(len(eni_ids), np.uint8)
        topic = np.zeros(len(eni_ids), np.uint8)
        for flow_log in flow_logs:
            if not flow_log.enabled or flow_log.window_seconds != window_seconds:
                continue
            kind, ident = flow_log.scope_parts()
            covered = np.array([_covers(kind, ident, eni, placement) for eni in eni_ids], dtype=bool)
            bits = _ACTION_BITS[flow_log.filter]
            if "store" in flow_log.destinations:
                store[covered] |= bits
            if "topic" in flow_log.destinations:
                topic[covered] |= bits
        return cls(store, topic)

    def rows(self, destination: str, eni: np.ndarray, action: np.ndarray, packets: np.ndarray) -> np.ndarray:
        """Which records (ENI index, action code, packets per row) go to ``destination``;
        NODATA/SKIPDATA rows (no packets) go wherever their ENI is covered at all."""
        bits = (self.store if destination == "store" else self.topic)[eni]
        wanted = (bits >> action.astype(np.uint8)) & 1
        return np.where(packets == 0, bits != 0, wanted == 1)


def _covers(kind: str, ident: str, eni: str, placement: Mapping[str, tuple[str, str]]) -> bool:
    if kind == "all":
        return True
    if kind == "eni":
        return eni == ident
    vpc, subnet = placement.get(eni, ("-", "-"))
    return (vpc if kind == "vpc" else subnet) == ident


assert flow_record.ACTIONS == ("ACCEPT", "REJECT")  # the bit order above
