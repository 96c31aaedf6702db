"""AWS for the signers: the one boto3 client factory, error translation, and the Secrets Manager source.

Signers and the file store's KMS envelope get their clients from :func:`make_aws_client`, so
botocore (boto3's core) is imported here (lazily) and in ``stores/aws.py`` only. Credentials come
from boto3's standard chain (env, profile, IRSA, instance role), never from the config. Every
botocore exception is translated by :func:`aws_error`: what retrying cannot fix (no such key or
secret, access denied, disabled key) becomes the caller's ``permanent`` error type, naming the
source; outages and throttling become :class:`~rotator.errors.Unavailable`. Messages carry AWS's
error code and text, which name resources, never secret values.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol

from rotator.errors import ConfigError, RotatorError, SignerError, Unavailable
from rotator.model import Secret
from rotator.stores.aws import DENIED_CODES, RETRYABLE_CODES

# AWS's retryable codes (shared with the store) plus KMS's own.
_RETRYABLE = RETRYABLE_CODES | {
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
}
_CREDENTIAL_ERRORS = frozenset({"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"})


def make_aws_client(
    service: Literal["kms", "secretsmanager"],
    *,
    region: str | None,
    endpoint_url: str | None,
    timeout: float,
    max_attempts: int,
    setting: str,
) -> Any:
    """A boto3 client with standard-mode retries and the standard credential chain.

    :raises ConfigError: no region is configured or found in the environment (names ``setting``).
    """
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, NoRegionError

    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=timeout,
        read_timeout=timeout,
        user_agent_extra="rotator",
    )
    try:
        # botocore's session: the same client as boto3's, without importing boto3 (as stores/aws.py).
        return botocore.session.get_session().create_client(
            service, region_name=region, endpoint_url=endpoint_url, config=config
        )
    except NoRegionError:
        raise ConfigError(
            f"{setting}: no AWS region: set one, or AWS_REGION / AWS_DEFAULT_REGION in the environment"
        ) from None
    except (BotoCoreError, ValueError) as exc:
        raise ConfigError(f"{setting}: cannot build an AWS {service} client ({type(exc).__name__})") from None


def _code(exc: Any) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def aws_error(exc: Exception, doing: str, *, permanent: type[ConfigError] = SignerError) -> RotatorError:
    """The rotator error for a botocore exception raised while ``doing`` something.

    ``doing`` names the source (``credentials[mm1].signer (aws-kms alias/x): Sign``).
    """
    from botocore.exceptions import ClientError, ParamValidationError

    if isinstance(exc, ClientError):
        code = _code(exc)
        error = exc.response.get("Error", {})
        message = " ".join(str(error.get("Message") or "").split())[:200]
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        detail = f"{code}: {message}" if message else code
        if code in _RETRYABLE or (isinstance(status, int) and status >= 500):
            return Unavailable(f"{doing}: AWS is throttling or unavailable ({detail}); retry later")
        if code in DENIED_CODES:
            return permanent(f"{doing}: access denied ({detail})")
        return permanent(f"{doing}: {detail}")
    name = type(exc).__name__
    if name in _CREDENTIAL_ERRORS:
        return permanent(
            f"{doing}: no usable AWS credentials ({name}); the standard chain reads AWS_* variables, "
            "the shared profile, IRSA's web identity token and the instance role"
        )
    if isinstance(exc, ParamValidationError):
        # Its text may quote a parameter's value (a message to sign, a ciphertext): the type only.
        return permanent(f"{doing}: request rejected by botocore ({name})")
    return Unavailable(f"{doing}: cannot reach AWS ({name}); retry later")


def botocore_errors() -> tuple[type[Exception], ...]:
    """The exception types :func:`aws_error` translates (imported lazily, like boto3)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


class SecretsManagerReader(Protocol):
    """The one call of boto3's ``secretsmanager`` client this source makes."""

    def get_secret_value(self, **kwargs: Any) -> dict[str, Any]: ...

    def close(self) -> None: ...


class SecretsManagerKeySource:
    """Reads the wallet key from a secret's JSON field (or its whole text when ``field`` is None).

    Called for every signature (see :class:`rotator.signers.local.FetchedKeySigner`), so the key is
    in this process only while it signs, and a rotated secret is picked up without a restart.
    """

    def __init__(
        self,
        client: SecretsManagerReader,
        secret_id: str,
        *,
        field: str | None,
        version_stage: str = "AWSCURRENT",
        source: str,
    ) -> None:
        self._client = client
        self._secret_id = secret_id
        self._field = field
        self._stage = version_stage
        self._source = source

    def __call__(self) -> Secret:
        try:
            resp = self._client.get_secret_value(SecretId=self._secret_id, VersionStage=self._stage)
        except botocore_errors() as exc:
            raise aws_error(exc, f"{self._source}: GetSecretValue") from exc
        text = resp.get("SecretString")
        if not isinstance(text, str):
            raise SignerError(f"{self._source}: the secret holds a binary value; store the key as text")
        if self._field is None:
            return Secret(text)
        try:
            data = json.loads(text)
        except ValueError:
            # from None: a JSONDecodeError carries the whole document (the key) in its ``doc``.
            data = None
        if not isinstance(data, dict):
            raise SignerError(
                f"{self._source}: the secret is not a JSON object (set signer.field: null if the whole "
                "value is the key)"
            ) from None
        value = data.get(self._field)
        if not isinstance(value, str):
            raise SignerError(f"{self._source}: the secret has no text field {self._field!r}")
        return Secret(value)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"SecretsManagerKeySource({self._secret_id!r})"
