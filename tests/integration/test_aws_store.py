"""The AWS Secrets Manager store against moto on loopback: labels, tags, KMS, failures, the real CLI.

Failures AWS produces but moto does not (AccessDenied under a least-privilege role, throttling) come
from :class:`FaultProxy`, a real HTTP hop in front of moto that answers chosen calls with the error
body AWS sends; everything else is forwarded untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.clob.adapter import ClobAdapter
from rotator.config import AwsStoreSettings, load_settings
from rotator.errors import (
    AccessDenied,
    ConfigError,
    Corrupt,
    NotFound,
    StoreError,
    Unauthorized,
    Unavailable,
    VersionConflict,
)
from rotator.model import Ack, CredentialRef, CredentialState, Key, Pending, Retiring, Secret
from rotator.rotation import Policy, Rotator
from rotator.sandbox import Sandbox, SandboxSettings
from rotator.signers.local import LocalKeySigner
from rotator.stores.aws import AwsStore, make_client
from tests.aws_faults import FaultProxy

ROTATOR = str(Path(sys.executable).parent / "rotator")
T0 = 1_700_000_000.5


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    p = FaultProxy(moto_server)
    yield p
    p.stop()


# -- helpers ------------------------------------------------------------------------------------------------


@pytest.fixture
def sm(moto_server: str) -> Any:
    """A plain boto3 client, for setting up and inspecting what the store wrote."""
    import boto3

    return boto3.client("secretsmanager", endpoint_url=moto_server, region_name="us-east-1")


@pytest.fixture
def ref() -> CredentialRef:
    name = f"mm-{uuid.uuid4().hex[:10]}"
    return CredentialRef(name, f"bots/{name}")


def open_store(url: str, **kw: Any) -> AwsStore:
    attempts = kw.pop("max_attempts", 1)
    settings = AwsStoreSettings(endpoint_url=url, region="us-east-1", max_attempts=attempts)
    return AwsStore(make_client(settings), **kw)


@pytest.fixture
def store(moto_server: str) -> Iterator[AwsStore]:
    s = open_store(moto_server)
    yield s
    s.close()


def make_key(nonce: int) -> Key:
    return Key(
        api_key=f"{uuid.uuid4()}",
        api_secret=Secret(f"c2VjcmV0LXt{nonce}LXNlY3JldA=="),
        api_passphrase=Secret(f"passphrase-{nonce}-{uuid.uuid4().hex}"),
        address="0x" + "cd" * 20,
        nonce=nonce,
        created_at=T0 + nonce,
    )


def labels(sm: Any, path: str) -> dict[str, str]:
    """label -> VersionId of the published secret."""
    stages = sm.describe_secret(SecretId=path).get("VersionIdsToStages", {})
    return {label: vid for vid, ls in stages.items() for label in ls}


def value(sm: Any, path: str, stage: str = "AWSCURRENT") -> dict[str, Any]:
    # VersionStage explicitly: after a label move, moto (unlike AWS) still answers a request without
    # one with the secret's first version.
    return dict(json.loads(sm.get_secret_value(SecretId=path, VersionStage=stage)["SecretString"]))


# -- the store's layout -------------------------------------------------------------------------------------


def test_created_secrets_are_tagged_and_encrypted_with_the_configured_key(
    moto_server: str, sm: Any, ref: CredentialRef
) -> None:
    import boto3

    kms = boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1")
    key_id = kms.create_key(Description="rotator test")["KeyMetadata"]["KeyId"]
    store = open_store(moto_server, kms_key_id=key_id, state_prefix="ops/rotator-state/")
    store.save(ref, CredentialState(next_nonce=1), None)
    store.publish(ref, make_key(0))
    for name, role in ((f"ops/rotator-state/{ref.name}", "state"), (ref.path, "published")):
        desc = sm.describe_secret(SecretId=name)
        assert desc["KmsKeyId"] == key_id
        tags = {t["Key"]: t["Value"] for t in desc["Tags"]}
        assert tags == {"managed-by": "rotator", "rotator-credential": ref.name, "rotator-role": role}
    assert (
        json.loads(sm.get_secret_value(SecretId=f"ops/rotator-state/{ref.name}")["SecretString"])[
            "next_nonce"
        ]
        == 1
    )
    store.close()


def test_publish_is_idempotent_and_awsprevious_follows(store: AwsStore, sm: Any, ref: CredentialRef) -> None:
    k1, k2 = make_key(1), make_key(2)
    store.publish(ref, k1)
    store.publish(ref, k1)  # a retried step: no new version
    assert labels(sm, ref.path) == {"AWSCURRENT": store.key_version(ref, k1)}
    store.publish(ref, k2)
    store.publish(ref, k2)
    assert labels(sm, ref.path) == {
        "AWSCURRENT": store.key_version(ref, k2),
        "AWSPREVIOUS": store.key_version(ref, k1),
    }
    assert value(sm, ref.path) == k2.to_dict()
    assert value(sm, ref.path, "AWSPREVIOUS") == k1.to_dict()
    assert store.read_published(ref) == k2


def test_pending_key_sits_under_awspending_and_never_under_awscurrent(
    store: AwsStore, sm: Any, ref: CredentialRef
) -> None:
    old, new = make_key(1), make_key(2)
    pending = Pending(nonce=2, started_at=T0, owner="w", lease_until=T0 + 60)
    # Before anything is published, a pending key is not mirrored: a first version would be AWSCURRENT.
    v = store.save(ref, CredentialState(pending=replace(pending, key=old), next_nonce=2), None)
    assert store.read_published(ref) is None
    v = store.save(ref, CredentialState(current=old, next_nonce=2, published_nonce=None), v)
    store.publish(ref, old)
    v = store.save(ref, CredentialState(current=old, next_nonce=2, published_nonce=1), v)
    assert labels(sm, ref.path) == {"AWSCURRENT": store.key_version(ref, old)}

    v = store.save(ref, CredentialState(current=old, pending=pending, next_nonce=3, published_nonce=1), v)
    assert "AWSPENDING" not in labels(sm, ref.path)  # only the intent: no key yet
    with_key = CredentialState(
        current=old, pending=replace(pending, key=new), next_nonce=3, published_nonce=1
    )
    v = store.save(ref, with_key, v)
    assert labels(sm, ref.path)["AWSPENDING"] == store.key_version(ref, new)
    assert value(sm, ref.path, "AWSPENDING") == new.to_dict()
    assert value(sm, ref.path) == old.to_dict()  # consumers still read the verified key

    retiring = (Retiring(old, T0 + 5, T0 + 65),)
    promoted = CredentialState(current=new, retiring=retiring, next_nonce=3, published_nonce=1)
    v = store.save(ref, promoted, v)  # saved as current, not yet published: still pending
    assert labels(sm, ref.path) == {
        "AWSCURRENT": store.key_version(ref, old),
        "AWSPENDING": store.key_version(ref, new),
    }
    store.publish(ref, new)
    v = store.save(ref, replace(promoted, published_nonce=2), v)
    assert labels(sm, ref.path) == {
        "AWSCURRENT": store.key_version(ref, new),
        "AWSPREVIOUS": store.key_version(ref, old),
    }
    # Revoked: no label may point at the dead key any more.
    store.save(ref, replace(promoted, published_nonce=2, retiring=()), v)
    assert labels(sm, ref.path) == {"AWSCURRENT": store.key_version(ref, new)}


def test_abandoned_pending_key_loses_awspending(store: AwsStore, sm: Any, ref: CredentialRef) -> None:
    cur, bad = make_key(1), make_key(2)
    store.publish(ref, cur)
    base = CredentialState(current=cur, next_nonce=3, published_nonce=1)
    pending = Pending(nonce=2, started_at=T0, owner="w", lease_until=T0 + 60, key=bad)
    v = store.save(ref, replace(base, pending=pending), None)
    assert "AWSPENDING" in labels(sm, ref.path)
    store.save(ref, replace(base, retiring=(Retiring(bad, T0, T0, "unverified"),)), v)
    assert labels(sm, ref.path) == {"AWSCURRENT": store.key_version(ref, cur)}


def test_acks_are_tags_that_never_move_a_version(store: AwsStore, sm: Any, ref: CredentialRef) -> None:
    with pytest.raises(NotFound):
        store.ack(ref, "bot-1", "abcd1234", T0)
    assert store.acks(ref) == []
    v = store.save(ref, CredentialState(next_nonce=1), None)
    store.publish(ref, make_key(0))
    before = labels(sm, ref.path)
    store.ack(ref, "bot-1", "abcd1234", T0)
    store.ack(ref, "bot-2", "abcd1234", T0 + 1)
    store.ack(ref, "bot-1", "ef567890", T0 + 2)  # replaces bot-1's earlier one
    sm.tag_resource(SecretId=ref.path, Tags=[{"Key": "rotator-ack:bot-3", "Value": "garbage"}])
    assert sorted(store.acks(ref), key=lambda a: a.consumer_id) == [
        Ack("bot-1", "ef567890", T0 + 2),
        Ack("bot-2", "abcd1234", T0 + 1),
    ]
    assert labels(sm, ref.path) == before and store.load(ref).version == v


def test_two_writers_of_the_same_bytes_over_the_same_version_do_not_both_win(
    moto_server: str, ref: CredentialRef
) -> None:
    a, b = open_store(moto_server), open_store(moto_server)
    v1 = a.save(ref, CredentialState(next_nonce=1), None)
    same = CredentialState(next_nonce=2)
    v2 = a.save(ref, same, v1)
    with pytest.raises(VersionConflict):
        b.save(ref, same, v1)
    with pytest.raises(VersionConflict):
        b.save(ref, CredentialState(next_nonce=9), None)
    assert b.load(ref).version == v2


def _built_on_by(other: AwsStore, ref: CredentialRef, seen: list[CredentialState]) -> Any:
    """What another writer does between our call and botocore's retry: read, and write over it."""

    def build() -> None:
        snap = other.load(ref)
        seen.append(snap.state)
        other.save(ref, replace(snap.state, rotations=snap.state.rotations + 1), snap.version)

    return build


