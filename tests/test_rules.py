"""The rule-set semantics (schemas/rules.py docstring), case by case, and rule-file validation.

Every semantic case runs through both the compiled evaluator and the per-flow reference;
both must give the expected (action, layer, rule id).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from flowlogs.errors import ConfigError
from pipeline.verdicts import VerdictEvaluator
from schemas.flow_record import ACTIONS
from schemas.inventory import Inventory
from schemas.rules import LAYERS, RuleSet, load_rules, parse_rules
from tests import reference_verdicts
from tests.reference_verdicts import Flow

INVENTORY = Inventory.model_validate(yaml.safe_load("""
vpcs: [{id: vpc-1, cidr: 10.0.0.0/16}]
subnets:
  - {id: subnet-web, vpc: vpc-1, cidr: 10.0.1.0/24}
  - {id: subnet-db, vpc: vpc-1, cidr: 10.0.2.0/24}
  - {id: subnet-ops, vpc: vpc-1}                  # no CIDR: every remote crosses it
enis:
  - {id: eni-web, subnet: subnet-web, ips: [10.0.1.10]}
  - {id: eni-web2, subnet: subnet-web, ips: [10.0.1.11]}
  - {id: eni-db, subnet: subnet-db, ips: [10.0.2.20]}
  - {id: eni-ops, subnet: subnet-ops, ips: [10.0.3.5]}
  - {id: eni-free, subnet: subnet-db, ips: [10.0.2.30]}
"""))
ENI_IDS = ["eni-web", "eni-web2", "eni-db", "eni-ops", "eni-free", "eni-ghost"]  # eni-ghost: not in the inventory
UNKNOWN_ENI = 9  # an index beyond ENI_IDS

SECURITY_GROUPS = """
address_sets:
  - {id: office, cidrs: [203.0.113.0/24, "2001:db8:abcd::/48"]}
security_groups:
  - id: sg-web
    ingress:
      - {id: web-block-bad, action: DROP, protocol: tcp, ports: 443, source: 198.51.100.0/24}
      - {id: web-https, action: ACCEPT, protocol: tcp, ports: 443, source: 0.0.0.0/0}
      - {id: web-ssh-office, action: ACCEPT, protocol: tcp, ports: 22, source: {address_set: office}}
      - {id: web-ping, action: ACCEPT, protocol: icmp, icmp_type: 8, source: 0.0.0.0/0}
      - {id: web-ping6, action: ACCEPT, protocol: icmpv6, icmp_type: 128, source: "::/0"}
      - {id: web-high, action: ACCEPT, protocol: udp, ports: 30000-30010, source: 0.0.0.0/0}
    egress:
      - {id: web-to-db, action: ACCEPT, protocol: tcp, ports: 5432, destination: {security_group: sg-db}}
      - {id: web-dns, action: ACCEPT, protocol: udp, ports: 53, destination: 0.0.0.0/0}
      - {id: web-ping-out, action: ACCEPT, protocol: icmp, icmp_type: 8, destination: 0.0.0.0/0}
  - id: sg-base
    ingress:
      - {id: base-ssh-drop, action: DROP, protocol: tcp, ports: 22, source: 0.0.0.0/0}
      - {id: base-v6, action: ACCEPT, protocol: all, source: "2001:db8::/32"}
  - id: sg-db
    ingress:
      - {id: db-from-web, action: ACCEPT, protocol: tcp, ports: 5432, source: {security_group: sg-web}}
bindings:
  - {eni: eni-web, security_groups: [sg-web, sg-base]}
  - {eni: eni-web2, security_groups: [sg-web]}
  - {eni: eni-db, security_groups: [sg-db]}
  - {eni: eni-ghost, security_groups: [sg-web]}
"""

NETWORK_ACLS = """
network_acls:
  - id: acl-web
    subnets: [subnet-web]
    inbound:
      - {id: acl-in-deny-bad, action: DROP, protocol: all, source: 192.0.2.0/24}
      - {id: acl-in-https, action: ACCEPT, protocol: tcp, ports: 443, source: 0.0.0.0/0}
      - {id: acl-in-ephemeral, action: ACCEPT, protocol: tcp, ports: 1024-65535, source: 0.0.0.0/0}
    outbound:
      - {id: acl-out-smtp-drop, action: DROP, protocol: tcp, ports: 25, destination: 0.0.0.0/0}
      - {id: acl-out-tcp, action: ACCEPT, protocol: tcp, destination: 0.0.0.0/0}
  - id: acl-ops
    subnets: [subnet-ops]
    inbound: [{id: ops-in, action: ACCEPT, protocol: all, source: 10.0.0.0/8}]
    outbound: [{id: ops-out, action: ACCEPT, protocol: all, destination: 0.0.0.0/0}]
