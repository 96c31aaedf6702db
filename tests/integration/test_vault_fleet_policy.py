"""The shipped Vault policies for fleets, on OpenBao (deploy/vault).

* consumer-fleet-policy.hcl: one templated policy, three bots (two on one credential, one on
  another), each an entity with its metadata, logging in with userpass. Each reads its credential's
  published key and acknowledges it through rotator's own Vault store, and cannot read the other
  credential, the rotation state, nor write another bot's acknowledgement;
* rotator-policy.hcl: a worker token reads a wallet key for ``signer.source: vault``;
* a permission error names the API path the policy needs (``secret/data/...``, not ``secret/...``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rotator.config import VaultSettings
from rotator.errors import AccessDenied, SignerError
from rotator.model import CredentialRef, Key, Secret, ack_prefix
from rotator.signers.vault import build_vault_source
from rotator.stores.vault import VaultStore, build_vault_store
from tests.harness import SECRETS
from tests.servers import OpenBao

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "vault"


def _key() -> Key:
    return Key(str(uuid.uuid4()), Secret("c2VjcmV0"), Secret(uuid.uuid4().hex), "0x" + "cd" * 20, 0, 1.0)


@dataclass
class Bot:
    consumer_id: str
    credential: str
    store: VaultStore

    @property
    def ref(self) -> CredentialRef:
        return CredentialRef(self.credential, f"polymarket/{self.credential}")


def _store(bao: OpenBao, token: str) -> VaultStore:
    return build_vault_store(VaultSettings(url=bao.url, auth={"token_env": "T"}), {"T": token})


@pytest.fixture
def fleet(openbao: OpenBao) -> Iterator[tuple[VaultStore, list[Bot]]]:
    """Three bots on one policy, enrolled as the policy's header says, each logged in with userpass."""
    root = openbao.client()
    run = uuid.uuid4().hex[:8]
    policy, mount = f"rotator-consumer-{run}", f"userpass-{run}"
    root.sys.create_or_update_policy(policy, (DEPLOY / "consumer-fleet-policy.hcl").read_text())
    root.sys.enable_auth_method("userpass", path=mount)
    accessor = root.sys.list_auth_methods()[f"{mount}/"]["accessor"]
    a, b = f"mm-a-{run}", f"mm-b-{run}"
    bots = []
    for consumer_id, credential in (("bot-1", a), ("bot-2", a), ("bot-3", b)):
        password = uuid.uuid4().hex
        SECRETS.add(password)
        root.write(f"auth/{mount}/users/{consumer_id}", password=password, token_policies=policy)
        entity = root.write(
            "identity/entity",
            name=f"{consumer_id}-{run}",
            metadata={"credential": credential, "consumer_id": consumer_id},
        )["data"]["id"]
        root.write("identity/entity-alias", name=consumer_id, canonical_id=entity, mount_accessor=accessor)
        login = root.write(f"auth/{mount}/login/{consumer_id}", password=password)
        token = str(login["auth"]["client_token"])
        SECRETS.add(token)
        assert login["auth"]["entity_id"] == entity
        bots.append(Bot(consumer_id, credential, _store(openbao, token)))
    worker = _store(openbao, openbao.root_token)
    try:
        yield worker, bots
    finally:
        for bot in bots:
            bot.store.close()
        worker.close()


