"""The lease-record part of the Store contract (``load_lease``/``save_lease``), on every backend.

The leader election (rotator/leader.py) relies on exactly this: a compare-and-set on a small record
beside the states, renewals that keep the holder, takeovers once it lapsed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rotator.errors import VersionConflict
from rotator.model import CredentialRef, CredentialState
from rotator.stores.base import LEADER, Store

from .conftest import BACKENDS, Opener

REF = CredentialRef("market-maker-1", "rotator/market-maker-1")
T0 = 1_700_000_000.5


def test_no_record_until_one_is_written(store: Store) -> None:
    assert store.load_lease(LEADER) is None
    rec = store.save_lease(LEADER, "a", T0 + 20, None)
    assert (rec.holder, rec.until) == ("a", T0 + 20)
    assert store.load_lease(LEADER) == rec


def test_only_one_creator_wins(store_factory: Opener) -> None:
    a, b = store_factory(), store_factory()
    try:
        a.save_lease(LEADER, "a", T0 + 20, None)
        with pytest.raises(VersionConflict):
            b.save_lease(LEADER, "b", T0 + 20, None)
        loaded = b.load_lease(LEADER)
        assert loaded is not None and loaded.holder == "a"
    finally:
        a.close()
        b.close()


def test_renewal_keeps_the_holder_and_moves_the_deadline(store: Store) -> None:
    rec = store.save_lease(LEADER, "a", T0 + 20, None)
    for i in range(1, 4):
        rec = store.save_lease(LEADER, "a", T0 + 20 + 5 * i, rec)
        loaded = store.load_lease(LEADER)
        assert loaded == rec
        assert (loaded.holder, loaded.until) == ("a", T0 + 20 + 5 * i)


def test_a_stale_expectation_loses_the_compare_and_set(store_factory: Opener) -> None:
    a, b = store_factory(), store_factory()
    try:
        first = a.save_lease(LEADER, "a", T0 + 20, None)
        seen_by_b = b.load_lease(LEADER)
        assert seen_by_b == first
        a.save_lease(LEADER, "a", T0 + 25, first)  # a renews after b read
        with pytest.raises(VersionConflict):
            b.save_lease(LEADER, "b", T0 + 40, seen_by_b)  # b's takeover names the old record
        after = a.load_lease(LEADER)
        assert after is not None and (after.holder, after.until) == ("a", T0 + 25)
    finally:
        a.close()
        b.close()


def test_takeover_after_lapse_and_the_old_holder_then_loses(store_factory: Opener) -> None:
    a, b = store_factory(), store_factory()
    try:
        held = a.save_lease(LEADER, "a", T0, None)  # lapsed long ago
        lapsed = b.load_lease(LEADER)
        assert lapsed is not None and lapsed.until < T0 + 1
        taken = b.save_lease(LEADER, "b", T0 + 100, lapsed)
        assert a.load_lease(LEADER) == taken
        assert taken.holder == "b"
        with pytest.raises(VersionConflict):
            a.save_lease(LEADER, "a", T0 + 30, held)  # a's renewal of what it held: too late
        # ... and a release by the old holder does not clear the new one's record either.
        with pytest.raises(VersionConflict):
            a.save_lease(LEADER, "a", 0.0, held)
        now = b.load_lease(LEADER)
        assert now is not None and (now.holder, now.until) == ("b", T0 + 100)
        # The new holder renews on top of its takeover.
        renewed = b.save_lease(LEADER, "b", T0 + 105, taken)
        assert b.load_lease(LEADER) == renewed
    finally:
        a.close()
        b.close()


def test_lease_writes_never_touch_credential_states(store: Store) -> None:
    state = CredentialState(next_nonce=7)
    version = store.save(REF, state, None)
    rec = store.save_lease(LEADER, "a", T0 + 20, None)
    for i in range(3):
        rec = store.save_lease(LEADER, "a", T0 + 21 + i, rec)
    snap = store.load(REF)
    assert snap.state == state and snap.version == version
    store.save(REF, CredentialState(next_nonce=8), version)  # still the version this writer holds


def test_aws_renewals_create_no_secret_versions(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """AWS keeps every version younger than 24 h and warns that frequent PutSecretValue calls exhaust
    the quota: only a change of holder may put a version; renewals and releases only tag."""
    from rotator.stores.aws import DEFAULT_STATE_PREFIX

    store = BACKENDS["aws"](request, tmp_path, "unused")()
    request.addfinalizer(store.close)

    client = store._client  # type: ignore[attr-defined]  # the store's own client: same moto account

    def versions() -> int:
        resp = client.list_secret_version_ids(SecretId=DEFAULT_STATE_PREFIX + LEADER, IncludeDeprecated=True)
        return len(resp["Versions"])

    rec = store.save_lease(LEADER, "a", T0 + 20, None)
    assert versions() == 1
    for i in range(10):
        rec = store.save_lease(LEADER, "a", T0 + 21 + i, rec)
    released = store.save_lease(LEADER, "a", 0.0, rec)
    assert versions() == 1
    loaded = store.load_lease(LEADER)
    assert loaded is not None and (loaded.holder, loaded.until) == ("a", 0.0)
    taken = store.save_lease(LEADER, "b", T0 + 50, released)
    assert versions() == 2
    for i in range(5):
        taken = store.save_lease(LEADER, "b", T0 + 51 + i, taken)
    assert versions() == 2
    assert store.load_lease(LEADER) == taken


# -- issue 22: what the leader election reads from a record, on every backend ----------------------


def test_every_renewal_changes_the_record_a_standby_loads(store_factory: Opener) -> None:
    """A standby tells a live holder from a dead one only by the record changing: every renewal must
    change what another store loads (AWS: the tag, as the version stays)."""
    a, b = store_factory(), store_factory()
    try:
        rec = a.save_lease(LEADER, "a", T0 + 20, None)
        seen = [b.load_lease(LEADER)]
        for i in range(1, 4):
            rec = a.save_lease(LEADER, "a", T0 + 20 + i, rec)
            seen.append(b.load_lease(LEADER))
        assert len({(r.holder, r.until, r.version) for r in seen if r is not None}) == 4, seen
    finally:
        a.close()
        b.close()


def test_a_released_record_loads_as_released(store_factory: Opener) -> None:
    a, b = store_factory(), store_factory()
    try:
        rec = a.save_lease(LEADER, "a", T0 + 20, None)
        a.save_lease(LEADER, "a", 0.0, rec)
        loaded = b.load_lease(LEADER)
        assert loaded is not None and loaded.until <= 0.0
    finally:
        a.close()
        b.close()


class _Clocks:
    """Two replicas' clocks: walls 60 s apart, monotonic clocks with origins of their own."""

    def __init__(self) -> None:
        self.t = T0

    def host(self, skew: float, origin: float) -> tuple[Callable[[], float], Callable[[], float]]:
        return (lambda: self.t + skew), (lambda: self.t - T0 + origin)


