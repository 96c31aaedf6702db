"""How ``rotator status`` reads to a person: one table row per credential, its retiring keys, pending
rotation and consumers as indented lines under it, every line within 100 columns.

The rows are the ``--json`` rows (``cli._status``) rendered as they are: anything added to a row can
be added here as a column or a sub-line. Nothing here reads a store or a clock; ``now`` comes with
the rows, on the clock their deadlines were computed on (the CLOB's, DESIGN.md "Time").
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from typing import Any

#: The widest line ``status`` prints: a terminal split in two, a pager, a chat paste.
WIDTH = 100
#: A credential name longer than this gets a line of its own above its row.
NAME_WIDTH = 16
#: (header, width, right-aligned) after the name column.
COLUMNS = (
    ("KEY", 18, False),
    ("NONCE", 5, True),
    ("AGE", 6, True),
    ("NEXT ROTATION", 13, False),
    ("RETIRING", 11, False),
    ("PENDING", 7, False),
    ("CONSUMERS", 9, False),
)

ORPHAN_NOTE = {
    False: "orphaned state: not in the config; retiring keys are still revoked on schedule; "
    "`rotator retire --credential NAME` revokes the rest",
    True: "archived: retired, holds no key (kept for its history and next nonce)",
}


def iso(t: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with milliseconds (``2026-12-01T01:48:10.250Z``)."""
    if t is None:
        return None
    # Rounded to the millisecond as the epoch fields are (isoformat would truncate: 31.611 is
    # 31.6109999... as a float, and would print as 31.610).
    ms = round(t * 1000)
    when = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _short_iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(seconds: float) -> str:
    """A length of time at a glance, rounded down: 45s, 4m12s, 25m, 3h07m, 2d04h."""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def until(deadline: float, now: float, late: str = "overdue") -> str:
    """``in 1h58m``, or ``overdue 3m`` once it has passed."""
    return f"in {duration(deadline - now)}" if deadline >= now else f"{late} {duration(now - deadline)}"


def render(rows: list[dict[str, Any]], now: float, clock: str) -> list[str]:
    """The table, a row per credential with its details under it; ``clock`` says whose clock ``now`` is."""
    lines = _wrap(f"{len(rows)} credential(s) as of {_short_iso(now)} on {clock}", "")
    name_width = min(max([len("CREDENTIAL"), *(len(r["credential"]) for r in rows)]), NAME_WIDTH)
    lines.append(_cells("CREDENTIAL", [h for h, _, _ in COLUMNS], name_width))
    for row in rows:
        name = row["credential"]
        if len(name) > name_width:
            lines.extend(_wrap(name, ""))
            name = ""
        lines.append(_cells(name, _summary(row, now), name_width))
        lines.extend(_details(row, now))
    return lines


def _cells(name: str, values: list[str], name_width: int) -> str:
    cells = [f"{name:<{name_width}}"]
    for (_, width, right), value in zip(COLUMNS, values, strict=True):
        cells.append(f"{value:>{width}}" if right else f"{value:<{width}}")
    return "  ".join(cells).rstrip()


def _summary(row: dict[str, Any], now: float) -> list[str]:
    age = row["age_seconds"]
    if row.get("state_error"):
        nxt = "?"
    elif row["orphaned"]:
        nxt = "never"
    elif row.get("paused"):
        nxt = "paused"
    elif row["next_rotation"] is None:
        nxt = "first pass" if row["key"] is None else "never"  # no key yet: the next pass issues one
    else:
        nxt = until(row["next_rotation"], now)
    retiring = row["retiring"]
    retiring_text = "-"
    if retiring:
        first = min(r["revoke_after"] for r in retiring)
        retiring_text = f"{len(retiring)} " + ("OVERDUE" if first < now else f"in {duration(first - now)}")
    pending = row["pending"]
    pending_text = "-" if pending is None else ("stale" if pending["lease_until"] < now else "yes")
    return [
        row["key"] or "-",
        "-" if row["nonce"] is None else str(row["nonce"]),
        "-" if age is None else duration(age),
        nxt,
        retiring_text,
        pending_text,
        _consumer_summary(row["consumers"]),
    ]


def _consumer_summary(consumers: list[dict[str, Any]] | str) -> str:
    if isinstance(consumers, str):
        return "?"
    live = [c for c in consumers if c["live"]]
    behind = sum(c["holds"] != "current" for c in live)
    return f"{len(live)} ({behind} old)" if behind else str(len(live)) if consumers else "-"


