"""Issue 23, the decisions and the state they write, over the in-memory ports of test_rotation:
schedules and windows (:func:`rotation_reason`, :func:`next_rotation`), CronJob start-up jitter,
pauses, the per-key history, a state restored from a backup, and a credential whose signer cannot
be used. Real processes and real stores run the same in tests/integration/test_day2_*.py.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from rotator.metrics import Metrics
from rotator.model import (
    STATE_FORMAT,
    STATE_SCHEMA,
    CredentialState,
    KeyRecord,
    Pause,
    mask,
)
from rotator.rotation import Policy, Rotator, next_rotation, one_shot_slack, rotation_reason
from rotator.schedule import Schedule
from tests.unit.test_rotation import REF, Clock, FakeClob, MemoryStore, Wallet, key


@pytest.fixture(name="world")
def _world() -> tuple[Clock, MemoryStore, FakeClob, Rotator]:
    clock = Clock()
    store = MemoryStore()
    clob = FakeClob(clock)
    rot = Rotator(
        store, clob, Metrics(), clock=clock, sleep=clock.sleep, owner="me:1:1", alive=lambda o: False
    )
    return clock, store, clob, rot


HOUR, DAY = 3600.0, 86400.0
# 2026-12-07 is a Monday; times below are UTC unless a zone says otherwise.
MONDAY = datetime(2026, 12, 7, tzinfo=UTC).timestamp()
DAILY = Schedule.parse("0 3 * * *", "UTC", HOUR)
BASE = Policy(rotate_every=DAY, grace=900.0, verify_timeout=5.0, min_grace=60.0, consumer_ttl=600.0)
SCHEDULED = replace(BASE, schedule=DAILY)


def at(day: int, hour: float) -> float:
    return MONDAY + day * DAY + hour * HOUR


def state_made(created: float, **kw: object) -> CredentialState:
    return CredentialState(current=key(1, created), next_nonce=2, **kw)  # type: ignore[arg-type]


# -- schedules and windows: the pure decision ----------------------------------------------------
@pytest.mark.parametrize(
    ("created", "now", "expected"),
    [
        # Made at Monday's window (5 s in); Tuesday's run starts 1 s after 03:00, its key 4 s younger
        # than rotate_every: due all the same (it would pass rotate_every before Wednesday's window).
        (at(0, 3 + 5 / 3600), at(1, 3 + 1 / 3600), "schedule"),
        (at(0, 3 + 5 / 3600), at(1, 3.99), "schedule"),  # late in the window: still
        (at(0, 3 + 5 / 3600), at(1, 4.01), None),  # the window closed: wait for Wednesday's
        (at(0, 3 + 5 / 3600), at(1, 2.5), None),  # before it opens
        (at(1, 3 + 5 / 3600), at(1, 3.5), None),  # made in this window: once per window
        # Made mid-Monday (say, by an emergency): it would pass rotate_every on Tuesday 15:00,
        # mid-session, before Wednesday's window: so it rotates in Tuesday's, 12 h old.
        (at(0, 15), at(1, 3.2), "schedule"),
        (at(0, 3), at(2, 2), None),  # 47 h old, between windows, under max_age (48 h): waits
        (at(0, 3), at(2, 3.1), "max-age"),  # past 2 x rotate_every: rotates, window or not
        (at(0, 3), at(2, 5), "max-age"),
    ],
)
def test_a_scheduled_key_rotates_in_its_window_whatever_the_start_up_jitter(
    created: float, now: float, expected: str | None
) -> None:
    assert rotation_reason(state_made(created), now, SCHEDULED) == expected


def test_a_key_is_replaced_in_the_last_window_before_it_would_reach_rotate_every() -> None:
    # rotate_every stays the most a key lives while every window is served: hourly windows and a
    # 24 h key rotate in the window just before it turns 24 h old, never once it is past that.
    hourly = replace(BASE, schedule=Schedule.parse("0 * * * *", "UTC", 600.0))
    state = state_made(at(0, 3 + 5 / 3600))
    assert [h for h in range(4, 28) if rotation_reason(state, at(0, h + 0.05), hourly)] == [27]
    assert next_rotation(state, at(0, 12), hourly) == at(1, 3)
    # A window missed (the worker was down): the key waits for the next one, up to max_age.
    assert rotation_reason(state, at(1, 3.5), hourly) is None  # 03:10 closed it
    assert rotation_reason(state, at(1, 4.05), hourly) == "schedule"


def test_one_rotation_per_window_even_for_a_key_shorter_lived_than_the_schedule() -> None:
    hourly_key = replace(SCHEDULED, rotate_every=HOUR, max_age=30 * HOUR)
    made_in_window = state_made(at(1, 3 + 5 / 3600))
    assert rotation_reason(made_in_window, at(1, 3.5), hourly_key) is None  # not again in this window
    assert rotation_reason(made_in_window, at(2, 3.01), hourly_key) == "schedule"  # the next one


def test_forced_emergency_bootstrap_never_wait_for_a_window() -> None:
    state = state_made(at(0, 3))
    outside = at(0, 12)
    assert rotation_reason(state, outside, SCHEDULED, force_nonce=1) == "forced"
    assert rotation_reason(state, outside, SCHEDULED, force_nonce=1, emergency=True) == "emergency"
    assert rotation_reason(CredentialState(), outside, SCHEDULED) == "bootstrap"


def test_windows_follow_the_time_zone_across_daylight_saving() -> None:
    london = Schedule.parse("0 3 * * *", "Europe/London", HOUR)
    # 2026-03-29: the clocks go forward at 01:00 UTC; 03:00 London is 02:00 UTC from then on.
    before = datetime(2026, 3, 28, 3, 30, tzinfo=UTC).timestamp()
    after = datetime(2026, 3, 30, 2, 30, tzinfo=UTC).timestamp()
    assert london.window_at(before) is not None and london.window_at(after) is not None
    assert london.window_at(datetime(2026, 3, 30, 3, 30, tzinfo=UTC).timestamp()) is None


def test_a_schedule_and_its_gaps() -> None:
    weekdays = Schedule.parse("0 9 * * 1-5", "UTC", 1800.0)
    assert weekdays.longest_gap(MONDAY) == 3 * DAY  # Friday 09:00 to Monday 09:00
    assert Schedule.parse("*/15 * * * *").longest_gap(MONDAY) == 900.0
    assert Schedule.parse("0 3 * * 0").longest_gap(MONDAY) == 7 * DAY
    opened, closes = weekdays.next_window(at(5, 12))  # Saturday noon: next is Monday 09:00
    assert (opened, closes) == (at(7, 9), at(7, 9.5))
    nowindow = Schedule.parse("0 3 * * *")  # no window: until the next scheduled time
    assert nowindow.window_at(at(0, 23)) == (at(0, 3), at(1, 3))
    for bad, tz in (
        ("0 25 * * *", "UTC"),
        ("* * *", "UTC"),
        ("0 3 * * *", "Mars/Olympus"),
        ("0 3 1 * 1", "UTC"),
    ):
        with pytest.raises(ValueError):
            Schedule.parse(bad, tz)


@pytest.mark.parametrize(
    ("cron", "fires"),
    [
        ("0 9 * * 1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),  # crontab numbers weekdays from Sunday
        ("0 9 * * 0", ["Sun"]),
        ("0 9 * * 7", ["Sun"]),
        ("0 9 * * 5-7", ["Fri", "Sat", "Sun"]),
        ("0 9 * * */2", ["Sun", "Tue", "Thu", "Sat"]),
        ("0 9 * * mon-fri", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("@weekly", ["Sun"]),
    ],
)
def test_weekdays_mean_what_a_kubernetes_cronjob_reads(cron: str, fires: list[str]) -> None:
    """APScheduler 3.x counts weekdays from Monday; a CronJob's schedule, from Sunday."""
    schedule = Schedule.parse(cron)
    t, seen = MONDAY - 1, []
    for _ in range(len(fires)):
        t = schedule.next_time(t)  # type: ignore[assignment]
        seen.append(datetime.fromtimestamp(t, UTC).strftime("%a"))
    assert sorted(seen) == sorted(fires)


