"""Signer sources against real servers: Vault on OpenBao, Secrets Manager and KMS on moto, the sandbox CLOB.

KMS keys are made inside moto; no test here ever sees their private half. moto needs the test-only
DIGEST fix (tests/moto_kms_digest_fix.py, upstream getmoto/moto#10202) for KMS signing to be AWS's.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from eth_account import Account

from rotator.clob.adapter import ClobAdapter
from rotator.clob.budget import SlidingWindowBudget
from rotator.config import Settings, load_settings
from rotator.errors import ConfigError, Corrupt, RotatorError, SignerError, Unavailable
from rotator.model import CredentialRef, Key, Secret
from rotator.sandbox import Sandbox
from rotator.signers.factory import build_signer, check_signer
from rotator.signers.kms import SECP256K1_N, KmsSigner
from rotator.stores.envelope import CONTEXT, datakey_path, open_data_key
from rotator.stores.file import FileStore
from tests.harness import SECRETS, Worker, sdk_works
from tests.moto_kms_digest_fix import moto_kms_digest_fix  # noqa: F401 - a fixture, used by name
from tests.servers import OpenBao, free_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("moto_kms_digest_fix")]


# -- fixtures and helpers ------------------------------------------------------------------------------


@pytest.fixture
def kms(moto_server: str) -> Iterator[Any]:
    client = boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def secretsmanager(moto_server: str) -> Iterator[Any]:
    client = boto3.client("secretsmanager", endpoint_url=moto_server, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def kms_key(kms: Any) -> str:
    """A fresh secp256k1 signing key, made (and kept) inside moto."""
    meta = kms.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    alias = f"alias/wallet-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    return alias


def one_credential(signer: dict[str, Any], **store: Any) -> Settings:
    return load_settings(
        None,
        data={
            "store": {"backend": "file", "aws": {"max_attempts": 1, "timeout": 5}, **store},
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


def signer_from(signer: dict[str, Any], env: dict[str, str] | None = None, **store: Any) -> Any:
    settings = one_credential(signer, **store)
    cred = settings.credentials[0]
    check_signer(cred, settings, env or {})
    return build_signer(cred, settings, env or {})


def recovers(signer: Any, address: str) -> bool:
    digest = os.urandom(32)
    return bool(Account._recover_hash(digest, signature=signer.sign_digest(digest)) == address)


def vault_store(bao: OpenBao) -> dict[str, Any]:
    return {"vault": {"url": bao.url, "auth": {"method": "token", "token_env": "TEST_VAULT_TOKEN"}}}


def put_kv(bao: OpenBao, path: str, data: dict[str, str]) -> None:
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def clob(sandbox: Sandbox) -> ClobAdapter:
    # No client-side budget: the 200-signature test sends 200 L1 requests in a few seconds.
    return ClobAdapter(sandbox.url, 137, auth_budget=SlidingWindowBudget(0, 10.0))


def key_works(sandbox: Sandbox, key: Key) -> bool:
    """An L2 call with the published key (HMAC only: works for KMS wallets, which have no key to hand)."""
    adapter = clob(sandbox)
    try:
        return key.api_key in adapter.list_keys(key)
    finally:
        adapter.close()


# -- moto's DIGEST fix ---------------------------------------------------------------------------------


def test_digest_fix_still_needed(kms: Any, kms_key: str) -> None:
    """Without tests/moto_kms_digest_fix.py, moto signs SHA-256(digest); when a release fixes that
    (getmoto/moto#10202), this fails: delete the fix and this test."""
    from tests import moto_kms_digest_fix as fix

    public = serialization.load_der_public_key(kms.get_public_key(KeyId=kms_key)["PublicKey"])
    assert isinstance(public, ec.EllipticCurvePublicKey)
    digest = os.urandom(32)

    def sign() -> bytes:
        sig: bytes = kms.sign(
            KeyId=kms_key, Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256"
        )["Signature"]
        return sig

    public.verify(sign(), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))  # fixed: AWS's behaviour
    with pytest.MonkeyPatch.context() as mp:
        for (cls, name), original in fix.ORIGINALS.items():
            mp.setattr(cls, name, original)
        unfixed = sign()
    try:
        public.verify(unfixed, digest, ec.ECDSA(hashes.SHA256()))  # moto's bug: SHA-256(digest) signed
    except InvalidSignature:
        pytest.fail(
            f"moto now signs DIGEST messages as AWS does ({fix.UPSTREAM} released?): "
            "delete tests/moto_kms_digest_fix.py and its uses"
        )


