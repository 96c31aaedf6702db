"""The CLOB auth port: the calls rotation needs, in rotator's own types."""

from __future__ import annotations

from typing import Protocol

from rotator.model import Key
from rotator.signers.base import Signer


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