# -- CronJob start-up jitter: a CronJob whose period is rotate_every rotates on every run ---------
@pytest.mark.parametrize("period", [20.0, 60.0, 900.0, DAY])
def test_a_cronjob_on_the_period_of_rotate_every_rotates_on_every_run(period: float) -> None:
    rng = random.Random(period)
    policy = replace(BASE, rotate_every=period, due_slack=one_shot_slack(period))
    state = CredentialState()
    rotated = 0
    for run in range(10):
        started = run * period + rng.uniform(0.0, 2.0) + rng.uniform(0.2, 0.6)  # pod start + Python
        reason = rotation_reason(state, started, policy)
        assert reason == ("bootstrap" if run == 0 else "due"), (run, started, state)
        # The key is stamped once made: after the run's own reads and the create.
        state = state_made(started + rng.uniform(0.1, 1.0))
        rotated += 1
    assert rotated == 10
    # Without the slack (the daemon, which passes every tick), the same runs rotate every other time.
    daemon = replace(policy, due_slack=0.0)
    assert rotation_reason(state_made(period + 1.0), 2 * period + 0.5, daemon) is None


# -- the simulated week: rotations only inside windows, but a rejected key and an emergency --------
@pytest.mark.slow
def test_a_week_of_passes_rotates_only_in_windows_except_rejected_and_emergency(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    policy = replace(SCHEDULED, grace=600.0, due_slack=one_shot_slack(DAY))
    clock.now = at(0, 3.5)  # first pass inside Monday's window
    made: list[tuple[float, str]] = []
    for step in range(int(7 * DAY / 300)):
        now = clock.now
        if step == 500:  # Tuesday, mid-session: the CLOB refuses the current key
            del clob.live[store.state.current.api_key]  # type: ignore[union-attr]
        forced = step == 1200  # Thursday, mid-session: revoke --emergency
        result = rot.run_pass(REF, lambda: Wallet(), policy, force=forced, emergency=forced)  # type: ignore[arg-type, return-value]
        assert result.ok, result
        if result.rotated:
            made.append((now, result.reason or "?"))
        clock.now = now + 300
    outside = [
        (datetime.fromtimestamp(t, UTC).isoformat(), why) for t, why in made if DAILY.window_at(t) is None
    ]
    assert sorted(why for _, why in outside) == ["emergency", "rejected"], outside
    in_window = [(DAILY.window_at(t), why) for t, why in made if DAILY.window_at(t) is not None]
    assert in_window[0][1] == "bootstrap" and {why for _, why in in_window[1:]} == {"schedule"}, made
    assert len(in_window) == len({w for w, _ in in_window}) == 8  # one per window, Monday to Monday
    assert not [
        k
        for k in clob.live
        if k not in {r.key.api_key for r in store.state.retiring} | {store.state.current.api_key}
    ]  # type: ignore[union-attr]


# -- next rotation, as status and rotator_next_rotation_timestamp_seconds show it -------------------
def test_next_rotation_follows_schedule_pause_and_rotate_every() -> None:
    made = at(0, 3 + 5 / 3600)
    assert next_rotation(state_made(made), at(0, 10), SCHEDULED) == at(1, 3)
    assert next_rotation(state_made(made), at(0, 10), BASE) == made + DAY
    overdue = next_rotation(state_made(made), made + 2 * DAY, BASE)
    assert overdue == made + DAY  # in the past: status says "overdue"
    paused = state_made(made, pause=Pause(at(0, 4), "ops", until=at(1, 12)))
    assert next_rotation(paused, at(0, 10), SCHEDULED) == at(2, 3)  # the first window after the pause
    long_paused = state_made(made, pause=Pause(at(0, 4), "ops", until=at(3, 0)))
    assert next_rotation(long_paused, at(0, 10), SCHEDULED) == at(3, 0)  # past max_age by then: at once
    forever = state_made(made, pause=Pause(at(0, 4), "ops"))
    assert next_rotation(forever, at(0, 10), SCHEDULED) is None
    assert next_rotation(CredentialState(), at(0, 10), SCHEDULED) is None


# -- pause ------------------------------------------------------------------------------------------
def test_a_pause_holds_scheduled_rotation_not_revocation_rejection_or_emergency(world, caplog) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    policy = replace(BASE, rotate_every=100.0, grace=10.0)
    assert rot.run_pass(REF, lambda: Wallet(), policy).outcome == "rotated"  # type: ignore[arg-type]
    clock.now += 5
    rot.run_pass(REF, lambda: Wallet(), policy, force=True)  # type: ignore[arg-type]
    old = store.state.retiring[0].key  # type: ignore[union-attr]
    store.state = replace(
        store.state, pause=Pause(clock.now, "alice@ops", until=clock.now + 500, reason="incident")
    )  # type: ignore[arg-type]
    clock.now += 150  # the current key is due, the retiring one past its grace
    result = rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    assert (result.outcome, result.paused, result.revoked) == ("revoked", True, 1)
    assert old.api_key not in clob.live and store.state.current.nonce == 1  # type: ignore[union-attr]
    assert (
        rot.run_pass(REF, lambda: Wallet(), policy, dry_run=True)
        .plan[0]
        .startswith("paused by alice@ops for ")
    )  # type: ignore[arg-type]
    # A key the CLOB rejects rotates anyway, and says so.
    del clob.live[store.state.current.api_key]  # type: ignore[union-attr]
    with caplog.at_level("WARNING", logger="rotator.rotation"):
        result = rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    assert (result.outcome, result.reason, result.paused) == ("rotated", "rejected", True)
    assert (
        "paused by alice@ops (incident)" in caplog.text and "rotating anyway: the CLOB rejects" in caplog.text
    )
    # An emergency too.
    assert rot.run_pass(REF, lambda: Wallet(), policy, force=True, emergency=True).reason == "emergency"  # type: ignore[arg-type]
    gauge = rot.metrics.registry.get_sample_value
    assert gauge("rotator_paused", {"credential": "c1"}) == 1
    # It ends by itself: the key due long since rotates at the first pass after `until`.
    clock.now += 500
    result = rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    assert (result.outcome, result.reason, result.paused) == ("rotated", "due", False)
    assert gauge("rotator_paused", {"credential": "c1"}) == 0


def test_pause_and_resume_write_the_state_with_compare_and_set(world) -> None:  # type: ignore[no-untyped-def]
    from rotator.pause import pause, resume

    clock, store, _clob, rot = world
    store.conflict_on_save = 1  # a pass writes between the pause's read and its write
    written, before = pause(rot, REF, now=clock.now, by="bob@ops", until=None, reason="why")
    assert before is None and store.state.pause == written == Pause(clock.now, "bob@ops", None, "why")  # type: ignore[union-attr]
    assert resume(rot, REF, now=clock.now + 1, by="carol@ops") == written
    assert store.state.pause is None  # type: ignore[union-attr]
    assert resume(rot, REF, now=clock.now + 2, by="carol@ops") is None  # nothing to end: nothing written


# -- history ---------------------------------------------------------------------------------------
def test_history_records_each_key_with_its_reason_trigger_times_and_worker(world) -> None:  # type: ignore[no-untyped-def]
    from rotator.history import rows

    clock, store, clob, rot = world
    policy = replace(BASE, rotate_every=100.0, grace=10.0, probe_every=0.0)
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]  # bootstrap
    clock.now += 101
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]  # due
    clock.now += 5
    rot.run_pass(REF, lambda: Wallet(), policy, force=True)  # type: ignore[arg-type]  # forced
    clock.now += 5
    del clob.live[store.state.current.api_key]  # type: ignore[union-attr]
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]  # rejected (probe)
    clock.now += 5
    rot.run_pass(REF, lambda: Wallet(), policy, force=True, emergency=True)  # type: ignore[arg-type]
    clock.now += 20
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]  # revokes what is left
    found = rows(store.state)  # type: ignore[arg-type]
    assert [(r["nonce"], r["reason"], r["trigger"]) for r in found] == [
        (0, "bootstrap", "schedule"),
        (1, "due", "schedule"),
        (2, "forced", "operator"),
        (3, "rejected", "probe"),
        (4, "emergency", "operator"),
    ]
    assert [r["state"] for r in found] == ["gone"] * 4 + ["current"]
    assert {r["worker"] for r in found} == {"me"}  # the pod/host part of the owner id
    for r in found[:4]:
        assert r["issued_at"] <= r["published_at"] <= r["retired_at"] <= r["revoked_at"], r
        assert r["revoked_by"] == "me"
    assert [r["retired_why"] for r in found[:4]] == ["rotated", "rotated", "rotated", "emergency"]
    # Nonce 2 was deleted behind the worker's back: found dead after its replacement.
    assert [r["how"] for r in found[:4]] == ["deleted", "deleted", "invalidated-by-server", "deleted"]
    assert all(r["key"] == mask(r["key"]) for r in found)  # masked ids only
    assert "secret" not in json.dumps(found)


