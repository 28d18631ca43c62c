"""Country of flow addresses, from an offline GeoIP database.

Two kinds of database answer the same question, "which country is this address in":

- a MaxMind DB (``.mmdb``) file the operator supplies — GeoLite2-Country, DB-IP's country
  lite MMDB, a City database — read with the ``maxminddb`` package;
- the bundled table ``pipeline/data/dbip-country-lite.npz``: DB-IP's "IP to Country Lite"
  (CC BY 4.0, attribution in ``dbip-country-lite.LICENSE.txt`` beside it), so a report
  works out of the box with no download. ``deploy/geoip/build_country_data.py`` rebuilds it.

Addresses are the project's address columns: 16 bytes each, network order, IPv4 stored
IPv4-mapped (``::ffff:a.b.c.d``), as a (n,) ``V16`` array or an (n, 16) ``uint8`` array.
Countries are ISO 3166-1 alpha-2 codes; :data:`UNKNOWN_COUNTRY` stands for every address
the database places nowhere (private, reserved, unallocated or just not covered).
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

import maxminddb
import numpy as np

from flowlogs.errors import FlowLogsError
from schemas.frame import is_ipv4_mapped

__all__ = [
    "BUNDLED_DATA",
    "UNKNOWN_COUNTRY",
    "CountryLookup",
    "CountryRanges",
    "GeoIpError",
]

UNKNOWN_COUNTRY = "--"
BUNDLED_DATA = Path(__file__).with_name("data") / "dbip-country-lite.npz"
# Bumped when the layout of the .npz changes, so an old file is refused rather than misread.
RANGES_FORMAT = 1

_IPV6_START = np.dtype([("high", np.uint64), ("low", np.uint64)])


class GeoIpError(FlowLogsError):
    """A GeoIP database is missing, unreadable or not a database of the expected kind."""


def _address_rows(addrs: np.ndarray) -> np.ndarray:
    """Addresses (V16 or (n, 16) uint8) as a contiguous (n, 16) uint8 array."""
    if addrs.dtype == np.dtype("V16"):
        return np.ascontiguousarray(addrs).view(np.uint8).reshape(-1, 16)
    if addrs.dtype == np.uint8 and addrs.ndim == 2 and addrs.shape[1] == 16:
        return np.ascontiguousarray(addrs)
    raise ValueError(f"addresses must be V16 or (n, 16) uint8, not {addrs.dtype} of shape {addrs.shape}")


def _ipv6_starts(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """128-bit values as a structured array whose order (field by field) is numeric order."""
    out = np.empty(len(high), dtype=_IPV6_START)
    out["high"] = high
    out["low"] = low
    return out


def _increasing_from_zero(starts: np.ndarray) -> bool:
    """True when uint32 or _IPV6_START ``starts`` begin at 0 and strictly increase."""
    if starts.dtype == _IPV6_START:
        high, low = starts["high"], starts["low"]
        steps_up = (high[1:] > high[:-1]) | ((high[1:] == high[:-1]) & (low[1:] > low[:-1]))
        return bool(high[0] == 0 and low[0] == 0 and steps_up.all())
    return bool(starts[0] == 0 and (starts[1:] > starts[:-1]).all())


@dataclass(frozen=True)
class CountryRanges:
    """Address intervals covering all of IPv4 and of IPv6, each with one country.

    Interval ``i`` of a family runs from its start up to the next interval's start (the last
    one to the end of the address space); its country is ``countries[country_index[i]]``,
    where index 0 is :data:`UNKNOWN_COUNTRY`. Starts are sorted and the first is 0, so every
    address falls in exactly one interval.
    """

    countries: np.ndarray  # '<U2', [0] == UNKNOWN_COUNTRY
    ipv4_starts: np.ndarray  # uint32
    ipv4_country: np.ndarray  # uint8, index into countries
    ipv6_starts: np.ndarray  # _IPV6_START
    ipv6_country: np.ndarray  # uint8, index into countries
    dataset: str  # e.g. "DB-IP IP to Country Lite"
    date: str  # the dataset's edition, ISO date
    license: str  # e.g. "CC BY 4.0, IP geolocation by DB-IP (https://db-ip.com)"
    origin: str  # where the build script got it

    def country_indexes(self, rows: np.ndarray) -> np.ndarray:
        """Index into ``countries`` of each address of (n, 16) uint8 ``rows``."""
        out = np.empty(len(rows), dtype=np.uint8)
        ipv4 = is_ipv4_mapped(rows)
        ipv4_values = np.ascontiguousarray(rows[ipv4, 12:16]).view(">u4").reshape(-1)
        out[ipv4] = self.ipv4_country[np.searchsorted(self.ipv4_starts, ipv4_values, side="right") - 1]
        halves = np.ascontiguousarray(rows[~ipv4]).view(">u8").reshape(-1, 2)
        ipv6_values = _ipv6_starts(halves[:, 0], halves[:, 1])
        out[~ipv4] = self.ipv6_country[np.searchsorted(self.ipv6_starts, ipv6_values, side="right") - 1]
        return out

    def save(self, path: Path) -> None:
        """Write the table as a compressed .npz that :meth:`load` reads back."""
        # Starts are stored as steps from the previous start: sorted starts differ by small
        # numbers, which compress far better than the starts themselves.
        np.savez_compressed(
            path,
            format=np.array(RANGES_FORMAT),
            countries=self.countries,
            ipv4_start_steps=np.diff(self.ipv4_starts, prepend=np.uint32(0)),
            ipv4_country=self.ipv4_country,
            ipv6_high_steps=np.diff(self.ipv6_starts["high"], prepend=np.uint64(0)),
            ipv6_low=self.ipv6_starts["low"],
            ipv6_country=self.ipv6_country,
            dataset=np.array(self.dataset),
            date=np.array(self.date),
            license=np.array(self.license),
            origin=np.array(self.origin),
        )

    @classmethod
    def load(cls, path: Path) -> CountryRanges:
        """Read a table :meth:`save` wrote; GeoIpError naming ``path`` when it can't be used."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                found = int(npz["format"])
                if found != RANGES_FORMAT:
                    raise GeoIpError(f"{path}: country table format {found}, this build reads {RANGES_FORMAT}")
                ranges = cls(
                    countries=npz["countries"],
                    ipv4_starts=np.cumsum(npz["ipv4_start_steps"], dtype=np.uint32),
                    ipv4_country=npz["ipv4_country"],
                    ipv6_starts=_ipv6_starts(np.cumsum(npz["ipv6_high_steps"], dtype=np.uint64), npz["ipv6_low"]),
                    ipv6_country=npz["ipv6_country"],
                    dataset=str(npz["dataset"]),
                    date=str(npz["date"]),
                    license=str(npz["license"]),
                    origin=str(npz["origin"]),
                )
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise GeoIpError(f"cannot read the country table {path}: {exc}") from exc
        ranges.check(path)
        return ranges

    def check(self, path: Path | str = "country table") -> None:
        """Raise GeoIpError unless the table has the shape the class docstring promises."""
        for family, starts, index in (
            ("IPv4", self.ipv4_starts, self.ipv4_country),
            ("IPv6", self.ipv6_starts, self.ipv6_country),
        ):
            if len(starts) == 0 or len(starts) != len(index):
                raise GeoIpError(f"{path}: {family} starts and countries differ in length or are empty")
            if not _increasing_from_zero(starts):
                raise GeoIpError(f"{path}: {family} starts are not strictly increasing from 0")
            if int(index.max()) >= len(self.countries):
                raise GeoIpError(f"{path}: {family} country index beyond the country list")
        if len(self.countries) == 0 or self.countries[0] != UNKNOWN_COUNTRY:
            raise GeoIpError(f"{path}: country list must start with {UNKNOWN_COUNTRY!r}")


