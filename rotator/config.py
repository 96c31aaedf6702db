"""Typed settings: a YAML file plus ``ROTATOR_*`` environment overrides (``ROTATOR_STORE__BACKEND``).

Secrets are never in the file, only where to find them. Built once in ``cli.py`` and passed down;
no other module reads the environment. A bad file is a :class:`ConfigError` with one line that
names the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
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


#: What the CLOB allows on ``/auth/*`` per client IP (clob-auth.md section 6). The bots behind the same
#: egress IP spend it too, every time one starts (create or derive), so the worker takes a share only.
CLOB_AUTH_LIMIT = 100
CLOB_AUTH_WINDOW = 10.0


class AuthBudget(_Section):
    # Half of the IP's 100 per 10 s: the other half stays free for the bots' own start-ups.
    requests: int = Field(50, ge=0, description="requests allowed per window; 0 turns the budget off")
    per: Duration = 10.0


class ReadBudget(_Section):
    requests: int = Field(9000, ge=0, description="requests allowed per window; 0 turns the budget off")
    per: Duration = 10.0


class RateLimits(_Section):
    # /auth/* is 100 requests per 10 s at the CLOB (clob-auth.md section 6); everything else
    # falls under the 9,000 per 10 s general limit.
    auth: AuthBudget = AuthBudget()
    read: ReadBudget = ReadBudget()


class ProbeSettings(_Section):
    """How the worker checks that a key works without spending ``/auth/*``: an L2 read (DESIGN.md).

    ``endpoint``: path and query of a small L2 GET; the HMAC covers the path. ``requests``/``per``: that
    endpoint's documented limit per IP (200 per 10 s for balance-allowance), which the client keeps to.
    ``share``: the part of that limit the daemon's periodic probes may use (bots read it too), which
    stretches ``daemon.probe_every`` for large fleets.
    """

    endpoint: str = "/balance-allowance?asset_type=COLLATERAL"
    requests: int = Field(200, ge=0, description="the endpoint's limit per window; 0 turns the budget off")
    per: Duration = 10.0
    share: float = Field(0.25, gt=0, le=1)

    @model_validator(mode="after")
    def _endpoint(self) -> ProbeSettings:
        path = self.endpoint.partition("?")[0]
        if not re.match(r"^/[A-Za-z0-9/_.-]*$", path) or path.startswith("/auth/") or ".." in path:
            raise ValueError(
                "probe.endpoint must be the path (and query) of an L2 read outside /auth/*, "
                "like /balance-allowance?asset_type=COLLATERAL"
            )
        return self


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
    probe: ProbeSettings = ProbeSettings()
    clock_skew: ClockSkew = ClockSkew()
    retry: Retry = Retry()
    # Credentials passed over at once by `rotate --all` and the daemon; the budgets pace them.
    concurrency: int = Field(8, ge=1, le=256)

    @model_validator(mode="after")
    def _host(self) -> ClobSettings:
        if not re.match(r"^https?://[^\s/]+", self.host):
            raise ValueError(f"clob.host must be an http(s) URL, got {self.host[:60]!r}")
        return self


class FileStoreSettings(_Section):
    """The file's AES-256 key comes from ``key_env``, or, with ``kms_key_id``, is a KMS data key whose
    encrypted form is kept beside the file in ``<path>.datakey`` (``kms_region`` defaults to
    ``store.aws.region``, then the standard chain; ``kms_endpoint_url`` is a VPC or test KMS endpoint).
    ``previous_key_env``: during a change of the ``key_env`` key, the variable holding the old key, which
    reads a file not yet re-sealed (``rotator rekey``); writes always use ``key_env``."""

    path: str = "./var/keys.enc"
    key_env: str = "ROTATOR_FILE_KEY"
    previous_key_env: str | None = None
    kms_key_id: str | None = None
    kms_region: str | None = None
    kms_endpoint_url: str | None = None

    @model_validator(mode="after")
    def _key_source(self) -> FileStoreSettings:
        previous = self.previous_key_env
        if previous is not None:
            if self.kms_key_id is not None:
                raise ValueError("previous_key_env goes with key_env (a KMS key is rotated in KMS)")
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", previous):
                raise ValueError("previous_key_env must be an environment variable name")
            if previous == self.key_env:
                raise ValueError("previous_key_env must name another variable than key_env")
        if self.kms_key_id is None:
            if {"kms_region", "kms_endpoint_url"} & self.model_fields_set:
                raise ValueError("kms_region and kms_endpoint_url only go with kms_key_id")
            return self
        if "key_env" in self.model_fields_set:
            raise ValueError("takes key_env or kms_key_id, not both")
        if not _KMS_KEY_ID.match(self.kms_key_id):
            raise ValueError("kms_key_id must be a KMS key id, key ARN, alias/NAME or alias ARN")
        if self.kms_region is not None and not _AWS_REGION.match(self.kms_region):
            raise ValueError(f"kms_region must look like us-east-1, got {self.kms_region[:40]!r}")
        _aws_endpoint(self.kms_endpoint_url, "kms_endpoint_url")
        return self


_VAULT_PATH = re.compile(r"^[A-Za-z0-9_.@-]+(/[A-Za-z0-9_.@-]+)*$")


def _vault_path(value: str, what: str) -> str:
    if not _VAULT_PATH.match(value) or any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"{what} must be a Vault path like 'secret' or 'a/b' (no leading or trailing '/')")
    return value


class VaultTokenAuth(_Section):
    """``token``: a Vault token from an environment variable (default ``VAULT_TOKEN``) or a file."""

    method: Literal["token"] = "token"
    token_env: str | None = None
    token_file: str | None = None  # e.g. Vault Agent's sink; re-read when Vault refuses the token

    @model_validator(mode="after")
    def _source(self) -> VaultTokenAuth:
        if self.token_env and self.token_file:
            raise ValueError("takes token_env or token_file, not both")
        return self

    @property
    def env_name(self) -> str | None:
        """The variable holding the token, or None when it comes from ``token_file``."""
        return None if self.token_file else (self.token_env or "VAULT_TOKEN")


class VaultAppRoleAuth(_Section):
    """``approle``: role id (not secret; inline, env or file) and secret id (env or file)."""

    method: Literal["approle"]
    mount: str = "approle"
    role_id: str | None = None
    role_id_env: str | None = None
    role_id_file: str | None = None
    secret_id_env: str | None = None
    secret_id_file: str | None = None

    @model_validator(mode="after")
    def _sources(self) -> VaultAppRoleAuth:
        _vault_path(self.mount, "auth.mount")
        if sum(x is not None for x in (self.role_id, self.role_id_env, self.role_id_file)) != 1:
            raise ValueError("needs exactly one of role_id, role_id_env, role_id_file")
        if sum(x is not None for x in (self.secret_id_env, self.secret_id_file)) != 1:
            raise ValueError("needs exactly one of secret_id_env, secret_id_file")
        return self


class VaultKubernetesAuth(_Section):
    """``kubernetes``: the pod's service-account JWT (re-read at every login: it is rotated) and a role."""

    method: Literal["kubernetes"]
    mount: str = "kubernetes"
    role: str = Field(min_length=1)
    jwt_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"

    @model_validator(mode="after")
    def _mount(self) -> VaultKubernetesAuth:
        _vault_path(self.mount, "auth.mount")
        return self


def _auth_method(data: Any) -> str:
    # A missing method means token, the default; anything else is matched (and refused) by name.
    if isinstance(data, dict):
        return str(data.get("method", "token"))
    return str(getattr(data, "method", "token"))


VaultAuth = Annotated[
    Annotated[VaultTokenAuth, Tag("token")]
    | Annotated[VaultAppRoleAuth, Tag("approle")]
    | Annotated[VaultKubernetesAuth, Tag("kubernetes")],
    Discriminator(
        _auth_method,
        custom_error_type="vault_auth_method",
        custom_error_message="method must be token, approle or kubernetes",
    ),
]


class VaultTls(_Section):
    ca_cert: str | None = None  # CA bundle (PEM) that signed Vault's certificate
    client_cert: str | None = None  # PEM, for Vault listeners that require client certificates
    client_key: str | None = None
    skip_verify: bool = False  # only for throwaway test servers

    @model_validator(mode="after")
    def _pairs(self) -> VaultTls:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        if self.skip_verify and self.ca_cert:
            raise ValueError("skip_verify and ca_cert contradict each other")
        return self


class VaultSettings(_Section):
    """HashiCorp Vault / OpenBao, KV v2: published keys at ``<mount>/data/<credential path>``, rotation
    state at ``<mount>/data/<state_prefix>/<credential name>``, which consumer policies must not grant."""

    url: str
    mount: str = "secret"
    state_prefix: str = "rotator-state"
    namespace: str | None = None  # Vault Enterprise / OpenBao namespace
    timeout: Duration = 10.0
    auth: VaultAuth = VaultTokenAuth()
    tls: VaultTls = VaultTls()

    @model_validator(mode="after")
    def _shape(self) -> VaultSettings:
        if not re.match(r"^https?://[^\s/]+", self.url):
            raise ValueError(f"url must be an http(s) URL, got {self.url[:60]!r}")
        _vault_path(self.mount, "mount")
        _vault_path(self.state_prefix, "state_prefix")
        if self.namespace is not None:
            _vault_path(self.namespace, "namespace")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        return self


#: Characters AWS Secrets Manager allows in a secret name (max 512).
_AWS_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")


def aws_secret_name(value: str, what: str) -> str:
    """:raises ValueError: ``value`` is not a name Secrets Manager accepts."""
    if not _AWS_SECRET_NAME.match(value):
        raise ValueError(f"{what} must be an AWS secret name (1-512 of A-Z a-z 0-9 / _ + = . @ -)")
    return value


class AwsStoreSettings(_Section):
    """AWS Secrets Manager: the published key is the ``AWSCURRENT`` version of the secret named by the
    credential's ``path``; rotation state is in ``<state_prefix><credential name>``, which consumer
    policies must not grant. Credentials come from boto3's standard chain (env, profile, IRSA, instance
    role), never from this file."""

    region: str | None = None  # None: the standard chain (AWS_REGION, AWS_DEFAULT_REGION, profile)
    endpoint_url: str | None = None  # a VPC endpoint, or a local test server
    kms_key_id: str | None = None  # key id, ARN or alias for secrets the worker creates
    state_prefix: str = "rotator/state/"
    max_attempts: int = Field(3, ge=1, le=10, description="botocore standard-mode attempts per call")
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _shape(self) -> AwsStoreSettings:
        if self.region is not None and not _AWS_REGION.match(self.region):
            raise ValueError(f"region must look like us-east-1, got {self.region[:40]!r}")
        if self.endpoint_url is not None and not re.match(r"^https?://[^\s/]+", self.endpoint_url):
            raise ValueError(f"endpoint_url must be an http(s) URL, got {self.endpoint_url[:60]!r}")
        if self.kms_key_id is not None and not re.match(r"^[A-Za-z0-9:/_.-]{1,2048}$", self.kms_key_id):
            raise ValueError("kms_key_id must be a KMS key id, key ARN, alias/NAME or alias ARN")
        aws_secret_name(self.state_prefix, "state_prefix")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        return self


class StoreSettings(_Section):
    backend: Literal["file", "vault", "aws"] = "file"
    file: FileStoreSettings = FileStoreSettings()
    vault: VaultSettings | None = None
    aws: AwsStoreSettings = AwsStoreSettings()

    @model_validator(mode="after")
    def _vault_given(self) -> StoreSettings:
        if self.backend == "vault" and self.vault is None:
            raise ValueError("backend vault needs a vault section (at least url)")
        return self


#: The fields each signer source takes besides ``source``. Any other is refused, so a field meant for
#: another source (or a typo of one) cannot be silently ignored.
SIGNER_FIELDS: dict[str, frozenset[str]] = {
    "env": frozenset({"env"}),
    "file": frozenset({"path"}),
    "vault": frozenset({"path", "field", "mount"}),
    "aws-secretsmanager": frozenset({"secret_id", "field", "version_stage", "region", "endpoint_url"}),
    "aws-kms": frozenset({"key_id", "region", "endpoint_url"}),
}
_KMS_KEY_ID = re.compile(r"^[A-Za-z0-9:/_.-]{1,2048}$")
_AWS_SECRET_ID = re.compile(r"^[A-Za-z0-9/_+=.@:-]{1,2048}$")  # a name or an ARN


def _aws_endpoint(value: str | None, what: str) -> None:
    if value is not None and not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"{what} must be an http(s) URL, got {value[:60]!r}")


class SignerSettings(_Section):
    """Where a credential's wallet key is (README, "Choosing a signer source").

    ``env``: the variable ``env``. ``file``: the file ``path`` (mode 0600). ``vault``: field ``field``
    of the KV v2 secret ``path`` on ``mount`` (default ``store.vault.mount``), read with store.vault's
    url, auth and tls. ``aws-secretsmanager``: JSON field ``field`` of ``secret_id`` (``field: null``:
    the whole value is the key). ``aws-kms``: the ``ECC_SECG_P256K1`` key ``key_id`` signs; the private
    key never leaves KMS. AWS sources take ``region`` (default ``store.aws.region``, then the standard
    chain) and ``endpoint_url`` (a VPC or test endpoint of that service, never inherited).
    """

    source: Literal["env", "file", "vault", "aws-secretsmanager", "aws-kms"]
    env: str | None = None
    path: str | None = None
    field: str | None = "private_key"
    mount: str | None = None
    secret_id: str | None = None
    version_stage: str = "AWSCURRENT"
    key_id: str | None = None
    region: str | None = None
    endpoint_url: str | None = None

    @model_validator(mode="after")
    def _where(self) -> SignerSettings:
        foreign = sorted(self.model_fields_set - SIGNER_FIELDS[self.source] - {"source"})
        if foreign:
            raise ValueError(f"signer.source {self.source} does not take signer.{foreign[0]}")
        if self.source == "env" and not self.env:
            raise ValueError("signer.source env needs signer.env (the variable's name)")
        if self.source in ("file", "vault") and not self.path:
            raise ValueError(f"signer.source {self.source} needs signer.path")
        if self.source == "vault":
            assert self.path is not None
            _vault_path(self.path, "signer.path")
            if self.mount is not None:
                _vault_path(self.mount, "signer.mount")
            if not self.field:
                raise ValueError("signer.source vault needs signer.field (the KV field holding the key)")
        if self.source == "aws-secretsmanager":
            if not self.secret_id:
                raise ValueError("signer.source aws-secretsmanager needs signer.secret_id (a name or ARN)")
            if not _AWS_SECRET_ID.match(self.secret_id):
                raise ValueError("signer.secret_id must be a Secrets Manager secret name or ARN")
            if not re.match(r"^[A-Za-z0-9_-]{1,256}$", self.version_stage):
                raise ValueError("signer.version_stage must be a staging label like AWSCURRENT")
            if self.field == "":
                raise ValueError("signer.field must name a JSON field, or be null for a plain-text secret")
        if self.source == "aws-kms":
            if not self.key_id:
                raise ValueError("signer.source aws-kms needs signer.key_id (key id, key ARN or alias)")
            if not _KMS_KEY_ID.match(self.key_id):
                raise ValueError("signer.key_id must be a KMS key id, key ARN, alias/NAME or alias ARN")
        if self.region is not None and not _AWS_REGION.match(self.region):
            raise ValueError(f"signer.region must look like us-east-1, got {self.region[:40]!r}")
        _aws_endpoint(self.endpoint_url, "signer.endpoint_url")
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
    # Consumer-confirmed revocation (README, "Using the rotated keys in your bot"): a retired key is
    # revoked once min_grace has passed and every consumer that acknowledged within consumer_ttl holds
    # the new key; at grace at the latest. consumer_refresh: how often your bots re-read the key,
    # stated so that `rotator check` can warn when grace is not longer than that.
    min_grace: Duration = 60.0
    consumer_ttl: Duration = 600.0
    consumer_refresh: Duration | None = None

    @model_validator(mode="after")
    def _times(self) -> CredentialSettings:
        if self.rotate_every <= 0:
            raise ValueError("rotate_every must be positive")
        if self.consumer_ttl <= 0:
            raise ValueError("consumer_ttl must be positive")
        return self


class MetricsSettings(_Section):
    port: int = Field(9464, ge=0, le=65535)
    host: str = "0.0.0.0"  # noqa: S104 - the exporter is scraped from outside the pod
    pushgateway: str | None = None
    job: str = "rotator"


class LogSettings(_Section):
    format: Literal["auto", "json", "text"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class LeaderSettings(_Section):
    """Replicas of the daemon on one store elect one active worker through a lease kept in the store."""

    # -- How long a leader's lease lasts without a renewal: a standby takes over at most this long
    # (plus one renewal) after the leader died. Under 30 s by default.
    lease: Duration = 20.0
    # -- How often the leader renews (and a standby looks whether the lease lapsed). Well below
    # `lease`: a leader that misses renewals for a whole lease stops starting passes.
    renew: Duration = 5.0

    @model_validator(mode="after")
    def _renew_below_lease(self) -> LeaderSettings:
        if self.renew <= 0:
            raise ValueError("renew must be positive")
        if self.renew * 3 > self.lease:
            raise ValueError(
                f"renew ({self.renew:g}s) must be at most a third of lease ({self.lease:g}s), so a leader "
                "survives a failed renewal or two"
            )
        return self


class DaemonSettings(_Section):
    # How often each credential gets a pass: reads its state, revokes what is due, rotates what is due.
    # A pass with nothing due costs one store read and no CLOB request.
    tick: Duration = 5.0
    jitter: Duration = 2.0
    # How often the daemon checks that each current key still works (an L2 read outside /auth/*, see
    # clob.probe): a key revoked behind the worker's back is replaced within this. Stretched for large
    # fleets so the probes stay within clob.probe.share of the probe endpoint's limit.
    probe_every: Duration = 300.0
    leader: LeaderSettings = LeaderSettings()


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

    @model_validator(mode="after")
    def _vault_signers(self) -> Settings:
        # A Vault signer reads with the store's Vault settings: one url, one auth, one TLS setup.
        if self.store.vault is None:
            for cred in self.credentials:
                if cred.signer.source == "vault":
                    raise ValueError(
                        f"credential {cred.name!r}: signer.source vault reads with store.vault's url, "
                        "auth and tls; add a store.vault section"
                    )
        return self

    @model_validator(mode="after")
    def _vault_paths(self) -> Settings:
        # A published path inside the state prefix would put rotation state where consumers read.
        vault = self.store.vault
        if self.store.backend == "vault" and vault is not None:
            prefix = vault.state_prefix
            for cred in self.credentials:
                if cred.path == prefix or cred.path.startswith(prefix + "/"):
                    raise ValueError(
                        f"credential {cred.name!r}: path {cred.path!r} lies inside store.vault.state_prefix"
                    )
        return self

    @model_validator(mode="after")
    def _aws_names(self) -> Settings:
        # Same reason as for Vault: a consumer granted the published secrets must not match the state.
        if self.store.backend == "aws":
            prefix = self.store.aws.state_prefix
            for cred in self.credentials:
                aws_secret_name(cred.path, f"credential {cred.name!r}: path")
                aws_secret_name(prefix + cred.name, f"credential {cred.name!r}: state secret name")
                if cred.path.startswith(prefix):
                    raise ValueError(
                        f"credential {cred.name!r}: path {cred.path!r} lies inside store.aws.state_prefix"
                    )
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
