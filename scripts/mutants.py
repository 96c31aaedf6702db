"""Break the safety lines one at a time and check that a test notices (``make mutants``).

Each mutant in ``scripts/mutants.toml`` is one small edit a careless change could make to a line
that carries a guarantee (flip a comparison, drop a check, compute a deadline at the wrong moment),
with the tests that guard that guarantee. For each mutant this applies the edit to the working tree,
runs those tests, and restores the file: the mutant is *caught* when a test fails. The last line
says how many were caught; the exit code is 1 unless every one was.

    python scripts/mutants.py                 # every mutant
    python scripts/mutants.py lease reap      # those whose id starts with one of these
    python scripts/mutants.py --list          # the ids and what each breaks
    python scripts/mutants.py --check         # only whether each still applies (no test is run)
    python scripts/mutants.py --against "tests/unit tests/static -m 'not slow'"   # what `make unit` catches

The edits are made in place, because the suite runs the worker in subprocesses that import the
installed (editable) package: a copy of the tree would not be what they run. So the mutated files
must have no uncommitted changes before it starts (a crash in the middle leaves ``git diff`` showing
the one mutated line, and ``git checkout -- <file>`` undoes it), and the original file is written
back after every mutant, whatever happens (Ctrl-C included). First the guarding tests run once
unmutated: a test that fails on the intact tree would "catch" every mutant and prove nothing.

Only a test *failure* catches a mutant. A run that collects nothing or stops on a collection error
(pytest's exit codes 2-5) says the mutant broke the harness, not that a test noticed: it is reported
as ``BROKEN`` and counts as not caught. A run that outlives :data:`PER_MUTANT_TIMEOUT` (the mutant
made a test hang past pytest-timeout) is killed with its process group and counts as caught, since
the suite would fail on it too, but is shown as ``caught (hung)`` so a slow list can be trimmed.

Not part of ``make test`` (a few minutes, and it edits the tree); run it before a change to a
safety line lands, and add a mutant for each new one. tests/static/test_mutants_list.py checks, in
``make unit``, that every mutant still applies and that every test it names exists.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "scripts" / "mutants.toml"
#: One mutant's tests must finish within this (pytest-timeout ends a single hung test first).
PER_MUTANT_TIMEOUT = 420
#: What each entry must hold.
FIELDS = ("id", "file", "before", "after", "tests", "what")


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    before: str
    after: str
    tests: tuple[str, ...]
    what: str


def load(path: Path = LIST) -> list[Mutant]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, m in enumerate(data.get("mutant", [])):
        # ``after`` may be empty (a deleted check); every other field must say something.
        missing = [f for f in FIELDS if f not in m or (f != "after" and not m[f])]
        unknown = sorted(set(m) - set(FIELDS))
        if missing or unknown:
            name = m.get("id", f"entry {i + 1}")
            raise SystemExit(f"{path.name}: {name}: missing {missing or '-'}, unknown {unknown or '-'}")
        out.append(Mutant(m["id"], m["file"], m["before"], m["after"], tuple(m["tests"]), m["what"]))
    ids = [m.id for m in out]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise SystemExit(f"{path.name}: duplicate ids: {', '.join(sorted(dupes))}")
    return out


def problems(m: Mutant, root: Path = ROOT) -> str | None:
    """Why ``m`` cannot be applied as written (the line moved or changed), or None."""
    path = root / m.file
    if not path.is_file():
        return f"{m.file} does not exist"
    if m.before == m.after:
        return "before and after are the same: nothing would change"
    text = path.read_text(encoding="utf-8")
    count = text.count(m.before)
    if count != 1:
        return f"its line is found {count} times in {m.file} (must be exactly once)"
    mutated = text.replace(m.before, m.after)
    try:
        compile(mutated, str(path), "exec")
    except SyntaxError as exc:
        return f"the mutated file does not compile ({exc.msg}, line {exc.lineno})"
    for test in m.tests:
        test_file = test.split("::", 1)[0]
        if not (root / test_file).is_file():
            return f"its test file {test_file} does not exist"
    return None


def _forget_bytecode(path: Path) -> None:
    # A mutant often keeps the file's size (`<` for `>`), and a write within the same second keeps
    # its mtime: a .pyc of the other version would then pass for this one. Drop them all.
    for pyc in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
        pyc.unlink(missing_ok=True)


_FAILED = re.compile(r"^(FAILED|ERROR) (\S+)", re.MULTILINE)


def pytest(tests: tuple[str, ...] | list[str], *, first_failure: bool) -> tuple[str, str]:
    """Run ``tests``: ("passed" | "failed" | "broken" | "hung", what to show)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-n", "0"]
    if first_failure:
        cmd.append("-x")
    env = {
        **os.environ,
        "CI": "true",  # a missing server fails, never skips into a "pass"
        "PYTHONDONTWRITEBYTECODE": "1",  # no .pyc of a mutated module outlives it
    }
    proc = subprocess.Popen(
        [*cmd, *tests],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its workers and servers are killed with it on a hang
    )
    try:
        out, _ = proc.communicate(timeout=PER_MUTANT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "hung", f"killed after {PER_MUTANT_TIMEOUT}s"
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode == 0:
        return "passed", ""
    if proc.returncode == 1:
        failed = [f"{kind.lower()} {node}" for kind, node in _FAILED.findall(out)]
        return "failed", ", ".join(failed) or out.strip().splitlines()[-1]
    tail = "\n".join(out.strip().splitlines()[-5:])
    return "broken", f"pytest exit code {proc.returncode}:\n{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("only", nargs="*", help="run only mutants whose id starts with one of these")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--check", action="store_true", help="check that each mutant applies, run no test")
    parser.add_argument(
        "--against",
        metavar="PYTEST_ARGS",
        help="run these pytest arguments for every mutant instead of its own (what make unit runs, say)",
    )
    args = parser.parse_args(argv)
    mutants = [m for m in load() if not args.only or any(m.id.startswith(p) for p in args.only)]
    if args.list:
        for m in mutants:
            print(f"{m.id:34} {m.file}: {m.what}")
        return 0
    if not mutants:
        print("no mutant matches", file=sys.stderr)
        return 2
    stale = [(m, p) for m in mutants if (p := problems(m)) is not None]
    for m, p in stale:
        print(f"STALE    {m.id}: {p}")
    if stale:
        print(f"mutants: {len(stale)} of {len(mutants)} no longer apply: update scripts/mutants.toml")
        return 1
    if args.check:
        print(f"mutants: all {len(mutants)} apply")
        return 0
    files = sorted({m.file for m in mutants})
    dirty = subprocess.run(["git", "diff", "--quiet", "--", *files], cwd=ROOT, check=False).returncode
    if dirty:
        print(f"uncommitted changes in {' '.join(files)}: commit or stash them first (mutants edit in place)")
        return 2

    against = tuple(shlex.split(args.against)) if args.against else None
    everything = list(against) if against else sorted({t for m in mutants for t in m.tests})
    print(f"baseline: {len(everything)} test target(s), unmutated", flush=True)
    verdict, detail = pytest(everything, first_failure=False)
    if verdict != "passed":
        print(f"baseline FAILED: the guarding tests do not pass on the intact tree ({detail})")
        return 1

    caught = 0
    started = time.monotonic()
    for m in mutants:
        path = ROOT / m.file
        original = path.read_text(encoding="utf-8")
        t0 = time.monotonic()
        try:
            path.write_text(original.replace(m.before, m.after), encoding="utf-8")
            _forget_bytecode(path)
            verdict, detail = pytest(against or m.tests, first_failure=True)
        finally:
            path.write_text(original, encoding="utf-8")
            _forget_bytecode(path)
        took = time.monotonic() - t0
        if verdict in ("failed", "hung"):
            caught += 1
            how = "caught  " if verdict == "failed" else "caught (hung)"
            print(f"{how} {m.id} ({took:.0f}s): {m.what}\n         by {detail}", flush=True)
        elif verdict == "broken":
            print(f"BROKEN   {m.id} ({took:.0f}s): the tests did not run: {detail}", flush=True)
        else:
            tests = " ".join(against or m.tests)
            print(f"SURVIVED {m.id} ({took:.0f}s): {m.what}\n         tests: {tests}", flush=True)
    print(f"mutants: {caught} of {len(mutants)} caught in {time.monotonic() - started:.0f}s")
    return 0 if caught == len(mutants) else 1


if __name__ == "__main__":
    raise SystemExit(main())