class _CountrySource(Protocol):
    def countries(self, rows: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class _BundledCountries:
    """Vectorised lookups in a :class:`CountryRanges`."""

    def __init__(self, ranges: CountryRanges) -> None:
        self.ranges = ranges

    def countries(self, rows: np.ndarray) -> np.ndarray:
        found: np.ndarray = self.ranges.countries[self.ranges.country_indexes(rows)]
        return found

    def close(self) -> None:
        pass


def _record_country(record: Any) -> str:
    """The ISO code of one MMDB record, or UNKNOWN_COUNTRY.

    ``country`` is where the address is used; ``registered_country`` (where its block is
    registered) stands in when a record has no ``country``, as for some anycast blocks.
    ip-location-db's MMDB files keep a flat ``country_code`` instead.
    """
    if not isinstance(record, Mapping):
        return UNKNOWN_COUNTRY
    for key in ("country", "registered_country"):
        place = record.get(key)
        code = place.get("iso_code") if isinstance(place, Mapping) else None
        if isinstance(code, str):
            return code
    code = record.get("country_code")
    return code if isinstance(code, str) else UNKNOWN_COUNTRY


class _MmdbCountries:
    """Lookups in an open MaxMind DB, one per distinct address."""

    def __init__(self, reader: maxminddb.Reader, path: Path) -> None:
        self.reader = reader
        self.path = path
        self.ipv6_tree = reader.metadata().ip_version == 6

    def countries(self, rows: np.ndarray) -> np.ndarray:
        distinct, inverse = np.unique(rows.view("V16").reshape(-1), return_inverse=True)
        found = np.full(len(distinct), UNKNOWN_COUNTRY, dtype="<U2")
        ipv4 = is_ipv4_mapped(distinct)
        for i, (raw, is_ipv4) in enumerate(zip(distinct.tolist(), ipv4.tolist(), strict=True)):
            # IPv4-mapped addresses are asked as IPv4: the reader then finds them in an IPv4
            # tree, or in an IPv6 tree's IPv4 subtree (::a.b.c.d, which ::ffff:0:0/96 aliases).
            if is_ipv4:
                address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(raw[12:])
            elif self.ipv6_tree:
                address = ipaddress.IPv6Address(raw)
            else:
                continue  # an IPv4-only database knows no IPv6 address
            try:
                found[i] = _record_country(self.reader.get(address))
            except maxminddb.InvalidDatabaseError as exc:
                raise GeoIpError(f"GeoIP database {self.path} is corrupt: {exc}") from exc
        return found[inverse.reshape(-1)]

    def close(self) -> None:
        self.reader.close()


class CountryLookup:
    """The country of each address of a flow column, from one GeoIP database.

    Build one with :meth:`from_mmdb`, :meth:`bundled` or :meth:`from_settings`; the
    constructor takes an already opened source and does no I/O.
    """

    def __init__(self, source: _CountrySource, description: str) -> None:
        self._source = source
        self.source = description
        """What the countries come from, for a report's footer: a file, or the bundled
        dataset with its date and license."""

    @classmethod
    def from_mmdb(cls, path: Path | str) -> CountryLookup:
        """Read countries from the MaxMind DB file at ``path``.

        Raises GeoIpError naming ``path`` when it is missing, unreadable or not a MaxMind DB.
        """
        path = Path(path)
        try:
            reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
        except FileNotFoundError as exc:
            raise GeoIpError(f"GeoIP database {path} does not exist") from exc
        except (OSError, maxminddb.InvalidDatabaseError, ValueError) as exc:
            raise GeoIpError(f"GeoIP database {path} cannot be read as a MaxMind DB: {exc}") from exc
        metadata = reader.metadata()
        built = datetime.datetime.fromtimestamp(metadata.build_epoch, datetime.UTC).date()
        return cls(_MmdbCountries(reader, path), f"{path} ({metadata.database_type}, built {built})")

    @classmethod
    def bundled(cls) -> CountryLookup:
        """The bundled DB-IP country table; loaded on first use and shared afterwards.

        Raises GeoIpError when the table is missing from the installation or damaged.
        """
        return _bundled_lookup()

    @classmethod
    def from_settings(cls, path: Path | None) -> CountryLookup:
        """The MaxMind DB at ``path`` when one is configured, else the bundled table."""
        return cls.from_mmdb(path) if path is not None else cls.bundled()

    def countries(self, addrs: np.ndarray) -> np.ndarray:
        """ISO 3166-1 alpha-2 code ('<U2') of each address, :data:`UNKNOWN_COUNTRY` where
        the database has none. ``addrs``: (n,) V16 or (n, 16) uint8, IPv4 IPv4-mapped."""
        return self._source.countries(_address_rows(addrs))

    def close(self) -> None:
        """Release the database file (nothing to release for the bundled table)."""
        self._source.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CountryLookup({self.source!r})"


@functools.cache
def _bundled_lookup() -> CountryLookup:
    if not BUNDLED_DATA.exists():
        raise GeoIpError(
            f"the bundled country table {BUNDLED_DATA} is missing: reinstall flowlogs, "
            "or rebuild it with deploy/geoip/build_country_data.py"
        )
    ranges = CountryRanges.load(BUNDLED_DATA)
    description = f"{ranges.dataset} as of {ranges.date}, bundled; {ranges.license}"
    return CountryLookup(_BundledCountries(ranges), description)
