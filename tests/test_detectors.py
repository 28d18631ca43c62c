"""Detector semantics on hand-made flow records: what counts, what does not, and how one
incident stays one alert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowlogs.errors import ConfigError
from flowlogs.settings import Settings
from pipeline.detect.detectors import Detectors
from schemas.inventory import Eni, Inventory, Subnet, Vpc
from tests.detect_flows import Flow, columns

W = 60
INVENTORY = Inventory(
    vpcs=(Vpc(id="vpc-a", cidr="10.0.0.0/16"), Vpc(id="vpc-b", cidr="10.1.0.0/16")),
    subnets=(Subnet(id="sn-a", vpc="vpc-a", cidr="10.0.0.0/24"), Subnet(id="sn-b", vpc="vpc-b", cidr="10.1.0.0/24")),
    enis=(
        Eni(id="eni-a0", subnet="sn-a", ips=("10.0.0.10",)),
        Eni(id="eni-a1", subnet="sn-a", ips=("10.0.0.11",)),
        Eni(id="eni-b0", subnet="sn-b", ips=("10.1.0.10",)),
    ),
)
SYN, ACK, RST = 0x02, 0x10, 0x04


def detectors(**detect: Any) -> Detectors:
    return Detectors(Settings(worker={"window_seconds": W}, detect=detect), INVENTORY, ["eni-a0", "eni-a1", "eni-b0"])


def observe(d: Detectors, flows: list[Flow]) -> list[dict[str, Any]]:
    return d.observe([columns(flows)])


def kinds(alerts: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((a["detector"], a["source"], a["target"]) for a in alerts if a["state"] == "open")


def sweep(source: str, hosts: int, *, flags: int = SYN, action: str = "ACCEPT", window: int = 0, eni: int = 0, net: str = "10.0.0") -> list[Flow]:
    return [Flow(source, f"{net}.{100 + h}", 40000 + h, 22, flags=flags, action=action, window=window, eni=eni) for h in range(hosts)]


def test_failed_contacts_make_an_address_scan_and_answered_ones_count_little() -> None:
    d = detectors()
    assert kinds(observe(d, sweep("198.51.100.1", 24))) == []  # 24 < 25
    assert kinds(observe(d, sweep("198.51.100.1", 25, window=W))) == [("address_scan", "198.51.100.1", "tcp/22")]
    # A busy client: answered connections count nothing by default…
    busy = [Flow("10.0.0.10", f"203.0.{h // 250}.{h % 250}", 40000 + h % 20000, 443, flags=SYN | ACK) for h in range(1300)]
    assert kinds(observe(detectors(), busy)) == []
    # …and a little when asked to: 1300 × 0.02 = 26 ≥ 25.
    assert kinds(observe(detectors(scan={"answered_weight": 0.02}), busy)) == [("address_scan", "10.0.0.10", "tcp/443")]
    assert kinds(observe(detectors(scan={"answered_weight": 0.02}), busy[:1200])) == []


def test_rejected_flows_and_resets_are_failed_contacts() -> None:
    d = detectors()
    assert kinds(observe(d, sweep("198.51.100.2", 25, flags=ACK, action="REJECT"))) == [("address_scan", "198.51.100.2", "tcp/22")]
    # The hosts answered the SYNs with RST: closed ports, a port scan of one host.
    probes = [Flow("198.51.100.3", "10.0.0.10", 41000, p, flags=SYN) for p in range(1, 16)]
    resets = [Flow("10.0.0.10", "198.51.100.3", p, 41000, flags=RST | ACK, direction=1) for p in range(1, 16)]
    alerts = observe(detectors(), probes + resets)
    assert kinds(alerts) == [("port_scan", "198.51.100.3", "10.0.0.10")]
    assert alerts[0]["counts"]["ports"] == 15 and alerts[0]["counts"]["flows"] == 30


def test_scans_in_one_batch_are_each_reported_with_their_own_counts() -> None:
    d = detectors()
    observe(d, sweep("198.51.100.8", 10))
    alerts = observe(d, sweep("198.51.100.8", 30, window=W) + sweep("198.51.100.9", 26, window=W)
                     + [Flow("198.51.100.9", "10.0.0.100", 40000, 22, flags=SYN | ACK, window=W)])
    counts = {a["source"]: (a["counts"]["hosts"], a["counts"]["failed"], a["counts"]["answered"], a["first-seen"]) for a in alerts}
    # .8: 30 hosts, 10 of them seen a window before; .9: its first host answered after all.
    assert counts == {"198.51.100.8": (30, 30, 0, 0), "198.51.100.9": (26, 25, 1, W)}


def test_the_scan_state_is_bounded_and_forgets_the_contacts_seen_longest_ago() -> None:
    """Over ``max_scan_contacts``, the oldest contacts go first: a slow sweep whose start was
    forgotten is not reported; the forgetting is counted."""
    noise = [Flow(f"203.0.{i // 250}.{i % 250}", "10.0.0.10", 40000, 23, action="REJECT", window=W) for i in range(2000)]
    runs = {}
    for limit in (2_000_000, 1000):
        d = detectors(max_scan_contacts=limit)
        observe(d, sweep("198.51.100.7", 20, window=0))
        observe(d, noise)  # 2000 one-contact sources: no scan, but remembered
        runs[limit] = (kinds(observe(d, [Flow("198.51.100.7", f"10.0.0.{200 + h}", 41000 + h, 22, flags=SYN, window=2 * W) for h in range(5)])),
                       d.snapshot()["scan_contacts"], d.snapshot()["scan_contacts_evicted"])
    assert runs[2_000_000] == ([("address_scan", "198.51.100.7", "tcp/22")], 2025, 0)
    assert runs[1000] == ([], 1000, 1025)  # 1020 after the noise, 5 more after the last sweep


def test_the_scan_tallies_equal_a_count_of_the_remembered_contacts_after_many_batches() -> None:
    """Batches that repeat, answer and add contacts, merged in one by one (with evictions):
    each group's tally — contacts, failed-never-answered, answered — equals a count over the
    contacts the detector still remembers, and the contacts stay sorted and distinct."""
    import numpy as np

    rng = np.random.default_rng(7)
    d = detectors(max_scan_contacts=1000)
    for window in range(8):
        flows = [
            Flow(f"198.51.100.{rng.integers(1, 20)}", f"10.0.0.{rng.integers(1, 200)}", 40000 + int(rng.integers(0, 3)),
                 int(rng.choice([22, 80, 443])), flags=int(rng.choice([SYN, SYN | ACK, ACK | RST])),
                 action=str(rng.choice(["ACCEPT", "REJECT"])), window=window * W, eni=int(rng.integers(0, 3)))
            for _ in range(int(rng.integers(300, 700)))
        ]
        observe(d, flows)
    state = d.scans._state
    assert (np.diff(state["contact"].astype(np.float64)) > 0).all() or state["contact"].size < 2
    assert d.snapshot()["scan_contacts"] == state["contact"].size <= 1000
    assert d.snapshot()["scan_contacts_evicted"] > 0
    for column, tally in d.scans._tallies.items():
        groups, members = np.unique(state[column], return_counts=True)
        full = np.array([(state["failed"] & ~state["answered"])[state[column] == g].sum() for g in groups])
        answered = np.array([state["answered"][state[column] == g].sum() for g in groups])
        assert tally.group.tolist() == groups.tolist()
        assert tally.counts["distinct"].tolist() == members.tolist()
        assert tally.counts["full"].tolist() == full.tolist()
        assert tally.counts["answered"].tolist() == answered.tolist()


def test_a_server_answering_many_connections_of_one_client_is_not_a_port_scan() -> None:
    client = [Flow("203.0.113.9", "10.0.0.10", 40000 + i, 22, flags=SYN | ACK) for i in range(40)]
    server = [Flow("10.0.0.10", "203.0.113.9", 22, 40000 + i, flags=SYN | ACK, direction=1) for i in range(40)]
    assert kinds(observe(detectors(), client + server)) == []


def test_one_scan_is_one_alert_that_updates_then_closes() -> None:
    d = detectors(quiet_seconds=300)
    first = observe(d, sweep("198.51.100.4", 30, window=0))
    second = observe(d, sweep("198.51.100.4", 5, window=W))  # the same scan goes on
    assert [a["alert-id"] for a in first] == [a["alert-id"] for a in second]
    assert (first[0]["updates"], second[0]["updates"]) == (0, 1)
    assert second[0]["counts"]["hosts"] == 30 and second[0]["first-seen"] == 0 and second[0]["last-seen"] == 2 * W
    # Quiet for 300 s of event time (window ends, not the wall clock): closed, once.
    closed = observe(d, [Flow("203.0.113.1", "10.0.0.10", 40000, 443, window=7 * W)])
    assert [(a["alert-id"], a["state"]) for a in closed] == [(first[0]["alert-id"], "closed")]
    again = observe(d, sweep("198.51.100.4", 30, window=8 * W))
    assert again[0]["state"] == "open" and again[0]["alert-id"] != first[0]["alert-id"]


def test_scan_thresholds_follow_the_vpc() -> None:
    d = detectors(overrides={"vpc-b": {"scan": {"hosts": 5}}})
    assert kinds(observe(d, sweep("198.51.100.5", 6, eni=0))) == []
    assert kinds(observe(d, sweep("198.51.100.5", 6, eni=2, net="10.1.0"))) == [("address_scan", "198.51.100.5", "tcp/22")]


def _broadcasts(eni: int, pps: float, window: int = 0) -> list[Flow]:
    return [Flow("10.0.0.77", "10.0.0.255", 137, 137, proto=17, packets=int(pps * W), bytes=int(pps * W) * 92, eni=eni, window=window)]


def test_broadcast_storm_per_eni_and_per_subnet() -> None:
    # 600 + 600 packets/s on two ENIs of one subnet: no ENI is over 1000, the subnet is.
    flows = _broadcasts(0, 600) + _broadcasts(1, 600)
    assert kinds(observe(detectors(), flows)) == []
    alerts = observe(detectors(storm={"per": "subnet"}), flows)
    assert [(a["detector"], a["interface-id"], a["counts"]["packets_per_second"]) for a in alerts] == [("broadcast_storm", "-", 1200.0)]
    assert "sn-a" in alerts[0]["summary"]
    multicast = [Flow("10.0.0.78", "239.255.255.250", 1900, 1900, proto=17, packets=1100 * W, eni=0)]
    assert [a["detector"] for a in observe(detectors(), multicast)] == ["broadcast_storm"]


def _traffic(eni: int, bps: float, window: int, status: str = "OK") -> Flow:
    return Flow("10.0.0.10", "203.0.113.5", 40000, 443, bytes=int(bps * W / 8), packets=1000, eni=eni, window=window, status=status)


def test_bandwidth_over_the_limit_and_over_the_baseline() -> None:
    d = detectors(overrides={"eni-a1": {"bandwidth": {"limit_bps": 5e6}}})
    for w in range(30):  # the baseline: 2 Mbit/s on eni-a0 and eni-a1
        assert observe(d, [_traffic(0, 2e6, w * W), _traffic(1, 2e6, w * W)]) == []
    alerts = observe(d, [_traffic(0, 7e6, 30 * W), _traffic(1, 7e6, 30 * W)])
    assert sorted((a["interface-id"], a["target"], a["severity"]) for a in alerts) == [
        ("eni-a0", "baseline", "low"), ("eni-a1", "limit", "medium"),
    ]
    by = {a["interface-id"]: a["counts"] for a in alerts}
    assert by["eni-a0"]["p95_bps"] == pytest.approx(2e6, rel=1e-3) and by["eni-a1"]["limit_bps"] == 5e6
    # A window that lost packets (SKIPDATA) says nothing about bandwidth either way.
    assert observe(d, [_traffic(1, 9e6, 31 * W, status="SKIPDATA")]) == []


def test_uncommon_protocols_after_the_learning_period() -> None:
    d = detectors(uncommon={"learn_seconds": 2 * W})
    learned = [Flow("10.0.0.10", "203.0.113.5", 40000, 5432, window=0), Flow("10.0.0.10", "203.0.113.5", 40001, 5432, window=W)]
    assert observe(d, learned) == []
    later = [
        Flow("10.0.0.10", "203.0.113.5", 40002, 5432, window=3 * W),  # learned
        Flow("10.0.0.10", "203.0.113.6", 40003, 443, window=3 * W),  # allowed by default
        Flow("10.0.0.10", "203.0.113.7", 40004, 8443, window=3 * W),
        Flow("10.0.0.10", "203.0.113.7", 40005, 9443, window=3 * W),
        Flow("10.0.0.10", "203.0.113.8", 0, 0, proto=47, window=3 * W),
        Flow("10.0.0.10", "203.0.113.9", 40006, 6667, flags=SYN, window=3 * W),  # never answered: not "used"
    ]
    alerts = observe(d, later)
    assert sorted((a["interface-id"], a["target"]) for a in alerts) == [
        ("eni-a0", "gre"), ("eni-a0", "tcp/8443, tcp/9443"),
    ]


def test_a_bad_allowlist_fails_at_start() -> None:
    with pytest.raises(ConfigError, match="tcp/99999"):
        detectors(uncommon={"allow": ["tcp/99999"]})


def test_threat_ips_of_rejected_flows_are_low_severity(tmp_path: Path) -> None:
    listed = tmp_path / "drop.txt"
    listed.write_text("; Spamhaus DROP List\n45.9.20.0/22 ; SBL123\n")
    d = detectors(threat_ip={"lists": [str(listed)]})
    alerts = observe(d, [Flow("45.9.21.7", "10.0.0.10", 40000, 22, action="REJECT", flags=SYN)])
    assert [(a["detector"], a["source"], a["target"], a["severity"]) for a in alerts] == [
        ("threat_ip", "45.9.21.7", "drop:45.9.20.0/22", "low")
    ]
    assert "SBL123" in alerts[0]["summary"]
