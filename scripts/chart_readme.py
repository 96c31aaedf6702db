"""Writes the values table of deploy/helm/rotator/README.md from the ``# --`` comments of values.yaml.

    python scripts/chart_readme.py          # rewrite the table between the README's markers
    python scripts/chart_readme.py --check  # exit 1 if the README is not what this writes

The helm-docs convention, without helm-docs: ``# -- text`` right above a key documents it (the
following ``#`` lines continue the text, ``# @default -- text`` replaces the shown default); its
type and default come from the parsed values. tests/static/test_helm_chart.py holds the README
equal to this script's output.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "rotator"
BEGIN, END = "<!-- values:begin (scripts/chart_readme.py) -->", "<!-- values:end -->"
_KEY = re.compile(r"^( *)([A-Za-z_][\w./-]*):(.*)$")


def documented(text: str) -> list[tuple[str, str | None, str]]:
    """(dotted key, @default text or None, description) of every ``# --`` comment, in file order."""
    rows: list[tuple[str, str | None, str]] = []
    parents: list[tuple[int, str]] = []
    doc: list[str] | None = None
    default: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# @default --"):
            default = stripped.removeprefix("# @default --").strip()
            continue
        if stripped.startswith("# --"):
            doc, default = [stripped.removeprefix("# --").strip()], None
            continue
        if stripped.startswith("#"):
            if doc is not None:
                doc.append(stripped.removeprefix("#").strip())
            continue
        match = _KEY.match(line)
        if not match:  # a blank line or a list item: a pending comment documents nothing
            doc, default = None, None
            continue
        indent, key = len(match.group(1)), match.group(2)
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = ".".join([p for _, p in parents] + [key])
        parents.append((indent, key))
        if doc is not None:
            rows.append((path, default, " ".join(part for part in doc if part)))
        doc, default = None, None
    return rows


def _type(value: Any) -> str:
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"), (list, "list")):
        if isinstance(value, kind):
            return name
    return "object" if isinstance(value, dict) else "null"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for path, default, description in documented(values_text):
        value: Any = values
        for part in path.split("."):
            value = value[part]
        shown = default if default is not None else f"`{json.dumps(value)}`"
        lines.append(f"| `{path}` | {_type(value)} | {_cell(shown)} | {_cell(description)} |")
    return "\n".join(lines) + "\n"


def render(readme: str, values_text: str) -> str:
    """The README's text as it should be: its table regenerated, the rest as it is."""
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"README: the markers {BEGIN} and {END} are missing")
    return f"{head}{BEGIN}\n{table(values_text)}{END}{tail}"


def main(argv: list[str]) -> int:
    path = CHART / "README.md"
    current = path.read_text(encoding="utf-8")
    wanted = render(current, (CHART / "values.yaml").read_text(encoding="utf-8"))
    if "--check" in argv:
        if current != wanted:
            print(f"{path.relative_to(ROOT)} is stale: run python scripts/chart_readme.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
