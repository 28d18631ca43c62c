"""Country lookups: the bundled DB-IP table and MaxMind DB files written here by hand."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import maxminddb
import numpy as np
import pytest

from flowlogs.errors import FlowLogsError
from pipeline.geoip import (
    BUNDLED_DATA,
    UNKNOWN_COUNTRY,
    CountryLookup,
    CountryRanges,
    GeoIpError,
)


def addresses(*texts: str) -> np.ndarray:
    """Address texts as a flow column: V16, IPv4 stored IPv4-mapped."""
    packed = []
    for text in texts:
        address = ipaddress.ip_address(text)
        packed.append(address.packed if address.version == 6 else b"\0" * 10 + b"\xff\xff" + address.packed)
    return np.frombuffer(b"".join(packed), dtype="V16")


def countries(lookup: CountryLookup, *texts: str) -> list[str]:
    return [str(code) for code in lookup.countries(addresses(*texts))]


# --- A MaxMind DB writer, just enough of https://maxmind.github.io/MaxMind-DB/ for the tests.


class Uint:
    """An unsigned integer of one MMDB type: 5 uint16, 6 uint32, 9 uint64."""

    def __init__(self, type_id: int, value: int) -> None:
        self.type_id, self.value = type_id, value


def _control(type_id: int, size: int) -> bytes:
    if size < 29:
        size_bits, extra = size, b""
    elif size < 29 + 256:
        size_bits, extra = 29, bytes([size - 29])
    else:
        size_bits, extra = 30, (size - 285).to_bytes(2, "big")
    if type_id <= 7:
        return bytes([type_id << 5 | size_bits]) + extra
    return bytes([size_bits, type_id - 7]) + extra  # an extended type: its number follows


def encode(value: Any) -> bytes:
    """One MMDB data-section value: str, dict, list or Uint."""
    if isinstance(value, str):
        raw = value.encode()
        return _control(2, len(raw)) + raw
    if isinstance(value, dict):
        return _control(7, len(value)) + b"".join(encode(k) + encode(v) for k, v in value.items())
    if isinstance(value, list):
        return _control(11, len(value)) + b"".join(encode(v) for v in value)
    if isinstance(value, Uint):
        raw = value.value.to_bytes((value.value.bit_length() + 7) // 8, "big")
        return _control(value.type_id, len(raw)) + raw
    raise TypeError(f"cannot encode {value!r}")


def write_mmdb(path: Path, networks: dict[str, Any], ip_version: int = 6) -> None:
    """An MMDB file (24-bit records) mapping each network to its record. In an IPv6 tree an
    IPv4 network a.b.c.d/n goes where MaxMind's IPv4 lookups read it: ::a.b.c.d/(96+n)."""
    bits = 128 if ip_version == 6 else 32
    nodes: list[list[Any]] = [[None, None]]  # each side: None, ("node", i) or ("data", offset)
    data = b""
    for text, record in networks.items():
        network = ipaddress.ip_network(text)
        prefix = network.prefixlen + (96 if network.version == 4 and ip_version == 6 else 0)
        key = int(network.network_address)
        node = 0
        for depth in range(prefix):
            side = key >> (bits - 1 - depth) & 1
            if depth == prefix - 1:
                assert nodes[node][side] is None, f"{text} overlaps another network"
                nodes[node][side] = ("data", len(data))
            else:
                if nodes[node][side] is None:
                    nodes.append([None, None])
                    nodes[node][side] = ("node", len(nodes) - 1)
                assert nodes[node][side][0] == "node", f"{text} lies inside another network"
                node = nodes[node][side][1]
        data += encode(record)
    count = len(nodes)

    def record_value(side: Any) -> int:
        if side is None:
            return count  # "no data"
        kind, value = side
        return int(value) if kind == "node" else count + 16 + int(value)

    tree = b"".join(record_value(side).to_bytes(3, "big") for node in nodes for side in node)
    metadata = {
        "node_count": Uint(6, count),
        "record_size": Uint(5, 24),
        "ip_version": Uint(5, ip_version),
        "database_type": "Test-Country",
        "languages": ["en"],
        "binary_format_major_version": Uint(5, 2),
        "binary_format_minor_version": Uint(5, 0),
        "build_epoch": Uint(9, 1_767_225_600),  # 2026-01-01
        "description": {"en": "flow logs test database"},
    }
    path.write_bytes(tree + b"\0" * 16 + data + b"\xab\xcd\xefMaxMind.com" + encode(metadata))


