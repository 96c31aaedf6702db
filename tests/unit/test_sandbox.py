"""The sandbox's verifiers against the SDKs' own test vectors, and its key/rate-limit state without HTTP."""

from __future__ import annotations

import base64
import re
import time
import uuid

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from rotator.sandbox import KeyRecord, SandboxSettings
from rotator.sandbox.state import KeyRegistry, SlidingWindowLimiter, new_credentials, uuid7
from rotator.sandbox.verify import (
    clob_auth_typed_data,
    l2_signature,
    parse_nonce,
    parse_timestamp,
    recover_l1_signer,
    timestamp_in_window,
    verify_l1_signature,
    verify_l2_signature,
)

# clob-auth.md §1.6: py-clob-client tests/signing/test_eip712.py (Hardhat account #0, Amoy).
HARDHAT_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
HARDHAT_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
L1_VECTOR = (
    "0xf62319a987514da40e57e2f4d7529f7bac38f0355bd88bb5adbb3768d80de6c1"
    "682518e0af677d5260366425f4361e7b70c25ae232aff0ab2331e2b164a1aedc1b"
)

# clob-auth.md §2.2: py-clob-client tests/signing/test_hmac.py and rs-clob-client auth.rs::hmac_succeeds.
HMAC_SECRET = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
HMAC_VECTORS = [
    ('{"hash": "0x123"}', "ZwAdJKvoYRlEKDkNMwd5BuwNNtg93kNaR_oU2HrfVvc="),
    ('{"hash":"0x123"}', "4gJVbox-R6XlDK4nlaicig0_ANVL1qdcahiL8CXfXLM="),
]


# -- L1 ----------------------------------------------------------------------------------------------------


def test_l1_vector_recovers_hardhat_account() -> None:
    assert recover_l1_signer(HARDHAT_ADDRESS, "10000000", 23, 80002, L1_VECTOR) == HARDHAT_ADDRESS
    assert verify_l1_signature(HARDHAT_ADDRESS, "10000000", 23, 80002, L1_VECTOR)


def test_l1_typed_data_signs_to_the_sdk_vector() -> None:
    signable = encode_typed_data(full_message=clob_auth_typed_data(HARDHAT_ADDRESS, "10000000", 23, 80002))
    signed = Account.sign_message(signable, private_key=HARDHAT_KEY)
    assert "0x" + signed.signature.hex().removeprefix("0x") == L1_VECTOR


@pytest.mark.parametrize("address", [HARDHAT_ADDRESS.lower(), HARDHAT_ADDRESS.upper().replace("0X", "0x")])
def test_l1_address_is_compared_case_insensitively(address: str) -> None:
    # The Rust SDK sends the address lower-case; the server must accept it like the checksummed form.
    assert verify_l1_signature(address, "10000000", 23, 80002, L1_VECTOR)


@pytest.mark.parametrize(
    ("address", "timestamp", "nonce", "chain_id", "signature"),
    [
        (HARDHAT_ADDRESS, "10000000", 23, 137, L1_VECTOR),  # other chain
        (HARDHAT_ADDRESS, "10000001", 23, 80002, L1_VECTOR),  # other timestamp
        (HARDHAT_ADDRESS, "10000000", 24, 80002, L1_VECTOR),  # other nonce
        (
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "10000000",
            23,
            80002,
            L1_VECTOR,
        ),  # other claimed address
        (HARDHAT_ADDRESS, "10000000", 23, 80002, L1_VECTOR[:-2] + "1f"),  # invalid v
        (HARDHAT_ADDRESS, "10000000", 23, 80002, "0x" + "ff" * 65),  # r, s out of range
        (HARDHAT_ADDRESS, "10000000", 23, 80002, L1_VECTOR[:-2]),  # truncated
        (HARDHAT_ADDRESS, "10000000", 23, 80002, L1_VECTOR[2:]),  # no 0x
        ("not-an-address", "10000000", 23, 80002, L1_VECTOR),
        (HARDHAT_ADDRESS, "1e7", 23, 80002, L1_VECTOR),  # not a decimal integer
    ],
)
def test_l1_rejects_anything_but_the_signed_struct(
    address: str, timestamp: str, nonce: int, chain_id: int, signature: str
) -> None:
    assert not verify_l1_signature(address, timestamp, nonce, chain_id, signature)


def test_l1_header_parsing() -> None:
    assert parse_timestamp("10000000") == 10_000_000
    assert parse_timestamp(None) is None
    assert parse_timestamp("-5") is None
    assert parse_timestamp("1.5") is None
    assert parse_nonce(None) == 0  # absent nonce means 0, as in the SDKs and docs
    assert parse_nonce("23") == 23
    assert parse_nonce("x") is None
    assert parse_nonce(str(2**256)) is None


