"""The in-memory Store: the reference implementation of ``rotator/stores/base.py``.

The contract suite (``tests/contract``) runs it beside the real backends, so the unit tests that
drive the rotation over it (``tests/unit/test_rotation.py``) rely on the same contract the real
stores keep. Like the real stores it keeps serialised data (JSON text), so a state that does not
round-trip, or a newer schema, fails here too. Safe to share between threads; several
``MemoryStore`` over one ``MemoryData`` are what several processes over one backend are.

Fault hooks (what the contract's error cases use): :meth:`MemoryData.fail` makes an operation
raise the error a real backend raises for a denied, unreachable or contended store, and
:meth:`MemoryData.corrupt` leaves unreadable bytes where a credential's state and key are kept.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rotator.errors import Corrupt, StoreError, Unavailable, VersionConflict
from rotator.model import Ack, CredentialRef, CredentialState, Key
from rotator.stores.base import (
    PUBLISHED_MEMORY,
    CheckResult,
    LeaseRecord,
    Snapshot,
    Version,
    is_credential_name,
    same_key,
)

#: How often :meth:`MemoryStore.publish` looks again after losing a race, as the remote stores do.
PUBLISH_ATTEMPTS = 5

#: Every operation a fault can be set on ("publish-race": another writer wins every publish race).
OPERATIONS = frozenset(
    {
        "load",
        "save",
        "names",
        "publish",
        "read_published",
        "ever_published",
        "ack",
        "acks",
        "load_lease",
        "save_lease",
        "report_refusal",
    }
)


@dataclass
class MemoryData:
    """What a backend server holds; shared by every :class:`MemoryStore` opened over it."""

    states: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (version, JSON)
    published: dict[str, str] = field(default_factory=dict)  # path -> JSON
    acks: dict[str, dict[str, Ack]] = field(default_factory=dict)  # name -> consumer -> ack
    leases: dict[str, LeaseRecord] = field(default_factory=dict)
    faults: dict[str, StoreError] = field(default_factory=dict)  # operation -> what it raises
    lock: threading.RLock = field(default_factory=threading.RLock)
    history: dict[str, list[str]] = field(default_factory=dict)  # path -> every JSON published there

    def fail(self, error: StoreError, *operations: str) -> None:
        """Make ``operations`` (all of them if none is named) raise ``error`` until :meth:`heal`."""
        for op in operations or OPERATIONS:
            if op not in OPERATIONS | {"publish-race"}:
                raise ValueError(f"no operation {op!r}")
            self.faults[op] = error

    def heal(self) -> None:
        self.faults.clear()

    def corrupt(self, ref: CredentialRef) -> None:
        """Leave bytes that are no state and no key where ``ref``'s state and published key live."""
        with self.lock:
            version = self.states.get(ref.name, (0, ""))[0] + 1
            self.states[ref.name] = (version, "{GARBAGE7F3A")
            self.published[ref.path] = json.dumps({"api_key": "GARBAGE7F3A"})


