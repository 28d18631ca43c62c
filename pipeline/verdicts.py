"""Flow verdicts: a rule set (``schemas/rules.py``) compiled into arrays, evaluated per batch.

Compiling turns every ordered rule list — a security group's ingress or egress policies,
an ACL's inbound or outbound entries — into a *table* in the manner of the bit-vector
packet classifier: one bit per rule, in rule order. Two axes are cut into intervals at
every rule's bounds: the dstport, once per protocol the table names (plus one slot for all
other protocols), and the remote address (IPv4 and IPv6 apart). Each interval holds the
set of rules that admit it; an address set or a referenced group admits the union of its
CIDRs or member IPs. A flow looks up its port interval and its address interval (a short
binary search, then one cache line of interval lows counted), and the first rule admitting
both is the lowest set bit of the two sets ANDed. So a table costs two lookups and a few
word ANDs, however many rules it holds, wherever the match is, and when nothing matches.

One numba pass per batch evaluates the groups of the flow's direction, the reversed flow
when those drop it and it may be return traffic, and the ACL when the remote address is
outside the ENI's subnet, then picks the deciding rule along the packet's path. No Python
runs per flow.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numba
import numpy as np

from schemas.flow_record import ACTIONS
from schemas.inventory import Inventory
from schemas.rules import (
    LAYER_ACL,
    LAYER_DEFAULT,
    LAYER_SG,
    NO_RULE,
    PORT_PROTOCOLS,
    SG_DEFAULT,
    EgressRule,
    IngressRule,
    RuleSet,
    acl_default,
)

ACCEPT = ACTIONS.index("ACCEPT") + 1  # the flow record's Enum8 codes
REJECT = ACTIONS.index("REJECT") + 1

_NO_RULE_INDEX, _SG_DEFAULT_INDEX = 0, 1  # rule_ids[0] = "-", rule_ids[1] = "sg/default"
_SUBNET_NONE, _SUBNET_V4, _SUBNET_V6 = 0, 4, 6  # how an ENI's subnet CIDR is stored
_WORD = 64  # rules per bit-set word
_EMPTY = -1  # the offset of an interval no rule admits
_BLOCK = 16  # interval lows per leaf block of the two-level search (one cache line of uint32)
# An ENI's table lists: its groups' policies per direction (binding order), its ACL's entries.
_LIST_INGRESS, _LIST_EGRESS, _LIST_INBOUND, _LIST_OUTBOUND = 0, 1, 2, 3

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_DirectedRule = IngressRule | EgressRule
_EniRow = tuple[list[list[int]], int, int, _Network | None]  # see VerdictEvaluator._eni_row


_DE_BRUIJN = 0x03F79D71B4CB0A89  # a power of two times this has a unique top 6 bits


def _de_bruijn_positions() -> np.ndarray:
    """Top 6 bits of (2**bit × _DE_BRUIJN) → bit: the position of a word's lowest set bit."""
    table = np.zeros(_WORD, np.uint8)
    for bit in range(_WORD):
        table[((1 << bit) * _DE_BRUIJN % 2**64) >> 58] = bit
    return table


_BIT_POSITION = _de_bruijn_positions()


class Verdicts(NamedTuple):
    """The verdict of each flow of a batch."""

    action: np.ndarray  # uint8: ACCEPT (1) or REJECT (2), as the flow record's `action`
    layer: np.ndarray  # uint8: schemas.rules LAYER_SG / LAYER_ACL / LAYER_DEFAULT
    rule: np.ndarray  # int32: index into rule_ids of the deciding rule
    rule_ids: tuple[str, ...]
    version: int  # of the rule set that decided