# -- aws-kms -------------------------------------------------------------------------------------------


@dataclass
class Recording:
    """Our signer, with every signature it hands the SDK kept for inspection."""

    inner: KmsSigner
    out: list[bytes] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.inner.address

    def sign_digest(self, digest: bytes) -> bytes:
        sig = self.inner.sign_digest(digest)
        self.out.append(sig)
        return sig


def test_kms_signed_l1_requests_are_accepted_200_times_high_s_included(
    sandbox: Sandbox, kms: Any, kms_key: str
) -> None:
    from_kms: list[bytes] = []
    kms.meta.events.register("after-call.kms.Sign", lambda parsed, **_: from_kms.append(parsed["Signature"]))
    signer = Recording(KmsSigner(kms, kms_key, source="test kms"))
    adapter = clob(sandbox)
    try:
        created = adapter.create_key(signer, 0)  # POST /auth/api-key through py-clob-client's signing
        SECRETS.update((created.api_secret.reveal(), created.api_passphrase.reveal()))
        for _ in range(199):
            derived = adapter.derive_key(signer, 0)  # each one a fresh L1 signature the sandbox recovers
            assert derived is not None and derived.api_key == created.api_key
    finally:
        adapter.close()

    assert len(from_kms) == len(signer.out) == 200
    high = sum(utils.decode_dss_signature(der)[1] > SECP256K1_N // 2 for der in from_kms)
    assert 0 < high < 200, "KMS returns either half of s; 200 signatures without both is ~2^-200"
    assert all(int.from_bytes(sig[32:64], "big") <= SECP256K1_N // 2 for sig in signer.out)
    assert all(sig[64] in (27, 28) for sig in signer.out)
    assert sandbox.live_keys(signer.address) == [created.api_key]


def test_kms_signer_via_the_factory_pins_the_key_behind_an_alias(
    kms: Any, kms_key: str, moto_server: str
) -> None:
    signer = signer_from({"source": "aws-kms", "key_id": kms_key, "endpoint_url": moto_server})
    try:
        assert recovers(signer, signer.address)
        # Re-pointing the alias at another key does not switch wallets under a running worker.
        other = kms.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        kms.update_alias(AliasName=kms_key, TargetKeyId=other)
        assert recovers(signer, signer.address)
    finally:
        signer.close()


@pytest.mark.parametrize(
    ("make", "error"),
    [
        ({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}, "is ECC_NIST_P256, not ECC_SECG_P256K1"),
        # AWS answers UnsupportedOperationException; moto returns the spec, which is refused too.
        (None, "(UnsupportedOperationException|is SYMMETRIC_DEFAULT, not ECC_SECG_P256K1)"),
        ("missing", "GetPublicKey: NotFoundException"),
    ],
)
def test_kms_keys_that_cannot_sign_ethereum_are_refused(
    kms: Any, moto_server: str, make: Any, error: str
) -> None:
    if make == "missing":
        key_id = str(uuid.uuid4())
    else:
        key_id = kms.create_key(**(make or {}))["KeyMetadata"]["KeyId"]
    with pytest.raises(SignerError) as info:
        signer_from({"source": "aws-kms", "key_id": key_id, "endpoint_url": moto_server})
    assert str(info.value).startswith(f"credentials[mm1].signer (aws-kms {key_id}): ")
    assert re.search(error, str(info.value))


def test_an_unreachable_kms_is_unavailable_not_a_config_error() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable, match=r"\(aws-kms alias/w\): GetPublicKey: cannot reach AWS"):
        signer_from(
            {"source": "aws-kms", "key_id": "alias/w", "endpoint_url": endpoint, "region": "us-east-1"}
        )


# -- aws-secretsmanager --------------------------------------------------------------------------------


def test_secretsmanager_source_reads_a_json_field_or_the_whole_value(
    secretsmanager: Any, moto_server: str, wallet: tuple[str, str]
) -> None:
    name = f"wallets/{uuid.uuid4().hex[:8]}"
    secretsmanager.create_secret(Name=name, SecretString=json.dumps({"private_key": wallet[0], "note": "x"}))
    signer = signer_from({"source": "aws-secretsmanager", "secret_id": name, "endpoint_url": moto_server})
    try:
        assert signer.address == wallet[1] and recovers(signer, wallet[1])
    finally:
        signer.close()

    plain = f"wallets/{uuid.uuid4().hex[:8]}"
    secretsmanager.create_secret(Name=plain, SecretString=wallet[0])
    signer = signer_from(
        {"source": "aws-secretsmanager", "secret_id": plain, "field": None, "endpoint_url": moto_server}
    )
    assert signer.address == wallet[1]
    signer.close()


@pytest.mark.parametrize(
    ("value", "field", "error"),
    [
        ("KEY", "wallet", "the secret has no text field 'wallet'"),
        ("not json KEY", "private_key", "not a JSON object (set signer.field: null"),
        ("0xnot-a-key", None, "not a private key (expected 64 hex characters"),
        (None, "private_key", "GetSecretValue: ResourceNotFoundException"),
    ],
)
def test_secretsmanager_errors_name_the_source_never_the_value(
    secretsmanager: Any,
    moto_server: str,
    wallet: tuple[str, str],
    value: str | None,
    field: str | None,
    error: str,
) -> None:
    name = f"wallets/{uuid.uuid4().hex[:8]}"
    if value is not None:
        text = value.replace("KEY", wallet[0])
        if value == "KEY":
            text = json.dumps({"private_key": wallet[0]})
        secretsmanager.create_secret(Name=name, SecretString=text)
    signer: dict[str, Any] = {"source": "aws-secretsmanager", "secret_id": name, "endpoint_url": moto_server}
    if field != "private_key":
        signer["field"] = field
    with pytest.raises(SignerError) as info:
        signer_from(signer)
    message = str(info.value)
    assert message.startswith(f"credentials[mm1].signer (aws-secretsmanager {name}")
    assert error in message
    assert wallet[0].removeprefix("0x") not in message


# -- vault ---------------------------------------------------------------------------------------------


def test_vault_source_reads_a_kv_field_with_the_store_auth(openbao: OpenBao, wallet: tuple[str, str]) -> None:
    path = f"wallets/{uuid.uuid4().hex[:8]}"
    put_kv(openbao, path, {"private_key": wallet[0]})
    signer = signer_from(
        {"source": "vault", "path": path}, {"TEST_VAULT_TOKEN": openbao.root_token}, **vault_store(openbao)
    )
    try:
        assert signer.address == wallet[1] and recovers(signer, wallet[1])
        # Read at every signature: a different wallet in the source is refused, not silently used.
        other = Account.create()
        SECRETS.add(other.key.hex())
        put_kv(openbao, path, {"private_key": other.key.hex()})
        with pytest.raises(SignerError, match="now holds the key of another wallet"):
            signer.sign_digest(os.urandom(32))
    finally:
        signer.close()


def test_vault_errors_name_the_source_never_the_value(openbao: OpenBao, wallet: tuple[str, str]) -> None:
    root = openbao.client()
    base = f"wallets/{uuid.uuid4().hex[:8]}"
    put_kv(openbao, f"{base}/bad", {"private_key": wallet[0][:-2]})
    put_kv(openbao, f"{base}/other-field", {"key": wallet[0]})
    root.sys.create_or_update_policy(
        name="no-wallets", policy='path "secret/data/nothing" { capabilities = ["read"] }'
    )
    weak = root.auth.token.create(policies=["no-wallets"], ttl="5m")["auth"]["client_token"]
    cases = [
        (f"{base}/bad", openbao.root_token, "not a private key"),
        (f"{base}/other-field", openbao.root_token, "the secret has no text field 'private_key'"),
        (f"{base}/missing", openbao.root_token, f"no secret at secret/{base}/missing"),
        (f"{base}/bad", weak, "permission denied"),
    ]
    for path, token, error in cases:
        with pytest.raises(SignerError) as info:
            signer_from(
                {"source": "vault", "path": path}, {"TEST_VAULT_TOKEN": token}, **vault_store(openbao)
            )
        message = str(info.value)
        assert message.startswith(f"credentials[mm1].signer (vault {path}#private_key): "), message
        assert error in message, message
        assert wallet[0][2:20] not in message


def test_a_vault_signer_without_its_token_is_a_config_error_at_start(openbao: OpenBao) -> None:
    settings = one_credential({"source": "vault", "path": "wallets/x"}, **vault_store(openbao))
    with pytest.raises(ConfigError, match="TEST_VAULT_TOKEN is not set"):
        check_signer(settings.credentials[0], settings, {})


# -- the file store's KMS envelope ---------------------------------------------------------------------


def test_envelope_data_key_is_made_once_and_decrypted_after(kms: Any, tmp_path: Path) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    path = tmp_path / "keys.enc"
    first = open_data_key(path, kms, key_id)
    holder = datakey_path(path)
    stored = json.loads(holder.read_text())
    assert first.hex() not in holder.read_text() and holder.stat().st_mode & 0o777 == 0o600
    blob = base64.b64decode(stored["ciphertext_blob"])
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)["Plaintext"] == first
    assert open_data_key(path, kms, key_id) == first  # a restart decrypts, it does not make a new one


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o777], ids=oct)
def test_envelope_directories_and_data_key_are_private_whatever_the_umask(
    kms: Any, tmp_path: Path, umask: int
) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    path = tmp_path / "x" / "y" / "keys.enc"
    old = os.umask(umask)
    try:
        open_data_key(path, kms, key_id)
    finally:
        os.umask(old)
    for made in (tmp_path / "x", tmp_path / "x" / "y"):
        assert made.stat().st_mode & 0o777 == 0o700, made
    assert datakey_path(path).stat().st_mode & 0o777 == 0o600