TEST_NETWORKS = {
    "203.0.113.0/24": {"country": {"iso_code": "JP"}, "registered_country": {"iso_code": "US"}},
    "198.51.100.0/25": {"registered_country": {"iso_code": "DE"}},
    "198.51.100.128/25": {"continent": {"code": "EU"}},
    "2001:db8::/32": {"country": {"iso_code": "FR", "names": {"en": "France"}}},
    "2001:db9::/48": {"country_code": "BR"},
}


@pytest.fixture
def test_mmdb(tmp_path: Path) -> Path:
    path = tmp_path / "test-country.mmdb"
    write_mmdb(path, TEST_NETWORKS)
    return path


# --- The bundled table.


def test_bundled_countries_of_well_known_addresses() -> None:
    lookup = CountryLookup.bundled()
    # Blocks whose place has stayed put for years (looked up in the 2026-06-01 edition).
    assert countries(lookup, "8.8.8.8", "1.1.1.1", "193.0.0.1", "193.0.7.255", "2001:67c:2e8::1") == [
        "US", "AU", "NL", "NL", "NL",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "127.0.0.1", "169.254.1.1", "192.0.2.1",
     "224.0.0.1", "255.255.255.255", "0.0.0.0", "::", "::1", "fe80::1", "fd00::1", "ff02::1",
     "2001:db8::1", "::8.8.8.8"],
)  # fmt: skip
def test_bundled_private_and_special_addresses_are_unknown(text: str) -> None:
    # ::8.8.8.8 is IPv4-compatible, not IPv4-mapped: an IPv6 address nobody places.
    assert countries(CountryLookup.bundled(), text) == [UNKNOWN_COUNTRY]


def test_bundled_ranges_end_where_the_next_begins() -> None:
    lookup = CountryLookup.bundled()
    # 1.0.0.0/24 is placed in AU and 1.0.1.0/24 in CN; nothing below 1.0.0.0 is placed.
    assert countries(lookup, "0.255.255.255", "1.0.0.0", "1.0.0.255", "1.0.1.0") == ["--", "AU", "AU", "CN"]
    ranges = CountryRanges.load(BUNDLED_DATA)  # the same table, to check lookups at its edges
    ipv6_starts = [high << 64 | low for high, low in ranges.ipv6_starts.tolist()]
    for version, starts, index in (
        (4, ranges.ipv4_starts.tolist(), ranges.ipv4_country),
        (6, ipv6_starts, ranges.ipv6_country),
    ):
        picks = np.linspace(1, len(starts) - 2, 200).astype(int).tolist()
        # The address before each start, the start, and the last address before the next start.
        values = [starts[i] + step for i in picks for step in (-1, 0)] + [starts[i + 1] - 1 for i in picks]
        texts = [str(ipaddress.IPv4Address(v) if version == 4 else ipaddress.IPv6Address(v)) for v in values]
        expected = [ranges.countries[index[i + shift]] for i in picks for shift in (-1, 0)]
        expected += [ranges.countries[index[i]] for i in picks]
        assert countries(lookup, *texts) == expected


def test_bundled_lookup_is_loaded_once_and_says_what_it_is() -> None:
    lookup = CountryLookup.bundled()
    assert CountryLookup.bundled() is lookup
    assert CountryLookup.from_settings(None) is lookup
    assert "DB-IP" in lookup.source and "CC BY 4.0" in lookup.source
    assert "2026-06-01" in lookup.source


def test_bundled_data_is_small_and_carries_its_license() -> None:
    assert BUNDLED_DATA.stat().st_size < 3_000_000
    notice = BUNDLED_DATA.with_suffix(".LICENSE.txt").read_text()
    assert "Creative Commons Attribution 4.0" in notice and "db-ip.com" in notice.lower()


