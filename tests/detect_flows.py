"""Flow-record columns for detector tests, as FlowRecordBuilder.columns makes them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from schemas import flow_record


@dataclass
class Flow:
    src: str
    dst: str
    sport: int
    dport: int
    proto: int = 6
    packets: int = 3
    bytes: int = 180
    window: int = 0  # window start, Unix seconds
    eni: int = 0
    action: str = "ACCEPT"
    flags: int = 0x12 | 0x10  # SYN|ACK|ACK: an answered TCP exchange
    status: str = "OK"
    direction: int = 0


def _stored(text: str) -> bytes:
    address = ipaddress.ip_address(text)
    return (ipaddress.IPv6Address(f"::ffff:{address}") if address.version == 4 else address).packed


def columns(flows: list[Flow]) -> dict[str, np.ndarray]:
    def col(values: list, dtype: object) -> np.ndarray:
        return np.array(values, dtype=dtype)

    return {
        "eni": col([f.eni for f in flows], np.uint32),
        "srcaddr": col([_stored(f.src) for f in flows], "V16") if flows else np.empty(0, "V16"),
        "dstaddr": col([_stored(f.dst) for f in flows], "V16") if flows else np.empty(0, "V16"),
        "srcport": col([f.sport for f in flows], np.uint16),
        "dstport": col([f.dport for f in flows], np.uint16),
        "protocol": col([f.proto for f in flows], np.uint8),
        "packets": col([f.packets for f in flows], np.uint64),
        "bytes": col([f.bytes for f in flows], np.uint64),
        "window_start": col([f.window for f in flows], np.uint32),
        "action": col([flow_record.ACTIONS.index(f.action) for f in flows], np.int32),
        "log_status": col([flow_record.LOG_STATUSES.index(f.status) for f in flows], np.int32),
        "tcp_flags": col([f.flags for f in flows], np.uint8),
        "flow_direction": col([f.direction for f in flows], np.int32),
    }
