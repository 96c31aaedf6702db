"""Operators' pauses of a credential's scheduled rotation (``rotator pause`` and ``resume``).

A pause is data in the credential's state (:class:`rotator.model.Pause`: who, when, until, why),
written with the store's compare-and-set like every other change, so every daemon replica and every
CronJob run sees it at its next read. What it holds back is decided in one place,
:func:`rotator.rotation.rotation_reason`: no scheduled (or bootstrap) rotation while it lasts; a
forced or emergency rotation and a key the CLOB rejects still go through, and retiring keys are
still revoked on time. A pause with an end lapses by itself: nothing needs to clear it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from rotator.errors import Unavailable, VersionConflict
from rotator.model import CredentialRef, CredentialState, Pause
from rotator.rotation import Rotator

audit = logging.getLogger("rotator.audit")

#: Compare-and-set attempts before giving up (a busy daemon writes the state on every rotation step).
_TRIES = 10


def pause(
    rot: Rotator, ref: CredentialRef, *, now: float, by: str, until: float | None, reason: str | None
) -> tuple[Pause, Pause | None]:
    """Pause ``ref`` from ``now`` (the CLOB's clock, as every deadline in the state). Returns the
    pause written and the one it replaced, if one was in force.

    :raises StoreError: the state cannot be read or written (a newer format, the store down, ...).
    """
    record = Pause(at=now, by=by, until=until, reason=reason)
    before = _change(rot, ref, lambda st: replace(st, pause=record), now)
    _log(ref, "paused", by=by, until=until, reason=reason)
    return record, before


def resume(rot: Rotator, ref: CredentialRef, *, now: float, by: str) -> Pause | None:
    """End ``ref``'s pause. Returns the pause it ended, or None when none was in force (nothing is
    written then).

    :raises StoreError: as :func:`pause`.
    """
    ended = _change(rot, ref, lambda st: replace(st, pause=None), now, only_if_paused=True)
    if ended is not None:
        _log(ref, "resumed", by=by, paused_by=ended.by)
    return ended


def _change(
    rot: Rotator,
    ref: CredentialRef,
    change: Callable[[CredentialState], CredentialState],
    now: float,
    *,
    only_if_paused: bool = False,
) -> Pause | None:
    for attempt in range(_TRIES):
        snap = rot.store_call("load", lambda: rot.store.load(ref))
        before = snap.state.paused(now)
        if only_if_paused and before is None:
            return None
        state, version = change(snap.state), snap.version
        try:
            rot.store_call("save", partial(rot.store.save, ref, state, version))
        except VersionConflict:
            time.sleep(0.05 * (attempt + 1))  # a pass wrote meanwhile: read it again
            continue
        return before
    raise Unavailable(f"{ref.name}: the state kept changing under {_TRIES} attempts to write the pause")


def _log(ref: CredentialRef, outcome: str, **fields: object) -> None:
    audit.warning(
        "%s pause %s",
        ref.name,
        outcome,
        extra={"credential": ref.name, "step": "pause", "outcome": outcome, "duration": 0.0, **fields},
    )
