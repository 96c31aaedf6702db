"""The sandbox's read-only and builder routes (issue 27), driven by the SDKs themselves: what they send
is what the sandbox must take, and what the worker sends (rotator.clob.adapter) must be the same."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from rotator.clob.adapter import ClobAdapter
from rotator.errors import Unauthorized
from rotator.model import Key, Secret
from rotator.sandbox import Sandbox, SandboxSettings
from rotator.sandbox.verify import l2_signature
from rotator.signers.local import LocalKeySigner
from tests.harness import SECRETS


def _adapter(sb: Sandbox) -> ClobAdapter:
    return ClobAdapter(sb.url, 137)


def _trading(sb: Sandbox, private_key: str) -> Key:
    key = _adapter(sb).create_key(LocalKeySigner(Secret(private_key), source="test"), 0)
    SECRETS.update((key.api_secret.reveal(), key.api_passphrase.reveal()))
    return key


def _v2(sb: Sandbox, private_key: str, key: Key) -> Any:
    from py_clob_client_v2.client import ClobClient
    from py_clob_client_v2.clob_types import ApiCreds

    creds = ApiCreds(key.api_key, key.api_secret.reveal(), key.api_passphrase.reveal())
    return ClobClient(sb.url, chain_id=137, key=private_key, creds=creds)


def _v1(sb: Sandbox, private_key: str, key: Key) -> Any:
    from py_clob_client.client import ClobClient
    from py_clob_client.clob_types import ApiCreds

    creds = ApiCreds(key.api_key, key.api_secret.reveal(), key.api_passphrase.reveal())
    return ClobClient(sb.url, chain_id=137, key=private_key, creds=creds)


def test_readonly_keys_are_made_listed_used_and_deleted_as_py_clob_client_does(
    sandbox: Sandbox, wallet: tuple[str, str]
) -> None:
    private_key, address = wallet
    trading = _trading(sandbox, private_key)
    sdk = _v1(sandbox, private_key, trading)
    made = sdk.create_readonly_api_key().api_key
    SECRETS.add(made)
    assert sdk.get_readonly_api_keys() == [made] == sandbox.live_readonly(address)
    reader = {"POLY_READONLY_API_KEY": made, "POLY_ADDRESS": address}
    assert httpx.get(f"{sandbox.url}/data/orders", headers=reader).status_code == 200
    # the key is the wallet's: another address with it is refused
    other = {**reader, "POLY_ADDRESS": "0x" + "ab" * 20}
    assert httpx.get(f"{sandbox.url}/data/orders", headers=other).status_code == 401
    # the worker's adapter sees the same and probes the same way
    adapter = _adapter(sandbox)
    assert adapter.list_readonly_keys(trading) == [made]
    ro = Key(made, Secret(""), Secret(""), address, 0, 0.0, "readonly")
    adapter.probe_readonly_key(ro)
    # py-clob-client's DELETE signs its body: the sandbox checks the HMAC over exactly those bytes
    assert sdk.delete_readonly_api_key(made)
    assert sandbox.live_readonly(address) == [] and sdk.get_readonly_api_keys() == []
    assert httpx.get(f"{sandbox.url}/data/orders", headers=reader).status_code == 401
    with pytest.raises(Unauthorized):
        adapter.probe_readonly_key(ro)


def test_a_readonly_delete_whose_hmac_does_not_cover_its_body_is_refused(
    sandbox: Sandbox, wallet: tuple[str, str]
) -> None:
    private_key, address = wallet
    trading = _trading(sandbox, private_key)
    adapter = _adapter(sandbox)
    made = adapter.create_readonly_key(trading)
    SECRETS.add(made)
    ts = str(int(time.time()))
    signed_for = json.dumps({"key": "someone-else"}, separators=(",", ":"))
    headers = {
        "POLY_ADDRESS": address,
        "POLY_API_KEY": trading.api_key,
        "POLY_PASSPHRASE": trading.api_passphrase.reveal(),
        "POLY_TIMESTAMP": ts,
        "POLY_SIGNATURE": l2_signature(
            trading.api_secret.reveal(), ts, "DELETE", "/auth/readonly-api-key", signed_for
        ),
    }
    body = json.dumps({"key": made}, separators=(",", ":"))
    resp = httpx.request("DELETE", f"{sandbox.url}/auth/readonly-api-key", headers=headers, content=body)
    assert resp.status_code == 401
    assert sandbox.live_readonly(address) == [made]
    adapter.delete_readonly_key(trading, made)  # the worker's own DELETE signs what it sends
    assert sandbox.live_readonly(address) == []


def test_builder_keys_are_made_used_and_revoked_by_their_own_headers(
    sandbox: Sandbox, wallet: tuple[str, str]
) -> None:
    from py_builder_signing_sdk.config import BuilderConfig
    from py_builder_signing_sdk.sdk_types import BuilderApiKeyCreds
    from py_clob_client.client import ClobClient

    private_key, address = wallet
    trading = _trading(sandbox, private_key)
    adapter = _adapter(sandbox)
    first, second = adapter.create_builder_key(trading), adapter.create_builder_key(trading)
    for k in (first, second):
        SECRETS.update((k.api_secret.reveal(), k.api_passphrase.reveal()))
    listed = adapter.list_builder_keys(trading)
    assert [x.key for x in listed] == [first.api_key, second.api_key]
    assert all(x.revoked_at is None and x.created_at is not None for x in listed)
    # py-clob-client's own builder read, signed by py-builder-signing-sdk, is what the worker verifies with
    creds = BuilderApiKeyCreds(
        key=first.api_key, secret=first.api_secret.reveal(), passphrase=first.api_passphrase.reveal()
    )
    client = ClobClient(sandbox.url, chain_id=137, builder_config=BuilderConfig(local_builder_creds=creds))
    assert client.get_builder_trades() == []
    adapter.probe_builder_key(first)
    # Revoked with its own builder headers (clob-client V1, polymarket-client): that key alone.
    adapter.revoke_builder_key(first)
    assert sandbox.live_builder(address) == [second.api_key]
    listed = adapter.list_builder_keys(trading)
    assert [x.revoked_at is not None for x in listed] == [True, False]  # revoked keys stay listed
    with pytest.raises(Unauthorized):
        adapter.probe_builder_key(first)
    adapter.probe_builder_key(second)


def test_the_relayer_takes_a_submission_signed_by_a_live_builder_key_only(
    sandbox: Sandbox, wallet: tuple[str, str]
) -> None:
    """py-builder-relayer-client's RelayClient.execute against the sandbox's relayer routes: accepted
    with a live builder key (the nonce counts it), refused once that key is revoked, and refused
    without builder headers or with headers that do not cover the body."""
    from py_builder_relayer_client.client import RelayClient
    from py_builder_relayer_client.exceptions import RelayerApiException
    from py_builder_relayer_client.models import Transaction
    from py_builder_signing_sdk.config import BuilderConfig
    from py_builder_signing_sdk.sdk_types import BuilderApiKeyCreds

    private_key, address = wallet
    trading = _trading(sandbox, private_key)
    adapter = _adapter(sandbox)
    builder = adapter.create_builder_key(trading)
    SECRETS.update((builder.api_secret.reveal(), builder.api_passphrase.reveal()))
    creds = BuilderApiKeyCreds(
        key=builder.api_key, secret=builder.api_secret.reveal(), passphrase=builder.api_passphrase.reveal()
    )
    relay = RelayClient(sandbox.url, 137, private_key, BuilderConfig(local_builder_creds=creds))
    tx = [Transaction(to="0x2791Bca1f2de4661ED88A30C99A7a9449Aa84174", data="0x", value="0")]
    # The session's sandbox: other tests' submissions count too, so this key's and this nonce's deltas.
    nonce = int(relay.get_nonce(address, "SAFE")["nonce"])
    done = relay.execute(tx, "first")
    assert done.transaction_id and done.transaction_hash.startswith("0x")
    relay.execute(tx, "second")
    assert sandbox.relayed().get(builder.api_key) == 2
    assert relay.get_nonce(address, "SAFE") == {"address": address.lower(), "nonce": str(nonce + 2)}
    # Headers that do not cover this body, and no headers at all: refused.
    headers = BuilderConfig(local_builder_creds=creds).generate_builder_headers("POST", "/submit", "{}")
    assert headers is not None
    body = json.dumps({"from": address})
    assert httpx.post(f"{sandbox.url}/submit", headers=headers.to_dict(), content=body).status_code == 401
    assert httpx.post(f"{sandbox.url}/submit", content=body).status_code == 401
    adapter.revoke_builder_key(builder)
    with pytest.raises(RelayerApiException) as refused:
        relay.execute(tx, "after revocation")
    assert refused.value.status_code == 401
    assert sandbox.relayed().get(builder.api_key) == 2


def test_the_v2_clients_builder_revoke_with_user_l2_headers_is_served_too(
    sandbox: Sandbox, wallet: tuple[str, str]
) -> None:
    # py-clob-client-v2 signs DELETE /auth/builder-api-key with the user's L2 headers, which name no
    # builder key: the sandbox takes the broadest reading (every builder key of the wallet). This is
    # why the worker never uses that form: it would revoke the key it is about to publish.
    private_key, address = wallet
    trading = _trading(sandbox, private_key)
    sdk = _v2(sandbox, private_key, trading)
    made = [sdk.create_builder_api_key() for _ in range(2)]
    for m in made:
        SECRETS.update((m["secret"], m["passphrase"]))
    assert sorted(sandbox.live_builder(address)) == sorted(m["key"] for m in made)
    assert [k["key"] for k in sdk.get_builder_api_keys()] == [m["key"] for m in made]
    sdk.revoke_builder_api_key()
    assert sandbox.live_builder(address) == []
    assert {r.revoked_by for r in sandbox.builder_keys(address)} == {"delete-l2"}


def test_key_management_routes_share_the_auth_rate_limit(wallet: tuple[str, str]) -> None:
    private_key, _ = wallet
    with Sandbox(SandboxSettings(auth_limit=3, auth_window=60)) as sb:
        trading = _trading(sb, private_key)  # 1 request
        sdk = _v1(sb, private_key, trading)
        SECRETS.add(sdk.create_readonly_api_key().api_key)  # 2
        assert isinstance(sdk.get_readonly_api_keys(), list)  # 3
        resp = httpx.post(f"{sb.url}/auth/builder-api-key")
        assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
        counts = sb.request_counts()
        assert counts[("POST", "/auth/readonly-api-key", 200)] == 1
        assert counts[("POST", "/auth/builder-api-key", 429)] == 1