def test_workers_starting_together_agree_on_one_data_key(kms: Any, tmp_path: Path) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    path = tmp_path / "keys.enc"
    with ThreadPoolExecutor(4) as pool:
        keys = list(pool.map(lambda _: open_data_key(path, kms, key_id), range(4)))
    assert len(set(keys)) == 1
    assert open_data_key(path, kms, key_id) == keys[0]


def test_envelope_refuses_what_it_cannot_decrypt(kms: Any, tmp_path: Path) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    path = tmp_path / "keys.enc"
    FileStore(path, os.urandom(32)).publish(CredentialRef("mm1", "p"), sample_key())  # made with key_env
    with pytest.raises(ConfigError, match=r"keys\.enc exists but its data key .*keys\.enc\.datakey does not"):
        open_data_key(path, kms, key_id)
    datakey_path(path).write_text('{"format": "rotator-file-store-datakey", "v": 1, "ciphertext_blob": "!!"}')
    with pytest.raises(Corrupt, match="malformed data key file"):
        open_data_key(path, kms, key_id)
    other = tmp_path / "other.enc"
    open_data_key(other, kms, kms.create_key()["KeyMetadata"]["KeyId"])
    datakey_path(path).write_text(datakey_path(other).read_text())
    # A data key made under another KMS key: AWS answers IncorrectKeyException (Corrupt), moto denies
    # access (ConfigError); either way it is refused, naming the setting or the file.
    with pytest.raises(RotatorError, match=r"store\.file\.kms_key_id|does not decrypt"):
        open_data_key(path, kms, key_id)


