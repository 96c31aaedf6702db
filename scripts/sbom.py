"""Writes the image's SBOM (CycloneDX 1.5 JSON): every Debian and Python package in the filesystem it
runs in, as installed. The Dockerfile runs it in the image's last filesystem stage with the worker's
own interpreter; ``make sbom`` copies the result out (scripts/build-image --sbom).

    /opt/rotator/bin/python sbom.py --version 0.1.0 --output /opt/rotator/sbom.cdx.json

Standard library only: it runs where nothing else may be installed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

#: Where Python distributions live in the image: the worker's virtualenv and the base's own sites.
PYTHON_SITES = (
    "/opt/rotator/lib/python3.11/site-packages",
    "/usr/local/lib/python3.11/site-packages",
    "/usr/lib/python3/dist-packages",
)
DPKG_STATUS = Path("/var/lib/dpkg/status")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python_packages(sites: tuple[str, ...] = PYTHON_SITES) -> Iterator[dict[str, Any]]:
    seen = set()
    for site in sites:
        if not Path(site).is_dir():
            continue
        for dist in metadata.distributions(path=[site]):
            name = _canonical(dist.metadata["Name"])
            if (name, site) in seen:
                continue
            seen.add((name, site))
            component: dict[str, Any] = {
                "type": "library",
                "bom-ref": f"pkg:pypi/{name}@{dist.version}",
                "name": name,
                "version": dist.version,
                "purl": f"pkg:pypi/{name}@{dist.version}",
                "properties": [{"name": "location", "value": site}],
            }
            license_ = dist.metadata["License-Expression"] or dist.metadata["License"]
            if license_ and "\n" not in license_ and len(license_) < 100:
                component["licenses"] = [{"expression": license_}]
            yield component


def debian_packages(status: Path = DPKG_STATUS) -> Iterator[dict[str, Any]]:
    if not status.exists():
        return
    for stanza in status.read_text(encoding="utf-8").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" ")
        )
        if not fields.get("Status", "").endswith(" installed"):
            continue
        name, version, arch = fields["Package"], fields["Version"], fields.get("Architecture", "all")
        purl = f"pkg:deb/debian/{name}@{version}?arch={arch}"
        yield {"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl}


def bom(version: str) -> dict[str, Any]:
    components = sorted(
        [*debian_packages(), *python_packages()], key=lambda c: (c["purl"].split("/")[0], c["name"])
    )
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "component": {"type": "container", "name": "polymarket-rotator", "version": version},
            "tools": {"components": [{"type": "application", "name": "scripts/sbom.py"}]},
        },
        "components": components,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    Path(args.output).write_text(json.dumps(bom(args.version), indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
