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

import pytest

from rotator.stores.base import Store

Opener = Callable[[], Store]

#: A fixed test key, so child processes and the parent open the same file.
FILE_KEY = b"rotator-contract-test-key-32byte"


def _file_backend(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Opener:
    from rotator.stores.file import FileStore

    return functools.partial(FileStore, tmp_path / "state" / f"{prefix}.store", FILE_KEY)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path, str], Opener]] = {
    "file": _file_backend,
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
