"""The store backends the contract suite runs against.

Adding a backend is one function in ``BACKENDS``: ``(request, tmp_path, prefix) -> opener``, where
``opener()`` returns a new, connected ``Store`` over the same data each time it is called. The
opener must be picklable (a ``functools.partial`` of a module-level callable): the concurrency and
crash tests call it in child processes started with the "spawn" method. ``prefix`` is unique per
test, for backends whose server outlives one test (Vault paths, AWS secret names); ``request``
gives access to session fixtures such as a running server (``request.getfixturevalue``).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.stores.base import Store

Opener = Callable[[], Store]

#: A fixed test key, so child processes and the parent open the same file.
FILE_KEY = b"rotator-contract-test-key-32byte"


def _file_backend(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Opener:
    from rotator.stores.file import FileStore

    return functools.partial(FileStore, tmp_path / "state" / f"{prefix}.store", FILE_KEY)


def _open_vault(url: str, token: str, mount: str) -> Store:
    # Through the production factory, so settings, auth and TLS wiring are what the contract sees.
    from rotator.config import VaultSettings
    from rotator.stores.vault import build_vault_store

    settings = VaultSettings(url=url, mount=mount, auth={"method": "token", "token_env": "CONTRACT_TOKEN"})
    return build_vault_store(settings, {"CONTRACT_TOKEN": token})


def _vault_backend(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Opener:
    # A KV v2 mount of the test's own: published paths are fixed across tests, mounts are not.
    bao = request.getfixturevalue("openbao")
    root = bao.client()
    root.sys.enable_secrets_engine("kv", path=prefix, options={"version": "2"})
    request.addfinalizer(lambda: root.sys.disable_secrets_engine(prefix))
    return functools.partial(_open_vault, bao.url, bao.root_token, prefix)


def _moto_account(account: str, request: Any, **_: Any) -> None:
    request.headers["x-moto-account-id"] = account


def _open_aws(url: str, account: str) -> Store:
    # Through the production factory; the test's own moto account isolates the fixed secret names.
    from rotator.config import AwsStoreSettings
    from rotator.stores.aws import AwsStore, make_client

    # moto serialises nothing: under the contract's contention a request can fail with a 500 that
    # a retry (botocore's standard mode, as in production) answers correctly.
    client: Any = make_client(AwsStoreSettings(endpoint_url=url, region="us-east-1", max_attempts=10))
    client.meta.events.register("before-sign.secretsmanager.*", functools.partial(_moto_account, account))
    return AwsStore(client)


def _aws_backend(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Opener:
    url = request.getfixturevalue("moto_server")
    return functools.partial(_open_aws, url, str(uuid.uuid4().int % 10**12).zfill(12))


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path, str], Opener]] = {
    "aws": _aws_backend,
    "file": _file_backend,
    "vault": _vault_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens stores of one backend over one fresh, empty data set."""
    prefix = f"rotator-test-{uuid.uuid4().hex[:12]}"
    return BACKENDS[request.param](request, tmp_path, prefix)


@pytest.fixture
def store(store_factory: Opener) -> Iterator[Store]:
    s = store_factory()
    yield s
    s.close()
