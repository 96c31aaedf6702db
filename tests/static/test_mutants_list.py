"""scripts/mutants.toml stays applicable: ``make mutants`` is run by hand, so a mutant whose line
moved (or whose tests were renamed) would go stale unnoticed; here, in ``make unit``, it fails."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tests.static.test_guarantees_table import ROOT, missing


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "scripts" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutants"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_every_mutant_still_applies_and_names_tests_that_exist() -> None:
    harness = _harness()
    mutants = harness.load()
    assert 30 <= len(mutants) <= 70, len(mutants)  # curated: `make mutants` stays a few minutes
    stale = {m.id: why for m in mutants if (why := harness.problems(m)) is not None}
    assert not stale, f"scripts/mutants.toml: mutants that no longer apply: {stale}"
    dead = {m.id: why for m in mutants for t in m.tests if (why := missing(t)) is not None}
    assert not dead, f"scripts/mutants.toml: mutants naming tests that do not exist: {dead}"


def test_a_moved_line_is_reported_stale(tmp_path: Path) -> None:
    harness = _harness()
    (tmp_path / "rotator").mkdir()
    (tmp_path / "rotator" / "x.py").write_text("def f(a, b):\n    return a < b\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_f(): ...\n")

    def mutant(before: str, after: str = "return a > b") -> object:
        return harness.Mutant("m", "rotator/x.py", before, after, ("tests/test_x.py::test_f",), "w")

    assert harness.problems(mutant("return a < b"), tmp_path) is None
    assert "found 0 times" in harness.problems(mutant("return a <= b"), tmp_path)
    assert "does not compile" in harness.problems(mutant("return a < b", "return a <"), tmp_path)
    assert "nothing would change" in harness.problems(mutant("return a < b", "return a < b"), tmp_path)
