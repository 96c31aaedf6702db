"""The L1 signer port: whatever holds the wallet key signs EIP-712 digests with it.

A signer gives an address and a 65-byte ``r || s || v`` signature (``v`` = 27/28, low ``s``) over
a 32-byte digest. Sources that read a private key (env, file, Vault, Secrets Manager) hold it in a
:class:`rotator.model.Secret`; the KMS source never has it at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from rotator.errors import SignerError
from rotator.model import Secret


class Signer(Protocol):
    """Signs CLOB L1 auth digests for one wallet.

    :raises rotator.errors.SignerError: the key source is unusable (never shows the key).
    """

    @property
    def address(self) -> str:
        """The wallet address, EIP-55 checksummed."""
        ...

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a 32-byte digest: 65 bytes ``r || s || v`` with ``v`` in {27, 28} and low ``s``."""
        ...


class KnownAddress:
    """For signers that learn their address once, when built: ``address`` and the digest check."""

    _address: str

    @property
    def address(self) -> str:
        return self._address

    @staticmethod
    def _digest(digest: bytes) -> bytes:
        if len(digest) != 32:
            raise ValueError("digest must be 32 bytes")
        return digest


def text_field(data: Mapping[str, Any], field: str, source: str) -> Secret:
    """The key in ``data[field]``, as the Vault and Secrets Manager sources read it.

    :raises SignerError: the field is missing or not text (names the field, never a value).
    """
    value = data.get(field)
    if not isinstance(value, str):
        raise SignerError(f"{source}: the secret has no text field {field!r}")
    return Secret(value)
