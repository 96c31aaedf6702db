"""Config validation (issue 13 items 2, 3, 10, 11, 12, 13): every bad value is one line naming the
field (or the environment variable), never echoes key material, never escapes as a traceback."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.config import load_settings, parse_duration
from rotator.errors import ConfigError

PASTED_KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def _base(backend: str = "file") -> dict[str, Any]:
    store: dict[str, Any] = {"backend": backend}
    if backend == "vault":
        store["vault"] = {"url": "http://127.0.0.1:8200", "auth": {"token_env": "VT"}}
    return {
        "store": store,
        "credentials": [
            {
                "name": "mm1",
                "signer": {"source": "env", "env": "K1"},
                "path": "pub/mm1",
                "rotate_every": "1h",
                "grace": "5m",
            },
            {
                "name": "mm2",
                "signer": {"source": "env", "env": "K2"},
                "path": "pub/mm2",
                "rotate_every": "1h",
                "grace": "5m",
            },
        ],
    }


def _load(tmp_path: Path, cfg: dict[str, Any], env: dict[str, str] | None = None) -> str:
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env or {})
    return str(info.value)


# -- item 10: durations are finite, positive where zero makes no sense, bounded ----------------------------
@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, "nan", "inf", "9" * 400, 10**400, "1e400", 1e300]
)
def test_durations_are_finite_and_bounded(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("grace", ".nan", "credentials[mm1].grace"),
        ("grace", ".inf", "credentials[mm1].grace"),
        ("rotate_every", "1.0e+400", "credentials[mm1].rotate_every"),
        ("grace", "0s", "credentials[mm1].grace: must be positive"),
        ("start_nonce", str(2**300), "credentials[mm1].start_nonce"),
        ("verify_timeout", "0", "credentials[mm1].verify_timeout: must be positive"),
    ],
)
def test_bad_credential_numbers(tmp_path: Path, field: str, value: str, expected: str) -> None:
    cfg = _base()
    cfg["credentials"][0][field] = yaml.safe_load(value)
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=re_escape(expected)):
        load_settings(path, env={})


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ({"clob": {"timeout": 0}}, "clob.timeout"),
        ({"clob": {"retry": {"deadline": 0}}}, "clob.retry.deadline"),
        ({"daemon": {"tick": 0}}, "daemon.tick"),
        ({"clob": {"rate_limits": {"auth": {"per": 0}}}}, "clob.rate_limits.auth.per"),
    ],
)
def test_zero_where_zero_makes_no_sense(tmp_path: Path, section: dict[str, Any], value: str) -> None:
    cfg = {**_base(), **section}
    assert value in _load(tmp_path, cfg)


@pytest.mark.parametrize(
    ("endpoint", "refused"),
    [
        ("/balance-allowance?asset_type=COLLATERAL", False),
        ("/data/orders?market=0x1", False),
        ("/auth/api-keys", True),  # every probe would spend the bots' /auth/* budget (I7)
        ("/auth/ban-status/closed-only", True),
        ("/auth/", True),
        ("/../auth/api-keys", True),
        ("balance-allowance", True),  # not a path
    ],
)
def test_the_probe_endpoint_must_lie_outside_auth(tmp_path: Path, endpoint: str, refused: bool) -> None:
    cfg = {**_base(), "clob": {"probe": {"endpoint": endpoint}}}
    if refused:
        assert "clob.probe.endpoint: must be the path (and query) of an L2 read outside /auth/*" in (
            _load(tmp_path, cfg)
        )
    else:
        path = tmp_path / "ok.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert load_settings(path, env={}).clob.probe.endpoint == endpoint


# -- item 11: no key material in an error --------------------------------------------------------------------
@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["credentials"][0].update(grace=PASTED_KEY),
        lambda c: c["credentials"][0].update(grace="0x" + PASTED_KEY),
        lambda c: c["store"].update(aws={"region": PASTED_KEY}),
        lambda c: c.update(clob={"host": PASTED_KEY}),
        lambda c: c["store"].update(backend=PASTED_KEY),
        lambda c: c["credentials"][0].update(name=PASTED_KEY + "!"),
        lambda c: c["credentials"][0]["signer"].update(region=PASTED_KEY),
    ],
)
def test_key_material_is_never_echoed(tmp_path: Path, mutate: Any) -> None:
    cfg = _base()
    mutate(cfg)
    msg = _load(tmp_path, cfg)
    for n in range(12, 65):
        assert PASTED_KEY[:n] not in msg and PASTED_KEY[-n:] not in msg, msg
    assert "\n" not in msg


# -- items 2 and 3: paths ------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["file", "vault", "aws"])
@pytest.mark.parametrize(
    "path",
    [
        "pub/../rotator-state/mm2",
        "../x",
        "pub//mm1",
        "/pub/mm1",
        "pub/mm1/",
        "pub/./mm1",
        "pub/m\x00m1",
        "pub/m\nm",
        "pub/\u202emm1",
        "",
    ],
)
def test_bad_paths_are_refused_for_every_backend(tmp_path: Path, backend: str, path: str) -> None:
    cfg = _base(backend)
    cfg["credentials"][0]["path"] = path
    msg = _load(tmp_path, cfg)
    assert "credentials[mm1].path" in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("backend", ["file", "vault", "aws"])
def test_two_credentials_cannot_publish_to_one_path(tmp_path: Path, backend: str) -> None:
    cfg = _base(backend)
    cfg["credentials"][1]["path"] = "pub/mm1"
    msg = _load(tmp_path, cfg)
    assert "credentials[mm2].path" in msg and "mm1" in msg, msg


@pytest.mark.parametrize(
    ("backend", "path"),
    [("vault", "rotator-state/mm2"), ("aws", "rotator/state/mm2"), ("vault", "rotator-state")],
)
def test_a_path_cannot_be_a_state_path(tmp_path: Path, backend: str, path: str) -> None:
    cfg = _base(backend)
    cfg["credentials"][0]["path"] = path
    msg = _load(tmp_path, cfg)
    assert "credentials[mm1].path" in msg and "state" in msg, msg


def test_a_path_cannot_be_where_a_vault_signer_reads_its_wallet_key(tmp_path: Path) -> None:
    cfg = _base("vault")
    cfg["credentials"][1]["signer"] = {"source": "vault", "path": "pub/mm1"}
    msg = _load(tmp_path, cfg)
    assert "credentials[mm1].path" in msg and "signer" in msg, msg


@pytest.mark.parametrize("backend", ["file", "vault", "aws"])
def test_good_config_loads_for_every_backend(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(_base(backend)))
    s = load_settings(path, env={})
    assert [c.path for c in s.credentials] == ["pub/mm1", "pub/mm2"]


# -- item 12: malformed files --------------------------------------------------------------------------------
def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "base.yaml"
    path.write_bytes(b"clob:\n  host: \xff\xfe\x00bad\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(path, env={})


@pytest.mark.parametrize(
    "text", ["[" * 3000 + "]" * 3000, "a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 300))]
)
def test_deeply_nested_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "base.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"base\.yaml"):
        load_settings(path, env={})


def test_yaml_alias_bomb(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    path = tmp_path / "base.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"base\.yaml"):
        load_settings(path, env={})


# -- item 13: environment overrides are named, unknown ones refused ------------------------------------------
def _ok_file(tmp_path: Path) -> Path:
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(_base()))
    return path


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ROTATOR_STORE__BACKEND": "fiel"}, "ROTATOR_STORE__BACKEND"),
        ({"ROTATOR_STROE__BACKEND": "file"}, "ROTATOR_STROE__BACKEND: unknown setting"),
        ({"ROTATOR_STORE__FIEL__PATH": "x"}, "ROTATOR_STORE__FIEL__PATH: unknown setting"),
        ({"ROTATOR_CREDENTIALS": "not json"}, "ROTATOR_CREDENTIALS"),
        ({"ROTATOR_STORE": "{oops"}, "ROTATOR_STORE"),
        ({"ROTATOR_CLOB__TIMEOUT": "nan"}, "ROTATOR_CLOB__TIMEOUT"),
        ({"ROTATOR_CLOB__CHAIN_ID": "x"}, "ROTATOR_CLOB__CHAIN_ID"),
        ({"rotator_metrics__port": "99999"}, "rotator_metrics__port"),
        ({"ROTATOR_METRICS_PORT": "1"}, "ROTATOR_METRICS_PORT: unknown setting"),
        ({"ROTATOR_": "1"}, "ROTATOR_: unknown setting"),
    ],
)
def test_bad_environment_overrides_name_the_variable(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_ok_file(tmp_path), env=env)
    msg = str(info.value)
    assert msg.startswith(expected), msg
    assert "base.yaml" not in msg


def test_environment_variables_the_config_names_are_not_settings(tmp_path: Path) -> None:
    cfg = _base()
    cfg["credentials"][0]["signer"]["env"] = "ROTATOR_MM1_KEY"
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {
        "ROTATOR_FILE_KEY": "k",  # store.file.key_env's default
        "ROTATOR_MM1_KEY": "k",  # a signer's env
        # Kubernetes service links of a Service named "rotator" (helm install rotator ...)
        "ROTATOR_PORT": "tcp://10.0.0.1:9464",
        "ROTATOR_SERVICE_HOST": "10.0.0.1",
        "ROTATOR_SERVICE_PORT": "9464",
        "ROTATOR_SERVICE_PORT_METRICS": "9464",
        "ROTATOR_PORT_9464_TCP": "tcp://10.0.0.1:9464",
        "ROTATOR_PORT_9464_TCP_PROTO": "tcp",
        "ROTATOR_PORT_9464_TCP_PORT": "9464",
        "ROTATOR_PORT_9464_TCP_ADDR": "10.0.0.1",
        "ROTATOR_METRICS__PORT": "0",
    }
    s = load_settings(path, env=env)
    assert s.metrics.port == 0


@pytest.mark.parametrize(
    "service",
    ["ROTATOR_PROD", "ROTATOR_PUSHGATEWAY", "ROTATOR_SERVICE", "ROTATOR_PORT_9464_TCP", "ROTATOR__X"],
)
def test_service_links_of_any_release_name_are_not_settings(tmp_path: Path, service: str) -> None:
    # Issue 22 item 15: the Service's part of the name may end like a suffix (rotator-prod's
    # ROTATOR_PROD_SERVICE_PORT is not the PORT of "rotator-prod-service"): the value decides.
    env = {
        f"{service}_SERVICE_HOST": "10.0.0.1",
        f"{service}_SERVICE_PORT": "9464",
        f"{service}_SERVICE_PORT_METRICS": "9464",
        f"{service}_PORT": "tcp://10.0.0.1:9464",
        f"{service}_PORT_9464_TCP": "tcp://10.0.0.1:9464",
        f"{service}_PORT_9464_TCP_PROTO": "tcp",
        f"{service}_PORT_9464_TCP_PORT": "9464",
        f"{service}_PORT_9464_TCP_ADDR": "fd00::1",
    }
    assert load_settings(_ok_file(tmp_path), env=env).metrics.port == 9464
    for name in env:
        with pytest.raises(ConfigError, match=f"^{name}: unknown setting"):
            load_settings(_ok_file(tmp_path), env={name: "not a link"})


def test_environment_overrides_merge_with_the_file(tmp_path: Path) -> None:
    cfg = _base("vault")
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    s = load_settings(path, env={"ROTATOR_STORE__VAULT__MOUNT": "kv", "ROTATOR_CLOB__RETRY__ATTEMPTS": "3"})
    assert s.store.vault is not None and s.store.vault.mount == "kv"
    assert s.store.vault.url == "http://127.0.0.1:8200" and s.clob.retry.attempts == 3
    creds = copy.deepcopy(cfg["credentials"])
    creds[0]["name"] = "fromenv"
    import json

    s = load_settings(path, env={"ROTATOR_CREDENTIALS": json.dumps(creds)})
    assert s.credentials[0].name == "fromenv"


def test_a_section_override_is_not_blamed_for_the_file_s_fields(tmp_path: Path) -> None:
    cfg = _base()
    cfg["clob"] = {"host": "ftp://x"}
    msg = _load(tmp_path, cfg, env={"ROTATOR_CLOB": '{"timeout": 5}'})
    assert msg.startswith(str(tmp_path / "base.yaml")) and "clob.host must be" in msg, msg
    msg = _load(tmp_path, _base(), env={"ROTATOR_CLOB": '{"timeout": 0}'})
    assert msg.startswith("ROTATOR_CLOB: clob.timeout"), msg


def test_the_file_name_is_never_redacted(tmp_path: Path) -> None:
    deep = tmp_path / "ConfigurationDirectoryOfTheRotatorWorker" / "AndItsSubdirectory0123"
    deep.mkdir(parents=True)
    path = deep / "base.yaml"
    cfg = _base()
    cfg["credentials"][0]["grace"] = "soon"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value).startswith(f"{path}: credentials[mm1].grace: bad duration 'soon'"), info.value


def test_an_endless_file_is_too_large_not_a_hang() -> None:
    with pytest.raises(ConfigError, match="too large"):
        load_settings("/dev/zero", env={})


@pytest.mark.parametrize(
    "signer",
    [
        {"source": "aws-secretsmanager", "secret_id": PASTED_KEY},
        {"source": "aws-kms", "key_id": PASTED_KEY},
        {"source": "file", "path": "/keys/" + PASTED_KEY},
        {"source": "vault", "path": "wallets/" + PASTED_KEY},
    ],
)
def test_a_signer_source_is_named_without_key_material(tmp_path: Path, signer: dict[str, Any]) -> None:
    from rotator.signers.factory import describe

    cfg = _base("vault")
    cfg["credentials"][0]["signer"] = signer
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    where = describe(load_settings(path, env={}).credentials[0])
    assert where.startswith("credentials[mm1].signer (") and PASTED_KEY[:12] not in where, where


# -- issue 27: credential kinds -----------------------------------------------------------------------------
def _kinds(**extra: Any) -> dict[str, Any]:
    cfg = _base()
    cfg["credentials"].append(
        {
            "name": "ro1",
            "kind": "readonly",
            "via": "mm1",
            "path": "pub/ro1",
            "rotate_every": "1d",
            "grace": "1h",
        }
        | extra
    )
    return cfg


def test_a_readonly_credential_takes_its_via_signer(tmp_path: Path) -> None:
    path = tmp_path / "kinds.yaml"
    path.write_text(yaml.safe_dump(_kinds()))
    settings = load_settings(path, env={})
    ro, mm1 = settings.credential("ro1"), settings.credential("mm1")
    assert (ro.kind, ro.via, mm1.kind, mm1.via) == ("readonly", "mm1", "trading", None)
    assert ro.signer == mm1.signer  # the same wallet: everything that asks for it finds it


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"via": None}, "kind readonly needs via"),
        ({"via": "nobody"}, "credentials[ro1].via: 'nobody' is no credential"),
        ({"via": "ro1"}, "credentials[ro1].via: 'ro1' is not a trading credential"),
        (
            {"signer": {"source": "env", "env": "K3"}},
            "credentials[ro1].signer: a readonly credential takes no signer",
        ),
        ({"start_nonce": 5}, "credentials[ro1].start_nonce: a readonly credential takes no start_nonce"),
        ({"key_model": "one"}, "a readonly credential takes no key_model"),
        ({"kind": "builder", "adopt_existing": True}, "a builder credential takes no adopt_existing"),
        ({"kind": "admin"}, "kind"),
    ],
)
def test_bad_kind_settings_are_one_clear_line(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    cfg = _kinds()
    cred = cfg["credentials"][-1]
    for name, value in change.items():
        if value is None:
            cred.pop(name)
        else:
            cred[name] = value
    message = _load(tmp_path, cfg, env={"K1": PASTED_KEY})
    assert expected in message and "\n" not in message.strip(), message


def test_a_trading_credential_takes_no_via(tmp_path: Path) -> None:
    cfg = _base()
    cfg["credentials"][1]["via"] = "mm1"
    assert "via goes with kind readonly or builder" in _load(tmp_path, cfg)
