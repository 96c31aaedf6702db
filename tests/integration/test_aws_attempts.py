"""``store.aws.max_attempts`` means one thing for every botocore client: total attempts per call.

Counted at a fault proxy in front of moto that answers every matching call with a throttling error,
for each client rotator builds from that setting: the Secrets Manager store, the KMS signer, and the
file store's KMS envelope.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.config import AwsStoreSettings, load_settings
from rotator.errors import Unavailable
from rotator.model import CredentialRef
from rotator.signers.factory import build_signer
from rotator.stores.aws import AwsStore, make_client
from rotator.stores.envelope import kms_file_key
from tests.aws_faults import FaultProxy

pytestmark = pytest.mark.timeout(60)

ATTEMPTS = 3


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    p = FaultProxy(moto_server)
    yield p
    p.stop()


def test_the_store_makes_max_attempts_calls(proxy: FaultProxy) -> None:
    rule = proxy.fail("GetSecretValue", "ThrottlingException")
    settings = AwsStoreSettings(endpoint_url=proxy.url, region="us-east-1", max_attempts=ATTEMPTS)
    store = AwsStore(make_client(settings))
    try:
        with pytest.raises(Unavailable):
            store.load(CredentialRef("mm1", "bots/mm1"))
    finally:
        store.close()
    assert rule.hits == ATTEMPTS


def test_the_kms_signer_makes_max_attempts_calls(proxy: FaultProxy) -> None:
    rule = proxy.fail("GetPublicKey", "ThrottlingException")
    settings = load_settings(
        None,
        data={
            "store": {"backend": "file", "aws": {"max_attempts": ATTEMPTS, "timeout": 5}},
            "credentials": [
                {
                    "name": "mm1",
                    "signer": {
                        "source": "aws-kms",
                        "key_id": "alias/w",
                        "endpoint_url": proxy.url,
                        "region": "us-east-1",
                    },
                    "path": "polymarket/mm1",
                    "rotate_every": "1d",
                    "grace": "1h",
                }
            ],
        },
    )
    with pytest.raises(Unavailable, match="GetPublicKey"):
        build_signer(settings.credentials[0], settings, {})
    assert rule.hits == ATTEMPTS


def test_the_envelope_makes_max_attempts_calls(proxy: FaultProxy, tmp_path: Path) -> None:
    rule = proxy.fail("GenerateDataKey", "ThrottlingException")
    settings = load_settings(
        None,
        data={
            "store": {
                "backend": "file",
                "file": {
                    "path": str(tmp_path / "store.enc"),
                    "kms_key_id": "alias/file-store",
                    "kms_endpoint_url": proxy.url,
                    "kms_region": "us-east-1",
                },
                "aws": {"max_attempts": ATTEMPTS, "timeout": 5},
            },
            "credentials": [],
        },
    )
    with pytest.raises(Unavailable, match="GenerateDataKey"):
        kms_file_key(settings.store)
    assert rule.hits == ATTEMPTS
