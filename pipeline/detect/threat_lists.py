"""Threat IP lists (FireHOL, Spamhaus DROP) parsed from files and matched against address columns.

Formats are told apart by content, never by file name:

* **Spamhaus DROP JSON** (``drop_v4.json``, ``drop_v6.json``): the first non-blank character is
  ``{``. One object per line, ``{"cidr": "1.10.16.0/20", "sblid": "SBL256894", "rir": "apnic"}``,
  then a final ``{"type": "metadata", ...}`` object. A file without that object is taken as a
  truncated download and refused.
* **Spamhaus DROP text** (``drop.txt``, ``drop_v6.txt``, ``edrop.txt``): the first non-blank line
  starts with ``;`` or carries one, as in ``1.10.16.0/20 ; SBL256894``. ``;`` starts a comment.
* **FireHOL** ``.netset`` / ``.ipset``: anything else. ``#`` lines are comments (the header),
  every other line is one IPv4 or IPv6 address or CIDR.

The label of an entry is its SBL id (Spamhaus) or ``''`` (FireHOL). A line that is none of
these raises :class:`ThreatListError` naming the file, the line number and the text.

Two rules shape what a list contributes, each reported in one warning per file:

* A CIDR with host bits set beyond its prefix (``10.1.2.3/8``) stands for the network it lies
  in (``10.0.0.0/8``), as ``ipset`` and FireHOL's ``iprange`` read it.
* An entry that overlaps a special-purpose range of :data:`SPECIAL_RANGES` — private, loopback,
  link-local, CGNAT, multicast, documentation, benchmarking, reserved — is ignored. CIDRs never
  overlap partially, so that is an entry that lies inside such a range (``10.0.0.0/8``,
  ``fe80::1``) or contains one (``0.0.0.0/0``, ``224.0.0.0/3``, and also ``8.0.0.0/5``, which
  holds ``10.0.0.0/8``). FireHOL level1 lists the bogons on purpose, for border filters; here
  they would flag every internal flow.

Addresses are 16 bytes, IPv4 as IPv4-mapped IPv6 (see ``schemas.frame``); an IPv4-mapped row
is only ever matched against IPv4 entries, any other row only against IPv6 entries. Where
entries nest, the longest prefix wins; the same network listed twice resolves to the first
(lists in path order, entries in file order).
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import logging
import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

from flowlogs.errors import FlowLogsError
from schemas.frame import is_ipv4_mapped

__all__ = [
    "LIST_SUFFIXES",
    "SPECIAL_RANGES",
    "MatchedEntry",
    "Matches",
    "PrefixMatcher",
    "ThreatEntry",
    "ThreatList",
    "ThreatListError",
    "ThreatLists",
    "detect_format",
    "parse_threat_list",
    "read_threat_list",
]

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LIST_SUFFIXES = frozenset({".netset", ".ipset", ".txt", ".json"})
"""File suffixes taken from a list directory (dot files are skipped: downloaders' temporaries)."""

SPECIAL_RANGES: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        # IANA IPv4 Special-Purpose Address Registry, the blocks that are not globally reachable,
        # plus multicast (IANA IPv4 Multicast Address Space Registry).
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        # IPv6: IANA allocates global unicast only from 2000::/3, so everything outside it —
        # ::/128, ::1, IPv4-mapped, NAT64, discard-only, ULA fc00::/7, link-local fe80::/10,
        # multicast ff00::/8, SRv6 SIDs 5f00::/16 and unallocated space — is not a threat
        # source; inside it, the non-global blocks of the IPv6 Special-Purpose Registry:
        # benchmarking, ORCHIDv1 and the two documentation ranges.
        "::/3", "4000::/2", "8000::/1",
        "2001:2::/48", "2001:10::/28", "2001:db8::/32", "3fff::/20",
    )
)  # fmt: skip

_SPECIAL_BOUNDS = {
    version: [(int(n.network_address), int(n.broadcast_address)) for n in SPECIAL_RANGES if n.version == version]
    for version in (4, 6)
}
_EXAMPLES = 5  # entries quoted in a warning


class ThreatListError(FlowLogsError):
    """A threat list file cannot be read or has a line that is not a list entry."""


class ThreatEntry(NamedTuple):
    """One network of a list and its label (the Spamhaus SBL id, or ``''``)."""

    network: IPNetwork
    label: str


class MatchedEntry(NamedTuple):
    """What a match points at: the list's name, the entry's CIDR and its label."""

    list_name: str
    cidr: str
    label: str