@pytest.mark.parametrize(
    ("operation", "first"),
    [("UpdateSecretVersionStage", False), ("CreateSecret", True)],
    ids=["move", "create"],
)
def test_a_write_whose_answer_was_lost_is_ours_even_after_another_writer_built_on_it(
    moto_server: str, proxy: FaultProxy, ref: CredentialRef, operation: str, first: bool
) -> None:
    # The write takes effect, its answer is lost, another writer builds on it, and botocore's retry
    # is refused because AWSCURRENT has moved on: the write still happened, so save must say so.
    # Saying "conflict" would make the caller redo a step it already did (a counter counted twice).
    # (A repeated CreateSecret of the same token and content is answered as a success by Secrets
    # Manager itself; the case is here for the behaviour, the move is where the lineage is needed.)
    other = open_store(moto_server)
    expected = None if first else other.save(ref, CredentialState(next_nonce=1), None)
    seen: list[CredentialState] = []
    rule = proxy.fail(
        operation,
        "InternalServiceError",
        status=500,
        lose_answer=True,
        times=1,
        then=_built_on_by(other, ref, seen),
    )
    store = open_store(proxy.url, max_attempts=2)
    mine = CredentialState(next_nonce=2, rotations=10)
    version = store.save(ref, mine, expected)
    assert rule.hits == 1 and seen == [mine]  # the other writer read our write
    after = other.load(ref)
    assert after.version != version and after.state == replace(mine, rotations=11)
    # ... and the lineage field stays the store's own: it never surfaces in a state.
    assert after.state.extra == ()


