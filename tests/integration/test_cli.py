"""The CLI's contract: exit codes, one-line errors naming the field, no traceback, nothing lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.sandbox import Sandbox
from rotator.stores.file import generate_file_key
from tests.harness import Worker, sdk_works


def _bad(worker: Worker, mutate: Any) -> tuple[int, str, str]:
    cfg = worker.config()
    mutate(cfg)
    worker.config_path.write_text(yaml.safe_dump(cfg))
    proc = worker.run("rotate", "--all")
    return proc.returncode, proc.stdout, proc.stderr


def _cred(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg["credentials"][0]  # type: ignore[no-any-return]


CASES = [
    ("unknown key", lambda c: c.update(stor={}), "stor: unknown key"),
    ("unknown backend", lambda c: c["store"].update(backend="s3"), "store.backend"),
    (
        "bad duration",
        lambda c: _cred(c).update(rotate_every="5x"),
        "credentials[mm1].rotate_every: bad duration",
    ),
    ("duplicate names", lambda c: c["credentials"].append(dict(_cred(c))), "duplicate credential name 'mm1'"),
    ("missing field", lambda c: _cred(c).pop("grace"), "credentials[mm1].grace: Field required"),
    ("bad host", lambda c: c["clob"].update(host="ftp://x"), "clob: clob.host must be an http(s) URL"),
    ("signer without env", lambda c: _cred(c)["signer"].pop("env"), "needs signer.env"),
]


@pytest.mark.parametrize(("what", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_exits_2_with_one_line(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str], what: str, mutate: Any, expected: str
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    code, out, err = _bad(w, mutate)
    assert code == 2, (what, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert "Traceback" not in err + out


def _failed_alone(proc: Any, name: str) -> str:
    """A credential whose signer cannot be used: its pass fails (exit 1) with one line naming why;
    not a config error (exit 2), which would stop every other credential too (issue 23)."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    [line] = [x for x in proc.stdout.splitlines() if x.startswith(f"{name}:")]
    assert line.startswith(f"{name}: failed") and "error=(signer) signer " in line, line
    assert "Traceback" not in proc.stdout + proc.stderr
    return str(line)


def test_a_missing_signer_variable_fails_that_credential_in_one_line(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(
        tmp_path, sandbox.url, *wallet, cred_extra={"signer": {"source": "env", "env": "NOT_SET_ANYWHERE"}}
    )
    line = _failed_alone(w.run("rotate", "--all"), "mm1")
    assert line.endswith("error=(signer) signer env NOT_SET_ANYWHERE is not set"), line


def test_malformed_private_key_names_the_source_not_the_value(sandbox: Sandbox, tmp_path: Path) -> None:
    not_a_key = "deadbeef" * 7  # 56 hex chars: close enough to leak if echoed
    w = Worker(tmp_path, sandbox.url, not_a_key, "0x0")
    proc = w.run("rotate", "--all")
    line = _failed_alone(proc, "mm1")
    assert "signer (env TEST_WALLET_KEY): not a private key" in line
    assert not_a_key not in proc.stderr + proc.stdout


def test_signer_file_must_not_be_group_readable(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    keyfile = tmp_path / "wallet.key"
    keyfile.write_text(wallet[0])
    keyfile.chmod(0o644)
    w = Worker(
        tmp_path, sandbox.url, *wallet, cred_extra={"signer": {"source": "file", "path": str(keyfile)}}
    )
    proc = w.run("rotate", "--all")
    assert "chmod 600" in _failed_alone(proc, "mm1")
    keyfile.chmod(0o600)
    assert w.run("rotate", "--all").returncode == 0
    published = w.published()
    assert published is not None and sdk_works(sandbox.url, wallet[0], published)


@pytest.mark.slow
def test_usage_errors_exit_2(sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    assert w.run("rotate").returncode == 2  # neither --all nor --credential
    proc = w.run("rotate", "--credential", "nope")
    assert proc.returncode == 2 and "--credential nope: no such credential" in proc.stderr
    missing = w.run("status")
    assert missing.returncode == 0
    proc = w.run("rotate", "--all")
    assert proc.returncode == 0
    gone = tmp_path / "gone.yaml"
    proc = w.run("status")
    assert proc.returncode == 0 and "mm1" in proc.stdout
    import subprocess
    import sys

    proc2 = subprocess.run(
        [sys.executable, "-m", "rotator.cli", "status", "-c", str(gone)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc2.returncode == 2 and "cannot read config" in proc2.stderr
    (tmp_path / "bad.yaml").write_text("clob: [unclosed")
    proc3 = subprocess.run(
        [sys.executable, "-m", "rotator.cli", "status", "-c", str(tmp_path / "bad.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc3.returncode == 2 and "not valid YAML" in proc3.stderr and "Traceback" not in proc3.stderr


def test_wrong_file_store_key_fails_clearly_and_loses_nothing(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    w.rotate()
    before = (tmp_path / "keys.enc").read_bytes()
    good_key = w.file_key
    w.file_key = generate_file_key()
    proc = w.run("rotate", "--all", "--force")
    assert proc.returncode == 1
    assert "cannot decrypt" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "keys.enc").read_bytes() == before  # nothing lost, nothing reset
    w.file_key = good_key
    published = w.published()
    assert published is not None and sdk_works(sandbox.url, wallet[0], published)


@pytest.mark.slow
def test_status_json_shows_no_secrets(sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> None:
    import json

    w = Worker(tmp_path, sandbox.url, *wallet)
    w.rotate()
    w.rotate("--force")
    proc = w.run("status", "--json")
    assert proc.returncode == 0
    rows = json.loads(proc.stdout)
    assert rows[0]["credential"] == "mm1" and rows[0]["nonce"] == 1 and len(rows[0]["retiring"]) == 1
    published = w.published()
    assert published is not None
    assert published.api_secret.reveal() not in proc.stdout
    assert published.api_key not in proc.stdout  # only the masked id
    assert rows[0]["key"] == published.masked and published.api_key[-4:] in published.masked


def test_check_reports_store_signer_and_clock(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    proc = w.run("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"signer {wallet[1]}" in proc.stdout and "clock skew" in proc.stdout
    w.clob_url = "http://127.0.0.1:9"  # nothing listens there
    w.write_config()
    proc = w.run("check")
    assert proc.returncode == 1 and "FAIL  clob" in proc.stdout