def detect_format(text: str) -> str:
    """``'spamhaus-json'``, ``'spamhaus-text'`` or ``'firehol'``, from the first non-blank line."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith("{"):
        return "spamhaus-json"
    if ";" in first and not first.startswith("#"):
        return "spamhaus-text"
    return "firehol"


def _firehol_record(line: str) -> tuple[str, str]:
    return line, ""


def _spamhaus_text_record(line: str) -> tuple[str, str]:
    cidr, _, label = line.partition(";")
    return cidr.strip(), label.strip()


def _spamhaus_json_record(line: str) -> tuple[str, str] | None:
    """The (cidr, SBL id) of a record line; None for the metadata object."""
    record = json.loads(line)  # JSONDecodeError is a ValueError, which the caller reports with the line
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    if record.get("type") == "metadata":
        return None
    cidr = record.get("cidr")
    if not isinstance(cidr, str):
        raise TypeError('no "cidr" string')
    return cidr, str(record.get("sblid", ""))


_PARSERS = {  # format: (comment prefix, line parser)
    "firehol": ("#", _firehol_record),
    "spamhaus-text": (";", _spamhaus_text_record),
    "spamhaus-json": (None, _spamhaus_json_record),
}


def _is_special(network: IPNetwork) -> bool:
    first = int(network.network_address)
    last = first + (1 << (network.max_prefixlen - network.prefixlen)) - 1  # cheaper than broadcast_address
    return any(first <= end and start <= last for start, end in _SPECIAL_BOUNDS[network.version])


def parse_threat_list(text: str, source: str | os.PathLike[str]) -> list[ThreatEntry]:
    """The entries of a list in any supported format, in file order, special ranges left out.

    ``source`` names the file in errors and warnings. Raises :class:`ThreatListError` for the
    first line that is not an entry, and for a Spamhaus JSON file without its metadata object.
    """
    fmt = detect_format(text)
    comment, parse_record = _PARSERS[fmt]
    entries: list[ThreatEntry] = []
    host_bits: list[str] = []
    special: list[str] = []
    metadata_seen = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or (comment and stripped.startswith(comment)):
            continue
        try:
            record = parse_record(stripped)
            if record is None:
                metadata_seen = True
                continue
            cidr, label = record
            try:
                network = ipaddress.ip_network(cidr)
            except ValueError:
                network = ipaddress.ip_network(cidr, strict=False)  # still a ValueError if no address at all
                host_bits.append(f"{cidr} → {network}")
        except (ValueError, TypeError) as error:
            raise ThreatListError(f"{source}:{number}: not a {fmt} entry ({error}): {stripped[:120]!r}") from error
        if _is_special(network):
            special.append(str(network))
        else:
            entries.append(ThreatEntry(network, label))
    if fmt == "spamhaus-json" and not metadata_seen:
        raise ThreatListError(f"{source}: no metadata object at the end: a truncated download?")
    if host_bits:
        log.warning(
            "%s: %d entries have host bits set beyond the prefix; each stands for the network it lies in: %s",
            source, len(host_bits), ", ".join(host_bits[:_EXAMPLES]) + (", ..." if len(host_bits) > _EXAMPLES else ""),
        )  # fmt: skip
    if special:
        log.warning(
            "%s: ignoring %d entries that are, lie in or contain private, loopback, link-local, CGNAT, "
            "multicast or other special-purpose ranges (they would flag internal traffic): %s",
            source, len(special), ", ".join(special[:_EXAMPLES]) + (", ..." if len(special) > _EXAMPLES else ""),
        )  # fmt: skip
    return entries


def read_threat_list(path: str | os.PathLike[str]) -> ThreatList:
    """Read and parse one list file; raises :class:`ThreatListError` when it cannot be used."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ThreatListError(f"{path}: cannot be read: {error.strerror or error}") from error
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ThreatListError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    if not text.strip():
        raise ThreatListError(f"{path}: is empty: a failed download?")
    return ThreatList(name=path.stem, source=path, entries=tuple(parse_threat_list(text, path)))


@dataclass(frozen=True)
class ThreatList:
    """One list file: its name (the file stem), where it came from and its entries."""

    name: str
    source: Path
    entries: tuple[ThreatEntry, ...]

    @cached_property
    def matcher(self) -> PrefixMatcher:
        """This list's entries compiled for lookup (built on first use)."""
        return PrefixMatcher([entry.network for entry in self.entries])

    def match(self, addrs: np.ndarray) -> np.ndarray:
        """Per address row, the index into ``entries`` of the most specific match, or -1."""
        return self.matcher.lookup(addrs)


