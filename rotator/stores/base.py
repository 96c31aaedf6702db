"""The store port: where rotation state is kept and where consumers find the published key.

One Protocol, N stores (file, vault, aws). The contract lives in these docstrings; the
implementations do not repeat it. One contract test suite (``tests/contract``) runs against all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from rotator.model import Ack, CredentialRef, CredentialState, Key

#: What a credential name looks like (``config.py`` validates names with the same pattern). Stores keep
#: other records beside the states (the leader lease ``_leader``, Vault's ``<name>/acks/``): their names
#: never match, so :meth:`Store.names` can tell states from them.
CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def is_credential_name(name: str) -> bool:
    return CREDENTIAL_NAME.fullmatch(name) is not None


#: How many keys published at one path :meth:`Store.ever_published` remembers where the backend keeps
#: no versions of its own (the file store): enough for a lost state's recovery, which looks at most
#: a few nonces below the published key.
PUBLISHED_MEMORY = 16


def key_digest(key: Key) -> str:
    """A one-way digest of the whole triplet, for remembering that a key was published without
    keeping its secret: SHA-256 over the id, the secret and the passphrase (the secret alone has
    256 random bits)."""
    parts = (key.api_key, key.api_secret.reveal(), key.api_passphrase.reveal())
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def same_key(a: Key, b: Key) -> bool:
    """The same triplet (constant-time on the secrets)."""
    return a.api_key == b.api_key and a.api_secret == b.api_secret and a.api_passphrase == b.api_passphrase


#: Opaque version of a credential's stored state. ``None`` means "nothing stored yet".
Version = int | str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of one credential as read, with the version a compare-and-set must name."""

    state: CredentialState
    version: Version | None


#: The name of the leader lease record (rotator/leader.py). Credential names cannot start with
#: ``_``, so a record never collides with a credential's state.
LEADER = "_leader"


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A small, non-secret record beside the states: who holds a lease and until when.

    ``until`` is the holder's wall-clock deadline, for people (and older replicas): no replica
    compares it with its own clock. A standby judges the record by whether (holder, until,
    version) changes (rotator/leader.py), so every write must change what :meth:`Store.load_lease`
    returns. ``until <= 0`` is a released record. ``version`` is what the next
    :meth:`Store.save_lease` must be given to change it.
    """

    holder: str
    until: float
    version: Version


#: What :meth:`Store.check` found: ``ready`` (every permission the worker needs is there),
#: ``unknown`` (nothing failed, but the backend cannot tell without changing what consumers see),
#: ``error`` (something the worker needs is refused, unreachable or unreadable).
CheckStatus = Literal["ready", "unknown", "error"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The answer of :meth:`Store.check`, as external-secrets' ``Validate``: a status and one line."""

    status: CheckStatus
    message: str