class MemoryStore:
    """A :class:`~rotator.stores.base.Store` over a :class:`MemoryData` (a fresh one by default)."""

    backend = "memory"

    def __init__(self, data: MemoryData | None = None) -> None:
        self.data = data if data is not None else MemoryData()

    def _fault(self, op: str) -> None:
        error = self.data.faults.get(op)
        if error is not None:
            raise error

    def _slot(self, ref: CredentialRef) -> str:
        """Where ``ref``'s state lives (a hook for tests that drive one credential under any name)."""
        return ref.name

    def _path(self, ref: CredentialRef) -> str:
        return ref.path

    # -- the Store protocol ---------------------------------------------------------------------

    def load(self, ref: CredentialRef) -> Snapshot:
        self._fault("load")
        with self.data.lock:
            stored = self.data.states.get(self._slot(ref))
        if stored is None:
            return Snapshot(CredentialState(), None)
        version, text = stored
        try:
            return Snapshot(CredentialState.from_dict(json.loads(text)), version)
        except ValueError as exc:  # JSONDecodeError, MalformedError and NewerSchema are ValueErrors
            raise Corrupt(f"memory: state of credential {ref.name!r}: {exc}") from None

    def save(self, ref: CredentialRef, state: CredentialState, expected: Version | None) -> Version:
        self._fault("save")
        text = json.dumps(state.to_dict())
        with self.data.lock:
            slot = self._slot(ref)
            stored = self.data.states.get(slot)
            current = stored[0] if stored else None
            if expected != current or isinstance(expected, bool):
                raise VersionConflict(f"memory: credential {ref.name!r}: stored version is {current}")
            version = (current or 0) + 1
            self.data.states[slot] = (version, text)
            return version

    def names(self) -> list[str]:
        self._fault("names")
        with self.data.lock:
            return sorted(n for n in self.data.states if is_credential_name(n))

    def publish(self, ref: CredentialRef, key: Key) -> None:
        self._fault("publish")
        text = json.dumps(key.published())
        for _ in range(PUBLISH_ATTEMPTS):
            with self.data.lock:
                seen = self.data.published.get(self._path(ref))
            if seen == text:
                return
            with self.data.lock:
                if "publish-race" in self.data.faults:
                    continue  # another writer published between the read and this write
                if self.data.published.get(self._path(ref)) != seen:
                    continue
                self.data.published[self._path(ref)] = text
                self.data.history.setdefault(self._path(ref), []).append(text)
                return
        raise Unavailable(f"memory: publish to {ref.path}: lost {PUBLISH_ATTEMPTS} races in a row")

    def read_published(self, ref: CredentialRef) -> Key | None:
        self._fault("read_published")
        with self.data.lock:
            text = self.data.published.get(self._path(ref))
        if text is None:
            return None
        try:
            return Key.from_dict(json.loads(text))
        except ValueError as exc:
            raise Corrupt(f"memory: the published key at {ref.path} is malformed ({exc})") from None

    def ever_published(self, ref: CredentialRef, keys: Sequence[Key]) -> set[str]:
        self._fault("ever_published")
        with self.data.lock:
            texts = list(self.data.history.get(self._path(ref), []))
        seen = [Key.from_dict(json.loads(t)) for t in texts[-PUBLISHED_MEMORY:]]
        return {k.api_key for k in keys if any(same_key(k, s) for s in seen)}

    def ack(self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float) -> None:
        self._fault("ack")
        with self.data.lock:
            self.data.acks.setdefault(self._slot(ref), {})[consumer_id] = Ack(consumer_id, key_prefix, at)

    def report_refusal(
        self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float, refused_at: float, count: int
    ) -> None:
        self._fault("report_refusal")
        report = Ack(consumer_id, key_prefix, at, refused_at, count)
        with self.data.lock:
            self.data.acks.setdefault(self._slot(ref), {})[consumer_id] = report

    def acks(self, ref: CredentialRef) -> list[Ack]:
        self._fault("acks")
        with self.data.lock:
            return list(self.data.acks.get(self._slot(ref), {}).values())

    def load_lease(self, name: str) -> LeaseRecord | None:
        self._fault("load_lease")
        with self.data.lock:
            return self.data.leases.get(name)

    def save_lease(self, name: str, holder: str, until: float, expected: LeaseRecord | None) -> LeaseRecord:
        self._fault("save_lease")
        with self.data.lock:
            if self.data.leases.get(name) != expected:
                raise VersionConflict(f"memory: lease {name!r} changed since it was loaded")
            version = int(expected.version) + 1 if expected is not None else 1
            record = LeaseRecord(holder, until, version)
            self.data.leases[name] = record
            return record

    def check(self, ref: CredentialRef) -> CheckResult:
        # Every operation a pass needs, as the faults set them; reads only, so nothing moves.
        for op in ("load", "save", "names", "publish", "read_published"):
            error: Any = self.data.faults.get(op)
            if error is not None:
                return CheckResult("error", f"{op}: {error}")
        try:
            self.load(ref)
            self.read_published(ref)
        except StoreError as exc:
            return CheckResult("error", str(exc))
        return CheckResult("ready", f"memory: state and published key of {ref.name!r} readable and writable")

    def close(self) -> None:
        pass