def test_a_lost_answer_of_a_write_that_really_lost_is_still_a_conflict(
    moto_server: str, proxy: FaultProxy, ref: CredentialRef
) -> None:
    other = open_store(moto_server)
    v1 = other.save(ref, CredentialState(next_nonce=1), None)
    v2 = other.save(ref, CredentialState(next_nonce=2), v1)
    proxy.fail("UpdateSecretVersionStage", "InternalServiceError", status=500, lose_answer=True, times=1)
    store = open_store(proxy.url, max_attempts=2)
    with pytest.raises(VersionConflict):
        store.save(ref, CredentialState(next_nonce=9), v1)
    assert other.load(ref).version == v2 and other.load(ref).state.next_nonce == 2


# -- failures -----------------------------------------------------------------------------------------------


def test_access_denied_is_translated_and_writes_nothing(
    moto_server: str, proxy: FaultProxy, ref: CredentialRef
) -> None:
    good = open_store(moto_server)
    v = good.save(ref, CredentialState(next_nonce=1), None)
    good.publish(ref, make_key(0))
    store = open_store(proxy.url)
    proxy.fail("GetSecretValue", "AccessDeniedException")
    proxy.fail("UpdateSecretVersionStage", "AccessDeniedException")
    with pytest.raises(AccessDenied, match=r"state secret 'rotator/state/mm-.*access denied"):
        store.load(ref)
    with pytest.raises(AccessDenied):
        store.read_published(ref)
    with pytest.raises(AccessDenied, match="publishing to secret"):
        store.publish(ref, make_key(1))
    with pytest.raises(AccessDenied):
        store.save(ref, CredentialState(next_nonce=2), v)
    assert good.load(ref).version == v
    assert good.read_published(ref).nonce == 0  # type: ignore[union-attr]


