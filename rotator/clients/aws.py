"""botocore for every AWS client rotator makes: the one factory, and the one error translator.

The Secrets Manager store, the KMS and Secrets Manager signers and the file store's KMS envelope all
get their clients from :func:`make_client` and translate errors with :func:`translate`, so botocore
(boto3's core: the same clients, without boto3's resource layer) is imported here only, and lazily
(DESIGN.md, Layout). Credentials come from the standard chain (env, profile, IRSA, instance role),
never from the config. ``store.aws.max_attempts`` is botocore's ``total_max_attempts`` for every
client: the first try included, so 3 means three calls at most. ``store.aws.proxy`` is every
client's proxy; without it none is used, whatever ``HTTPS_PROXY`` says (botocore would follow it).

:func:`translate` sorts an exception in one order, whoever asks: denied (or no usable credentials),
the secret's KMS key unusable, throttling or outage (``Unavailable``), no such resource, the secret
scheduled for deletion, anything else. The caller chooses the error types a denial and a permanent
failure become (``AccessDenied``/``StoreError`` for the store, ``SignerError`` for signers,
``ConfigError`` for the envelope). Messages carry AWS's error code and text, which name resources,
never secret values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from rotator.errors import AccessDenied, ConfigError, NotFound, RotatorError, StoreError, Unavailable

if TYPE_CHECKING:
    from rotator.config import HttpProxySettings

Service = Literal["kms", "secretsmanager"]

#: Error codes that mean "this identity may not" (or has no valid credentials), across services.
DENIED_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredTokenException",
        "ExpiredToken",
    }
)
#: Secrets Manager's answers when the KMS key of a secret cannot be used: a denial, not an outage.
KMS_KEY_CODES = frozenset(
    {"DecryptionFailure", "EncryptionFailure", "KMSAccessDeniedException", "KMSDisabledException"}
)
#: Error codes that mean "try again later", across AWS services (KMS's own included).
RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "LimitExceededException",
        "InternalServiceError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
    }
)
NOT_FOUND = "ResourceNotFoundException"
#: botocore's exceptions for "the credential chain produced nothing usable".
_CREDENTIAL_ERRORS = frozenset({"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"})
_NAMES = {"secretsmanager": "Secrets Manager", "kms": "KMS"}
DELETED = (
    "is scheduled for deletion: restore it (aws secretsmanager restore-secret) or delete it for good, "
    "then run again"
)


def proxy_url(proxy: HttpProxySettings | None, env: Mapping[str, str]) -> str | None:
    """``store.aws.proxy`` as botocore takes it: its credentials in the URL, from which botocore
    builds the ``Proxy-Authorization`` header (and which it masks in its own errors).

    :raises ConfigError: the password's variable or file is missing.
    """
    if proxy is None:
        return None
    from urllib.parse import quote

    read = proxy.password_reader(env, "store.aws.proxy")
    user = f"{quote(proxy.username, safe='')}:{quote(read(), safe='')}@" if proxy.username and read else ""
    host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
    return f"http://{user}{host}:{proxy.port}"


def make_client(
    service: Service,
    *,
    region: str | None,
    endpoint_url: str | None,
    timeout: float,
    max_attempts: int,
    setting: str,
    proxy: str | None = None,
) -> Any:
    """A botocore client: standard-mode retries, ``max_attempts`` calls in all, the standard chain.
    ``proxy``: the :func:`proxy_url` every request goes through; None: none at all.

    :raises ConfigError: no region is configured or found in the environment (names ``setting``).
    """
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, NoRegionError

    config = Config(
        # total_max_attempts counts the first try; botocore's "max_attempts" would count retries only.
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=timeout,
        read_timeout=timeout,
        user_agent_extra="rotator",
        # An empty mapping, not None: None makes botocore take HTTP(S)_PROXY from the environment.
        proxies={"http": proxy, "https": proxy} if proxy else {},
    )
    try:
        # botocore's session makes the same client as boto3's without importing boto3's resource
        # layer and s3transfer, which a one-shot run does not use (bench/RESULTS.md, start-up).
        return botocore.session.get_session().create_client(
            service, region_name=region, endpoint_url=endpoint_url, config=config
        )
    except NoRegionError:
        raise ConfigError(
            f"{setting}: not set, and the environment names no region (AWS_REGION, AWS_DEFAULT_REGION)"
        ) from None
    except (BotoCoreError, ValueError) as exc:
        raise ConfigError(
            f"{setting}: cannot build a {_NAMES[service]} client ({type(exc).__name__})"
        ) from None


def errors() -> tuple[type[Exception], ...]:
    """The exception types :func:`translate` takes: every botocore error (imported lazily)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def client_error() -> type[Exception]:
    """botocore's ``ClientError``: AWS answered with an error code (see :func:`error_code`)."""
    from botocore.exceptions import ClientError

    error: type[Exception] = ClientError
    return error


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError`` (``""`` for any other exception)."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _short(text: Any) -> str:
    return " ".join(str(text or "").split())[:200]


