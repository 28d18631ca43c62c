"""RuleBook: the rule set a worker evaluates flows against, and how a new one takes over.

A worker starts with the rule set of ``worker.rules`` (a file) or none (everything
ACCEPT, version 0). Rule sets published with ``flowlogs rules apply`` reach every worker
through the compacted rules topic (``pipeline.rules_topic.RulesFollower``); the worker
offers each to its RuleBook, which validates and compiles it and swaps it in. An invalid
or older rule set is refused with a log line that names the problem; the running version
stays. Closes written from then on carry the new version on every record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import orjson

from flowlogs.errors import ConfigError
from pipeline.verdicts import VerdictEvaluator
from schemas.inventory import Inventory
from schemas.rules import RuleSet, load_rules, parse_rules

log = logging.getLogger(__name__)


class RuleBook:
    """The compiled rule set in force (``evaluator``); swapped whole, so a batch that takes
    ``evaluator`` once is evaluated against one version."""

    def __init__(self, inventory: Inventory, eni_ids: Sequence[str], rules_file: Path | None = None) -> None:
        self.inventory = inventory
        self._eni_ids = eni_ids  # the worker's ENI registry (grows; the evaluator follows it)
        self.evaluator = VerdictEvaluator.compile(load_rules(rules_file) if rules_file else RuleSet(), inventory, eni_ids)
        self.refused = 0

    @property
    def version(self) -> int:
        return self.evaluator.rules.version

    def offer(self, data: bytes, source: str) -> bool:
        """A rule set as published on the rules topic; True when it is now in force."""
        try:
            rules = parse_rules(orjson.loads(data), source)
        except (orjson.JSONDecodeError, ConfigError) as exc:
            self.refused += 1
            log.error("rule set from %s refused, version %d stays in force: %s", source, self.version, exc)
            return False
        if rules.version <= self.version:
            if rules.version < self.version:
                log.warning("rule set version %d from %s is older than %d in force: ignored", rules.version, source, self.version)
            return False
        self.evaluator = VerdictEvaluator.compile(rules, self.inventory, self._eni_ids)
        log.info("rule set version %d from %s in force (%d rules)", rules.version, source, len(self.evaluator.rule_ids))
        return True
