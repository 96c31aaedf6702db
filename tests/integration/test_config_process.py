"""A sample of the malformed configs of tests/unit/test_config_fuzz.py, fed to a real
``rotator check --offline`` process: exit 2, one line on stderr, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_config_fuzz import FILE, FILES

SAMPLE = ["not-utf8", "deep-flow", "alias-bomb", "null-key"]


@pytest.mark.parametrize("what", SAMPLE)
def test_a_real_process_prints_one_line(tmp_path: Path, what: str) -> None:
    blob = dict((f[0], f[1]) for f in FILES)[what]
    path = tmp_path / FILE
    path.write_bytes(blob)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ROTATOR_")}
    proc = subprocess.run(
        [sys.executable, "-m", "rotator.cli", "check", "--offline", "-c", str(path)],
        env={**env, "ROTATOR_CREDENTIALS": "not json"} if what == "null-key" else env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