def test_throttling_is_retried_then_unavailable(
    moto_server: str, proxy: FaultProxy, ref: CredentialRef
) -> None:
    store = open_store(proxy.url, max_attempts=2)
    rule = proxy.fail("GetSecretValue", "ThrottlingException")
    with pytest.raises(Unavailable, match="throttling"):
        store.load(ref)
    assert rule.hits == 2  # botocore's standard mode retried once
    proxy.clear()
    proxy.fail("GetSecretValue", "InternalServiceError", status=500)
    with pytest.raises(Unavailable):
        store.read_published(ref)
    proxy.clear()
    assert store.load(ref).version is None


def test_an_unreachable_endpoint_is_unavailable(ref: CredentialRef) -> None:
    from tests.servers import free_port

    store = open_store(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable, match="cannot reach Secrets Manager"):
        store.load(ref)


def test_missing_credentials_are_access_denied(
    moto_server: str, ref: CredentialRef, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    store = open_store(moto_server)
    with pytest.raises(AccessDenied, match="no usable AWS credentials"):
        store.load(ref)


def test_malformed_secrets_are_corrupt(store: AwsStore, sm: Any, ref: CredentialRef) -> None:
    sm.create_secret(Name=f"rotator/state/{ref.name}", SecretString="{not json")
    sm.create_secret(Name=ref.path, SecretString=json.dumps({"api_key": "x"}))
    with pytest.raises(Corrupt, match="not a rotation state"):
        store.load(ref)
    with pytest.raises(Corrupt, match="missing field"):
        store.read_published(ref)


def test_secrets_scheduled_for_deletion_fail_clearly(store: AwsStore, sm: Any, ref: CredentialRef) -> None:
    v = store.save(ref, CredentialState(next_nonce=1), None)
    store.publish(ref, make_key(0))
    sm.delete_secret(SecretId=ref.path, RecoveryWindowInDays=7)
    with pytest.raises(StoreError, match="scheduled for deletion"):
        store.publish(ref, make_key(1))
    with pytest.raises(StoreError, match="scheduled for deletion"):
        store.read_published(ref)
    store.save(ref, CredentialState(next_nonce=2), v)  # the state is elsewhere: unaffected
    sm.delete_secret(SecretId=f"rotator/state/{ref.name}", RecoveryWindowInDays=7)
    with pytest.raises(StoreError, match="scheduled for deletion") as info:
        store.load(ref)
    assert not isinstance(info.value, (Unavailable, AccessDenied))
    sm.restore_secret(SecretId=ref.path)
    assert store.read_published(ref).nonce == 0  # type: ignore[union-attr]


# -- config -------------------------------------------------------------------------------------------------


def _cfg(**aws: Any) -> dict[str, Any]:
    cred = {
        "name": "mm",
        "signer": {"source": "env", "env": "K"},
        "path": aws.pop("path", "bots/mm"),
        "rotate_every": "1d",
        "grace": "10m",
    }
    return {"store": {"backend": "aws", "aws": aws}, "credentials": [cred]}


@pytest.mark.parametrize(
    ("aws", "message"),
    [
        ({"region": "mars"}, "store.aws: region must look like us-east-1"),
        ({"endpoint_url": "localhost:4566"}, "endpoint_url must be an http(s) URL"),
        ({"kms_key_id": "key with spaces"}, "kms_key_id must be"),
        ({"state_prefix": "state prefix"}, "state_prefix must be an AWS secret name"),
        ({"max_attempts": 0}, "store.aws.max_attempts: Input should be greater than or equal to 1"),
        ({"regoin": "us-east-1"}, "store.aws.regoin: unknown key"),
        ({"path": "bots/mm!"}, "path must be an AWS secret name"),
        ({"path": "rotator/state/mm"}, "lies inside store.aws.state_prefix"),
    ],
)
def test_bad_aws_config_is_one_clear_line(aws: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, data=_cfg(**aws))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_good_aws_config_loads() -> None:
    s = load_settings(
        None, data=_cfg(region="eu-west-1", kms_key_id="alias/rotator", endpoint_url="http://x:1")
    )
    assert s.store.aws == AwsStoreSettings(
        region="eu-west-1", kms_key_id="alias/rotator", endpoint_url="http://x:1"
    )


def test_no_region_anywhere_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match=r"store\.aws\.region"):
        make_client(AwsStoreSettings())