class _Rules(NamedTuple):
    """The compiled rule set (the kernel's argument order); addresses are numeric (host order)."""

    layer: np.ndarray  # uint8 per rule index
    accept: np.ndarray  # uint8 per rule index: 1 for an ACCEPT rule
    table_words: np.ndarray  # int64 per table: words per bit set
    table_first: np.ndarray  # int32 per table: rule index of bit 0
    table_slot: np.ndarray  # int32 (tables, 256): protocol → port slot
    slot_cells: np.ndarray  # int32: slot s's port intervals are [slot_cells[s], slot_cells[s + 1])
    port_low: np.ndarray  # int32: lowest dstport of each port interval
    slot_tops: np.ndarray  # int32: slot s's port_top entries are [slot_tops[s], slot_tops[s + 1])
    port_top: np.ndarray  # int32: every _BLOCK-th port_low of a slot (see _locate)
    port_bits: np.ndarray  # int32: where its bit set starts in `bits`; _EMPTY when no rule admits it
    v4_cells: np.ndarray  # int32: table t's IPv4 intervals are [v4_cells[t], v4_cells[t + 1])
    v4_low: np.ndarray  # uint32
    v4_tops: np.ndarray  # int32: table t's v4_top entries are [v4_tops[t], v4_tops[t + 1])
    v4_top: np.ndarray  # uint32: every _BLOCK-th v4_low of a table
    v4_bits: np.ndarray  # int32
    v6_cells: np.ndarray  # int32
    v6_low_high: np.ndarray  # uint64: upper 64 bits of the lowest address
    v6_low_low: np.ndarray  # uint64: lower 64 bits
    v6_bits: np.ndarray  # int32
    bits: np.ndarray  # uint64: every bit set, bit i of word w = rule 64 w + i of the table


class _Enis(NamedTuple):
    """Per compiled ENI index (the kernel's argument order)."""

    lists: np.ndarray  # int32: ENI e's list k is tables[lists[4e + k] : lists[4e + k + 1]]; k = _LIST_*
    tables: np.ndarray  # int32
    bound: np.ndarray  # uint8: the ENI has a binding
    acl_default: np.ndarray  # int32: rule index of the ACL's default deny
    subnet: np.ndarray  # uint8 _SUBNET_*
    net4: np.ndarray  # uint64, numeric
    mask4: np.ndarray
    net6: np.ndarray  # uint64 (n, 2): numeric upper, lower halves
    mask6: np.ndarray


def _halves(value: int) -> tuple[int, int]:
    return value >> 64, value & (2**64 - 1)


def _host(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> _Network:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ipaddress.ip_network(ip)


def _offsets(counts: Sequence[int]) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(counts, dtype=np.int64))).astype(np.int32)


_Span = tuple[int, int]  # [start, end) on an axis


class _Shape(NamedTuple):
    """What a table needs of one rule: protocol (None: all), dstport span, address spans."""

    protocol: int | None
    ports: _Span
    port_restricted: bool
    v4: list[_Span]
    v6: list[_Span]

    def admits(self, protocol: int | None) -> bool:
        """Whether the rule may match flows of ``protocol`` (None: one its table does not name)."""
        if self.protocol is None:
            return not self.port_restricted or protocol in PORT_PROTOCOLS  # `all` with ports: TCP, UDP
        return self.protocol == protocol


def _address_spans(networks: Iterable[_Network]) -> tuple[list[_Span], list[_Span]]:
    """The numeric [start, end) of each network: (IPv4 ones, IPv6 ones)."""
    spans: tuple[list[_Span], list[_Span]] = ([], [])
    for n in networks:
        start = int(n.network_address)
        spans[n.version == 6].append((start, start + (1 << (n.max_prefixlen - n.prefixlen))))
    return spans