def sample_key() -> Key:
    return Key("k" * 36, Secret("c2VjcmV0"), Secret("passphrase"), "0x" + "1" * 40, 0, 0.0)


# -- a full rotation with each source, through the CLI -------------------------------------------------


@dataclass
class SignerWorker(Worker):
    """A Worker whose wallet key comes from ``signer`` (and whose file store may be KMS-enveloped)."""

    signer: dict[str, Any] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    store_key: bytes | None = None

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["credentials"][0]["signer"] = self.signer
        return cfg

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("TEST_WALLET_KEY", None)  # the key must come from the configured source alone
        env.update(self.extra_env)
        return env

    def store(self) -> FileStore:
        return FileStore(self.tmp / "keys.enc", self.store_key) if self.store_key else super().store()


def rotate_and_check(w: SignerWorker, sandbox: Sandbox) -> Key:
    assert "mm1: rotated" in w.rotate().stdout
    published = w.published()
    assert published is not None and published.address == w.address
    assert key_works(sandbox, published)
    assert set(sandbox.live_keys(w.address)) == w.known_keys()
    return published


def test_full_rotation_with_a_file_signer(sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> None:
    """(The env source is the one every other end-to-end test uses.)"""
    key_file = tmp_path / "wallet.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, wallet[0].encode() + b"\n")
    os.close(fd)
    w = SignerWorker(tmp_path, sandbox.url, *wallet, signer={"source": "file", "path": str(key_file)})
    key = rotate_and_check(w, sandbox)
    assert sdk_works(sandbox.url, wallet[0], key)


def test_full_rotation_with_a_vault_signer(
    sandbox: Sandbox, openbao: OpenBao, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    path = f"wallets/{uuid.uuid4().hex[:8]}"
    put_kv(openbao, path, {"private_key": wallet[0]})
    w = SignerWorker(
        tmp_path,
        sandbox.url,
        *wallet,
        signer={"source": "vault", "path": path},
        extra_env={"TEST_VAULT_TOKEN": openbao.root_token},
    )
    w.extra = {"store": {**w.config()["store"], **vault_store(openbao)}}  # file store; vault for the signer
    w.write_config()
    key = rotate_and_check(w, sandbox)
    assert sdk_works(sandbox.url, wallet[0], key)


def test_full_rotation_with_a_secretsmanager_signer(
    sandbox: Sandbox, secretsmanager: Any, moto_server: str, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    name = f"wallets/{uuid.uuid4().hex[:8]}"
    secretsmanager.create_secret(Name=name, SecretString=json.dumps({"private_key": wallet[0]}))
    w = SignerWorker(
        tmp_path,
        sandbox.url,
        *wallet,
        signer={"source": "aws-secretsmanager", "secret_id": name, "endpoint_url": moto_server},
    )
    key = rotate_and_check(w, sandbox)
    assert sdk_works(sandbox.url, wallet[0], key)


@pytest.mark.slow
def test_full_rotation_with_a_kms_signer_and_a_kms_enveloped_file_store(
    sandbox: Sandbox, kms: Any, kms_key: str, moto_server: str, tmp_path: Path
) -> None:
    address = KmsSigner(kms, kms_key, source="test").address
    file_kms = kms.create_key()["KeyMetadata"]["KeyId"]
    w = SignerWorker(
        tmp_path,
        sandbox.url,
        private_key="",  # there is none: it never leaves KMS
        address=address,
        signer={"source": "aws-kms", "key_id": kms_key, "endpoint_url": moto_server},
    )
    w.extra = {
        "store": {
            "backend": "file",
            "file": {
                "path": str(tmp_path / "keys.enc"),
                "kms_key_id": file_kms,
                "kms_endpoint_url": moto_server,
            },
        }
    }
    w.write_config()
    assert "mm1: rotated" in w.rotate().stdout  # first run: makes the data key
    w.store_key = open_data_key(tmp_path / "keys.enc", kms, file_kms)
    first = w.published()
    assert first is not None and first.address == address and key_works(sandbox, first)
    assert "mm1: rotated" in w.rotate("--force").stdout  # second run: decrypts the data key
    now = w.published()
    assert now is not None and now.nonce == first.nonce + 1 and key_works(sandbox, now)
    assert set(sandbox.live_keys(address)) == w.known_keys()
