"""The sandbox driven by the official py-clob-client 0.34.6 over real HTTP: what the SDK sends must pass, what
the real server rejects must fail with the real status and body."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_account import Account
from py_clob_client.client import ClobClient
from py_clob_client.clob_types import ApiCreds, RequestArgs
from py_clob_client.exceptions import PolyApiException
from py_clob_client.headers.headers import create_level_1_headers, create_level_2_headers
from py_clob_client.signer import Signer
from py_clob_client.signing.eip712 import sign_clob_auth_message

from rotator.sandbox import Sandbox

L1_401 = {"error": "Invalid L1 Request headers"}
L2_401 = {"error": "Unauthorized/Invalid api key"}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def key() -> str:
    return str(Account.create().key.hex())


def l1_client(sb: Sandbox, key: str) -> ClobClient:
    return ClobClient(sb.url, chain_id=137, key=key)


def l2_client(sb: Sandbox, key: str, creds: ApiCreds) -> ClobClient:
    return ClobClient(sb.url, chain_id=137, key=key, creds=creds)


def api_error(call: Any, *args: Any) -> tuple[int | None, Any]:
    with pytest.raises(PolyApiException) as info:
        call(*args)
    return info.value.status_code, info.value.error_msg


# -- public routes -------------------------------------------------------------------------------------------


def test_public_routes_and_json_everywhere(sandbox: Sandbox, key: str) -> None:
    client = l1_client(sandbox, key)
    assert client.get_ok() == "OK"
    assert abs(client.get_server_time() - time.time()) <= 2
    response = httpx.get(sandbox.url + "/no/such/route?x=1")
    assert (response.status_code, response.json()) == (404, {"error": "not found"})
    assert response.headers["content-type"] == "application/json"
    response = httpx.put(sandbox.url + "/auth/api-key")  # known path, wrong method
    assert (response.status_code, response.json()) == (404, {"error": "not found"})


def test_clock_offset_moves_server_time(sandbox: Sandbox, key: str) -> None:
    sandbox.configure(clock_offset=1000.0)
    assert abs(l1_client(sandbox, key).get_server_time() - (time.time() + 1000)) <= 2


# -- L1: create / derive -------------------------------------------------------------------------------------


def test_create_derive_and_duplicate_nonce_error(sandbox: Sandbox, key: str) -> None:
    client = l1_client(sandbox, key)
    creds = client.create_api_key(nonce=7)
    assert client.derive_api_key(nonce=7) == creds
    assert api_error(client.create_api_key, 7) == (400, {"error": "Could not create api key"})
    assert api_error(client.derive_api_key, 8) == (400, {"error": "Could not derive api key!"})
    (record,) = sandbox.keys(Account.from_key(key).address.lower())
    assert (record.api_key, record.nonce, record.revoked_at) == (creds.api_key, 7, None)


def test_duplicate_nonce_same_returns_identical_creds(sandbox: Sandbox, key: str) -> None:
    sandbox.configure(duplicate_nonce="same")
    client = l1_client(sandbox, key)
    creds = client.create_api_key()
    assert client.create_api_key() == creds
    assert len(sandbox.keys(Account.from_key(key).address)) == 1


def test_l1_stale_timestamp_is_rejected(sandbox: Sandbox, key: str) -> None:
    signer = Signer(key, 137)
    stale = int(time.time()) - 300
    headers = {
        "POLY_ADDRESS": signer.address(),
        "POLY_SIGNATURE": sign_clob_auth_message(signer, stale, 0),
        "POLY_TIMESTAMP": str(stale),
        "POLY_NONCE": "0",
    }
    response = httpx.post(sandbox.url + "/auth/api-key", headers=headers)
    assert (response.status_code, response.json()) == (401, L1_401)
    # The window is measured against server time: a skewed server clock rejects a correct client clock.
    sandbox.configure(clock_offset=300.0)
    assert api_error(l1_client(sandbox, key).create_api_key) == (401, L1_401)
    sandbox.configure(clock_offset=0.0)
    assert l1_client(sandbox, key).create_api_key() is not None


def test_l1_signature_of_another_wallet_or_chain_is_rejected(sandbox: Sandbox, key: str) -> None:
    headers = create_level_1_headers(Signer(key, 137), 0)
    headers["POLY_ADDRESS"] = Account.create().address
    response = httpx.get(sandbox.url + "/auth/derive-api-key", headers=headers)
    assert (response.status_code, response.json()) == (401, L1_401)
    amoy = ClobClient(sandbox.url, chain_id=80002, key=key)
    assert api_error(amoy.create_api_key) == (401, L1_401)


def test_l1_lower_case_address_accepted(sandbox: Sandbox, key: str) -> None:
    headers = create_level_1_headers(Signer(key, 137), 3)
    headers["POLY_ADDRESS"] = headers["POLY_ADDRESS"].lower()  # what the Rust SDK sends
    response = httpx.post(sandbox.url + "/auth/api-key", headers=headers)
    assert response.status_code == 200 and set(response.json()) == {"apiKey", "secret", "passphrase"}


# -- L2 ------------------------------------------------------------------------------------------------------


def test_l2_routes_with_sdk(sandbox: Sandbox, key: str) -> None:
    l1 = l1_client(sandbox, key)
    first, second = l1.create_api_key(0), l1.create_api_key(1)
    client = l2_client(sandbox, key, first)
    assert client.get_api_keys() == {"apiKeys": [first.api_key, second.api_key]}
    assert client.get_closed_only_mode() == {"closed_only": False}
    assert client.get_orders() == []
    started = client.post_heartbeat(None)["heartbeat_id"]
    assert started and client.post_heartbeat(started) == {"heartbeat_id": started}
    assert client.delete_api_key() == "OK"
    assert api_error(client.get_api_keys) == (401, L2_401)
    assert l2_client(sandbox, key, second).get_api_keys() == {"apiKeys": [second.api_key]}
    assert sandbox.keys(Account.from_key(key).address)[0].revoked_by == "delete"
    # A deleted nonce can be created again, with new creds.
    again = l1.create_api_key(0)
    assert again.api_key != first.api_key and again.api_secret != first.api_secret


@pytest.mark.parametrize("field", ["api_passphrase", "api_secret", "api_key"])
def test_l2_wrong_credential_is_401(sandbox: Sandbox, key: str, field: str) -> None:
    creds = l1_client(sandbox, key).create_api_key()
    wrong = {
        "api_passphrase": "0" * 64,
        "api_secret": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "api_key": "00000000-0000-7000-8000-000000000000",
    }
    bad = ApiCreds(**{**vars(creds), field: wrong[field]})
    assert api_error(l2_client(sandbox, key, bad).get_api_keys) == (401, L2_401)


def test_l2_key_of_another_wallet_is_401(sandbox: Sandbox, key: str) -> None:
    creds = l1_client(sandbox, key).create_api_key()
    other = str(Account.create().key.hex())
    assert api_error(l2_client(sandbox, other, creds).get_closed_only_mode) == (401, L2_401)


def test_l2_body_must_be_the_signed_bytes(sandbox: Sandbox, key: str) -> None:
    creds = l1_client(sandbox, key).create_api_key()
    signed = '{"heartbeat_id":null}'
    args = RequestArgs(method="POST", request_path="/v1/heartbeats", body=None, serialized_body=signed)
    headers = create_level_2_headers(Signer(key, 137), creds, args)
    url = sandbox.url + "/v1/heartbeats"
    tampered = httpx.post(url, headers=headers, content=b'{"heartbeat_id": null}')
    assert (tampered.status_code, tampered.json()) == (401, L2_401)
    exact = httpx.post(url, headers=headers, content=signed.encode())
    assert exact.status_code == 200 and exact.json()["heartbeat_id"]


def test_l2_query_string_is_not_signed_and_address_case_ignored(sandbox: Sandbox, key: str) -> None:
    creds = l1_client(sandbox, key).create_api_key()
    headers = create_level_2_headers(
        Signer(key, 137), creds, RequestArgs(method="GET", request_path="/data/orders")
    )
    headers["POLY_ADDRESS"] = headers["POLY_ADDRESS"].lower()
    response = httpx.get(sandbox.url + "/data/orders?next_cursor=MA==", headers=headers)
    assert response.json() == {"data": [], "next_cursor": "LTE=", "limit": 100, "count": 0}


def test_l2_stale_timestamp_is_401(sandbox: Sandbox, key: str) -> None:
    creds = l1_client(sandbox, key).create_api_key()
    sandbox.configure(clock_offset=-200.0)
    assert api_error(l2_client(sandbox, key, creds).get_api_keys) == (401, L2_401)


# -- key semantics switches ----------------------------------------------------------------------------------


def test_single_key_invalidates_the_old_key(sandbox: Sandbox, key: str) -> None:
    sandbox.configure(single_key=True)
    l1 = l1_client(sandbox, key)
    old, new = l1.create_api_key(0), l1.create_api_key(1)
    assert api_error(l2_client(sandbox, key, old).get_api_keys) == (401, L2_401)
    assert l2_client(sandbox, key, new).get_api_keys() == {"apiKeys": [new.api_key]}
    address = Account.from_key(key).address
    assert sandbox.live_keys(address) == [new.api_key]
    assert [r.revoked_by for r in sandbox.keys(address)] == ["single_key", None]


def test_propagation_delay_gives_401_then_200(sandbox: Sandbox, key: str) -> None:
    sandbox.configure(propagation_delay=0.4)
    creds = l1_client(sandbox, key).create_api_key()
    client = l2_client(sandbox, key, creds)
    assert api_error(client.get_api_keys) == (401, L2_401)
    assert l1_client(sandbox, key).derive_api_key() == creds  # L1 derive is not delayed
    time.sleep(0.45)
    assert client.get_api_keys() == {"apiKeys": [creds.api_key]}


def test_key_ttl_expires_keys(sandbox: Sandbox, key: str) -> None:
    sandbox.configure(key_ttl=0.4)
    l1 = l1_client(sandbox, key)
    creds = l1.create_api_key()
    client = l2_client(sandbox, key, creds)
    assert client.get_api_keys() == {"apiKeys": [creds.api_key]}
    time.sleep(0.45)
    assert api_error(client.get_api_keys) == (401, L2_401)
    assert api_error(l1.derive_api_key) == (400, {"error": "Could not derive api key!"})
    assert sandbox.keys(Account.from_key(key).address)[0].revoked_by == "ttl"
    assert l1.create_api_key().api_key != creds.api_key


def test_invalidate_behind_the_clients_back(sandbox: Sandbox, key: str) -> None:
    creds = l1_client(sandbox, key).create_api_key()
    sandbox.invalidate(creds.api_key)
    assert api_error(l2_client(sandbox, key, creds).get_api_keys) == (401, L2_401)
    assert sandbox.keys(Account.from_key(key).address)[0].revoked_by == "invalidate"


# -- rate limit ----------------------------------------------------------------------------------------------


def test_auth_rate_limit_429_with_retry_after_then_recovers(sandbox: Sandbox, key: str) -> None:
    sandbox.configure(auth_limit=5, auth_window=1.0)
    client = l1_client(sandbox, key)
    client.create_api_key()
    for _ in range(4):
        client.derive_api_key()
    assert client.get_server_time() > 0  # not under /auth/: never limited
    status, body = api_error(client.derive_api_key)
    assert (status, body) == (429, {"error": "Too Many Requests", "retry_after_seconds": 1})
    raw = httpx.get(sandbox.url + "/auth/derive-api-key", headers=create_level_1_headers(Signer(key, 137), 0))
    assert raw.status_code == 429 and raw.headers["Retry-After"] == "1"
    time.sleep(1.05)
    # Rejected requests took no slot: a full window's worth goes through again.
    for _ in range(5):
        client.derive_api_key()
    assert api_error(client.derive_api_key)[0] == 429
    counts = sandbox.request_counts()
    assert counts[("GET", "/auth/derive-api-key", 200)] == 9
    assert counts[("GET", "/auth/derive-api-key", 429)] == 3
    sandbox.reset_counts()
    assert sandbox.request_counts() == {}


# -- fault injection and holds -------------------------------------------------------------------------------


def test_inject_raw_faults_in_order(sandbox: Sandbox, key: str) -> None:
    client = l1_client(sandbox, key)
    cloudflare = "<!DOCTYPE html><title>Attention Required! | Cloudflare</title>"
    sandbox.inject("POST", "/auth/api-key", 503, '{"error":"Trading is currently disabled"}')
    sandbox.inject("POST", "/auth/api-key", 403, cloudflare, headers={"Content-Type": "text/html"})
    sandbox.inject("POST", "/auth/api-key", 425, "service not ready", times=2)
    sandbox.inject("POST", "/auth/api-key", 429, '{"error":"Too Many Requests"}')
    assert api_error(client.create_api_key) == (503, {"error": "Trading is currently disabled"})
    assert api_error(client.create_api_key) == (403, cloudflare)
    assert api_error(client.create_api_key) == (425, "service not ready")
    response = httpx.post(sandbox.url + "/auth/api-key")
    assert response.status_code == 425
    response = httpx.post(sandbox.url + "/auth/api-key")
    assert response.status_code == 429 and "retry-after" not in response.headers
    assert client.create_api_key() is not None
    assert sandbox.request_counts()[("POST", "/auth/api-key", 425)] == 2


def test_inject_after_applies_the_effect_but_loses_the_answer(sandbox: Sandbox, key: str) -> None:
    client = l1_client(sandbox, key)
    sandbox.inject("POST", "/auth/api-key", 502, '{"error":"bad gateway"}', after=True)
    assert api_error(client.create_api_key, 4) == (502, {"error": "bad gateway"})
    (record,) = sandbox.keys(Account.from_key(key).address)
    assert client.derive_api_key(4).api_key == record.api_key


def test_inject_delay_sleeps_before_answering(sandbox: Sandbox, key: str) -> None:
    sandbox.inject("GET", "/time", 200, "1", delay=0.3)
    started = time.monotonic()
    assert l1_client(sandbox, key).get_server_time() == 1
    assert time.monotonic() - started >= 0.3


def test_hold_before_blocks_until_released(sandbox: Sandbox, key: str) -> None:
    address = Account.from_key(key).address
    hold = sandbox.hold("POST", "/auth/api-key", phase="before")
    result: list[ApiCreds] = []
    worker = threading.Thread(target=lambda: result.append(l1_client(sandbox, key).create_api_key()))
    worker.start()
    assert hold.reached.wait(5)
    assert sandbox.keys(address) == []  # not processed yet
    hold.release()
    worker.join(5)
    assert [r.api_key for r in sandbox.keys(address)] == [result[0].api_key]


def test_hold_after_applies_effect_before_answering(sandbox: Sandbox, key: str) -> None:
    address = Account.from_key(key).address
    hold = sandbox.hold("POST", "/auth/api-key", phase="after")
    result: list[ApiCreds] = []
    worker = threading.Thread(target=lambda: result.append(l1_client(sandbox, key).create_api_key()))
    worker.start()
    assert hold.reached.wait(5)
    assert len(sandbox.keys(address)) == 1  # the key exists ...
    assert result == [] and worker.is_alive()  # ... but the client has no answer yet
    hold.release()
    worker.join(5)
    assert result[0].api_key == sandbox.keys(address)[0].api_key


def test_stop_cuts_pooled_connections_and_restart_keeps_keys(key: str) -> None:
    sb = Sandbox()
    sb.start()
    client = l1_client(sb, key)
    creds = client.create_api_key()
    sb.stop()
    sb.stop()  # idempotent
    assert api_error(client.get_server_time) == (None, "Request exception!")
    sb.start()
    try:
        assert l1_client(sb, key).derive_api_key() == creds
    finally:
        sb.stop()


def test_serve_runs_in_foreground_until_sigterm() -> None:
    code = (
        "from rotator.sandbox import SandboxSettings, serve\n"
        "serve(SandboxSettings(clock_offset=50), '127.0.0.1', 0, on_ready=lambda u: print(u, flush=True))\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert abs(json.loads(httpx.get(url + "/time").text) - (time.time() + 50)) <= 2
            proc.terminate()
            assert proc.wait(10) == 0
        finally:
            proc.kill()
