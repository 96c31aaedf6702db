"""Per-kind key operations (issue 27): the few calls in which a trading, a read-only and a builder key
differ, behind one small strategy the rotation is given by the credential's kind (:func:`ops_for`).

The protocol (rotation.py) is the same for every kind: intent recorded before create, verify before
publish, grace, revoke, confirm gone. What differs is how a key is made, found again after a crash,
checked, revoked and confirmed gone, and who is asked:

==========  ======================  =======================================  ===========================
kind        made / found again by   checked by (verify, probe)               revoked by / gone when
==========  ======================  =======================================  ===========================
trading     L1 create at a nonce /  an L2 read signed with it                its own L2 DELETE / derive
            derive at that nonce    (``clob.probe.endpoint``)                finds nothing at its nonce
readonly    L2 create (the trading  ``GET /data/orders`` with                DELETE naming its id, signed
            key) / the list         ``POLY_READONLY_API_KEY`` +              by the trading key / listed
                                    ``POLY_ADDRESS``                         no more, and refused
builder     L2 create (the trading  ``GET /builder/trades`` with its own     its own ``POLY_BUILDER_*``
            key) / the list         ``POLY_BUILDER_*`` headers               DELETE / ``revokedAt`` set
                                                                             (or unlisted), and refused
==========  ======================  =======================================  ===========================

Read-only and builder keys have no nonce and no derive. A create whose answer was lost (a timeout,
a SIGKILL between the CLOB's answer and the state's write) is found again by listing: the intent
records digests of the keys of its kind listed just before it (``Pending.listed``), and afterwards
a listed key that is in neither that snapshot nor any state of the store on the wallet, and that the
CLOB made (its UUIDv7 id, or a builder key's ``createdAt``) within the create's window, is the
intent's. What that proves and what it does not (docs/kinds.md):

- proven: a key in the snapshot (listed before the intent), held by a state, or made outside the
  window is not the intent's, and is never taken;
- not proven: that a single key inside the window is the intent's rather than one made by hand in
  those same minutes while the intent's own create never landed. Two or more such keys are
  ambiguous: none is taken, each is reported unmanaged, and the intent moves to a new snapshot;
- a builder key found that way is the intent's but its secret is lost with the answer: it can be
  neither published nor revoked by the worker (its DELETE is signed with its own secret). It is kept
  in ``retiring`` (reason ``lost-secret``), reported, and confirmed gone once an operator revokes it
  in Polymarket's web UI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rotator.clob.base import ClobAuth, ListedKey
from rotator.errors import Cancelled, ClobError, Rejected, RotationError, Unauthorized, Unrevocable
from rotator.model import KEY_CLOCK_SLACK, Event, Key, Pending, Secret, listed_digest, minted_at
from rotator.signers.base import Signer


@dataclass(frozen=True, slots=True)
class Obtained:
    """What :meth:`KeyOps.obtain` found for an intent: its ``key`` and ``how`` (``created``,
    ``recovered``, ``recovered-lost-answer``, ``nonce-taken``: someone else's key at the intent's
    nonce, ``lost-secret``: the intent's builder key without its secret, ``ambiguous``: ``others``
    could each be the intent's, so ``key`` is None)."""

    key: Key | None
    how: Event
    others: tuple[Key, ...] = ()


#: The ids every state of the store holds on the wallet (this one's included), and whether another
#: state of the same kind on the wallet has a rotation in flight (whose key may be live unrecorded).
Known = Callable[[], tuple[set[str], bool]]


class KeyOps(Protocol):
    """The key operations of one credential's kind, bound to what authenticates them (a wallet's
    signer for trading keys; the current key of the ``via`` trading credential for the others).

    Every method may raise what :class:`rotator.clob.base.ClobAuth` raises."""

    #: The kind (:data:`rotator.model.KINDS`).
    kind: str
    #: Whether this strategy can ask whether a key still exists (:meth:`lookup`): a trading
    #: credential without a usable signer cannot.
    authority: bool
    #: Whether the rotation's step 7 teaches the wallet's key model (one key or several) from this
    #: kind: only trading keys are said to replace each other (clob-auth.md 12.1).
    learns_model: bool

    def address(self) -> str:
        """The wallet the credential's keys are on."""
        ...

    def snapshot(self) -> tuple[str, ...] | None:
        """What an intent records before its create so that a lost answer can be recovered: digests
        of the keys of this kind listed now; None for a kind that recovers without one (derive)."""
        ...

    def find(self, pending: Pending, known: Known, window: float) -> Obtained | None:
        """Find again the key an earlier create of the intent ``pending`` may have made (after a
        crash, or a lost answer), without creating one: derive at its nonce for a trading key; by
        elimination in the listing for the others (this module's docstring). None: no such key.
        ``known`` and ``window``: as for :meth:`obtain`."""
        ...

    def obtain(self, pending: Pending, fresh: bool, known: Known, window: float) -> Obtained:
        """The key of the intent ``pending``: created now, or, when the intent may already have sent
        its create (``fresh`` False: a resumed intent), found again first. ``window``: seconds after
        the intent's ``started_at`` by which its create was answered or given up. Never creates
        blind after a lost answer.

        :raises RotationError: (step ``create``) no key could be made or found.
        """
        ...

    def verify(self, key: Key) -> None:
        """Use ``key`` as its consumers do, off ``/auth/*``: returns when the CLOB accepts it.

        :raises Unauthorized: it is refused (not yet live, or gone).
        """
        ...

    def delete(self, key: Key) -> None:
        """Revoke ``key``.

        :raises Unauthorized: the request was refused (for a trading or builder key: the key itself
            is gone or not yet live; for a read-only key: the trading key signing it is refused).
        :raises Unrevocable: nothing this worker holds can authenticate it (no request sent).
        """
        ...

    def lookup(self, key: Key) -> Key | None:
        """What the authority holds in ``key``'s place: for a trading key the key at its nonce (maybe
        another), for the others ``key`` while it is listed live, else None. Needs :attr:`authority`."""
        ...

    def confirm_deleted(self, key: Key) -> bool:
        """After a DELETE of ``key`` answered 200: whether it is gone. A check that cannot tell (the
        CLOB hiccuped) confirms nothing."""
        ...

    def at_nonce(self, nonce: int) -> Key | None:
        """The wallet's trading key at CLOB ``nonce`` (derive); None for kinds without nonces, whose
        nonce is rotator's own serial. The rotation's nonce walks (bootstrap, restore, revival,
        recovery below a lost state's key) therefore find nothing for them."""
        ...


def refused(verify: Callable[[Key], None], key: Key) -> bool:
    """Whether ``verify`` finds ``key`` refused (a 401). Anything that cannot tell is not a refusal."""
    try:
        verify(key)
    except Unauthorized:
        return True
    except Cancelled:
        raise  # the worker is stopping: never taken for an answer about a key
    except ClobError:
        return False
    return False


class TradingOps:
    """Trading keys: L1 create and derive at a nonce, L2 probe, their own DELETE (rotation.py's
    original protocol, DESIGN.md steps 2 and 4b)."""

    kind = "trading"
    learns_model = True

    def __init__(self, clob: ClobAuth, signer: Callable[[], Signer] | None, via: Callable[[], Key]) -> None:
        self.clob = clob
        self._signer = signer
        self.authority = signer is not None

    def signer(self) -> Signer:
        if self._signer is None:
            raise RotationError("signer", "no signer for this credential")
        return self._signer()

    def address(self) -> str:
        return self.signer().address

    def snapshot(self) -> tuple[str, ...] | None:
        return None

    def obtain(self, pending: Pending, fresh: bool, known: Known, window: float) -> Obtained:
        """``created`` by this call, ``recovered`` (a resumed intent's derive, or a 400 to its create:
        its own create may have landed before a crash), ``recovered-lost-answer`` (a create whose
        answer was lost: never created again blind, derived), or ``nonce-taken`` (a 400 to a fresh
        intent's first create: someone else's key)."""
        signer, nonce = self.signer(), pending.nonce
        if not fresh and (found := self.find(pending, known, window)) is not None:
            return found
        try:
            return Obtained(self.clob.create_key(signer, nonce), "created")
        except Rejected as exc:
            key = self.clob.derive_key(signer, nonce)
            if key is None:
                raise RotationError("create", str(exc)) from exc
            return Obtained(key, "nonce-taken" if fresh else "recovered")
        except Cancelled:
            raise  # the worker is stopping: never taken for an answer about a key
        except ClobError as exc:
            # The answer may have been lost after the key was made: never create blind, derive.
            key = self.clob.derive_key(signer, nonce)
            if key is None:
                raise RotationError("create", str(exc)) from exc
            return Obtained(key, "recovered-lost-answer")

    def find(self, pending: Pending, known: Known, window: float) -> Obtained | None:
        key = self.clob.derive_key(self.signer(), pending.nonce)
        return None if key is None else Obtained(key, "recovered")

    def verify(self, key: Key) -> None:
        self.clob.probe_key(key)

    def delete(self, key: Key) -> None:
        self.clob.delete_key(key)

    def lookup(self, key: Key) -> Key | None:
        return self.clob.derive_key(self.signer(), key.nonce)

    def confirm_deleted(self, key: Key) -> bool:
        # The key must now be refused by an L2 read (off /auth/*).
        return refused(self.clob.probe_key, key)

    def at_nonce(self, nonce: int) -> Key | None:
        return self.clob.derive_key(self.signer(), nonce)


class _ListedOps:
    """What read-only and builder keys share: made with the ``via`` trading key's L2 headers, found
    again by listing, no nonce."""

    kind = ""
    authority = True
    learns_model = False

    def __init__(self, clob: ClobAuth, signer: Callable[[], Signer] | None, via: Callable[[], Key]) -> None:
        self.clob = clob
        self.via = via

    def address(self) -> str:
        return self.via().address

    def at_nonce(self, nonce: int) -> Key | None:
        return None

    def snapshot(self) -> tuple[str, ...] | None:
        return tuple(sorted(listed_digest(k.key) for k in self._listing()))

    def obtain(self, pending: Pending, fresh: bool, known: Known, window: float) -> Obtained:
        if not fresh and (found := self.find(pending, known, window)) is not None:
            return found
        try:
            key = self._create(pending)
        except Rejected as exc:
            raise RotationError("create", str(exc)) from exc
        except Cancelled:
            raise  # the worker is stopping: never taken for an answer about a key
        except ClobError as exc:
            # The answer may have been lost after the key was made: never create blind, list.
            found = self.find(pending, known, window)
            if found is None:
                raise RotationError("create", str(exc)) from exc
            return found if found.how != "recovered" else Obtained(found.key, "recovered-lost-answer")
        return Obtained(key, "created")

    def find(self, pending: Pending, known: Known, window: float) -> Obtained | None:
        """The intent's key among the listed ones, by elimination (the module's docstring)."""
        before = set(pending.listed or ())
        held, busy = known()
        new = [k for k in self._listing() if k.revoked_at is None and k.key not in held]
        new = [k for k in new if listed_digest(k.key) not in before]
        inside = [k for k in new if _made_within(k, pending.started_at, window)]
        if not inside:
            return None
        keys = tuple(self._found(k, pending) for k in inside)
        # A sibling of this kind with a rotation in flight on the wallet may own a lone candidate.
        if len(keys) > 1 or busy:
            return Obtained(None, "ambiguous", keys)
        return Obtained(keys[0], "lost-secret" if keys[0].lost else "recovered")

    def delete(self, key: Key) -> None:
        via = self.via()
        if via.address.lower() != key.address.lower():
            raise Unrevocable(
                f"{self.kind} key {key.masked} is on wallet {key.address}, but the trading credential "
                f"that manages it is now on wallet {via.address}: point `via` back at that wallet's "
                "trading credential until its keys are gone"
            )
        try:
            self._delete(via, key)
        except Unrevocable:
            raise
        except Rejected:
            # Refused by name (a 400): deleted already, by a pass whose answer was lost? The listing
            # says; confirm_deleted checks it again with a read.
            if self.lookup(key) is not None:
                raise

    def lookup(self, key: Key) -> Key | None:
        if self.via().address.lower() != key.address.lower():
            # The via's key lists its own wallet's keys, so a key of another wallet is never in its
            # list: absent there proves nothing. Taken as live (I3), never as gone.
            return key
        return self._lookup(key)

    def confirm_deleted(self, key: Key) -> bool:
        """Listed no more (or, for a builder key, listed as revoked), and refused by a read with it."""
        try:
            listed = self.lookup(key)
        except Cancelled:
            raise
        except ClobError:
            return False
        return listed is None and refused(self.verify, key)

    # what each kind fills in
    def _listing(self) -> list[ListedKey]:
        raise NotImplementedError

    def _create(self, pending: Pending) -> Key:
        raise NotImplementedError

    def _found(self, listed: ListedKey, pending: Pending) -> Key:
        raise NotImplementedError

    def _delete(self, via: Key, key: Key) -> None:
        raise NotImplementedError

    def verify(self, key: Key) -> None:
        raise NotImplementedError

    def _lookup(self, key: Key) -> Key | None:
        raise NotImplementedError


class ReadonlyOps(_ListedOps):
    """Read-only keys (clob-auth.md 12.4). The id is the whole credential, so a key found again by
    listing is complete."""

    kind = "readonly"

    def _listing(self) -> list[ListedKey]:
        return [ListedKey(i) for i in self.clob.list_readonly_keys(self.via())]

    def _create(self, pending: Pending) -> Key:
        via = self.via()
        key_id = self.clob.create_readonly_key(via)
        return readonly_key(key_id, via.address, pending.nonce, 0.0)

    def _found(self, listed: ListedKey, pending: Pending) -> Key:
        return readonly_key(listed.key, self.address(), pending.nonce, 0.0)

    def _delete(self, via: Key, key: Key) -> None:
        self.clob.delete_readonly_key(via, key.api_key)

    def verify(self, key: Key) -> None:
        self.clob.probe_readonly_key(key)

    def _lookup(self, key: Key) -> Key | None:
        return key if key.api_key in self.clob.list_readonly_keys(self.via()) else None


class BuilderOps(_ListedOps):
    """Builder keys (clob-auth.md 12.5). Revoked with their own ``POLY_BUILDER_*`` headers, as
    clob-client and polymarket-client do: the only form that names the key (docs/kinds.md)."""

    kind = "builder"

    def _listing(self) -> list[ListedKey]:
        return self.clob.list_builder_keys(self.via())

    def _create(self, pending: Pending) -> Key:
        key = self.clob.create_builder_key(self.via())
        return Key(
            key.api_key, key.api_secret, key.api_passphrase, key.address, pending.nonce, 0.0, "builder"
        )

    def _found(self, listed: ListedKey, pending: Pending) -> Key:
        # The secret went with the create's answer: the key is the intent's but unusable.
        made = listed.created_at if listed.created_at is not None else (minted_at(listed.key) or 0.0)
        return Key(listed.key, Secret(""), Secret(""), self.address(), pending.nonce, made, "builder")

    def _delete(self, via: Key, key: Key) -> None:
        self.clob.revoke_builder_key(key)

    def verify(self, key: Key) -> None:
        self.clob.probe_builder_key(key)

    def _lookup(self, key: Key) -> Key | None:
        for listed in self.clob.list_builder_keys(self.via()):
            if listed.key == key.api_key:
                return key if listed.revoked_at is None else None
        return None


def readonly_key(key_id: str, address: str, nonce: int, created_at: float) -> Key:
    """A read-only key: its id on ``address`` (no secret, no passphrase)."""
    return Key(key_id, Secret(""), Secret(""), address, nonce, created_at, "readonly")


def _made_within(listed: ListedKey, started_at: float, window: float) -> bool:
    """Whether the CLOB made ``listed`` while the intent's create could have been in flight: from its
    ``started_at`` to ``window`` after it, give or take the clocks' slack. A key whose making time
    is not known (an id that is no UUIDv7, no ``createdAt``) cannot be ruled out."""
    made = listed.created_at if listed.created_at is not None else minted_at(listed.key)
    if made is None:
        return True
    return started_at - KEY_CLOCK_SLACK <= made <= started_at + window + KEY_CLOCK_SLACK


_BY_KIND: dict[str, type[TradingOps] | type[ReadonlyOps] | type[BuilderOps]] = {
    "trading": TradingOps,
    "readonly": ReadonlyOps,
    "builder": BuilderOps,
}


def ops_for(kind: str, clob: ClobAuth, signer: Callable[[], Signer] | None, via: Callable[[], Key]) -> KeyOps:
    """The strategy of ``kind``: ``signer`` authenticates trading keys (None: a credential without a
    usable one, which then cannot confirm a key gone); ``via`` gives the trading key that manages the
    other kinds (called only when one is needed)."""
    return _BY_KIND[kind](clob, signer, via)
