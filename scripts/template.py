"""Renders the Helm chart offline, like ``helm template``, with the engine the tests use (helm-python-sdk:
Helm's own Go code as a shared library), so no ``helm`` binary and no cluster is needed:

    make template VALUES=my-values.yaml [RELEASE=rotator NAMESPACE=default]
    python scripts/template.py --values a.yaml --values b.yaml [--name N] [--namespace NS] [--api-versions V]

Every install-time check runs: values.schema.json (the worker's config schema included) and the
chart's own refusals (wiring, schedule, security). A refused render prints Helm's one-line reason
on stderr and exits 1; a good one prints the manifests on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "rotator"


def merged(paths: list[str]) -> dict[str, Any]:
    """The values files, later ones over earlier ones (maps merged, the rest replaced), as Helm does."""

    def merge(into: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    values: dict[str, Any] = {}
    for path in paths:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise SystemExit(f"template: {path}: not a map of values")
        merge(values, data)
    return values


def render(values: dict[str, Any], name: str, namespace: str, api_versions: list[str]) -> dict[str, str]:
    import helm_python
    from helm_python import _native

    with helm_python.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        # Chart.render does not pass --api-versions on; the library's render takes them.
        opts = {"name": name, "namespace": namespace, "api_versions": api_versions}
        raw = _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
    files: dict[str, str] = json.loads(raw)
    return files


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--values", "-f", action="append", default=[], help="a values file (repeatable)")
    p.add_argument("--name", default="rotator", help="release name")
    p.add_argument("--namespace", default="default")
    p.add_argument(
        "--api-versions", action="append", default=[], help="as helm's (e.g. monitoring.coreos.com/v1)"
    )
    args = p.parse_args(argv)
    try:
        import helm_python
    except (ImportError, OSError) as exc:
        print(f"template: helm-python-sdk is not available ({exc}): make .venv", file=sys.stderr)
        return 2
    try:
        files = render(merged(args.values), args.name, args.namespace, args.api_versions)
    except (helm_python.HelmValuesError, helm_python.HelmRenderError) as exc:
        print(f"template: {exc}", file=sys.stderr)
        return 1
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        sys.stdout.write(f"---\n# Source: {path}\n{text.strip()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