def test_iam_policies_are_valid_and_least_privilege() -> None:
    root = Path(__file__).resolve().parents[2] / "deploy" / "aws"
    rotator = json.loads((root / "rotator-iam-policy.json").read_text())
    consumer = json.loads((root / "consumer-iam-policy.json").read_text())
    for policy in (rotator, consumer):
        assert policy["Version"] == "2012-10-17"
        for st in policy["Statement"]:
            assert st["Effect"] in ("Allow", "Deny") and st["Sid"]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            if st["Action"] == ["secretsmanager:ListSecrets"]:  # takes no resource; lists names only
                assert resources == ["*"]
                continue
            assert all(r.startswith(("arn:aws:secretsmanager:", "arn:aws:kms:")) for r in resources)
    allowed = {a for st in rotator["Statement"] if st["Effect"] == "Allow" for a in st["Action"]}
    # Exactly the calls rotator/stores/aws.py makes (and the KMS use they imply): no delete, no wildcard.
    assert allowed == {
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:CreateSecret",
        "secretsmanager:DescribeSecret",
        "secretsmanager:UpdateSecretVersionStage",
        "secretsmanager:ListSecretVersionIds",  # Store.ever_published: a lost state's recovery
        "secretsmanager:TagResource",
        "secretsmanager:ListSecrets",  # Store.names: the states of credentials removed from the config
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }
    (create,) = [st for st in rotator["Statement"] if "secretsmanager:CreateSecret" in st["Action"]]
    assert create["Condition"] == {"StringEquals": {"aws:RequestTag/managed-by": "rotator"}}
    consumer_allows = [st for st in consumer["Statement"] if st["Effect"] == "Allow"]
    assert {a for st in consumer_allows for a in st["Action"]} == {
        "secretsmanager:GetSecretValue",
        "secretsmanager:TagResource",  # acknowledgements (Store.ack), rotator-ack:* tags only
        "kms:Decrypt",
    }
    (tag,) = [st for st in consumer_allows if st["Action"] == ["secretsmanager:TagResource"]]
    assert tag["Condition"]["ForAllValues:StringLike"] == {"aws:TagKeys": "rotator-ack:*"}
    (read,) = [st for st in consumer_allows if st["Action"] == ["secretsmanager:GetSecretValue"]]
    assert read["Condition"] == {"StringEqualsIfExists": {"secretsmanager:VersionStage": "AWSCURRENT"}}
    denied = {st["Sid"]: st for st in consumer["Statement"] if st["Effect"] == "Deny"}
    assert denied["NoVersionsById"]["Condition"] == {"Null": {"secretsmanager:VersionId": "false"}}
    assert denied["NeverTheRotationState"]["Resource"].endswith(":secret:rotator/state/*")


# -- rotation in this process: consumers reading AWSCURRENT --------------------------------------------------


