"""The image, built once per session by scripts/build-image (what `make image` runs) and run by a
container engine: Docker when its daemon answers, else podman (with runc and scripts/containers.conf,
as reference/test-tooling.md measured). Without an engine the tests skip locally and fail in CI.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require
from tests.harness import OUTPUTS

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "build-image"

#: How the chart runs the worker (values.yaml podSecurityContext/securityContext, the tmp emptyDir).
AS_THE_CHART_RUNS_IT = (
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--user",
    "10001:10001",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
)


@dataclass(frozen=True)
class Engine:
    name: str  # docker | podman

    @property
    def argv0(self) -> list[str]:
        if self.name == "podman" and shutil.which("runc"):
            return ["podman", "--runtime", "runc"]  # crun refuses hybrid cgroups
        return [self.name]

    def env(self, extra: Mapping[str, str] = {}) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("CONTAINERS_CONF", str(ROOT / "scripts" / "containers.conf"))
        env.update(extra)
        return env

    def command(
        self,
        image: str,
        args: Sequence[str],
        *,
        flags: Sequence[str] = AS_THE_CHART_RUNS_IT,
        env_names: Sequence[str] = (),
        name: str | None = None,
    ) -> list[str]:
        """``run`` on the host network; environment variables are passed by name only (``--env NAME``
        takes the value from the engine's own environment), so no value is ever in a process's args."""
        argv = [*self.argv0, "run", "--rm", "--network", "host"]
        if self.name == "podman" and "--read-only" in flags:
            # podman's --read-only adds writable tmpfs on /run, /var/tmp and /tmp; Kubernetes does not.
            argv.append("--read-only-tmpfs=false")
        if name is not None:
            argv += ["--name", name]
        for n in env_names:
            argv += ["--env", n]
        return [*argv, *flags, image, *args]

    def run(
        self,
        image: str,
        args: Sequence[str],
        *,
        flags: Sequence[str] = AS_THE_CHART_RUNS_IT,
        env: Mapping[str, str] = {},
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(image, args, flags=flags, env_names=sorted(env)),
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        OUTPUTS.extend((proc.stdout, proc.stderr))
        return proc

    def inspect(self, image: str, template: str) -> str:
        out = subprocess.run(
            [*self.argv0, "image", "inspect", "--format", template, image],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout.strip()

    def stop(self, name: str) -> None:
        subprocess.run(
            [*self.argv0, "stop", "--time", "5", name],
            env=self.env(),
            capture_output=True,
            timeout=60,
            check=False,
        )

    def unique_name(self) -> str:
        return f"rotator-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def engine() -> Engine:
    proc = subprocess.run([str(BUILD), "--engine"], capture_output=True, text=True, timeout=60, check=False)
    require(
        proc.returncode == 0,
        "a container engine: neither docker (with a running daemon) nor podman (apt-get install podman runc)",
    )
    assert proc.returncode == 0, proc.stderr
    return Engine(proc.stdout.strip())


@dataclass(frozen=True)
class Built:
    ref: str
    seconds: float  # the build's wall time (near 0 when an unchanged image was reused)


@pytest.fixture(scope="session")
def image(engine: Engine) -> Built:
    """Built once per session; scripts/build-image reuses an image whose sources and base are unchanged."""
    started = time.monotonic()
    # One build at a time on this machine: `make test` runs several xdist workers, each with its own
    # session; the first builds, the others wait here and then reuse the unchanged image.
    lock = Path(tempfile.gettempdir()) / "rotator-image-build.lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.run(
            [str(BUILD)], env=engine.env({"ENGINE": engine.name}), capture_output=True, text=True, timeout=900
        )
    if proc.returncode != 0:
        pytest.fail(f"scripts/build-image exited {proc.returncode}:\n{proc.stderr[-4000:]}", pytrace=False)
    return Built(proc.stdout.strip().splitlines()[-1], time.monotonic() - started)


@pytest.fixture
def container_name(engine: Engine) -> Iterator[str]:
    """A name for a container the test starts in the background; stopped at the end in any case."""
    name = engine.unique_name()
    yield name
    engine.stop(name)
