"""The rule set: security groups and network ACLs that decide each flow record's ``action``.

A rule set is a YAML or JSON file (:func:`load_rules`) or a decoded message
(:func:`parse_rules`)::

    version: 7                       # optional; the publisher assigns one when absent (0)
    address_sets:
      - id: office
        cidrs: [203.0.113.0/24, "2001:db8::/32"]
    security_groups:
      - id: sg-web
        ingress:                     # ordered: the first matching policy decides
          - id: web-https            # unique across the rule set; no "/" and not "-"
            action: ACCEPT           # ACCEPT | DROP
            protocol: tcp            # all | tcp | udp | icmp | icmpv6 | 0..255
            ports: "443"             # all (default) | N | N-M: only with tcp, udp or all
            source: 0.0.0.0/0        # a CIDR | {address_set: ID} | {security_group: ID}
          - {id: ping, action: ACCEPT, protocol: icmp, icmp_type: 8, source: {address_set: office}}
        egress:                      # egress rules name a `destination` instead
          - {id: web-out, action: ACCEPT, protocol: all, destination: 0.0.0.0/0}
    bindings:                        # ENI → its security groups, evaluated in this order
      - {eni: eni-0a1b2c3d4e5f60718, security_groups: [sg-web]}
    network_acls:
      - id: acl-1
        subnets: [subnet-01]         # a subnet has at most one ACL
        inbound:  [{id: acl-in-1, action: ACCEPT, protocol: tcp, ports: "443", source: 0.0.0.0/0}]
        outbound: [{id: acl-out-1, action: ACCEPT, protocol: all, destination: 0.0.0.0/0}]

Semantics. A flow is (ENI, direction, srcaddr, dstaddr, srcport, dstport, protocol,
tcp-flags). Its *remote* address is srcaddr for ingress and dstaddr for egress. The
inventory (``schemas/inventory.py``) gives each ENI its subnet and its IPs.

1. A rule matches a flow when its protocol is ``all`` or the flow's; its port range holds
   the flow's dstport (the ENI's port for ingress, the remote's for egress), checked for
   TCP and UDP flows only — a port range on ``all`` makes the rule match TCP and UDP flows
   only; ``icmp_type`` (and ``icmp_code``) match ICMP/ICMPv6 dstport = type << 8 | code —
   and the remote address is in its CIDR, in any CIDR of its address set, or is an IP of
   an ENI that a binding puts in its security group. IPv4 CIDRs match only IPv4 (mapped)
   addresses and IPv6 CIDRs only other addresses: ``0.0.0.0/0`` is not ``::/0``.
2. Security groups are stateful. An ENI's groups are evaluated in binding order, each
   group's policies of the flow's direction in order, and the first matching policy
   decides; when none matches the flow is dropped (rule ``sg/default``). A dropped flow is
   still accepted as return traffic when the reversed flow (addresses and ports swapped,
   the other direction, same protocol) is accepted by the other direction's policies —
   unless it opens a connection (TCP SYN without ACK). An ICMP echo reply (type 0; ICMPv6
   129) reverses to the echo request (type 8 / 128, code 0); other ICMP types are never
   return traffic. An ENI without a binding is not filtered by security groups.
3. Network ACLs are stateless and bound to subnets. The ACL of an ENI's subnet applies to
   traffic whose remote address is outside the subnet's CIDR (to all traffic when the
   subnet has no CIDR): ``inbound`` entries for ingress, ``outbound`` for egress; the first
   matching entry decides; none → dropped (rule ``<acl-id>/default``). An ENI that is not
   in the inventory has no subnet, hence no ACL.
4. The verdict is REJECT when either layer drops. The deciding rule follows the packet's
   path — ingress meets the ACL, then the groups; egress the groups, then the ACL: a
   REJECT names the first layer on that path that dropped (layer ``acl`` or ``sg`` for an
   explicit DROP rule, ``default`` for a default deny). An ACCEPT names the groups'
   accepting policy (the other direction's for return traffic) when the ENI has a
   binding, else the ACL's accepting entry when an ACL applied, else no rule (``-``,
   layer ``default``). So an empty rule set accepts everything.

``version`` is carried, not interpreted: a rule set with version 0 is evaluated like any
other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from flowlogs.errors import ConfigError
from schemas.documents import document_tree, load_document

LAYERS = ("sg", "acl", "default")  # code = index + 1, like the flow record's Enum8 columns
LAYER_SG, LAYER_ACL, LAYER_DEFAULT = 1, 2, 3
NO_RULE = "-"  # the rule id of an ACCEPT that no rule decided
SG_DEFAULT = "sg/default"

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
PORT_PROTOCOLS = (6, 17)  # protocols whose rules may have a port range
ICMP_PROTOCOLS = (1, 58)
_PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}
_MAPPED_SPACE = ipaddress.IPv6Network("::ffff:0:0/96")

_Loc = tuple[str | int, ...]  # a place in the rule set, as in pydantic's error locations


def acl_default(acl_id: str) -> str:
    """The rule id of an ACL's implicit default deny."""
    return f"{acl_id}/default"