def _address_rows(addrs: np.ndarray) -> np.ndarray:
    """An address column, (n, 16) uint8 or (n,) V16, as contiguous (n, 16) uint8."""
    if addrs.dtype == np.uint8 and addrs.ndim == 2 and addrs.shape[1] == 16:
        return np.ascontiguousarray(addrs)
    if addrs.dtype.kind == "V" and addrs.dtype.itemsize == 16 and addrs.ndim == 1:
        return np.ascontiguousarray(addrs).view(np.uint8).reshape(-1, 16)
    raise ValueError(f"addresses must be (n, 16) uint8 or (n,) V16, got {addrs.dtype} of shape {addrs.shape}")


class _FamilyTable:
    """The networks of one family cut into elementary intervals, each owned by the longest
    prefix that covers it; a lookup is one ``searchsorted`` of the addresses in the bounds.

    Keys compare the way the addresses do: IPv4 as uint32; IPv6 as its high 64 bits when no
    prefix is longer than /64 (every bound is then a multiple of 2**64, so those bits decide),
    else as the 16 big-endian bytes in a ``V16`` column, which numpy compares bytewise.
    """

    def __init__(self, bits: int, networks: list[tuple[int, int, int]]) -> None:
        """``networks``: (first address, prefix length, entry index), no network twice."""
        self.mode = "u32" if bits == 32 else "hi64" if all(length <= 64 for _, length, _ in networks) else "v16"
        ends = [first + (1 << (bits - length)) for first, length, _ in networks]  # exclusive
        bounds = sorted({first for first, _, _ in networks} | {end for end in ends if end < 1 << bits})
        self.bounds = self._keys(bounds)
        # owner[k + 1] owns [bounds[k], bounds[k + 1]); owner[0] is before the first bound.
        self.owner = np.full(len(bounds) + 1, -1, dtype=np.int64)
        by_length: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for (first, length, index), end in zip(networks, ends):
            by_length[length].append((first, end - 1, index))
        for length in sorted(by_length):  # shortest first: a longer prefix overwrites its owner
            group = sorted(by_length[length])  # disjoint, so sorted by first is sorted by last too
            before = np.searchsorted(self._keys([first for first, _, _ in group]), self.bounds, "right") - 1
            reaching = np.searchsorted(self._keys([last for _, last, _ in group]), self.bounds, "left")
            covered = before == reaching  # the last network starting at or before the bound ends after it
            indexes = np.fromiter((index for _, _, index in group), dtype=np.int64, count=len(group))
            self.owner[1:][covered] = indexes[before[covered]]

    def _keys(self, values: list[int]) -> np.ndarray:
        if self.mode == "u32":
            return np.array(values, dtype=np.uint32)
        if self.mode == "hi64":
            return np.array([value >> 64 for value in values], dtype=np.uint64)
        return np.frombuffer(b"".join(value.to_bytes(16, "big") for value in values), dtype="V16")

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        if self.mode == "u32":
            keys = np.ascontiguousarray(rows[:, 12:16]).view(">u4").ravel().astype(np.uint32)
        elif self.mode == "hi64":
            keys = np.ascontiguousarray(rows[:, :8]).view(">u8").ravel().astype(np.uint64)
        else:
            keys = np.ascontiguousarray(rows).view("V16").ravel()
        return self.owner[np.searchsorted(self.bounds, keys, "right")]


class PrefixMatcher:
    """Longest-prefix match of a whole address column against a fixed sequence of networks."""

    def __init__(self, networks: Sequence[IPNetwork]) -> None:
        first_index: dict[tuple[int, int, int], int] = {}
        for index, network in enumerate(networks):
            first_index.setdefault((network.version, int(network.network_address), network.prefixlen), index)
        by_version: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}
        for (version, first, length), index in first_index.items():
            by_version[version].append((first, length, index))
        self._ipv4 = _FamilyTable(32, by_version[4])
        self._ipv6 = _FamilyTable(128, by_version[6])

    def lookup(self, addrs: np.ndarray) -> np.ndarray:
        """Per row of ``addrs`` ((n, 16) uint8 or (n,) V16): the index of the most specific
        network holding it (the first, if listed twice), or -1; int64 of shape (n,)."""
        rows = _address_rows(addrs)
        mapped = is_ipv4_mapped(rows)
        if mapped.all():
            return self._ipv4.lookup(rows)
        result = self._ipv6.lookup(rows)
        if mapped.any():
            result[mapped] = self._ipv4.lookup(rows[mapped])
        return result


@dataclass(frozen=True)
class Matches:
    """The result of :meth:`ThreatLists.match`: ``entry`` is, per address row, the index of
    the most specific matching entry or -1; :meth:`describe` says what an index is. It keeps
    the lists it was matched against, so a reload meanwhile does not change its meaning."""

    entry: np.ndarray
    _lists: tuple[ThreatList, ...]
    _offsets: tuple[int, ...]  # index of each list's first entry

    @property
    def matched(self) -> np.ndarray:
        """Boolean per row: some entry matched."""
        return self.entry >= 0

    def describe(self, index: int) -> MatchedEntry:
        """The list name, CIDR and label of entry ``index`` (a value of ``entry``, not -1)."""
        if index < 0:
            raise IndexError(f"entry index {index}: -1 means no match")
        which = bisect.bisect_right(self._offsets, index) - 1
        threat_list = self._lists[which]
        entry = threat_list.entries[index - self._offsets[which]]  # IndexError past the end
        return MatchedEntry(threat_list.name, str(entry.network), entry.label)


