"""L1 signing without the SDK (rotator/clob/eip712.py, rotator/signers/secp256k1.py), byte for byte
against three independent sources: py-clob-client's own ``sign_clob_auth_message`` (what the
adapter called before), eth_account's ``encode_typed_data`` over the sandbox's typed data of
clob-auth.md section 1, and the SDK's published test vector."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.clob.eip712 import clob_auth_digest
from rotator.model import Secret
from rotator.sandbox.verify import clob_auth_typed_data
from rotator.signers import secp256k1
from rotator.signers.local import LocalKeySigner

# Hardhat's account #0: a published test vector, never a real wallet.
HARDHAT_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
HARDHAT_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
# py-clob-client tests/signing/test_eip712.py (clob-auth.md 1.6): Amoy, ts 10000000, nonce 23.
SDK_VECTOR = (
    "0xf62319a987514da40e57e2f4d7529f7bac38f0355bd88bb5adbb3768d80de6c1682518e0af677d5260366425f4361e7b"
    "70c25ae232aff0ab2331e2b164a1aedc1b"
)

KEYS = st.integers(min_value=1, max_value=secp256k1.SECP256K1_N - 1).map(lambda k: f"{k:064x}")
TIMESTAMPS = st.integers(min_value=0, max_value=2**40)
NONCES = st.one_of(st.integers(min_value=0, max_value=1000), st.integers(min_value=0, max_value=2**256 - 1))
CHAINS = st.sampled_from([137, 80002, 1, 2**63])


def typed_data(address: str, timestamp: int, nonce: int, chain_id: int) -> bytes:
    """The digest eth_account makes of the sandbox's typed data (rotator/sandbox/verify.py, written
    from clob-auth.md section 1 and what the sandbox verifies every L1 signature against)."""
    from eth_utils import keccak

    signable = encode_typed_data(full_message=clob_auth_typed_data(address, str(timestamp), nonce, chain_id))
    out: bytes = keccak(b"\x19" + signable.version + signable.header + signable.body)
    return out


def sdk_signature(private_key: str, timestamp: int, nonce: int, chain_id: int) -> str:
    from py_clob_client.signer import Signer as SdkSigner
    from py_clob_client.signing.eip712 import sign_clob_auth_message

    out: str = sign_clob_auth_message(SdkSigner(private_key, chain_id), timestamp, nonce)
    return out


def test_the_sdks_published_vector() -> None:
    signer = LocalKeySigner(Secret(HARDHAT_KEY), source="test")
    assert signer.address == HARDHAT_ADDRESS
    digest = clob_auth_digest(signer.address, 10000000, 23, 80002)
    assert "0x" + signer.sign_digest(digest).hex() == SDK_VECTOR


@settings(max_examples=60, deadline=None)
@given(key=KEYS, timestamp=TIMESTAMPS, nonce=NONCES, chain_id=CHAINS)
def test_the_l1_signature_is_the_sdks_and_the_digest_eth_accounts(
    key: str, timestamp: int, nonce: int, chain_id: int
) -> None:
    signer = LocalKeySigner(Secret(key), source="test")
    assert signer.address == Account.from_key(key).address  # EIP-55 included
    digest = clob_auth_digest(signer.address, timestamp, nonce, chain_id)
    assert digest == typed_data(signer.address, timestamp, nonce, chain_id)
    # The address's case does not change the struct (it hashes the 20 bytes).
    assert digest == clob_auth_digest(signer.address.lower(), timestamp, nonce, chain_id)
    signature = signer.sign_digest(digest)
    assert "0x" + signature.hex() == sdk_signature(key, timestamp, nonce, chain_id)
    assert Account._recover_hash(digest, signature=signature) == signer.address
    assert int.from_bytes(signature[32:64], "big") <= secp256k1.SECP256K1_N // 2 and signature[64] in (27, 28)


@settings(max_examples=40, deadline=None)
@given(key=KEYS, digest=st.binary(min_size=32, max_size=32))
def test_a_signature_recovers_its_key_and_no_other(key: str, digest: bytes) -> None:
    private = secp256k1.private_key(bytes.fromhex(key))
    sig = secp256k1.sign(private, digest)
    r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64] - 27
    assert secp256k1.recover(digest, r, s, v) == secp256k1.public_point(private)
    assert secp256k1.recover(digest, r, s, 1 - v) != secp256k1.public_point(private)
    assert (
        secp256k1.recover(digest, 0, s, v) is None
        and secp256k1.recover(digest, r, secp256k1.SECP256K1_N, v) is None
    )


@pytest.mark.parametrize(
    ("address", "nonce", "chain_id"),
    [
        ("0x1234", 0, 137),
        ("0x" + "g" * 40, 0, 137),
        (HARDHAT_ADDRESS, -1, 137),
        (HARDHAT_ADDRESS, 2**256, 137),
    ],
)
def test_what_no_struct_can_hold_is_refused(address: str, nonce: int, chain_id: int) -> None:
    with pytest.raises(ValueError):
        clob_auth_digest(address, 1, nonce, chain_id)


@pytest.mark.parametrize("secret", [bytes(32), (secp256k1.SECP256K1_N).to_bytes(32, "big"), bytes(31)])
def test_an_invalid_private_key_is_refused_without_its_bytes(secret: bytes) -> None:
    with pytest.raises(ValueError) as info:
        secp256k1.private_key(secret)
    assert secret.hex() not in str(info.value) and info.value.__cause__ is None


def test_eip55_matches_eth_account_for_the_mixed_case_vectors() -> None:
    # EIP-55's own examples.
    for address in (
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ):
        assert secp256k1.to_checksum(address.lower()) == address
