"""Flow logs: what to record, where — the user-facing unit of configuration.

A flow log covers a scope (every ENI, a VPC, a subnet or one ENI: a VPC or subnet flow log
covers every ENI the inventory places in it), keeps the records its filter selects
(``ALL``, ``ACCEPT`` or ``REJECT``; NODATA/SKIPDATA rows always), at its window length,
and sends them to its destinations (the store's flows table, the flows topic, or both).
ENIs no enabled flow log covers produce no records.

Flow logs live on the compacted ``flow-logs.v1`` topic, keyed by id (a deleted one is a
tombstone), so every worker follows the same set within seconds. A worker group
aggregates at one window length (``worker.window_seconds``) and serves the flow logs of
that length; run another group (another ``worker.app_id``) for another length.

While no flow log was ever created, one implicit flow log records everything (``ALL``
over every ENI, both destinations, ``worker.record_filter``): a fresh install works out of
the box. The first flow log created replaces it.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TOPIC_SUFFIX = "flow-logs.v1"
DEFAULT_ID = "fl-default"
ID_PATTERN = re.compile(r"^fl-[0-9a-z-]{1,40}$")
SCOPE_PATTERN = re.compile(r"^(all|(vpc|subnet|eni):[A-Za-z0-9._:-]{1,128})$")
FILTERS = ("ALL", "ACCEPT", "REJECT")
DESTINATIONS = ("store", "topic")

Filter = Literal["ALL", "ACCEPT", "REJECT"]
Destination = Literal["store", "topic"]


class FlowLogChange(BaseModel):
    """The fields a user sets (create: all but name have defaults; update: any of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, min_length=1, max_length=64)
    scope: str | None = Field(None, description="all, vpc:ID, subnet:ID or eni:ID")
    filter: Filter | None = None
    window_seconds: int | None = Field(None, ge=5, le=600)
    destinations: tuple[Destination, ...] | None = Field(None, min_length=1)
    enabled: bool | None = None

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str | None) -> str | None:
        if value is not None and not SCOPE_PATTERN.fullmatch(value):
            raise ValueError("give all, vpc:ID, subnet:ID or eni:ID")
        return value

    @field_validator("destinations")
    @classmethod
    def _unique(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("name each destination once")
        return value


class FlowLog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN.pattern)
    name: str = Field(min_length=1, max_length=64)
    scope: str = Field("all", pattern=SCOPE_PATTERN.pattern)
    filter: Filter = "ALL"
    window_seconds: int = Field(60, ge=5, le=600)
    destinations: tuple[Destination, ...] = ("store", "topic")
    enabled: bool = True
    version: int = Field(0, ge=0, description="+1 on every change")
    updated_at: float = 0.0

    @classmethod
    def create(cls, change: FlowLogChange, *, window_seconds: int) -> "FlowLog":
        """A new flow log from a create request (ValueError when its name is missing)."""
        if change.name is None:
            raise ValueError("a flow log needs a name")
        fields = {k: v for k, v in change.model_dump().items() if v is not None}
        fields.setdefault("window_seconds", window_seconds)
        return cls(id=f"fl-{secrets.token_hex(4)}", **fields, version=1, updated_at=time.time())

    def changed(self, change: FlowLogChange) -> "FlowLog":
        fields = {k: v for k, v in change.model_dump().items() if v is not None}
        return self.model_copy(update={**fields, "version": self.version + 1, "updated_at": time.time()})

    def scope_parts(self) -> tuple[str, str]:
        """(kind, id) of the scope; ('all', '') for every ENI."""
        kind, _, ident = self.scope.partition(":")
        return kind, ident
