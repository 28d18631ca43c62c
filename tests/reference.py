"""An obviously-correct, pure-Python flow aggregation to check the vectorised one against."""

from __future__ import annotations

from schemas.frame import Packets

FlowKey = tuple[str, bytes, bytes, int, int, int, int, int]  # eni, src, dst, sport, dport, proto, dir, window_start_s


def aggregate(batches: list[tuple[tuple[str, ...], Packets]], window_seconds: int) -> dict[FlowKey, list[int]]:
    """key → [packets, bytes, first_s, last_s, tcp_flags]."""
    window_ns = window_seconds * 1_000_000_000
    out: dict[FlowKey, list[int]] = {}
    for eni_ids, p in batches:
        cols = [c.tolist() for c in p]
        for ts, src, dst, ip_len, _wire, sport, dport, eni, proto, flags, direction in zip(*cols):
            key = (eni_ids[eni], bytes(src), bytes(dst), sport, dport, proto, direction, ts // window_ns * window_seconds)
            row = out.get(key)
            if row is None:
                out[key] = [1, ip_len, ts // 10**9, ts // 10**9, flags]
            else:
                row[0] += 1
                row[1] += ip_len
                row[2] = min(row[2], ts // 10**9)
                row[3] = max(row[3], ts // 10**9)
                row[4] |= flags
    return out
