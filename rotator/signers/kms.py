"""The ``aws-kms`` signer source: an ``ECC_SECG_P256K1`` KMS key signs; the private key never leaves KMS.

KMS signs the 32-byte EIP-712 digest as it is (``MessageType='DIGEST'``, ``ECDSA_SHA_256``) and returns
a DER ``(r, s)``. Ethereum wants ``r || s || v``: ``s`` in the lower half of the curve order (EIP-2;
KMS returns either half) and the recovery id ``v``, which KMS does not give. Both are computed here
from the public key alone: flip a high ``s`` to ``n - s`` (the same signature, mirrored), then try
both recovery ids and keep the one that recovers our key. The address is derived from
``GetPublicKey`` once, and signing is pinned to the key ARN it returned, so re-pointing an alias
cannot silently switch wallets.

The pure functions (:func:`address_from_public_key`, :func:`eth_signature`) are what the property
tests exercise; :class:`KmsSigner` only adds the two KMS calls.
"""

from __future__ import annotations

from typing import Any, Protocol

from rotator.clients import aws
from rotator.errors import SignerError
from rotator.signers import secp256k1
from rotator.signers.aws import aws_error
from rotator.signers.base import KnownAddress
from rotator.signers.secp256k1 import SECP256K1_N

KEY_SPEC = "ECC_SECG_P256K1"
ALGORITHM = "ECDSA_SHA_256"


class KmsSignClient(Protocol):
    """The calls of boto3's ``kms`` client this signer makes (keyword arguments as boto3's)."""

    def get_public_key(self, **kwargs: Any) -> dict[str, Any]: ...

    def sign(self, **kwargs: Any) -> dict[str, Any]: ...

    def close(self) -> None: ...


def public_key_point(spki_der: bytes) -> bytes:
    """The 64-byte ``X || Y`` of a DER SubjectPublicKeyInfo on secp256k1.

    :raises ValueError: not a DER public key, or not on secp256k1.
    """
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_der_public_key,
    )

    key = load_der_public_key(spki_der)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256K1):
        raise ValueError("not a secp256k1 public key")
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]


def address_from_public_key(spki_der: bytes) -> str:
    """The EIP-55 address of a secp256k1 public key in DER (what ``GetPublicKey`` returns)."""
    return secp256k1.checksum_address(public_key_point(spki_der))


def eth_signature(digest: bytes, der: bytes, point: bytes) -> bytes:
    """The 65-byte Ethereum signature ``r || s || v`` (low ``s``, ``v`` 27/28) of a DER ECDSA signature.

    ``point`` is the signer's 64-byte public key (:func:`public_key_point`).

    :raises ValueError: ``der`` is malformed, or neither recovery id recovers ``point`` (the signature is
        not over ``digest`` by that key).
    """
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    if len(digest) != 32:
        raise ValueError("digest must be 32 bytes")
    r, s = decode_dss_signature(der)
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise ValueError("r or s out of range")
    if s > SECP256K1_N // 2:
        s = SECP256K1_N - s  # (r, n - s) verifies wherever (r, s) does; Ethereum only takes low s
    for v in (0, 1):
        if secp256k1.recover(digest, r, s, v) == point:
            return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([27 + v])
    raise ValueError("the signature does not recover the public key")


class KmsSigner(KnownAddress):
    """A :class:`~rotator.signers.base.Signer` whose key is an asymmetric KMS key (see module docstring).

    :raises SignerError: at construction, when the key is missing, not allowed, or not a secp256k1
        signing key; when signing, when KMS refuses or returns a signature that is not over the digest.
    :raises rotator.errors.Unavailable: KMS cannot be reached or is throttling.
    """

    def __init__(self, client: KmsSignClient, key_id: str, *, source: str) -> None:
        self._client = client
        self._source = source
        try:
            resp = client.get_public_key(KeyId=key_id)
        except aws.errors() as exc:
            raise aws_error(exc, f"{source}: GetPublicKey") from exc
        spec = resp.get("KeySpec") or resp.get("CustomerMasterKeySpec")
        if spec != KEY_SPEC:
            raise SignerError(f"{source}: the KMS key is {spec}, not {KEY_SPEC} (secp256k1)")
        if resp.get("KeyUsage") != "SIGN_VERIFY":
            raise SignerError(f"{source}: the KMS key's usage is {resp.get('KeyUsage')}, not SIGN_VERIFY")
        if ALGORITHM not in (resp.get("SigningAlgorithms") or []):
            raise SignerError(f"{source}: the KMS key does not offer {ALGORITHM}")
        try:
            self._point = public_key_point(resp["PublicKey"])
        except (KeyError, TypeError, ValueError):
            raise SignerError(f"{source}: GetPublicKey returned no usable secp256k1 public key") from None
        self._address: str = secp256k1.checksum_address(self._point)
        self._key_arn = str(resp.get("KeyId") or key_id)

    def sign_digest(self, digest: bytes) -> bytes:
        digest = self._digest(digest)
        try:
            resp = self._client.sign(
                KeyId=self._key_arn, Message=digest, MessageType="DIGEST", SigningAlgorithm=ALGORITHM
            )
        except aws.errors() as exc:
            raise aws_error(exc, f"{self._source}: Sign") from exc
        der = resp.get("Signature")
        if not isinstance(der, bytes):
            raise SignerError(f"{self._source}: KMS Sign returned no signature")
        try:
            return eth_signature(digest, der, self._point)
        except ValueError:
            raise SignerError(
                f"{self._source}: KMS returned a signature that does not match the key's public key over "
                "the digest (does the endpoint honour MessageType=DIGEST?)"
            ) from None

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"KmsSigner(address={self._address})"
