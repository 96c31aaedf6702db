"""``Store.check()`` on every backend: ready (or unknown where the backend cannot tell without
writing: AWS), error for a denied, unreachable or unreadable store, and nothing changes."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

import pytest

from rotator.stores.base import Snapshot, Store

from .conftest import BACKENDS, Faults, _open_vault, _vault_token
from .test_store_contract import REF, counter_state, make_key

#: What check() answers for an identity that may do everything: AWS cannot test writes.
HEALTHY = {"aws": "unknown", "file": "ready", "memory": "ready", "vault": "ready"}


def test_check_of_a_healthy_store_changes_nothing(store: Store, backend: str) -> None:
    empty = store.check(REF)
    assert empty.status == HEALTHY[backend], empty.message
    version = store.save(REF, counter_state(1), None)
    store.publish(REF, make_key(1))
    result = store.check(REF)
    assert result.status == HEALTHY[backend], result.message
    assert result.message and "\n" not in result.message
    assert store.load(REF) == Snapshot(counter_state(1), version)
    assert store.read_published(REF) == make_key(1)
    assert store.names() == [REF.name]


@pytest.mark.parametrize("fault", ["denied", "unavailable"])
def test_check_of_a_denied_or_unreachable_store_is_an_error(faults: Faults, fault: str) -> None:
    broken = getattr(faults, fault)()
    try:
        result = broken.check(REF)
    finally:
        broken.close()
    assert result.status == "error"
    assert result.message and "\n" not in result.message


def test_check_of_unreadable_data_is_an_error(store: Store, faults: Faults) -> None:
    faults.corrupt(REF)
    result = store.check(REF)
    assert result.status == "error"
    assert "GARBAGE7F3A" not in result.message


def test_vault_check_names_the_write_a_read_only_policy_lacks(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Reads allowed, writes not: only asking Vault (sys/capabilities-self) tells them apart."""
    prefix = f"rotator-check-ro-{uuid.uuid4().hex[:8]}"
    opener = BACKENDS["vault"](request, tmp_path, prefix)
    bao = request.getfixturevalue("openbao")
    read_only = _vault_token(
        bao,
        prefix,
        f'path "{prefix}/data/*" {{ capabilities = ["read"] }}\n'
        f'path "{prefix}/metadata/*" {{ capabilities = ["list"] }}\n'
        'path "sys/capabilities-self" { capabilities = ["update"] }\n',
    )
    writer = opener()
    writer.save(REF, counter_state(1), None)
    store = functools.partial(_open_vault, bao.url, read_only, prefix)()
    try:
        assert store.load(REF).state == counter_state(1)  # the reads really are allowed
        result = store.check(REF)
    finally:
        store.close()
        writer.close()
    assert result.status == "error"
    assert f"{prefix}/data/{REF.path}" in result.message and "create" in result.message


def test_vault_check_with_the_shipped_policy_alone_is_ready(request: pytest.FixtureRequest) -> None:
    """deploy/vault/rotator-policy.hcl lets ``rotator check`` ask for its capabilities."""
    from rotator.model import CredentialRef

    bao = request.getfixturevalue("openbao")
    policy = (Path(__file__).parents[2] / "deploy" / "vault" / "rotator-policy.hcl").read_text()
    token = _vault_token(bao, "rotator-shipped-policy", policy)
    store = _open_vault(bao.url, token, "secret")
    try:
        result = store.check(CredentialRef("check-mm1", "polymarket/check-mm1"))
    finally:
        store.close()
    assert result.status == "ready", result.message
