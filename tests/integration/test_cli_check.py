"""``rotator check`` asks the store whether the worker may do what a pass needs (Store.check())."""

from __future__ import annotations

from pathlib import Path

from rotator.sandbox import Sandbox
from tests.harness import Worker


def test_check_reports_the_stores_permissions_per_credential(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    proc = w.run("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok    mm1: store ready: " in proc.stdout, proc.stdout
    assert f"signer {wallet[1]}" in proc.stdout
    assert not (tmp_path / "keys.enc").exists()  # checking wrote no state


def test_check_fails_on_a_store_the_worker_may_not_write(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    # sysfs refuses new files even to root, as a read-only directory refuses them to the worker.
    store = {"backend": "file", "file": {"path": "/sys/rotator-check/keys.enc", "key_env": "TEST_FILE_KEY"}}
    w = Worker(tmp_path, sandbox.url, *wallet, extra={"store": store})
    proc = w.run("check")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL  mm1: store error")]
    assert "/sys/rotator-check" in line
    assert "Traceback" not in proc.stdout + proc.stderr
