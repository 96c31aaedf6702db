"""The secp256k1 and keccak-256 operations the signers need, on libsecp256k1 (coincurve) and eth-hash.

eth_keys did this before, and pulled in eth_utils with it: about 0.35 s of imports in every run that
signs, a third of a one-shot rotation's start-up. The operations are few and standard, and each is
checked against eth_account in tests/unit/test_secp256k1.py:

- an address is the last 20 bytes of keccak-256 of the 64-byte public key ``X || Y``, written with
  the EIP-55 checksum (a hex letter is upper-case when the matching nibble of keccak-256 of the
  lower-case hex is 8 or more);
- a signature is libsecp256k1's recoverable ECDSA over the 32-byte digest itself (no hashing; RFC 6979
  nonces, low ``s``), written ``r || s || v`` with ``v`` = 27 + the recovery id, as Ethereum has it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import coincurve

#: The order of secp256k1's group: ``r`` and ``s`` are in [1, N).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum uses it (not NIST SHA3-256: the padding differs)."""
    from eth_hash.auto import keccak

    out: bytes = keccak(data)
    return out


def checksum_address(point: bytes) -> str:
    """The EIP-55 address of the 64-byte public key ``X || Y``."""
    if len(point) != 64:
        raise ValueError("a public key is 64 bytes (X || Y)")
    return to_checksum(keccak256(point)[-20:].hex())


def to_checksum(address: str) -> str:
    """EIP-55 form of a 40-hex-digit address (with or without ``0x``, in any case)."""
    hexa = address.lower().removeprefix("0x")
    if len(hexa) != 40 or any(c not in "0123456789abcdef" for c in hexa):
        raise ValueError("an address is 40 hex digits")
    digest = keccak256(hexa.encode()).hex()
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in zip(hexa, digest[:40], strict=True))


def private_key(secret: bytes) -> coincurve.PrivateKey:
    """A libsecp256k1 private key.

    :raises ValueError: not 32 bytes, or not in [1, N) (the message names no byte of it).
    """
    import coincurve

    if len(secret) != 32:
        raise ValueError("a private key is 32 bytes")
    try:
        return coincurve.PrivateKey(secret)
    except ValueError:
        raise ValueError("not a valid secp256k1 private key") from None


def public_point(key: coincurve.PrivateKey) -> bytes:
    """The 64-byte ``X || Y`` of ``key``'s public key."""
    out: bytes = key.public_key.format(compressed=False)[1:]
    return out


def sign(key: coincurve.PrivateKey, digest: bytes) -> bytes:
    """65 bytes ``r || s || v`` over the 32-byte ``digest``: low ``s``, ``v`` in {27, 28}."""
    if len(digest) != 32:
        raise ValueError("digest must be 32 bytes")
    raw: bytes = key.sign_recoverable(digest, hasher=None)  # r || s || recovery id (0 or 1)
    return raw[:64] + bytes([27 + raw[64]])


def recover(digest: bytes, r: int, s: int, recovery_id: int) -> bytes | None:
    """The 64-byte public key that signed ``digest`` with (r, s, recovery id), or None when none does."""
    import coincurve

    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N) or recovery_id not in (0, 1):
        return None
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([recovery_id])
    try:
        key = coincurve.PublicKey.from_signature_and_message(sig, digest, hasher=None)
    except ValueError:  # no point recovers (r is not an x on the curve, ...)
        return None
    out: bytes = key.format(compressed=False)[1:]
    return out