def test_a_consumer_reading_awscurrent_never_sees_an_unverified_key(
    moto_server: str, sm: Any, ref: CredentialRef, wallet: tuple[str, str]
) -> None:
    # New keys answer 401 for 1 s: the pending key is visibly unverified while the rotation waits.
    with Sandbox(SandboxSettings(auth_limit=0, propagation_delay=1.0)) as sb:
        store = open_store(moto_server, max_attempts=3)
        clob = ClobAdapter(sb.url, 137)
        checker = ClobAdapter(sb.url, 137)
        signer = LocalKeySigner(Secret(wallet[0]), source="test")
        policy = Policy(
            rotate_every=3600,
            grace=60,
            verify_timeout=10,
            min_grace=60,
            consumer_ttl=600,
            verify_backoff=0.1,
            verify_backoff_cap=0.2,
        )
        rotator = Rotator(store, clob)
        assert rotator.run_pass(ref, lambda: signer, policy).outcome == "rotated"

        seen_current: dict[str, bool] = {}
        seen_pending: dict[str, bool] = {}
        stop = threading.Event()
        errors: list[BaseException] = []

        def works(key: Key) -> bool:
            try:
                return key.api_key in checker.list_keys(key)
            except Unauthorized:
                return False

        def consumer() -> None:
            try:
                while not stop.is_set():
                    for stage, seen in (("AWSCURRENT", seen_current), ("AWSPENDING", seen_pending)):
                        try:
                            raw = value(sm, ref.path, stage)
                        except sm.exceptions.ResourceNotFoundException:
                            continue
                        key = Key.from_dict(raw)
                        if key.api_key not in seen:
                            seen[key.api_key] = works(key)  # checked the moment it was first read
            except BaseException as exc:  # noqa: BLE001 -- surfaced by the assertions below
                errors.append(exc)

        reader = threading.Thread(target=consumer)
        reader.start()
        try:
            for _ in range(2):
                assert rotator.run_pass(ref, lambda: signer, policy, force=True).outcome == "rotated"
        finally:
            stop.set()
            reader.join(10)
        clob.close()
        checker.close()
    assert not errors
    assert len(seen_current) == 3 and all(seen_current.values()), seen_current
    # The pending keys were there to see, and they did not work yet: the window was real.
    assert len(seen_pending) == 2 and not any(seen_pending.values()), seen_pending
    assert set(seen_pending) < set(seen_current)


# -- the real CLI -------------------------------------------------------------------------------------------


@dataclass
class Cli:
    config: Path
    env: dict[str, str]
    path: str
    state_secret: str

    def rotate(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ROTATOR, "rotate", "-c", str(self.config), "--all", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )


def make_cli(tmp_path: Path, endpoint: str, clob: str, wallet_key: str, *, grace: str = "1h") -> Cli:
    name = f"mm-{uuid.uuid4().hex[:10]}"
    config = {
        "clob": {"host": clob, "verify_timeout": "5s"},
        "store": {
            "backend": "aws",
            # A state prefix of its own: `rotate --all` also serves every other state under its
            # prefix (credentials removed from the config), and the session's moto is shared.
            "aws": {
                "region": "us-east-1",
                "endpoint_url": endpoint,
                "max_attempts": 1,
                "state_prefix": f"rotator/state/{name}/",
            },
        },
        "credentials": [
            {
                "name": name,
                "signer": {"source": "env", "env": "ROTATOR_TEST_WALLET"},
                "path": f"bots/{name}",
                "rotate_every": "1d",
                "grace": grace,
            }
        ],
        "log": {"format": "json"},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "ROTATOR_TEST_WALLET": wallet_key}
    return Cli(path, env, f"bots/{name}", f"rotator/state/{name}/{name}")


def assert_failed(result: subprocess.CompletedProcess[str], fragment: str, sandbox: Sandbox) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and ": failed" in lines[0] and fragment in lines[0], result.stdout
    for secret in sandbox.issued_secrets():
        assert secret not in result.stdout + result.stderr


