"""Malformed configs and environment overrides, fed to ``rotator check --offline`` (issue 13, acceptance):
each exits 2 with one line naming the field (or the variable), none echoes key material, none escapes as
a traceback. The cases run in-process (fast); a sample runs as a real process to see its stderr in
tests/integration/test_config_process.py."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.cli import main
from tests.unit.test_config_validation import _base as validation_base

KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"  # a pasted wallet key
FILE = "base.yaml"


def _base() -> dict[str, Any]:
    """The validation tests' two-credential config, with a CLOB and a store file that exist nowhere."""
    cfg = validation_base()
    cfg["clob"] = {"host": "http://127.0.0.1:9", "retry": {"attempts": 3}}
    cfg["store"] = {"backend": "file", "file": {"path": "/nonexistent/keys.enc"}}
    return cfg


def _vault(c: dict[str, Any]) -> dict[str, Any]:
    c["store"] = {"backend": "vault", "vault": {"url": "http://127.0.0.1:8200"}}
    return c


def _c0(c: dict[str, Any]) -> dict[str, Any]:
    return c["credentials"][0]  # type: ignore[no-any-return]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    """A mutation: set the dotted ``path`` (``c0`` is the first credential) to ``value``."""

    def mutate(c: dict[str, Any]) -> None:
        parts = path.split(".")
        node: Any = _c0(c) if parts[0] == "c0" else c
        for part in parts[1 if parts[0] == "c0" else 0 : -1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    return mutate


def _bomb() -> str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\nclob: *a9\n"


NAN, INF = float("nan"), float("inf")

# (id, mutation of the base config | raw file bytes | env overrides, what the one line must name)
MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("clob-not-a-section", _set("clob", "fast"), "clob"),
    ("chain-id-text", _set("clob.chain_id", "polygon"), "clob.chain_id"),
    ("chain-id-huge", _set("clob.chain_id", 2**300), "clob.chain_id"),
    ("clob-timeout-zero", _set("clob.timeout", 0), "clob.timeout"),
    ("clob-timeout-nan", _set("clob.timeout", NAN), "clob.timeout"),
    ("clob-timeout-inf", _set("clob.timeout", INF), "clob.timeout"),
    ("retry-attempts-zero", _set("clob.retry.attempts", 0), "clob.retry.attempts"),
    ("retry-attempts-huge", _set("clob.retry.attempts", 10**12), "clob.retry.attempts"),
    ("retry-deadline-negative", _set("clob.retry.deadline", "-1s"), "clob.retry.deadline"),
    ("clob-host-key", _set("clob.host", KEY), "clob"),
    ("clob-host-ftp", _set("clob.host", "ftp://x"), "clob"),
    ("clob-host-ipv6", _set("clob.host", "http://[::1"), "clob"),
    ("clob-host-port", _set("clob.host", "http://clob:notaport"), "clob"),
    ("clob-host-port-range", _set("clob.host", "http://clob:99999"), "clob"),
    ("vault-url-port", lambda c: _vault(c)["store"]["vault"].update(url="http://vault:port"), "store.vault"),
    ("aws-endpoint-ipv6", _set("store.aws.endpoint_url", "http://[::1"), "store.aws"),
    (
        "kms-endpoint-port",
        _set("c0.signer", {"source": "aws-kms", "key_id": "k", "endpoint_url": "http://kms:x"}),
        "credentials[mm1].signer",
    ),
    ("skew-mode", _set("clob.clock_skew.mode", "fix"), "clob.clock_skew.mode"),
    ("auth-budget-negative", _set("clob.rate_limits.auth.requests", -1), "clob.rate_limits.auth.requests"),
    ("auth-budget-window-zero", _set("clob.rate_limits.auth.per", 0), "clob.rate_limits.auth.per"),
    ("store-list", _set("store", []), "store"),
    ("store-backend-s3", _set("store.backend", "s3"), "store.backend"),
    ("store-backend-key", _set("store.backend", KEY), "store.backend"),
    ("store-file-text", _set("store.file", "keys.enc"), "store.file"),
    ("store-file-path-nul", _set("store.file.path", "keys\x00.enc"), "store.file.path"),
    ("store-file-path-empty", _set("store.file.path", ""), "store.file.path"),
    (
        "signer-file-nul",
        _set("c0.signer", {"source": "file", "path": "/k\x00"}),
        "credentials[mm1].signer.path",
    ),
    (
        "vault-ca-nul",
        lambda c: _vault(c)["store"]["vault"].update(tls={"ca_cert": "/ca\x00.pem"}),
        "store.vault.tls.ca_cert",
    ),
    (
        "vault-token-file-newline",
        lambda c: _vault(c)["store"]["vault"].update(auth={"token_file": "/run/token\n"}),
        "store.vault.auth.token.token_file",
    ),
    ("file-kms-region-alone", _set("store.file.kms_region", "eu-west-1"), "store.file"),
    ("vault-missing", _set("store.backend", "vault"), "store"),
    ("vault-url", lambda c: _vault(c)["store"]["vault"].update(url="localhost"), "store.vault"),
    ("vault-mount-traversal", lambda c: _vault(c)["store"]["vault"].update(mount="a/../b"), "store.vault"),
    ("vault-prefix-absolute", lambda c: _vault(c)["store"]["vault"].update(state_prefix="/x"), "store.vault"),
    (
        "vault-auth-ldap",
        lambda c: _vault(c)["store"]["vault"].update(auth={"method": "ldap"}),
        "store.vault.auth",
    ),
    ("aws-region-key", _set("store.aws.region", KEY), "store.aws"),
    ("aws-region-mars", _set("store.aws.region", "mars"), "store.aws"),
    ("aws-prefix-space", _set("store.aws.state_prefix", "state prefix"), "store.aws"),
    ("credentials-mapping", _set("credentials", {"mm1": {}}), "credentials"),
    ("credentials-text", _set("credentials", "mm1"), "credentials"),
    ("credential-text", lambda c: c["credentials"].__setitem__(0, "mm1"), "credentials[0]"),
    ("credential-null", lambda c: c["credentials"].__setitem__(0, None), "credentials[0]"),
    ("name-empty", _set("c0.name", ""), "credentials[0].name"),
    ("name-slash", _set("c0.name", "a/b"), "credentials[0].name"),
    ("name-key", _set("c0.name", KEY), "credentials[0].name"),
    ("name-duplicate", lambda c: c["credentials"][1].update(name="mm1"), "duplicate credential name"),
    ("name-unicode", _set("c0.name", "mm\u00e91"), "credentials[0].name"),
    ("path-traversal", _set("c0.path", "pub/../rotator-state/mm2"), "credentials[mm1].path"),
    ("path-nul", _set("c0.path", "pub/m\x00m"), "credentials[mm1].path"),
    ("path-duplicate", lambda c: c["credentials"][1].update(path="pub/mm1"), "credentials[mm2].path"),
    ("path-state", lambda c: _c0(_vault(c)).update(path="rotator-state/mm2"), "credentials[mm1].path"),
    ("path-absolute", _set("c0.path", "/pub/mm1"), "credentials[mm1].path"),
    ("path-int", _set("c0.path", 123), "credentials[mm1].path"),
    ("path-empty", _set("c0.path", ""), "credentials[mm1].path"),
    ("path-rtl", _set("c0.path", "pub/\u202emm1"), "credentials[mm1].path"),
    ("path-trailing-slash", _set("c0.path", "pub/mm1/"), "credentials[mm1].path"),
    ("rotate-every-unit", _set("c0.rotate_every", "5x"), "credentials[mm1].rotate_every"),
    ("rotate-every-nan", _set("c0.rotate_every", NAN), "credentials[mm1].rotate_every"),
    ("rotate-every-zero", _set("c0.rotate_every", 0), "credentials[mm1].rotate_every"),
    ("rotate-every-inf", _set("c0.rotate_every", INF), "credentials[mm1].rotate_every"),
    ("rotate-every-digits", _set("c0.rotate_every", "9" * 400), "credentials[mm1].rotate_every"),
    ("rotate-every-bigint", _set("c0.rotate_every", 10**400), "credentials[mm1].rotate_every"),
    ("grace-key", _set("c0.grace", KEY), "credentials[mm1].grace"),
    ("grace-0x-key", _set("c0.grace", "0x" + KEY), "credentials[mm1].grace"),
    ("grace-nan", _set("c0.grace", NAN), "credentials[mm1].grace"),
    ("grace-negative", _set("c0.grace", -5), "credentials[mm1].grace"),
    ("grace-list", _set("c0.grace", [1, 2]), "credentials[mm1].grace"),
    ("grace-mapping", _set("c0.grace", {"a": 1}), "credentials[mm1].grace"),
    ("grace-bool", _set("c0.grace", True), "credentials[mm1].grace"),
    ("start-nonce-huge", _set("c0.start_nonce", 2**300), "credentials[mm1].start_nonce"),
    ("start-nonce-negative", _set("c0.start_nonce", -1), "credentials[mm1].start_nonce"),
    ("start-nonce-text", _set("c0.start_nonce", "abc"), "credentials[mm1].start_nonce"),
    ("verify-timeout-zero", _set("c0.verify_timeout", 0), "credentials[mm1].verify_timeout"),
    ("min-grace-inf", _set("c0.min_grace", INF), "credentials[mm1].min_grace"),
    ("consumer-ttl-zero", _set("c0.consumer_ttl", 0), "credentials[mm1]"),
    ("signer-missing", lambda c: _c0(c).pop("signer"), "credentials[mm1].signer"),
    ("signer-ledger", _set("c0.signer.source", "ledger"), "credentials[mm1].signer.source"),
    ("signer-env-missing", lambda c: _c0(c)["signer"].pop("env"), "credentials[mm1].signer"),
    ("signer-foreign-field", _set("c0.signer.path", "/k"), "credentials[mm1].signer"),
    ("signer-region-key", _set("c0.signer.region", KEY), "credentials[mm1].signer"),
    ("signer-env-key", _set("c0.signer.env", KEY), "credentials[mm1].signer.env"),
    ("signer-env-0x-key", _set("c0.signer.env", "0x" + KEY), "credentials[mm1].signer.env"),
    ("signer-env-spaces", _set("c0.signer.env", "MY KEY"), "credentials[mm1].signer.env"),
    ("file-key-env-key", _set("store.file.key_env", KEY), "store.file.key_env"),
    (
        "vault-token-env-key",
        lambda c: _vault(c)["store"]["vault"].update(auth={"token_env": KEY}),
        "store.vault.auth.token.token_env",
    ),
    (
        "kms-key-id-space",
        _set("c0.signer", {"source": "aws-kms", "key_id": "has space"}),
        "credentials[mm1].signer",
    ),
    ("metrics-port-huge", _set("metrics.port", 70000), "metrics.port"),
    ("metrics-port-text", _set("metrics.port", "http"), "metrics.port"),
    ("pushgateway-ipv6", _set("metrics.pushgateway", "http://[::1"), "metrics.pushgateway"),
    ("pushgateway-port", _set("metrics.pushgateway", "pgw:notaport"), "metrics.pushgateway"),
    ("pushgateway-scheme", _set("metrics.pushgateway", "ftp://pgw:9091"), "metrics.pushgateway"),
    ("pushgateway-space", _set("metrics.pushgateway", "pgw 9091"), "metrics.pushgateway"),
    ("pushgateway-key", _set("metrics.pushgateway", KEY), "metrics.pushgateway"),
    ("metrics-job-empty", _set("metrics.job", ""), "metrics.job"),
    ("metrics-host-space", _set("metrics.host", "0.0.0.0 "), "metrics.host"),
    ("log-level", _set("log.level", "verbose"), "log.level"),
    ("daemon-tick-zero", _set("daemon.tick", 0), "daemon.tick"),
    ("unknown-top-key", _set("stor", {}), "stor: unknown key"),
    ("unknown-nested-key", _set("clob.hots", "x"), "clob.hots: unknown key"),
]

