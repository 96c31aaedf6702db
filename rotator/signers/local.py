"""A signer over a private key held in this process (sources env, file, vault, aws-secretsmanager)."""

from __future__ import annotations

import re

from rotator.errors import SignerError
from rotator.model import Secret

_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class LocalKeySigner:
    """Signs with a secp256k1 private key kept in a :class:`Secret`."""

    def __init__(self, private_key: Secret, *, source: str) -> None:
        raw = private_key.reveal().strip()
        if not _HEX_KEY.match(raw):
            raise SignerError(
                f"{source}: not a private key (expected 64 hex characters, optionally 0x-prefixed)"
            )
        from eth_keys.datatypes import PrivateKey  # lazy: only needed once a pass signs

        try:
            self._key = PrivateKey(bytes.fromhex(raw.removeprefix("0x")))
        except Exception:  # noqa: BLE001 - eth_keys raises ValidationError for out-of-range keys
            # from None: the library's message may quote the key bytes.
            raise SignerError(f"{source}: not a valid secp256k1 private key") from None
        self._address: str = self._key.public_key.to_checksum_address()

    @property
    def address(self) -> str:
        return self._address

    def sign_digest(self, digest: bytes) -> bytes:
        if len(digest) != 32:
            raise ValueError("digest must be 32 bytes")
        sig = self._key.sign_msg_hash(digest)  # RFC 6979, low-s, v in {0, 1}
        out: bytes = sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v + 27])
        return out

    def __repr__(self) -> str:
        return f"LocalKeySigner(address={self._address})"
