"""tests/README.md maps every guarantee of the design to the tests that guard it (issue 26): every
test the table names must exist, and every invariant and protocol step must have a row naming one.

Tests are found with ``ast`` (a file is parsed, never imported), so a renamed or deleted test fails
here in ``make unit``, long before a reader follows a dead name.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "tests" / "README.md"
SECTION = "## Guarantees and their tests"

#: The rows the table must have, by their bold label: DESIGN.md's invariants, the protocol's steps,
#: and the guarantees of each part of the design around them.
REQUIRED = (
    *(f"I{n}" for n in range(1, 8)),
    *(f"Step {n}" for n in range(1, 8)),
    "Outcomes, and stopping",
    "Time",
    r"The /auth/\* budget",
    "Leader lease",
    "Removed credentials",
    "Wallet hygiene: audit",
    "Wallet hygiene: reap",
    "Store contract: compare-and-set",
    "Store contract: errors",
    "Consumer: retry",
    "Consumer: acknowledgement",
    "Consumer: refusal reports",
)

_NODE = re.compile(r"`(tests/[^`\s]+?\.py::[^`\s]+)`")


@functools.cache
def defined_tests(path: Path) -> frozenset[str]:
    """The test names pytest would collect from ``path``, as ``name`` or ``Class::name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names |= {
                f"{node.name}::{sub.name}"
                for sub in node.body
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and sub.name.startswith("test")
            }
    return frozenset(names)


def missing(node_id: str, root: Path = ROOT) -> str | None:
    """Why ``node_id`` (``file::test``, ``file::test[case]`` or a bare file) names no test, or None."""
    file, _, name = node_id.partition("::")
    path = root / file
    if not path.is_file():
        return f"{file} does not exist"
    if not name:
        return None if defined_tests(path) else f"{file} holds no test"
    name = name.split("[", 1)[0]  # a parametrized case: its test is what must exist
    return None if name in defined_tests(path) else f"{file} has no test {name}"


def table_rows(text: str) -> list[tuple[str, list[str]]]:
    """(bold label, test node ids) of each row of the section's table."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    rows = []
    for line in text[start : end if end != -1 else None].splitlines():
        if not line.startswith("| **"):
            continue
        first = line.split(" | ", 1)[0]
        label = re.match(r"\| \*\*(.+?)\*\*", first)
        assert label is not None, line
        rows.append((label.group(1), _NODE.findall(line)))
    return rows


def test_every_test_the_table_names_exists() -> None:
    rows = table_rows(README.read_text(encoding="utf-8"))
    named = [node for _, nodes in rows for node in nodes]
    assert len(named) > 100, "the table names too few tests: is its format still what this test reads?"
    dead = {node: why for node in named if (why := missing(node)) is not None}
    assert not dead, f"tests/README.md names tests that do not exist: {dead}"


def test_every_invariant_and_step_has_a_row_naming_a_test() -> None:
    rows = table_rows(README.read_text(encoding="utf-8"))
    labels = {label for label, _ in rows}
    assert not [r for r in REQUIRED if r not in labels], f"rows missing from tests/README.md: {REQUIRED}"
    assert not [label for label, nodes in rows if not nodes], "a row names no test"


def test_a_dead_name_and_a_missing_row_are_noticed(tmp_path: Path) -> None:
    """The checks above can fail: a name whose test is gone, and a table without I4."""
    test_file = tmp_path / "tests" / "unit" / "test_x.py"
    test_file.parent.mkdir(parents=True)
    test_file.write_text(
        "def test_here():\n    assert True\n\nclass TestGroup:\n    def test_in(self): ...\n"
    )
    assert missing("tests/unit/test_x.py::test_here", tmp_path) is None
    assert missing("tests/unit/test_x.py::test_here[case-1]", tmp_path) is None
    assert missing("tests/unit/test_x.py::TestGroup::test_in", tmp_path) is None
    assert (
        missing("tests/unit/test_x.py::test_gone", tmp_path) == "tests/unit/test_x.py has no test test_gone"
    )
    assert missing("tests/unit/test_y.py::test_here", tmp_path) == "tests/unit/test_y.py does not exist"
    text = README.read_text(encoding="utf-8").replace("| **I4** ", "| **I4 (dropped)** ")
    assert "I4" not in {label for label, _ in table_rows(text)}
