"""Destination addresses that reach more than one host: what broadcast and multicast mean here.

A packet is broadcast/multicast when its destination is the limited broadcast address, the
directed broadcast address of the ENI's subnet (its last address, from the inventory), or
in a multicast range. The storm detector (numpy) and the storm report (SQL) both read
these definitions.
"""

from __future__ import annotations

import ipaddress

LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
MULTICAST = (ipaddress.ip_network("224.0.0.0/4"), ipaddress.ip_network("ff00::/8"))


def stored(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """An address as the 128-bit integer flows store (IPv4 IPv4-mapped)."""
    return 0xFFFF_0000_0000 | int(address) if address.version == 4 else int(address)


def many_host_ranges() -> list[tuple[int, int]]:
    """(first, last) stored addresses of the limited broadcast and the multicast ranges."""
    ranges = [(stored(LIMITED_BROADCAST), stored(LIMITED_BROADCAST))]
    ranges += [(stored(n.network_address), stored(n.broadcast_address)) for n in MULTICAST]
    return ranges


def directed_broadcast(cidr: str) -> ipaddress.IPv4Address | None:
    """The directed broadcast address of an IPv4 subnet (None for IPv6, which has none)."""
    network = ipaddress.ip_network(cidr, strict=False)
    return network.broadcast_address if network.version == 4 and network.prefixlen < 31 else None