def _cidr(value: Any) -> Any:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    try:
        network = ipaddress.ip_network(str(value))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR ({exc})") from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED_SPACE):
        raise ValueError(f"{value!r} is IPv4-mapped: write it as an IPv4 CIDR")
    return network


Cidr = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_cidr)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AddressSet(_Model):
    """A named list of CIDRs that rules can use as their source or destination."""

    id: str = Field(min_length=1)
    cidrs: tuple[Cidr, ...] = ()


class Peer(_Model):
    """A rule's remote side: exactly one of a CIDR, an address set or a security group.

    Written as a bare CIDR string or a one-key mapping; serialised the same way.
    """

    cidr: Cidr | None = None
    address_set: str | None = None
    security_group: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_cidr(cls, data: Any) -> Any:
        return {"cidr": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _exactly_one(self) -> Peer:
        if sum(v is not None for v in (self.cidr, self.address_set, self.security_group)) != 1:
            raise ValueError("give exactly one of: a CIDR, {address_set: ID}, {security_group: ID}")
        return self

    @model_serializer(mode="plain")
    def _compact(self) -> str | dict[str, str]:
        if self.cidr is not None:
            return str(self.cidr)
        if self.address_set is not None:
            return {"address_set": self.address_set}
        return {"security_group": str(self.security_group)}


class Rule(_Model):
    """What an SG policy and an ACL entry have in common: id, action, protocol, ports."""

    id: str
    action: Literal["ACCEPT", "DROP"]
    protocol: str | int = "all"  # all, a name of PROTOCOLS, or another protocol number
    ports: str = "all"
    icmp_type: int | None = Field(default=None, ge=0, le=255)
    icmp_code: int | None = Field(default=None, ge=0, le=255)

    @field_validator("id")
    @classmethod
    def _id_leaves_room_for_defaults(cls, value: str) -> str:
        if not value or value == NO_RULE or "/" in value or value != value.strip():
            raise ValueError(f"rule id {value!r} must be non-empty, not '-', without '/' or surrounding spaces")
        return value

    @field_validator("action", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: Any) -> str | int:
        text = str(value).strip().lower()
        if text == "all" or text in PROTOCOLS:
            return text
        if text.isdigit() and int(text) <= 255:
            return _PROTOCOL_NAMES.get(int(text), int(text))
        raise ValueError(f"{value!r} is not a protocol: all, tcp, udp, icmp, icmpv6 or 0..255")

    @field_validator("ports", mode="before")
    @classmethod
    def _port_range(cls, value: Any, info: ValidationInfo) -> str:
        text = str(value).replace(" ", "").lower()
        if text != "all":
            low, _, high = text.partition("-")
            if not (low.isdigit() and (high.isdigit() or not high)):
                raise ValueError(f"{value!r} is not a port range: all, N or N-M")
            lo, hi = int(low), int(high or low)
            if hi > 65535:
                raise ValueError(f"{value!r} is not a port range: ports are 0..65535")
            if lo > hi:
                raise ValueError(f"{value!r} is not a port range: N-M needs N <= M")
            text = str(lo) if lo == hi else f"{lo}-{hi}"
            protocol = info.data.get("protocol")
            if protocol is not None and protocol != "all" and PROTOCOLS.get(str(protocol)) not in PORT_PROTOCOLS:
                raise ValueError(f"protocol {protocol} has no ports: use ports 'all' (or icmp_type for ICMP)")
        return text

    @field_validator("icmp_type", "icmp_code")
    @classmethod
    def _icmp_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        protocol = info.data.get("protocol")
        if value is not None and protocol is not None and PROTOCOLS.get(str(protocol)) not in ICMP_PROTOCOLS:
            raise ValueError(f"{info.field_name} needs protocol icmp or icmpv6, not {protocol}")
        if info.field_name == "icmp_code" and value is not None and "icmp_type" in info.data and info.data["icmp_type"] is None:
            raise ValueError("icmp_code needs an icmp_type")
        return value

    @property
    def protocol_number(self) -> int | None:
        """The IP protocol number this rule matches; None for ``all``."""
        if self.protocol == "all":
            return None
        return PROTOCOLS[self.protocol] if isinstance(self.protocol, str) else self.protocol

    @property
    def dport_range(self) -> tuple[int, int]:
        """Inclusive (low, high) of the flow dstport values this rule admits.

        (0, 65535) when it does not look at ports; for ICMP the type/code range.
        """
        if self.icmp_type is not None:
            base = self.icmp_type << 8
            return (base, base | 255) if self.icmp_code is None else (base | self.icmp_code,) * 2
        if self.ports == "all":
            return 0, 65535
        low, _, high = self.ports.partition("-")
        return int(low), int(high or low)

    @property
    def port_restricted(self) -> bool:
        """True when the rule only admits some dstport values."""
        return self.dport_range != (0, 65535)


class IngressRule(Rule):
    """An ingress SG policy or inbound ACL entry: matches on the flow's source."""

    source: Peer

    @property
    def remote(self) -> Peer:
        return self.source


class EgressRule(Rule):
    """An egress SG policy or outbound ACL entry: matches on the flow's destination."""

    destination: Peer

    @property
    def remote(self) -> Peer:
        return self.destination


class SecurityGroup(_Model):
    """Ordered policies per direction; stateful (see the module docstring)."""

    id: str = Field(min_length=1)
    ingress: tuple[IngressRule, ...] = ()
    egress: tuple[EgressRule, ...] = ()


class Binding(_Model):
    """An ENI and its security groups, in evaluation order."""

    eni: str = Field(min_length=1)
    security_groups: tuple[str, ...] = Field(min_length=1)


class NetworkAcl(_Model):
    """Ordered entries per direction for the traffic crossing its subnets; stateless."""

    id: str = Field(min_length=1)
    subnets: tuple[str, ...] = ()
    inbound: tuple[IngressRule, ...] = ()
    outbound: tuple[EgressRule, ...] = ()


class _Problems(ValueError):
    """Cross-reference problems, each at a location below the rule set (for line numbers)."""

    def __init__(self, problems: list[tuple[_Loc, str]]) -> None:
        super().__init__("; ".join(f"{_dotted(loc)}: {msg}" for loc, msg in problems))
        self.problems = problems


class RuleSet(_Model):
    """A whole, consistent rule set: every reference resolves, every id is unique."""

    version: int = Field(default=0, ge=0)
    address_sets: tuple[AddressSet, ...] = ()
    security_groups: tuple[SecurityGroup, ...] = ()
    bindings: tuple[Binding, ...] = ()
    network_acls: tuple[NetworkAcl, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> RuleSet:
        problems = list(self._problems())
        if problems:
            raise _Problems(problems)
        return self

    def _problems(self) -> Iterator[tuple[_Loc, str]]:
        for field in ("address_sets", "security_groups", "network_acls"):
            yield from _duplicates(((field, i, "id"), item.id) for i, item in enumerate(getattr(self, field)))
        yield from _duplicates((((*loc, "id"), rule.id) for loc, rule in self.rules()), what="rule id")
        yield from _duplicates(((("bindings", i, "eni"), b.eni) for i, b in enumerate(self.bindings)), what="ENI")
        yield from _duplicates(
            ((("network_acls", i, "subnets", j), s) for i, acl in enumerate(self.network_acls) for j, s in enumerate(acl.subnets)),
            what="subnet",
        )
        sets = {s.id for s in self.address_sets}
        groups = {g.id for g in self.security_groups}
        for loc, rule in self.rules():
            peer, side = rule.remote, "source" if isinstance(rule, IngressRule) else "destination"
            if peer.address_set is not None and peer.address_set not in sets:
                yield (*loc, side, "address_set"), f"unknown address set {peer.address_set!r}"
            if peer.security_group is not None and loc[0] == "network_acls":
                yield (*loc, side, "security_group"), "network ACL entries cannot reference a security group"
            elif peer.security_group is not None and peer.security_group not in groups:
                yield (*loc, side, "security_group"), f"unknown security group {peer.security_group!r}"
        for i, binding in enumerate(self.bindings):
            yield from _duplicates(
                ((("bindings", i, "security_groups", j), g) for j, g in enumerate(binding.security_groups)), what="security group"
            )
            for j, group in enumerate(binding.security_groups):
                if group not in groups:
                    yield ("bindings", i, "security_groups", j), f"unknown security group {group!r}"

    def rules(self) -> Iterator[tuple[_Loc, IngressRule | EgressRule]]:
        """Every SG policy and ACL entry with its location: SG ingress, SG egress, ACL inbound, ACL outbound."""
        for field, direction in (("security_groups", "ingress"), ("security_groups", "egress"),
                                 ("network_acls", "inbound"), ("network_acls", "outbound")):
            for i, owner in enumerate(getattr(self, field)):
                for j, rule in enumerate(getattr(owner, direction)):
                    yield (field, i, direction, j), rule

    def to_json_bytes(self) -> bytes:
        """Canonical JSON (field order fixed, unset options left out) that :func:`parse_rules` reads back."""
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


def _dotted(loc: Iterable[str | int]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _duplicates(items: Iterable[tuple[_Loc, str]], what: str = "id") -> Iterator[tuple[_Loc, str]]:
    first: dict[str, _Loc] = {}
    for loc, value in items:
        if value in first:
            yield loc, f"{what} {value!r} is already used at {_dotted(first[value])}"
        else:
            first[value] = loc


def _line(root: yaml.Node | None, loc: _Loc) -> int | None:
    """1-based line of the deepest node of ``root`` that ``loc`` reaches."""
    node = root
    if node is None:
        return None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            found = node.value[part]
        else:
            found = None
        if found is None:
            break
        node = found
    return node.start_mark.line + 1


def parse_rules(data: Any, source: str, *, text: str | None = None) -> RuleSet:
    """Validate a decoded rule set; errors name ``source``, the field and (given the YAML/JSON ``text`` it
    was read from) the line."""
    if data is None:
        data = {}
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        problems: list[tuple[_Loc, str]] = []
        for error in exc.errors():
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, _Problems):
                problems += [(tuple(error["loc"]) + loc, msg) for loc, msg in cause.problems]
            else:
                problems.append((tuple(error["loc"]), error["msg"].removeprefix("Value error, ")))
        # Only a refused rule set needs line numbers: its node tree is composed for them now.
        document = document_tree(text) if text is not None else None
        lines = sorted(((_line(document, loc) or 0, loc, msg) for loc, msg in problems), key=lambda p: p[0])
        raise ConfigError(
            "; ".join(f"{source}{f' line {line}' if line else ''}: {_dotted(loc)}: {msg}" for line, loc, msg in lines)
        ) from exc


def load_rules(path: Path) -> RuleSet:
    """Read and validate a rule-set file (YAML or JSON); errors name the file, line and field."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read rule set {path}: {exc.strerror}") from exc
    try:
        data = load_document(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"rule set {path} is not valid YAML/JSON: {exc}") from exc
    return parse_rules(data, str(path), text=text)
