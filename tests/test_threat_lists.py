"""Threat lists: the real FireHOL and Spamhaus formats, exact longest-prefix matching, reloads."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.detect.threat_lists import (
    PrefixMatcher,
    ThreatListError,
    ThreatLists,
    detect_format,
    parse_threat_list,
    read_threat_list,
)

LOGGER = "pipeline.detect.threat_lists"

FIREHOL_LEVEL1 = """\
#
# firehol_level1
#
# ipv4 hash:net ipset
#
# A firewall blacklist composed from IP lists, providing maximum protection with minimum false positives.
#
# Maintainer      : FireHOL
# Maintainer URL  : http://iplists.firehol.org/
# List source URL :
# Source File Date: Tue Nov 26 10:07:12 UTC 2024
#
# UPDATE FREQUENCY
# The ipset `firehol_level1` is updated every 1 min.
#
# This ipset includes 10.0.0.0/8 and the other bogons: this project must ignore them.
#
0.0.0.0/8
1.10.16.0/20
5.188.10.0/23
10.0.0.0/8
31.184.198.71
127.0.0.0/8
192.168.0.0/16
2a06:e480::/29
fe80::/10
"""

SPAMHAUS_DROP_TXT = """\
; Spamhaus DROP List 2024/11/26 - (c) 2024 The Spamhaus Project SLU
; https://www.spamhaus.org/drop/drop.txt
; Last-Modified: Tue, 26 Nov 2024 05:37:44 GMT
; Expires: Tue, 26 Nov 2024 14:00:19 GMT
1.10.16.0/20 ; SBL256894
1.19.0.0/16 ; SBL434604
2.57.122.0/24 ; SBL636050
"""

SPAMHAUS_DROP_V6_TXT = """\
; Spamhaus IPv6 DROP List 2024/11/26 - (c) 2024 The Spamhaus Project SLU
; Last-Modified: Mon, 25 Nov 2024 18:15:29 GMT
2a06:e480::/29 ; SBL123
2a0d:8d00::/29 ; SBL456
"""


def spamhaus_json(records: list[tuple[str, str]], metadata: bool = True) -> str:
    """A drop_v4.json / drop_v6.json body: one object per line, then the metadata object."""
    lines = [json.dumps({"cidr": cidr, "sblid": sblid, "rir": "ripencc"}, separators=(",", ":")) for cidr, sblid in records]
    if metadata:
        meta = {"type": "metadata", "timestamp": 1732599464, "size": 91024, "records": len(records),
                "copyright": "(c) 2024 The Spamhaus Project SLU", "terms": "https://www.spamhaus.org/drop/terms/"}  # fmt: skip
        lines.append(json.dumps(meta, separators=(",", ":")))
    return "\n".join(lines) + "\n"


def rows(*addresses: str) -> np.ndarray:
    """Addresses the way frames carry them: (n, 16) uint8, IPv4 as ::ffff:a.b.c.d."""
    out = np.zeros((len(addresses), 16), dtype=np.uint8)
    for row, text in enumerate(addresses):
        address = ipaddress.ip_address(text)
        packed = address.packed if address.version == 6 else b"\0" * 10 + b"\xff\xff" + address.packed
        out[row] = np.frombuffer(packed, dtype=np.uint8)
    return out


def write(path: Path, text: str, mtime_s: int) -> Path:
    """Write a list file and give it an explicit mtime, so a reload sees the change however fast the test runs."""
    path.write_text(text)
    os.utime(path, ns=(mtime_s * 10**9, mtime_s * 10**9))
    return path


def matched_cidrs(lists: ThreatLists, *addresses: str) -> list[str | None]:
    matches = lists.match(rows(*addresses))
    return [matches.describe(int(index)).cidr if index >= 0 else None for index in matches.entry]


@pytest.fixture
def feeds(tmp_path: Path) -> Path:
    directory = tmp_path / "feeds"
    directory.mkdir()
    write(directory / "firehol_level1.netset", FIREHOL_LEVEL1, 1_000)
    write(directory / "drop.txt", SPAMHAUS_DROP_TXT, 1_000)
    write(directory / "drop_v6.json", spamhaus_json([("2a06:e480::/29", "SBL123"), ("2a06:e480:1::/48", "SBL789")]), 1_000)
    return directory


def test_format_is_told_by_content_not_name(tmp_path: Path) -> None:
    assert detect_format(FIREHOL_LEVEL1) == "firehol"
    assert detect_format(SPAMHAUS_DROP_TXT) == "spamhaus-text"
    assert detect_format("\n\n1.10.16.0/20 ; SBL256894\n") == "spamhaus-text"
    assert detect_format("# a comment; with a semicolon\n1.2.3.4\n") == "firehol"
    assert detect_format(spamhaus_json([("1.10.16.0/20", "SBL256894")])) == "spamhaus-json"
    misnamed = write(tmp_path / "drop.netset", spamhaus_json([("1.10.16.0/20", "SBL256894")]), 1)
    assert read_threat_list(misnamed).entries[0].label == "SBL256894"


def test_firehol_netset_ignores_special_ranges_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "firehol_level1.netset", FIREHOL_LEVEL1, 1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        threat_list = read_threat_list(path)
    assert threat_list.name == "firehol_level1"
    assert threat_list.source == path
    assert [(str(e.network), e.label) for e in threat_list.entries] == [
        ("1.10.16.0/20", ""), ("5.188.10.0/23", ""), ("31.184.198.71/32", ""), ("2a06:e480::/29", ""),
    ]  # fmt: skip
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert str(path) in message and "ignoring 5 entries" in message
    for example in ("0.0.0.0/8", "10.0.0.0/8", "127.0.0.0/8", "192.168.0.0/16", "fe80::/10"):
        assert example in message


def test_entries_that_contain_a_special_range_are_ignored_too(caplog: pytest.LogCaptureFixture) -> None:
    text = "0.0.0.0/0\n8.0.0.0/5\n224.0.0.0/3\n::/0\n2000::/3\n2001:db8::1\n11.0.0.0/8\n100.128.0.0/9\n2a0d:8d00::/29\n"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        entries = parse_threat_list(text, "aggregate.netset")
    assert [str(e.network) for e in entries] == ["11.0.0.0/8", "100.128.0.0/9", "2a0d:8d00::/29"]
    assert "ignoring 6 entries" in caplog.text


@pytest.mark.parametrize(
    "address",
    ["100.64.0.1", "169.254.1.1", "172.31.255.255", "192.0.2.7", "198.18.0.1", "198.51.100.1", "203.0.113.9",
     "224.0.0.251", "239.255.255.250", "255.255.255.255", "::", "::1", "::ffff:8.8.8.8", "64:ff9b:1::1",
     "100::1", "2001:2::1", "2001:db8::1", "3fff::1", "5f00::1", "fc00::1", "fd12:3456::1", "fe80::1", "ff02::1"],
)  # fmt: skip
def test_special_purpose_addresses_are_never_listed(address: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert parse_threat_list(f"{address}\n", "list.ipset") == []
    assert "ignoring 1 entries" in caplog.text


def test_host_bits_beyond_the_prefix_stand_for_the_network_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        entries = parse_threat_list("45.1.2.3/16\n45.9.0.0/16\n2a06:e480::1/29\n", "sloppy.netset")
    assert [str(e.network) for e in entries] == ["45.1.0.0/16", "45.9.0.0/16", "2a06:e480::/29"]
    [warning] = caplog.records
    assert "2 entries have host bits set" in warning.getMessage()
    assert "45.1.2.3/16 → 45.1.0.0/16" in warning.getMessage()


def test_spamhaus_text_and_json_carry_the_sbl_id(tmp_path: Path) -> None:
    drop = read_threat_list(write(tmp_path / "drop.txt", SPAMHAUS_DROP_TXT, 1))
    assert [(str(e.network), e.label) for e in drop.entries] == [
        ("1.10.16.0/20", "SBL256894"), ("1.19.0.0/16", "SBL434604"), ("2.57.122.0/24", "SBL636050"),
    ]  # fmt: skip
    drop_v6 = read_threat_list(write(tmp_path / "drop_v6.txt", SPAMHAUS_DROP_V6_TXT, 1))
    assert [(str(e.network), e.label) for e in drop_v6.entries] == [("2a06:e480::/29", "SBL123"), ("2a0d:8d00::/29", "SBL456")]
    drop_v4 = read_threat_list(write(tmp_path / "drop_v4.json", spamhaus_json([("1.10.16.0/20", "SBL256894")]), 1))
    assert drop_v4.name == "drop_v4"
    assert [(str(e.network), e.label) for e in drop_v4.entries] == [("1.10.16.0/20", "SBL256894")]


@pytest.mark.parametrize(
    ("name", "text", "line", "shown"),
    [
        ("level1.netset", "# header\n1.2.3.0/24\n1.2.3.4-1.2.3.9\n", 3, "1.2.3.4-1.2.3.9"),
        ("level1.netset", "<html><body>502 Bad Gateway</body></html>\n", 1, "<html>"),
        ("drop.txt", "; DROP\n1.10.16.0/20 ; SBL1\n1.10.16.0/33 ; SBL2\n", 3, "1.10.16.0/33 ; SBL2"),
        ("drop_v4.json", '{"cidr":"1.10.16.0/20","sblid":"SBL1"}\n{"cidr":"1.10.16.0/20","sbl\n', 2, '"sbl'),
        ("drop_v4.json", '{"cidr":"1.10.16.0/20"}\n["1.2.3.0/24"]\n', 2, '["1.2.3.0/24"]'),
        ("drop_v4.json", '{"sblid":"SBL1"}\n', 1, "SBL1"),
    ],
)
def test_a_bad_line_names_file_line_and_text(tmp_path: Path, name: str, text: str, line: int, shown: str) -> None:
    path = write(tmp_path / name, text, 1)
    with pytest.raises(ThreatListError) as raised:
        read_threat_list(path)
    assert f"{path}:{line}:" in str(raised.value)
    assert shown in str(raised.value)


def test_unusable_files_are_refused(tmp_path: Path) -> None:
    truncated = write(tmp_path / "drop_v4.json", spamhaus_json([("1.10.16.0/20", "SBL1")], metadata=False), 1)
    with pytest.raises(ThreatListError, match="no metadata object"):
        read_threat_list(truncated)
    with pytest.raises(ThreatListError, match="is empty"):
        read_threat_list(write(tmp_path / "empty.netset", "\n\n", 1))
    (tmp_path / "binary.netset").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ThreatListError, match="not UTF-8"):
        read_threat_list(tmp_path / "binary.netset")
    with pytest.raises(ThreatListError, match="cannot be read"):
        read_threat_list(tmp_path / "absent.netset")


def test_inside_outside_and_boundaries(feeds: Path) -> None:
    lists = ThreatLists([feeds])
    assert lists.reload_if_changed()
    assert lists.names == ["drop", "drop_v6", "firehol_level1"] and len(lists) == 3
    assert matched_cidrs(
        lists,
        "2.57.121.255", "2.57.122.0", "2.57.122.128", "2.57.122.255", "2.57.123.0",  # around 2.57.122.0/24
        "31.184.198.70", "31.184.198.71", "31.184.198.72",  # a single address
        "5.188.9.255", "5.188.10.0", "5.188.11.255", "5.188.12.0",  # around 5.188.10.0/23
        "10.1.2.3", "192.168.1.1", "127.0.0.1", "0.0.0.1", "fe80::1",  # listed bogons: ignored
        "2a06:e47f:ffff:ffff:ffff:ffff:ffff:ffff", "2a06:e480::", "2a06:e487:ffff:ffff:ffff:ffff:ffff:ffff",
        "2a06:e488::",  # around 2a06:e480::/29
        "2a06:e480:1::5", "2a06:e480:2::5",  # the /48 inside the /29
    ) == [
        None, "2.57.122.0/24", "2.57.122.0/24", "2.57.122.0/24", None,
        None, "31.184.198.71/32", None,
        None, "5.188.10.0/23", "5.188.10.0/23", None,
        None, None, None, None, None,
        None, "2a06:e480::/29", "2a06:e480::/29",
        None,
        "2a06:e480:1::/48", "2a06:e480::/29",
    ]  # fmt: skip


def test_longest_prefix_wins_across_lists_and_labels_are_reported(feeds: Path) -> None:
    write(feeds / "edrop.txt", "; Spamhaus EDROP\n1.10.16.0/24 ; SBL999\n1.10.16.7 ; SBL777\n", 1_000)
    lists = ThreatLists([feeds])
    lists.reload_if_changed()
    matches = lists.match(rows("1.10.16.7", "1.10.16.8", "1.10.17.1", "1.10.32.0"))
    described = [matches.describe(int(i)) if i >= 0 else None for i in matches.entry]
    assert [(d.list_name, d.cidr, d.label) if d else None for d in described] == [
        ("edrop", "1.10.16.7/32", "SBL777"),
        ("edrop", "1.10.16.0/24", "SBL999"),
        ("drop", "1.10.16.0/20", "SBL256894"),  # the same /20 in firehol_level1: the first list (by path) names it
        None,
    ]
    assert matches.matched.tolist() == [True, True, True, False]
    with pytest.raises(IndexError):
        matches.describe(-1)


def test_ipv4_mapped_and_native_ipv6_are_not_confused(tmp_path: Path) -> None:
    write(tmp_path / "mixed.netset", "1.2.3.0/24\n2a06:e480::/29\n", 1)
    lists = ThreatLists([tmp_path / "mixed.netset"])
    lists.reload_if_changed()
    assert matched_cidrs(
        lists,
        "::ffff:1.2.3.4",  # IPv4 1.2.3.4
        "::1.2.3.4",  # IPv4-compatible IPv6: not IPv4 in this project
        "::fffe:102:304",  # one bit off the IPv4-mapped prefix
        "2a00::102:304",  # an IPv6 address whose low 32 bits read 1.2.3.4
        "102:304::",  # an IPv6 address whose high 32 bits read 1.2.3.4
        "2a06:e480::102:304",
        "42.6.228.128",  # 2a06:e480 read as IPv4
    ) == ["1.2.3.0/24", None, None, None, None, "2a06:e480::/29", None]


def test_one_list_matches_on_its_own_and_v16_columns_are_accepted(tmp_path: Path) -> None:
    drop = read_threat_list(write(tmp_path / "drop.txt", SPAMHAUS_DROP_TXT, 1))
    addresses = rows("1.19.255.255", "1.20.0.0", "2.57.122.1")
    assert drop.match(addresses).tolist() == [1, -1, 2]
    assert drop.match(addresses.view("V16").ravel()).tolist() == [1, -1, 2]
    with pytest.raises(ValueError, match=r"\(n, 16\) uint8"):
        drop.match(addresses[:, :4])


def test_reload_picks_up_changed_added_and_removed_files(feeds: Path) -> None:
    lists = ThreatLists([feeds])
    assert lists.version == 0 and len(lists) == 0
    assert lists.match(rows("1.10.16.1")).entry.tolist() == [-1]  # nothing loaded before the first reload
    assert lists.reload_if_changed() and lists.version == 1
    assert not lists.reload_if_changed() and lists.version == 1

    before = lists.match(rows("5.188.10.1"))  # an entry of firehol_level1, listed after drop
    write(feeds / "drop.txt", SPAMHAUS_DROP_TXT + "81.2.69.0/24 ; SBL1001\n", 1_001)
    assert lists.reload_if_changed() and lists.version == 2
    assert matched_cidrs(lists, "81.2.69.1", "2.57.122.9") == ["81.2.69.0/24", "2.57.122.0/24"]
    assert before.describe(int(before.entry[0])).cidr == "5.188.10.0/23"  # indexes shifted since: a
    assert lists.match(rows("5.188.10.1")).entry[0] == before.entry[0] + 1  # result keeps its own lists

    write(feeds / "new.ipset", "# ipset\n198.54.117.200\n", 1_001)
    (feeds / "notes.md").write_text("1.1.1.1\n")  # not a list file
    (feeds / ".drop.txt.partial").write_text("garbage\n")  # a downloader's temporary
    assert lists.reload_if_changed() and lists.version == 3
    assert lists.names == ["drop", "drop_v6", "firehol_level1", "new"]
    assert matched_cidrs(lists, "198.54.117.200", "1.1.1.1") == ["198.54.117.200/32", None]

    (feeds / "drop.txt").unlink()
    assert lists.reload_if_changed() and lists.version == 4
    assert "drop" not in lists.names
    assert matched_cidrs(lists, "81.2.69.1", "2.57.122.9", "1.10.16.1") == [None, None, "1.10.16.0/20"]


def test_a_broken_update_keeps_the_previous_version(feeds: Path, caplog: pytest.LogCaptureFixture) -> None:
    lists = ThreatLists([feeds])
    lists.reload_if_changed()
    path = write(feeds / "drop.txt", SPAMHAUS_DROP_TXT + "81.2.69.0/24 ; SBL1001\n", 1_001)
    lists.reload_if_changed()

    write(path, SPAMHAUS_DROP_TXT + "81.2.69.0/24 ; SBL1001\nnot an address ; SBL1002\n", 1_002)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert not lists.reload_if_changed()
        assert not lists.reload_if_changed()  # unchanged since: not retried, not logged again
    assert lists.version == 2
    assert matched_cidrs(lists, "81.2.69.1") == ["81.2.69.0/24"]
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert f"{path}:9:" in error.getMessage() and "stays in force" in error.getMessage()
    assert f"{path}:9:" in lists.failures[path]

    write(path, spamhaus_json([("1.10.16.0/20", "SBL1")], metadata=False), 1_003)  # truncated download
    assert not lists.reload_if_changed()
    assert matched_cidrs(lists, "81.2.69.1") == ["81.2.69.0/24"]

    write(path, SPAMHAUS_DROP_TXT, 1_004)  # fixed
    assert lists.reload_if_changed() and lists.version == 3
    assert matched_cidrs(lists, "81.2.69.1") == [None]
    assert path not in lists.failures


def test_a_named_file_that_goes_missing_stays_in_force(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "drop.txt", SPAMHAUS_DROP_TXT, 1)
    broken = write(tmp_path / "broken.netset", "1.2.3.4/40\n", 1)
    lists = ThreatLists([path, broken, tmp_path / "not-there"])
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert lists.reload_if_changed()
    assert lists.names == ["drop"]  # the broken file is not loaded, the missing source is reported
    assert set(lists.failures) == {broken, tmp_path / "not-there"}
    path.unlink()
    assert not lists.reload_if_changed()
    assert matched_cidrs(lists, "1.10.16.1") == ["1.10.16.0/20"]
    assert "stay in force" in lists.failures[path]


def reference_lookup(networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network], address: str) -> int:
    """Brute force: the most specific network holding the address, the first when listed twice."""
    parsed = ipaddress.ip_address(address)
    if parsed.version == 6 and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    best = -1
    for index, network in enumerate(networks):
        if parsed in network and (best < 0 or network.prefixlen > networks[best].prefixlen):
            best = index
    return best


@pytest.mark.parametrize(("bits", "max_prefix"), [(32, 32), (128, 64), (128, 65), (128, 128)])
def test_matches_a_brute_force_reference(bits: int, max_prefix: int) -> None:
    """Nested, duplicate and adjacent networks of every prefix length; addresses at and around
    their bounds and at random. (128, 64) and (128, 65) sit either side of the switch between
    the two IPv6 key layouts."""
    rng = np.random.default_rng(20241126 + bits + max_prefix)

    def random_address() -> int:
        return int.from_bytes(rng.bytes(bits // 8), "big")

    seeds = [random_address() for _ in range(12)]  # networks cluster around these, so they nest
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    make = ipaddress.IPv4Network if bits == 32 else ipaddress.IPv6Network
    for _ in range(300):
        base = seeds[int(rng.integers(len(seeds)))] ^ int(rng.integers(0, 1 << 16))
        networks.append(make((base, int(rng.integers(0, max_prefix + 1))), strict=False))
    networks += [networks[i] for i in rng.integers(0, len(networks), 20)]  # listed twice
    addresses: list[int] = [random_address() for _ in range(500)]
    for network in networks:
        first, last = int(network.network_address), int(network.broadcast_address)
        addresses += [first, last, (first - 1) % (1 << bits), (last + 1) % (1 << bits)]
    addresses += [seed ^ int(rng.integers(0, 1 << 20)) for seed in seeds for _ in range(100)]
    texts = [str(ipaddress.ip_address(a) if bits == 128 else ipaddress.IPv4Address(a)) for a in addresses]
    # IPv4-mapped and native rows in one column: the other family never matches
    if bits == 32:
        texts += ["::" + format(a & 0xFFFF, "x") for a in addresses[:200]]
    else:
        texts += [str(ipaddress.IPv4Address(a >> 96)) for a in addresses[:200]]

    found = PrefixMatcher(networks).lookup(rows(*texts))
    expected = [reference_lookup(networks, text) for text in texts]
    assert found.dtype == np.int64
    assert found.tolist() == expected
    assert (found >= 0).sum() > len(texts) // 4  # the check covers matches, not only misses