def _details(row: dict[str, Any], now: float) -> list[str]:
    out: list[str] = []
    if row.get("state_error"):
        out += _wrap(f"STATE UNREADABLE: {row['state_error']}", "  ")
    elif row.get("ready") is False:
        out += _wrap(f"NOT READY: {row['problem']} (its passes fail; the others rotate on)", "  ")
    if row["orphaned"]:
        out += _wrap(ORPHAN_NOTE[bool(row["archived"])], "  ")
    if row.get("kind", "trading") != "trading":
        out += _wrap(f"{row['kind']} key, managed with the key of trading credential {row['via']}", "  ")
    out += _pause_details(row.get("paused"), now) + _schedule_details(row.get("schedule"), now)
    for r in sorted(row["retiring"], key=lambda r: r["revoke_after"]):
        out += _wrap(
            f"retiring nonce {r['nonce']} key {r['key']} ({r['reason']}): revoke by "
            f"{_short_iso(r['revoke_after'])}, {until(r['revoke_after'], now)}",
            "  ",
        )
    pending = row["pending"]
    if pending is not None:
        what = f"key {pending['key']}" if pending["key"] else "intent only, no key recorded yet"
        lease = until(pending["lease_until"], now, late="expired")
        if pending["lease_until"] < now:
            lease += " ago: the next pass takes it over"
        out += _wrap(
            f"pending nonce {pending['nonce']} ({what}), started {duration(now - pending['started_at'])} "
            f"ago by {pending['owner']}; lease until {_short_iso(pending['lease_until'])}, {lease}",
            "  ",
        )
    consumers = row["consumers"]
    if isinstance(consumers, str):
        out += _wrap(f"consumers: {consumers}", "  ")
    else:
        for c in consumers:
            seen = f"seen {duration(c['seen_seconds_ago'])} ago" + ("" if c["live"] else " (not live)")
            out += _wrap(f"consumer {c['consumer']:<24} key={c['key']:<18} {c['holds']:<8} {seen}", "  ")
    return out + _audit_details(row.get("audit"), now) + _key_model_details(row.get("key_model"), now)


def _key_model_details(model: dict[str, Any] | None, now: float) -> list[str]:
    """What was learned about the wallet's keys (issue 24): a wallet that keeps one key rotates
    without overlap; new keys' propagation; lapsed keys brought back."""
    if model is None:
        return []
    parts = []
    if model.get("keys") == "one":
        parts.append("keys: one per wallet, rotations publish at once, no overlap")
    elif model.get("keys") == "several":
        parts.append("keys: several per wallet, rotations overlap for grace")
    if model.get("keys") and model.get("at") is not None:
        parts[-1] += f" (by {model.get('by')}, {duration(now - model['at'])} ago)"
    if model.get("propagation"):
        parts.append(f"new keys live after {duration(model['propagation'])}")
    if model.get("revives"):
        parts.append(f"lapsed keys revived, last {duration(now - model['revived_at'])} ago")
    return _wrap("; ".join(parts), "  ") if parts else []


def _pause_details(pause: dict[str, Any] | None, now: float) -> list[str]:
    """``paused by alice@ops-1 2h00m ago, until 2026-12-01 05:00:00Z (in 1h00m): CLOB incident``"""
    if pause is None:
        return []
    until_text = (
        "until resumed"
        if pause["until"] is None
        else f"until {_short_iso(pause['until'])} ({until(pause['until'], now)})"
    )
    text = f"paused by {pause['by']} {duration(now - pause['at'])} ago, {until_text}"
    text += f": {pause['reason']}" if pause["reason"] else ""
    return _wrap(text + " (a rejected key or an emergency still rotates)", "  ")


def _schedule_details(schedule: dict[str, Any] | None, now: float) -> list[str]:
    """``schedule 0 3 * * * Europe/London, window 1h00m: next 2026-12-02 03:00:00Z-04:00:00Z (in 20h)``"""
    if schedule is None:
        return []
    window = "until the next" if schedule["window_seconds"] is None else duration(schedule["window_seconds"])
    text = f"schedule {schedule['cron']} {schedule['timezone']}, window {window}"
    opens, closes = schedule["next_window"], schedule["window_closes"]
    if opens is None:
        text += ": no window ahead"
    elif opens <= now:
        text += (
            f": window open until {_short_iso(closes)} ({until(closes, now)})" if closes else ": window open"
        )
    else:
        text += f": next window {_short_iso(opens)} ({until(opens, now)})"
    if schedule["max_age_seconds"]:
        text += f"; past {duration(schedule['max_age_seconds'])} a key rotates outside any window"
    return _wrap(text, "  ")


def _audit_details(audit: dict[str, Any] | None, now: float) -> list[str]:
    """The last wallet audit (issue 16): unmanaged keys by masked id and nonce, and closed-only."""
    if audit is None:
        return []
    closed = {True: "yes", False: "no", None: "unknown"}[audit["closed_only"]]
    # at 0: no audit yet, only keys a pass found (walked past, or left by a lost state's recovery)
    when = f"audit {duration(now - audit['at'])} ago" if audit["at"] > 0 else "no audit yet"
    out = _wrap(f"{when}: unmanaged={len(audit['unmanaged'])} closed-only={closed}", "  ")
    for u in audit["unmanaged"]:
        nonce = "?" if u["nonce"] is None else u["nonce"]
        seen = f", first seen {duration(now - u['first_seen'])} ago" if u.get("first_seen") else ""
        kind = "" if u.get("kind", "trading") == "trading" else f" kind={u['kind']}"
        out += _wrap(f"unmanaged key={u['key']:<18} nonce={nonce}{kind}{seen}", "  ")
    return out


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent,
        subsequent_indent=indent + "    ",
        break_long_words=True,
        break_on_hyphens=False,
    )