"""

RULE_SETS = {
    "sg": RuleSet.model_validate(yaml.safe_load(SECURITY_GROUPS)),
    "sg+acl": RuleSet.model_validate(yaml.safe_load(SECURITY_GROUPS + NETWORK_ACLS)),
    "none": RuleSet(),
}
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "gre": 47}
TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}


def _endpoint(text: str, protocol: int) -> tuple[bytes, int]:
    """'10.0.1.10:443', '[2001:db8::5]:443', ICMP '10.0.1.10:8/0' (type/code) → (16 bytes, port)."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    ip = ipaddress.ip_address(host)
    raw = ip.packed if ip.version == 6 else b"\0" * 10 + b"\xff\xff" + ip.packed
    if protocol in (1, 58) and port:
        icmp_type, _, code = port.partition("/")
        return raw, int(icmp_type) << 8 | int(code or 0)
    return raw, int(port or 0)


def flow(text: str) -> Flow:
    """'eni-web in tcp 203.0.113.5:40000 > 10.0.1.10:443 S' (in = ingress, out = egress)."""
    eni, way, protocol_name, src_text, _, dst_text, *flags = text.split()
    protocol = PROTOCOL_NUMBERS[protocol_name]
    src, sport = _endpoint(src_text, protocol)
    dst, dport = _endpoint(dst_text, protocol)
    eni_index = ENI_IDS.index(eni) if eni in ENI_IDS else int(eni)
    tcp_flags = sum(TCP_FLAGS[f] for f in "".join(flags))
    return Flow(eni_index, 0 if way == "in" else 1, src, dst, sport if protocol not in (1, 58) else 0, dport, protocol, tcp_flags)


def compiled_verdicts(rules: RuleSet, flows: list[Flow], eni_ids: list[str] = ENI_IDS) -> list[tuple[str, str, str]]:
    evaluator = VerdictEvaluator.compile(rules, INVENTORY, eni_ids)
    cols = list(zip(*flows))
    v = evaluator.evaluate(
        np.array(cols[0], np.uint32), np.array(cols[1], np.uint8),
        np.frombuffer(b"".join(cols[2]), "V16"), np.frombuffer(b"".join(cols[3]), "V16"),
        np.array(cols[4], np.uint16), np.array(cols[5], np.uint16), np.array(cols[6], np.uint8), np.array(cols[7], np.uint8),
    )
    return [(ACTIONS[a - 1], LAYERS[lay - 1], v.rule_ids[r]) for a, lay, r in zip(v.action, v.layer, v.rule)]


def case(rules: str, text: str, expected: str, name: str) -> Any:  # a pytest ParameterSet
    action, layer, rule = expected.split()
    return pytest.param(rules, text, (action, layer, rule), id=name)


