"""Builds each credential's signer from ``signer.source``: the one place the sources are told apart.

``check_signer`` is what start-up runs (exit 2 on a bad config): it reads env/file keys and builds the
clients of remote sources, but calls no server, so an outage at start-up is not a config error.
``build_signer`` makes the signer, contacting Vault or AWS once (to learn the address).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rotator.errors import SignerError
from rotator.model import Secret
from rotator.signers.base import Signer

if TYPE_CHECKING:
    from rotator.config import CredentialSettings, Settings

_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


def describe(cred: CredentialSettings) -> str:
    """How error messages name a credential's key source (never its value)."""
    from rotator.config import public

    s = cred.signer
    where = {
        "env": lambda: f"env {s.env}",
        "file": lambda: f"file {s.path}",
        "vault": lambda: f"vault {s.mount + '/' if s.mount else ''}{s.path}#{s.field}",
        "aws-secretsmanager": lambda: (
            f"aws-secretsmanager {s.secret_id}" + (f"#{s.field}" if s.field else "")
        ),
        "aws-kms": lambda: f"aws-kms {s.key_id}",
    }[s.source]()
    # Names a key's place, never a key: a value pasted where its place goes stays unprinted.
    return f"credentials[{cred.name}].signer ({s.source} {public(where.split(' ', 1)[1])})"


def read_local_key(cred: CredentialSettings, env: Mapping[str, str]) -> Secret:
    """The private key text of an env/file signer, checked for shape. :raises SignerError:"""
    s = cred.signer
    where = describe(cred)
    if s.source == "env":
        assert s.env is not None
        from rotator.config import env_problem

        value = env.get(s.env)
        problem = env_problem(env, s.env)
        if problem or value is None:
            raise SignerError(f"{where}: environment variable {s.env} {problem}")
    elif s.source == "file":
        assert s.path is not None
        path = Path(s.path)
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise SignerError(f"{where}: cannot read ({exc.strerror})") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SignerError(
                f"{where}: file is readable by group or others (mode {stat.S_IMODE(mode):o}); chmod 600"
            )
        try:
            value = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            raise SignerError(f"{where}: cannot read the key file") from None
    else:
        raise AssertionError(f"{s.source} is not a local source")
    value = value.strip()
    if not _HEX_KEY.match(value):
        raise SignerError(f"{where}: not a private key (expected 64 hex characters, optionally 0x-prefixed)")
    return Secret(value)


def _aws_client(
    cred: CredentialSettings,
    settings: Settings,
    env: Mapping[str, str],
    service: Literal["kms", "secretsmanager"],
) -> Any:
    from rotator.clients.aws import make_client, proxy_url

    s = cred.signer
    aws = settings.store.aws
    return make_client(
        service,
        region=s.region or aws.region,
        endpoint_url=s.endpoint_url,  # per service: the store's Secrets Manager endpoint is no KMS one
        timeout=aws.timeout,
        max_attempts=aws.max_attempts,
        setting=f"credentials[{cred.name}].signer.region",
        proxy=proxy_url(aws.proxy, env),
    )


def check_signer(cred: CredentialSettings, settings: Settings, env: Mapping[str, str]) -> None:
    """Start-up checks that need no server. :raises ConfigError: (SignerError for key sources)."""
    s = cred.signer
    if s.source in ("env", "file"):
        read_local_key(cred, env)
    elif s.source == "vault":
        from rotator.clients.vault import build_login

        assert settings.store.vault is not None  # Settings refuses a vault signer without it
        build_login(settings.store.vault, env)  # the auth secrets exist
    else:
        _aws_client(cred, settings, env, "kms" if s.source == "aws-kms" else "secretsmanager").close()


def build_signer(cred: CredentialSettings, settings: Settings, env: Mapping[str, str]) -> Signer:
    """The signer of ``cred``. Remote sources are asked once, for the address.

    :raises SignerError: the source is misconfigured, refuses, or holds no usable key (names the source).
    :raises rotator.errors.Unavailable: the source cannot be reached right now.
    """
    s = cred.signer
    where = describe(cred)
    if s.source in ("env", "file"):
        from rotator.signers.local import LocalKeySigner

        return LocalKeySigner(read_local_key(cred, env), source=where)
    if s.source == "aws-kms":
        from rotator.signers.kms import KmsSigner

        assert s.key_id is not None
        client = _aws_client(cred, settings, env, "kms")
        try:
            return KmsSigner(client, s.key_id, source=where)
        except BaseException:
            client.close()
            raise
    from rotator.signers.local import FetchedKeySigner

    source: Any
    if s.source == "vault":
        from rotator.signers.vault import build_vault_source

        assert settings.store.vault is not None and s.path is not None and s.field is not None
        source = build_vault_source(
            settings.store.vault, env, mount=s.mount, path=s.path, field=s.field, source=where
        )
    else:
        from rotator.signers.aws import SecretsManagerKeySource

        assert s.secret_id is not None
        source = SecretsManagerKeySource(
            _aws_client(cred, settings, env, "secretsmanager"),
            s.secret_id,
            field=s.field,
            version_stage=s.version_stage,
            source=where,
        )
    try:
        return FetchedKeySigner(source, source=where, close=source.close)
    except BaseException:
        source.close()
        raise
