"""The store backends the contract suite runs against, and their fault hooks.

Adding a backend is one function in ``BACKENDS``: ``(request, tmp_path, prefix) -> opener``, where
``opener()`` returns a new, connected ``Store`` over the same data each time it is called. The
opener must be picklable (a ``functools.partial`` of a module-level callable): the concurrency and
crash tests call it in child processes started with the "spawn" method. ``prefix`` is unique per
test, for backends whose server outlives one test (Vault paths, AWS secret names); ``request``
gives access to session fixtures such as a running server (``request.getfixturevalue``).

Its fault hooks are one function in ``FAULTS``: ``(request, tmp_path, prefix, opener) -> Faults``,
what the error half of the contract (``test_store_errors.py``) needs: stores over the same data that
are denied or cannot reach the backend, a way to leave unreadable data, and (where a publish or an
acknowledgement can race another writer at all) a store whose publishes always lose their race and
one whose acknowledgements always race a rival writer of the same record.

The memory backend (``tests/memory_store.py``, the reference implementation) lives in one process:
tests marked ``cross_process`` (children started with "spawn") are deselected for it.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rotator.model import CredentialRef
from rotator.stores.base import Store
from tests.memory_store import MemoryData, MemoryStore

Opener = Callable[[], Store]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # One process's memory is not shared with spawned children: those tests do not apply to it.
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec is not None else None
        in_memory = backend == "memory" and item.get_closest_marker("cross_process") is not None
        (drop if in_memory else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@dataclass(frozen=True)
class Faults:
    """Per-backend fault hooks; every store they open is over the data of the test's ``opener``."""

    #: Leave data that is no state and no key where ``ref``'s state and published key are kept.
    corrupt: Callable[[CredentialRef], None]
    #: A store whose identity may not write (and, where the backend can say so, not read).
    denied: Opener
    #: A store that cannot reach its backend.
    unavailable: Opener
    #: A store whose every publish loses its race to another writer; None where a publish holds a
    #: lock over its read and write (the file store's ``flock``) and so cannot lose one.
    racing: Opener | None
    #: A store whose every acknowledgement races a rival writer of the same consumer's record, and
    #: a count of the rival's writes so far (a test proves the race happened by it); None where an
    #: acknowledgement is written under a lock (the file store's ``flock``, the memory store's
    #: mutex) and so has no race to lose.
    racing_acks: Callable[[], tuple[Store, Callable[[], int]]] | None


_MEMORY: dict[str, MemoryData] = {}


def _open_memory(prefix: str) -> Store:
    return MemoryStore(_MEMORY.setdefault(prefix, MemoryData()))


