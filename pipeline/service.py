"""`flowlogs worker`: assemble the store, sinks, FlowWorker and Faust app, and run them."""

from __future__ import annotations

import logging

import faust

from flowlogs.kafka import ensure_topics
from flowlogs.malloc import configure_allocators
from flowlogs.settings import Settings
from pipeline.app import create_app
from pipeline.close_log import CloseLog
from pipeline.sinks.clickhouse import ClickHouseSink
from pipeline.flow_log_registry import FlowLogFollower
from pipeline.rules_topic import RulesFollower
from pipeline.sinks.flows_process import FlowTopicSink
from pipeline.sinks.alerts import AlertSink
from pipeline.sinks.topic import AlertProducer, DeadLetterSink
from pipeline.store_client import open_store
from pipeline.worker import FlowWorker
from schemas import topics
from schemas.inventory import Inventory, load_inventory

log = logging.getLogger(__name__)


def api_url(settings: Settings) -> str:
    return f"http://{settings.worker.api_host}:{settings.worker.api_port}"


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run until SIGINT/SIGTERM; open windows are written and committed before exit."""
    # Before chDB's and the Kafka clients' threads start.
    configure_allocators(settings.worker)
    inventory = load_inventory(settings.worker.inventory) if settings.worker.inventory else Inventory()
    ensure_topics(settings)
    store = open_store(settings, api_url(settings))
    flows_sink = FlowTopicSink(settings)
    rules = RulesFollower(settings).start()
    flow_logs = FlowLogFollower(settings).start()
    try:
        if not rules.wait_caught_up(30):
            log.warning("the rules topic %s was not read to its end within 30 s; starting with the rules file", rules.topic)
        if not flow_logs.wait_caught_up(30):
            log.warning("the flow-logs topic %s was not read to its end within 30 s", flow_logs.topic)
        close_log = CloseLog(store, settings.topic(topics.FRAMES.suffix), settings.worker.window_seconds * 1_000_000_000)
        worker = FlowWorker(
            settings,
            store_sink=ClickHouseSink(store),
            flows_sink=flows_sink,
            dead_letter=DeadLetterSink(settings),
            inventory=inventory,
            close_log=close_log,
            alert_sink=AlertSink(AlertProducer(settings), store),
        )
        latest = rules.latest()
        if latest is not None:
            worker.rulebook.offer(latest, "the rules topic")
        worker.offer_flow_logs(flow_logs.flow_logs(), flow_logs.changes)
        app = create_app(settings, worker, store, rules, flow_logs)
        log.info("worker API on %s, store: %s", api_url(settings), store.describe())
        faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
    finally:
        flow_logs.stop()
        rules.stop()
        flows_sink.stop()
        store.stop()
