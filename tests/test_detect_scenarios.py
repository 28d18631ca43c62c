"""Each planted scenario of the synthetic agent raises exactly its alarm; ordinary traffic
of the same volume raises none. Packets → flows → records → detectors, as the worker does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents import scenarios
from agents.synthetic import SyntheticConfig, SyntheticTraffic
from flowlogs.settings import Settings
from pipeline.detect.detectors import Detectors
from pipeline.flow_table import aggregate_packets
from pipeline.records import FlowRecordBuilder
from schemas import frame

WINDOW = 5
START_NS = 1_700_000_000 * 10**9  # a multiple of the window
RATE = 20_000.0


def detect_synthetic(config: SyntheticConfig, detect: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The newest state of every alert raised while the config's traffic is detected window by window."""
    traffic = SyntheticTraffic(config)
    settings = Settings(worker={"window_seconds": WINDOW}, detect=detect)
    eni_ids = list(traffic.eni_ids)
    detectors = Detectors(settings, traffic.inventory, eni_ids)
    builder = FlowRecordBuilder(eni_ids, traffic.inventory.placement(), WINDOW * 10**9)
    packets = frame.concatenate([b.packets for b in traffic.batches()])
    cols = builder.columns(aggregate_packets(packets, packets.eni.astype(np.uint32), WINDOW * 10**9))
    alerts: dict[str, dict[str, Any]] = {}
    for start in np.unique(cols["window_start"]).tolist():
        one = {k: (v if k == "rule_id_values" else v[cols["window_start"] == start]) for k, v in cols.items()}
        for alert in detectors.observe([one]):
            alerts[alert["alert-id"]] = alert
    return alerts


def _config(*names: str, starts_after: float = 0.0) -> SyntheticConfig:
    return SyntheticConfig(
        enis=4, flows=1000, rate=RATE, duration=30, seed=5, pace=False, start_ns=START_NS,
        scenarios=names, scenario_starts_after=starts_after,
    )


def _detect_settings(tmp_path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    threats = tmp_path / "demo-threats.netset"
    threats.write_text(scenarios.THREAT_LIST)
    eni_ids = list(SyntheticTraffic(_config()).eni_ids)
    return {**scenarios.scenario_settings(names, eni_ids, RATE, WINDOW), "threat_ip": {"lists": [str(threats)]}}


ALL = scenarios.SCENARIOS


def test_ordinary_traffic_of_the_same_volume_raises_no_alarm(tmp_path: Path) -> None:
    assert detect_synthetic(_config(), _detect_settings(tmp_path, ALL)) == {}


def _only(alerts: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((a["detector"], a["source"], a["target"]) for a in alerts.values())


def test_scan(tmp_path: Path) -> None:
    alerts = detect_synthetic(_config("scan"), _detect_settings(tmp_path, ALL))
    eni1 = "10.0.1.10"
    assert _only(alerts) == [
        ("address_scan", scenarios.SCAN_SOURCES[0], "tcp/22"),
        ("port_scan", scenarios.SCAN_SOURCES[1], eni1),
    ]
    by = {a["detector"]: a for a in alerts.values()}
    assert by["address_scan"]["counts"]["hosts"] == len(scenarios.SCAN_HOSTS) == by["address_scan"]["counts"]["failed"]
    assert by["port_scan"]["counts"]["ports"] == len(scenarios.SCAN_PORTS) == by["port_scan"]["counts"]["failed"]
    assert by["address_scan"]["interface-id"] == SyntheticTraffic(_config()).eni_ids[0]
    # One scan, one alarm: raised in the first window, then updated window after window.
    assert by["address_scan"]["updates"] >= 4 and by["address_scan"]["state"] == "open"


def test_threat(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    alerts = detect_synthetic(_config("threat"), _detect_settings(tmp_path, ALL))
    assert _only(alerts) == sorted(("threat_ip", a, "demo-threats:185.220.101.0/24") for a in scenarios.THREAT_ADDRESSES)
    assert {a["severity"] for a in alerts.values()} == {"high"}  # accepted: they got in
    assert "10.0.0.0/8" in caplog.text  # the private range in the list was ignored, with a warning


def test_storm(tmp_path: Path) -> None:
    alerts = detect_synthetic(_config("storm"), _detect_settings(tmp_path, ALL))
    eni1 = SyntheticTraffic(_config()).eni_ids[1]
    assert [(a["detector"], a["interface-id"]) for a in alerts.values()] == [("broadcast_storm", eni1)]
    pps = next(iter(alerts.values()))["counts"]["packets_per_second"]
    assert scenarios.STORM_PPS * 0.9 < pps < scenarios.STORM_PPS * 1.1


def test_overuse(tmp_path: Path) -> None:
    alerts = detect_synthetic(_config("overuse"), _detect_settings(tmp_path, ALL))
    eni2 = SyntheticTraffic(_config()).eni_ids[2]
    assert [(a["detector"], a["interface-id"], a["target"]) for a in alerts.values()] == [("bandwidth_overuse", eni2, "limit")]
    counts = next(iter(alerts.values()))["counts"]
    assert counts["bps"] > counts["limit_bps"] == scenarios.overuse_limit_bps(RATE)


def test_uncommon(tmp_path: Path) -> None:
    alerts = detect_synthetic(_config("uncommon", starts_after=3 * WINDOW), _detect_settings(tmp_path, ALL))
    eni3 = SyntheticTraffic(_config()).eni_ids[3]
    assert sorted((a["detector"], a["interface-id"], a["target"]) for a in alerts.values()) == [
        ("uncommon_protocol", eni3, "gre"),
        ("uncommon_protocol", eni3, "tcp/6667"),
    ]
    assert min(a["first-seen"] for a in alerts.values()) == START_NS // 10**9 + 3 * WINDOW


def test_all_scenarios_at_once_raise_each_alarm_and_nothing_else(tmp_path: Path) -> None:
    alerts = detect_synthetic(_config(*ALL, starts_after=3 * WINDOW), _detect_settings(tmp_path, ALL))
    eni_ids = SyntheticTraffic(_config()).eni_ids
    assert sorted((a["detector"], a["source"]) for a in alerts.values()) == sorted(
        [("address_scan", scenarios.SCAN_SOURCES[0]), ("port_scan", scenarios.SCAN_SOURCES[1])]
        + [("threat_ip", t) for t in scenarios.THREAT_ADDRESSES]
        + [("broadcast_storm", next(a["source"] for a in alerts.values() if a["detector"] == "broadcast_storm"))]
        + [("bandwidth_overuse", eni_ids[2])]
        + [("uncommon_protocol", eni_ids[3])] * 2
        # The storm starts after the learning period too: its udp/67 and udp/137 are new on ENI 1.
        + [("uncommon_protocol", eni_ids[1])]
    )