SEMANTICS = [
    # Security groups: order
    case("sg", "eni-web in tcp 203.0.113.5:40000 > 10.0.1.10:443 S", "ACCEPT sg web-https", "first match in the group"),
    case("sg", "eni-web in tcp 198.51.100.7:40000 > 10.0.1.10:443 S", "REJECT sg web-block-bad", "DROP policy before ACCEPT"),
    case("sg", "eni-web in tcp 203.0.113.5:40000 > 10.0.1.10:22 S", "ACCEPT sg web-ssh-office", "earlier group wins over later DROP"),
    case("sg", "eni-web in tcp 10.9.9.9:40000 > 10.0.1.10:22 S", "REJECT sg base-ssh-drop", "later group decides when earlier has no match"),
    case("sg", "eni-web in tcp 203.0.113.5:40000 > 10.0.1.10:8080 S", "REJECT default sg/default", "default deny"),
    # Stateful return traffic
    case("sg", "eni-web out tcp 10.0.1.10:443 > 203.0.113.5:40000 SA", "ACCEPT sg web-https", "return traffic without an egress rule"),
    case("sg", "eni-web out tcp 10.0.1.10:443 > 203.0.113.5:40000 S", "REJECT default sg/default", "TCP opener is never return traffic"),
    case("sg", "eni-web out tcp 10.0.1.10:443 > 198.51.100.7:40000 A", "REJECT default sg/default", "return of a dropped connection"),
    case("sg", "eni-web in udp 8.8.8.8:53 > 10.0.1.10:40000", "ACCEPT sg web-dns", "return traffic of an egress connection"),
    case("sg", "eni-web in icmp 8.8.8.8 > 10.0.1.10:0/0", "ACCEPT sg web-ping-out", "ICMP echo reply is return traffic"),
    case("sg", "eni-web out icmpv6 [2001:db8::9] > [2001:db8::9]:129/0", "ACCEPT sg web-ping6", "ICMPv6 echo reply is return traffic"),
    case("sg", "eni-web in icmp 8.8.8.8 > 10.0.1.10:3/1", "REJECT default sg/default", "other ICMP types are not return traffic"),
    case("sg", "eni-web in icmp 8.8.8.8 > 10.0.1.10:8/0", "ACCEPT sg web-ping", "ICMP type matches"),
    # Addresses
    case("sg", "eni-web in tcp [2001:db9::1]:40000 > [2001:db8::10]:443 S", "REJECT default sg/default", "IPv4 CIDR does not match IPv6"),
    case("sg", "eni-web in tcp [2001:db8::5]:40000 > [2001:db8::10]:443 S", "ACCEPT sg base-v6", "IPv6 CIDR matches IPv6"),
    case("sg", "eni-web in icmpv6 8.8.8.8 > 10.0.1.10:128/0", "REJECT default sg/default", "::/0 does not match IPv4"),
    case("sg", "eni-web in tcp [2001:db8:abcd::1]:40000 > [2001:db8::10]:22 S", "ACCEPT sg web-ssh-office", "address set IPv6 member"),
    case("sg", "eni-web in tcp 203.0.114.5:40000 > 10.0.1.10:22 S", "REJECT sg base-ssh-drop", "outside the address set"),
    case("sg", "eni-db in tcp 10.0.1.11:40000 > 10.0.2.20:5432 S", "ACCEPT sg db-from-web", "referenced group: an IP of a member ENI"),
    case("sg", "eni-db in tcp 10.0.1.99:40000 > 10.0.2.20:5432 S", "REJECT default sg/default", "referenced group: other IPs do not match"),
    case("sg", "eni-web out tcp 10.0.1.10:40000 > 10.0.2.20:5432 S", "ACCEPT sg web-to-db", "referenced group as destination"),
    case("sg", "eni-web in gre [2001:db8::5] > [2001:db8::10]", "ACCEPT sg base-v6", "protocol all matches any protocol"),
    # Ports
    case("sg", "eni-web in udp 8.8.8.8:40000 > 10.0.1.10:30000", "ACCEPT sg web-high", "port range low edge"),
    case("sg", "eni-web in udp 8.8.8.8:40000 > 10.0.1.10:30010", "ACCEPT sg web-high", "port range high edge"),
    case("sg", "eni-web in udp 8.8.8.8:40000 > 10.0.1.10:30011", "REJECT default sg/default", "port just outside the range"),
    case("sg", "eni-web in tcp 8.8.8.8:40000 > 10.0.1.10:30005 S", "REJECT default sg/default", "port right but protocol wrong"),
    # ENIs that no rule covers
    case("sg", "eni-free in tcp 8.8.8.8:40000 > 10.0.2.30:22 S", "ACCEPT default -", "ENI without binding"),
    case("sg", f"{UNKNOWN_ENI} in tcp 8.8.8.8:40000 > 10.0.2.30:22 S", "ACCEPT default -", "unknown ENI index"),
    case("none", "eni-web in tcp 198.51.100.7:40000 > 10.0.1.10:443 S", "ACCEPT default -", "no rule set"),
    # Network ACLs
    case("sg+acl", "eni-web in udp 10.0.1.11:40000 > 10.0.1.10:30005", "ACCEPT sg web-high", "intra-subnet traffic skips the ACL"),
    case("sg+acl", "eni-web in udp 10.0.2.20:40000 > 10.0.1.10:30005", "REJECT default acl-web/default", "cross-subnet ingress meets the ACL"),
    case("sg+acl", "eni-web out udp 10.0.1.10:40000 > 8.8.8.8:53", "REJECT default acl-web/default", "cross-subnet egress meets the ACL"),
    case("sg+acl", "eni-web in tcp 203.0.113.5:40000 > 10.0.1.10:443 S", "ACCEPT sg web-https", "both accept: the SG policy is named"),
    case("sg+acl", "eni-web in tcp 192.0.2.1:40000 > 10.0.1.10:443 S", "REJECT acl acl-in-deny-bad", "ACL DROP beats SG accept"),
    case("sg+acl", "eni-web in tcp 198.51.100.7:40000 > 10.0.1.10:443 S", "REJECT sg web-block-bad", "SG DROP beats ACL accept"),
    case("sg+acl", "eni-web in tcp 192.0.2.1:40000 > 10.0.1.10:8080 S", "REJECT acl acl-in-deny-bad", "both deny on ingress: the ACL is met first"),
    case("sg+acl", "eni-web out tcp 10.0.1.10:40000 > 203.0.113.5:25 S", "REJECT default sg/default", "both deny on egress: the SG is met first"),
    case("sg+acl", "eni-web out tcp 10.0.1.10:443 > 203.0.113.5:25 A", "REJECT acl acl-out-smtp-drop", "stateless ACL drops return traffic the SG accepts"),
    case("sg+acl", "eni-web in udp 8.8.8.8:53 > 10.0.1.10:40000", "REJECT default acl-web/default", "return traffic needs its own ACL entry"),
    case("sg+acl", "eni-web in tcp [2001:db8::5]:40000 > [2001:db8::10]:443 S", "REJECT default acl-web/default", "ACL IPv4 entries do not match IPv6"),
    case("sg+acl", "eni-ops in tcp 10.0.1.10:40000 > 10.0.3.5:22 S", "ACCEPT acl ops-in", "ENI without binding: the ACL entry is named"),
    case("sg+acl", "eni-ops in tcp 10.0.3.6:40000 > 10.0.3.5:22 S", "ACCEPT acl ops-in", "subnet without CIDR: every remote crosses"),
    case("sg+acl", "eni-ops in tcp 203.0.113.5:40000 > 10.0.3.5:22 S", "REJECT default acl-ops/default", "ACL default deny without SG"),
    case("sg+acl", "eni-ghost in tcp 192.0.2.1:40000 > 10.0.1.12:443 S", "ACCEPT sg web-https", "ENI not in the inventory: no ACL"),
    case("sg+acl", f"{UNKNOWN_ENI} in tcp 192.0.2.1:40000 > 10.0.1.12:443 S", "ACCEPT default -", "unknown ENI index: no SG, no ACL"),
]


