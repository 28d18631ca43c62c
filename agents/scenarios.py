"""Planted scenarios for the synthetic agent: traffic each detector should raise an alarm on.

A scenario is a set of planted flows that take a share of the synthetic packets (the
total rate and packet count stay those of the config, so a run with and without a
scenario has the same volume) from ``starts_after`` seconds of capture time on. What
each one plants, on the synthetic inventory's ENIs (``synthetic_inventory``):

* ``scan``: 198.51.100.66 sends SYN-only packets to 40 addresses (10.0.0.100–139) on
  tcp/22, seen on ENI 0 (an address scan), and 198.51.100.77 to 30 ports (1000–1029) of
  ENI 1's address (a port scan).
* ``threat``: three addresses of 185.220.101.0/24 (listed in :data:`THREAT_LIST`, a
  FireHOL netset) talk to ENI 2 on tcp/443.
* ``storm``: 10.0.1.77 broadcasts to its subnet (10.0.1.255, udp/137) and 10.0.1.78 to
  255.255.255.255 (udp/67) on ENI 1, at :data:`STORM_PPS` packets/s together.
* ``overuse``: one 1500-byte-packet flow to ENI 2 carries 40 % of the packets; with
  :func:`overuse_limit_bps` as ENI 2's limit it is over, and ordinary traffic is not.
* ``uncommon``: ENI 3 starts using tcp/6667 and GRE (protocol 47) after ``starts_after``
  (give it a learn period shorter than that: :func:`scenario_settings`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas import frame

SCENARIOS = ("scan", "threat", "storm", "overuse", "uncommon")
SYN, ACK, PSH = 0x02, 0x10, 0x08
SCAN_SOURCES = ("198.51.100.66", "198.51.100.77")
SCAN_HOSTS = tuple(f"10.0.0.{h}" for h in range(100, 140))
SCAN_PORTS = tuple(range(1000, 1030))
THREAT_ADDRESSES = ("185.220.101.4", "185.220.101.17", "185.220.101.33")
THREAT_LIST = """#
# demo-threats.netset: the synthetic agent's `threat` scenario (FireHOL netset format)
#
# Maintainer      : Flow Logs demo
# List source URL : agents/scenarios.py
#
185.220.101.0/24
10.0.0.0/8
"""
STORM_PPS = 2000.0
OVERUSE_SHARE = 0.4
OVERUSE_PACKET_BYTES = 1500
UNCOMMON = (("tcp", 6667), ("gre", 0))


@dataclass(frozen=True, slots=True)
class PlantedFlows:
    """Flows (one row each) that take ``share`` of the packets from ``starts_after`` s on."""

    src: np.ndarray  # V16
    dst: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    proto: np.ndarray
    flags: np.ndarray
    size: np.ndarray
    eni: np.ndarray
    direction: np.ndarray
    share: float
    starts_after: float = 0.0

    @property
    def size_flows(self) -> int:
        return len(self.src)


def _addresses(texts: list[str]) -> np.ndarray:
    return frame.ipv4_mapped(np.array([int(ipaddress.IPv4Address(t)) for t in texts], dtype=np.uint32))


def _flows(rows: list[tuple[str, str, int, int, int, int, int, int, int]], share: float, starts_after: float = 0.0) -> PlantedFlows:
    src, dst, sport, dport, proto, flags, size, eni, direction = zip(*rows)
    return PlantedFlows(
        src=_addresses(list(src)),
        dst=_addresses(list(dst)),
        sport=np.array(sport, np.uint16),
        dport=np.array(dport, np.uint16),
        proto=np.array(proto, np.uint8),
        flags=np.array(flags, np.uint8),
        size=np.array(size, np.uint32),
        eni=np.array(eni, np.uint16),
        direction=np.array(direction, np.uint8),
        share=share,
        starts_after=starts_after,
    )


def planted(name: str, eni_addresses: list[str], rate: float, starts_after: float = 0.0) -> PlantedFlows:
    """The flows scenario ``name`` plants, for ENIs with these addresses, at this packet rate."""
    ingress = frame.DIRECTION_INGRESS
    if name == "scan":
        rows = [(SCAN_SOURCES[0], h, 40000 + i, 22, 6, SYN, 60, 0, ingress) for i, h in enumerate(SCAN_HOSTS)]
        rows += [(SCAN_SOURCES[1], eni_addresses[1], 41000, p, 6, SYN, 60, 1, ingress) for p in SCAN_PORTS]
        return _flows(rows, 0.02, starts_after)
    if name == "threat":
        rows = [(a, eni_addresses[2], 50000 + i, 443, 6, SYN | ACK | PSH, 400, 2, ingress) for i, a in enumerate(THREAT_ADDRESSES)]
        return _flows(rows, 0.01, starts_after)
    if name == "storm":
        rows = [("10.0.1.77", "10.0.1.255", 137, 137, 17, 0, 92, 1, ingress), ("10.0.1.78", "255.255.255.255", 68, 67, 17, 0, 328, 1, ingress)]
        return _flows(rows, min(0.5, STORM_PPS / rate), starts_after)
    if name == "overuse":
        rows = [("198.51.100.200", eni_addresses[2], 443, 51000, 6, ACK | PSH, OVERUSE_PACKET_BYTES, 2, ingress)]
        return _flows(rows, OVERUSE_SHARE, starts_after)
    if name == "uncommon":
        rows = [(eni_addresses[3], "198.51.100.150", 52000, 6667, 6, ACK | PSH, 200, 3, frame.DIRECTION_EGRESS),
                (eni_addresses[3], "198.51.100.151", 0, 0, 47, 0, 300, 3, frame.DIRECTION_EGRESS)]
        return _flows(rows, 0.01, starts_after)
    raise ValueError(f"no scenario {name!r}: one of {', '.join(SCENARIOS)}")


def overuse_limit_bps(rate: float) -> float:
    """A limit for ENI 2 that the ``overuse`` flow exceeds (it alone carries 40 % of the
    packets at 1500 bytes: 4800 × rate bit/s) and ordinary synthetic traffic does not
    (packets of 28–1500 bytes, ~780 on average, spread over four or more ENIs)."""
    return 3000.0 * rate


def scenario_settings(names: tuple[str, ...], eni_ids: list[str], rate: float, window_seconds: int) -> dict[str, Any]:
    """The ``detect`` settings a demo of these scenarios needs (a limit, a short learn period)."""
    detect: dict[str, Any] = {}
    if "overuse" in names:
        detect["overrides"] = {eni_ids[2]: {"bandwidth": {"limit_bps": overuse_limit_bps(rate)}}}
    if "uncommon" in names:
        detect["uncommon"] = {"learn_seconds": 2 * window_seconds}
    return detect
