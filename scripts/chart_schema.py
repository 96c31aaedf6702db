"""Writes the ``config`` part of the chart's values.schema.json from the worker's settings model.

    python scripts/chart_schema.py          # rewrite deploy/helm/rotator/values.schema.json
    python scripts/chart_schema.py --check  # exit 1 if the file is not what this writes

The chart-owned part of the file (everything but ``properties.config`` and the ``config.*``
definitions) is hand-written and kept as it is; ``config`` becomes the schema of
``python -m rotator.config_schema``, its definitions moved under ``definitions`` (the file is
draft-07, as Helm 3 and 4 both read it) with a ``config.`` prefix. tests/static/test_helm_chart.py
holds the file equal to this script's output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "deploy" / "helm" / "rotator" / "values.schema.json"
PREFIX = "config."
#: What Helm says instead of showing a value that looks like key material: "value must be '...'".
KEY_MATERIAL = "(not shown: it looks like key material; name where the key is instead)"
WIDTH = 100

if str(ROOT) not in sys.path:  # run as a script: import the worker from this checkout
    sys.path.insert(0, str(ROOT))


def _shared() -> dict[str, Any]:
    """Types used by many fields, each written once in ``definitions`` (the model inlines them)."""
    from pydantic import TypeAdapter

    from rotator.config import Duration, EnvName, PositiveDuration

    return {
        name: TypeAdapter(annotation).json_schema()
        for name, annotation in (
            ("Duration", Duration),
            ("PositiveDuration", PositiveDuration),
            ("EnvName", EnvName),
        )
    }


def _refs(node: Any, shared: dict[str, Any]) -> Any:
    """``#/$defs/X`` -> ``#/definitions/config.X``, and a shared type's schema -> a reference to it."""
    for name, schema in shared.items():
        if node == schema:
            return {"$ref": "#/definitions/" + PREFIX + name}
    if isinstance(node, list):
        return [_refs(item, shared) for item in node]
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = "#/definitions/" + PREFIX + value.removeprefix("#/$defs/")
            else:
                out[key] = _refs(value, shared)
        return out
    return node


def _quiet_patterns(node: Any) -> Any:
    """Every ``pattern`` check, made to refuse a value that looks like key material without echoing it.

    Helm prints the value that fails a pattern ("'0x...' does not match pattern"), and a key pasted
    where a variable's name goes (``signer.env: 0x...``) would land in the terminal and the CI log.
    The check is as strict as before: a value the pattern takes passes; one it refuses fails with
    the pattern's message, or, when it looks like key material, with a message that does not show it.
    """
    from rotator.config import _SECRETISH

    if isinstance(node, list):
        return [_quiet_patterns(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "pattern" in node:
        return {
            "if": node,
            "else": {
                "if": {"type": "string", "pattern": _SECRETISH.pattern},
                "then": {"const": KEY_MATERIAL},
                "else": node,
            },
        }
    return {key: _quiet_patterns(value) for key, value in node.items()}


def generate(current: dict[str, Any]) -> dict[str, Any]:
    """``current`` (the chart's schema) with ``config`` replaced by the worker's schema."""
    from rotator.config_schema import config_json_schema

    worker = config_json_schema()
    shared = _shared()
    defs = {**worker.pop("$defs", {}), **shared}
    config = {
        "description": (
            "The worker's config file (rotator/config.py), checked with the worker's own schema "
            "(scripts/chart_schema.py writes it): unknown keys, wrong types and bad durations fail "
            "the install"
        ),
        **_quiet_patterns(_refs(worker, shared)),
    }
    out = dict(current)
    definitions = {k: v for k, v in current.get("definitions", {}).items() if not k.startswith(PREFIX)}
    definitions.update(
        {
            PREFIX + name: _quiet_patterns(sub if name in shared else _refs(sub, shared))
            for name, sub in sorted(defs.items())
        }
    )
    out["definitions"] = definitions
    out["properties"] = {k: (config if k == "config" else v) for k, v in current["properties"].items()}
    return out


def _scalar(node: Any) -> bool:
    return not isinstance(node, (dict, list))


def dumps(node: Any, indent: int = 0) -> str:
    """JSON, a leaf object or list (no object or list inside) on one line when it fits in WIDTH."""
    flat = json.dumps(node, separators=(", ", ": "))
    if not isinstance(node, (dict, list)) or not node:
        return flat
    children = node.values() if isinstance(node, dict) else node
    leaf = all(_scalar(v) or (isinstance(v, list) and all(map(_scalar, v))) for v in children)
    if leaf and indent + len(flat) <= WIDTH:
        return flat
    pad = " " * (indent + 2)
    if isinstance(node, dict):
        items = [f"{pad}{json.dumps(k)}: {dumps(v, indent + 2)}" for k, v in node.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + dumps(v, indent + 2) for v in node]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def render(text: str) -> str:
    """The file's text as it should be, from its current text."""
    return dumps(generate(json.loads(text))) + "\n"


def main(argv: list[str]) -> int:
    current = SCHEMA.read_text(encoding="utf-8")
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print(f"{SCHEMA.relative_to(ROOT)} is stale: run python scripts/chart_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
