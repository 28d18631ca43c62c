"""Synthetic traffic: a deterministic packet-metadata generator for demos, tests and benchmarks.

Packets are built a chunk at a time with numpy. Flows are drawn from a Zipf-like law so
a few talk a lot (a top-talkers table worth reading). With ``pace=True`` capture times are
the wall clock and the generator sleeps to keep the rate; with ``pace=False`` capture
times advance at the nominal rate from ``start_ns`` but chunks come as fast as they can be
made — the same seed then gives the same packets, which tests rely on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from agents import scenarios
from agents.source import PacketBatch
from schemas import frame
from schemas.inventory import Eni, Inventory, Subnet, Vpc

_TCP, _UDP, _ICMP = 6, 17, 1
_WELL_KNOWN = np.array([443, 80, 53, 22, 3306, 5432, 6379, 8080, 9092, 123], dtype=np.uint16)
# Flags of established conversations: ACK, PSH|ACK, SYN|ACK, FIN|ACK. No SYN-only openers or
# RSTs: unanswered SYNs and resets are what scans look like (agents/scenarios.py plants them).
_TCP_FLAG_CHOICES = np.array([0x10, 0x18, 0x18, 0x18, 0x12, 0x11], dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    enis: int = 4
    flows: int = 1000
    rate: float = 20_000.0  # packets per second
    duration: float = 10.0  # seconds of capture time
    seed: int = 1
    pace: bool = True
    start_ns: int | None = None  # first capture time when pace is False; default: now
    chunk_packets: int = 65_536
    zipf: float = 1.1  # flow popularity exponent; 0 = every flow equally likely
    scenarios: tuple[str, ...] = ()  # planted traffic (agents/scenarios.py), same total volume
    scenario_starts_after: float = 0.0  # seconds of capture time before planted traffic begins


def synthetic_inventory(enis: int, seed: int = 1) -> Inventory:
    """The VPC/subnet/ENI layout the generator's traffic belongs to."""
    vpc = Vpc(id=f"vpc-{seed:08x}", cidr="10.0.0.0/16")
    subnets = [Subnet(id=f"subnet-{seed:04x}{s:04x}", vpc=vpc.id, cidr=f"10.0.{s}.0/24") for s in range(2)]
    nics = [
        Eni(id=f"eni-{seed:04x}{i:013x}", subnet=subnets[i % 2].id, ips=(f"10.0.{i % 2}.{10 + i // 2}",))
        for i in range(enis)
    ]
    return Inventory(vpcs=(vpc,), subnets=tuple(subnets), enis=tuple(nics))


