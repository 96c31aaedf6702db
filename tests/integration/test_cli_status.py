"""``rotator status`` for a fleet, read by a person at 3 a.m. and by a script: 60 credentials with
retiring keys, pending rotations (live and stale leases) and consumers, at 100 columns, every deadline
right on the CLOB's clock, never a secret.

The states are written straight into the worker's file store (the rotation that makes them is
tested elsewhere); the CLOB is the sandbox over HTTP with its clock an hour ahead of this host's, so a
status computed on the local clock is off by an hour on every line.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from rotator.model import CredentialRef, CredentialState, Key, Pending, Retiring, Secret, ack_prefix
from rotator.sandbox import Sandbox
from rotator.status import duration
from tests.harness import SECRETS, Worker, find_leaks

OFFSET = 3600.0  # the CLOB's clock is an hour ahead of this host's
DAY, GRACE = 86400.0, 7200.0
LONG_NAME = "market-maker-with-a-rather-long-name-0042"
COLUMNS = ["CREDENTIAL", "KEY", "NONCE", "AGE", "NEXT ROTATION", "RETIRING", "PENDING", "CONSUMERS"]


@dataclass
class Fleet:
    worker: Worker
    states: dict[str, CredentialState]
    acks: dict[str, list[tuple[str, str, float]]]
    secrets: set[str]


def _key(address: str, nonce: int, created_at: float, known: set[str]) -> Key:
    api_key = str(uuid.uuid4())
    secret, passphrase = secrets.token_urlsafe(32), secrets.token_hex(32)
    known.update((api_key, secret, passphrase))
    SECRETS.update((secret, passphrase))
    return Key(api_key, Secret(secret), Secret(passphrase), address, nonce, created_at)


def _retiring(key: Key, revoke_after: float, reason: str) -> Retiring:
    return Retiring(key, retired_at=revoke_after - GRACE, revoke_after=revoke_after, reason=reason)


def _fleet(sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> Fleet:
    w = Worker(tmp_path, sandbox.url, *wallet, rotate_every="24h", grace="2h")
    names = [f"mm-{i:02d}" for i in range(59)] + [LONG_NAME]
    cfg = w.config()
    cfg["credentials"] = [{**cfg["credentials"][0], "name": n, "path": f"polymarket/{n}"} for n in names]
    w.config_path.write_text(yaml.safe_dump(cfg))
    store, address, known = w.store(), wallet[1], {wallet[0]}
    t = time.time() + OFFSET  # now on the CLOB's clock
    states, acks = {}, {}
    for i, name in enumerate(names):
        # Ages from 1h to 30h: some rotations are due, some overdue; whole minutes plus 30 s.
        current = _key(address, 10 + i, t - (3600 + i * 1680 + 30), known)
        retiring: list[Retiring] = []
        if i % 3 == 0:
            old = _key(address, 9 + i, current.created_at - DAY, known)
            retiring.append(_retiring(old, t + 600 + i * 97, "rotated"))
        if i % 9 == 0:  # a revoke deadline already passed (the CLOB refused the DELETE, say)
            older = _key(address, 8 + i, current.created_at - 2 * DAY, known)
            retiring.append(_retiring(older, t - 1000 - i, "emergency"))
        pending = None
        if i % 5 == 0:
            lease = t + 240 + i if i % 10 == 0 else t - 7200 - i  # a live lease, and a dead owner's
            key = _key(address, 11 + i, t - 95, known) if i % 10 == 5 else None
            pending = Pending(11 + i, t - 95 - i, f"worker-{i}.example:4242:1764547200", lease, key, address)
        state = CredentialState(current, pending, tuple(retiring), next_nonce=12 + i, rotations=i)
        ref = CredentialRef(name, f"polymarket/{name}")
        store.save(ref, state, None)
        states[name] = state
        acks[name] = []
        if i % 4 == 0:
            held = retiring[0].key.api_key if retiring else current.api_key
            for consumer, key_id, at in (
                ("bot-a", current.api_key, t - 20),
                ("bot-b", held, t - 45),
                ("bot-gone", current.api_key, t - 5000),
            ):
                store.ack(ref, consumer, ack_prefix(key_id), at)
                acks[name].append((consumer, ack_prefix(key_id), at))
    return Fleet(w, states, acks, known)


def _window(t0: float, t1: float) -> list[float]:
    """CLOB instants status may have read its clock at: the run's span, a second either side (the
    CLOB answers whole seconds), every half second (displays change on whole seconds)."""
    steps = int((t1 - t0 + 2) * 2) + 1
    return [t0 - 1 + k / 2 for k in range(steps + 1)]


def _one_of(actual: str, expect: Callable[[float], str], window: list[float]) -> bool:
    return actual in {expect(now) for now in window}


def _until(deadline: float, now: float, late: str = "overdue") -> str:
    return f"in {duration(deadline - now)}" if deadline >= now else f"{late} {duration(now - deadline)}"


def _short(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _run(fleet: Fleet, *args: str) -> tuple[Any, list[float]]:
    t0 = time.time() + OFFSET
    proc = fleet.worker.run("status", *args)
    t1 = time.time() + OFFSET
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert find_leaks([proc.stdout, proc.stderr], fleet.secrets) == []
    for secret in fleet.secrets:  # every key id, secret and passphrase, whatever its length
        assert secret not in proc.stdout + proc.stderr
    return proc, _window(t0, t1)


def _blocks(lines: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """Credential name -> (its row's cells, its indented detail lines)."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    name, pending_name = "", ""
    for line in lines[2:]:
        if line.startswith("      ") and not pending_name:  # a detail wrapped at 100 columns
            out[name][1][-1] += " " + line.strip()
            continue
        if line.startswith(" ") and not pending_name:
            out[name][1].append(line.strip())
            continue
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 1:  # a name too long for its column, on a line of its own
            pending_name = cells[0]
            continue
        if pending_name:
            name, pending_name = pending_name, ""
            cells = [name, *cells]
        else:
            name = cells[0]
        out[name] = (cells, [])
    return out


def test_status_of_a_fleet_at_100_columns(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    fresh_sandbox.configure(clock_offset=OFFSET)
    fleet = _fleet(fresh_sandbox, tmp_path, wallet)
    proc, window = _run(fleet)
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, [line for line in lines if len(line) > 100]
    assert lines[0].startswith("60 credential(s) as of ") and "on the CLOB's clock" in lines[0], lines[0]
    assert re.split(r"\s{2,}", lines[1]) == COLUMNS
    # The columns line up: every value starts under its header (left) or ends under it (right).
    starts = {h: lines[1].index(h) for h in COLUMNS}
    blocks = _blocks(lines)
    assert list(blocks) == list(fleet.states)  # config order, every credential once

    for name, state in fleet.states.items():
        cells, details = blocks[name]
        cur = state.current
        assert cur is not None
        key, nonce, age, nxt, retiring, pending, consumers = cells[1:]
        assert key == cur.masked and nonce == str(cur.nonce)
        assert _one_of(age, lambda now, c=cur: duration(now - c.created_at), window), (name, age)
        assert _one_of(nxt, lambda now, c=cur: _until(c.created_at + DAY, now), window), (name, nxt)
        if state.retiring:
            first = min(r.revoke_after for r in state.retiring)
            expect = f"{len(state.retiring)} " + ("OVERDUE" if first < window[0] else "in ")
            assert retiring.startswith(expect), (name, retiring)
        else:
            assert retiring == "-"
        if state.pending is None:
            assert pending == "-"
        else:
            assert pending == ("yes" if state.pending.lease_until > window[-1] else "stale"), name
        live = [a for a in fleet.acks[name] if a[2] > window[-1] - 600]
        behind = [a for a in live if a[1] != ack_prefix(cur.api_key)]
        shown = str(len(live)) if fleet.acks[name] else "-"
        assert consumers == (f"{len(live)} ({len(behind)} old)" if behind else shown), (name, consumers)

        # Details: each retiring key's revoke deadline, absolute and relative, soonest first.
        retiring_lines = [d for d in details if d.startswith("retiring ")]
        assert len(retiring_lines) == len(state.retiring)
        for r, line in zip(sorted(state.retiring, key=lambda r: r.revoke_after), retiring_lines, strict=True):
            head, rel = line.rsplit(", ", 1)
            by = _short(r.revoke_after)
            assert head == f"retiring nonce {r.key.nonce} key {r.key.masked} ({r.reason}): revoke by {by}"
            assert _one_of(rel, lambda now, r=r: _until(r.revoke_after, now), window), (name, line)
        pending_lines = [d for d in details if d.startswith("pending ")]
        if state.pending is not None:
            p = state.pending
            [line] = pending_lines
            what = f"key {p.key.masked}" if p.key else "intent only, no key recorded yet"
            assert line.startswith(f"pending nonce {p.nonce} ({what}), started "), line
            assert f"by {p.owner}; lease until {_short(p.lease_until)}, " in line, line
            rel = line.rsplit(", ", 1)[1]
            suffix = " ago: the next pass takes it over" if p.lease_until < window[0] else ""
            assert _one_of(rel, lambda now, p=p, s=suffix: _until(p.lease_until, now, "expired") + s, window)
        else:
            assert pending_lines == []
        consumer_lines = [d for d in details if d.startswith("consumer ")]
        assert [d.split()[1] for d in consumer_lines] == sorted(a[0] for a in fleet.acks[name])
        for d in consumer_lines:
            cid, prefix, _ = next(a for a in fleet.acks[name] if a[0] == d.split()[1])
            holds = "current" if prefix == ack_prefix(cur.api_key) else "retiring"
            held = (
                cur
                if holds == "current"
                else next(r.key for r in state.retiring if ack_prefix(r.key.api_key) == prefix)
            )
            # One masked form everywhere: the key's own mask, whose head is the acknowledgement's.
            assert f"key={held.masked} " in d and f" {holds} " in d and held.masked[:13] == prefix[:13], d
            assert d.endswith("(not live)") == (cid == "bot-gone"), d

    # Golden rows, far from any rounding edge: the first and the long-named last credential.
    first = blocks["mm-00"][0]
    assert first[3:5] == ["1h00m", "in 22h59m"], first
    assert lines[2].startswith("mm-00 ") and lines[2].index("1h00m") + 5 == starts["AGE"] + len("AGE")
    assert blocks[LONG_NAME][0][3:5] == ["1d04h", "overdue 4h32m"], blocks[LONG_NAME]
    assert LONG_NAME in lines  # its own line: the column stays 16 wide for the other 59


def test_status_json_gives_iso_times_beside_epoch_seconds(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    fresh_sandbox.configure(clock_offset=OFFSET)
    fleet = _fleet(fresh_sandbox, tmp_path, wallet)
    proc, window = _run(fleet, "--json")
    rows = {r["credential"]: r for r in json.loads(proc.stdout)}
    assert list(rows) == list(fleet.states)

    def same(epoch: float, text: str) -> bool:
        return abs(datetime.fromisoformat(text).timestamp() - epoch) < 0.001 and text.endswith("Z")

    for name, state in fleet.states.items():
        row, cur = rows[name], state.current
        assert cur is not None
        assert row["clock"] == "clob" and window[0] <= row["as_of"] <= window[-1]  # the CLOB's clock
        assert same(row["as_of"], row["as_of_iso"])
        # The fields scripts already read are all still there.
        assert {"key", "nonce", "address", "age_seconds", "next_rotation", "rotations", "history"} <= set(row)
        assert row["key"] == cur.masked and row["nonce"] == cur.nonce
        assert abs(row["age_seconds"] - (row["as_of"] - cur.created_at)) <= 0.1
        assert row["created_at"] == cur.created_at and same(cur.created_at, row["created_at_iso"])
        assert abs(row["next_rotation"] - (cur.created_at + DAY)) <= 0.1
        assert same(row["next_rotation"], row["next_rotation_iso"])
        assert [(r["nonce"], r["revoke_after"], r["reason"]) for r in row["retiring"]] == [
            (r.key.nonce, r.revoke_after, r.reason) for r in state.retiring
        ]
        for r in row["retiring"]:
            assert same(r["revoke_after"], r["revoke_after_iso"])
        p = state.pending
        if p is None:
            assert row["pending"] is None
        else:
            assert row["pending"] == {
                "nonce": p.nonce,
                "owner": p.owner,
                "key": p.key.masked if p.key else None,
                "started_at": p.started_at,
                "started_at_iso": row["pending"]["started_at_iso"],
                "lease_until": p.lease_until,
                "lease_until_iso": row["pending"]["lease_until_iso"],
                "reason": p.reason,
            }
            assert same(p.started_at, row["pending"]["started_at_iso"])
            assert same(p.lease_until, row["pending"]["lease_until_iso"])
        assert [(c["consumer"], c["ack_prefix"], c["seen_at"]) for c in row["consumers"]] == sorted(
            fleet.acks[name]
        )
        for c in row["consumers"]:
            assert same(c["seen_at"], c["seen_at_iso"])
            assert c["live"] == (c["consumer"] != "bot-gone")


def test_status_without_the_clob_says_whose_clock(tmp_path: Path, wallet: tuple[str, str]) -> None:
    w = Worker(tmp_path, "http://127.0.0.1:9", *wallet)  # discard port: nothing listens
    w.extra = {"clob": {**w.config()["clob"], "timeout": "1s"}}
    w.write_config()
    started = time.monotonic()
    proc = w.run("status")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 15  # one quick ask, not the pass's retry budget
    assert "on this host's clock (the CLOB's did not answer)" in proc.stdout.splitlines()[0]
    [warning] = proc.stderr.strip().splitlines()
    assert warning.startswith("rotator: status: CLOB time unavailable, times are on this host's clock: ")
    as_json = json.loads(w.run("status", "--json").stdout)
    assert as_json[0]["clock"] == "local" and abs(as_json[0]["as_of"] - time.time()) < 15
