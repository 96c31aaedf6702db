"""Test-only fix of moto 5.2.5: KMS ``Sign``/``Verify`` with ``MessageType='DIGEST'``.

moto parses ``MessageType`` and ignores it, so a DIGEST request has its digest hashed again: the
signature is over SHA-256(digest), which no one outside moto can verify against the key, and which
recovers a random address in Ethereum terms. AWS signs the digest as given. Upstream fix:
getmoto/moto#10202 ("KMS: implement MessageType=DIGEST for Sign and Verify", unmerged when this was
written); remove this module once a moto release includes it (``test_digest_fix_still_needed`` in
tests/integration/test_signers.py fails then, to say so).

The fix must run in the process that runs the moto server (the pytest process): it notes the
request's ``MessageType`` while moto handles ``Sign``/``Verify`` (in the request's thread), and while it
is DIGEST, the ECDSA key signs and verifies the message as a prehashed digest, refusing a digest of the
wrong length as AWS does. RAW requests are untouched.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import pytest

UPSTREAM = "getmoto/moto#10202"

#: moto's methods as they were before :func:`moto_kms_digest_fix` patched them.
ORIGINALS: dict[tuple[type, str], Any] = {}

_DIGEST: contextvars.ContextVar[bool] = contextvars.ContextVar("moto_kms_digest", default=False)


def _hash(signing_algorithm: str) -> Any:
    from cryptography.hazmat.primitives import hashes

    return {"ECDSA_SHA_256": hashes.SHA256(), "ECDSA_SHA_384": hashes.SHA384()}.get(
        signing_algorithm, hashes.SHA512()
    )


def _prehashed(message: bytes, signing_algorithm: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    from moto.kms.exceptions import ValidationException

    algorithm = _hash(signing_algorithm)
    if len(message) != algorithm.digest_size:
        # AWS's answer (API_Sign.html: the digest's length must match the algorithm's hash).
        raise ValidationException(f"Digest is invalid length for algorithm {signing_algorithm}.")
    return ec.ECDSA(utils.Prehashed(algorithm))


def _noting_message_type(handler: Callable[[Any], str]) -> Callable[[Any], str]:
    def wrapped(self: Any) -> str:
        token = _DIGEST.set(self._get_param("MessageType") == "DIGEST")
        try:
            return handler(self)
        finally:
            _DIGEST.reset(token)

    return wrapped


def _sign(original: Callable[..., bytes]) -> Callable[..., bytes]:
    def sign(self: Any, message: bytes, signing_algorithm: str) -> bytes:
        if not _DIGEST.get():
            return original(self, message, signing_algorithm)
        from moto.kms.utils import validate_signing_algorithm

        validate_signing_algorithm(signing_algorithm, self.valid_signing_algorithms)
        signature: bytes = self.private_key.sign(message, _prehashed(message, signing_algorithm))
        return signature

    return sign


def _verify(original: Callable[..., bool]) -> Callable[..., bool]:
    def verify(self: Any, message: bytes, signature: bytes, signing_algorithm: str) -> bool:
        if not _DIGEST.get():
            return original(self, message, signature, signing_algorithm)
        from cryptography.exceptions import InvalidSignature
        from moto.kms.utils import validate_signing_algorithm

        validate_signing_algorithm(signing_algorithm, self.valid_signing_algorithms)
        try:
            self.private_key.public_key().verify(signature, message, _prehashed(message, signing_algorithm))
        except InvalidSignature:
            return False
        return True

    return verify


def unpatched() -> dict[tuple[type, str], Any]:
    """moto's own methods that :func:`apply` replaces, to check whether the fix is still needed."""
    from moto.kms.responses import KmsResponse
    from moto.kms.utils import ECDSAPrivateKey

    return {
        (cls, name): getattr(cls, name)
        for cls in (KmsResponse, ECDSAPrivateKey)
        for name in ("sign", "verify")
    }


def apply(mp: pytest.MonkeyPatch) -> None:
    """Patch moto's KMS in this process (undone with ``mp``)."""
    from moto.kms.responses import KmsResponse
    from moto.kms.utils import ECDSAPrivateKey

    mp.setattr(KmsResponse, "sign", _noting_message_type(KmsResponse.sign))
    mp.setattr(KmsResponse, "verify", _noting_message_type(KmsResponse.verify))
    mp.setattr(ECDSAPrivateKey, "sign", _sign(ECDSAPrivateKey.sign))
    mp.setattr(ECDSAPrivateKey, "verify", _verify(ECDSAPrivateKey.verify))


@pytest.fixture(scope="session")
def moto_kms_digest_fix() -> Iterator[str]:
    """moto's KMS honours MessageType=DIGEST for the rest of the session; yields the upstream PR."""
    global ORIGINALS
    ORIGINALS = unpatched()
    with pytest.MonkeyPatch.context() as mp:
        apply(mp)
        yield UPSTREAM