# -- a state restored from a backup taken before a rotation -----------------------------------------
def test_a_restored_state_recovers_with_one_rotation_said_as_a_restore(world, caplog) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    policy = replace(BASE, rotate_every=100.0, grace=10.0)
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    backup = (store.data.states["c1"], store.data.published["pub/c1"])  # nonce 0 current
    clock.now += 101
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]  # nonce 1 current
    clock.now += 11
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]  # nonce 0 revoked
    k0 = clob.by_nonce[0]
    assert k0.api_key not in clob.live
    store.data.states["c1"], store.data.published["pub/c1"] = backup  # the restore
    clock.now += 1
    with caplog.at_level("INFO", logger="rotator"):
        result = rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    assert (result.outcome, result.reason, result.invalidated) == ("rotated", "restored", 0)
    assert "older than the wallet's keys (restored from a backup?)" in caplog.text
    assert "invalidated-by-server" not in caplog.text
    state = store.state
    assert state.current.nonce == 2 and store.published.nonce == 2  # type: ignore[union-attr]
    assert [r.key.nonce for r in state.retiring] == [1]  # type: ignore[union-attr]  # bots may hold it
    gone = {h.nonce: h.how for h in state.history}  # type: ignore[union-attr]
    assert gone[0] == "gone-before-restore"
    invalidated = rot.metrics.registry.get_sample_value(
        "rotator_old_key_invalidated_total", {"credential": "c1"}
    )
    assert not invalidated  # not counted as the server invalidating a key
    clock.now += 11
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    assert set(clob.live) == {state.current.api_key}  # type: ignore[union-attr]  # no orphan (I3)


