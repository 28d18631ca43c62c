"""The network inventory file: VPCs, subnets and ENIs (YAML or JSON).

Example::

    vpcs:
      - id: vpc-0a1b2c3d
        cidr: 10.0.0.0/16
    subnets:
      - id: subnet-01
        vpc: vpc-0a1b2c3d
        cidr: 10.0.1.0/24
    enis:
      - id: eni-0a1b2c3d4e5f60718
        subnet: subnet-01
        ips: [10.0.1.10]
        mac: "02:00:00:00:00:01"
    mirror_sessions:            # optional: traffic-mirror sessions to this agent
      - eni: eni-0a1b2c3d4e5f60718
        vni: 100                # VXLAN; or gre_key: N, or erspan_id: N (0..1023)

The pipeline uses it to fill ``vpc-id`` and ``subnet-id``; agents use it to tell which ENI
a mirrored packet belongs to: by its mirror session when it came through one, else by
which end of the packet is an ENI's address.
"""

from __future__ import annotations

import ipaddress
from enum import IntEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flowlogs.errors import ConfigError
from schemas.documents import load_document


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Vpc(_Model):
    id: str
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None


class Subnet(_Model):
    id: str
    vpc: str
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None


class Eni(_Model):
    id: str = Field(max_length=32)
    subnet: str
    ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    mac: str | None = None


class SessionKind(IntEnum):
    VXLAN = 1
    GRE = 2  # keyed by the GRE key (0 when the header has none)
    ERSPAN = 3


def session_key(kind: SessionKind, session_id: int) -> int:
    """The one integer that names a mirror session in packet columns: ``kind << 32 | id``."""
    return (int(kind) << 32) | int(session_id)


class MirrorSession(_Model):
    """A traffic-mirror session that delivers one ENI's packets; exactly one id is set."""

    eni: str
    vni: int | None = Field(None, ge=0, lt=1 << 24)
    gre_key: int | None = Field(None, ge=0, lt=1 << 32)
    erspan_id: int | None = Field(None, ge=0, lt=1 << 10)

    @model_validator(mode="after")
    def _one_id(self) -> "MirrorSession":
        if sum(v is not None for v in (self.vni, self.gre_key, self.erspan_id)) != 1:
            raise ValueError(f"mirror session of {self.eni} needs exactly one of vni, gre_key, erspan_id")
        return self

    @property
    def key(self) -> int:
        if self.vni is not None:
            return session_key(SessionKind.VXLAN, self.vni)
        if self.gre_key is not None:
            return session_key(SessionKind.GRE, self.gre_key)
        return session_key(SessionKind.ERSPAN, self.erspan_id or 0)


class Inventory(_Model):
    vpcs: tuple[Vpc, ...] = ()
    subnets: tuple[Subnet, ...] = ()
    enis: tuple[Eni, ...] = ()
    mirror_sessions: tuple[MirrorSession, ...] = ()

    @model_validator(mode="after")
    def _references_exist(self) -> "Inventory":
        vpcs = {v.id for v in self.vpcs}
        subnets = {s.id for s in self.subnets}
        for s in self.subnets:
            if s.vpc not in vpcs:
                raise ValueError(f"subnet {s.id} names unknown VPC {s.vpc}")
        for e in self.enis:
            if e.subnet not in subnets:
                raise ValueError(f"ENI {e.id} names unknown subnet {e.subnet}")
        enis = {e.id for e in self.enis}
        keys: dict[int, str] = {}
        for m in self.mirror_sessions:
            if m.eni not in enis:
                raise ValueError(f"mirror session names unknown ENI {m.eni}")
            if m.key in keys:
                raise ValueError(f"mirror sessions of {keys[m.key]} and {m.eni} have the same id")
            keys[m.key] = m.eni
        return self

    def placement(self) -> dict[str, tuple[str, str]]:
        """ENI id → (vpc-id, subnet-id)."""
        subnet_vpc = {s.id: s.vpc for s in self.subnets}
        return {e.id: (subnet_vpc[e.subnet], e.subnet) for e in self.enis}

    def dump(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))


def load_inventory(path: Path) -> Inventory:
    """Read and validate an inventory file; errors name the file and the field."""
    try:
        data = load_document(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read inventory {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"inventory {path} is not valid YAML/JSON: {exc}") from exc
    try:
        return Inventory.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"inventory {path} is invalid: {problems}") from exc
