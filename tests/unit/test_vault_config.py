"""``store.vault`` settings: what loads, and the one-line error for what does not.

Building the store reads the token/role/secret sources and checks TLS files before any network
call, so a missing one is a config error (exit 2), never a failed rotation. No server needed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rotator.clients.vault import AppRoleLogin, KubernetesLogin, TokenLogin, build_login
from rotator.config import VaultAppRoleAuth, VaultKubernetesAuth, VaultTokenAuth, load_settings
from rotator.errors import ConfigError
from rotator.stores.vault import build_vault_store

URL = "https://vault.example:8200"


def settings(vault: dict[str, Any], credentials: list[dict[str, Any]] | None = None) -> Any:
    data: dict[str, Any] = {"store": {"backend": "vault", "vault": vault}}
    if credentials is not None:
        data["credentials"] = credentials
    return load_settings(None, data=data)


def cred(path: str) -> dict[str, Any]:
    signer = {"source": "env", "env": "K"}
    return {"name": "mm", "signer": signer, "path": path, "rotate_every": "1d", "grace": "1h"}


def test_minimal_config_defaults() -> None:
    vault = settings({"url": URL}).store.vault
    assert (vault.mount, vault.state_prefix, vault.namespace, vault.timeout) == (
        "secret",
        "rotator-state",
        None,
        10,
    )
    assert isinstance(vault.auth, VaultTokenAuth) and vault.auth.env_name == "VAULT_TOKEN"
    assert not vault.tls.skip_verify and vault.tls.ca_cert is None


def test_each_auth_method_loads_as_its_own_type() -> None:
    approle = {"method": "approle", "role_id": "r", "secret_id_file": "/run/secret-id"}
    kube = {"method": "kubernetes", "role": "rotator"}
    assert isinstance(settings({"url": URL, "auth": approle}).store.vault.auth, VaultAppRoleAuth)
    k = settings({"url": URL, "auth": kube}).store.vault.auth
    assert isinstance(k, VaultKubernetesAuth)
    assert (k.mount, k.jwt_file) == ("kubernetes", "/var/run/secrets/kubernetes.io/serviceaccount/token")
    assert settings({"url": URL, "auth": {"token_file": "/vault/token"}}).store.vault.auth.env_name is None


BAD = [
    ("no section", None, "store: backend vault needs a vault section (at least url)"),
    ("no url", {}, "store.vault.url: Field required"),
    ("bad url", {"url": "vault:8200"}, "store.vault: url must be an http(s) URL"),
    ("unknown key", {"url": URL, "mountpoint": "x"}, "store.vault.mountpoint: unknown key"),
    ("bad mount", {"url": URL, "mount": "/secret/"}, "store.vault: mount must be a Vault path"),
    (
        "dotdot prefix",
        {"url": URL, "state_prefix": "a/../b"},
        "store.vault: state_prefix must be a Vault path",
    ),
    ("zero timeout", {"url": URL, "timeout": 0}, "store.vault: timeout must be positive"),
    (
        "unknown method",
        {"url": URL, "auth": {"method": "ldap"}},
        "store.vault.auth: method must be token, approle",
    ),
    (
        "token both sources",
        {"url": URL, "auth": {"token_env": "A", "token_file": "/f"}},
        "store.vault.auth.token: takes token_env or token_file, not both",
    ),
    (
        "key of another method",
        {"url": URL, "auth": {"role": "x"}},
        "store.vault.auth.token.role: unknown key",
    ),
    (
        "approle without role id",
        {"url": URL, "auth": {"method": "approle", "secret_id_env": "S"}},
        "store.vault.auth.approle: needs exactly one of role_id, role_id_env, role_id_file",
    ),
    (
        "approle with two role ids",
        {"url": URL, "auth": {"method": "approle", "role_id": "r", "role_id_env": "R", "secret_id_env": "S"}},
        "needs exactly one of role_id, role_id_env, role_id_file",
    ),
    (
        "approle without secret id",
        {"url": URL, "auth": {"method": "approle", "role_id": "r"}},
        "store.vault.auth.approle: needs exactly one of secret_id_env, secret_id_file",
    ),
    (
        "kubernetes without role",
        {"url": URL, "auth": {"method": "kubernetes"}},
        "store.vault.auth.kubernetes.role: Field required",
    ),
    (
        "half a client cert",
        {"url": URL, "tls": {"client_cert": "/c.pem"}},
        "client_cert and client_key go together",
    ),
    (
        "skip verify with a CA",
        {"url": URL, "tls": {"skip_verify": True, "ca_cert": "/ca.pem"}},
        "skip_verify and ca_cert contradict each other",
    ),
]


@pytest.mark.parametrize(("what", "vault", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_vault_config_is_one_line_naming_the_field(what: str, vault: Any, expected: str) -> None:
    store: dict[str, Any] = {"backend": "vault"}
    if vault is not None:
        store["vault"] = vault
    with pytest.raises(ConfigError) as info:
        load_settings(None, data={"store": store})
    message = str(info.value)
    assert expected in message and "\n" not in message, message


def test_a_published_path_inside_the_state_prefix_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"path 'rotator-state/mm' lies inside store\.vault\.state_prefix"):
        settings({"url": URL}, [cred("rotator-state/mm")])
    settings({"url": URL}, [cred("rotator-statement/mm")])  # a mere common prefix is fine


def test_env_overrides_reach_the_vault_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATOR_STORE__VAULT__MOUNT", "kv")
    assert settings({"url": URL}).store.vault.mount == "kv"


# -- secret sources are checked when the store is built -------------------------------------------


def test_build_login_picks_the_method_and_reads_its_sources(tmp_path: Path) -> None:
    (tmp_path / "sid").write_text("secret-id-value\n")
    (tmp_path / "jwt").write_text("header.claims.sig")
    token = settings({"url": URL}).store.vault
    approle = settings(
        {
            "url": URL,
            "auth": {"method": "approle", "role_id_env": "R", "secret_id_file": str(tmp_path / "sid")},
        }
    ).store.vault
    kube = settings(
        {"url": URL, "auth": {"method": "kubernetes", "role": "r", "jwt_file": str(tmp_path / "jwt")}}
    ).store.vault
    assert isinstance(build_login(token, {"VAULT_TOKEN": "t"}), TokenLogin)
    assert isinstance(build_login(approle, {"R": "role"}), AppRoleLogin)
    assert isinstance(build_login(kube, {}), KubernetesLogin)


MISSING = [
    ({"url": URL}, {}, "store.vault.auth.token_env: environment variable VAULT_TOKEN is not set"),
    (
        {"url": URL, "auth": {"token_file": "/nonexistent/token"}},
        {},
        "store.vault.auth.token_file: cannot read /nonexistent/token (No such file or directory)",
    ),
    (
        {"url": URL, "auth": {"method": "approle", "role_id_env": "R", "secret_id_env": "S"}},
        {"R": "role"},
        "store.vault.auth.secret_id_env: environment variable S is not set",
    ),
    (
        {"url": URL, "auth": {"method": "kubernetes", "role": "r", "jwt_file": "/nonexistent/jwt"}},
        {},
        "store.vault.auth.jwt_file: cannot read /nonexistent/jwt",
    ),
    (
        {"url": URL, "tls": {"ca_cert": "/nonexistent/ca.pem"}},
        {"VAULT_TOKEN": "t"},
        "store.vault.tls.ca_cert: /nonexistent/ca.pem is not a readable file",
    ),
]


@pytest.mark.parametrize(
    ("vault", "env", "expected"), MISSING, ids=["token env", "token file", "secret id", "jwt", "ca"]
)
def test_a_missing_source_is_a_config_error_at_build_time(
    vault: Any, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_vault_store(settings(vault).store.vault, env)
    assert expected in str(info.value)


def test_an_empty_token_file_is_refused_without_echoing_anything(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("  \n")
    with pytest.raises(ConfigError, match="token is empty"):
        build_vault_store(
            settings({"url": URL, "auth": {"token_file": str(tmp_path / "token")}}).store.vault, {}
        )


def test_building_the_store_does_not_touch_the_network_or_print_the_token() -> None:
    store = build_vault_store(
        settings({"url": "http://127.0.0.1:9"}).store.vault, {"VAULT_TOKEN": "s.sekret-value"}
    )
    assert "sekret" not in repr(store)
    store.close()