def translate(
    exc: BaseException,
    doing: str,
    *,
    service: str = "AWS",
    denied: type[RotatorError],
    permanent: type[RotatorError],
    not_found: type[RotatorError] | None = None,
) -> RotatorError:
    """The rotator error for a botocore exception raised while ``doing`` something.

    ``service`` names what was called in outage messages; ``denied`` is the type of a refusal (or of
    missing credentials), ``permanent`` of anything else retrying cannot fix, ``not_found`` (when
    given) of a missing resource. Outages and throttling are always ``Unavailable``.
    """
    from botocore.exceptions import ClientError, ParamValidationError

    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = _short(exc.response.get("Error", {}).get("Message"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        detail = f"{code}: {message}" if message else code
        if code in DENIED_CODES:
            return denied(f"{doing}: access denied ({detail})")
        if code in KMS_KEY_CODES:
            return denied(f"{doing}: the secret's KMS key cannot be used ({detail})")
        if code in RETRYABLE_CODES or (isinstance(status, int) and status >= 500):
            return Unavailable(f"{doing}: {service} is throttling or unavailable ({detail}); retry later")
        if code == NOT_FOUND and not_found is not None:
            return not_found(f"{doing}: no such secret")
        if code == "InvalidRequestException" and "delet" in message.lower():
            return permanent(f"{doing}: the secret {DELETED}")
        return permanent(f"{doing}: {detail}")
    name = type(exc).__name__
    if name in _CREDENTIAL_ERRORS:
        return denied(
            f"{doing}: no usable AWS credentials ({name}); the standard chain reads AWS_* variables, "
            "the shared profile, IRSA's web identity token and the instance role"
        )
    if name == "ProxyConnectionError":
        # botocore's message names the proxy with its credentials masked; ours names the setting, and
        # the status the proxy refused the tunnel with (urllib3's error, which botocore keeps).
        from rotator.clients.proxy import tunnel_refusal

        said = tunnel_refusal(str(getattr(exc, "kwargs", {}).get("error", "")))
        how = f"refused the tunnel ({said})" if said else "cannot be reached"
        return Unavailable(f"{doing}: cannot reach {service}: its proxy (store.aws.proxy) {how}; retry later")
    if isinstance(exc, ParamValidationError):
        # Its text may quote a parameter's value (a message to sign, a ciphertext): the type only.
        return permanent(f"{doing}: request rejected by botocore ({name})")
    return Unavailable(f"{doing}: cannot reach {service} ({name}); retry later")


def store_error(exc: BaseException, doing: str) -> RotatorError:
    """:func:`translate` as the Secrets Manager store raises it (the store's error tree)."""
    return translate(
        exc, doing, service="Secrets Manager", denied=AccessDenied, permanent=StoreError, not_found=NotFound
    )