def _memory_backend(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Opener:
    request.addfinalizer(lambda: _MEMORY.pop(prefix, None))
    return functools.partial(_open_memory, prefix)


def _open_faulty_memory(prefix: str, error: Any, *operations: str) -> Store:
    # A view of its own over a copy that shares every record but the faults.
    data = _MEMORY.setdefault(prefix, MemoryData())
    view = MemoryData(data.states, data.published, data.acks, data.leases, {}, data.lock, data.history)
    view.fail(error, *operations)
    return MemoryStore(view)


def _memory_faults(request: pytest.FixtureRequest, tmp_path: Path, prefix: str, opener: Opener) -> Faults:
    from rotator.errors import AccessDenied, Unavailable

    return Faults(
        corrupt=lambda ref: _MEMORY.setdefault(prefix, MemoryData()).corrupt(ref),
        denied=functools.partial(_open_faulty_memory, prefix, AccessDenied("memory: permission denied")),
        unavailable=functools.partial(_open_faulty_memory, prefix, Unavailable("memory: unreachable")),
        racing=functools.partial(_open_faulty_memory, prefix, Unavailable("unused"), "publish-race"),
        racing_acks=None,  # every record is written under one mutex
    )


#: A fixed test key, so child processes and the parent open the same file.
FILE_KEY = b"rotator-contract-test-key-32byte"


def _file_backend(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Opener:
    from rotator.stores.file import FileStore

    return functools.partial(FileStore, tmp_path / "state" / f"{prefix}.store", FILE_KEY)


def _file_faults(request: pytest.FixtureRequest, tmp_path: Path, prefix: str, opener: Opener) -> Faults:
    from rotator.stores.file import FileStore

    def corrupt(ref: CredentialRef) -> None:
        path = tmp_path / "state" / f"{prefix}.store"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"GARBAGE7F3A")

    blocker = tmp_path / "a-file-not-a-directory"
    blocker.write_bytes(b"")
    return Faults(
        corrupt=corrupt,
        # sysfs refuses new files even to root (EACCES), as a directory without write permission
        # refuses them to the worker's user.
        denied=functools.partial(FileStore, Path("/sys") / f"{prefix}.store", FILE_KEY),
        unavailable=functools.partial(FileStore, blocker / f"{prefix}.store", FILE_KEY),
        racing=None,
        racing_acks=None,
    )


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


def _vault_token(bao: Any, prefix: str, policy: str) -> str:
    root = bao.client()
    root.sys.create_or_update_policy(prefix, policy)
    made = root.auth.token.create(policies=[prefix], no_default_policy=True, ttl="10m")
    return str(made["auth"]["client_token"])


def _open_racing_vault(url: str, token: str, mount: str, rival_writes: list[str] | None = None) -> Store:
    # Another writer (root) puts a new version at every path this store reads, so every
    # check-and-set write after a read loses: a real race on the real server, on every try.
    import hvac

    store = _open_vault(url, token, mount)
    rival = hvac.Client(url=url, token=token)
    kv: Any = store._session.client.secrets.kv.v2  # type: ignore[attr-defined]
    read = kv.read_secret_version

    def read_then_lose(path: str, *args: Any, **kwargs: Any) -> Any:
        answer = read(path, *args, **kwargs)
        rival_key = {"rival": uuid.uuid4().hex}
        rival.secrets.kv.v2.create_or_update_secret(path, secret=rival_key, mount_point=mount)
        if rival_writes is not None:
            rival_writes.append(path)
        return answer

    kv.read_secret_version = read_then_lose
    return store


def _racing_vault_acks(url: str, token: str, mount: str) -> tuple[Store, Callable[[], int]]:
    # An acknowledgement's first write (cas=0, or the version this store last wrote) loses to the
    # record already there; the version it then reads is overwritten by the rival before its retry.
    writes: list[str] = []
    return _open_racing_vault(url, token, mount, writes), lambda: len(writes)


def _vault_faults(request: pytest.FixtureRequest, tmp_path: Path, prefix: str, opener: Opener) -> Faults:
    from tests.servers import free_port

    bao = request.getfixturevalue("openbao")

    def corrupt(ref: CredentialRef) -> None:
        store: Any = opener()
        kv = bao.client().secrets.kv.v2
        state_path = store._state_path(ref)
        kv.create_or_update_secret(state_path, secret={"current": "GARBAGE7F3A"}, mount_point=prefix)
        kv.create_or_update_secret(ref.path, secret={"api_key": "GARBAGE7F3A"}, mount_point=prefix)
        store.close()

    # A token whose only policy grants nothing on this mount.
    nothing = _vault_token(bao, prefix, 'path "sys/nothing" { capabilities = ["read"] }')
    return Faults(
        corrupt=corrupt,
        denied=functools.partial(_open_vault, bao.url, nothing, prefix),
        unavailable=functools.partial(_open_vault, f"http://127.0.0.1:{free_port()}", bao.root_token, prefix),
        racing=functools.partial(_open_racing_vault, bao.url, bao.root_token, prefix),
        racing_acks=functools.partial(_racing_vault_acks, bao.url, bao.root_token, prefix),
    )


def _moto_account(account: str, request: Any, **_: Any) -> None:
    request.headers["x-moto-account-id"] = account


def _open_aws(url: str, account: str, max_attempts: int = 10) -> Store:
    # Through the production factory; the test's own moto account isolates the fixed secret names.
    from rotator.config import AwsStoreSettings
    from rotator.stores.aws import AwsStore, make_client

    # moto serialises nothing: under the contract's contention a request can fail with a 500 that
    # a retry (botocore's standard mode, as in production) answers correctly.
    settings = AwsStoreSettings(endpoint_url=url, region="us-east-1", max_attempts=max_attempts)
    client: Any = make_client(settings)
    client.meta.events.register("before-sign.secretsmanager.*", functools.partial(_moto_account, account))
    return AwsStore(client)


def _aws_backend(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Opener:
    url = request.getfixturevalue("moto_server")
    return functools.partial(_open_aws, url, str(uuid.uuid4().int % 10**12).zfill(12))


def _deny(request: Any, **_: Any) -> Any:
    # What Secrets Manager answers an identity without the permission, as a real HTTP answer that
    # the store's own error translation reads. (moto does not evaluate IAM policies.)
    from botocore.awsrequest import AWSResponse

    body = json.dumps({"__type": "AccessDeniedException", "message": "not authorized to perform"}).encode()

    class Raw:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield body

    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "denied"}
    return AWSResponse(request.url, 400, headers, Raw())


def _open_denied_aws(url: str, account: str) -> Store:
    store: Any = _open_aws(url, account)
    store._client.meta.events.register_first("before-send.secretsmanager.*", _deny)
    return store  # type: ignore[no-any-return]


def _rival_publish(rival: Any, parsed: Any, **_: Any) -> None:
    # After every DescribeSecret of a published secret, another writer moves AWSCURRENT on.
    name = str(parsed.get("Name", ""))
    if name and not name.startswith("rotator/state/"):
        rival.put_secret_value(SecretId=name, SecretString=json.dumps({"rival": uuid.uuid4().hex}))


def _open_racing_aws(url: str, account: str) -> Store:
    store: Any = _open_aws(url, account)
    rival: Any = _open_aws(url, account)
    handler = functools.partial(_rival_publish, rival._client)
    store._client.meta.events.register("after-call.secretsmanager.DescribeSecret", handler)
    return store  # type: ignore[no-any-return]


def _rival_ack(rival: Any, writes: list[str], params: Any, **_: Any) -> None:
    # Just before each TagResource of this store, another process of the same consumer id files
    # its own acknowledgement on the same secret, under the same tag key.
    tags = [t for t in params.get("Tags") or [] if str(t.get("Key", "")).startswith("rotator-ack:")]
    if tags:
        rival_tags = [{**t, "Value": "3.0 " + str(t["Value"]).partition(" ")[2]} for t in tags]
        rival.tag_resource(SecretId=params["SecretId"], Tags=rival_tags)
        writes.append(str(params["SecretId"]))


def _racing_aws_acks(url: str, account: str) -> tuple[Store, Callable[[], int]]:
    store: Any = _open_aws(url, account)
    rival: Any = _open_aws(url, account)
    writes: list[str] = []
    handler = functools.partial(_rival_ack, rival._client, writes)
    store._client.meta.events.register("provide-client-params.secretsmanager.TagResource", handler)
    return store, lambda: len(writes)


def _aws_faults(request: pytest.FixtureRequest, tmp_path: Path, prefix: str, opener: Opener) -> Faults:
    from tests.servers import free_port

    url, account = opener.args  # type: ignore[attr-defined]

    def corrupt(ref: CredentialRef) -> None:
        store: Any = opener()
        client = store._client
        bad_key = json.dumps({"api_key": "GARBAGE7F3A"})
        for name, text in ((store.state_secret(ref), "{GARBAGE7F3A"), (ref.path, bad_key)):
            try:
                client.put_secret_value(SecretId=name, SecretString=text)
            except client.exceptions.ResourceNotFoundException:
                client.create_secret(Name=name, SecretString=text)
        store.close()

    return Faults(
        corrupt=corrupt,
        denied=functools.partial(_open_denied_aws, url, account),
        unavailable=functools.partial(_open_aws, f"http://127.0.0.1:{free_port()}", account, 1),
        racing=functools.partial(_open_racing_aws, url, account),
        racing_acks=functools.partial(_racing_aws_acks, url, account),
    )


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path, str], Opener]] = {
    "aws": _aws_backend,
    "file": _file_backend,
    "memory": _memory_backend,
    "vault": _vault_backend,
}

FAULTS: dict[str, Callable[[pytest.FixtureRequest, Path, str, Opener], Faults]] = {
    "aws": _aws_faults,
    "file": _file_faults,
    "memory": _memory_faults,
    "vault": _vault_faults,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def prefix() -> str:
    return f"rotator-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store_factory(request: pytest.FixtureRequest, tmp_path: Path, backend: str, prefix: str) -> Opener:
    """Opens stores of one backend over one fresh, empty data set."""
    return BACKENDS[backend](request, tmp_path, prefix)


@pytest.fixture
def faults(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, prefix: str, store_factory: Opener
) -> Faults:
    """The fault hooks of the backend ``store_factory`` opens, over its data."""
    return FAULTS[backend](request, tmp_path, prefix, store_factory)


@pytest.fixture
def store(store_factory: Opener) -> Iterator[Store]:
    s = store_factory()
    yield s
    s.close()
