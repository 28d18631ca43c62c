"""EniResolver: which ENI a packet belongs to, and in which direction, from the inventory.

A packet whose destination is an ENI's address is ingress for that ENI; one whose source
is an ENI's address is egress for it. A packet between two ENIs of the inventory counts
for both (as cloud flow logs record it on both interfaces). A packet that came through a
known mirror session belongs to that session's ENI only; its direction is whichever of its
ends is that ENI's address. Packets that match no ENI are counted, never guessed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from agents.decode import IpPackets
from agents.source import PacketBatch
from flowlogs.errors import ConfigError
from schemas import frame
from schemas.inventory import Inventory


@dataclass(slots=True)
class ResolveStats:
    matched: int = 0  # packet-ENI rows produced
    unmatched: int = 0  # packets that belong to no ENI
    unknown_session: int = 0  # came through a mirror session the inventory does not name


def _mapped(address: object) -> bytes:
    ip = ipaddress.ip_address(str(address))
    return ip.packed if ip.version == 6 else bytes(10) + b"\xff\xff" + ip.packed


class EniResolver:
    def __init__(self, inventory: Inventory) -> None:
        self.eni_ids = tuple(e.id for e in inventory.enis)
        pairs = sorted((_mapped(ip), i) for i, e in enumerate(inventory.enis) for ip in e.ips)
        seen: dict[bytes, str] = {}
        for raw, i in pairs:
            if raw in seen and seen[raw] != self.eni_ids[i]:
                ip = ipaddress.IPv6Address(raw)
                raise ConfigError(
                    f"inventory: address {ip.ipv4_mapped or ip} belongs to both {seen[raw]} and {self.eni_ids[i]}"
                )
            seen[raw] = self.eni_ids[i]
        # Sorted by the address's last 8 bytes (which hold all of an IPv4-mapped address):
        # integer search is far cheaper than comparing 16-byte values; a hit is then checked
        # against the whole address.
        addresses = np.array([raw for raw, _ in pairs], dtype="V16")
        low = addresses.view(np.uint64).reshape(-1, 2)[:, 1] if pairs else np.empty(0, np.uint64)
        order = np.argsort(low, kind="stable")
        self._low = low[order]
        self._addresses = addresses[order]
        self._eni = np.array([i for _, i in pairs], dtype=np.uint16)[order]
        self._low_unique = bool(np.all(self._low[1:] != self._low[:-1]))
        index = {eni: i for i, eni in enumerate(self.eni_ids)}
        sessions = sorted((m.key, index[m.eni]) for m in inventory.mirror_sessions)
        self._session_keys = np.array([k for k, _ in sessions], np.int64)
        self._session_eni = np.array([i for _, i in sessions], np.int64)
        self.stats = ResolveStats()

    def _session_lookup(self, session: np.ndarray) -> np.ndarray:
        """ENI index of each packet's mirror session, -1 for none or an unknown one."""
        if self._session_keys.size == 0:
            return np.full(session.shape, -1, np.int64)
        i = np.searchsorted(self._session_keys, session).clip(0, self._session_keys.size - 1)
        return np.where(self._session_keys[i] == session, self._session_eni[i], -1)

    def _lookup(self, addr: np.ndarray) -> np.ndarray:
        """ENI index per address, -1 where none."""
        if self._addresses.size == 0:
            return np.full(addr.shape, -1, np.int64)
        halves = addr.view(np.uint64).reshape(-1, 2)
        if self._low_unique:
            i = np.searchsorted(self._low, halves[:, 1]).clip(0, self._low.size - 1)
        else:  # two addresses share their last 8 bytes: compare whole addresses
            order = np.argsort(self._addresses)
            i = order[np.searchsorted(self._addresses[order], addr).clip(0, self._addresses.size - 1)]
        # Equal as two 64-bit halves: far cheaper than comparing 16-byte values.
        known = self._addresses.view(np.uint64).reshape(-1, 2)[i]
        same = (known[:, 0] == halves[:, 0]) & (known[:, 1] == halves[:, 1])
        return np.where(same, self._eni[i].astype(np.int64), -1)

    def resolve(self, packets: IpPackets) -> PacketBatch:
        ingress = self._lookup(packets.dst_addr)
        egress = self._lookup(packets.src_addr)
        mirrored = packets.session != 0
        if mirrored.any():
            session_eni = self._session_lookup(packets.session)
            known = session_eni >= 0
            self.stats.unknown_session += int((mirrored & ~known).sum())
            # A session names the ENI; the addresses only say the direction. An unknown
            # session falls back to the addresses.
            towards = known & (ingress == session_eni)
            ingress = np.where(known, np.where(towards, session_eni, -1), ingress)
            egress = np.where(known, np.where(~towards & (egress == session_eni), session_eni, -1), egress)
        rows_in = np.flatnonzero(ingress >= 0)
        rows_out = np.flatnonzero(egress >= 0)
        self.stats.unmatched += int(((ingress < 0) & (egress < 0)).sum())
        rows = np.concatenate([rows_in, rows_out])
        self.stats.matched += int(rows.size)
        eni = np.concatenate([ingress[rows_in], egress[rows_out]]).astype(np.uint16)
        direction = np.concatenate(
            [np.full(rows_in.size, frame.DIRECTION_INGRESS, np.uint8), np.full(rows_out.size, frame.DIRECTION_EGRESS, np.uint8)]
        )
        columns = frame.Packets(
            capture_time_ns=packets.capture_time_ns[rows],
            src_addr=packets.src_addr[rows],
            dst_addr=packets.dst_addr[rows],
            ip_length=packets.ip_length[rows],
            wire_length=packets.wire_length[rows],
            src_port=packets.src_port[rows],
            dst_port=packets.dst_port[rows],
            eni=eni,
            protocol=packets.protocol[rows],
            tcp_flags=packets.tcp_flags[rows],
            direction=direction,
        )
        return PacketBatch(eni_ids=self.eni_ids, packets=columns)
