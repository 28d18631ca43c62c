"""The compiled evaluator (pipeline/verdicts.py) against the per-flow reference.

Random rule sets over a small address and port space, so that rules overlap, shadow each
other and match often; random flows over the same space, including ENIs that are unbound,
missing from the inventory or beyond the ENI list.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import numpy as np
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pipeline.verdicts import ACCEPT, REJECT, VerdictEvaluator, Verdicts
from schemas.flow_record import ACTIONS
from schemas.inventory import Inventory
from schemas.rules import LAYER_DEFAULT, LAYER_SG, LAYERS, RuleSet
from tests import reference_verdicts
from tests.reference_verdicts import Flow

INVENTORY = Inventory.model_validate(yaml.safe_load("""
vpcs: [{id: vpc-1}]
subnets:
  - {id: s-a, vpc: vpc-1, cidr: 10.0.0.0/26}
  - {id: s-b, vpc: vpc-1, cidr: 10.0.0.64/26}
  - {id: s-c, vpc: vpc-1}
  - {id: s-d, vpc: vpc-1, cidr: "2001:db8::/64"}
enis:
  - {id: eni-0, subnet: s-a, ips: [10.0.0.1]}
  - {id: eni-1, subnet: s-a, ips: [10.0.0.2, "2001:db8::2"]}
  - {id: eni-2, subnet: s-b, ips: [10.0.0.70]}
  - {id: eni-3, subnet: s-c, ips: [10.0.0.130]}
  - {id: eni-4, subnet: s-d, ips: ["2001:db8::1", "::ffff:10.0.0.9"]}