rng = random.Random(13)
FILES: list[tuple[str, bytes, str]] = [
    ("not-utf8", b"clob:\n  host: \xff\xfe\x00\n", "not UTF-8"),
    ("binary", bytes(rng.randrange(256) for _ in range(4096)), FILE),
    ("nul-bytes", b"\x00\x00\x00", FILE),
    ("deep-flow", b"[" * 3000 + b"]" * 3000, "nested too deeply"),
    (
        "deep-block",
        ("a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 300))).encode(),
        "nested too deeply",
    ),
    ("alias-bomb", _bomb().encode(), "too large"),
    ("top-level-list", b"- clob\n- store\n", "must be a YAML mapping"),
    ("top-level-scalar", b"42\n", "must be a YAML mapping"),
    ("unclosed", b"clob: [unclosed\n", "not valid YAML"),
    ("non-text-key", b"1: x\n", "keys must be names"),
    ("unhashable-key", b"? [a, b]\n: c\n", "not valid YAML"),
    ("null-key", b"null: x\n", "keys must be names"),
    ("huge", b"# " + b"x" * (2 << 20) + b"\n", "too large"),
    ("key-as-yaml", KEY.encode() + b"\n", "must be a YAML mapping"),
    ("int-too-long", b"metrics:\n  port: " + b"9" * 5000 + b"\n", "number"),
]

ENVS: list[tuple[str, dict[str, str], str]] = [
    ("env-backend", {"ROTATOR_STORE__BACKEND": "fiel"}, "ROTATOR_STORE__BACKEND: store.backend"),
    ("env-typo", {"ROTATOR_STROE__BACKEND": "file"}, "ROTATOR_STROE__BACKEND: unknown setting"),
    ("env-single-underscore", {"ROTATOR_METRICS_PORT": "9464"}, "ROTATOR_METRICS_PORT: unknown setting"),
    ("env-index", {"ROTATOR_CREDENTIALS__0__GRACE": "1s"}, "ROTATOR_CREDENTIALS__0__GRACE: unknown setting"),
    ("env-not-json", {"ROTATOR_CREDENTIALS": "not json"}, "ROTATOR_CREDENTIALS"),
    ("env-broken-json", {"ROTATOR_STORE": "{oops"}, "ROTATOR_STORE"),
    ("env-deep-json", {"ROTATOR_CLOB": "[" * 100_000}, "ROTATOR_CLOB"),
    ("env-nan", {"ROTATOR_CLOB__TIMEOUT": "nan"}, "ROTATOR_CLOB__TIMEOUT: clob.timeout"),
    ("env-key", {"ROTATOR_CLOB__TIMEOUT": KEY}, "ROTATOR_CLOB__TIMEOUT: clob.timeout"),
    ("env-port", {"ROTATOR_METRICS__PORT": "99999"}, "ROTATOR_METRICS__PORT: metrics.port"),
    (
        "env-credential-fields",
        {"ROTATOR_CREDENTIALS": '[{"name": "x"}]'},
        "ROTATOR_CREDENTIALS: credentials[x]",
    ),
    ("env-section-type", {"ROTATOR_CLOB__RETRY": "[1]"}, "ROTATOR_CLOB__RETRY: clob.retry"),
    ("env-int-too-long", {"ROTATOR_CREDENTIALS": "[" + "9" * 5000 + "]"}, "ROTATOR_CREDENTIALS"),
    ("env-lower-case", {"rotator_log__level": "loud"}, "rotator_log__level: log.level"),
    ("env-vault-url", {"ROTATOR_STORE__VAULT__URL": "localhost"}, "ROTATOR_STORE__VAULT__URL"),
]


def _run(
    tmp_path: Path, blob: bytes, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> tuple[int, str, str]:
    for name in list(os.environ):
        if name.upper().startswith("ROTATOR_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / FILE
    path.write_bytes(blob)
    code = main(["check", "--offline", "-c", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def _judge(code: int, out: str, err: str, expected: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in out + err
    for n in range(12, len(KEY) + 1, 4):
        assert KEY[:n] not in out + err and KEY[-n:] not in out + err, err


def test_the_base_config_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    code, out, err = _run(tmp_path, yaml.safe_dump(_base()).encode(), {}, monkeypatch, capsys)
    assert code == 0 and "ok" in out and err == "", (out, err)


def test_there_are_at_least_60_cases() -> None:
    assert len(MUTATIONS) + len(FILES) + len(ENVS) >= 60


@pytest.mark.parametrize(("what", "mutate", "expected"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_malformed_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, what: str, mutate: Any, expected: str
) -> None:
    cfg = _base()
    mutate(cfg)
    blob = yaml.dump(cfg, Dumper=yaml.SafeDumper, allow_unicode=True).encode()
    _judge(*_run(tmp_path, blob, {}, monkeypatch, capsys), expected)


@pytest.mark.parametrize(("what", "blob", "expected"), FILES, ids=[f[0] for f in FILES])
def test_malformed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, what: str, blob: bytes, expected: str
) -> None:
    _judge(*_run(tmp_path, blob, {}, monkeypatch, capsys), expected)


@pytest.mark.parametrize(("what", "env", "expected"), ENVS, ids=[e[0] for e in ENVS])
def test_malformed_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    what: str,
    env: dict[str, str],
    expected: str,
) -> None:
    code, out, err = _run(tmp_path, yaml.safe_dump(_base()).encode(), env, monkeypatch, capsys)
    _judge(code, out, err, expected)
    if what != "env-vault-url":
        assert FILE not in err  # blamed on the variable, not on the file
