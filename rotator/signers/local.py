"""Signers over a secp256k1 private key in this process: held (sources env, file) or fetched for each
signature and dropped (sources vault, aws-secretsmanager)."""

from __future__ import annotations

import re
from collections.abc import Callable

from rotator.errors import SignerError
from rotator.model import Secret
from rotator.signers import secp256k1  # light: coincurve and eth-hash load when a key is first used
from rotator.signers.base import KnownAddress

_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class LocalKeySigner(KnownAddress):
    """Signs with a secp256k1 private key kept in a :class:`Secret`."""

    def __init__(self, private_key: Secret, *, source: str) -> None:
        raw = private_key.reveal().strip()
        if not _HEX_KEY.match(raw):
            raise SignerError(
                f"{source}: not a private key (expected 64 hex characters, optionally 0x-prefixed)"
            )
        try:
            self._key = secp256k1.private_key(bytes.fromhex(raw.removeprefix("0x")))
        except ValueError:
            # from None: a library's message may quote the key bytes.
            raise SignerError(f"{source}: not a valid secp256k1 private key") from None
        self._address: str = secp256k1.checksum_address(secp256k1.public_point(self._key))

    def sign_digest(self, digest: bytes) -> bytes:
        return secp256k1.sign(self._key, self._digest(digest))  # RFC 6979, low s, v in {27, 28}

    def __repr__(self) -> str:
        return f"LocalKeySigner(address={self._address})"


class FetchedKeySigner:
    """Signs with a key fetched from its source for each signature and dropped right after.

    For keys kept in Vault or Secrets Manager: the worker holds only the address between signatures,
    so a long-running daemon does not keep the wallet key in memory for days, and a key rotated in the
    source is picked up on the next signature. (Python cannot wipe a string; dropping every reference
    is what it can do.) A pass signs two or three times, so the extra reads cost little.
    """

    def __init__(
        self, fetch: Callable[[], Secret], *, source: str, close: Callable[[], None] | None = None
    ) -> None:
        self._fetch = fetch
        self._source = source
        self._close = close
        self._address = self._load().address

    def _load(self) -> LocalKeySigner:
        return LocalKeySigner(self._fetch(), source=self._source)

    @property
    def address(self) -> str:
        return self._address

    def sign_digest(self, digest: bytes) -> bytes:
        signer = self._load()
        if signer.address != self._address:
            # Keys already issued belong to the old wallet: carrying on would mix two lineages.
            raise SignerError(
                f"{self._source}: now holds the key of another wallet than at start ({self._address}); "
                "restart the worker if the change is intended"
            )
        return signer.sign_digest(digest)

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def __repr__(self) -> str:
        return f"FetchedKeySigner(address={self._address})"
