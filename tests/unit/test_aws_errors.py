"""One translation of botocore errors for the store, the signers and the envelope (clients/aws.py)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from rotator.clients.aws import store_error
from rotator.errors import AccessDenied, ConfigError, NotFound, SignerError, StoreError, Unavailable
from rotator.signers.aws import aws_error


def client_error(code: str, status: int = 400) -> ClientError:
    response = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "Op")  # type: ignore[arg-type]


# (exception, the store's error, a signer's error)
CASES = [
    # A denial is a denial whatever the status: the store and the signers once checked in opposite orders.
    (client_error("AccessDeniedException", 503), AccessDenied, SignerError),
    (client_error("KMSDisabledException"), AccessDenied, SignerError),
    (client_error("ThrottlingException"), Unavailable, Unavailable),
    (client_error("KMSInternalException"), Unavailable, Unavailable),
    (client_error("SomethingElse", 502), Unavailable, Unavailable),
    (client_error("ResourceNotFoundException"), NotFound, SignerError),
    (client_error("ValidationException"), StoreError, SignerError),
    (NoCredentialsError(), AccessDenied, SignerError),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), Unavailable, Unavailable),
]


@pytest.mark.parametrize(("exc", "store", "signer"), CASES)
def test_store_and_signers_classify_alike(
    exc: Exception, store: type[Exception], signer: type[Exception]
) -> None:
    assert type(store_error(exc, "doing")) is store
    assert type(aws_error(exc, "doing")) is signer
    assert type(aws_error(exc, "doing", permanent=ConfigError)) is (
        Unavailable if signer is Unavailable else ConfigError
    )
