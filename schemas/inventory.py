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

The pipeline uses it to fill ``vpc-id`` and ``subnet-id``; agents use it to tell which ENI
a mirrored packet belongs to.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flowlogs.errors import ConfigError


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


class Inventory(_Model):
    vpcs: tuple[Vpc, ...] = ()
    subnets: tuple[Subnet, ...] = ()
    enis: tuple[Eni, ...] = ()

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
        data = yaml.safe_load(path.read_text()) or {}
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
