"""Signer sources without servers: KMS signature conversion (property-tested), config, local keys.

The KMS-shaped signatures here come from a key this test makes itself, signing the digest as KMS does
(ECDSA over the prehashed digest, DER, either half of ``s``). The KMS signer itself is tested against
moto in tests/integration/test_signers.py, where no private key ever exists.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.config import Settings, load_settings
from rotator.errors import ConfigError, SignerError
from rotator.model import Secret
from rotator.signers.factory import build_signer, check_signer, describe, read_local_key
from rotator.signers.kms import SECP256K1_N, address_from_public_key, eth_signature, public_key_point
from rotator.signers.local import FetchedKeySigner, LocalKeySigner
from tests.harness import SECRETS

# Hardhat's account #0: a published test vector, never a real wallet.
HARDHAT_KEY = 0xAC0974BEC39A17E36BA4A6B4D238FF944BACB478CBED5EFCAE784D7BF4F2FF80
HARDHAT_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def spki(private: ec.EllipticCurvePrivateKey) -> bytes:
    """What KMS GetPublicKey returns: DER SubjectPublicKeyInfo."""
    return private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def kms_style_sign(private: ec.EllipticCurvePrivateKey, digest: bytes, *, high_s: bool | None) -> bytes:
    """A DER signature over ``digest`` as given, like KMS Sign with MessageType=DIGEST.

    ``high_s`` forces the upper (True) or lower (False) half of ``s``; KMS returns either.
    """
    der = private.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    if high_s is None:
        return der
    r, s = utils.decode_dss_signature(der)
    if (s > SECP256K1_N // 2) != high_s:
        s = SECP256K1_N - s  # the mirrored signature: just as valid for ECDSA
    return utils.encode_dss_signature(r, s)


# -- KMS signature conversion --------------------------------------------------------------------------


def test_address_from_kms_public_key_matches_the_wallet() -> None:
    private = ec.derive_private_key(HARDHAT_KEY, ec.SECP256K1())
    assert address_from_public_key(spki(private)) == HARDHAT_ADDRESS


@settings(max_examples=80, deadline=None)
@given(
    scalar=st.integers(min_value=1, max_value=SECP256K1_N - 1),
    digest=st.binary(min_size=32, max_size=32),
    high_s=st.sampled_from([True, False, None]),
)
def test_any_kms_signature_converts_to_one_that_recovers_the_address(
    scalar: int, digest: bytes, high_s: bool | None
) -> None:
    private = ec.derive_private_key(scalar, ec.SECP256K1())
    der = kms_style_sign(private, digest, high_s=high_s)
    sig = eth_signature(digest, der, public_key_point(spki(private)))

    assert len(sig) == 65 and sig[64] in (27, 28)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")
    assert (r, min(s, SECP256K1_N - s)) == (utils.decode_dss_signature(der)[0], s)
    assert s <= SECP256K1_N // 2  # EIP-2: Ethereum rejects high s
    assert Account._recover_hash(digest, signature=sig) == address_from_public_key(spki(private))


def test_a_signature_by_another_key_or_over_another_digest_is_refused() -> None:
    mine = ec.derive_private_key(HARDHAT_KEY, ec.SECP256K1())
    other = ec.derive_private_key(12345, ec.SECP256K1())
    digest = bytes(range(32))
    point = public_key_point(spki(mine))
    with pytest.raises(ValueError, match="does not recover"):
        eth_signature(digest, kms_style_sign(other, digest, high_s=None), point)
    # moto's bug (SHA-256 of the digest signed instead of the digest) looks exactly like this:
    with pytest.raises(ValueError, match="does not recover"):
        eth_signature(digest, mine.sign(digest, ec.ECDSA(hashes.SHA256())), point)


@pytest.mark.parametrize("der", [b"", b"\x30\x02\x01", b"not der at all", bytes(72)])
def test_malformed_der_is_refused(der: bytes) -> None:
    point = public_key_point(spki(ec.derive_private_key(HARDHAT_KEY, ec.SECP256K1())))
    with pytest.raises(ValueError):
        eth_signature(bytes(32), der, point)


def test_a_public_key_on_another_curve_is_refused() -> None:
    with pytest.raises(ValueError, match="secp256k1"):
        public_key_point(spki(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ValueError):
        public_key_point(b"\x30\x00")


# -- config --------------------------------------------------------------------------------------------


def settings_with(signer: Mapping[str, object], **store: object) -> Settings:
    return load_settings(
        None,
        data={
            "store": store or {"backend": "file"},
            "credentials": [
                {
                    "name": "mm1",
                    "signer": signer,
                    "path": "polymarket/mm1",
                    "rotate_every": "1d",
                    "grace": "1h",
                }
            ],
        },
    )


@pytest.mark.parametrize(
    ("signer", "error"),
    [
        ({"source": "vault"}, "signer.source vault needs signer.path"),
        ({"source": "vault", "path": "/abs"}, "signer.path must be a Vault path"),
        ({"source": "vault", "path": "w/mm1", "field": None}, "needs signer.field"),
        ({"source": "vault", "path": "w/mm1", "key_id": "k"}, "does not take signer.key_id"),
        ({"source": "aws-secretsmanager"}, "needs signer.secret_id"),
        ({"source": "aws-secretsmanager", "secret_id": "a b"}, "secret name or ARN"),
        ({"source": "aws-secretsmanager", "secret_id": "w", "field": ""}, "or be null"),
        ({"source": "aws-secretsmanager", "secret_id": "w", "mount": "m"}, "does not take signer.mount"),
        ({"source": "aws-kms"}, "needs signer.key_id"),
        ({"source": "aws-kms", "key_id": "alias/x", "field": "f"}, "does not take signer.field"),
        ({"source": "aws-kms", "key_id": "alias/x", "region": "Mars"}, "signer.region must look like"),
        ({"source": "aws-kms", "key_id": "alias/x", "endpoint_url": "ftp://x"}, "endpoint_url must be"),
        ({"source": "env", "env": "K", "path": "/k"}, "does not take signer.path"),
        ({"source": "file"}, "signer.source file needs signer.path"),
        ({"source": "gcp-kms"}, "credentials[mm1].signer.source"),
    ],
)
def test_signer_config_errors_name_the_field(signer: dict[str, object], error: str) -> None:
    store = {"backend": "file", "vault": {"url": "http://127.0.0.1:1"}}
    with pytest.raises(ConfigError) as info:
        settings_with(signer, **store)
    assert error in str(info.value)


def test_a_vault_signer_needs_the_store_vault_section() -> None:
    with pytest.raises(ConfigError, match=r"signer\.source vault reads with store\.vault"):
        settings_with({"source": "vault", "path": "wallets/mm1"})


def test_every_source_loads_with_its_own_fields() -> None:
    for signer in (
        {"source": "env", "env": "K"},
        {"source": "file", "path": "/k"},
        {"source": "vault", "path": "wallets/mm1", "field": "key", "mount": "kv"},
        {
            "source": "aws-secretsmanager",
            "secret_id": "arn:aws:secretsmanager:us-east-1:1:secret:w",
            "field": None,
        },
        {"source": "aws-kms", "key_id": "alias/wallet", "region": "eu-west-1", "endpoint_url": "http://h:1"},
    ):
        settings_with(signer, backend="file", vault={"url": "http://127.0.0.1:1"})


@pytest.mark.parametrize(
    ("file", "error"),
    [
        ({"kms_key_id": "alias/f", "key_env": "K"}, "takes key_env or kms_key_id, not both"),
        ({"kms_region": "us-east-1"}, "only go with kms_key_id"),
        ({"kms_key_id": "alias/f", "kms_endpoint_url": "nope"}, "kms_endpoint_url must be"),
        ({"kms_key_id": "a b"}, "kms_key_id must be"),
    ],
)
def test_file_store_envelope_config(file: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, data={"store": {"backend": "file", "file": file}})
    assert error in str(info.value)
    assert load_settings(None, data={"store": {"file": {"kms_key_id": "alias/f"}}}).store.file.kms_key_id


# -- env and file sources ------------------------------------------------------------------------------


def test_file_key_must_be_private_to_the_owner(tmp_path: Path, wallet: tuple[str, str]) -> None:
    key_file = tmp_path / "wallet.key"
    key_file.write_text(wallet[0] + "\n")
    cfg = settings_with({"source": "file", "path": str(key_file)})
    cred = cfg.credentials[0]
    key_file.chmod(0o640)
    with pytest.raises(SignerError, match=r"readable by group or others \(mode 640\); chmod 600"):
        check_signer(cred, cfg, {})
    key_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
    signer = build_signer(cred, cfg, {})
    assert signer.address == wallet[1]


def test_a_malformed_key_names_the_source_never_the_value() -> None:
    bad = "0x" + "zz" * 32
    SECRETS.add(bad)
    cfg = settings_with({"source": "env", "env": "WALLET"})
    cred = cfg.credentials[0]
    with pytest.raises(SignerError) as info:
        read_local_key(cred, {"WALLET": bad})
    assert str(info.value).startswith("credentials[mm1].signer (env WALLET): not a private key")
    assert bad not in str(info.value) and "zz" not in str(info.value)
    out_of_range = f"{SECP256K1_N:064x}"  # the right shape, but not a valid secp256k1 scalar
    with pytest.raises(SignerError, match="not a valid secp256k1 private key") as info:
        LocalKeySigner(Secret(out_of_range), source=describe(cred))
    assert out_of_range not in str(info.value) and info.value.__cause__ is None


# -- the per-signature fetch of remote sources ---------------------------------------------------------


def test_a_fetched_key_is_read_for_each_signature_and_checked_against_the_address(
    wallet: tuple[str, str],
) -> None:
    keys = [wallet[0]]
    reads: list[int] = []

    def fetch() -> Secret:
        reads.append(1)
        return Secret(keys[-1])

    signer = FetchedKeySigner(fetch, source="credentials[mm1].signer (test)")
    assert signer.address == wallet[1] and len(reads) == 1
    digest = os.urandom(32)
    assert Account._recover_hash(digest, signature=signer.sign_digest(digest)) == wallet[1]
    assert len(reads) == 2
    assert "LocalKeySigner" not in repr(vars(signer))  # only the address is kept between signatures

    other = Account.create()
    SECRETS.add(other.key.hex())
    keys.append(other.key.hex())
    with pytest.raises(SignerError, match=r"\(test\): now holds the key of another wallet"):
        signer.sign_digest(digest)


def test_the_kms_signing_policy_grants_sign_and_get_public_key_on_one_key_only() -> None:
    policy = json.loads((Path(__file__).parents[2] / "deploy/aws/rotator-kms-sign-policy.json").read_text())
    granted = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        action, resource = statement["Action"], statement["Resource"]
        assert isinstance(action, str) and isinstance(resource, str), "one action on one key per statement"
        granted[action] = resource
    assert set(granted) == {"kms:Sign", "kms:GetPublicKey"}
    assert len(set(granted.values())) == 1
    (key,) = set(granted.values())
    assert key.startswith("arn:aws:kms:") and ":key/" in key and "*" not in key
    sign = next(s for s in policy["Statement"] if s["Action"] == "kms:Sign")
    assert sign["Condition"]["StringEquals"] == {
        "kms:SigningAlgorithm": "ECDSA_SHA_256",
        "kms:MessageType": "DIGEST",
    }
