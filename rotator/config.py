"""Typed settings: a YAML file plus ``ROTATOR_*`` environment overrides (``ROTATOR_STORE__BACKEND``).

Secrets are never in the file, only where to find them. Built once in ``cli.py`` and passed down;
no other module reads the environment. A bad file is a :class:`ConfigError` with one line that
names the field; a bad override names its variable, and a ``ROTATOR_*`` variable that is neither a
setting, nor named by the config as a secret's source, nor a Kubernetes service link is refused.
Values that look like key material are never repeated in a message.
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from rotator.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
#: Ten years: longer is a typo (or a pasted number), and would overflow the deadlines computed from it.
MAX_DURATION = 3660 * 86400.0

# What a pasted private key, API secret or file key looks like: never echoed in an error (I6).
_SECRETISH = re.compile(r"(?:0x)?[0-9a-fA-F]{16,}|[A-Za-z0-9+/]{32,}={0,2}")


def shown(value: object, limit: int = 40) -> str:
    """``value`` quoted for an error message, or a placeholder when it could be key material."""
    text = str(value)
    if _SECRETISH.search(text):
        return "(value not shown: it looks like key material)"
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def redact(text: str) -> str:
    """``text`` with anything that looks like key material cut out (the last guard before printing)."""
    return _SECRETISH.sub("(not shown)", text)


def is_http_url(value: str) -> bool:
    """An http(s) URL with a host and, if any, a port in range: what httpx, hvac and botocore accept
    without raising something else than their connection errors."""
    from urllib.parse import urlsplit

    if not re.match(r"^https?://[^\s/]+", value) or any(not ch.isprintable() or ch.isspace() for ch in value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    return bool(parts.hostname) and all(len(label) <= 63 for label in (parts.hostname or "").split("."))


def env_problem(env: Mapping[str, str], name: str) -> str:
    """What is wrong with the variable ``name`` holding a secret ("is not set", "is set but empty"),
    or "" when it holds something."""
    value = env.get(name)
    if value is None:
        return "is not set"
    return "" if value.strip() else "is set but empty"


def parse_duration(value: Any) -> float:
    """``30s``, ``15m``, ``24h``, ``7d``, ``2w`` or a number of seconds: finite, >= 0, at most ten years."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30s, 15m, 24h, 7d")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"bad duration {shown(value)}: use 30s, 15m, 24h, 7d, or seconds")
        seconds = float(match.group(1)) * _UNITS.get(match.group(2) or "s", 1)
    if math.isnan(seconds):
        raise ValueError("a duration must be a number, not NaN")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration cannot exceed {MAX_DURATION / 86400:.0f}d")
    return seconds


def public(value: str) -> str:
    """``value`` as it is, unless it looks like key material: for naming where a secret lives."""
    return "(not shown: looks like key material)" if _SECRETISH.search(value) else value


def _env_name(value: str) -> str:
    # The most likely paste: the secret itself where its variable's name goes (signer.env: 0x...).
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", value) or _SECRETISH.search(value):
        raise ValueError("must be the name of an environment variable (letters, digits, _), not its value")
    return value


#: The name of an environment variable that holds a secret (``signer.env``, ``*_env``).
EnvName = Annotated[
    str,
    AfterValidator(_env_name),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,254}$"}),
]


def _fs_path(value: str) -> str:
    # open() raises ValueError, not OSError, on a NUL: refused here rather than as a traceback later.
    if not value:
        raise ValueError("must not be empty")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        raise ValueError("contains a control or format character")
    return value


#: A file's path (a key file, a CA bundle, a token sink).
FsPath = Annotated[str, AfterValidator(_fs_path)]


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


