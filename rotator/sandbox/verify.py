"""Pure verifiers for the two CLOB auth schemes (L1 EIP-712 wallet signature, L2 API-key HMAC).

They rebuild exactly what the SDKs sign (docs: shared/reference/clob-auth.md §1 and §2) so the sandbox rejects
what the real server rejects. No state, no I/O: the unit tests pin them to the SDKs' own test vectors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys.exceptions import BadSignature

CLOB_DOMAIN_NAME = "ClobAuthDomain"
CLOB_DOMAIN_VERSION = "1"
CLOB_AUTH_MESSAGE = "This message attests that I control the given wallet"

# The SDKs send decimal seconds, a 20-byte hex address and a 65-byte r||s||v signature. Checking the shape
# first turns malformed headers into a plain "invalid" instead of whatever eth_account raises deep inside.
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,20}$")
_NONCE_RE = re.compile(r"^[0-9]{1,78}$")  # uint256 fits in 78 decimal digits
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SIGNATURE_RE = re.compile(r"^0x[0-9a-fA-F]{130}$")
_UINT256_MAX = 2**256 - 1


def clob_auth_typed_data(address: str, timestamp: str, nonce: int, chain_id: int) -> dict[str, Any]:
    """The EIP-712 ``ClobAuth`` document an L1 header set signs (domain without verifyingContract/salt)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "ClobAuth": [
                {"name": "address", "type": "address"},
                {"name": "timestamp", "type": "string"},
                {"name": "nonce", "type": "uint256"},
                {"name": "message", "type": "string"},
            ],
        },
        "primaryType": "ClobAuth",
        "domain": {"name": CLOB_DOMAIN_NAME, "version": CLOB_DOMAIN_VERSION, "chainId": chain_id},
        # Lower-cased because the struct hashes the 20 address bytes, and eth_account would reject a
        # mixed-case address with a wrong EIP-55 checksum that the server (comparing bytes) accepts.
        "message": {
            "address": address.lower(),
            "timestamp": timestamp,
            "nonce": nonce,
            "message": CLOB_AUTH_MESSAGE,
        },
    }


def parse_timestamp(value: str | None) -> int | None:
    """``POLY_TIMESTAMP`` as integer seconds, or None when absent or not a decimal integer."""
    if value is None or not _TIMESTAMP_RE.match(value):
        return None
    return int(value)


def parse_nonce(value: str | None) -> int | None:
    """``POLY_NONCE`` as an integer; an absent header means nonce 0 (the SDKs' and the docs' default)."""
    if value is None:
        return 0
    if not _NONCE_RE.match(value):
        return None
    nonce = int(value)
    return nonce if nonce <= _UINT256_MAX else None


def timestamp_in_window(timestamp: int, server_now: float, window: float) -> bool:
    """True when the client's timestamp is within ``window`` seconds (either side) of the server clock."""
    return abs(timestamp - server_now) <= window


def recover_l1_signer(address: str, timestamp: str, nonce: int, chain_id: int, signature: str) -> str | None:
    """The checksummed address that signed this ClobAuth struct, or None if the headers are malformed."""
    if not _ADDRESS_RE.match(address) or not _SIGNATURE_RE.match(signature):
        return None
    if not _TIMESTAMP_RE.match(timestamp) or not 0 <= nonce <= _UINT256_MAX:
        return None
    signable = encode_typed_data(full_message=clob_auth_typed_data(address, timestamp, nonce, chain_id))
    try:
        recovered: str = Account.recover_message(signable, signature=signature)
    except (ValueError, BadSignature):
        # Bad v byte or r/s out of range: a forged or mangled signature, not a server fault.
        return None
    return recovered


def verify_l1_signature(address: str, timestamp: str, nonce: int, chain_id: int, signature: str) -> bool:
    """True when ``signature`` is ``address``'s ClobAuth signature (address compared case-insensitively)."""
    recovered = recover_l1_signer(address, timestamp, nonce, chain_id, signature)
    return recovered is not None and recovered.lower() == address.lower()


def l2_signature(secret: str, timestamp: str, method: str, path: str, body: bytes | str | None = None) -> str:
    """URL-safe base64 (padded) HMAC-SHA256 over ``timestamp + method + path + body``, keyed by the secret.

    ``body`` is the request body exactly as sent: the server has only the bytes, so a client that signs one
    serialisation and sends another fails here just as it does against the real CLOB.

    :raises ValueError: ``secret`` is not padded URL-safe base64.
    """
    try:
        key = base64.urlsafe_b64decode(secret.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("secret is not URL-safe base64") from exc
    message = f"{timestamp}{method}{path}".encode()
    if body:
        message += body.encode() if isinstance(body, str) else body
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def verify_l2_signature(
    secret: str, timestamp: str, method: str, path: str, body: bytes | str | None, signature: str
) -> bool:
    """Constant-time check of ``signature`` against :func:`l2_signature`."""
    try:
        expected = l2_signature(secret, timestamp, method, path, body)
    except ValueError:
        return False
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))
