"""``make bench``: every benchmark, side by side with its baseline; prints a table, writes RESULTS.md.

    .venv/bin/python bench/run.py              # all, full size, writes bench/RESULTS.md
    .venv/bin/python bench/run.py --quick      # small sizes, to try the scripts; writes nothing
    .venv/bin/python bench/run.py startup rotation   # only these (full size; writes nothing)

Not part of ``make test``: these are timings, and the test suite asserts no timing. Exit 0 when every
benchmark ran (targets met or not: the table says), 1 when one could not run.
"""

from __future__ import annotations

import datetime
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

import auth_budget
import common
import fleet
import footprint
import replicas
import reports
import rotation
import startup
from common import Row, Section

#: In the order they run: start-up first, while nothing of ours has warmed the machine up.
BENCHMARKS: dict[str, ModuleType] = {
    "startup": startup,
    "rotation": rotation,
    "fleet": fleet,
    "auth_budget": auth_budget,
    "reports": reports,
    "replicas": replicas,
    "footprint": footprint,
}
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
#: Sections of RESULTS.md that these benchmarks do not measure (the image size, recorded from
#: tests/image's build): a run keeps them as they are, before "## Method".
KEPT_SECTIONS = ("## Container image",)


def _ratio(row: Row) -> str:
    return f"{row.ratio:.3f}x" if row.ratio is not None else "-"


def table(sections: list[Section]) -> list[str]:
    lines = [
        "| benchmark | rotator | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for s in sections:
        for r in s.rows:
            met = "yes" if r.ok else "**no**"
            lines.append(f"| {r.name} | {r.measured} | {r.baseline} | {_ratio(r)} | {r.target} | {met} |")
    return lines


def _method(module: ModuleType) -> str:
    doc = (module.__doc__ or "").strip()
    return "\n".join(line.rstrip() for line in doc.splitlines())


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("-")] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"bench: unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr
        )
        return 2
    info = common.machine()
    load_before = common.loadavg()
    started = time.perf_counter()
    print(f"CPU: {info['cpu']}; Python: {info['python']}; load average before: {load_before}", flush=True)
    sections: list[Section] = []
    failed: list[str] = []
    for name in names:
        t = time.perf_counter()
        print(f"-- {name}{' (quick)' if quick else ''} ...", flush=True)
        try:
            section = BENCHMARKS[name].run(quick)
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failed.append(name)
            continue
        sections.append(section)
        for line in table([section])[2:]:
            print(line)
        print(f"   ({time.perf_counter() - t:.0f} s)", flush=True)
    took = time.perf_counter() - started
    load_after = common.loadavg()

    out = [
        "",
        f"CPU: {info['cpu']}",
        f"Python: {info['python']} on {info['os']}; rotator at {info['commit']}",
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}; took {took:.0f} s",
        "",
        *table(sections),
    ]
    for s in sections:
        if s.details:
            out += ["", f"{s.title}:", *[f"- {d}" for d in s.details]]
    missed = [r for s in sections for r in s.rows if not r.ok]
    out += [
        "",
        "Targets missed: "
        + ("none" if not missed else "; ".join(f"{r.name} ({r.measured})" for r in missed)),
    ]
    if failed:
        out.append("Benchmarks that could not run: " + ", ".join(failed))
    print("\n".join(out))

    if not quick and names == list(BENCHMARKS) and not failed:
        write_results(sections, info, load_before, load_after, took)
        print(f"\nwrote {RESULTS.relative_to(common.REPO)}")
    return 1 if failed else 0


def write_results(
    sections: list[Section], info: dict[str, str], load_before: str, load_after: str, took: float
) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc = [
        "# Benchmark results",
        "",
        "The latest full run, written by `make bench` (`.venv/bin/python bench/run.py`); "
        "`bench/run.py --quick` tries the scripts at small sizes and writes nothing.",
        "",
        f"- Run: {now}, {took:.0f} s in all",
        f"- CPU: {info['cpu']}",
        f"- Python: {info['python']} on {info['os']}",
        f"- rotator: commit {info['commit']}",
        f"- Load average (1, 5, 15 min) before the run: {load_before}; after: {load_after} "
        "(the figure after includes the benchmarks' own load; before, it is other work on the machine)",
        "",
        "Every comparison is a ratio of medians against a baseline measured in the same run, the two "
        "sides alternating run by run.",
        "",
        *table(sections),
        "",
        "## Analysis",
        "",
        "ANALYSIS",
        "",
        "## Details of this run",
    ]
    for s in sections:
        doc += ["", f"### {s.title}", "", *[f"- {d}" for d in s.details]]
    doc += kept_sections(RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "")
    doc += ["", "## Method", ""]
    for module in BENCHMARKS.values():
        doc += [f"### {module.__name__}.py", "", _method(module), ""]
    text = "\n".join(doc)
    analysis = Path(__file__).resolve().parent / "analysis.md"
    text = text.replace("ANALYSIS", analysis.read_text().strip() if analysis.exists() else "(none written)")
    RESULTS.write_text(text.rstrip() + "\n")


def kept_sections(previous: str) -> list[str]:
    """The ``KEPT_SECTIONS`` of the previous RESULTS.md, each up to the next ``## `` heading."""
    lines = previous.splitlines()
    out: list[str] = []
    for heading in KEPT_SECTIONS:
        if heading not in lines:
            continue
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        section = lines[start:end]
        while section and not section[-1].strip():
            section.pop()
        out += ["", *section]
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