# -- a credential whose signer cannot be used --------------------------------------------------------
def test_a_credential_with_a_signer_problem_revokes_what_it_can_and_fails_in_one_line(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    policy = replace(BASE, rotate_every=100.0, grace=10.0)
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    clock.now += 1
    rot.run_pass(REF, lambda: Wallet(), policy, force=True)  # type: ignore[arg-type]
    clock.now += 1
    rot.run_pass(REF, lambda: Wallet(), policy, force=True)  # type: ignore[arg-type]
    # Nonce 1, retiring, is deleted behind the worker's back: its DELETE answers 401, which only the
    # signer (derive) can confirm as gone. Without one it stays retiring, tried again later.
    behind = store.state.retiring[-1].key  # type: ignore[union-attr]
    del clob.live[behind.api_key]
    clock.now += 200  # both retiring keys are past grace, the current one due

    def no_signer() -> Wallet:
        raise AssertionError("a pass with a known signer problem never asks for the signer")

    problem = "signer env NOPE_PK is not set"
    dry = rot.run_pass(REF, no_signer, policy, dry_run=True, problem=problem)  # type: ignore[arg-type]
    assert dry.plan[0] == f"would-fail: {problem}" and dry.outcome == "would-fail" and not dry.ok
    assert dry.plan[1] == "would-rotate (due, age 3m20s) nonce 3"  # what a run with one would do
    result = rot.run_pass(REF, no_signer, policy, problem=problem)  # type: ignore[arg-type]
    assert (result.outcome, result.failed_step, result.error, result.revoked) == (
        "failed",
        "signer",
        problem,
        1,
    )
    state = store.state
    assert state.current.nonce == 2 and set(clob.live) == {state.current.api_key}  # type: ignore[union-attr]
    assert [r.key.nonce for r in state.retiring] == [behind.nonce]  # type: ignore[union-attr]
    gauge = rot.metrics.registry.get_sample_value
    assert gauge("rotator_credential_ready", {"credential": "c1"}) == 0
    assert rot.run_pass(REF, lambda: Wallet(), policy).outcome == "rotated"  # type: ignore[arg-type]
    assert gauge("rotator_credential_ready", {"credential": "c1"}) == 1


# -- the state format: readable by the previous version, newer fields kept ---------------------------
def test_the_state_format_keeps_a_newer_versions_fields_and_refuses_a_newer_schema() -> None:
    state = state_made(5.0, pause=Pause(6.0, "ops", 7.0, "r"))
    data = state.to_dict()
    assert (data["schema"], data["format"]) == (STATE_SCHEMA, STATE_FORMAT) == (3, 5)
    newer = data | {"format": 6, "published_path": "pub/x", "flags": {"a": [1, 2]}}
    read = CredentialState.from_dict(newer)
    assert read.pause == state.pause and read.current == state.current
    saved = read.to_dict()
    assert saved["published_path"] == "pub/x" and saved["flags"] == {"a": [1, 2]}  # kept on save
    with pytest.raises(ValueError, match="schema 6, newer than this rotator reads"):
        CredentialState.from_dict(data | {"schema": 6})


def test_history_records_of_rotator_0_1_are_read_and_matched() -> None:
    legacy = {"key_prefix": "id-0001…xxxx", "nonce": 1, "revoked_at": 9.0, "how": "deleted"}
    state = CredentialState.from_dict({"schema": 3, "history": [legacy]})
    assert state.history == (KeyRecord("id-0001…xxxx", 1, 9.0, "deleted"),)
    with pytest.raises(ValueError, match="field history"):
        CredentialState.from_dict({"schema": 3, "history": [{"key_prefix": "x", "nonce": 1}]})


def test_check_warns_of_windows_further_apart_than_a_key_may_live() -> None:
    from rotator.cli import _schedule_warnings
    from rotator.config import load_settings

    def cred(name: str, cron: str, **kw: object) -> dict[str, object]:
        base = {"name": name, "signer": {"source": "env", "env": "X"}, "path": f"p/{name}"}
        return {**base, "rotate_every": "24h", "grace": "15m", "schedule": {"cron": cron}, **kw}

    settings = load_settings(
        None,
        data={
            "credentials": [
                cred("daily", "0 3 * * *"),
                cred("weekly", "0 3 * * 0"),
                cred("weekdays", "0 3 * * 1-5", max_age="4d"),
            ]
        },
        env={},
    )
    lines = _schedule_warnings(settings)
    assert [line.split(":")[0] for line in lines] == ["warn  weekly", "warn  weekdays"], lines
    assert "more than max_age 2d00h" in lines[0] and "more than rotate_every" in lines[1]


def test_a_refused_key_that_still_exists_is_not_taken_for_a_restore(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    policy = replace(BASE, rotate_every=100.0, grace=10.0)
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    made_by_hand = key(1, clock.now)  # a key at the nonce the state would use next
    clob.by_nonce[1], clob.live[made_by_hand.api_key] = made_by_hand, made_by_hand
    clob.unverifiable.add(0)  # the current key answers 401 yet exists (say, a ban): not gone
    clock.now += 1
    result = rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    assert result.reason == "rejected"
    assert "gone-before-restore" not in {h.how for h in store.state.history}  # type: ignore[union-attr]


def test_a_restore_leaves_the_keys_another_credential_of_the_wallet_holds() -> None:
    from rotator.model import CredentialRef
    from tests.memory_store import MemoryStore as Plain

    clock, store = Clock(), Plain()  # a store of several credentials
    clob = FakeClob(clock)
    rot = Rotator(
        store, clob, Metrics(), clock=clock, sleep=clock.sleep, owner="me:1:1", alive=lambda o: False
    )
    policy = replace(BASE, rotate_every=100.0, grace=10.0)
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    backup = store.data.states["c1"]
    clock.now += 101
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    clock.now += 11
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]  # nonce 0 revoked
    theirs = key(2, clock.now)  # another credential of the wallet holds nonce 2 (start_nonce overlap)
    clob.by_nonce[2], clob.live[theirs.api_key] = theirs, theirs
    store.save(CredentialRef("c2", "pub/c2"), CredentialState(current=theirs, next_nonce=3), None)
    store.data.states["c1"] = backup  # the restore
    clock.now += 1
    result = rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    assert result.reason == "restored"
    state = store.load(REF).state
    assert {r.key.nonce for r in state.retiring} == {1}  # not the sibling's key: not ours to revoke
    assert theirs.api_key in clob.live and state.current is not None and state.current.nonce == 3


def test_a_pause_holds_the_reap_that_follows_an_audit(world) -> None:  # type: ignore[no-untyped-def]
    from rotator.hygiene import audit, reap_after

    clock, store, clob, rot = world
    policy = replace(BASE, rotate_every=1000.0, grace=10.0, start_nonce=2)
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]  # nonce 2 current
    hand = key(0, clock.now)  # made by hand at nonce 0, the SDKs' default: reap reaches it
    clob.by_nonce[0], clob.live[hand.api_key] = hand, hand
    store.state = replace(store.state, pause=Pause(clock.now, "ops"))  # type: ignore[arg-type]
    found = audit(rot, REF)
    assert found.new and found.outcome == "audited", found
    reap_after(rot, REF, lambda: Wallet(), found, start_nonce=2)  # type: ignore[arg-type, return-value]
    assert hand.api_key in clob.live and not [c for c in clob.calls if c.startswith("delete")]
    # Once resumed, the same audit's finding is reaped.
    store.state = replace(store.state, pause=None)  # type: ignore[arg-type]
    reap_after(rot, REF, lambda: Wallet(), found, start_nonce=2)  # type: ignore[arg-type, return-value]
    assert hand.api_key not in clob.live