def test_timestamp_window_is_symmetric() -> None:
    assert timestamp_in_window(1000, 1120.0, 120.0)
    assert timestamp_in_window(1240, 1120.0, 120.0)
    assert not timestamp_in_window(999, 1120.0, 120.0)
    assert not timestamp_in_window(1241, 1120.0, 120.0)


# -- L2 ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), HMAC_VECTORS)
def test_l2_signature_matches_sdk_vectors(body: str, expected: str) -> None:
    assert l2_signature(HMAC_SECRET, "1000000", "test-sign", "/orders", body) == expected
    assert l2_signature(HMAC_SECRET, "1000000", "test-sign", "/orders", body.encode()) == expected
    assert verify_l2_signature(HMAC_SECRET, "1000000", "test-sign", "/orders", body.encode(), expected)


def test_l2_signature_covers_every_part() -> None:
    body, signature = HMAC_VECTORS[1]
    other_secret = base64.urlsafe_b64encode(b"\x01" * 32).decode()
    assert not verify_l2_signature(other_secret, "1000000", "test-sign", "/orders", body, signature)
    assert not verify_l2_signature(HMAC_SECRET, "1000001", "test-sign", "/orders", body, signature)
    assert not verify_l2_signature(HMAC_SECRET, "1000000", "TEST-SIGN", "/orders", body, signature)
    assert not verify_l2_signature(HMAC_SECRET, "1000000", "test-sign", "/orders?x=1", body, signature)
    # The spaced and compact serialisations are different bytes: the server has only what was sent.
    assert not verify_l2_signature(
        HMAC_SECRET, "1000000", "test-sign", "/orders", HMAC_VECTORS[0][0], signature
    )
    assert not verify_l2_signature(HMAC_SECRET, "1000000", "test-sign", "/orders", body, "é" + signature)


def test_l2_without_body_signs_timestamp_method_path_only() -> None:
    expected = l2_signature(HMAC_SECRET, "1000000", "GET", "/auth/api-keys", None)
    assert l2_signature(HMAC_SECRET, "1000000", "GET", "/auth/api-keys", b"") == expected
    assert l2_signature(HMAC_SECRET, "1000000GET/auth/api-keys", "", "", None) == expected


def test_l2_rejects_undecodable_secret() -> None:
    with pytest.raises(ValueError, match="base64"):
        l2_signature("not base64!", "1", "GET", "/", None)
    assert not verify_l2_signature("not base64!", "1", "GET", "/", None, "x")


# -- issued credentials ------------------------------------------------------------------------------------


def test_credentials_have_the_real_formats() -> None:
    creds = new_credentials()
    assert uuid.UUID(creds.api_key).version == 7
    assert len(creds.secret) == 44 and creds.secret.endswith("=")
    assert len(base64.urlsafe_b64decode(creds.secret)) == 32
    assert re.fullmatch(r"[0-9a-f]{64}", creds.passphrase)
    assert creds.secret not in repr(creds) and creds.passphrase not in repr(creds)


def test_uuid7_is_time_ordered() -> None:
    first = uuid7()
    time.sleep(0.002)
    assert uuid7() > first


def test_key_ids_carry_the_time_on_the_sandboxs_own_clock() -> None:
    """As the real CLOB stamps a key's UUIDv7 id with its clock: a sandbox whose clock runs ahead
    (``clock_offset``) mints ids of that time, which the rotation reads (issue 22 item 5)."""
    from rotator.rotation import minted_at

    ahead = SandboxSettings(clock_offset=600.0)
    creds = KeyRegistry().create(ADDRESS, 1, ahead)
    assert creds is not None
    made = minted_at(creds.api_key)
    assert made is not None and abs(made - ahead.server_time()) < 5


# -- key registry --------------------------------------------------------------------------------------------

ADDRESS = "0x00000000000000000000000000000000000000Aa"


def test_create_then_derive_returns_the_same_creds_case_insensitively() -> None:
    registry, settings = KeyRegistry(), SandboxSettings()
    creds = registry.create(ADDRESS, 5, settings)
    assert creds is not None
    assert registry.derive(ADDRESS.lower(), 5, settings) == creds
    assert registry.derive(ADDRESS, 6, settings) is None
    assert registry.live_ids(ADDRESS.upper().replace("0X", "0x"), settings) == [creds.api_key]


def test_duplicate_nonce_error_or_same() -> None:
    registry = KeyRegistry()
    creds = registry.create(ADDRESS, 0, SandboxSettings())
    assert registry.create(ADDRESS, 0, SandboxSettings(duplicate_nonce="error")) is None
    assert registry.create(ADDRESS, 0, SandboxSettings(duplicate_nonce="same")) == creds