class ThreatLists:
    """The lists of some files and directories, matched together and reloaded when they change.

    The constructor reads nothing: :meth:`reload_if_changed` loads, at start and then on a
    timer. A directory contributes every non-hidden ``*.netset``, ``*.ipset``, ``*.txt`` and
    ``*.json`` directly in it. A file that fails to read or parse leaves the version loaded
    before in force (or none, on first load), is logged once, and is tried again when it
    changes; so is a named file or directory that has gone, whose lists stay in force. A file
    gone from a directory that is still there takes its list with it.
    """

    def __init__(self, sources: Iterable[str | os.PathLike[str]]) -> None:
        self.sources = tuple(Path(source) for source in sources)
        self.version = 0
        self.failures: dict[Path, str] = {}  # path → why its current content is not in force
        self._lists: dict[Path, ThreatList] = {}
        self._origin: dict[Path, Path] = {}  # list file → the source that named it
        self._seen: dict[Path, tuple[int, int, int]] = {}  # file → signature of the last attempt
        self._compile()

    @property
    def lists(self) -> tuple[ThreatList, ...]:
        return tuple(self._lists[path] for path in sorted(self._lists))

    @property
    def names(self) -> list[str]:
        return [threat_list.name for threat_list in self.lists]

    def __len__(self) -> int:
        return len(self._lists)

    def reload_if_changed(self) -> bool:
        """Re-read added and changed files (mtime, size or inode), drop removed ones; True when
        the lists in force changed, and then ``version`` has gone up by one."""
        present, missing = self._discover()
        changed = False
        for path in [path for path in self._seen if path not in present and self._origin[path] not in missing]:
            del self._seen[path]
            self.failures.pop(path, None)
            if self._lists.pop(path, None) is not None:
                log.info("threat list %s removed", path)
                changed = True
        for path, signature in sorted(present.items()):
            if self._seen.get(path) == signature:
                continue
            self._seen[path] = signature
            try:
                threat_list = read_threat_list(path)
            except ThreatListError as error:
                kept = "the version loaded before stays in force" if path in self._lists else "not loaded"
                self._fail(path, f"{error}; {kept}")
                continue
            self.failures.pop(path, None)
            self._lists[path] = threat_list
            log.info("threat list %s loaded: %d entries", path, len(threat_list.entries))
            changed = True
        if changed:
            self._compile()
            self.version += 1
        return changed

    def match(self, addrs: np.ndarray) -> Matches:
        """Match an address column ((n, 16) uint8 or (n,) V16) against every list at once."""
        matcher, lists, offsets = self._compiled  # one snapshot, even if a reload swaps it
        return Matches(matcher.lookup(addrs), lists, offsets)

    def _discover(self) -> tuple[dict[Path, tuple[int, int, int]], set[Path]]:
        """The list files there now (path → signature) and the sources that are missing."""
        present: dict[Path, tuple[int, int, int]] = {}
        missing: set[Path] = set()
        for source in self.sources:
            try:
                if source.is_dir():
                    candidates = [p for p in source.iterdir() if p.suffix in LIST_SUFFIXES and p.name[0] != "."]
                else:
                    source.stat()  # a named file that has gone is a missing source
                    candidates = [source]
            except OSError as error:
                missing.add(source)
                self._fail(source, f"{source}: {error.strerror or error}; lists loaded from it stay in force")
                continue
            self.failures.pop(source, None)
            for path in candidates:
                try:
                    status = path.stat()
                except FileNotFoundError:  # removed between listing and stat
                    continue
                if stat.S_ISREG(status.st_mode):
                    present[path] = (status.st_mtime_ns, status.st_size, status.st_ino)
                    self._origin[path] = source
        return present, missing

    def _fail(self, path: Path, message: str) -> None:
        if self.failures.get(path) != message:  # once per failure, not on every poll
            log.error("threat list %s", message)
        self.failures[path] = message

    def _compile(self) -> None:
        lists = self.lists
        offsets = tuple(np.cumsum([0] + [len(threat_list.entries) for threat_list in lists])[:-1].tolist())
        networks = [entry.network for threat_list in lists for entry in threat_list.entries]
        self._compiled = (PrefixMatcher(networks), lists, offsets)