def test_three_bots_on_one_templated_policy_each_touch_only_their_own(
    fleet: tuple[VaultStore, list[Bot]],
) -> None:
    worker, bots = fleet
    keys = {}
    for bot in bots:
        if bot.credential not in keys:
            keys[bot.credential] = _key()
            worker.publish(bot.ref, keys[bot.credential])
    for bot in bots:
        key = keys[bot.credential]
        published = bot.store.read_published(bot.ref)
        assert published is not None and published.api_key == key.api_key
        bot.store.ack(bot.ref, bot.consumer_id, ack_prefix(key.api_key), 100.0)
        bot.store.ack(bot.ref, bot.consumer_id, ack_prefix(key.api_key), 160.0)  # its record's update
    one, two, three = bots
    assert sorted(a.consumer_id for a in worker.acks(one.ref)) == ["bot-1", "bot-2"]
    assert [a.consumer_id for a in worker.acks(three.ref)] == ["bot-3"]

    prefix = ack_prefix(keys[one.credential].api_key)
    # Another bot's acknowledgement, on its own credential and on another: refused, naming the path.
    with pytest.raises(AccessDenied) as caught:
        one.store.ack(one.ref, "bot-2", prefix, 200.0)
    assert f"secret/data/rotator-state/{one.credential}/acks/bot-2" in str(caught.value)
    with pytest.raises(AccessDenied):
        three.store.ack(one.ref, "bot-3", prefix, 200.0)  # its own id, under another credential
    with pytest.raises(AccessDenied):
        two.store.report_refusal(one.ref, "bot-1", prefix, 200.0, 199.0, 3)
    # The other credential's key, and the rotation state: never readable.
    with pytest.raises(AccessDenied) as caught:
        three.store.read_published(one.ref)
    assert f"read on secret/data/polymarket/{one.credential}" in str(caught.value)
    with pytest.raises(AccessDenied):
        one.store.load(one.ref)
    # bot-2's record is still bot-2's own (nothing above overwrote it).
    (record,) = [a for a in worker.acks(one.ref) if a.consumer_id == "bot-2"]
    assert record.at == 160.0


def test_a_token_without_the_metadata_reads_nothing(openbao: OpenBao) -> None:
    root = openbao.client()
    policy = f"rotator-consumer-{uuid.uuid4().hex[:8]}"
    root.sys.create_or_update_policy(policy, (DEPLOY / "consumer-fleet-policy.hcl").read_text())
    token = str(
        root.auth.token.create(policies=[policy], no_default_policy=True, ttl="5m")["auth"]["client_token"]
    )
    SECRETS.add(token)
    name = f"mm-{uuid.uuid4().hex[:8]}"
    ref = CredentialRef(name, f"polymarket/{name}")
    worker, bot = _store(openbao, openbao.root_token), _store(openbao, token)
    try:
        worker.publish(ref, _key())
        with pytest.raises(AccessDenied):
            bot.read_published(ref)
    finally:
        bot.close()
        worker.close()


def _worker_token(bao: OpenBao) -> str:
    root = bao.client()
    policy = f"rotator-{uuid.uuid4().hex[:8]}"
    root.sys.create_or_update_policy(policy, (DEPLOY / "rotator-policy.hcl").read_text())
    token = str(
        root.auth.token.create(policies=[policy], no_default_policy=True, ttl="5m")["auth"]["client_token"]
    )
    SECRETS.add(token)
    return token


def test_the_worker_policy_reads_vault_signer_keys(openbao: OpenBao) -> None:
    wallet = "0x" + uuid.uuid4().hex * 2
    SECRETS.add(wallet)
    path = f"signers/mm-{uuid.uuid4().hex[:8]}"
    openbao.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"private_key": wallet})
    settings = VaultSettings(url=openbao.url, auth={"token_env": "T"})
    source = build_vault_source(
        settings,
        {"T": _worker_token(openbao)},
        mount=None,
        path=path,
        field="private_key",
        source="mm1 signer",
    )
    try:
        assert source().reveal() == wallet
    finally:
        source.close()


def test_a_signer_path_the_policy_lacks_names_the_api_path_it_needs(openbao: OpenBao) -> None:
    settings = VaultSettings(url=openbao.url, auth={"token_env": "T"})
    source = build_vault_source(
        settings,
        {"T": _worker_token(openbao)},
        mount=None,
        path="wallets/x",
        field="private_key",
        source="mm1",
    )
    try:
        with pytest.raises(SignerError) as caught:
            source()
    finally:
        source.close()
    message = str(caught.value)
    assert "read secret/wallets/x" in message  # what was read, as the config names it
    assert "does not grant read on secret/data/wallets/x" in message  # what the policy must name