def test_revoked_nonce_can_be_created_again_with_new_creds() -> None:
    registry, settings = KeyRegistry(), SandboxSettings()
    first = registry.create(ADDRESS, 0, settings)
    assert first is not None
    assert registry.revoke(first.api_key, "delete")
    assert not registry.revoke(first.api_key, "delete")  # idempotent
    second = registry.create(ADDRESS, 0, settings)
    assert second is not None and second.api_key != first.api_key and second.secret != first.secret
    records = registry.records(ADDRESS, settings)
    assert [r.api_key for r in records] == [first.api_key, second.api_key]
    assert records[0].revoked_by == "delete" and records[1].revoked_at is None


def test_revoke_unknown_key_raises() -> None:
    with pytest.raises(KeyError):
        KeyRegistry().revoke("nope", "invalidate")


def test_single_key_revokes_the_wallets_other_keys_only() -> None:
    registry = KeyRegistry()
    old = registry.create(ADDRESS, 0, SandboxSettings())
    other_wallet = registry.create("0x" + "bb" * 20, 0, SandboxSettings())
    new = registry.create(ADDRESS, 1, SandboxSettings(single_key=True))
    assert old is not None and new is not None and other_wallet is not None
    assert registry.live_ids(ADDRESS, SandboxSettings()) == [new.api_key]
    assert registry.records(ADDRESS, SandboxSettings())[0].revoked_by == "single_key"
    assert registry.live_ids("0x" + "bb" * 20, SandboxSettings()) == [other_wallet.api_key]


def test_l2_secret_checks_owner_passphrase_and_propagation() -> None:
    registry = KeyRegistry()
    creds = registry.create(ADDRESS, 0, SandboxSettings())
    assert creds is not None
    assert (
        registry.l2_secret(creds.api_key, ADDRESS.lower(), creds.passphrase, SandboxSettings())
        == creds.secret
    )
    assert registry.l2_secret(creds.api_key, "0x" + "bb" * 20, creds.passphrase, SandboxSettings()) is None
    assert registry.l2_secret(creds.api_key, ADDRESS, creds.passphrase + "0", SandboxSettings()) is None
    assert registry.l2_secret("unknown", ADDRESS, creds.passphrase, SandboxSettings()) is None
    slow = SandboxSettings(propagation_delay=60)
    assert registry.l2_secret(creds.api_key, ADDRESS, creds.passphrase, slow) is None


def test_ttl_expiry_is_recorded_at_the_moment_the_key_lapsed() -> None:
    registry = KeyRegistry()
    creds = registry.create(ADDRESS, 0, SandboxSettings())
    assert creds is not None
    ttl = SandboxSettings(key_ttl=0.05)
    assert registry.live_ids(ADDRESS, ttl) == [creds.api_key]
    time.sleep(0.06)
    assert registry.l2_secret(creds.api_key, ADDRESS, creds.passphrase, ttl) is None
    (record,) = registry.records(ADDRESS, ttl)
    assert record == KeyRecord(creds.api_key, 0, record.created_at, record.created_at + 0.05, "ttl")
    assert registry.derive(ADDRESS, 0, ttl) is None


# -- settings and rate limiter -------------------------------------------------------------------------------


def test_settings_defaults_and_validation() -> None:
    assert SandboxSettings() == SandboxSettings(
        chain_id=137,
        single_key=False,
        propagation_delay=0.0,
        duplicate_nonce="error",
        timestamp_window=120.0,
        auth_limit=100,
        auth_window=10.0,
        clock_offset=0.0,
        key_ttl=None,
    )
    for bad in ({"duplicate_nonce": "maybe"}, {"auth_window": 0}, {"key_ttl": 0}, {"propagation_delay": -1}):
        with pytest.raises(ValueError):
            SandboxSettings(**bad)


def test_limiter_admits_limit_then_reports_wait_without_consuming() -> None:
    limiter = SlidingWindowLimiter()
    assert [limiter.acquire(3, 0.2) for _ in range(3)] == [None, None, None]
    wait = limiter.acquire(3, 0.2)
    assert wait is not None and 0 < wait <= 0.2
    assert limiter.acquire(3, 0.2) is not None
    time.sleep(0.21)
    # The rejected attempts took no slot: a full window's worth is admitted again.
    assert [limiter.acquire(3, 0.2) for _ in range(3)] == [None, None, None]
    assert limiter.acquire(3, 0.2) is not None


def test_limiter_zero_limit_disables() -> None:
    limiter = SlidingWindowLimiter()
    assert all(limiter.acquire(0, 1.0) is None for _ in range(500))
