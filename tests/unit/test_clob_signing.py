"""Our signing against py-clob-client's own: the L2 HMAC we write ourselves, and the L1 seam.

L2: ``l2_signature`` must give the bytes ``py_clob_client.signing.hmac.build_hmac_signature`` gives.
L1: the adapter hands any Signer to the SDK's ``sign_clob_auth_message`` through ``_SdkSigner``; the
result must equal what the SDK's own ``Signer`` produces for the same private key.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.clob.adapter import _SdkSigner, l2_signature
from rotator.model import Secret
from rotator.signers.local import LocalKeySigner

HARDHAT0 = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


@pytest.mark.parametrize(
    ("secret", "ts", "method", "path", "body", "expected"),
    [
        # clob-auth.md section 2.2, the SDK's and the Rust client's test vectors
        (
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "1000000",
            "test-sign",
            "/orders",
            '{"hash": "0x123"}',
            "ZwAdJKvoYRlEKDkNMwd5BuwNNtg93kNaR_oU2HrfVvc=",
        ),
        (
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "1000000",
            "test-sign",
            "/orders",
            '{"hash":"0x123"}',
            "4gJVbox-R6XlDK4nlaicig0_ANVL1qdcahiL8CXfXLM=",
        ),
    ],
)
def test_l2_vectors(secret: str, ts: str, method: str, path: str, body: str, expected: str) -> None:
    assert l2_signature(Secret(secret), ts, method, path, body) == expected


@settings(max_examples=50, deadline=None)
@given(
    raw=st.binary(min_size=32, max_size=32),
    ts=st.integers(min_value=0, max_value=2**40),
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    path=st.sampled_from(["/auth/api-keys", "/auth/api-key", "/data/orders"]),
)
def test_l2_matches_the_sdk(raw: bytes, ts: int, method: str, path: str) -> None:
    import base64

    from py_clob_client.signing.hmac import build_hmac_signature

    secret = base64.urlsafe_b64encode(raw).decode()
    assert l2_signature(Secret(secret), str(ts), method, path) == build_hmac_signature(
        secret, str(ts), method, path
    )


@pytest.mark.parametrize("nonce", [0, 23, 2**64])
def test_l1_through_the_sdk_seam_matches_the_sdk_signer(nonce: int) -> None:
    from py_clob_client.signer import Signer as SdkSigner
    from py_clob_client.signing.eip712 import sign_clob_auth_message

    ours = sign_clob_auth_message(
        _SdkSigner(LocalKeySigner(Secret(HARDHAT0), source="test"), 80002), 10000000, nonce
    )
    theirs = sign_clob_auth_message(SdkSigner("0x" + HARDHAT0, 80002), 10000000, nonce)
    assert ours == theirs


def test_l1_sdk_test_vector() -> None:
    """clob-auth.md section 1.6: Hardhat #0, Amoy, ts 10000000, nonce 23."""
    from py_clob_client.signing.eip712 import sign_clob_auth_message

    sig = sign_clob_auth_message(
        _SdkSigner(LocalKeySigner(Secret(HARDHAT0), source="t"), 80002), 10000000, 23
    )
    assert sig == (
        "0xf62319a987514da40e57e2f4d7529f7bac38f0355bd88bb5adbb3768d80de6c1682518e0af677d5260366425f4361e7b70c25ae232aff0ab2331e2b164a1aedc1b"
    )