@pytest.mark.parametrize(("rules", "text", "expected"), SEMANTICS)
def test_semantics(rules: str, text: str, expected: tuple[str, str, str]) -> None:
    f = flow(text)
    assert reference_verdicts.evaluate(RULE_SETS[rules], INVENTORY, ENI_IDS, [f]) == [expected]
    assert compiled_verdicts(RULE_SETS[rules], [f]) == [expected]


def test_all_cases_in_one_batch() -> None:
    """The compiled evaluator gives each flow of a mixed batch the verdict it gets alone."""
    for name, rules in RULE_SETS.items():
        flows = [flow(p.values[1]) for p in SEMANTICS if p.values[0] == name]
        assert compiled_verdicts(rules, flows) == reference_verdicts.evaluate(rules, INVENTORY, ENI_IDS, flows)


# --- rule files -----------------------------------------------------------------------

def _rule(extra: str = "") -> str:
    return "{id: r1, action: ACCEPT, protocol: tcp, ports: 443, source: 0.0.0.0/0" + extra + "}"


INVALID = [
    pytest.param(
        "security_groups:\n  - id: sg-a\n    ingress:\n      - " + _rule() + "\nnetwork_acls:\n  - id: acl-1\n    inbound:\n      - " + _rule() + "\n",
        8, "network_acls.0.inbound.0.id", "rule id 'r1' is already used at security_groups.0.ingress.0", id="duplicate rule id",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\n    ingress:\n      - id: r1\n        action: ACCEPT\n        source: {address_set: office}\n",
        6, "security_groups.0.ingress.0.source.address_set", "unknown address set 'office'", id="unknown address set",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\n    egress:\n      - id: r1\n        action: ACCEPT\n        destination:\n          security_group: sg-b\n",
        7, "security_groups.0.egress.0.destination.security_group", "unknown security group 'sg-b'", id="unknown referenced group",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\nbindings:\n  - eni: eni-1\n    security_groups: [sg-a, sg-b]\n",
        5, "bindings.0.security_groups.1", "unknown security group 'sg-b'", id="binding to unknown group",
    ),
    pytest.param(
        "network_acls:\n  - id: acl-1\n    subnets: [subnet-1]\n  - id: acl-2\n    subnets:\n      - subnet-2\n      - subnet-1\n",
        7, "network_acls.1.subnets.1", "subnet 'subnet-1' is already used at network_acls.0.subnets.0", id="subnet in two ACLs",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\nbindings:\n  - {eni: eni-1, security_groups: [sg-a]}\n  - {eni: eni-1, security_groups: [sg-a]}\n",
        5, "bindings.1.eni", "ENI 'eni-1' is already used at bindings.0.eni", id="ENI bound twice",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\n    ingress:\n      - id: r1\n        action: ACCEPT\n        protocol: icmp\n        ports: 443\n        source: 0.0.0.0/0\n",
        7, "security_groups.0.ingress.0.ports", "protocol icmp has no ports", id="ports on a portless protocol",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\n    ingress:\n      - id: r1\n        action: ACCEPT\n        protocol: tcp\n        ports: 90-80\n        source: 0.0.0.0/0\n",
        7, "security_groups.0.ingress.0.ports", "'90-80' is not a port range: N-M needs N <= M", id="port range N > M",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\n    ingress:\n      - id: r1\n        action: ACCEPT\n        protocol: tcp\n        ports: '70000'\n        source: 0.0.0.0/0\n",
        7, "security_groups.0.ingress.0.ports", "'70000' is not a port range: ports are 0..65535", id="port beyond 65535",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\n    ingress:\n      - id: r1\n        action: ACCEPT\n        protocol: tcp\n        icmp_type: 8\n        source: 0.0.0.0/0\n",
        7, "security_groups.0.ingress.0.icmp_type", "icmp_type needs protocol icmp or icmpv6, not tcp", id="icmp type on tcp",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\n    ingress:\n      - id: r1\n        action: ACCEPT\n        protocol: sctp\n        source: 0.0.0.0/0\n",
        6, "security_groups.0.ingress.0.protocol", "'sctp' is not a protocol", id="unknown protocol",
    ),
    pytest.param(
        "address_sets:\n  - id: office\n    cidrs:\n      - 10.0.0.0/8\n      - 10.0.0.1/24\n",
        5, "address_sets.0.cidrs.1", "'10.0.0.1/24' is not a CIDR", id="CIDR with host bits",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\n    egress:\n      - id: r1\n        action: ACCEPT\n        source: 0.0.0.0/0\n",
        4, "security_groups.0.egress.0.destination", "Field required", id="egress rule without destination",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\n    egress:\n      - id: r1\n        action: ACCEPT\n        destination: 0.0.0.0/0\n        source: 0.0.0.0/0\n",
        7, "security_groups.0.egress.0.source", "Extra inputs are not permitted", id="source on an egress rule",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\nnetwork_acls:\n  - id: acl-1\n    inbound:\n      - id: r1\n        action: DROP\n        source: {security_group: sg-a}\n",
        8, "network_acls.0.inbound.0.source.security_group", "network ACL entries cannot reference a security group", id="ACL entry naming a group",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\n  - id: sg-b\n  - id: sg-a\n",
        4, "security_groups.2.id", "id 'sg-a' is already used at security_groups.0.id", id="duplicate group id",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\nbindings:\n  - eni: eni-1\n    security_groups: [sg-a, sg-a]\n",
        5, "bindings.0.security_groups.1", "security group 'sg-a' is already used at bindings.0.security_groups.0",
        id="group twice in a binding",
    ),
    pytest.param(
        "address_sets:\n  - id: office\n    cidrs: ['::ffff:10.0.0.0/104']\n",
        3, "address_sets.0.cidrs.0", "'::ffff:10.0.0.0/104' is IPv4-mapped: write it as an IPv4 CIDR", id="IPv4-mapped IPv6 CIDR",
    ),
    pytest.param(
        "security_groups:\n  - id: sg-a\n    ingress:\n      - id: sg/default\n        action: ACCEPT\n        source: 0.0.0.0/0\n",
        4, "security_groups.0.ingress.0.id", "rule id 'sg/default' must be non-empty, not '-', without '/'", id="rule id that could be a default's",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "message"), INVALID)