"""))
ENI_IDS = ["eni-0", "eni-1", "eni-2", "eni-3", "eni-4", "eni-x"]  # eni-x: bound maybe, never in the inventory
SUBNETS = ["s-a", "s-b", "s-c", "s-d"]
ADDRESSES = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9", "10.0.0.70", "10.0.0.130", "192.0.2.1", "198.51.100.7",
             "2001:db8::1", "2001:db8::2", "2001:db8:1::1", "2001:db9::5"]
CIDRS = ["0.0.0.0/0", "10.0.0.0/24", "10.0.0.0/26", "10.0.0.64/26", "10.0.0.1/32", "10.0.0.2/31", "192.0.2.0/24",
         "::/0", "2001:db8::/32", "2001:db8::1/128", "2001:db8:1::/48"]
PORTS = [0, 22, 53, 80, 443, 1000, 1500, 2000, 40000]
ICMP = [0x0000, 0x0800, 0x0301, 0x0300, 0x8000, 0x8100]  # type << 8 | code
FLAGS = [0, 0x02, 0x12, 0x12, 0x10, 0x11, 0x04]  # SYN-ACK twice: the reply that is not an opener


@st.composite
def rules_of(draw: st.DrawFn, remote: str, groups: list[str], sets: list[str]) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(0, 5))):
        protocol = draw(st.sampled_from(["all", "tcp", "udp", "icmp", "icmpv6", 47, 6]))
        rule: dict[str, Any] = {"action": draw(st.sampled_from(["ACCEPT", "DROP"])), "protocol": protocol}
        if protocol in ("all", "tcp", "udp", 6) and draw(st.booleans()):
            rule["ports"] = draw(st.sampled_from(["22", "53", "443", "80-443", "1000-2000", "0-1023", "40000-65535"]))
        if protocol in ("icmp", "icmpv6") and draw(st.booleans()):
            rule["icmp_type"] = draw(st.sampled_from([0, 3, 8, 128, 129]))
            if draw(st.booleans()):
                rule["icmp_code"] = draw(st.sampled_from([0, 1]))
        kinds = ["cidr"] + (["set"] if sets else []) + (["group"] if groups else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "cidr":
            rule[remote] = draw(st.sampled_from(CIDRS))
        elif kind == "set":
            rule[remote] = {"address_set": draw(st.sampled_from(sets))}
        else:
            rule[remote] = {"security_group": draw(st.sampled_from(groups))}
        out.append(rule)
    return out


@st.composite
def rule_sets(draw: st.DrawFn) -> RuleSet:
    set_ids = [f"set-{i}" for i in range(draw(st.integers(0, 2)))]
    sets = [{"id": s, "cidrs": draw(st.lists(st.sampled_from(CIDRS), max_size=3, unique=True))} for s in set_ids]
    group_ids = [f"sg-{i}" for i in range(draw(st.integers(1, 4)))]
    groups: list[dict[str, Any]] = [{"id": g, "ingress": draw(rules_of("source", group_ids, set_ids)), "egress": draw(rules_of("destination", group_ids, set_ids))}
              for g in group_ids]
    bindings = [{"eni": eni, "security_groups": draw(st.lists(st.sampled_from(group_ids), min_size=1, max_size=3, unique=True))}
                for eni in ENI_IDS if draw(st.booleans())]
    acl_of_subnet = {s: draw(st.sampled_from([None, 0, 1])) for s in SUBNETS}
    acls: list[dict[str, Any]] = [{"id": f"acl-{i}", "subnets": [s for s, a in acl_of_subnet.items() if a == i],
             "inbound": draw(rules_of("source", [], set_ids)), "outbound": draw(rules_of("destination", [], set_ids))}
            for i in range(2)]
    data = {"version": 3, "address_sets": sets, "security_groups": groups, "bindings": bindings, "network_acls": acls}
    serial = 0
    for owner in groups + acls:
        for direction in ("ingress", "egress", "inbound", "outbound"):
            for rule in owner.get(direction, []):
                rule["id"] = f"r{serial}"
                serial += 1
    return RuleSet.model_validate(data)


def _raw(text: str) -> bytes:
    ip = ipaddress.ip_address(text)
    return ip.packed if ip.version == 6 else b"\0" * 10 + b"\xff\xff" + ip.packed


@st.composite
def flows(draw: st.DrawFn) -> Flow:
    protocol = draw(st.sampled_from([6, 6, 17, 1, 58, 47]))
    local, remote = draw(st.sampled_from(ADDRESSES)), draw(st.sampled_from(ADDRESSES))
    direction = draw(st.integers(0, 1))
    src, dst = (remote, local) if direction == 0 else (local, remote)
    icmp = protocol in (1, 58)
    return Flow(
        eni=draw(st.integers(0, len(ENI_IDS) + 1)),
        direction=direction,
        src=_raw(src),
        dst=_raw(dst),
        src_port=0 if icmp else draw(st.sampled_from(PORTS)),
        dst_port=draw(st.sampled_from(ICMP if icmp else PORTS)),
        protocol=protocol,
        tcp_flags=draw(st.sampled_from(FLAGS)) if protocol == 6 else 0,
    )


@st.composite
def aimed_flows(draw: st.DrawFn, rules: RuleSet) -> Flow:
    """Half the time a random flow; else one aimed at an SG policy or ACL entry that applies
    to its ENI — matching the rule's protocol, port and remote — sent as is or as its reply,
    so first-match order, shadowing, return traffic and layer order are exercised."""
    flow = draw(flows())
    if draw(st.booleans()):
        return flow
    eni = draw(st.integers(0, len(ENI_IDS) - 1))
    direction = draw(st.integers(0, 1))
    groups = {g.id: g for g in rules.security_groups}
    bound = next((b.security_groups for b in rules.bindings if b.eni == ENI_IDS[eni]), ())
    candidates = [r for g in bound for r in (groups[g].ingress if direction == 0 else groups[g].egress)]
    subnet = next((e.subnet for e in INVENTORY.enis if e.id == ENI_IDS[eni]), None)
    for acl in rules.network_acls:
        if subnet in acl.subnets:
            candidates += acl.inbound if direction == 0 else acl.outbound
    flow = flow._replace(eni=eni)
    if not candidates:
        return flow
    rule = draw(st.sampled_from(candidates))
    reference = reference_verdicts.Reference(rules, INVENTORY, ENI_IDS)
    remotes = [a for a in ADDRESSES if reference.remote_matches(rule.remote, reference_verdicts.address(_raw(a)))]
    remote = _raw(draw(st.sampled_from(remotes or ADDRESSES)))
    protocol = rule.protocol_number
    if protocol is None:
        protocol = draw(st.sampled_from([6, 17] if rule.port_restricted else [6, 17, 1, 58, 47]))
    low, high = rule.dport_range
    port = draw(st.sampled_from(sorted({low, high, (low + high) // 2})))
    local = flow.dst if flow.direction == 0 else flow.src
    if protocol in (1, 58):
        echo_reply = (0 if protocol == 1 else 129) << 8
        sport, port, reply_port = 0, (port if rule.icmp_type is not None else draw(st.sampled_from(ICMP))), echo_reply
    else:
        sport, reply_port = draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS))
    flags = draw(st.sampled_from(FLAGS)) if protocol == 6 else 0
    aimed = Flow(flow.eni, direction, *((remote, local) if direction == 0 else (local, remote)), sport, port, protocol, flags)
    if draw(st.booleans()):  # the reply: the other direction, ports swapped
        src, dst = aimed.dst, aimed.src
        return aimed._replace(direction=1 - direction, src=src, dst=dst, src_port=aimed.dst_port if protocol not in (1, 58) else 0,
                              dst_port=reply_port if protocol in (1, 58) else aimed.src_port)
    return aimed


def evaluate(evaluator: VerdictEvaluator, batch: list[Flow]) -> Verdicts:
    cols = list(zip(*batch)) if batch else [()] * 8
    return evaluator.evaluate(
        np.array(cols[0], np.uint32), np.array(cols[1], np.uint8),
        np.frombuffer(b"".join(cols[2]), "V16"), np.frombuffer(b"".join(cols[3]), "V16"),
        np.array(cols[4], np.uint16), np.array(cols[5], np.uint16), np.array(cols[6], np.uint8), np.array(cols[7], np.uint8),
    )


def named(v: Verdicts) -> list[tuple[str, str, str]]:
    return [(ACTIONS[a - 1], LAYERS[lay - 1], v.rule_ids[r]) for a, lay, r in zip(v.action, v.layer, v.rule)]


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_compiled_equals_reference(data: st.DataObject) -> None:
    rules = data.draw(rule_sets(), "rules")
    batch = data.draw(st.lists(aimed_flows(rules), min_size=10, max_size=60), "flows")
    evaluator = VerdictEvaluator.compile(rules, INVENTORY, ENI_IDS)
    expected = reference_verdicts.evaluate(rules, INVENTORY, ENI_IDS, batch)
    egress_ids = {r.id for g in rules.security_groups for r in g.egress}
    for f, (action, layer, rule) in zip(batch, expected):  # coverage: pytest --hypothesis-show-statistics
        event(f"{action} {layer} {rule if rule in ('-', 'sg/default') else 'acl/default' if '/' in rule else ''}")
        if layer == "sg" and action == "ACCEPT" and (rule in egress_ids) != (f.direction == 1):
            event(f"return traffic accepted, protocol {f.protocol}")
    assert named(evaluate(evaluator, batch)) == expected


RULES = RuleSet.model_validate(yaml.safe_load("""
version: 5
security_groups:
  - id: sg-a
    ingress: [{id: a-in, action: ACCEPT, protocol: tcp, ports: 22, source: 10.0.0.0/24}]