#: The JSON schema of what parse_duration takes (python -m rotator.config_schema, the chart's
#: values.schema.json): a number of seconds, or a number and a unit. Ten years at most, as a number; a
#: string's magnitude is left to the model.
_DURATION_TEXT = _DURATION.pattern
_POSITIVE_DURATION_TEXT = r"^\s*(?:\d*[1-9]\d*(?:\.\d+)?|\d+\.\d*[1-9]\d*)\s*[smhdw]?\s*$"
_DURATION_DOC = "seconds, or a number and a unit: 30s, 15m, 24h, 7d, 2w"
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "description": _DURATION_DOC,
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": int(MAX_DURATION)},
                {"type": "string", "pattern": _DURATION_TEXT},
            ],
        }
    ),
]
#: A duration where zero makes no sense (a timeout, a cadence, a window).
PositiveDuration = Annotated[
    float,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    WithJsonSchema(
        {
            "description": _DURATION_DOC + "; more than 0",
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": int(MAX_DURATION)},
                {"type": "string", "pattern": _POSITIVE_DURATION_TEXT},
            ],
        }
    ),
]
#: Nonces are uint256 at the CLOB, but consumers read them from JSON: stay within what JSON numbers hold.
MAX_NONCE = 2**53 - 1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: What the CLOB allows on ``/auth/*`` per client IP (clob-auth.md section 6). The bots behind the same
#: egress IP spend it too, every time one starts (create or derive), so the worker takes a share only.
CLOB_AUTH_LIMIT = 100
CLOB_AUTH_WINDOW = 10.0


class AuthBudget(_Section):
    # Half of the IP's 100 per 10 s: the other half stays free for the bots' own start-ups.
    requests: int = Field(50, ge=0, le=1_000_000, description="requests allowed per window; 0 turns it off")
    per: PositiveDuration = 10.0
    # The share holds across the worker's processes: a daemon leaves this part of it free, and a
    # one-shot run (rotate, revoke, retire, reap) beside a daemon that leads the store takes only it.
    one_shot_share: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="the part of requests a one-shot run takes while a daemon leads the store; the "
        "daemon keeps the rest",
    )


class ReadBudget(_Section):
    requests: int = Field(9000, ge=0, le=1_000_000, description="requests allowed per window; 0 turns it off")
    per: PositiveDuration = 10.0


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
    per: PositiveDuration = 10.0
    share: float = Field(0.25, gt=0, le=1)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, endpoint: str) -> str:
        # Every segment named: "//balance-allowance" is read by HTTP clients as a host, and the request
        # goes to "/", which needs no auth and answers 200 (issue 22 item 9).
        path, _, query = endpoint.partition("?")
        segments = path.split("/")[1:] if path.startswith("/") else []
        if (
            not segments
            or any(not re.fullmatch(r"[A-Za-z0-9_.~-]+", s) or s in (".", "..") for s in segments)
            or segments[0] == "auth"
            or not re.fullmatch(r"[A-Za-z0-9_.~%&=+-]*", query)
        ):
            raise ValueError(
                "must be the path (and query) of an L2 read outside /auth/*, each path segment named "
                "(no '//', '.' or '..'), like /balance-allowance?asset_type=COLLATERAL"
            )
        return endpoint


#: The proxy variables other tools honour; rotator never does (``ignored_proxy_env``).
PROXY_ENV = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")


class ProxySettings(_Section):
    """An egress proxy (docs/real-clob.md), never taken from ``HTTP(S)_PROXY``.

    ``url``: ``http://HOST:PORT`` (an HTTP ``CONNECT`` tunnel) or ``socks5://HOST:PORT`` (SOCKS5, the
    proxy resolves the target's name); never credentials in it. ``username`` with ``password_env`` or
    ``password_file`` when the proxy asks for them: the file is read again for each new connection, so
    a mounted Secret can change under a running worker.
    """

    url: str
    username: str | None = Field(None, min_length=1, max_length=255)
    password_env: EnvName | None = None
    password_file: FsPath | None = None

    #: The schemes this client can tunnel through (the Vault and AWS SDKs: HTTP only).
    schemes: ClassVar[tuple[str, ...]] = ("http", "socks5")

    @model_validator(mode="after")
    def _shape(self) -> ProxySettings:
        from urllib.parse import urlsplit

        text = self.url
        if "@" in text:
            raise ValueError(
                "url must not carry credentials (they would show wherever the URL does): "
                "set username and password_env or password_file"
            )
        scheme = text.partition("://")[0].lower() if "://" in text else ""
        if scheme == "socks5h":
            scheme = "socks5"  # the same thing here: names are always resolved by the proxy
        if scheme not in self.schemes:
            allowed = " or ".join(f"{s}://HOST:PORT" for s in self.schemes)
            extra = " (the SDK of this client has no SOCKS support)" if "socks5" not in self.schemes else ""
            raise ValueError(f"url must be {allowed}{extra}, got {shown(text, 60)}")
        if not is_http_url("http://" + text.partition("://")[2]):
            raise ValueError(f"url must be {scheme}://HOST:PORT, got {shown(text, 60)}")
        parts = urlsplit("http://" + text.partition("://")[2])
        if parts.port is None or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"url must be {scheme}://HOST:PORT (with a port, nothing after it)")
        user = self.username
        if user is not None and (":" in user or not user.isprintable() or _SECRETISH.search(user)):
            raise ValueError("username must be a user name (printable, no ':'), not a secret")
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("takes password_env or password_file, not both")
        has_password = self.password_env is not None or self.password_file is not None
        if has_password and user is None:
            raise ValueError("password_env/password_file need username")
        if user is not None and not has_password:
            raise ValueError("username needs password_env or password_file")
        return self

    @property
    def scheme(self) -> str:
        scheme = self.url.partition("://")[0].lower()
        return "socks5" if scheme == "socks5h" else scheme

    @property
    def host(self) -> str:
        from urllib.parse import urlsplit

        return urlsplit("http://" + self.url.partition("://")[2]).hostname or ""

    @property
    def port(self) -> int:
        from urllib.parse import urlsplit

        return urlsplit("http://" + self.url.partition("://")[2]).port or 0

    def password_reader(self, env: Mapping[str, str], where: str) -> Callable[[], str] | None:
        """A function giving the proxy password (None without credentials), checked now.

        :raises ConfigError: the variable is unset or empty, or the file cannot be read (names
            ``where``, the setting, never the value).
        """
        if self.password_env is not None:
            name = self.password_env
            problem = env_problem(env, name)
            if problem:
                raise ConfigError(f"{where}.password_env: the environment variable {name} {problem}")
            value = env[name]
            return lambda: value
        if self.password_file is not None:
            path = Path(self.password_file)

            def read() -> str:
                try:
                    text = path.read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError) as exc:
                    why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                    raise ConfigError(f"{where}.password_file: cannot read {path} ({why})") from None
                if not text:
                    raise ConfigError(f"{where}.password_file: {path} is empty")
                return text

            read()
            return read
        return None


class HttpProxySettings(ProxySettings):
    """An egress proxy for a client whose SDK tunnels through HTTP proxies only (hvac, botocore)."""

    schemes: ClassVar[tuple[str, ...]] = ("http",)


def ignored_proxy_env(settings: Settings, env: Mapping[str, str]) -> str | None:
    """One line when ``HTTP(S)_PROXY``-style variables are set while a client rotator uses has no
    proxy configured: rotator never takes a proxy from the environment, and says so once."""
    found = sorted(
        {name.upper() for name, value in env.items() if name.upper() in PROXY_ENV and value.strip()},
        key=PROXY_ENV.index,
    )
    if not found:
        return None
    direct = []
    if settings.clob.proxy is None:
        direct.append("the CLOB (clob.proxy)")
    uses_vault = settings.store.backend == "vault" or any(
        c.signer.source == "vault" for c in settings.credentials
    )
    if uses_vault and settings.store.vault is not None and settings.store.vault.proxy is None:
        direct.append("Vault (store.vault.proxy)")
    uses_aws = (
        settings.store.backend == "aws"
        or settings.store.file.kms_key_id is not None
        or any(c.signer.source in ("aws-secretsmanager", "aws-kms") for c in settings.credentials)
    )
    if uses_aws and settings.store.aws.proxy is None:
        direct.append("AWS (store.aws.proxy)")
    if not direct:
        return None
    return (
        f"{', '.join(found)} {'is' if len(found) == 1 else 'are'} set and ignored: rotator takes a proxy "
        f"from its config only, and reaches {', '.join(direct)} directly; to go through a proxy, set "
        "the setting named (docs/real-clob.md)"
    )


class ClockSkew(_Section):
    max: Duration = 10.0
    mode: Literal["correct", "refuse"] = "correct"
    recheck_every: PositiveDuration = 600.0


class Retry(_Section):
    attempts: int = Field(6, ge=1, le=50)
    base: Duration = 0.5
    cap: Duration = 30.0
    deadline: PositiveDuration = 120.0


class ClobSettings(_Section):
    host: str = "https://clob.polymarket.com"
    chain_id: int = Field(137, ge=1, le=MAX_NONCE)
    timeout: PositiveDuration = 10.0
    verify_timeout: PositiveDuration = 180.0
    rate_limits: RateLimits = RateLimits()
    probe: ProbeSettings = ProbeSettings()
    clock_skew: ClockSkew = ClockSkew()
    retry: Retry = Retry()
    # Credentials passed over at once by `rotate --all` and the daemon; the budgets pace them.
    concurrency: int = Field(8, ge=1, le=256)
    # Every CLOB request tunnels through it (HTTP CONNECT or SOCKS5): for egress the CLOB's edge
    # accepts (docs/real-clob.md). Never taken from HTTPS_PROXY.
    proxy: ProxySettings | None = None

    @model_validator(mode="after")
    def _host(self) -> ClobSettings:
        if not is_http_url(self.host):
            raise ValueError(f"clob.host must be an http(s) URL, got {shown(self.host, 60)}")
        return self


class FileStoreSettings(_Section):
    """The file's AES-256 key comes from ``key_env``, or, with ``kms_key_id``, is a KMS data key whose
    encrypted form is kept beside the file in ``<path>.datakey`` (``kms_region`` defaults to
    ``store.aws.region``, then the standard chain; ``kms_endpoint_url`` is a VPC or test KMS endpoint).
    ``previous_key_env``: during a change of the ``key_env`` key, the variable holding the old key, which
    reads a file not yet re-sealed (``rotator rekey``); writes always use ``key_env``."""

    path: FsPath = "./var/keys.enc"
    key_env: EnvName = "ROTATOR_FILE_KEY"
    previous_key_env: EnvName | None = None
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
            raise ValueError(f"kms_region must look like us-east-1, got {shown(self.kms_region)}")
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
    token_env: EnvName | None = None
    token_file: FsPath | None = None  # e.g. Vault Agent's sink; re-read when Vault refuses the token

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
    role_id_env: EnvName | None = None
    role_id_file: FsPath | None = None
    secret_id_env: EnvName | None = None
    secret_id_file: FsPath | None = None

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
    jwt_file: FsPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"

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
    ca_cert: FsPath | None = None  # CA bundle (PEM) that signed Vault's certificate
    client_cert: FsPath | None = None  # PEM, for Vault listeners that require client certificates
    client_key: FsPath | None = None
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
    proxy: HttpProxySettings | None = None  # an HTTP CONNECT proxy to Vault; never HTTPS_PROXY

    @model_validator(mode="after")
    def _shape(self) -> VaultSettings:
        if not is_http_url(self.url):
            raise ValueError(f"url must be an http(s) URL, got {shown(self.url, 60)}")
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
    max_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="botocore calls per request, the first try included (store, AWS signers, KMS envelope)",
    )
    timeout: Duration = 10.0
    # An HTTP CONNECT proxy for every AWS client (store, signers, KMS envelope); never HTTPS_PROXY.
    proxy: HttpProxySettings | None = None

    @model_validator(mode="after")
    def _shape(self) -> AwsStoreSettings:
        if self.region is not None and not _AWS_REGION.match(self.region):
            raise ValueError(f"region must look like us-east-1, got {shown(self.region)}")
        if self.endpoint_url is not None and not is_http_url(self.endpoint_url):
            raise ValueError(f"endpoint_url must be an http(s) URL, got {shown(self.endpoint_url, 60)}")
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
    if value is not None and not is_http_url(value):
        raise ValueError(f"{what} must be an http(s) URL, got {shown(value, 60)}")


class SignerSettings(_Section):
    """Where a credential's wallet key is (docs/signers.md).

    ``env``: the variable ``env``. ``file``: the file ``path`` (mode 0600). ``vault``: field ``field``
    of the KV v2 secret ``path`` on ``mount`` (default ``store.vault.mount``), read with store.vault's
    url, auth and tls. ``aws-secretsmanager``: JSON field ``field`` of ``secret_id`` (``field: null``:
    the whole value is the key). ``aws-kms``: the ``ECC_SECG_P256K1`` key ``key_id`` signs; the private
    key never leaves KMS. AWS sources take ``region`` (default ``store.aws.region``, then the standard
    chain) and ``endpoint_url`` (a VPC or test endpoint of that service, never inherited).
    """

    source: Literal["env", "file", "vault", "aws-secretsmanager", "aws-kms"]
    env: EnvName | None = None
    path: FsPath | None = None  # a file, or a Vault path (then also checked as one)
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
            raise ValueError(f"signer.region must look like us-east-1, got {shown(self.region)}")
        _aws_endpoint(self.endpoint_url, "signer.endpoint_url")
        return self


def published_path(value: str) -> str:
    """A credential's ``path``, checked the same way for every backend: one segment can never climb into
    another's (a client that collapses ``a/../b`` would write where another credential lives).

    :raises ValueError: names what is wrong, never echoes the value.
    """
    if not value:
        raise ValueError("must not be empty")
    if len(value) > 512:
        raise ValueError("is longer than 512 characters")
    for ch in value:
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise ValueError(f"contains a control, format or space character (U+{ord(ch):04X})")
    if "\\" in value:
        raise ValueError("must not contain a backslash")
    if value.startswith("/"):
        raise ValueError("must not start with '/'")
    segments = value.split("/")
    if any(seg == "" for seg in segments):
        raise ValueError("has an empty segment ('//' or a trailing '/')")
    if any(seg in (".", "..") for seg in segments):
        raise ValueError("must not contain '.' or '..' segments")
    return value


class ScheduleSettings(_Section):
    """When a credential's rotations happen (docs/operations.md): ``cron``, five fields as in crontab
    and Kubernetes CronJobs (``0 3 * * *``), read in ``timezone`` (IANA, like ``Europe/London``);
    ``window``: how long after each scheduled time a rotation may still start (default: until the
    next one). A key due outside every window waits for the next, unless it is past ``max_age``,
    rejected by the CLOB, forced or an emergency."""

    cron: str = Field(min_length=1, max_length=200)
    timezone: str = Field("UTC", min_length=1, max_length=100)
    window: PositiveDuration | None = None

    @model_validator(mode="after")
    def _parses(self) -> ScheduleSettings:
        from rotator.schedule import Schedule

        try:
            Schedule.parse(self.cron, self.timezone, self.window)
        except ValueError as exc:
            raise ValueError(redact(str(exc))) from None
        return self


#: The most gone keys a credential on AWS may keep in its history: the state is one secret value,
#: at most 64 KiB, and a record of a key takes up to about 420 bytes.
AWS_HISTORY_MAX = 120


#: Issue 27: the settings a read-only or builder credential may not take: they belong to trading keys,
#: whose nonces and wallet signature those kinds do not have (their wallet is their via's).
TRADING_ONLY = ("signer", "adopt_existing", "start_nonce", "key_model")


def _kind_schema(schema: dict[str, Any]) -> None:
    """The JSON schema of a credential (the chart's values.schema.json): a trading credential needs its
    signer; a read-only or builder one needs via and takes none of :data:`TRADING_ONLY` (the model
    fills in its via's signer before it checks the field)."""
    schema["required"] = [f for f in schema.get("required", []) if f != "signer"]
    schema["if"] = {"properties": {"kind": {"enum": ["readonly", "builder"]}}, "required": ["kind"]}
    schema["then"] = {"required": ["via"], "not": {"anyOf": [{"required": [f]} for f in TRADING_ONLY]}}
    schema["else"] = {"required": ["signer"], "not": {"required": ["via"]}}


class CredentialSettings(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_kind_schema)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    # Issue 27: which kind of key the credential holds (docs/kinds.md). A read-only or builder
    # credential names the trading credential of its wallet whose key manages it (via), and takes
    # that credential's signer (it gives none of its own).
    kind: Literal["trading", "readonly", "builder"] = "trading"
    via: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    signer: SignerSettings
    path: Annotated[str, AfterValidator(published_path)]
    rotate_every: PositiveDuration
    grace: PositiveDuration
    verify_timeout: PositiveDuration | None = None
    adopt_existing: bool = False
    start_nonce: int = Field(0, ge=0, le=MAX_NONCE)
    # Consumer-confirmed revocation (docs/consumers.md): a retired key is
    # revoked once min_grace has passed and every consumer that acknowledged within consumer_ttl holds
    # the new key; at grace at the latest. consumer_refresh: how often your bots re-read the key,
    # stated so that `rotator check` can warn when grace is not longer than that.
    min_grace: Duration = 60.0
    consumer_ttl: Duration = 600.0
    consumer_refresh: PositiveDuration | None = None
    # Issue 16: after an audit (daemon.audit_every) that found new unmanaged keys on this wallet,
    # revoke those the signer can reach with derive (as `rotator reap --execute` does).
    reap_unmanaged: bool = False
    # Issue 24: how the CLOB keeps this wallet's keys. auto: as learned (rotator doctor
    # --probe-key-model, or a rotation finding the old key dead at once); one: each rotation
    # publishes the new key at once, without overlap; several: rotations overlap for grace.
    key_model: Literal["auto", "one", "several"] = "auto"
    # Issue 23: when rotations happen (rotate_every stays the maximum age a key reaches when every
    # window is served); past max_age (default 2 x rotate_every) a key rotates outside the windows.
    schedule: ScheduleSettings | None = None
    max_age: PositiveDuration | None = None
    # How many keys gone (revoked) the credential's history keeps, each with its times, reason,
    # trigger and worker (`rotator history`). The keys still held are always kept.
    history_limit: int = Field(100, ge=1, le=1000)

    @model_validator(mode="after")
    def _times(self) -> CredentialSettings:
        if self.kind == "trading" and self.via is not None:
            raise ValueError("via goes with kind readonly or builder (a trading credential signs for itself)")
        if self.kind != "trading" and self.via is None:
            raise ValueError(
                f"kind {self.kind} needs via: the trading credential of its wallet that manages it"
            )
        if self.consumer_ttl <= 0:
            raise ValueError("consumer_ttl must be positive")
        if self.max_age is not None:
            if self.schedule is None:
                raise ValueError("max_age goes with schedule: without one a key rotates at rotate_every")
            if self.max_age < self.rotate_every:
                raise ValueError(
                    f"max_age ({self.max_age:g}s) must be at least rotate_every ({self.rotate_every:g}s)"
                )
        return self


def _pushgateway(value: str | None) -> str | None:
    # Checked here: urllib refuses a malformed URL with ValueError, which a push does not expect.
    # Never echoed: the URL may carry user:password.
    if value is not None and not is_http_url(value if "://" in value else f"http://{value}"):
        raise ValueError("must be an http(s) URL or host:port")
    return value


def _listen_host(value: str) -> str:
    if len(value) > 253 or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("must be an address or host name to listen on")
    return value


class MetricsSettings(_Section):
    port: int = Field(9464, ge=0, le=65535)
    host: Annotated[str, AfterValidator(_listen_host)] = "0.0.0.0"  # noqa: S104 - scraped from outside the pod
    pushgateway: Annotated[str | None, AfterValidator(_pushgateway)] = None
    job: str = Field("rotator", min_length=1, max_length=200)


class LogSettings(_Section):
    format: Literal["auto", "json", "text"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class LeaderSettings(_Section):
    """Replicas of the daemon on one store elect one active worker through a lease kept in the store."""

    # -- How long a leader's lease lasts without a renewal: a standby takes over at most this long
    # (plus one renewal) after the leader died. Under 30 s by default.
    lease: PositiveDuration = 20.0
    # -- How often the leader renews (and a standby looks whether the lease lapsed). Well below
    # `lease`: a leader that misses renewals for a whole lease stops starting passes.
    renew: PositiveDuration = 5.0

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
    tick: PositiveDuration = 5.0
    jitter: Duration = 2.0
    # How often the daemon checks that each current key still works (an L2 read outside /auth/*, see
    # clob.probe): a key revoked behind the worker's back is replaced within this. Stretched for large
    # fleets so the probes stay within clob.probe.share of the probe endpoint's limit.
    probe_every: Duration = 300.0
    leader: LeaderSettings = LeaderSettings()
    # How often each wallet is audited (issue 16): its keys listed for unmanaged ones and the
    # account's closed-only flag read, 2 /auth/* requests. Stretched for large fleets so audits take
    # at most a quarter of clob.rate_limits.auth; one-shot `rotate` runs audit a credential whose
    # last audit is older than this. 0 turns audits off.
    audit_every: Duration = 3600.0


class Settings(BaseModel):
    # The whole config. The ROTATOR_* overrides are merged into the file's data by load_settings, which
    # names a bad or unknown variable itself (a settings library blames the file, or ignores the
    # variable), so this is a plain model: no settings source of its own, and none imported at start-up.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    clob: ClobSettings = ClobSettings()
    store: StoreSettings = StoreSettings()
    credentials: list[CredentialSettings] = Field(default_factory=list)
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    daemon: DaemonSettings = DaemonSettings()

    @model_validator(mode="before")
    @classmethod
    def _kinds_take_their_via_signer(cls, data: Any) -> Any:
        """A read-only or builder credential is on its via's wallet: it takes that credential's signer
        (so everything that asks a credential for its wallet finds it) and none of its own."""
        if not isinstance(data, dict) or not isinstance(data.get("credentials"), list):
            return data
        creds = data["credentials"]
        by_name = {c.get("name"): c for c in creds if isinstance(c, dict)}
        out = []
        for cred in creds:
            kind = cred.get("kind") if isinstance(cred, dict) else None
            if kind not in ("readonly", "builder"):
                out.append(cred)
                continue
            name = cred.get("name")
            given = sorted(set(TRADING_ONLY) & cred.keys())
            if given:
                raise ValueError(
                    f"credentials[{name}].{given[0]}: a {kind} credential takes no {given[0]} (it has no "
                    "nonce and no wallet key of its own: its via credential's wallet is its wallet)"
                )
            if cred.get("via") is None:
                raise ValueError(
                    f"credentials[{name}]: kind {kind} needs via: the trading credential of its wallet "
                    "that manages it"
                )
            via = by_name.get(cred.get("via"))
            if not isinstance(via, dict) or (via.get("kind") or "trading") != "trading":
                what = "no credential" if via is None else "not a trading credential"
                raise ValueError(
                    f"credentials[{name}].via: {shown(cred.get('via'))} is {what}; via names a trading "
                    "credential of this config (its key manages this one's)"
                )
            if "signer" in via:
                cred = {**cred, "signer": via["signer"]}
            out.append(cred)
        return {**data, "credentials": out}

    @model_validator(mode="after")
    def _unique(self) -> Settings:
        seen: set[str] = set()
        for cred in self.credentials:
            if cred.name in seen:
                raise ValueError(f"duplicate credential name {cred.name!r}")
            seen.add(cred.name)
        return self

    @model_validator(mode="after")
    def _history_fits(self) -> Settings:
        if self.store.backend == "aws":
            for cred in self.credentials:
                if cred.history_limit > AWS_HISTORY_MAX:
                    raise ValueError(
                        f"credentials[{cred.name}].history_limit: at most {AWS_HISTORY_MAX} with the aws "
                        "store (the state is one secret value, 64 KiB at most)"
                    )
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
    def _paths(self) -> Settings:
        # Every place a credential writes must be its own: two credentials on one published path, a
        # published path on some credential's state, or on the secret a signer reads its wallet key
        # from, and the last writer silently wins (one wallet's bots hold the other's key, or a
        # wallet key is overwritten by an API key).
        owner: dict[str, str] = {}
        for cred in self.credentials:
            if cred.path in owner:
                raise ValueError(
                    f"credentials[{cred.name}].path: {cred.path!r} is already credentials[{owner[cred.path]}]"
                    ".path; each credential needs a path of its own"
                )
            owner[cred.path] = cred.name
        store = self.store
        if store.backend == "vault" and store.vault is not None:
            prefix = store.vault.state_prefix
            for cred in self.credentials:
                if cred.path == prefix or cred.path.startswith(prefix + "/"):
                    raise ValueError(
                        f"credentials[{cred.name}].path: path {cred.path!r} lies inside "
                        "store.vault.state_prefix (where rotation state is kept)"
                    )
            for cred in self.credentials:
                s = cred.signer
                if (
                    s.source == "vault"
                    and (s.mount or store.vault.mount) == store.vault.mount
                    and s.path in owner
                ):
                    raise ValueError(
                        f"credentials[{owner[s.path]}].path: {s.path!r} is where "
                        f"credentials[{cred.name}].signer reads its wallet key; publishing would overwrite it"
                    )
        if store.backend == "aws":
            prefix = store.aws.state_prefix
            for cred in self.credentials:
                aws_secret_name(cred.path, f"credentials[{cred.name}].path")
                aws_secret_name(prefix + cred.name, f"credentials[{cred.name}]: state secret name")
                if cred.path.startswith(prefix):
                    raise ValueError(
                        f"credentials[{cred.name}].path: path {cred.path!r} lies inside "
                        "store.aws.state_prefix (where rotation state is kept)"
                    )
            for cred in self.credentials:
                s = cred.signer
                if s.source == "aws-secretsmanager" and s.secret_id in owner:
                    raise ValueError(
                        f"credentials[{owner[s.secret_id]}].path: {s.secret_id!r} is the secret "
                        f"credentials[{cred.name}].signer reads its wallet key from; publishing there "
                        "would overwrite it"
                    )
        if store.backend == "file" and store.file.kms_key_id is None:
            where = os.path.abspath(store.file.path)
            for cred in self.credentials:
                if cred.signer.source == "file" and os.path.abspath(cred.signer.path or "") == where:
                    raise ValueError(
                        f"store.file.path: is credentials[{cred.name}].signer.path, the wallet key file; "
                        "the store would overwrite it"
                    )
        return self

    def credential(self, name: str) -> CredentialSettings:
        for cred in self.credentials:
            if cred.name == name:
                return cred
        shown_name = (
            name
            if re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", name) and not _SECRETISH.search(name)
            else "(not shown)"
        )
        raise ConfigError(f"--credential {shown_name}: no such credential in the config")


ENV_PREFIX = "ROTATOR_"
#: Variables Kubernetes sets for every Service in the namespace ("service links"): a release named
#: ``rotator`` gets ROTATOR_PORT, ROTATOR_SERVICE_HOST, ROTATOR_PORT_9464_TCP_ADDR, ... They are not
#: settings. The Service's part of the name may itself end like a suffix (``ROTATOR_PROD_SERVICE_PORT``
#: is the ``SERVICE_PORT`` of ``rotator-prod``, not the ``PORT`` of ``rotator-prod-service``), so every
#: split of the name is tried and the value's format decides.
_LINK_SUFFIX = re.compile(
    r"SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?"
)
_LINK_SERVICE = re.compile(r"[A-Z0-9_]*")


def _service_link(name: str, value: str) -> bool:
    """Is this a variable Kubernetes set for a Service (its name has the shape, its value the format)?"""
    if not name.startswith("ROTATOR"):
        return False
    rest = name[len("ROTATOR") :]
    for at in (i for i, ch in enumerate(rest) if ch == "_"):
        service, suffix = rest[:at], rest[at + 1 :]
        if (
            _LINK_SERVICE.fullmatch(service)
            and _LINK_SUFFIX.fullmatch(suffix)
            and re.fullmatch(_link_format(suffix), value) is not None
        ):
            return True
    return False


def _link_format(suffix: str) -> str:
    if suffix == "PORT" or suffix.endswith(("_TCP", "_UDP", "_SCTP")):
        return r"(?i:tcp|udp|sctp)://\S+"
    if suffix == "SERVICE_HOST" or suffix.endswith("_ADDR"):
        return r"[0-9A-Fa-f.:]+"
    if suffix.endswith("_PROTO"):
        return r"(?i:tcp|udp|sctp)"
    return r"\d{1,5}"  # SERVICE_PORT, SERVICE_PORT_<NAME>, PORT_<N>_<PROTO>_PORT


#: A config that nests deeper or expands (YAML aliases) to more values than this is refused.
_MAX_DEPTH, _MAX_NODES, _MAX_BYTES = 32, 100_000, 1 << 20


def load_settings(
    path: str | Path | None, *, data: dict[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read and validate the config, with ``ROTATOR_*`` overrides from ``env`` (default: the process's).

    Variables the config names as holding a secret (``key_env``, ``signer.env``, ...) and Kubernetes
    service links are not overrides; any other ``ROTATOR_*`` variable must name a setting.

    :raises ConfigError: one line naming the bad field, or the environment variable that set it.
    """
    if env is None:
        env = os.environ
    raw: Any = {}
    if path is not None:
        raw = _read_yaml(path)
    if data is not None:
        raw = {**raw, **data}
    overrides, sources = _env_overrides(env)
    merged = _merge(raw, overrides)
    _check_shape(merged, str(path) if path is not None else "config")
    unknown = _unknown_env(env, sources, _named_env_vars(merged))
    if unknown:
        raise ConfigError(
            f"{unknown}: unknown setting: not a ROTATOR_<SECTION>__<FIELD> override (e.g. "
            "ROTATOR_STORE__BACKEND), and no env or *_env field of the config names it"
        )
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, merged, path, sources, overrides)) from None
    except RecursionError:
        raise ConfigError(f"{path or 'config'}: nested too deeply") from None


def _read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        with Path(path).open("rb") as f:  # bounded: -c /dev/zero must not eat the memory
            blob = f.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or type(exc).__name__})") from None
    if len(blob) > _MAX_BYTES:
        raise ConfigError(f"{path}: too large for a config (more than {_MAX_BYTES} bytes)")
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        # Depth first, on the event stream (flat, fast): the composer recurses, and slowly, per level.
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > _MAX_DEPTH:
                    raise ConfigError(f"{path}: nested too deeply (at most {_MAX_DEPTH} levels)")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} not valid YAML") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply (at most {_MAX_DEPTH} levels)") from None
    except ValueError:  # the YAML constructor's int() on a number of thousands of digits
        raise ConfigError(f"{path}: a number too long to be a setting") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping")
    return raw


def _check_shape(raw: dict[str, Any], where: str) -> None:
    """Refuse bombs before anything walks the tree: depth, expanded size (aliases), non-text keys."""
    stack: list[tuple[Any, int]] = [(raw, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > _MAX_NODES:
            raise ConfigError(f"{where}: too large (more than {_MAX_NODES} values once aliases are expanded)")
        if depth > _MAX_DEPTH:
            raise ConfigError(f"{where}: nested too deeply (at most {_MAX_DEPTH} levels)")
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise ConfigError(f"{where}: keys must be names, got {type(key).__name__} {shown(key)}")
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's annotation holds (through Annotated, Optional and unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = get_origin(annotation)
    if origin is Annotated or origin is Union or type(annotation).__name__ == "UnionType":
        for arg in get_args(annotation):
            found.extend(_models(arg))
    return found


def _target(parts: list[str]) -> Any:
    """The annotation of the setting at ``parts`` (lower case), or None when there is no such setting."""
    annotation: Any = Settings
    for part in parts:
        fields = [m.model_fields[part] for m in _models(annotation) if part in m.model_fields]
        if not fields:
            return None
        annotation = fields[0].annotation
    return annotation


def _complex(annotation: Any) -> bool:
    """Does the environment give this setting as JSON (a section or a list) rather than as text?"""
    if _models(annotation):
        return True
    origin = get_origin(annotation)
    if origin is Annotated or origin is Union or type(annotation).__name__ == "UnionType":
        return any(_complex(a) for a in get_args(annotation) if a is not type(None))
    return origin in (list, dict)


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """The ``ROTATOR_<SECTION>__<FIELD>`` overrides as a nested dict, and which variable set which path."""
    overrides: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    found = []
    for name, value in env.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if all(parts) and _target(parts) is not None:
            found.append((len(parts), name, parts, value))
    for _, name, parts, value in sorted(found):  # a section's JSON first, its fields' variables over it
        decoded: Any = value
        if _complex(_target(parts)):
            try:
                if _json_depth(value) > _MAX_DEPTH:
                    raise ValueError("nested too deeply")
                decoded = json.loads(value)
            except ValueError as exc:
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise ConfigError(f"{name}: {'.'.join(parts)} must be JSON here ({why})") from None
        node = overrides
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = decoded
        sources[tuple(parts)] = name
    return overrides, sources


def _json_depth(text: str) -> int:
    """How deep ``text``'s brackets nest (the C decoder can overflow the stack before it notices)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _named_env_vars(raw: dict[str, Any]) -> set[str]:
    """Every variable the config names as a secret's source (``key_env``, ``signer.env``, ``*_env``)."""
    names = {str(FileStoreSettings.model_fields["key_env"].default)}
    stack: list[Any] = [raw]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and (key == "env" or str(key).endswith("_env")):
                    names.add(value)
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return names


def _unknown_env(env: Mapping[str, str], sources: dict[tuple[str, ...], str], named: set[str]) -> str | None:
    used = set(sources.values())
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX) or name in used or name in named:
            continue
        # "__" too: a Service named with "--" (release "rotator--x") gets ROTATOR__X_*. Overrides of
        # real settings were taken out above (``used``); a link also needs a link's value.
        if _service_link(name.upper(), env[name]):
            continue
        return name
    return None


def _describe(
    exc: ValidationError,
    raw: Any,
    path: str | Path | None,
    sources: dict[tuple[str, ...], str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    err = exc.errors()[0]
    parts: list[str] = []
    loc = list(err.get("loc", ()))
    for i, part in enumerate(loc):
        if isinstance(part, int) and parts:
            name = _credential_name(raw, loc[:i], part)
            parts[-1] += f"[{name}]" if name else f"[{part}]"
        else:
            parts.append(str(part))
    field = ".".join(parts)
    msg = err.get("msg", "invalid")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key"
    # Only the message can carry a value; the prefix (file, variable, field) is ours and stays legible.
    msg = redact(msg.removeprefix("Value error, "))
    keys = tuple(str(p) for p in loc if not isinstance(p, int))
    var = None
    if _env_set(overrides or {}, loc):  # a variable set the value (or the list) that is wrong: which one
        for where, name in (sources or {}).items():
            if keys[: len(where)] == where and (var is None or len(where) > len(var[0])):
                var = (where, name)
    if var is not None:
        return f"{var[1]}: {field}: {msg}" if field else f"{var[1]}: {msg}"
    # A section's own check failed, and variables set some of its fields: name them with the file.
    inside = sorted(name for where, name in (sources or {}).items() if where[: len(keys)] == keys)
    source = " and ".join(([str(path)] if path else []) + inside)
    prefix = f"{source}: " if source else ""
    return f"{prefix}{field}: {msg}" if field else f"{prefix}{msg}"


def _env_set(overrides: dict[str, Any], loc: list[Any]) -> bool:
    """Did the environment give the value at ``loc`` (a section's JSON merged into the file's section
    gives only the fields it names; a list or a scalar is given whole)?"""
    node: Any = overrides
    for part in loc:
        if not isinstance(node, dict):
            return True
        if part not in node:
            return False
        node = node[part]
    # A section's own check: its fields may come from the file too (the caller names both).
    return not isinstance(node, dict)


def _credential_name(raw: Any, loc: list[Any], index: int) -> str | None:
    node = raw
    for part in loc:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, list) and index < len(node) and isinstance(node[index], dict):
        name = node[index].get("name")
        return str(name) if isinstance(name, str) and re.match(r"^[A-Za-z0-9_.-]{1,63}$", name) else None
    return None