@pytest.mark.slow
def test_cli_rotation_bootstrap_force_grace_revoke(
    moto_server: str, sm: Any, sandbox: Sandbox, wallet: tuple[str, str], tmp_path: Path
) -> None:
    cli = make_cli(tmp_path, moto_server, sandbox.url, wallet[0], grace="2s")
    first = cli.rotate()
    assert first.returncode == 0 and ": rotated" in first.stdout, first.stdout + first.stderr
    k1 = Key.from_dict(value(sm, cli.path))
    assert labels(sm, cli.path).keys() == {"AWSCURRENT"}
    assert sandbox.live_keys(wallet[1]) == [k1.api_key]

    forced = cli.rotate("--force")
    assert forced.returncode == 0 and ": rotated" in forced.stdout, forced.stdout + forced.stderr
    k2 = Key.from_dict(value(sm, cli.path))
    assert k2.nonce > k1.nonce
    assert Key.from_dict(value(sm, cli.path, "AWSPREVIOUS")) == k1
    assert set(sandbox.live_keys(wallet[1])) == {k1.api_key, k2.api_key}  # the old key lives through grace

    time.sleep(2.1)
    revoked = cli.rotate()
    assert revoked.returncode == 0 and "revoked=1" in revoked.stdout, revoked.stdout + revoked.stderr
    assert sandbox.live_keys(wallet[1]) == [k2.api_key]
    assert labels(sm, cli.path).keys() == {"AWSCURRENT"}  # AWSPREVIOUS no longer points at a dead key

    again = cli.rotate()
    assert again.returncode == 0 and "revoked" not in again.stdout, again.stdout
    (record,) = [r for r in sandbox.keys(wallet[1]) if r.api_key == k1.api_key]
    assert record.revoked_by == "delete"
    state = json.loads(
        sm.get_secret_value(SecretId=cli.state_secret, VersionStage="AWSCURRENT")["SecretString"]
    )
    assert [h["nonce"] for h in state["history"]] == [k1.nonce]  # revoked once, recorded once
    assert state["retiring"] == []
    for secret in sandbox.issued_secrets():
        assert secret not in first.stdout + forced.stdout + revoked.stdout + first.stderr + forced.stderr


@pytest.mark.slow
def test_cli_failures_exit_1_keep_the_published_key_and_the_next_pass_recovers(
    moto_server: str, sm: Any, proxy: FaultProxy, sandbox: Sandbox, wallet: tuple[str, str], tmp_path: Path
) -> None:
    cli = make_cli(tmp_path, proxy.url, sandbox.url, wallet[0])
    assert cli.rotate().returncode == 0
    published = value(sm, cli.path)
    state_secret = cli.state_secret

    # 1. The worker's role may not move AWSCURRENT on the published secret.
    proxy.fail("UpdateSecretVersionStage", "AccessDeniedException", secret=cli.path, stage="AWSCURRENT")
    assert_failed(cli.rotate("--force"), "access denied", sandbox)
    assert value(sm, cli.path) == published
    proxy.clear()
    ok = cli.rotate()  # finishes the promotion it finds half done
    assert ok.returncode == 0, ok.stdout + ok.stderr
    published = value(sm, cli.path)
    assert published["nonce"] == 1 and published["api_key"] in sandbox.live_keys(wallet[1])

    # 2. Secrets Manager throttles writes of the state mid-rotation: the intent is recorded and the
    #    key created, recording the key fails. The next pass recovers that key (derive), no orphan.
    rule = proxy.fail("PutSecretValue", "ThrottlingException", secret=state_secret, skip=1)
    throttled = cli.rotate("--force")
    assert_failed(throttled, "throttling", sandbox)
    assert rule.hits == 1 and value(sm, cli.path) == published
    proxy.clear()
    ok = cli.rotate()
    assert ok.returncode == 0 and ": rotated" in ok.stdout, ok.stdout + ok.stderr
    published = value(sm, cli.path)
    assert published["nonce"] == 2
    assert sorted(r.nonce for r in sandbox.keys(wallet[1])) == [0, 1, 2]

    # 3. Someone scheduled the published secret for deletion.
    sm.delete_secret(SecretId=cli.path, RecoveryWindowInDays=7)
    assert_failed(cli.rotate("--force"), "scheduled for deletion", sandbox)
    sm.restore_secret(SecretId=cli.path)
    assert value(sm, cli.path) == published
    ok = cli.rotate()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    final = value(sm, cli.path)
    assert final["nonce"] == 3 and final["api_key"] in sandbox.live_keys(wallet[1])
    assert (
        json.loads(sm.get_secret_value(SecretId=state_secret, VersionStage="AWSCURRENT")["SecretString"])[
            "current"
        ]["nonce"]
        == 3
    )
