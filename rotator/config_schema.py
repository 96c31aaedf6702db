"""The config file's JSON schema, generated from the settings model: ``python -m rotator.config_schema``.

For editors (a YAML language server given the schema) and for the Helm chart, whose
values.schema.json checks ``config`` with it (scripts/chart_schema.py). It is what the model's
fields take: unknown keys, wrong types, enums, patterns and duration formats are refused; the
model's cross-field checks (a signer source's fields, paths that collide, ...) are not expressible
here and stay with the worker (``rotator check --offline``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rotator.config import Settings

#: Annotations for people, not checks: dropped to keep the schema small and the chart's file readable.
_NOISE = ("title", "default")


def config_json_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12 and draft-07 compatible keywords) of the worker's config file."""
    schema: dict[str, Any] = _clean(Settings.model_json_schema(mode="validation"))
    return schema


def _clean(node: Any) -> Any:
    if isinstance(node, list):
        return [_clean(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _NOISE:
            continue
        if key in ("properties", "$defs"):  # maps of names to schemas: the names are not keywords
            out[key] = {name: _clean(sub) for name, sub in value.items()}
        else:
            out[key] = _clean(value)
    return out


def main() -> int:
    json.dump(config_json_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
