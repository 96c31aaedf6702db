"""What ``rotator history`` shows an auditor: every key of a credential, still held or gone, with
its nonce, masked id, issue, publish, retire and revoke times, how it went, the reason and trigger
of the rotation that made it and the worker that did it. Read from the state alone (the records are
written where keys change hands, in the same compare-and-set: :mod:`rotator.rotation`); never a
secret. Rows as ``--json`` gives them; :func:`render` lays them out within 100 columns.
"""

from __future__ import annotations

import datetime
from typing import Any

from rotator.model import CredentialState, Key, KeyRecord
from rotator.status import WIDTH, _short_iso, _wrap, iso

_TIMES = ("issued_at", "published_at", "retired_at", "revoked_at")
#: (header, width) of the table's columns; the worker takes what is left of the line.
_COLUMNS = (("NONCE", 5), ("KEY", 18), ("ISSUED", 20), ("REASON", 10), ("TRIGGER", 15))


def rows(state: CredentialState) -> list[dict[str, Any]]:
    """One row per key the state knows of, by nonce: the keys gone, then those still held."""
    held: list[tuple[str, Key]] = [("retiring", r.key) for r in state.retiring]
    if state.current is not None:
        held.append(("current", state.current))
    if state.pending is not None and state.pending.key is not None:
        held.append(("pending", state.pending.key))
    out = [_row(r, "gone") for r in state.history]
    for role, key in held:
        record = next((r for r in state.provenance if r.names(key)), None)
        if record is None:  # issued before history was kept: what the key itself says
            record = KeyRecord(key.masked, key.nonce, issued_at=key.created_at or None, reason="unrecorded")
        out.append(_row(record, role))
    return sorted(out, key=lambda row: (row["nonce"], row["issued_at"] or 0.0))


def _row(record: KeyRecord, role: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "nonce": record.nonce,
        "key": record.key_prefix,
        "state": role,
        "reason": record.reason,
        "trigger": record.trigger,
        "worker": record.worker,
        "retired_why": record.retired_why,
        "how": record.how,
        "revoked_by": record.revoked_by,
    }
    for name in _TIMES:
        value = getattr(record, name)
        row[name] = value
        row[f"{name}_iso"] = iso(value)
    return row


def since(rows_: list[dict[str, Any]], start: float) -> list[dict[str, Any]]:
    """The rows of keys still held, or with an event at or after ``start``."""
    return [r for r in rows_ if r["state"] != "gone" or max((r[t] or 0.0) for t in _TIMES) >= start]


def parse_since(text: str, now: float) -> float:
    """``7d`` (back from ``now``), ``2026-12-01`` or ``2026-12-01T03:00:00Z`` (UTC unless it says).

    :raises ValueError: neither.
    """
    from rotator.config import parse_duration

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("not a duration back from now (7d) or a date (2026-12-01T03:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def render(name: str, rows_: list[dict[str, Any]], clock: str) -> list[str]:
    """The table: a line per key, and under it what became of it."""
    lines = _wrap(f"{name}: {len(rows_)} key(s), times on {clock}", "")
    widths = [w for _, w in _COLUMNS]
    rest = WIDTH - sum(widths) - 2 * len(widths)
    lines.append(_cells([h for h, _ in _COLUMNS] + ["WORKER"], widths, rest))
    for r in rows_:
        issued = _short_iso(r["issued_at"]) if r["issued_at"] else "unknown"
        cells = [
            str(r["nonce"]),
            r["key"],
            issued,
            r["reason"] or "-",
            r["trigger"] or "-",
            r["worker"] or "-",
        ]
        lines.append(_cells(cells, widths, rest))
        lines += _wrap(_fate(r), " " * 7)
    return lines


def _cells(values: list[str], widths: list[int], rest: int) -> str:
    nonce, *others, worker = values
    cells = [f"{nonce:>{widths[0]}}"] + [f"{v:<{w}}" for v, w in zip(others, widths[1:], strict=True)]
    return "  ".join([*cells, worker[:rest]]).rstrip()


def _fate(r: dict[str, Any]) -> str:
    """``gone; published …; retired … (rotated); revoked … (deleted) by worker-2``"""
    parts = [r["state"]]
    if r["published_at"]:
        parts.append(f"published {_short_iso(r['published_at'])}")
    elif r["retired_why"] == "unverified":
        parts.append("never published (it did not verify)")
    elif r["reason"] == "recovered":
        parts.append("published before the state was lost")
    elif r["state"] != "pending":
        parts.append("published: not recorded")
    if r["retired_at"]:
        parts.append(f"retired {_short_iso(r['retired_at'])} ({r['retired_why'] or '?'})")
    if r["revoked_at"]:
        by = f" by {r['revoked_by']}" if r["revoked_by"] else ""
        parts.append(f"revoked {_short_iso(r['revoked_at'])} ({r['how']}){by}")
    return "; ".join(parts)