class Store(Protocol):
    """Keeps each credential's rotation state and its published key.

    What escapes, and nothing else (every one a :class:`rotator.errors.StoreError`):

    - from every method: :class:`~rotator.errors.Unavailable` (unreachable, sealed, throttled, or
      lost every compare-and-set race it retried: retry later), :class:`~rotator.errors.AccessDenied`
      (this identity may not), :class:`~rotator.errors.Corrupt` (the stored data cannot be read),
      and a plain :class:`~rotator.errors.StoreError` for a store set up wrongly, which retrying
      does not fix (a Vault mount that is not KV v2, an AWS secret scheduled for deletion, a closed
      store);
    - :class:`~rotator.errors.VersionConflict` only from :meth:`save` and :meth:`save_lease`, whose
      caller names the version it expects and can load again;
    - :class:`~rotator.errors.NotFound` only where a method says so (:meth:`ack`).

    The same situation raises the same error on every backend (``tests/contract`` proves it).
    The state holds secrets: stores keep it where consumers cannot read it.
    """

    #: ``file`` | ``vault`` | ``aws``: the ``backend`` label of store metrics.
    backend: str

    def load(self, ref: CredentialRef) -> Snapshot:
        """Read the rotation state of ``ref``.

        :returns: the state and its version; an empty ``CredentialState()`` and ``version=None``
            when nothing was stored for ``ref`` yet.
        """
        ...

    def save(self, ref: CredentialRef, state: CredentialState, expected: Version | None) -> Version:
        """Write ``state`` if and only if the stored version is still ``expected``.

        ``expected=None`` means "only if nothing is stored yet". Atomic: a crash leaves either the
        old or the new state, never a mix.

        :returns: the new version.
        :raises VersionConflict: another writer got there first; nothing was written.
        """
        ...

    def names(self) -> list[str]:
        """The names of every credential whose state this store holds, sorted.

        Configured or not: a credential removed from the config keeps its state (and its keys) until
        an operator retires it, and the worker finds it here. Records that are not states (leases,
        acknowledgements, names that :func:`is_credential_name` refuses) are not listed.
        """
        ...

    def publish(self, ref: CredentialRef, key: Key) -> None:
        """Make ``key`` the one consumers read at ``ref.path``.

        Called only with a verified key, after the state naming it as ``current`` was saved.
        Idempotent: publishing the same key again changes nothing consumers can see.

        :raises Unavailable: other writers kept publishing between this call's read and its write,
            so it gave up after a few tries (Vault's ``cas``, AWS's label move). Never
            :class:`~rotator.errors.VersionConflict`: the caller names no version, so there is
            nothing for it to reload; the state already names the key, and the next pass publishes
            it again (DESIGN.md, step 1).
        """
        ...

    def read_published(self, ref: CredentialRef) -> Key | None:
        """The key consumers currently read at ``ref.path``, or ``None`` if none was published."""
        ...

    def ever_published(self, ref: CredentialRef, keys: Sequence[Key]) -> set[str]:
        """The ids of those of ``keys`` that this store itself published at ``ref.path``, the very
        triplet (id, secret, passphrase), among the last :data:`PUBLISHED_MEMORY` keys published
        there, as far as the backend keeps them: AWS the published secret's versions (labelled or
        not, until Secrets Manager deletes them), Vault the KV versions its ``max_versions`` keeps,
        the file store digests of them. A key found live on a wallet whose state was lost is
        provably the worker's own when its store published it.

        Reads only; an empty set when nothing was published at ``ref.path`` or ``keys`` is empty.
        """
        ...

    def ack(self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float) -> None:
        """Record that consumer ``consumer_id`` has loaded the key whose masked id is ``key_prefix``.

        Called by consumers (``rotator.consumer``) with their own, narrower identity: the store puts
        the acknowledgement where a consumer policy may write and nothing else (Vault: a path per
        consumer under the state prefix; AWS: a ``rotator-ack:<consumer_id>`` tag of the published
        secret; file: beside the state). Replaces that consumer's previous acknowledgement; never
        touches the state or its version, so it cannot make a worker's compare-and-set fail.
        ``consumer_id`` matches :data:`rotator.model.CONSUMER_ID`.

        :raises NotFound: (AWS) nothing is published at ``ref.path`` yet, so there is nothing to tag.
        """
        ...

    def report_refusal(
        self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float, refused_at: float, count: int
    ) -> None:
        """Acknowledge ``key_prefix`` as :meth:`ack` does (same place, same permission, replacing that
        consumer's previous acknowledgement) and report that the CLOB refused that key ``count``
        times since ``refused_at`` while it was the published one: :meth:`acks` returns it as an
        :class:`~rotator.model.Ack` with ``refused_at`` and ``refusals`` set. A later :meth:`ack` by
        the same consumer replaces the report (AWS: a report naming another key than the consumer's
        acknowledgement is not returned). ``count`` is positive.

        :raises NotFound: (AWS) nothing is published at ``ref.path`` yet, so there is nothing to tag.
        """
        ...

    def acks(self, ref: CredentialRef) -> list[Ack]:
        """Every consumer's latest acknowledgement (or refusal report) for ``ref``, in no particular
        order ([] if none).

        Entries that cannot be parsed are skipped (a consumer wrote them, and it must not be able to
        stop revocations by writing garbage), so this raises only the errors every method may raise.
        """
        ...

    def load_lease(self, name: str) -> LeaseRecord | None:
        """The lease record ``name`` (for example :data:`LEADER`), or ``None`` if none was written."""
        ...

    def save_lease(self, name: str, holder: str, until: float, expected: LeaseRecord | None) -> LeaseRecord:
        """Write the lease record ``name`` if and only if it is still ``expected`` (as loaded).

        ``expected=None`` means "only if no record exists yet". A write by ``expected.holder``
        (a renewal or a release) only moves ``until``; a write by another holder is a takeover.
        Every write changes what another store's :meth:`load_lease` returns (a standby sees a
        renewal only that way), and a release (``until`` 0) loads as written.
        Called every few seconds by a daemon, so it must stay cheap: it never rewrites the states
        (file: a sidecar JSON file) and never adds a secret version on a renewal (AWS: a tag).

        :returns: the record as now stored, with the version the next write must name.
        :raises VersionConflict: the record changed since ``expected`` was loaded; nothing was written.
        """
        ...

    def check(self, ref: CredentialRef) -> CheckResult:
        """Whether this store lets the worker do what a pass over ``ref`` needs: read and write the
        state (and its prefix's listing), read and write the published key at ``ref.path``.

        Changes nothing any consumer or worker sees: it reads, and asks the backend about write
        permissions where it can (Vault: ``sys/capabilities-self``); where it cannot without
        writing (AWS has no dry run), the answer is ``unknown``, never a guess of ``ready``.
        Never raises a :class:`~rotator.errors.StoreError`: a failure is an ``error`` result whose
        message names what failed.
        """
        ...

    def close(self) -> None:
        """Release connections and file handles. Idempotent."""
        ...


def read_check(store: Store, ref: CredentialRef) -> CheckResult | None:
    """The read half of :meth:`Store.check` that every backend shares: the state, the published key
    and the listing of states. An ``error`` result naming what failed, or None when all three read."""
    from rotator.errors import StoreError

    try:
        store.load(ref)
        store.read_published(ref)
        store.names()
    except StoreError as exc:
        return CheckResult("error", str(exc))
    return None