def test_invalid_files_name_file_line_and_field(tmp_path: Path, text: str, line: int, field: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_rules(path)
    assert re.search(re.escape(f"{path} line {line}: {field}: {message}"), str(error.value)), str(error.value)


def test_json_files_get_line_numbers_too(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text('{\n  "security_groups": [\n    {\n      "id": "sg-a",\n      "ingress": [\n'
                    '        {"id": "r1", "action": "ACCEPT", "protocol": "udp", "ports": "9-8", "source": "0.0.0.0/0"}\n'
                    "      ]\n    }\n  ]\n}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path} line 6: security_groups.0.ingress.0.ports: '9-8'")):
        load_rules(path)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read rule set"):
        load_rules(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("security_groups: [\n")
    with pytest.raises(ConfigError, match=f"rule set {re.escape(str(bad))} is not valid YAML/JSON"):
        load_rules(bad)


def test_parse_rules_names_the_source_without_lines() -> None:
    with pytest.raises(ConfigError, match=r"^topic rules-v1 offset 4: bindings\.0\.security_groups: Tuple should have at least 1 item"):
        parse_rules({"bindings": [{"eni": "eni-1", "security_groups": []}]}, "topic rules-v1 offset 4")


def test_valid_file_loads_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 7\n" + SECURITY_GROUPS + NETWORK_ACLS)
    rules = load_rules(path)
    assert rules.version == 7 and len(list(rules.rules())) == 19
    web_high = rules.security_groups[0].ingress[5]
    assert (web_high.protocol, web_high.ports, web_high.dport_range) == ("udp", "30000-30010", (30000, 30010))
    assert parse_rules(orjson.loads(rules.to_json_bytes()), "round trip") == rules
    assert rules.to_json_bytes() == parse_rules(orjson.loads(rules.to_json_bytes()), "again").to_json_bytes()


def test_empty_file_is_the_empty_rule_set(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("")
    assert load_rules(path) == RuleSet()


@pytest.mark.parametrize(
    ("written", "protocol", "ports", "dport_range"),
    [
        pytest.param({"protocol": 6, "ports": 443}, "tcp", "443", (443, 443), id="numbers as names"),
        pytest.param({"protocol": "UDP", "ports": "1000 - 1000"}, "udp", "1000", (1000, 1000), id="case and spaces"),
        pytest.param({"protocol": 47}, 47, "all", (0, 65535), id="unnamed protocol"),
        pytest.param({"protocol": "icmp", "icmp_type": 3, "icmp_code": 1}, "icmp", "all", (0x301, 0x301), id="icmp type and code"),
        pytest.param({"protocol": "all", "ports": "80-90"}, "all", "80-90", (80, 90), id="all with ports"),
    ],
)
def test_rule_normalisation(written: dict[str, object], protocol: object, ports: str, dport_range: tuple[int, int]) -> None:
    rule = parse_rules({"security_groups": [{"id": "g", "ingress": [{"id": "r", "action": "accept", "source": "::/0", **written}]}]}, "t")
    got = rule.security_groups[0].ingress[0]
    assert (got.action, got.protocol, got.ports, got.dport_range) == ("ACCEPT", protocol, ports, dport_range)


def test_rule_files_read_the_same_as_json_or_yaml(tmp_path: Path) -> None:
    rules = {"security_groups": [{"id": "web", "ingress": [{"id": "https", "action": "accept", "source": "0.0.0.0/0", "protocol": "tcp", "ports": "443"}]}]}
    as_json, as_yaml = tmp_path / "rules.json", tmp_path / "rules.yaml"
    as_json.write_bytes(orjson.dumps(rules))
    as_yaml.write_text(yaml.safe_dump(rules))
    assert load_rules(as_json) == load_rules(as_yaml) == RuleSet.model_validate(rules)
    (tmp_path / "bad.yaml").write_text("security_groups: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML/JSON"):
        load_rules(tmp_path / "bad.yaml")
