"""The digest a wallet signs for CLOB L1 auth: EIP-712 typed data ``ClobAuth`` (clob-auth.md section 1).

``keccak256(0x1901 || domainSeparator || hashStruct(ClobAuth))`` with the domain
``EIP712Domain(string name,string version,uint256 chainId)`` = ("ClobAuthDomain", "1", chain id) and
the struct ``ClobAuth(address address,string timestamp,uint256 nonce,string message)``. Strings are
hashed, the address is its 20 bytes left-padded to 32, the nonce 32 bytes big-endian.

py-clob-client builds the same bytes with poly_eip712_structs (``sign_clob_auth_message``), but
importing it takes about 0.7 s, most of a one-shot run's start-up. This is the whole of what it does
for L1; tests/unit/test_eip712.py checks it byte for byte against the SDK and eth_account's
``encode_typed_data`` and against the SDK's own test vector, and the sandbox verifies every
signature with eth_account.
"""

from __future__ import annotations

from rotator.signers.secp256k1 import keccak256

DOMAIN_NAME = "ClobAuthDomain"
DOMAIN_VERSION = "1"
#: The fixed text every L1 signature carries (clob-auth.md 1.4).
MESSAGE = "This message attests that I control the given wallet"
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId)"
STRUCT_TYPE = "ClobAuth(address address,string timestamp,uint256 nonce,string message)"
_UINT256 = 1 << 256


def _uint256(value: int) -> bytes:
    if not 0 <= value < _UINT256:
        raise ValueError("not a uint256")
    return value.to_bytes(32, "big")


def _address(address: str) -> bytes:
    hexa = address.lower().removeprefix("0x")
    if len(hexa) != 40:
        raise ValueError("an address is 40 hex digits")
    return bytes(12) + bytes.fromhex(hexa)


def domain_separator(chain_id: int) -> bytes:
    return keccak256(
        keccak256(DOMAIN_TYPE.encode())
        + keccak256(DOMAIN_NAME.encode())
        + keccak256(DOMAIN_VERSION.encode())
        + _uint256(chain_id)
    )


def clob_auth_digest(address: str, timestamp: int, nonce: int, chain_id: int) -> bytes:
    """The 32 bytes the wallet ``address`` signs to authenticate at ``timestamp`` (unix seconds, put in
    the struct as its decimal string) for the key at ``nonce``, on chain ``chain_id``.

    :raises ValueError: ``address`` is not 40 hex digits, or ``nonce`` / ``chain_id`` not a uint256.
    """
    struct = keccak256(
        keccak256(STRUCT_TYPE.encode())
        + _address(address)
        + keccak256(str(int(timestamp)).encode())
        + _uint256(nonce)
        + keccak256(MESSAGE.encode())
    )
    return keccak256(b"\x19\x01" + domain_separator(chain_id) + struct)
