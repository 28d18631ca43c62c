"""Kafka topics, their keys and headers.

Topic names carry the wire-format version, so an incompatible change never meets an old
consumer: frames v2 would go to ``<prefix>frames.v2``.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import alerts, flow_logs, flow_record, frame


RULES_KEY = b"ruleset"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    suffix: str
    key: str
    value: str
    compacted: bool = False

    def name(self, prefix: str) -> str:
        return prefix + self.suffix


FRAMES = TopicSpec(
    f"frames.v{frame.VERSION}",
    key="ENI id (ASCII): one ENI's packets stay in one partition, in order",
    value="packet-metadata frame (schemas/frame.py)",
)
FLOWS = TopicSpec(
    f"flows.v{flow_record.RECORD_VERSION}",
    key="interface-id (ASCII)",
    value="one flow record as JSON (schemas/generated/flow-record.schema.json)",
)
DEAD_LETTER = TopicSpec(
    f"frames.v{frame.VERSION}.deadletter",
    key="the rejected message's key",
    value="the rejected message, unchanged; headers say why (DEAD_LETTER_HEADERS)",
)

RULES = TopicSpec(
    "rules.v1",
    key=f"{RULES_KEY.decode()!r}: one rule set for the whole deployment (compaction keeps the newest)",
    value="the rule set as JSON (schemas/rules.py, RuleSet.to_json_bytes), with its version",
    compacted=True,
)

ALERTS = TopicSpec(
    f"alerts.v{alerts.ALERT_VERSION}",
    key="alert-id (ASCII): every update of an alert stays in one partition, in order",
    value="one alert (new, updated or closed) as JSON (schemas/generated/alert.schema.json)",
)

FLOW_LOGS = TopicSpec(
    flow_logs.TOPIC_SUFFIX,
    key="flow-log id (ASCII); a deleted flow log is a tombstone (compaction removes it)",
    value="the flow log as JSON (schemas/flow_logs.py, FlowLog)",
    compacted=True,
)

ALL = (FRAMES, FLOWS, DEAD_LETTER, RULES, ALERTS, FLOW_LOGS)

DEAD_LETTER_HEADERS = (
    "flowlogs-reason",  # FrameError.reason: bad_magic, unsupported_version, truncated, invalid
    "flowlogs-error",  # the operator-facing message
    "flowlogs-source",  # topic/partition/offset the message came from
)
