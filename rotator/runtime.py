"""Builds the worker's parts from settings, once: store, CLOB adapter, signers, policies.

This is the one factory of SDK-backed objects (STYLE.md rule 3). The environment arrives as a
mapping from ``cli.py``; nothing here reads ``os.environ``.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rotator.clob.adapter import ClobAdapter, RetryPolicy, SkewPolicy
from rotator.clob.budget import SlidingWindowBudget
from rotator.config import CredentialSettings, Settings
from rotator.errors import ConfigError, SignerError
from rotator.metrics import Metrics
from rotator.model import CredentialRef, Secret
from rotator.rotation import Policy, Rotator
from rotator.signers.base import Signer
from rotator.stores.base import Store

_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


def _where(cred: CredentialSettings) -> str:
    s = cred.signer
    if s.source == "env":
        return f"credentials[{cred.name}].signer (env {s.env})"
    return f"credentials[{cred.name}].signer (file {s.path})"


def read_signer_key(cred: CredentialSettings, env: Mapping[str, str]) -> Secret:
    """The private key text of an env/file signer, checked for shape. :raises SignerError:"""
    s = cred.signer
    where = _where(cred)
    if s.source == "env":
        assert s.env is not None
        value = env.get(s.env)
        if not value:
            raise SignerError(f"{where}: environment variable {s.env} is not set")
    else:
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
    value = value.strip()
    if not _HEX_KEY.match(value):
        raise SignerError(f"{where}: not a private key (expected 64 hex characters, optionally 0x-prefixed)")
    return Secret(value)


def build_store(settings: Settings, env: Mapping[str, str]) -> Store:
    backend = settings.store.backend
    if backend == "file":
        from rotator.stores.file import FileStore, parse_file_key

        fs = settings.store.file
        source = f"store.file.key_env ({fs.key_env})"
        text = env.get(fs.key_env)
        if not text:
            raise ConfigError(f"{source}: environment variable {fs.key_env} is not set")
        return FileStore(Path(fs.path), parse_file_key(text, source=source))
    raise ConfigError(f"store.backend: {backend!r} is not available in this build")


@dataclass
class Runtime:
    """Everything a pass needs, built once per process."""

    settings: Settings
    env: Mapping[str, str]
    metrics: Metrics = field(default_factory=Metrics)
    _store: Store | None = None
    _clob: ClobAdapter | None = None
    _rotator: Rotator | None = None
    _signers: dict[str, Signer] = field(default_factory=dict)

    def validate(self) -> None:
        """Fail fast (exit 2) on config the file alone cannot show: missing env vars, bad key shapes."""
        for cred in self.settings.credentials:
            if cred.signer.source in ("env", "file"):
                read_signer_key(cred, self.env)
        self.store  # noqa: B018 - builds the store: a missing file key is a config error

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = build_store(self.settings, self.env)
            self.metrics.init_credentials((c.name for c in self.settings.credentials), self._store.backend)
        return self._store

    @property
    def clob(self) -> ClobAdapter:
        if self._clob is None:
            c = self.settings.clob
            self._clob = ClobAdapter(
                c.host,
                c.chain_id,
                timeout=c.timeout,
                retry=RetryPolicy(c.retry.attempts, c.retry.base, c.retry.cap, c.retry.deadline),
                skew=SkewPolicy(c.clock_skew.max, c.clock_skew.mode, c.clock_skew.recheck_every),
                auth_budget=SlidingWindowBudget(c.rate_limits.auth.requests, c.rate_limits.auth.per),
                metrics=self.metrics,
            )
        return self._clob

    @property
    def rotator(self) -> Rotator:
        if self._rotator is None:
            self._rotator = Rotator(self.store, self.clob, self.metrics)
        return self._rotator

    def signer(self, cred: CredentialSettings) -> Callable[[], Signer]:
        def build() -> Signer:
            if cred.name not in self._signers:
                from rotator.signers.local import LocalKeySigner

                self._signers[cred.name] = LocalKeySigner(
                    read_signer_key(cred, self.env), source=_where(cred)
                )
            return self._signers[cred.name]

        return build

    def policy(self, cred: CredentialSettings) -> Policy:
        return Policy(
            rotate_every=cred.rotate_every,
            grace=cred.grace,
            verify_timeout=cred.verify_timeout
            if cred.verify_timeout is not None
            else self.settings.clob.verify_timeout,
            adopt_existing=cred.adopt_existing,
            start_nonce=cred.start_nonce,
        )

    @staticmethod
    def ref(cred: CredentialSettings) -> CredentialRef:
        return CredentialRef(cred.name, cred.path)

    def close(self) -> None:
        if self._clob is not None:
            self._clob.close()
        if self._store is not None:
            self._store.close()
