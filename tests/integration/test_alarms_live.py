"""Alarms end to end (real Kafka, a worker, chDB): planted scans raise one alert each that
updates as windows close; a threat list dropped into the watched directory while traffic
flows starts matching without a restart; alerts reach the alerts topic and the alerts table."""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer

from agents import scenarios
from agents.synthetic import SyntheticConfig, synthetic_inventory
from flowlogs.kafka import client_config, ensure_topics
from schemas import topics
from tests.integration.helpers import paced_agent

pytestmark = pytest.mark.integration


def read_alerts(consumer: Consumer, into: list[dict[str, Any]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and not message.error():
            into.append(orjson.loads(message.value()))


def test_planted_scans_and_a_list_reloaded_while_traffic_flows(settings_factory, worker_factory, tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "drop.txt").write_text("; Spamhaus DROP List\n1.10.16.0/20 ; SBL256894\n")
    inventory = tmp_path / "inventory.yaml"
    synthetic_inventory(4, 3).dump(inventory)
    settings = settings_factory(
        kafka={"session_timeout_seconds": 6},
        worker={"window_seconds": 5, "idle_close_seconds": 2.0, "allowed_lateness_seconds": 1.0, "inventory": str(inventory)},
        store={"batch_seconds": 0.3},
        detect={"threat_ip": {"lists": [str(lists)], "reload_seconds": 1}},
    )
    ensure_topics(settings)
    consumer = Consumer(client_config(settings, **{"group.id": "alert-reader", "auto.offset.reset": "earliest"}))
    consumer.subscribe([settings.topic(topics.ALERTS.suffix)])
    worker = worker_factory(settings)
    config = SyntheticConfig(enis=4, flows=1000, rate=10_000, duration=30, seed=3, scenarios=("scan", "threat"), chunk_packets=2048)
    agent, sent = paced_agent(settings, config)
    agent.start()
    alerts: list[dict[str, Any]] = []
    try:
        # The scans show in the first closed windows; the threat addresses are on no list yet.
        read_alerts(consumer, alerts, 14)
        assert {a["detector"] for a in alerts} == {"address_scan", "port_scan"}, alerts
        listed_at = time.time()
        (lists / "demo-threats.netset").write_text(scenarios.THREAT_LIST)
        agent.join(60)
        read_alerts(consumer, alerts, 12)
    finally:
        consumer.close()
    assert sent and sent[0].failed_frames == 0

    latest: dict[str, dict[str, Any]] = {}
    for a in alerts:
        latest[a["alert-id"]] = a
    scans = {a["detector"]: a for a in latest.values() if a["detector"].endswith("scan")}
    # One scan, one alarm each, raised again (same id) window after window with the same evidence.
    assert len(scans) == 2 and len([a for a in latest.values() if a["detector"].endswith("scan")]) == 2
    address, port = scans["address_scan"], scans["port_scan"]
    assert (address["source"], address["target"], address["counts"]["hosts"]) == (scenarios.SCAN_SOURCES[0], "tcp/22", 40)
    assert (port["source"], port["target"], port["counts"]["ports"]) == (scenarios.SCAN_SOURCES[1], "10.0.1.10", 30)
    assert address["updates"] >= 3
    threats = sorted((a["source"], a["target"]) for a in latest.values() if a["detector"] == "threat_ip")
    assert threats == sorted((t, "demo-threats:185.220.101.0/24") for t in scenarios.THREAT_ADDRESSES)
    # Matched only once the list was there: raised after it was written.
    assert all(a["raised-at"] >= listed_at for a in latest.values() if a["detector"] == "threat_ip")
    assert {a["detector"] for a in latest.values()} == {"address_scan", "port_scan", "threat_ip"}

    _, rows = worker.query("SELECT alert_id, detector, source, target, updates FROM alerts FINAL")
    assert sorted(tuple(r[:4]) for r in rows) == sorted((a["alert-id"], a["detector"], a["source"], a["target"]) for a in latest.values())
    assert {r[0]: r[4] for r in rows} == {a["alert-id"]: a["updates"] for a in latest.values()}
    stats = worker.stats()
    assert stats["alerts_unsent"] == 0 and stats["threat_lists_version"] == 2 and stats["alert_latencies"]

    # The same alerts through the API, filtered; and reports over the same flows.
    port_scans = worker.get("/alerts?detector=port_scan&since=1h")["alerts"]
    assert [(a["alert-id"], a["source"]) for a in port_scans] == [(port["alert-id"], scenarios.SCAN_SOURCES[1])]
    for bad in ("/alerts?state=burning", "/alerts?limit=0", "/reports/no-such-report", "/reports/top-talkers?by=srcaddr;DROP"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            worker.get(bad)
        assert refused.value.code == 400
        refused.value.close()  # an HTTPError holds the response's socket
    names = {r["name"] for r in worker.get("/reports")["reports"]}
    assert {"top-talkers", "bandwidth", "storm-sources", "overuse", "rejects-by-rule", "access-regions", "baselines"} <= names
    top = worker.get("/reports/top-talkers?since=1h&by=srcaddr&metric=packets&limit=3")
    assert top["columns"][0] == "src" and len(top["rows"]) == 3
