"""Write tests/durations.tsv from a pytest run's ``--durations=0`` report: each test's setup, call and
teardown seconds summed, the tests of a second or more, longest first. ``make test`` hands the long
ones out first (tests/conftest.py), so the workers finish together; ``make durations`` refreshes it.

Usage: python scripts/durations.py REPORT [OUT]
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

LINE = re.compile(r"^([0-9.]+)s (setup|call|teardown)\s+(\S.*)$")
#: Tests shorter than this are left out: where they run makes no difference.
FLOOR = 1.0


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    seconds: dict[str, float] = collections.defaultdict(float)
    for line in Path(argv[0]).read_text().splitlines():
        m = LINE.match(line.strip())
        if m:
            seconds[m.group(3)] += float(m.group(1))
    if not seconds:
        print(f"{argv[0]}: no --durations=0 report in it", file=sys.stderr)
        return 1
    out = Path(argv[1] if len(argv) > 1 else "tests/durations.tsv")
    rows = sorted(((s, n) for n, s in seconds.items() if s >= FLOOR), reverse=True)
    out.write_text(
        "# seconds\tnode id: written by scripts/durations.py (make durations); order only, never asserted\n"
        + "".join(f"{s:.1f}\t{n}\n" for s, n in rows)
    )
    print(f"{out}: {len(rows)} tests of {FLOOR:g} s or more, {sum(seconds.values()):.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
