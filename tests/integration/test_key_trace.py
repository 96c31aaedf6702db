"""Issue 22, items 4-8: keys that leave no trace. Every key live on the wallet is the worker's and
accounted for, or someone else's and reported, never published and never revoked by mistake.

Through the real CLI (a subprocess per run, SIGKILL for crashes) against the sandbox CLOB over HTTP,
on the file store, OpenBao and moto where a store is involved. Every test ends with the I3 check:
each key live at the sandbox for the wallet is accounted for in the store, or is one the test made by
hand (``Worker.foreign``) and the worker reported.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from rotator.model import CredentialRef, Key, mask
from rotator.sandbox import Sandbox
from rotator.sandbox.server import L2_UNAUTHORIZED
from rotator.stores.file import FileStore
from tests.harness import Worker, sdk_works, unaccounted_keys
from tests.integration.test_hygiene import hand_made
from tests.integration.test_orphans import BACKENDS, StoreWorker
from tests.servers import Pushgateway

pytestmark = pytest.mark.timeout(240)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def worker(
    request: pytest.FixtureRequest, which: str, tmp: Path, url: str, wallet: Any, **kw: Any
) -> StoreWorker:
    """A worker on backend ``which`` whose published path is its own (OpenBao and moto are shared by
    the session's tests)."""
    section, env = BACKENDS[which](request)
    extra = kw.pop("cred_extra", {})
    tmp.mkdir(parents=True, exist_ok=True)
    return StoreWorker(
        tmp,
        url,
        *wallet,
        store_section=section,
        store_env=env,
        cred_extra={"path": f"{unique('keys')}/mm1", **extra},
        **kw,
    )


def path_of(w: StoreWorker) -> str:
    return str(w.config()["credentials"][0]["path"])


def published_at(w: StoreWorker, path: str) -> Key | None:
    store = w.open_store()
    try:
        return store.read_published(CredentialRef(w.name, path))
    finally:
        store.close()


def events(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def accounted(w: Worker, sb: Sandbox) -> None:
    """I3 for ``w``: nothing live on its wallet that its store does not account for."""
    assert unaccounted_keys(w, sb) == set(), "I3: a live key no state accounts for"


def lose_state(w: StoreWorker, which: str) -> None:
    """The state is gone (deleted by hand, force-deleted on AWS), the published key still there."""
    if which == "file":
        fs: FileStore = w.store()
        with fs._locked():
            contents = fs._read_copy()
            del contents.credentials[w.name]
            fs._write(contents)
        return
    store: Any = w.open_store()
    try:
        if which == "vault":
            path = f"{store._state_prefix}/{w.name}"
            kv = store._session.client.secrets.kv.v2
            store._session.call(
                "delete the state",
                lambda: kv.delete_metadata_and_all_versions(path=path, mount_point=store._mount),
            )
        else:
            store._client.delete_secret(SecretId=store.state_secret(w.ref), ForceDeleteWithoutRecovery=True)
    finally:
        store.close()
    assert w.load(w.name).current is None


# -- item 4: a 401 on the old key right after promotion ------------------------------------------------


def test_a_401_on_the_old_key_after_promotion_keeps_it_retiring_until_derive_confirms(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    """One transient 401 on the check of the old key (the CLOB hiccuped): derive still finds the key,
    so it is not taken as invalidated by the server; it stays retiring and is DELETEd at grace."""
    sb = fresh_sandbox
    w = Worker(tmp_path, sb.url, *wallet, grace="3s")
    w.rotate()
    old = w.published()
    assert old is not None
    # The forced pass probes on /balance-allowance: the new key (verify), the route's proof that it
    # checks L2 auth (a wrong signature, once per process), then the old key.
    hold = sb.hold("GET", "/balance-allowance", "before", skip=2)
    proc = w.start("rotate", "--all", "--force")
    try:
        assert hold.reached.wait(60), "the old key was never probed"
        sb.inject("GET", "/balance-allowance", 401, json.dumps(L2_UNAUTHORIZED))
    finally:
        hold.release()
    code, out, err = w.finish(proc)
    assert code == 0, err[-3000:]
    assert "invalidated-by-server=1" not in out, out
    st = w.state()
    assert [r.key.api_key for r in st.retiring] == [old.api_key]
    assert not [h for h in st.history if h.how == "invalidated-by-server"]
    assert old.api_key in sb.live_keys(w.address)
    [probe_old] = [e for e in events(err) if e.get("step") == "probe-old"]
    assert probe_old["outcome"] == "unknown" and probe_old["key"] == old.masked
    accounted(w, sb)

    time.sleep(3.2)  # grace over: the next pass DELETEs it, as any retiring key
    w.rotate()
    record = {r.api_key: r for r in sb.keys(w.address)}[old.api_key]
    assert record.revoked_by == "delete"
    assert w.state().history[-1].how == "deleted"
    accounted(w, sb)


def test_a_server_that_keeps_one_key_per_wallet_is_still_counted(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: Any, pushgateway: Pushgateway
) -> None:
    """A confirmed invalidation (derive finds no key at the old nonce) is what the counter counts."""
    sb = fresh_sandbox
    sb.configure(single_key=True)
    job = unique("invalidated")
    w = Worker(
        tmp_path, sb.url, *wallet, extra={"metrics": {"port": 0, "pushgateway": pushgateway.url, "job": job}}
    )
    w.rotate()
    old = w.published()
    out = w.rotate("--force").stdout
    assert "invalidated-by-server=1" in out
    assert w.state().history[-1].how == "invalidated-by-server"
    assert old is not None and old.api_key not in sb.live_keys(w.address)
    samples = pushgateway.samples(job)
    [value] = [v for (n, lbls), v in samples.items() if n == "rotator_old_key_invalidated_total"]
    assert value == 1
    accounted(w, sb)


# -- item 5: a key someone else made at a nonce the worker reaches later -----------------------------------


@pytest.mark.parametrize("duplicate", ["error", "same"])
def test_a_hand_made_key_at_the_next_nonce_is_walked_past_and_reported_unmanaged(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: Any, pushgateway: Pushgateway, duplicate: str
) -> None:
    """Create answers 400 at a taken nonce (or, on a server that answers a duplicate create with the
    existing key, that key): the worker publishes its own key at the next free nonce and reports the
    other as unmanaged, in the audit record and in ``rotator_unmanaged_keys`` at once."""
    sb = fresh_sandbox
    sb.configure(duplicate_nonce=duplicate)
    job = unique("walk")
    w = Worker(
        tmp_path,
        sb.url,
        *wallet,
        grace="1h",
        extra={
            "metrics": {"port": 0, "pushgateway": pushgateway.url, "job": job},
            "daemon": {"audit_every": "0"},
        },
    )
    w.rotate()
    assert w.state().next_nonce == 1
    hand = hand_made(sb, w, 1)
    if duplicate == "same":
        # Such a server hands back the key it holds: only the key id's time (UUIDv7) tells that it
        # was made before this rotation. The CLOB's clock moves on 10 minutes past the key's.
        sb.configure(clock_offset=600.0)
    sb.reset_counts()
    proc = w.rotate("--force")
    sb.configure(clock_offset=0.0)  # py-clob-client signs on this host's clock
    auth = {k: n for k, n in sb.request_counts().items() if k[1].startswith("/auth/")}
    if duplicate == "error":  # the walk costs the create's 400 and one derive, nothing more
        assert auth == {
            ("POST", "/auth/api-key", 400): 1,
            ("GET", "/auth/derive-api-key", 200): 1,
            ("POST", "/auth/api-key", 200): 1,
        }, auth
    st = w.state()
    published = w.published()
    assert published is not None and st.current is not None
    assert published.api_key != hand and published.nonce == 2 == st.current.nonce
    assert st.next_nonce == 3 and st.pending is None
    assert sdk_works(sb.url, w.private_key, published)
    assert hand in sb.live_keys(w.address)  # someone's key: left alone
    assert st.audit is not None
    assert [(u.key_prefix, u.nonce) for u in st.audit.unmanaged] == [(mask(hand), 1)]
    [taken] = [e for e in events(proc.stderr) if e.get("outcome") == "nonce-taken"]
    assert taken["nonce"] == 1 and taken["key"] == mask(hand) and hand not in proc.stderr
    [value] = [v for (n, lbls), v in pushgateway.samples(job).items() if n == "rotator_unmanaged_keys"]
    assert value == 1
    shown = json.loads(w.run("status", "--json").stdout)[0]["audit"]
    assert [u["key"] for u in shown["unmanaged"]] == [mask(hand)]
    accounted(w, sb)


@pytest.mark.parametrize("crash", ["before-create", "after-create"])
def test_a_resumed_intent_takes_its_own_key_and_walks_past_one_made_before_it(
    sandbox: Sandbox, tmp_path: Path, wallet: Any, crash: str
) -> None:
    """DESIGN step 4b: a resumed intent derives first, and a key at its nonce made by its own create
    (landed before the crash) is its own. A key made before the intent (its id, a UUIDv7, is older
    than the current key's) cannot be: the intent walks past it and reports it."""
    w = Worker(tmp_path, sandbox.url, *wallet, grace="1h", extra={"daemon": {"audit_every": "0"}})
    hand = hand_made(sandbox, w, 1) if crash == "before-create" else None
    if hand is not None:
        # Key ids within KEY_ID_SLACK of each other prove no order (the CLOB's clocks may disagree
        # that much): on a fast machine the bootstrap's key would come too soon after the hand-made one.
        from rotator.rotation import KEY_ID_SLACK

        time.sleep(KEY_ID_SLACK + 0.5)
    w.rotate()  # nonce 0: made after the key at nonce 1
    phase = "before" if crash == "before-create" else "after"
    hold = sandbox.hold("POST", "/auth/api-key", phase)
    proc = w.start("rotate", "--all", "--force")
    try:
        assert hold.reached.wait(60), "the worker never sent its create"
        w.kill(proc)
    finally:
        hold.release()
    st = w.state()
    assert st.pending is not None and st.pending.nonce == 1 and st.pending.key is None
    made = [r.api_key for r in sandbox.keys(w.address) if r.nonce == 1 and r.api_key != hand]
    assert len(made) == (1 if crash == "after-create" else 0)

    out = w.rotate().stdout
    assert "mm1: rotated" in out, out
    st = w.state()
    assert st.current is not None and st.pending is None
    if hand is None:
        assert st.current.api_key == made[0] and st.current.nonce == 1  # its own, recovered
        assert len(sandbox.keys(w.address)) == 2
    else:
        assert st.current.nonce == 2 and st.current.api_key != hand
        assert st.audit is not None and [(u.key_prefix, u.nonce) for u in st.audit.unmanaged] == [
            (mask(hand), 1)
        ]
        assert hand in sandbox.live_keys(w.address)
    published = w.published()
    assert published is not None and published.api_key == st.current.api_key
    accounted(w, sandbox)


# -- item 6: a lost state -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("which", ["file", "vault", "aws"])
def test_a_lost_state_retires_the_keys_its_store_published_and_reports_the_others(
    request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path, wallet: Any, which: str
) -> None:
    """State lost while a current and a retiring key exist, a hand-made key among their nonces: the
    next pass adopts the published key (derive proves it is this wallet's), retires the key the store
    itself published before (provably ours), and reports the hand-made one unmanaged at once."""
    w = worker(
        request, which, tmp_path, sandbox.url, wallet, grace="1h", extra={"daemon": {"audit_every": "0"}}
    )
    hand = hand_made(sandbox, w, 0)
    w.rotate()  # bootstrap walks past nonce 0 (taken by hand): key at 1
    w.rotate("--force")  # 2 current, 1 retiring
    before = w.load(w.name)
    assert before.current is not None and before.current.nonce == 2
    assert [r.key.nonce for r in before.retiring] == [1]
    lose_state(w, which)

    proc = w.rotate()
    assert "mm1: rotated" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    st = w.load(w.name)
    assert st.current is not None and st.current.nonce == 3
    assert sorted((r.key.nonce, r.reason) for r in st.retiring) == [(1, "recovered"), (2, "rotated")]
    assert st.audit is not None
    assert [(u.key_prefix, u.nonce) for u in st.audit.unmanaged] == [(mask(hand), 0)]
    assert hand in sandbox.live_keys(w.address)
    published = published_at(w, path_of(w))
    assert published is not None and published.api_key == st.current.api_key
    accounted(w, sandbox)


# -- item 7: a credential's path moves ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("which", ["file", "vault", "aws"])
def test_a_moved_path_gets_the_current_key_at_the_next_pass(
    request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path, wallet: Any, which: str
) -> None:
    w = worker(request, which, tmp_path, sandbox.url, wallet, extra={"daemon": {"audit_every": "0"}})
    w.rotate()
    old_path = path_of(w)
    key = published_at(w, old_path)
    assert key is not None
    new_path = f"{unique('moved')}/mm1"
    w.cred_extra["path"] = new_path
    w.write_config()

    proc = w.rotate()
    assert "mm1: nothing-due" in proc.stdout, proc.stdout
    moved = published_at(w, new_path)
    assert moved is not None and moved.api_key == key.api_key  # no rotation: the current key
    assert sdk_works(sandbox.url, w.private_key, moved)
    kept = published_at(w, old_path)
    assert kept is not None and kept.api_key == key.api_key  # the old path is left as it is
    [event] = [e for e in events(proc.stderr) if e.get("outcome") == "republished"]
    assert event["moved_from"] == old_path and event["path"] == new_path
    assert old_path in proc.stderr and "left as it is" in proc.stderr
    # Once published there, a pass has nothing to do.
    again = w.rotate()
    assert not [e for e in events(again.stderr) if e.get("outcome") == "republished"]
    accounted(w, sandbox)


# -- item 8: reap across stores ---------------------------------------------------------------------------


@pytest.mark.slow
def test_reap_never_reaches_below_its_own_start_nonce_where_another_store_keeps_keys(
    request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    """Two teams share a wallet through two stores (OpenBao at start_nonce 10, moto at 50): the second
    team's audit counts the first team's key as unmanaged (it cannot know better), and its reap does
    not revoke it: reap walks nonce 0 and its own nonces only."""
    first = worker(request, "vault", tmp_path / "a", sandbox.url, wallet, cred_extra={"start_nonce": 10})
    second = worker(
        request,
        "aws",
        tmp_path / "b",
        sandbox.url,
        wallet,
        cred_extra={"start_nonce": 50, "reap_unmanaged": True},
    )
    first.rotate()
    theirs = published_at(first, path_of(first))
    assert theirs is not None and theirs.nonce == 10
    second.foreign.add(theirs.api_key)

    proc = second.rotate()
    ours = second.load(second.name).current
    assert ours is not None and ours.nonce == 50
    first.foreign.add(ours.api_key)
    assert "audit mm1: unmanaged=1 (new 1)" in proc.stdout, proc.stdout
    assert "reap after audit: nothing-to-reap reaped=0 unreachable=1" in proc.stderr, proc.stderr[-3000:]
    assert theirs.api_key in sandbox.live_keys(first.address)
    assert sdk_works(sandbox.url, first.private_key, theirs)
    out = second.run("reap", "--credential", "mm1", "--execute").stdout
    assert "mm1: nothing-to-reap reaped=0 unreachable=1" in out, out
    assert theirs.api_key in sandbox.live_keys(first.address)
    accounted(first, sandbox)
    accounted(second, sandbox)
