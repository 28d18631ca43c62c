"""An obviously-correct, per-flow evaluation of a rule set to check pipeline/verdicts.py against.

It follows the numbered semantics in ``schemas/rules.py`` one flow at a time with
``ipaddress`` objects and plain loops; nothing here is shared with the compiled evaluator
except the models.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import NamedTuple

from schemas.inventory import Inventory
from schemas.rules import EgressRule, IngressRule, Peer, RuleSet, SecurityGroup

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
SYN, ACK = 0x02, 0x10


class Flow(NamedTuple):
    eni: int  # index into eni_ids
    direction: int  # 0 ingress, 1 egress
    src: bytes  # 16 bytes, IPv4 as IPv4-mapped
    dst: bytes
    src_port: int
    dst_port: int
    protocol: int
    tcp_flags: int


Verdict = tuple[str, str, str]  # action, layer, rule id


def canonical(ip: Address) -> Address:
    """IPv4-mapped IPv6 addresses as IPv4Address, others unchanged."""
    return (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip


def address(raw: bytes) -> Address:
    """A 16-byte address column value as an ``ipaddress`` object (see :func:`canonical`)."""
    return canonical(ipaddress.IPv6Address(raw))


def _in(addr: Address, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return addr.version == network.version and addr in network


class Reference:
    def __init__(self, rules: RuleSet, inventory: Inventory, eni_ids: Sequence[str]) -> None:
        self.rules = rules
        self.eni_ids = eni_ids
        self.sets = {s.id: s for s in rules.address_sets}
        self.groups = {g.id: g for g in rules.security_groups}
        self.bindings = {b.eni: [self.groups[g] for g in b.security_groups] for b in rules.bindings}
        self.enis = {e.id: e for e in inventory.enis}
        self.subnet_cidr = {s.id: s.cidr for s in inventory.subnets}
        self.acl_of = {subnet: acl for acl in rules.network_acls for subnet in acl.subnets}

    def group_ips(self, group: str) -> set[Address]:
        out: set[Address] = set()
        for b in self.rules.bindings:
            if group in b.security_groups and b.eni in self.enis:
                out |= {canonical(ip) for ip in self.enis[b.eni].ips}
        return out

    def remote_matches(self, peer: Peer, remote: Address) -> bool:
        if peer.cidr is not None:
            return _in(remote, peer.cidr)
        if peer.address_set is not None:
            return any(_in(remote, c) for c in self.sets[peer.address_set].cidrs)
        return remote in self.group_ips(str(peer.security_group))

    def matches(self, rule: IngressRule | EgressRule, protocol: int, dport: int, remote: Address) -> bool:
        if rule.protocol != "all":
            number = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}.get(str(rule.protocol), rule.protocol)
            if number != protocol:
                return False
        if rule.ports != "all":
            low, _, high = rule.ports.partition("-")
            if protocol not in (6, 17) or not int(low) <= dport <= int(high or low):
                return False
        if rule.icmp_type is not None and dport >> 8 != rule.icmp_type:
            return False
        if rule.icmp_code is not None and dport & 0xFF != rule.icmp_code:
            return False
        return self.remote_matches(rule.remote, remote)

    def sg_first(self, groups: list[SecurityGroup], direction: int, protocol: int, dport: int, remote: Address) -> IngressRule | EgressRule | None:
        for group in groups:
            for rule in group.ingress if direction == 0 else group.egress:
                if self.matches(rule, protocol, dport, remote):
                    return rule
        return None

    @staticmethod
    def reverse_port(flow: Flow) -> int | None:
        """The dstport of the reversed flow; None when the flow cannot be return traffic."""
        if flow.protocol == 6 and flow.tcp_flags & SYN and not flow.tcp_flags & ACK:
            return None
        if flow.protocol == 1:
            return 8 << 8 if flow.dst_port >> 8 == 0 else None
        if flow.protocol == 58:
            return 128 << 8 if flow.dst_port >> 8 == 129 else None
        return flow.src_port

    def verdict(self, flow: Flow) -> Verdict:
        eni = self.eni_ids[flow.eni] if flow.eni < len(self.eni_ids) else None
        remote = address(flow.src if flow.direction == 0 else flow.dst)

        sg: tuple[bool, str, str] | None = None  # (accepts, layer, rule id); None: not filtered
        groups = self.bindings.get(eni) if eni is not None else None
        if groups:
            rule = self.sg_first(groups, flow.direction, flow.protocol, flow.dst_port, remote)
            back = None
            if rule is None or rule.action == "DROP":
                port = self.reverse_port(flow)
                if port is not None:
                    back = self.sg_first(groups, 1 - flow.direction, flow.protocol, port, remote)
            if rule is not None and rule.action == "ACCEPT":
                sg = (True, "sg", rule.id)
            elif back is not None and back.action == "ACCEPT":
                sg = (True, "sg", back.id)
            elif rule is not None:
                sg = (False, "sg", rule.id)
            else:
                sg = (False, "default", "sg/default")

        acl_layer: tuple[bool, str, str] | None = None
        inventory_eni = self.enis.get(eni) if eni is not None else None
        acl = self.acl_of.get(inventory_eni.subnet) if inventory_eni is not None else None
        if acl is not None:
            cidr = self.subnet_cidr[inventory_eni.subnet] if inventory_eni is not None else None
            if cidr is None or not _in(remote, cidr):
                entries = acl.inbound if flow.direction == 0 else acl.outbound
                entry = next((e for e in entries if self.matches(e, flow.protocol, flow.dst_port, remote)), None)
                if entry is None:
                    acl_layer = (False, "default", f"{acl.id}/default")
                else:
                    acl_layer = (entry.action == "ACCEPT", "acl", entry.id)

        path = (acl_layer, sg) if flow.direction == 0 else (sg, acl_layer)
        for layer in path:
            if layer is not None and not layer[0]:
                return "REJECT", layer[1], layer[2]
        for layer in (sg, acl_layer):
            if layer is not None:
                return "ACCEPT", layer[1], layer[2]
        return "ACCEPT", "default", "-"


def evaluate(rules: RuleSet, inventory: Inventory, eni_ids: Sequence[str], flows: Sequence[Flow]) -> list[Verdict]:
    reference = Reference(rules, inventory, eni_ids)
    return [reference.verdict(f) for f in flows]
