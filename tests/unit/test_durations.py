"""scripts/durations.py and the order tests/conftest.py gives the suite from its file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("durations_script", ROOT / "scripts" / "durations.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_phases_are_summed_short_tests_left_out_longest_first(tmp_path: Path) -> None:
    report = tmp_path / "report.log"
    report.write_text(
        "============ slowest durations ============\n"
        "1.50s call     tests/a.py::t[x-1]\n"
        "0.70s setup    tests/a.py::t[x-1]\n"
        "0.40s call     tests/b.py::quick\n"
        "9.00s call     tests/c.py::long\n"
        "(12 durations < 0.005s hidden.)\n"
    )
    out = tmp_path / "durations.tsv"
    assert _script().main([str(report), str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert rows == ["9.0\ttests/c.py::long", "2.2\ttests/a.py::t[x-1]"]


def test_a_report_without_durations_is_refused(tmp_path: Path) -> None:
    report = tmp_path / "report.log"
    report.write_text("1 passed in 0.1s\n")
    assert _script().main([str(report), str(tmp_path / "out.tsv")]) == 1
    assert not (tmp_path / "out.tsv").exists()


def test_the_committed_file_names_only_test_files_of_this_suite() -> None:
    from tests.conftest import _known_durations

    known = _known_durations()
    assert len(known) > 100
    files = {node.split("::", 1)[0] for node in known}
    missing = sorted(f for f in files if not (ROOT / f).is_file())
    assert not missing, f"tests/durations.tsv names files that are gone (make durations): {missing}"