def test_countries_take_v16_or_byte_rows_and_return_two_letter_codes() -> None:
    column = addresses("8.8.8.8", "10.0.0.1", "2001:67c:2e8::1")
    lookup = CountryLookup.bundled()
    as_v16 = lookup.countries(column)
    assert as_v16.dtype == np.dtype("<U2")
    assert as_v16.tolist() == lookup.countries(column.view(np.uint8).reshape(-1, 16)).tolist()
    assert lookup.countries(addresses()).tolist() == []
    with pytest.raises(ValueError, match="V16"):
        lookup.countries(np.zeros(4, dtype=np.uint32))


def test_a_damaged_table_is_a_geoip_error(tmp_path: Path) -> None:
    path = tmp_path / "table.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(GeoIpError, match=str(path)):
        CountryRanges.load(path)


# --- MaxMind DB files.


def test_mmdb_countries_from_country_then_registered_country(test_mmdb: Path) -> None:
    with CountryLookup.from_mmdb(test_mmdb) as lookup:
        found = countries(
            lookup,
            "203.0.113.7",  # IPv4 in the IPv6 tree (::203.0.113.0/120): country JP over registered US
            "198.51.100.1",  # only a registered_country
            "198.51.100.200",  # a record with neither
            "2001:db8::1",
            "2001:db9::1",  # ip-location-db's flat country_code
            "192.0.2.1",  # in no network
            "2001:dba::1",
            "203.0.113.7",  # repeats get the same answer
        )
        assert str(test_mmdb) in lookup.source and "Test-Country" in lookup.source
    assert found == ["JP", "DE", "--", "FR", "BR", "--", "--", "JP"]


def test_mmdb_lookups_repeat_per_distinct_address(test_mmdb: Path) -> None:
    column = np.tile(addresses("203.0.113.7", "2001:db8::1", "10.0.0.1"), 1000)
    with CountryLookup.from_mmdb(test_mmdb) as lookup:
        found = lookup.countries(column)
    assert found.tolist() == ["JP", "FR", "--"] * 1000


def test_mmdb_ipv4_tree_knows_no_ipv6(tmp_path: Path) -> None:
    path = tmp_path / "ipv4.mmdb"
    write_mmdb(path, {"203.0.113.0/24": {"country": {"iso_code": "JP"}}}, ip_version=4)
    with CountryLookup.from_mmdb(path) as lookup:
        assert countries(lookup, "203.0.113.1", "2001:db8::1", "8.8.8.8") == ["JP", "--", "--"]


def test_from_settings_reads_the_configured_file(test_mmdb: Path) -> None:
    with CountryLookup.from_settings(test_mmdb) as lookup:
        assert str(test_mmdb) in lookup.source


def test_missing_mmdb_is_a_geoip_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.mmdb"
    with pytest.raises(GeoIpError, match="absent.mmdb"):
        CountryLookup.from_mmdb(path)
    assert issubclass(GeoIpError, FlowLogsError)


def test_a_file_that_is_no_mmdb_is_a_geoip_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mmdb"
    path.write_bytes(b"GeoLite2-Country.mmdb was here\n" * 100)
    with pytest.raises(GeoIpError, match="garbage.mmdb"):
        CountryLookup.from_mmdb(path)


def test_a_corrupt_data_section_is_a_geoip_error_at_lookup(tmp_path: Path, test_mmdb: Path) -> None:
    with maxminddb.open_database(test_mmdb) as reader:
        data_start = reader.metadata().node_count * 6 + 16  # 24-bit records, then 16 zero bytes
    raw = bytearray(test_mmdb.read_bytes())
    raw[data_start : data_start + 8] = b"\xff" * 8  # a map "as long as" the rest of the file
    path = tmp_path / "corrupt.mmdb"
    path.write_bytes(bytes(raw))
    with CountryLookup.from_mmdb(path) as lookup, pytest.raises(GeoIpError, match="corrupt.mmdb"):
        lookup.countries(addresses("203.0.113.7"))
