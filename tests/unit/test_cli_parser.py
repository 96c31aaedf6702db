"""The command line's surface, without running a command: every option explained, ``--version`` from
the one version source, the packaging metadata that names it."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import rotator
from rotator.cli import _parser, main
from rotator.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_option_of_every_subcommand_has_help() -> None:
    parser = _parser()
    subs = _subcommands(parser)
    assert {"run", "rotate", "status", "check", "revoke", "retire", "rekey", "sandbox", "demo"} <= set(subs)
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, sub in [("rotator", parser), *subs.items()]
        for action in sub._actions
        if not isinstance(action, argparse._SubParsersAction) and not (action.help or "").strip()
    ]
    assert missing == []
    for name, sub in subs.items():  # and every subcommand says what it does
        assert (sub.description or "").strip(), name


def test_sandbox_help_names_its_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["sandbox", "--help"])
    out = capsys.readouterr().out
    assert "default 8080" in out and "default 127.0.0.1" in out and "default 137" in out


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"rotator {rotator.__version__}\n"


def test_version_as_a_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rotator.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0 and proc.stdout == f"rotator {rotator.__version__}\n", proc.stderr


def test_build_info_carries_the_same_version() -> None:
    m = Metrics(CollectorRegistry())
    assert m.registry.get_sample_value("rotator_build_info", {"version": rotator.__version__}) == 1


def test_pyproject_reads_the_version_from_the_package() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"], "one source: rotator/__init__.py:__version__"
    assert "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "rotator.__version__"}


def test_pyproject_license_is_an_spdx_expression() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"  # the table form warns on every install
    # PEP 639 string licenses need setuptools 77 or later at build time.
    [req] = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    assert req == "setuptools>=77"
