"""The ``aws-secretsmanager`` signer source, and how signers phrase AWS errors.

Clients come from :func:`rotator.clients.aws.make_client` (the one importer of botocore); every
botocore exception is translated by :func:`aws_error`, naming the source. Messages carry AWS's error
code and text, which name resources, never secret values.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from rotator.clients import aws
from rotator.errors import ConfigError, RotatorError, SignerError
from rotator.model import Secret
from rotator.signers.base import text_field


def aws_error(exc: BaseException, doing: str, *, permanent: type[ConfigError] = SignerError) -> RotatorError:
    """The rotator error for a botocore exception raised while ``doing`` something for a key source.

    ``doing`` names the source (``credentials[mm1].signer (aws-kms alias/x): Sign``). What retrying
    cannot fix (no such key or secret, access denied, disabled key) becomes ``permanent``; outages
    and throttling :class:`~rotator.errors.Unavailable` (see :func:`rotator.clients.aws.translate`).
    """
    return aws.translate(exc, doing, denied=permanent, permanent=permanent)


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
        except aws.errors() as exc:
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
        return text_field(data, self._field, self._source)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"SecretsManagerKeySource({self._secret_id!r})"