class SyntheticTraffic:
    """Iterates :class:`PacketBatch` chunks until ``duration`` seconds of traffic are made."""

    def __init__(self, config: SyntheticConfig) -> None:
        if config.enis < 1 or config.flows < 1 or config.rate <= 0 or config.duration <= 0:
            raise ValueError("enis and flows must be ≥ 1, rate and duration > 0")
        self.config = config
        self.inventory = synthetic_inventory(config.enis, config.seed)
        self.eni_ids = tuple(e.id for e in self.inventory.enis)
        rng = np.random.default_rng(config.seed)
        n = config.flows
        self._flow_eni = rng.integers(0, config.enis, n).astype(np.uint16)
        eni_ip = np.array([int(e.ips[0]) for e in self.inventory.enis], dtype=np.uint32)
        remote = rng.integers(0x0B000000, 0xDF000000, n, dtype=np.uint32)  # public-ish space
        local = eni_ip[self._flow_eni]
        egress = rng.random(n) < 0.5
        self._flow_dir = np.where(egress, frame.DIRECTION_EGRESS, frame.DIRECTION_INGRESS).astype(np.uint8)
        self._flow_src = frame.ipv4_mapped(np.where(egress, local, remote))
        self._flow_dst = frame.ipv4_mapped(np.where(egress, remote, local))
        proto = rng.choice(np.array([_TCP, _UDP, _ICMP], dtype=np.uint8), n, p=[0.8, 0.17, 0.03])
        service = _WELL_KNOWN[rng.integers(0, len(_WELL_KNOWN), n)]
        ephemeral = rng.integers(32768, 61000, n).astype(np.uint16)
        # The service port sits on the local side for ingress, the remote side for egress.
        self._flow_sport = np.where(egress, ephemeral, service).astype(np.uint16)
        self._flow_dport = np.where(egress, service, ephemeral).astype(np.uint16)
        icmp = proto == _ICMP
        self._flow_sport[icmp] = 0
        self._flow_dport[icmp] = 8 << 8  # echo request
        self._flow_proto = proto
        self._flow_size = rng.integers(60, 1500, n).astype(np.uint32)
        weights = 1.0 / np.arange(1, n + 1) ** config.zipf
        self._flow_cdf = np.cumsum(rng.permutation(weights) / weights.sum())
        self._rng = rng
        addresses = [str(e.ips[0]) for e in self.inventory.enis]
        if config.scenarios and config.enis < 4:
            raise ValueError("planted scenarios use ENIs 0–3: give enis ≥ 4")
        if len(set(config.scenarios)) != len(config.scenarios):
            raise ValueError(f"a scenario is named twice: {', '.join(config.scenarios)}")
        self._planted = [
            scenarios.planted(name, addresses, config.rate, config.scenario_starts_after) for name in config.scenarios
        ]

    @property
    def total_packets(self) -> int:
        return int(round(self.config.rate * self.config.duration))

    def batches(self) -> Iterator[PacketBatch]:
        cfg = self.config
        period_ns = 1e9 / cfg.rate
        started = time.time_ns()
        start_ns = started if cfg.pace or cfg.start_ns is None else cfg.start_ns
        made = 0
        total = self.total_packets
        chunk = cfg.chunk_packets if not cfg.pace else max(1, min(cfg.chunk_packets, int(cfg.rate / 10)))
        while made < total:
            n = min(chunk, total - made)
            if cfg.pace:
                due = started + (made + n) * period_ns
                delay = (due - time.time_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
            yield self._chunk(start_ns, made, n, period_ns)
            made += n

    def _chunk(self, start_ns: int, first: int, n: int, period_ns: float) -> PacketBatch:
        rng = self._rng
        flows = np.searchsorted(self._flow_cdf, rng.random(n), side="right").clip(0, len(self._flow_cdf) - 1)
        times = start_ns + (np.arange(first, first + n, dtype=np.float64) * period_ns).astype(np.uint64)
        proto = self._flow_proto[flows]
        size = (self._flow_size[flows] + rng.integers(-40, 40, n)).clip(28, 1500).astype(np.uint32)
        flags = np.where(proto == _TCP, _TCP_FLAG_CHOICES[rng.integers(0, len(_TCP_FLAG_CHOICES), n)], 0)
        packets = frame.Packets(
            capture_time_ns=times,
            src_addr=self._flow_src[flows],
            dst_addr=self._flow_dst[flows],
            ip_length=size,
            wire_length=size + 14,
            src_port=self._flow_sport[flows],
            dst_port=self._flow_dport[flows],
            eni=self._flow_eni[flows],
            protocol=proto,
            tcp_flags=flags.astype(np.uint8),
            direction=self._flow_dir[flows],
        )
        if self._planted:
            # One draw per packet picks which scenario (if any) takes it: shares never overlap.
            draw = rng.random(n)
            low = 0.0
            for plant in self._planted:
                begun = times >= np.uint64(start_ns + int(plant.starts_after * 1e9))
                self._plant(packets, plant, np.flatnonzero(begun & (draw >= low) & (draw < low + plant.share)))
                low += plant.share
        return PacketBatch(eni_ids=self.eni_ids, packets=packets)

    def _plant(self, packets: frame.Packets, plant: scenarios.PlantedFlows, rows: np.ndarray) -> None:
        """Give the packets at ``rows`` to the planted flows, in place."""
        which = self._rng.integers(0, plant.size_flows, rows.size)
        packets.src_addr[rows] = plant.src[which]
        packets.dst_addr[rows] = plant.dst[which]
        packets.src_port[rows] = plant.sport[which]
        packets.dst_port[rows] = plant.dport[which]
        packets.protocol[rows] = plant.proto[which]
        packets.tcp_flags[rows] = plant.flags[which]
        packets.ip_length[rows] = plant.size[which]
        packets.wire_length[rows] = plant.size[which] + 14
        packets.eni[rows] = plant.eni[which]
        packets.direction[rows] = plant.direction[which]