@pytest.mark.parametrize("skew", [60.0, -60.0])
def test_electors_on_skewed_clocks_share_one_lease(store_factory: Opener, skew: float) -> None:
    """The election over this backend's records (issue 22 items 1-2): a renewed lease is never
    taken, whatever the standby's clock; a silent one is taken within lease + renew."""
    from rotator.leader import LeaderElector

    clocks = _Clocks()
    stores = [store_factory(), store_factory()]
    try:
        wall_a, mono_a = clocks.host(0.0, 5.0)
        wall_b, mono_b = clocks.host(skew, 777.0)
        a = LeaderElector(stores[0], lease=20.0, renew=5.0, holder="a", wall=wall_a, monotonic=mono_a)
        b = LeaderElector(stores[1], lease=20.0, renew=5.0, holder="b", wall=wall_b, monotonic=mono_b)
        assert a.step()
        for _ in range(8):  # 40 s: twice the lease
            clocks.t += 2.5
            assert not b.step()
            clocks.t += 2.5
            assert a.step()
        died = clocks.t
        while not b.step():
            clocks.t += 1.0
            assert clocks.t - died <= 25.0, "failover slower than lease + renew"
        assert b.is_leader and not a.is_leader
        loaded = stores[0].load_lease(LEADER)
        assert loaded is not None and loaded.holder == "b"
    finally:
        for s in stores:
            s.close()
