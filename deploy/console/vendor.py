"""Fetch (or check) the JavaScript the web console bundles: Apache ECharts, pinned, in pipeline/console/vendor/.

The console works offline, so its one library is checked in: ``dist/echarts.min.js`` of the
npm package ``echarts`` with its LICENSE and NOTICE, the d3 license it names for code it
embeds, and the license of ZRender (BSD-3-Clause), its renderer, bundled into that file::

    python3 deploy/console/vendor.py            # fetch the pinned tarballs, check, write vendor/
    python3 deploy/console/vendor.py --check    # offline: are the files there what is pinned?
    python3 deploy/console/vendor.py --pins 6.2.0   # to upgrade: the lines to paste below

Each tarball must match its pinned sha256 before anything is taken from it, and each file
taken its own pinned sha256. ``--pins`` checks a new release against the registry's own
sha512 and prints new pins; review the release notes before pasting them. Standard library
only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
VENDOR = Path(__file__).resolve().parents[2] / "pipeline" / "console" / "vendor"

# package → (version, sha256 of the npm tarball)
PACKAGES = {
    "echarts": ("6.1.0", "681aff88cc1038c3fa941a3a53d1b177a52250b05335efc607d6105ae13be481"),
    "zrender": ("6.1.0", "38f2fb722a638be016ca0175b139c40c886ef47fc2afdb741b2e7e7ae9683f9c"),  # what echarts 6.1.0 pins
}
# file in vendor/ → (package, path in its tarball, sha256)
FILES = {
    "echarts.min.js": ("echarts", "package/dist/echarts.min.js", "b66b25aeb4df84e33199dc21694014d336d222cbd9deb0e5a7c14bd6aa0d0fd0"),
    "echarts.LICENSE.txt": ("echarts", "package/LICENSE", "634293835b43a6dd2094fa39182a3d9a6b9ca43b7fdb9ac354e8037af2a3093a"),
    "echarts.NOTICE.txt": ("echarts", "package/NOTICE", "d491d358344f842685c1b1585970999db65fe30ecf7ef3867af8814f4016c016"),
    "d3.LICENSE.txt": ("echarts", "package/licenses/LICENSE-d3", "e1211892da0b0e0585b7aebe8f98c1274fba15bafe47fa1f4ee8a7a502c06304"),
    "zrender.LICENSE.txt": ("zrender", "package/LICENSE", "a681e9d183c72b4af4856935893805eb48c08f0f5a3f260203db7444c20fb98a"),
}


class VendorError(Exception):
    """A download that does not match its pin, or a tarball without a pinned file."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - a fixed https registry URL
        return response.read()


def _tarball_url(package: str, version: str) -> str:
    return f"{REGISTRY}/{package}/-/{package}-{version}.tgz"


def _members(tarball: bytes, paths: set[str]) -> dict[str, bytes]:
    found = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member in archive.getmembers():
            if member.name in paths and member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                found[member.name] = extracted.read()
    missing = paths - set(found)
    if missing:
        raise VendorError(f"the tarball holds no {', '.join(sorted(missing))}")
    return found


def fetch(directory: Path = VENDOR) -> None:
    """Download the pinned tarballs and write :data:`FILES` into ``directory``; nothing is
    written unless every tarball and every file matches its pin."""
    contents = {}
    for package, (version, pinned) in PACKAGES.items():
        url = _tarball_url(package, version)
        tarball = _get(url)
        if _sha256(tarball) != pinned:
            raise VendorError(f"{url} has sha256 {_sha256(tarball)}, not the pinned {pinned}")
        wanted = {path for owner, path, _ in FILES.values() if owner == package}
        members = _members(tarball, wanted)
        for name, (owner, path, sha) in FILES.items():
            if owner == package:
                if _sha256(members[path]) != sha:
                    raise VendorError(f"{path} of {package} {version} has sha256 {_sha256(members[path])}, not {sha}")
                contents[name] = members[path]
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (directory / name).write_bytes(data)
        print(f"{directory / name}: {len(data):,} bytes", file=sys.stderr)


def check(directory: Path = VENDOR) -> list[str]:
    """What is wrong with ``directory`` against the pins: missing, changed or unknown files."""
    problems = []
    for name, (package, path, sha) in FILES.items():
        file = directory / name
        if not file.is_file():
            problems.append(f"{name} is missing (run deploy/console/vendor.py)")
        elif _sha256(file.read_bytes()) != sha:
            problems.append(f"{name} is not {path} of {package} {PACKAGES[package][0]} (sha256 differs)")
    unknown = sorted(p.name for p in directory.iterdir() if p.name not in FILES) if directory.is_dir() else []
    problems += [f"{name} is not a pinned vendor file" for name in unknown]
    return problems


def pins(version: str) -> str:
    """The pins for echarts ``version`` and the zrender it depends on, each tarball checked
    against the registry's sha512 (``dist.integrity``)."""
    echarts = json.loads(_get(f"{REGISTRY}/echarts/{version}"))
    versions = {"echarts": version, "zrender": echarts["dependencies"]["zrender"].lstrip("^~=")}
    lines, tarballs = [], {}
    for package, wanted in versions.items():
        meta = echarts if package == "echarts" else json.loads(_get(f"{REGISTRY}/{package}/{wanted}"))
        tarball = _get(meta["dist"]["tarball"])
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
        if integrity != meta["dist"]["integrity"]:
            raise VendorError(f"{package} {wanted}: the tarball does not match the registry's {meta['dist']['integrity']}")
        tarballs[package] = tarball
        lines.append(f'    "{package}": ("{wanted}", "{_sha256(tarball)}"),')
    lines.append("")
    for name, (package, path, _) in FILES.items():
        data = _members(tarballs[package], {path})[path]
        lines.append(f'    "{name}": ("{package}", "{path}", "{_sha256(data)}"),')
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check the vendored files against the pins; no network")
    parser.add_argument("--pins", metavar="VERSION", help="print the pins for another echarts release; write nothing")
    args = parser.parse_args(argv)
    try:
        if args.pins:
            print(pins(args.pins))
            return 0
        if not args.check:
            fetch()
        problems = check()
    except (VendorError, OSError, KeyError, ValueError) as exc:
        print(f"vendor.py: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"vendor.py: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
