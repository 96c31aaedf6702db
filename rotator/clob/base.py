"""The CLOB auth port: the calls rotation needs, in rotator's own types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rotator.model import Key
from rotator.signers.base import Signer


@dataclass(frozen=True, slots=True)
class ListedKey:
    """A builder key as ``GET /auth/builder-api-key`` lists it: its id, when it was made and when it
    was revoked (revoked keys stay listed), unix seconds on the CLOB's clock; None when not said."""

    key: str
    created_at: float | None = None
    revoked_at: float | None = None


class ClobAuth(Protocol):
    """Issues, recovers, lists and deletes L2 keys.

    Every method may raise :class:`rotator.errors.RateLimited` (after its own retries ran out),
    :class:`rotator.errors.Transient` (:class:`rotator.errors.Unreachable`: no connection, not
    retried), :class:`rotator.errors.Unauthorized`, and :class:`rotator.errors.Cancelled` once the
    worker is stopping.
    """

    def server_time(self) -> float:
        """The CLOB's clock, unix seconds."""
        ...

    def create_key(self, signer: Signer, nonce: int) -> Key:
        """``POST /auth/api-key`` for ``(signer, nonce)``. Not retried on a lost answer: the caller
        recovers with :meth:`derive_key`.

        :raises Rejected: the nonce already has a key (400 "Could not create api key").
        """
        ...

    def derive_key(self, signer: Signer, nonce: int) -> Key | None:
        """``GET /auth/derive-api-key``: the live key at ``nonce``, or ``None`` when there is none."""
        ...

    def list_keys(self, key: Key) -> list[str]:
        """``GET /auth/api-keys`` signed with ``key``: the ids of the wallet's live keys.

        :raises Unauthorized: ``key`` itself is not (or not yet) accepted.
        """
        ...

    def probe_key(self, key: Key) -> None:
        """An L2 read signed with ``key`` outside ``/auth/*``: returns when the server accepts ``key``.

        :raises Unauthorized: ``key`` is not (or not yet, or no longer) accepted.
        """
        ...

    def delete_key(self, key: Key) -> None:
        """``DELETE /auth/api-key`` signed with ``key``: revokes ``key``.

        :raises Unauthorized: ``key`` is already gone (or was never live).
        """
        ...

    def closed_only(self, key: Key) -> bool:
        """``GET /auth/ban-status/closed-only`` signed with ``key``: whether the wallet's account is in
        closed-only mode (it may close positions but not open orders).

        :raises Unauthorized: ``key`` is not (or no longer) accepted.
        """
        ...

    # -- read-only keys (issue 27, clob-auth.md 12.4): managed with a trading key's L2 headers ------
    def create_readonly_key(self, via: Key) -> str:
        """``POST /auth/readonly-api-key`` signed with the trading key ``via``: the new key's id. Not
        retried on a lost answer: the caller finds the key again by listing (rotator.kinds).

        :raises Unauthorized: ``via`` is not accepted.
        """
        ...

    def list_readonly_keys(self, via: Key) -> list[str]:
        """``GET /auth/readonly-api-keys`` signed with ``via``: the ids of the wallet's read-only keys.

        :raises Unauthorized: ``via`` is not accepted.
        """
        ...

    def delete_readonly_key(self, via: Key, key_id: str) -> None:
        """``DELETE /auth/readonly-api-key`` with ``{"key": key_id}`` (signed, the body in the HMAC)
        with ``via``'s L2 headers: deletes that read-only key of the wallet.

        :raises Unauthorized: ``via`` is not accepted (says nothing about ``key_id``).
        """
        ...

    def probe_readonly_key(self, key: Key) -> None:
        """``GET /data/orders?maker_address=<wallet>`` with ``POLY_READONLY_API_KEY`` and
        ``POLY_ADDRESS``, as a reader sends it: returns when the server accepts the read-only ``key``.

        :raises Unauthorized: ``key`` is not (or not yet, or no longer) accepted.
        """
        ...

    # -- builder keys (issue 27, clob-auth.md 12.5) -------------------------------------------------
    def create_builder_key(self, via: Key) -> Key:
        """``POST /auth/builder-api-key`` signed with the trading key ``via``: the new builder key
        (kind ``builder``, on ``via``'s wallet; its ``nonce`` is the caller's to set). Not retried on
        a lost answer, whose key (and secret) is then lost: see rotator.kinds.

        :raises Unauthorized: ``via`` is not accepted.
        """
        ...

    def list_builder_keys(self, via: Key) -> list[ListedKey]:
        """``GET /auth/builder-api-key`` signed with ``via``: the wallet's builder keys, revoked ones
        included (with ``revoked_at``).

        :raises Unauthorized: ``via`` is not accepted.
        """
        ...

    def revoke_builder_key(self, key: Key) -> None:
        """``DELETE /auth/builder-api-key`` authenticated by the builder key itself (its
        ``POLY_BUILDER_*`` headers, as clob-client and polymarket-client send it): revokes ``key``.

        :raises Unauthorized: ``key`` is already revoked (or not yet live).
        :raises Unrevocable: ``key``'s secret was lost: nothing to sign with (no request sent).
        """
        ...

    def probe_builder_key(self, key: Key) -> None:
        """``GET /builder/trades`` with ``key``'s ``POLY_BUILDER_*`` headers (py-clob-client's
        ``get_builder_trades``, clob-client's ``getBuilderTrades``): returns when the server accepts it.

        :raises Unauthorized: ``key`` is not (or not yet, or no longer) accepted.
        """
        ...
