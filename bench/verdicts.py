"""Verdict evaluation throughput: security groups + network ACLs over millions of flows.

A generated, realistic rule set — ``--groups`` security groups of ``--policies`` policies
per direction (tcp/udp ports and port ranges, some icmp and ``all``; CIDRs from /8 to
/32, some IPv6, address sets, references to other groups; one policy in seven a DROP),
``--groups-per-eni`` groups bound to each of ``--enis`` ENIs spread over ten subnets, and a
50-entry ACL on each subnet — and flows aimed like real traffic: half at a policy of
their ENI (more often a late one than an early one), a quarter the replies to those
(return traffic, checked against the other direction), a quarter at random addresses and
ports (mostly default deny); ephemeral ports vary per flow. Compiling is timed, then
``--runs`` passes over all flows in ``--batch``-flow batches. A sample is checked against
the per-flow reference evaluator (tests/reference_verdicts.py).

Prints progress on stderr and a final JSON line on stdout.

    python bench/verdicts.py [--flows 4000000] [--enis 100] [--groups 30] [--policies 200]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine
from pipeline.verdicts import ACCEPT, VerdictEvaluator
from schemas.flow_record import ACTIONS
from schemas.inventory import Inventory
from schemas.rules import LAYERS, RuleSet
from tests.reference_verdicts import Flow, Reference

SUBNETS = 10
COMMON_PORTS = [22, 25, 53, 80, 123, 443, 3306, 5432, 6379, 8080, 8443, 9090, 9200, 11211, 27017]
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "all": None, "47": 47}
MAPPED = b"\0" * 10 + b"\xff\xff"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _v4(rng: random.Random) -> ipaddress.IPv4Network:
    length = rng.choice([8, 12, 16, 16, 20, 24, 24, 24, 28, 32, 32])
    first = rng.choice([10, 10, 10, 172, 192, 203, rng.randrange(1, 224)])
    address = (first << 24) | rng.getrandbits(24)
    return ipaddress.IPv4Network((address >> (32 - length) << (32 - length), length))


def _v6(rng: random.Random) -> ipaddress.IPv6Network:
    length = rng.choice([32, 48, 56, 64, 128])
    address = (0x20010DB8 << 96) | rng.getrandbits(96)
    return ipaddress.IPv6Network((address >> (128 - length) << (128 - length), length))


def _cidr(rng: random.Random) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return _v6(rng) if rng.random() < 0.1 else _v4(rng)


def _ports(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.55:
        return str(rng.choice(COMMON_PORTS))
    if roll < 0.7:
        return str(rng.randrange(1024, 65536))
    if roll < 0.9:
        low = rng.randrange(1024, 60000)
        return f"{low}-{low + rng.choice([1, 10, 100, 1000])}"
    return "all"


def build(args: argparse.Namespace, rng: random.Random) -> tuple[Inventory, RuleSet]:
    subnets = [{"id": f"subnet-{s}", "vpc": "vpc-1", "cidr": f"10.{s}.0.0/16"} for s in range(SUBNETS)]
    enis = [{"id": f"eni-{k:017x}", "subnet": f"subnet-{k % SUBNETS}",
             "ips": [f"10.{k % SUBNETS}.{k // SUBNETS}.10"] + ([f"2001:db8:{k % SUBNETS}::{k + 10:x}"] if k % 4 == 0 else [])}
            for k in range(args.enis)]
    inventory = Inventory.model_validate({"vpcs": [{"id": "vpc-1", "cidr": "10.0.0.0/8"}], "subnets": subnets, "enis": enis})

    sets = [{"id": f"set-{i}", "cidrs": sorted({str(_cidr(rng)) for _ in range(rng.randrange(2, 16))})} for i in range(20)]
    group_ids = [f"sg-{g:03d}" for g in range(args.groups)]
    serial = iter(range(10**9))

    def rule(remote: str, *, groups: bool) -> dict[str, Any]:
        protocol = rng.choices(["tcp", "udp", "icmp", "all", "47"], [60, 20, 5, 10, 5])[0]
        out: dict[str, Any] = {"id": f"r{next(serial)}", "action": "DROP" if rng.random() < 1 / 7 else "ACCEPT", "protocol": protocol}
        if protocol in ("tcp", "udp"):
            out["ports"] = _ports(rng)
        elif protocol == "icmp" and rng.random() < 0.5:
            out["icmp_type"] = 8
        roll = rng.random()
        if roll < 0.65:
            out[remote] = str(_cidr(rng))
        elif roll < 0.9 or not groups:
            out[remote] = {"address_set": rng.choice(sets)["id"]}
        else:
            out[remote] = {"security_group": rng.choice(group_ids)}
        return out

    groups = [{"id": g, "ingress": [rule("source", groups=True) for _ in range(args.policies)],
               "egress": [rule("destination", groups=True) for _ in range(args.policies)]} for g in group_ids]
    bindings = [{"eni": e["id"], "security_groups": rng.sample(group_ids, args.groups_per_eni)} for e in enis]
    acls = []
    for s in range(SUBNETS):
        entries = {direction: [rule(remote, groups=False) for _ in range(args.acl_entries - 2)]
                   for direction, remote in (("inbound", "source"), ("outbound", "destination"))}
        for direction, remote in (("inbound", "source"), ("outbound", "destination")):
            entries[direction] += [{"id": f"r{next(serial)}", "action": "ACCEPT", "protocol": "all", remote: cidr}
                                   for cidr in ("0.0.0.0/0", "::/0")]  # ACLs usually end by allowing the rest
        acls.append({"id": f"acl-{s}", "subnets": [f"subnet-{s}"], **entries})
    rules = RuleSet.model_validate({"version": 1, "address_sets": sets, "security_groups": groups, "bindings": bindings, "network_acls": acls})
    return inventory, rules


def _packed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return MAPPED + address.packed if address.version == 4 else address.packed


def _inside(network: ipaddress.IPv4Network | ipaddress.IPv6Network, rng: random.Random) -> bytes:
    host_bits = network.max_prefixlen - network.prefixlen
    return _packed(network.network_address + rng.getrandbits(host_bits) if host_bits else network.network_address)


def templates(inventory: Inventory, rules: RuleSet, count: int, rng: random.Random) -> tuple[list[Flow], list[int]]:
    """Distinct flows to sample from, and which column of each holds the ephemeral port (4 src, 5 dst, -1 none)."""
    groups = {g.id: g for g in rules.security_groups}
    sets = {s.id: s.cidrs for s in rules.address_sets}
    ips = {e.id: e.ips for e in inventory.enis}
    members: dict[str, list[Any]] = {}
    for b in rules.bindings:
        for g in b.security_groups:
            members.setdefault(g, []).extend(ips[b.eni])
    enis = [b.eni for b in rules.bindings]
    out: list[Flow] = []
    ephemeral: list[int] = []
    while len(out) < count:
        e = rng.randrange(len(enis))
        local = _packed(ips[enis[e]][0])
        direction = 0 if rng.random() < 0.55 else 1
        roll = rng.random()
        if roll < 0.25:  # random remote and port: mostly the default deny
            remote = _packed(ipaddress.IPv4Address(rng.getrandbits(32)))
            protocol, port = rng.choice([6, 6, 6, 17]), rng.randrange(1, 65536)
        else:  # aimed at a policy, late ones more often: position ~ sqrt(uniform)
            chain = [r for g in rules.bindings[e].security_groups for r in (groups[g].ingress if direction == 0 else groups[g].egress)]
            rule = chain[min(int(len(chain) * rng.random() ** 0.5), len(chain) - 1)]
            peer = rule.remote
            if peer.cidr is not None:
                network = peer.cidr
            elif peer.address_set is not None:
                network = rng.choice(sets[peer.address_set])
            else:
                pool = members.get(str(peer.security_group))
                network = ipaddress.ip_network(rng.choice(pool)) if pool else _v4(rng)
            remote = _inside(network, rng)
            protocol = rng.choice([6, 17]) if rule.protocol_number is None else rule.protocol_number
            if protocol == 1:
                port = 8 << 8
            else:
                low, high = rule.dport_range
                port = rng.randint(low, high)
        flags = (0x1B if rng.random() < 0.9 else 0x02) if protocol == 6 else 0  # whole connections; some bare SYNs
        ports = (rng.randrange(32768, 61000), port) if protocol in (6, 17) else (0, port if protocol in (1, 58) else 0)
        flow = Flow(e, direction, *((remote, local) if direction == 0 else (local, remote)), *ports, protocol, flags)
        side = 4 if protocol in (6, 17) else -1
        if 0.25 <= roll < 0.5:  # the reply of an aimed flow: return traffic
            flow = flow._replace(direction=1 - direction, src=flow.dst, dst=flow.src, src_port=flow.dst_port,
                                 dst_port=flow.src_port if protocol != 1 else 0, tcp_flags=0x1B if protocol == 6 else 0)
            side = 5 if protocol in (6, 17) else -1
        out.append(flow)
        ephemeral.append(side)
    return out, ephemeral


def columns(flows: list[Flow], ephemeral: list[int], count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``count`` flows drawn from the templates, with fresh ephemeral ports."""
    pick = rng.integers(0, len(flows), count)
    cols = list(zip(*flows))
    out: dict[str, np.ndarray] = {
        "eni_index": np.array(cols[0], np.uint32)[pick],
        "direction": np.array(cols[1], np.uint8)[pick],
        "src": np.frombuffer(b"".join(cols[2]), "V16")[pick],
        "dst": np.frombuffer(b"".join(cols[3]), "V16")[pick],
        "src_port": np.array(cols[4], np.uint16)[pick],
        "dst_port": np.array(cols[5], np.uint16)[pick],
        "protocol": np.array(cols[6], np.uint8)[pick],
        "tcp_flags": np.array(cols[7], np.uint8)[pick],
    }
    side = np.array(ephemeral, np.int8)[pick]
    fresh = rng.integers(32768, 61000, count).astype(np.uint16)
    out["src_port"][side == 4] = fresh[side == 4]
    out["dst_port"][side == 5] = fresh[side == 5]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--flows", type=int, default=4_000_000)
    p.add_argument("--batch", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--enis", type=int, default=100)
    p.add_argument("--groups", type=int, default=30)
    p.add_argument("--groups-per-eni", type=int, default=3)
    p.add_argument("--policies", type=int, default=200, help="per group and direction")
    p.add_argument("--acl-entries", type=int, default=50, help="per ACL and direction")
    p.add_argument("--templates", type=int, default=200_000)
    p.add_argument("--check", type=int, default=2000, help="flows checked against the reference evaluator")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    rng = random.Random(args.seed)

    t0 = time.perf_counter()
    inventory, rules = build(args, rng)
    flows, ephemeral = templates(inventory, rules, args.templates, rng)
    cols = columns(flows, ephemeral, args.flows, np.random.default_rng(args.seed))
    eni_ids = [b.eni for b in rules.bindings]
    log(f"generated {sum(1 for _ in rules.rules())} rules, {len(flows)} flow templates, {args.flows} flows in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    evaluator = VerdictEvaluator.compile(rules, inventory, eni_ids)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluator.evaluate(*(c[:10] for c in cols.values()))  # loads the numba kernel from its cache (or compiles it)
    first_call_s = time.perf_counter() - t0
    log(f"compiled in {compile_s:.3f} s ({evaluator.nbytes / 2**20:.1f} MiB); first call {first_call_s:.2f} s")

    rates = []
    for run in range(args.runs):
        t0 = time.perf_counter()
        for start in range(0, args.flows, args.batch):
            evaluator.evaluate(*(c[start : start + args.batch] for c in cols.values()))
        elapsed = time.perf_counter() - t0
        rates.append(args.flows / elapsed)
        log(f"run {run + 1}: {args.flows} flows in {elapsed:.2f} s = {rates[-1] / 1e6:.2f} M flows/s")

    whole = evaluator.evaluate(*cols.values())
    layer_share = {f"{ACTIONS[a - 1]} {LAYERS[lay - 1]}": round(float(np.mean((whole.action == a) & (whole.layer == lay))), 3)
                   for a in (1, 2) for lay in (1, 2, 3)}
    log("verdicts: " + ", ".join(f"{k} {v:.1%}" for k, v in layer_share.items()))

    reference = Reference(rules, inventory, eni_ids)
    rows: list[list[Any]] = [[c[i].tobytes() if c.dtype.kind == "V" else int(c[i]) for c in cols.values()] for i in range(args.check)]
    sample = [Flow(*row) for row in rows]
    expected = [reference.verdict(f) for f in sample]
    got = [(ACTIONS[a - 1], LAYERS[lay - 1], whole.rule_ids[r]) for a, lay, r in zip(whole.action[: args.check], whole.layer, whole.rule)]
    mismatches = sum(e != g for e, g in zip(expected, got))
    log(f"checked {args.check} flows against the reference: {mismatches} mismatches")

    print(json.dumps({
        "bench": "verdicts",
        "flows": args.flows,
        "batch": args.batch,
        "flows_per_s": round(max(rates)),
        "flows_per_s_runs": [round(r) for r in rates],
        "flows_per_s_median": round(statistics.median(rates)),
        "compile_s": round(compile_s, 3),
        "first_call_s": round(first_call_s, 2),
        "enis": args.enis,
        "groups": args.groups,
        "groups_per_eni": args.groups_per_eni,
        "policies_per_group_direction": args.policies,
        "acl_entries_per_direction": args.acl_entries,
        "rules": sum(1 for _ in rules.rules()),
        "compiled_bytes": evaluator.nbytes,
        "accept_share": round(float(np.mean(whole.action == ACCEPT)), 3),
        "verdict_share": layer_share,
        "checked_flows": args.check,
        "reference_mismatches": mismatches,
        "machine": machine(),
    }))


if __name__ == "__main__":
    main()
