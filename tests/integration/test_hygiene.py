"""Issue 16: wallet hygiene. Unmanaged keys are audited (gauge, status, one event per new key) and
reaped where derive reaches them; the closed-only flag and the CLOB's rate-limit tier are watched.

Through the real CLI and the real adapter, against the sandbox CLOB over HTTP; hand-made keys are
made with py-clob-client, as a person would make them; reap runs on the file store, OpenBao and moto.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from py_clob_client.client import ClobClient

from rotator.config import load_settings
from rotator.hygiene import audit
from rotator.model import CredentialRef, mask
from rotator.runtime import Runtime
from rotator.sandbox import Sandbox
from tests.harness import OUTPUTS, SECRETS, Worker, unaccounted_keys
from tests.integration.test_orphans import BACKENDS, StoreWorker

pytestmark = pytest.mark.timeout(180)


def hand_made(sb: Sandbox, w: Worker, nonce: int) -> str:
    """A key made by hand with the SDK (``create_api_key``, as ``create_or_derive_api_creds`` does
    at nonce 0): not the worker's. Its secrets go to the leak check; its id to ``w.foreign``."""
    creds = ClobClient(sb.url, chain_id=137, key=w.private_key).create_api_key(nonce)
    SECRETS.update((creds.api_secret, creds.api_passphrase))
    w.foreign.add(creds.api_key)
    return str(creds.api_key)


def runtime(w: Worker) -> Runtime:
    rt = Runtime(load_settings(str(w.config_path), env=w.env()), w.env())
    rt.validate()
    return rt


def run_ok(w: Worker, *args: str) -> str:
    proc = w.run(*args)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def status_audit(w: Worker) -> dict[str, Any]:
    [row] = [r for r in json.loads(run_ok(w, "status", "--json")) if r["credential"] == w.name]
    assert row["audit"] is not None, row
    return row["audit"]  # type: ignore[no-any-return]


def live(sb: Sandbox, w: Worker) -> set[str]:
    return set(sb.live_keys(w.address))


def managed(w: Worker) -> set[str]:
    st = w.state()
    assert st.current is not None
    return {st.current.api_key, *(r.key.api_key for r in st.retiring)}


def setup_wallet(sb: Sandbox, w: Worker) -> tuple[str, str]:
    """A nonce-0 key made by hand before the worker's bootstrap, the worker at nonces 1 (retiring)
    and 2 (current), and a hand-made key at next_nonce + 5. Returns (nonce-0 key, far key)."""
    zero = hand_made(sb, w, 0)
    w.rotate()  # bootstrap walks past nonce 0 (taken by hand) to nonce 1
    w.rotate("--force")  # nonce 2 current, nonce 1 retiring (grace 1h)
    st = w.state()
    assert st.current is not None and st.current.nonce == 2 and st.next_nonce == 3
    far = hand_made(sb, w, st.next_nonce + 5)
    return zero, far


