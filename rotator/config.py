"""Typed settings: a YAML file plus ``ROTATOR_*`` environment overrides (``ROTATOR_STORE__BACKEND``).

Secrets are never in the file, only where to find them. Built once in ``cli.py`` and passed down;
no other module reads the environment. A bad file is a :class:`ConfigError` with one line that
names the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rotator.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(value: Any) -> float:
    """``30s``, ``15m``, ``24h``, ``7d``, ``2w`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30s, 15m, 24h, 7d")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"bad duration {str(value)[:40]!r}: use 30s, 15m, 24h, 7d, or seconds")
        seconds = float(match.group(1)) * _UNITS.get(match.group(2) or "s", 1)
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthBudget(_Section):
    requests: int = Field(100, ge=0, description="requests allowed per window; 0 turns the budget off")
    per: Duration = 10.0


class RateLimits(_Section):
    auth: AuthBudget = AuthBudget()


class ClockSkew(_Section):
    max: Duration = 10.0
    mode: Literal["correct", "refuse"] = "correct"
    recheck_every: Duration = 600.0


class Retry(_Section):
    attempts: int = Field(6, ge=1, le=50)
    base: Duration = 0.5
    cap: Duration = 30.0
    deadline: Duration = 120.0


class ClobSettings(_Section):
    host: str = "https://clob.polymarket.com"
    chain_id: int = 137
    timeout: Duration = 10.0
    verify_timeout: Duration = 180.0
    rate_limits: RateLimits = RateLimits()
    clock_skew: ClockSkew = ClockSkew()
    retry: Retry = Retry()

    @model_validator(mode="after")
    def _host(self) -> ClobSettings:
        if not re.match(r"^https?://[^\s/]+", self.host):
            raise ValueError(f"clob.host must be an http(s) URL, got {self.host[:60]!r}")
        return self


class FileStoreSettings(_Section):
    path: str = "./var/keys.enc"
    key_env: str = "ROTATOR_FILE_KEY"


class StoreSettings(_Section):
    backend: Literal["file", "vault", "aws"] = "file"
    file: FileStoreSettings = FileStoreSettings()
    # Filled in by the Vault and AWS backends (their own issue); kept open so a config written for
    # them already loads.
    vault: dict[str, Any] | None = None
    aws: dict[str, Any] | None = None


class SignerSettings(_Section):
    source: Literal["env", "file"]
    env: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _where(self) -> SignerSettings:
        if self.source == "env" and not self.env:
            raise ValueError("signer.source env needs signer.env (the variable's name)")
        if self.source == "file" and not self.path:
            raise ValueError("signer.source file needs signer.path")
        return self


class CredentialSettings(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    signer: SignerSettings
    path: str = Field(min_length=1)
    rotate_every: Duration
    grace: Duration
    verify_timeout: Duration | None = None
    adopt_existing: bool = False
    start_nonce: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _times(self) -> CredentialSettings:
        if self.rotate_every <= 0:
            raise ValueError("rotate_every must be positive")
        return self


class MetricsSettings(_Section):
    port: int = Field(9464, ge=0, le=65535)
    host: str = "0.0.0.0"  # noqa: S104 - the exporter is scraped from outside the pod
    pushgateway: str | None = None
    job: str = "rotator"


class LogSettings(_Section):
    format: Literal["auto", "json", "text"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class DaemonSettings(_Section):
    tick: Duration = 30.0
    jitter: Duration = 5.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ROTATOR_", env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

    clob: ClobSettings = ClobSettings()
    store: StoreSettings = StoreSettings()
    credentials: list[CredentialSettings] = Field(default_factory=list)
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    daemon: DaemonSettings = DaemonSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (which arrives as init kwargs).
        return env_settings, init_settings

    @model_validator(mode="after")
    def _unique(self) -> Settings:
        seen: set[str] = set()
        for cred in self.credentials:
            if cred.name in seen:
                raise ValueError(f"duplicate credential name {cred.name!r}")
            seen.add(cred.name)
        return self

    def credential(self, name: str) -> CredentialSettings:
        for cred in self.credentials:
            if cred.name == name:
                return cred
        raise ConfigError(f"--credential {name}: no such credential in the config")


def load_settings(path: str | Path | None, *, data: dict[str, Any] | None = None) -> Settings:
    """Read and validate the config. :raises ConfigError: one line naming the bad field."""
    raw: Any = {}
    if path is not None:
        import yaml

        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}:{where} not valid YAML") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the config must be a YAML mapping")
    if data is not None:
        raw = {**raw, **data}
    try:
        return Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, raw, path)) from None


def _describe(exc: ValidationError, raw: Any, path: str | Path | None) -> str:
    err = exc.errors()[0]
    parts: list[str] = []
    loc = list(err.get("loc", ()))
    for i, part in enumerate(loc):
        if isinstance(part, int):
            name = _credential_name(raw, loc[:i], part)
            parts[-1] += f"[{name}]" if name else f"[{part}]"
        else:
            parts.append(str(part))
    field = ".".join(parts) or "config"
    msg = err.get("msg", "invalid")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key"
    msg = msg.removeprefix("Value error, ")
    prefix = f"{path}: " if path else ""
    return f"{prefix}{field}: {msg}"


def _credential_name(raw: Any, loc: list[Any], index: int) -> str | None:
    node = raw
    for part in loc:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, list) and index < len(node) and isinstance(node[index], dict):
        name = node[index].get("name")
        return str(name) if isinstance(name, str) else None
    return None
