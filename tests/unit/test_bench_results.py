"""bench/run.py rewrites bench/RESULTS.md on every full run: the sections it does not measure (the
container image's size, recorded from tests/image) must survive it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench_run(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_run_under_test", BENCH / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_run_under_test", module)
    spec.loader.exec_module(module)
    return module


def test_a_full_run_keeps_the_container_image_section(bench_run: ModuleType, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    image = "## Container image\n\n- Image size: 374 MB\n- Build: 45 s"
    results.write_text(f"# Benchmark results\n\nold table\n\n{image}\n\n## Method\n\nold method\n")
    bench_run.RESULTS = results
    info = {"cpu": "x", "python": "3.11", "os": "linux", "commit": "abc"}
    bench_run.write_results([], info, "0 0 0", "0 0 0", 1.0)
    text = results.read_text()
    assert image in text
    assert text.index("## Container image") < text.index("## Method")
    assert "old table" not in text and "old method" not in text
    # And the repository's own RESULTS.md has the section to keep.
    assert "## Container image" in (BENCH / "RESULTS.md").read_text()