@pytest.mark.slow
def test_audit_then_reap_revokes_the_reachable_unmanaged_key_only(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    sb = fresh_sandbox
    w = Worker(tmp_path, sb.url, *wallet, grace="1h", extra={"daemon": {"audit_every": "1h"}})
    zero, far = setup_wallet(sb, w)
    ours = managed(w)
    assert len(ours) == 2

    # The audit (in-process: its gauge and its events are looked at directly).
    rt = runtime(w)
    try:
        found = audit(rt.rotator, w.ref)
        assert found.outcome == "audited"
        assert sorted(found.unmanaged_ids) == sorted([zero, far])
        assert rt.metrics.registry.get_sample_value("rotator_unmanaged_keys", {"credential": "mm1"}) == 2
        assert rt.metrics.registry.get_sample_value("rotator_account_closed_only", {"credential": "mm1"}) == 0
        # New keys are reported once: a second audit finds the same two, none new.
        assert audit(rt.rotator, w.ref).new == []
    finally:
        rt.close()
    assert found.new == [mask(far)]  # the bootstrap's own audit (first rotate) saw the nonce-0 key
    shown = status_audit(w)
    assert {u["key"] for u in shown["unmanaged"]} == {mask(zero), mask(far)}
    assert shown["closed_only"] is False
    text = run_ok(w, "status")
    assert f"unmanaged key={mask(zero)}" in text and "unmanaged=2" in text
    assert zero not in text and far not in text  # masked ids only

    # Dry run by default: says what it would revoke, revokes nothing.
    sb.reset_counts()
    out = run_ok(w, "reap", "--credential", "mm1")
    assert f"would revoke unmanaged key={mask(zero)} nonce=0" in out
    assert f"unreachable unmanaged key={mask(far)} nonce=?" in out
    assert "would-reap" in out and "--execute" in out
    assert live(sb, w) == ours | {zero, far}
    assert not any(m == "DELETE" for (m, _, _) in sb.request_counts())

    out = run_ok(w, "reap", "--credential", "mm1", "--execute")
    assert f"revoked unmanaged key={mask(zero)} nonce=0" in out
    assert f"unreachable unmanaged key={mask(far)}" in out
    assert "mm1: reaped reaped=1 unreachable=1" in out
    records = {r.api_key: r for r in sb.keys(w.address)}
    assert records[zero].revoked_by == "delete"  # its own DELETE, and confirmed gone
    assert live(sb, w) == ours | {far}  # managed keys untouched, the far key left
    assert managed(w) == ours
    w.foreign.discard(zero)

    # The record shows what is left, with the nonce derive learnt; nothing secret is stored.
    shown = status_audit(w)
    assert [u["key"] for u in shown["unmanaged"]] == [mask(far)]
    raw = json.dumps(w.state().to_dict())
    assert zero not in raw and far not in raw
    assert not any(s in raw for s in sb.issued_secrets() if s not in _held_secrets(w))

    # A second reap: nothing reachable left, nothing revoked.
    sb.reset_counts()
    out = run_ok(w, "reap", "--credential", "mm1", "--execute")
    assert "mm1: nothing-to-reap reaped=0 unreachable=1" in out
    assert not any(m == "DELETE" for (m, _, _) in sb.request_counts())
    assert live(sb, w) == ours | {far}


def _held_secrets(w: Worker) -> set[str]:
    st = w.state()
    keys = [st.current, *(r.key for r in st.retiring)]
    return {v for k in keys if k is not None for v in (k.api_secret.reveal(), k.api_passphrase.reveal())}


@pytest.mark.slow
def test_a_one_shot_run_audits_when_the_last_audit_is_older_than_audit_every(
    sandbox: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet, extra={"daemon": {"audit_every": "1h"}})
    zero = hand_made(sandbox, w, 0)
    out = w.rotate().stdout
    assert f"audit mm1: unmanaged=1 (new 1) closed-only=no keys=[{mask(zero)}]" in out
    assert "audit mm1:" not in w.rotate().stdout  # audited moments ago: not due
    # An hour passes, as far as the record says (no sleeping through it, however slow the machine).
    store = w.store()
    snap = store.load(w.ref)
    assert snap.state.audit is not None
    record = snap.state.audit
    seen = tuple(replace(u, first_seen=u.first_seen - 3601) for u in record.unmanaged)
    older = replace(record, at=record.at - 3601, unmanaged=seen)
    store.save(w.ref, replace(snap.state, audit=older), snap.version)
    assert "audit mm1: unmanaged=1 (new 0)" in w.rotate().stdout
    assert "audit mm1:" not in w.rotate("--dry-run").stdout


def test_reap_unmanaged_reaps_after_the_audit(sandbox: Sandbox, tmp_path: Path, wallet: Any) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet, cred_extra={"reap_unmanaged": True})
    zero = hand_made(sandbox, w, 0)
    proc = w.rotate()
    assert "audit mm1: unmanaged=1 (new 1)" in proc.stdout
    assert "reap after audit: reaped reaped=1 unreachable=0" in proc.stderr
    assert zero not in live(sandbox, w)
    w.foreign.discard(zero)
    assert live(sandbox, w) == managed(w)


