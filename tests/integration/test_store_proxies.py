"""Issue 24: Vault and AWS through ``store.vault.proxy`` / ``store.aws.proxy`` (a real tinyproxy asking
for credentials), and never through a proxy the environment names without the config saying so."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from rotator.config import load_settings
from rotator.errors import StoreError, Unavailable
from rotator.model import CredentialRef, Key, Secret
from rotator.stores.factory import build_store
from tests.harness import OUTPUTS, SECRETS
from tests.servers import EgressProxy, OpenBao

DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens there: a request sent to it fails at once


def _key(nonce: int) -> Key:
    secret, passphrase = secrets.token_urlsafe(32), secrets.token_hex(32)
    SECRETS.update((secret, passphrase))
    return Key(
        f"019d4ec2-0000-7000-8000-{nonce:012d}", Secret(secret), Secret(passphrase), "0xabc", nonce, 1.0
    )


def _proxy(p: EgressProxy) -> dict[str, Any]:
    SECRETS.add(p.password)
    return {"url": p.url, "username": p.username, "password_env": "T_STORE_PROXY"}


def _vault(bao: OpenBao, proxy: dict[str, Any] | None) -> dict[str, Any]:
    section: dict[str, Any] = {"url": bao.url, "auth": {"method": "token", "token_env": "T_VAULT_TOKEN"}}
    if proxy is not None:
        section["proxy"] = proxy
    return {"backend": "vault", "vault": section}


def _aws(moto: str, proxy: dict[str, Any] | None) -> dict[str, Any]:
    # Two attempts, as a store has in production (more by default): tinyproxy may close a kept-alive
    # connection just as botocore reuses it ("Remote end closed connection without response"), which
    # botocore's retry takes care of; a wrong password fails both attempts all the same.
    section: dict[str, Any] = {"region": "us-east-1", "endpoint_url": moto, "max_attempts": 2}
    if proxy is not None:
        section["proxy"] = proxy
    return {"backend": "aws", "aws": section}


def _roundtrip(store: dict[str, Any], env: dict[str, str], name: str) -> None:
    ref = CredentialRef(name, f"proxied/{name}")
    built = build_store(load_settings(None, data={"store": store}, env=env), env)
    try:
        key = _key(3)
        built.publish(ref, key)
        assert built.read_published(ref) == key
    finally:
        built.close()


def test_vault_goes_through_its_proxy_and_a_wrong_password_names_it(
    openbao_binary: str, http_proxy: EgressProxy, tmp_path: Any
) -> None:
    """Vault over TLS, as in production: the proxy gets a CONNECT, never the requests themselves."""
    bao = OpenBao(openbao_binary, tmp_path, tls=True)
    try:
        store = _vault(bao, _proxy(http_proxy))
        store["vault"]["tls"] = {"ca_cert": bao.ca_cert}
        env = {"T_VAULT_TOKEN": bao.root_token, "T_STORE_PROXY": http_proxy.password}
        before = http_proxy.tunnels()
        _roundtrip(store, env, "vault-proxied")
        assert http_proxy.tunnels() > before  # the proxy carried them
        wrong = "not-" + http_proxy.password
        with pytest.raises(Unavailable) as info:
            _roundtrip(store, {**env, "T_STORE_PROXY": wrong}, "vault-wrong")
        message = str(info.value)
        OUTPUTS.append(message)
        assert "store.vault.proxy" in message and "401" in message
        assert wrong not in message and http_proxy.password not in message
    finally:
        bao.stop()


def test_aws_goes_through_its_proxy(moto_server: str, http_proxy: EgressProxy) -> None:
    env = {"T_STORE_PROXY": http_proxy.password}
    before = http_proxy.requests()
    _roundtrip(_aws(moto_server, _proxy(http_proxy)), env, "aws-proxied")
    assert http_proxy.requests() > before  # the proxy carried them (forwarded: moto is plain HTTP)
    wrong = "not-" + http_proxy.password
    # tinyproxy refuses a wrong password with 407 (botocore: the proxy is unavailable), or now and then
    # with its own 401 page ("not configured to service requests from you"), which reaches the store
    # as an answer: either way the write fails, and neither password is said.
    with pytest.raises((Unavailable, StoreError)) as info:
        _roundtrip(_aws(moto_server, _proxy(http_proxy)), {"T_STORE_PROXY": wrong}, "aws-wrong")
    assert isinstance(info.value, Unavailable) or "proxy" in str(info.value).lower(), info.value
    OUTPUTS.append(str(info.value))
    assert wrong not in str(info.value) and http_proxy.password not in str(info.value)


def test_aws_over_https_a_refused_tunnel_names_the_proxy_and_its_answer(
    moto_server: str, http_proxy: EgressProxy
) -> None:
    """Production endpoints are HTTPS: the proxy sees a CONNECT, and a wrong password is its refusal
    of the tunnel (tinyproxy: 401, others 407), which botocore reports as a ProxyConnectionError.
    The TLS that would follow a tunnel is never reached, so moto's plain HTTP port serves as the
    endpoint's address."""
    wrong = "not-" + http_proxy.password
    store = _aws(moto_server.replace("http://", "https://"), _proxy(http_proxy))
    with pytest.raises(Unavailable) as info:
        _roundtrip(store, {"T_STORE_PROXY": wrong}, "aws-tunnel")
    message = str(info.value)
    OUTPUTS.append(message)
    assert "its proxy (store.aws.proxy) refused the tunnel (40" in message, message
    assert wrong not in message and http_proxy.password not in message and http_proxy.username not in message


@pytest.mark.parametrize("backend", ["vault", "aws"])
def test_a_proxy_in_the_environment_alone_is_not_used(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY and HTTP_PROXY point at nothing: a client that followed them would fail."""
    server = request.getfixturevalue("openbao" if backend == "vault" else "moto_server")  # started first
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, DEAD_PROXY)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    if backend == "vault":
        _roundtrip(_vault(server, None), {"T_VAULT_TOKEN": server.root_token}, "vault-direct")
    else:
        _roundtrip(_aws(server, None), {}, "aws-direct")