bindings:
  - {eni: eni-late, security_groups: [sg-a]}
"""))
SSH_IN = Flow(0, 0, _raw("10.0.0.3"), _raw("10.0.0.1"), 40000, 22, 6, 0x02)
TELNET_IN = SSH_IN._replace(dst_port=23)


def test_verdicts_carry_codes_rule_ids_and_version() -> None:
    v = evaluate(VerdictEvaluator.compile(RULES, INVENTORY, ["eni-late"]), [SSH_IN, TELNET_IN])
    assert v.action.dtype == np.uint8 and v.layer.dtype == np.uint8 and v.rule.dtype == np.int32
    assert v.action.tolist() == [ACCEPT, REJECT] and v.layer.tolist() == [LAYER_SG, LAYER_DEFAULT]
    assert [v.rule_ids[r] for r in v.rule] == ["a-in", "sg/default"] and v.version == 5


def test_enis_appended_after_compiling_are_picked_up() -> None:
    eni_ids = ["eni-0"]
    evaluator = VerdictEvaluator.compile(RULES, INVENTORY, eni_ids)
    late = [SSH_IN._replace(eni=1), TELNET_IN._replace(eni=1)]
    assert named(evaluate(evaluator, late)) == [("ACCEPT", "default", "-")] * 2  # index 1 is not known yet
    eni_ids.append("eni-late")
    assert named(evaluate(evaluator, late)) == [("ACCEPT", "sg", "a-in"), ("REJECT", "default", "sg/default")]
    assert named(evaluate(evaluator, [SSH_IN._replace(eni=7)])) == [("ACCEPT", "default", "-")]


def test_empty_batch() -> None:
    v = evaluate(VerdictEvaluator.compile(RULES, INVENTORY, ENI_IDS), [])
    assert v.action.size == v.layer.size == v.rule.size == 0


def _random_flow(rng: random.Random) -> Flow:
    protocol = rng.choice([6, 6, 17, 1, 58, 47])
    icmp = protocol in (1, 58)
    local, remote = _raw(rng.choice(ADDRESSES)), _raw(rng.choice(ADDRESSES))
    direction = rng.randrange(2)
    return Flow(
        rng.randrange(len(ENI_IDS) + 2), direction, *((remote, local) if direction == 0 else (local, remote)),
        0 if icmp else rng.choice(PORTS), rng.choice(ICMP if icmp else PORTS), protocol,
        rng.choice(FLAGS) if protocol == 6 else 0,
    )


@settings(max_examples=15, deadline=None, database=None)
@given(rule_sets(), st.integers(0, 2**32))
def test_large_batches_equal_reference(rules: RuleSet, seed: int) -> None:
    """Thousands of flows in one batch: no row is confused with another."""
    rng = random.Random(seed)
    batch = [_random_flow(rng) for _ in range(3000)]
    evaluator = VerdictEvaluator.compile(rules, INVENTORY, ENI_IDS)
    assert named(evaluate(evaluator, batch)) == reference_verdicts.evaluate(rules, INVENTORY, ENI_IDS, batch)


def test_every_interval_edge_of_large_tables() -> None:
    """Tables long enough for the two-level search (many blocks of interval lows): flows on,
    just below and just above every rule's port and address bounds."""
    rules = RuleSet.model_validate({
        "security_groups": [{"id": "big", "ingress": [
            *({"id": f"v4-{i}", "action": "ACCEPT" if i % 3 else "DROP", "protocol": "tcp",
               "ports": f"{1000 + 7 * i}-{1003 + 7 * i}", "source": f"10.{i}.0.0/16"} for i in range(80)),
            *({"id": f"v6-{i}", "action": "ACCEPT" if i % 3 else "DROP", "protocol": "tcp",
               "ports": f"{1000 + 7 * i}-{1003 + 7 * i}", "source": f"2001:db8:{i:x}::/48"} for i in range(80)),
            {"id": "rest", "action": "DROP", "protocol": "all", "source": "10.0.0.0/8"},
        ]}],
        "bindings": [{"eni": "eni-0", "security_groups": ["big"]}],
    })
    batch = []
    for i in range(80):
        v4 = int(ipaddress.IPv4Address(f"10.{i}.0.0"))
        v6 = int(ipaddress.IPv6Address(f"2001:db8:{i:x}::"))
        for address in (*(ipaddress.IPv4Address(v4 + k) for k in (-1, 0, 0xFFFF, 0x10000)),
                        *(ipaddress.IPv6Address(v6 + k) for k in (-1, 0, 2**80 - 1, 2**80))):
            for port in (999 + 7 * i, 1000 + 7 * i, 1003 + 7 * i, 1004 + 7 * i):
                batch.append(Flow(0, 0, _raw(str(address)), _raw("10.0.0.1"), 40000, port, 6, 0x02))
    evaluator = VerdictEvaluator.compile(rules, INVENTORY, ENI_IDS)
    assert named(evaluate(evaluator, batch)) == reference_verdicts.evaluate(rules, INVENTORY, ENI_IDS, batch)