def test_a_closed_only_wallet_raises_the_gauge(sandbox: Sandbox, tmp_path: Path, wallet: Any) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    w.rotate()
    sandbox.set_closed_only(w.address)
    try:
        rt = runtime(w)
        try:
            found = audit(rt.rotator, w.ref)
            gauge = rt.metrics.registry.get_sample_value
            assert found.record is not None and found.record.closed_only is True
            assert gauge("rotator_account_closed_only", {"credential": "mm1"}) == 1
            assert gauge("rotator_unmanaged_keys", {"credential": "mm1"}) == 0
        finally:
            rt.close()
        assert status_audit(w)["closed_only"] is True
        assert "closed-only=yes" in run_ok(w, "status")
    finally:
        sandbox.set_closed_only(w.address, False)


def test_rate_limit_tier_and_warnings_are_recorded_and_absent_headers_change_nothing(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    sb = fresh_sandbox
    w = Worker(tmp_path, sb.url, *wallet)
    w.rotate()
    rt = runtime(w)
    try:
        gauge = rt.metrics.registry.get_sample_value
        audit(rt.rotator, w.ref)
        assert not [s for f in rt.metrics.registry.collect() for s in f.samples if "rate_limit" in s.name]
        sb.configure(rate_limit_tier="tier-2", rate_limit_warning=True)
        audit(rt.rotator, w.ref)
        assert gauge("rotator_clob_rate_limit_tier_info", {"tier": "tier-2"}) == 1
        warned = gauge("rotator_clob_rate_limit_warnings_total", {"endpoint": "/auth/api-keys"})
        assert warned == 1
        sb.configure(rate_limit_tier="vip", rate_limit_warning=False)
        audit(rt.rotator, w.ref)
        assert gauge("rotator_clob_rate_limit_tier_info", {"tier": "vip"}) == 1
        assert gauge("rotator_clob_rate_limit_tier_info", {"tier": "tier-2"}) == 0
        assert gauge("rotator_clob_rate_limit_warnings_total", {"endpoint": "/auth/api-keys"}) == 1
    finally:
        rt.close()


@pytest.mark.slow
@pytest.mark.parametrize("which", ["vault", "aws"])
def test_reap_on_vault_and_aws_stores(
    request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path, wallet: Any, which: str
) -> None:
    section, env = BACKENDS[which](request)
    w = StoreWorker(tmp_path, sandbox.url, *wallet, grace="1h", store_section=section, store_env=env)
    zero = hand_made(sandbox, w, 0)
    w.rotate()
    w.rotate("--force")
    st = w.load("mm1")
    assert st.current is not None
    ours = {st.current.api_key, *(r.key.api_key for r in st.retiring)}
    far = hand_made(sandbox, w, st.next_nonce + 5)

    out = run_ok(w, "reap", "--credential", "mm1")
    assert f"would revoke unmanaged key={mask(zero)} nonce=0" in out
    out = run_ok(w, "reap", "--credential", "mm1", "--execute")
    assert "mm1: reaped reaped=1 unreachable=1" in out
    assert live(sandbox, w) == ours | {far}
    w.foreign.discard(zero)
    after = w.load("mm1")
    assert after.audit is not None and [u.key_prefix for u in after.audit.unmanaged] == [mask(far)]
    assert "nothing-to-reap reaped=0" in run_ok(w, "reap", "--credential", "mm1", "--execute")
    # What the store holds for the credential names no reaped key and no secret of one.
    assert zero not in json.dumps(after.to_dict())
    OUTPUTS.append(out)


def test_reap_usage_errors_exit_2_in_one_line(sandbox: Sandbox, tmp_path: Path, wallet: Any) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    for args in (("reap", "--credential", "nope"), ("reap", "--credential", "mm1", "--dry-run", "--execute")):
        proc = w.run(*args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
        assert "Traceback" not in proc.stderr


def test_the_sandbox_closed_only_switch_as_the_sdk_sees_it(
    sandbox: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    """The sandbox's switch, read by py-clob-client's own ``get_closed_only_mode`` (L2-verified)."""
    from py_clob_client.clob_types import ApiCreds
    from py_clob_client.exceptions import PolyApiException

    private_key, address = wallet
    creds = ClobClient(sandbox.url, chain_id=137, key=private_key).create_api_key(0)
    SECRETS.update((creds.api_secret, creds.api_passphrase))
    client = ClobClient(sandbox.url, chain_id=137, key=private_key, creds=creds)
    try:
        assert client.get_closed_only_mode() == {"closed_only": False}
        sandbox.set_closed_only(address)
        assert client.get_closed_only_mode() == {"closed_only": True}
        forged = ApiCreds(creds.api_key, "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=", creds.api_passphrase)
        with pytest.raises(PolyApiException) as info:
            ClobClient(sandbox.url, chain_id=137, key=private_key, creds=forged).get_closed_only_mode()
        assert info.value.status_code == 401
        sandbox.set_closed_only(address, False)
        assert client.get_closed_only_mode() == {"closed_only": False}
    finally:
        sandbox.set_closed_only(address, False)
        client.delete_api_key()


def test_the_daemon_audits_and_reaps_when_reap_unmanaged_says_so(
    sandbox: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    from tests.harness import wait_for

    daemon = {"tick": "1s", "jitter": 0, "audit_every": "0"}
    w = Worker(tmp_path, sandbox.url, *wallet, cred_extra={"reap_unmanaged": True}, extra={"daemon": daemon})
    zero = hand_made(sandbox, w, 0)
    w.rotate()  # bootstrap past nonce 0, audits off
    daemon["audit_every"] = "1s"
    w.write_config()
    proc = w.start("run")
    try:
        wait_for(lambda: zero not in live(sandbox, w), timeout=30)
    finally:
        proc.terminate()
        code, _out, err = w.finish(proc)
    assert code == 0, err[-2000:]
    w.foreign.discard(zero)
    [event] = [json.loads(line) for line in err.splitlines() if '"outcome":"unmanaged-key"' in line]
    assert event["key"] == mask(zero) and zero not in err  # masked ids only
    assert '"outcome":"reaped"' in err
    assert live(sandbox, w) == managed(w)
    st = w.state()
    assert st.audit is not None and st.audit.unmanaged == ()


def test_credentials_sharing_a_wallet_are_not_each_others_unmanaged_keys(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    """One wallet, two credentials at nonces far apart (``start_nonce``, as the README allows): each
    one's keys are managed, by the other. The audit counts none of them; reap never revokes them,
    though the nonce-0 key of the first is below the second's ``next_nonce`` (derive reaches it)."""
    sb = fresh_sandbox
    w = Worker(tmp_path, sb.url, *wallet, cred_extra={"reap_unmanaged": True})
    cfg = w.config()
    first = {**cfg["credentials"][0], "name": "mm0", "path": "polymarket/mm0", "start_nonce": 0}
    cfg["credentials"] = [first, {**cfg["credentials"][0], "start_nonce": 1000}]
    w.config_path.write_text(yaml.safe_dump(cfg))
    proc = w.rotate()
    assert "audit mm0: unmanaged=0" in proc.stdout and "audit mm1: unmanaged=0" in proc.stdout, proc.stdout
    w.rotate("--force")  # each has a retiring key and a current one now
    before = live(sb, w)
    assert len(before) == 4

    out = run_ok(w, "reap", "--credential", "mm1", "--execute")
    assert "mm1: nothing-to-reap" in out, out
    assert live(sb, w) == before
    assert not any(m == "DELETE" for (m, _, _) in sb.request_counts())


def _shared_wallet(w: Worker, mm0: dict[str, Any], mm1: dict[str, Any]) -> None:
    """Two credentials on ``w``'s wallet and file store: mm0 and mm1, with these extra settings."""
    cfg = w.config()
    base = cfg["credentials"][0]
    cfg["credentials"] = [
        {**base, "name": "mm0", "path": "polymarket/mm0", **mm0},
        {**base, "name": "mm1", "path": "polymarket/mm1", **mm1},
    ]
    w.config_path.write_text(yaml.safe_dump(cfg))


def test_reap_on_a_shared_wallet_revokes_the_unmanaged_key_and_never_a_siblings_it_reaches_first(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    """Issue 26: a truly unmanaged key on a shared wallet, so reap runs its walk. The walk reaches the
    sibling's key at nonce 0 before the unmanaged one: only a key the audit found unmanaged is revoked
    (the derived key's id must be one of them), the sibling's is left."""
    sb = fresh_sandbox
    w = Worker(tmp_path, sb.url, *wallet, extra={"daemon": {"audit_every": "0"}})
    _shared_wallet(w, {"start_nonce": 0}, {"start_nonce": 1000})
    stray = hand_made(sb, w, 1000)  # taken by hand: mm1's bootstrap walks past it
    w.rotate()
    st0 = w.store().load(CredentialRef("mm0", "")).state
    assert st0.current is not None and st0.current.nonce == 0
    sibling = st0.current.api_key
    st1 = w.state()
    assert st1.current is not None and st1.current.nonce == 1001

    out = run_ok(w, "reap", "--credential", "mm1", "--execute")
    assert f"mm1: revoked unmanaged key={mask(stray)} nonce=1000" in out, out
    assert "mm1: reaped reaped=1 unreachable=0" in out, out
    assert stray not in live(sb, w)
    w.foreign.discard(stray)
    assert sibling in live(sb, w)
    assert {r.api_key: r for r in sb.keys(w.address)}[sibling].revoked_by is None
    assert live(sb, w) == {sibling, st1.current.api_key}
    assert unaccounted_keys(w, sb) == set()  # I3


def test_reap_waits_while_a_sibling_on_the_wallet_has_a_key_created_and_not_yet_recorded(
    sandbox: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    """Issue 26: mm0 crashed mid-rotation (intent recorded, key created at nonce 0, not recorded). To
    mm1's audit that key is on the wallet and in no state: reap must wait (in-flight), not revoke it;
    mm0's next pass then finds its own key and finishes."""
    w = Worker(tmp_path, sandbox.url, *wallet, extra={"daemon": {"audit_every": "0"}})
    _shared_wallet(w, {"start_nonce": 0}, {"start_nonce": 1000})
    run_ok(w, "rotate", "--credential", "mm1")
    hold = sandbox.hold("POST", "/auth/api-key", "after")
    proc = w.start("rotate", "--credential", "mm0")
    try:
        assert hold.reached.wait(60), "mm0 never created its key"
        w.kill(proc)
    finally:
        hold.release()
    st0 = w.store().load(CredentialRef("mm0", "")).state
    assert st0.pending is not None and st0.pending.nonce == 0 and st0.pending.key is None
    [made] = [r.api_key for r in sandbox.keys(w.address) if r.nonce == 0]

    proc2 = w.run("reap", "--credential", "mm1", "--execute")
    assert "mm1: in-flight" in proc2.stdout, proc2.stdout + proc2.stderr
    assert made in live(sandbox, w)

    assert "mm0: rotated" in run_ok(w, "rotate", "--credential", "mm0")
    st0 = w.store().load(CredentialRef("mm0", "")).state
    assert st0.current is not None and st0.current.api_key == made
    out = run_ok(w, "reap", "--credential", "mm1", "--execute")
    assert "mm1: nothing-to-reap" in out, out
    assert made in live(sandbox, w)
    assert unaccounted_keys(w, sandbox) == set()  # I3
