"""Worker metrics, readiness and the Grafana dashboard, on real Kafka and chDB: /metrics scraped
while a paced agent publishes, /ready, and every metric, table and column the dashboard uses
checked against a live worker."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.synthetic import SyntheticConfig, synthetic_inventory
from flowlogs import __version__
from flowlogs.settings import Settings
from pipeline.api_auth import bearer
from pipeline.process import WorkerProcess
from schemas import alerts
from tests.integration.helpers import paced_agent, wait_for

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "flowlogs.json"
SCHEMA_DDL = Path(__file__).resolve().parents[2] / "schemas" / "generated" / "flows.sql"
P = "flowlogs_worker_"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# Families every scrape has, traffic or not.
FAMILIES = {
    P + name for name in (
        "info", "packets", "frames", "late_packets", "windows_closed", "flows_closed", "agent_dropped_packets",
        "duplicate_frames", "reordered_frames", "lost_frames", "skipped_windows", "dead_letters", "records_written",
        "sink_write_failures", "sink_write_retries", "alerts", "alert_latency_seconds", "flush_duration_seconds",
        "consumer_lag_messages", "assigned_partitions", "open_windows", "pending_rows", "rule_set_version",
        "threat_lists_version", "alerts_open", "scan_contacts", "scan_contacts_evicted",
    )
}



def scrape(worker: WorkerProcess) -> tuple[set[str], Samples]:
    """GET /metrics without a token: (family names, {(sample name, labels): value})."""
    with urllib.request.urlopen(worker.api + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    families, samples = set(), {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(P + name, tuple(sorted(labels.items())))]


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(k)[label]: v for (n, k), v in samples.items() if n == P + name}


def ready(worker: WorkerProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(worker.api + "/ready", timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:  # closed here, not by the garbage collector in a later test
            return exc.code, json.loads(exc.read())


def api(worker: WorkerProcess, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A read (or, with a body, a POST) with the API token: these tests require it for reads."""
    data = None if body is None else json.dumps(body).encode()
    headers = {**bearer(worker.settings), "Content-Type": "application/json"}
    request = urllib.request.Request(worker.api + path, data=data, headers=headers, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return dict(json.loads(response.read()))


def wait_ready(worker: WorkerProcess, timeout: float = 90) -> dict[str, Any]:
    seen: list[tuple[int, dict[str, Any]]] = []

    def is_ready() -> bool:
        status, body = ready(worker)
        seen.append((status, body))
        assert status in (200, 503), (status, body)
        assert body["ready"] is (status == 200) and bool(body["missing"]) is (status == 503), body
        return status == 200

    wait_for(is_ready, timeout, f"/ready to answer 200 (last: {seen[-1:] or 'nothing'})")
    return seen[-1][1]


def streaming(settings_factory: Callable[..., Settings], tmp_path: Path, enis: int, seed: int) -> Settings:
    inventory = tmp_path / "inventory.yaml"
    synthetic_inventory(enis, seed).dump(inventory)
    return settings_factory(
        kafka={"session_timeout_seconds": 6},
        worker={"window_seconds": 5, "idle_close_seconds": 2.0, "allowed_lateness_seconds": 1.0, "inventory": str(inventory)},
        store={"batch_seconds": 0.3},
        api={"token_for_reads": True},  # /metrics and /ready must not need it
    )


def test_metrics_scraped_while_traffic_flows(settings_factory, worker_factory, tmp_path: Path) -> None:
    settings = streaming(settings_factory, tmp_path, enis=6, seed=3)
    worker = worker_factory(settings)
    body = wait_ready(worker)
    assert body["partitions"] == list(range(settings.kafka.partitions)) and body["caught_up"] == {"rules": True, "flow-logs": True}

    config = SyntheticConfig(enis=6, flows=1000, rate=10_000, duration=15, seed=3, scenarios=("scan",), chunk_packets=2048)
    agent, sent = paced_agent(settings, config)
    during: list[Samples] = []
    agent.start()
    started = time.monotonic()
    while agent.is_alive() and time.monotonic() - started < 60:
        time.sleep(3.5)
        if agent.is_alive():
            families, samples = scrape(worker)
            assert FAMILIES <= families, FAMILIES - families
            during.append(samples)
    agent.join(60)
    assert sent and sent[0].failed_frames == 0 and sent[0].dropped_packets == 0
    packets_sent = sent[0].packets
    assert len(during) >= 2, "the agent ended before /metrics was scraped twice"

    # Counters only go up between scrapes, and the traffic made them go up.
    counters = [k for k in during[0] if k[0].endswith("_total")]
    for earlier, later in zip(during, during[1:]):
        assert all(later[k] >= earlier[k] for k in counters), [k for k in counters if later[k] < earlier[k]]
    first, last = during[0], during[-1]
    for name in ("packets_total", "frames_total"):
        assert value(last, name) > value(first, name) > 0, name
    assert all(value(s, "packets_total") <= packets_sent for s in during)
    assert value(last, "windows_closed_total") > 0
    assert value(last, "flush_duration_seconds_count") > 0 and value(last, "flush_duration_seconds_sum") > 0
    assert set(by_label(last, "consumer_lag_messages", "partition")) == {str(p) for p in range(settings.kafka.partitions)}
    assert all(v >= 0 for v in by_label(last, "consumer_lag_messages", "partition").values())

    # Every frame read, then every window written: the totals meet what was sent.
    wait_for(lambda: value(scrape(worker)[1], "packets_total") == packets_sent, 60, "every packet consumed")
    worker.post("/drain")
    _, after = scrape(worker)
    assert value(after, "packets_total") == packets_sent
    assert value(after, "frames_total") == sent[0].delivered_frames
    assert set(by_label(after, "consumer_lag_messages", "partition").values()) == {0}
    assert value(after, "open_windows") == 0 and value(after, "pending_rows") == 0
    stored = api(worker, "/query", {"sql": "SELECT count() FROM flows"})["rows"][0][0]
    assert value(after, "records_written_total", sink="store") == stored > 0
    assert value(after, "records_written_total", sink="topic") == stored  # no flow log: everything to both
    for counter in ("sink_write_failures_total", "sink_write_retries_total"):
        assert by_label(after, counter, "sink") == {"store": 0, "topic": 0, "alerts": 0}
    for counter in ("dead_letters_total", "late_packets_total", "agent_dropped_packets_total", "duplicate_frames_total"):
        assert value(after, counter) == 0, counter
    assert value(after, "lost_frames") == 0

    # The planted scans: alerts per detector agree with the worker's own counters.
    stats = api(worker, "/stats")
    raised = {(dict(k)["detector"], dict(k)["event"]): v for (n, k), v in after.items() if n == P + "alerts_total"}
    assert set(raised) == {(d, e) for d in alerts.DETECTORS for e in ("raised", "updated", "closed")}
    assert sum(v for (_, e), v in raised.items() if e == "raised") == stats["alerts_raised"] >= 2
    assert raised[("address_scan", "raised")] >= 1 and raised[("port_scan", "raised")] >= 1
    assert sum(v for (_, e), v in raised.items() if e == "updated") == stats["alerts_updated"]
    assert value(after, "alert_latency_seconds_count") >= 1
    assert value(after, "alerts_open") == stats["alerts_open"]
    assert value(after, "scan_contacts") == stats["scan_contacts"] > 0
    assert value(after, "scan_contacts_evicted_total") == stats["scan_contacts_evicted"] == 0
    assert value(after, "rule_set_version") == stats["rule_set_version"] == 0
    info = [dict(k) for (n, k) in after if n == P + "info"]
    assert info == [{"version": __version__, "app_id": settings.worker.app_id, "window_seconds": "5"}]
    assert ready(worker)[0] == 200
    # Reads need the token here; /metrics and /ready above went without it.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(worker.api + "/stats", timeout=10)
    with refused.value:
        assert refused.value.code == 401


# ClickHouse plugin macros as Grafana expands them, for running the dashboard's SQL as is.
def _expand(sql: str, database: str, since: int, until: int) -> str:
    sql = re.sub(r"\$__conditionalAll\((.*?),\s*\$\w+\)", "1", sql)
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"(\1 >= toDateTime({since}) AND \1 <= toDateTime({until}))", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({since})").replace("$__toTime", f"toDateTime({until})")
    sql = sql.replace("$__interval_s", "60").replace("${database}", database)
    assert "$" not in sql, f"a macro the test does not expand: {sql}"
    return sql


def _dashboard_queries() -> tuple[list[str], dict[str, str]]:
    """(Prometheus expressions, {panel title: ClickHouse SQL}) of every panel and template variable."""
    board = json.loads(DASHBOARD.read_text())
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["prometheus"]["type"] == "datasource" and variables["prometheus"]["query"] == "prometheus"
    assert variables["clickhouse"]["type"] == "datasource" and variables["clickhouse"]["query"] == "grafana-clickhouse-datasource"
    exprs: list[str] = []
    sqls: dict[str, str] = {}
    for variable in variables.values():
        query = variable.get("query")
        if isinstance(query, dict) and "rawSql" in query:
            sqls[f"variable {variable['name']}"] = query["rawSql"]
        elif isinstance(query, dict):
            exprs.append(query["query"])
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            kind = target["datasource"]["type"]
            assert kind in ("prometheus", "grafana-clickhouse-datasource"), kind
            assert target["datasource"]["uid"] == ("${prometheus}" if kind == "prometheus" else "${clickhouse}")
            if kind == "prometheus":
                exprs.append(target["expr"])
            else:
                sqls[f"{panel['title']} {target['refId']}"] = target["rawSql"]
    return exprs, sqls


def test_every_metric_and_table_of_the_dashboard_exists(settings_factory, worker_factory, tmp_path: Path) -> None:
    exprs, sqls = _dashboard_queries()
    metric_names = {m for e in exprs for m in re.findall(r"\bflowlogs_[a-z0-9_]+", e)}
    tables = {t for s in sqls.values() for t in re.findall(r"\b(?:FROM|JOIN)\s+(?:\$\{database\}\.)?([A-Za-z_]\w*)", s, re.IGNORECASE)}
    assert len(metric_names) >= 15 and {"flows", "flows_1m", "flows_1h", "alerts"} <= tables
    in_schema = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA_DDL.read_text()))
    assert tables <= in_schema, tables - in_schema

    settings = streaming(settings_factory, tmp_path, enis=4, seed=5)
    worker = worker_factory(settings)
    wait_ready(worker)
    config = SyntheticConfig(enis=4, flows=300, rate=10_000, duration=6, seed=5, scenarios=("scan",), chunk_packets=2048)
    agent, sent = paced_agent(settings, config)
    agent.start()
    agent.join(60)
    assert sent and sent[0].failed_frames == 0
    wait_for(lambda: value(scrape(worker)[1], "packets_total") == sent[0].packets, 60, "every packet consumed")
    worker.post("/drain")

    _, samples = scrape(worker)
    scraped = {name for name, _ in samples}
    assert metric_names <= scraped, f"the dashboard uses metrics /metrics does not have: {sorted(metric_names - scraped)}"

    # Every SQL of the dashboard runs against the live store: its tables and columns exist.
    now = int(time.time())
    rows = {
        title: api(worker, "/query", {"sql": _expand(sql, settings.store.database, now - 3600, now + 600)})["rows"]
        for title, sql in sqls.items()
    }
    for title in ("Traffic by ENI (1-minute rollup) A", "Traffic by ENI (hourly rollup, long ranges) A", "Top talkers A", "variable eni"):
        assert rows[title], f"{title}: no rows after traffic flowed"
    assert {r[0] for r in rows["variable eni"]} == {e.id for e in synthetic_inventory(4, 5).enis}