class _TableBuilder:
    """Accumulates tables (see the module docstring) into the flat arrays of :class:`_Rules`."""

    def __init__(self) -> None:
        self.words: list[int] = []
        self.first: list[int] = []
        self.slots: list[np.ndarray] = []  # per table
        self.port_low: list[list[int]] = []  # per slot
        self.port_bits: list[np.ndarray] = []
        self.v4_low: list[list[int]] = []  # per table
        self.v4_bits: list[np.ndarray] = []
        self.v6_low: list[list[int]] = []
        self.v6_bits: list[np.ndarray] = []
        self.bits: list[np.ndarray] = []
        self._bits_size = 0

    def add(self, first: int, rules: Sequence[_Shape]) -> int:
        """Add an ordered rule list (rule indices from ``first``); its table number."""
        words = max(1, -(-len(rules) // _WORD))
        protocols = {r.protocol for r in rules if r.protocol is not None}
        if any(r.protocol is None and r.port_restricted for r in rules):
            protocols |= set(PORT_PROTOCOLS)
        slot_of = np.full(256, self._port_slot(rules, None, words), np.int32)
        for protocol in sorted(protocols):
            slot_of[protocol] = self._port_slot(rules, protocol, words)
        for family, low, at in ((4, self.v4_low, self.v4_bits), (6, self.v6_low, self.v6_bits)):
            spans = [(i, *span) for i, r in enumerate(rules) for span in (r.v4 if family == 4 else r.v6)]
            lows, offsets = self._intervals(spans, 2 ** (32 if family == 4 else 128), words)
            low.append(lows)
            at.append(offsets)
        self.words.append(words)
        self.first.append(first)
        self.slots.append(slot_of)
        return len(self.slots) - 1

    def _port_slot(self, rules: Sequence[_Shape], protocol: int | None, words: int) -> int:
        lows, offsets = self._intervals([(i, *r.ports) for i, r in enumerate(rules) if r.admits(protocol)], 65536, words)
        self.port_low.append(lows)
        self.port_bits.append(offsets)
        return len(self.port_low) - 1

    def _intervals(self, spans: list[tuple[int, int, int]], limit: int, words: int) -> tuple[list[int], np.ndarray]:
        """Cut [0, limit) at the bounds of ``spans`` (rule, start, end exclusive); the intervals'
        lowest values and where each interval's rule set starts in ``bits``."""
        lows = sorted({0} | {s for _, s, _ in spans} | {e for _, _, e in spans if e < limit})
        index = {value: i for i, value in enumerate(lows)}
        edges = np.zeros((len(lows) + 1, words * _WORD), np.int32)  # +1 where a span starts, -1 past its end
        if spans:
            rule = np.array([r for r, _, _ in spans])
            np.add.at(edges, (np.array([index[s] for _, s, _ in spans]), rule), 1)
            np.add.at(edges, (np.array([index.get(e, len(lows)) for _, _, e in spans]), rule), -1)
        covered = np.cumsum(edges[:-1], axis=0) > 0
        # Many intervals admit the same rules: each distinct set is stored once (less to cache).
        packed = np.packbits(covered, axis=1, bitorder="little")
        _, first, which = np.unique(packed.view(f"V{words * 8}").reshape(-1), return_index=True, return_inverse=True)
        sets = packed[first]
        self.bits.append(sets.view("<u8").astype(np.uint64).reshape(-1))
        offsets = (self._bits_size + words * which.reshape(-1)).astype(np.int32)
        offsets[~covered.any(axis=1)] = _EMPTY  # so a lookup can stop without reading the words
        self._bits_size += len(sets) * words
        return lows, offsets

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The table fields of :class:`_Rules`, in order."""
        v6 = np.array([_halves(v) for lows in self.v6_low for v in lows], np.uint64).reshape(-1, 2)
        return (
            np.array(self.words, np.int64),
            np.array(self.first, np.int32),
            np.stack(self.slots) if self.slots else np.zeros((0, 256), np.int32),
            _offsets([len(lows) for lows in self.port_low]),
            np.array([v for lows in self.port_low for v in lows], np.int32),
            _offsets([len(lows[::_BLOCK]) for lows in self.port_low]),
            np.array([v for lows in self.port_low for v in lows[::_BLOCK]], np.int32),
            np.concatenate(self.port_bits) if self.port_bits else np.zeros(0, np.int32),
            _offsets([len(lows) for lows in self.v4_low]),
            np.array([v for lows in self.v4_low for v in lows], np.uint32),
            _offsets([len(lows[::_BLOCK]) for lows in self.v4_low]),
            np.array([v for lows in self.v4_low for v in lows[::_BLOCK]], np.uint32),
            np.concatenate(self.v4_bits) if self.v4_bits else np.zeros(0, np.int32),
            _offsets([len(lows) for lows in self.v6_low]),
            np.ascontiguousarray(v6[:, 0]),
            np.ascontiguousarray(v6[:, 1]),
            np.concatenate(self.v6_bits) if self.v6_bits else np.zeros(0, np.int32),
            np.concatenate(self.bits) if self.bits else np.zeros(0, np.uint64),
        )


class VerdictEvaluator:
    """A rule set compiled for fast evaluation of whole flow batches.

    ``eni_ids`` (ENI index → id) is read again by every :meth:`evaluate`: when it has
    grown, the new ENIs are compiled then (the worker's ENI registry only appends). An
    ENI index beyond it has no binding and no ACL.
    """

    def __init__(self, rules: RuleSet, inventory: Inventory, eni_ids: Sequence[str], compiled: _Rules, rule_ids: tuple[str, ...],
                 group_tables: dict[str, tuple[int, int]], acl_tables: dict[str, tuple[int, int, int]]) -> None:
        self.rules = rules
        self.rule_ids = rule_ids
        self._eni_ids = eni_ids
        self._compiled = compiled
        self._group_tables = group_tables  # group id → (ingress table, egress table)
        self._acl_tables = acl_tables  # subnet id → (inbound table, outbound table, default rule index)
        self._bindings = {b.eni: b.security_groups for b in rules.bindings}
        self._inventory_enis = {e.id: e for e in inventory.enis}
        self._subnet_cidrs = {s.id: s.cidr for s in inventory.subnets}
        self._eni_rows: list[_EniRow] = []
        self._growing = threading.Lock()  # evaluate() may run in several threads (the kernel releases the GIL)
        self._enis = self._eni_arrays([])
        self._current_enis()

    @classmethod
    def compile(cls, rules: RuleSet, inventory: Inventory, eni_ids: Sequence[str]) -> VerdictEvaluator:
        """Compile ``rules`` against ``inventory`` (subnets, ENI IPs) for the ENIs of ``eni_ids``."""
        sets = {s.id: s.cidrs for s in rules.address_sets}
        ips = {e.id: e.ips for e in inventory.enis}
        members: dict[str, list[_Network]] = {}  # group → host networks of the ENIs bound to it
        for binding in rules.bindings:
            for group in binding.security_groups:
                members.setdefault(group, []).extend(_host(ip) for ip in ips.get(binding.eni, ()))

        rule_ids = [NO_RULE, SG_DEFAULT, *(acl_default(acl.id) for acl in rules.network_acls)]
        layers = [LAYER_DEFAULT] * len(rule_ids)
        accept = [0] * len(rule_ids)
        tables = _TableBuilder()

        named_spans = {("set", k): _address_spans(v) for k, v in sets.items()}
        named_spans.update({("group", k): _address_spans(v) for k, v in members.items()})

        def table(owner_rules: Sequence[_DirectedRule], layer: int) -> int:
            first = len(rule_ids)
            shapes = []
            for r in owner_rules:
                rule_ids.append(r.id)
                layers.append(layer)
                accept.append(int(r.action == "ACCEPT"))
                peer = r.remote
                v4, v6 = (
                    _address_spans([peer.cidr]) if peer.cidr is not None
                    else named_spans[("set", peer.address_set)] if peer.address_set is not None
                    else named_spans.get(("group", str(peer.security_group)), ([], []))
                )
                low, high = r.dport_range
                shapes.append(_Shape(r.protocol_number, (low, high + 1), r.port_restricted, v4, v6))
            return tables.add(first, shapes)

        group_tables = {g.id: (table(g.ingress, LAYER_SG), table(g.egress, LAYER_SG)) for g in rules.security_groups}
        acl_tables: dict[str, tuple[int, int, int]] = {}
        for number, acl in enumerate(rules.network_acls):
            inbound, outbound = table(acl.inbound, LAYER_ACL), table(acl.outbound, LAYER_ACL)
            acl_tables.update({subnet: (inbound, outbound, 2 + number) for subnet in acl.subnets})
        compiled = _Rules(np.array(layers, np.uint8), np.array(accept, np.uint8), *tables.arrays())
        return cls(rules, inventory, eni_ids, compiled, tuple(rule_ids), group_tables, acl_tables)

    @property
    def nbytes(self) -> int:
        """Memory held by the compiled rule set and per-ENI arrays."""
        return sum(a.nbytes for a in (*self._compiled, *self._enis))

    def _eni_row(self, eni: str) -> _EniRow:
        """(table lists in _LIST_* order, bound, ACL default rule, subnet CIDR)."""
        groups = self._bindings.get(eni, ())
        placed = self._inventory_enis.get(eni)
        acl = self._acl_tables.get(placed.subnet) if placed is not None else None
        lists = [[self._group_tables[g][0] for g in groups], [self._group_tables[g][1] for g in groups],
                 [acl[0]] if acl else [], [acl[1]] if acl else []]
        cidr = self._subnet_cidrs.get(placed.subnet) if placed is not None else None
        return lists, int(bool(groups)), acl[2] if acl else _NO_RULE_INDEX, cidr

    def _current_enis(self) -> _Enis:
        """The per-ENI arrays, first extended to ENIs appended to ``eni_ids`` since."""
        if len(self._eni_rows) < len(self._eni_ids):
            with self._growing:
                if len(self._eni_rows) < len(self._eni_ids):
                    rows = self._eni_rows + [self._eni_row(eni) for eni in self._eni_ids[len(self._eni_rows):]]
                    self._enis = self._eni_arrays(rows)
                    self._eni_rows = rows  # after the arrays: a reader that sees these rows finds them
        return self._enis

    def _eni_arrays(self, rows: list[_EniRow]) -> _Enis:
        n = len(rows)
        lists = [tables for row in rows for tables in row[0]]
        subnet = np.full(n, _SUBNET_NONE, np.uint8)
        net4, mask4 = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
        net6, mask6 = np.zeros((n, 2), np.uint64), np.zeros((n, 2), np.uint64)
        for e, (_, _, _, cidr) in enumerate(rows):
            if isinstance(cidr, ipaddress.IPv4Network):
                subnet[e], net4[e], mask4[e] = _SUBNET_V4, int(cidr.network_address), int(cidr.netmask)
            elif isinstance(cidr, ipaddress.IPv6Network):
                subnet[e], net6[e], mask6[e] = _SUBNET_V6, _halves(int(cidr.network_address)), _halves(int(cidr.netmask))
        return _Enis(
            _offsets([len(tables) for tables in lists]),
            np.array([t for tables in lists for t in tables], np.int32),
            np.array([row[1] for row in rows], np.uint8),
            np.array([row[2] for row in rows], np.int32),
            subnet, net4, mask4, net6, mask6,
        )

    def evaluate(
        self,
        eni_index: np.ndarray,
        direction: np.ndarray,
        src: np.ndarray,
        dst: np.ndarray,
        src_port: np.ndarray,
        dst_port: np.ndarray,
        protocol: np.ndarray,
        tcp_flags: np.ndarray,
    ) -> Verdicts:
        """Verdicts of n flows, given as columns: ENI index (into ``eni_ids``), direction
        (0 ingress, 1 egress), source and destination addresses (V16, IPv4-mapped), ports,
        protocol and TCP flags (the OR over the flow's packets)."""
        enis = self._current_enis()
        n = len(eni_index)
        action = np.empty(n, np.uint8)
        layer = np.empty(n, np.uint8)
        rule = np.empty(n, np.int32)
        _evaluate(
            np.asarray(eni_index, np.uint32), np.asarray(direction, np.uint8), _numeric(src, n), _numeric(dst, n),
            np.asarray(src_port, np.uint16), np.asarray(dst_port, np.uint16), np.asarray(protocol, np.uint8),
            np.asarray(tcp_flags, np.uint8), *self._compiled, *enis, action, layer, rule,
        )
        return Verdicts(action, layer, rule, self.rule_ids, self.rules.version)


def _numeric(addresses: np.ndarray, n: int) -> np.ndarray:
    """V16 addresses as (n, 2) uint64: the numeric upper and lower halves."""
    return np.ascontiguousarray(addresses).view(">u8").reshape(n, 2).astype(np.uint64)


@numba.njit(cache=True, nogil=True, inline="always")
def _locate(lows, start, end, top, top_start, top_end, value):  # type: ignore[no-untyped-def]
    """Index in [start, end) of the last of the ascending ``lows`` that is <= value
    (lows[start] is 0); ``top`` holds every _BLOCK-th of them.

    Two levels: a binary search of the short ``top`` finds the block, a count of the
    block's lows at or below ``value`` (one cache line, vectorised) the interval. Unsigned
    indices and conditional moves: no negative-index fix-ups, no mispredicted branches.
    """
    first = np.uint64(top_start)
    at, size = first, np.uint64(top_end) - first
    while size > np.uint64(1):
        half = size >> np.uint64(1)
        at = at + half if top[at + half] <= value else at
        size -= half
    leaf = np.uint64(start) + (at - first) * np.uint64(_BLOCK)
    below = np.uint64(0)
    for j in range(leaf, min(leaf + np.uint64(_BLOCK), np.uint64(end))):
        below += np.uint64(lows[j] <= value)
    return leaf + below - np.uint64(1)


@numba.njit(cache=True, nogil=True)
def _evaluate(eni, direction, src, dst, src_port, dst_port, protocol, tcp_flags,  # type: ignore[no-untyped-def]
              r_layer, r_accept, table_words, table_first, table_slot, slot_cells, port_low, slot_tops, port_top, port_bits,
              v4_cells, v4_low, v4_tops, v4_top, v4_bits, v6_cells, v6_low_high, v6_low_low, v6_bits, bits,
              lists, tables, bound, acl_default, subnet, net4, mask4, net6, mask6,
              action_out, layer_out, rule_out):
    # Written out in one function: a call to a jitted function that is not inlined increfs
    # and decrefs every array it is passed (atomic operations), which costs ten times the
    # table lookup itself. Only the small _locate is a function, and it is always inlined.
    known_enis = bound.size
    for i in range(eni.size):
        e = eni[i]
        d = 1 if direction[i] else 0
        high = src[i, 0] if d == 0 else dst[i, 0]  # the remote address
        low = src[i, 1] if d == 0 else dst[i, 1]
        mapped = high == 0 and (low >> np.uint64(32)) == 0xFFFF
        p = protocol[i]
        known = e < known_enis
        bound_here = known and bound[e] != 0

        # Three lookups, each the first matching rule (-1: none) of a list of tables: the
        # groups of the flow's direction; the other direction's groups for the reversed flow,
        # when the first did not accept it and it may be return traffic; the subnet's ACL,
        # when the remote address is outside the subnet.
        sg_rule, back, acl_rule, acl_applies = -1, -1, -1, False
        for stage in range(3):
            port = np.int64(dst_port[i])
            if stage == 0:
                if not bound_here:
                    continue
                k = _LIST_INGRESS + d
            elif stage == 1:
                if not bound_here or (sg_rule >= 0 and r_accept[sg_rule]):
                    continue
                flags = tcp_flags[i]
                if p == 6 and (flags & 0x12) == 0x02:  # SYN without ACK opens a connection
                    continue
                if p == 1 or p == 58:  # only echo replies (0 / 129) return, to an echo request (8 / 128)
                    if port >> 8 != (0 if p == 1 else 129):
                        continue
                    port = np.int64((8 if p == 1 else 128) << 8)
                else:
                    port = np.int64(src_port[i])
                k = _LIST_INGRESS + 1 - d
            else:
                k = _LIST_INBOUND + d
                if not known or lists[4 * e + k] == lists[4 * e + k + 1]:
                    continue  # no ACL
                kind = subnet[e]
                if (kind == _SUBNET_V4 and mapped and ((low & np.uint64(0xFFFFFFFF)) & mask4[e]) == net4[e]) or (
                    kind == _SUBNET_V6 and not mapped and (high & mask6[e, 0]) == net6[e, 0] and (low & mask6[e, 1]) == net6[e, 1]
                ):
                    continue  # inside the subnet: the ACL is not crossed
                acl_applies = True

            found = -1
            for at in range(lists[4 * e + k], lists[4 * e + k + 1]):
                t = tables[at]
                slot = table_slot[t, p]
                by_port = port_bits[_locate(port_low, slot_cells[slot], slot_cells[slot + 1],
                                            port_top, slot_tops[slot], slot_tops[slot + 1], port)]
                if by_port == _EMPTY:
                    continue
                if mapped:
                    by_address = v4_bits[_locate(v4_low, v4_cells[t], v4_cells[t + 1],
                                                 v4_top, v4_tops[t], v4_tops[t + 1], low & np.uint64(0xFFFFFFFF))]
                else:  # rarer: a plain branch-free binary search over (upper, lower) halves
                    start, size = np.uint64(v6_cells[t]), np.uint64(v6_cells[t + 1] - v6_cells[t])
                    while size > np.uint64(1):
                        half = size >> np.uint64(1)
                        upper = v6_low_high[start + half]
                        below = upper < high or (upper == high and v6_low_low[start + half] <= low)
                        start = start + half if below else start
                        size -= half
                    by_address = v6_bits[start]
                if by_address == _EMPTY:
                    continue
                for w in range(table_words[t]):
                    both = bits[by_port + w] & bits[by_address + w]
                    if both:
                        lowest = both & (~both + np.uint64(1))
                        found = table_first[t] + w * _WORD + _BIT_POSITION[((lowest * np.uint64(_DE_BRUIJN)) >> np.uint64(58)) & np.uint64(63)]
                        break
                if found >= 0:
                    break
            if stage == 0:
                sg_rule = found
            elif stage == 1:
                back = found
            else:
                acl_rule = found

        sg_drop = False
        if bound_here and not (sg_rule >= 0 and r_accept[sg_rule]):
            if back >= 0 and r_accept[back]:
                sg_rule = back
            else:
                sg_drop = True
                if sg_rule < 0:
                    sg_rule = _SG_DEFAULT_INDEX
        acl_drop = False
        if acl_applies:
            if acl_rule < 0:
                acl_rule = acl_default[e]  # a default deny: its accept flag is 0
            acl_drop = not r_accept[acl_rule]

        if acl_drop and (d == 0 or not sg_drop):  # the ACL is met first on the way in
            action_out[i], rule = REJECT, acl_rule
        elif sg_drop:
            action_out[i], rule = REJECT, sg_rule
        else:
            action_out[i] = ACCEPT
            rule = sg_rule if sg_rule >= 0 else (acl_rule if acl_rule >= 0 else _NO_RULE_INDEX)
        rule_out[i] = rule
        layer_out[i] = r_layer[rule]
