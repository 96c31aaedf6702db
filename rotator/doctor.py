"""``rotator doctor``: can this pod run the worker against the CLOB it is configured for?

One line per finding, ``ok``, ``warn`` or ``FAIL`` (a blocker: exit 1): the proxy in use, DNS, TLS,
the CLOB's edge, clock skew against ``GET /time``, the rate-limit headers; then per credential its
signer, its state, the probe endpoint, the closed-only flag and how the wallet keeps keys.

``--probe-key-model`` finds out whether the wallet keeps several keys (clob-auth.md 12.1: the docs
say one, the API says several): it creates a second key at a fresh nonce, asks whether the first
still answers (``GET /auth/api-keys`` signed with it), and deletes the second: exactly 3 ``/auth/*``
requests, paced by the worker's budget. The probe key is a rotation's intent until it is gone: its
nonce is recorded (compare-and-set) before it is created, so a crash leaves an intent the next pass
resumes, never an orphan; and it is refused while a rotation is in flight. On a wallet that keeps
one key the create has already killed the published key: the probe key is then published in its
place (a rotation without overlap, see ``rotation.keeps_one_key``) instead of deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from rotator.errors import Blocked, Cancelled, ClobError, RotatorError, Unauthorized
from rotator.model import CredentialRef, CredentialState, Key, Pending, Retiring
from rotator.rotation import Policy, Rotator, _Conflict, _Ctx, key_model

if TYPE_CHECKING:
    from rotator.clob.adapter import Answer, ClobAdapter
    from rotator.config import CredentialSettings, Settings
    from rotator.runtime import Runtime
    from rotator.signers.base import Signer

log = logging.getLogger("rotator.doctor")

#: A server certificate closer than this to its end is worth a warning.
CERT_WARN_DAYS = 14
#: How long name resolution may take before it counts as failed.
DNS_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report. ``level``: ok, warn, or FAIL (a blocker)."""

    level: str
    what: str
    text: str

    def __str__(self) -> str:
        return f"{self.level:<5} {self.what}: {self.text}"


@dataclass
class Answers:
    """Every answer the doctor's adapter got (an observer of it): rate-limit and edge headers."""

    seen: list[Answer] = field(default_factory=list)

    def __call__(self, answer: Answer) -> None:
        self.seen.append(answer)

    def auth_requests(self, since: int = 0) -> int:
        return sum(1 for a in self.seen[since:] if a.path.startswith("/auth/"))


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def network(settings: Settings, adapter: ClobAdapter, answers: Answers, env: dict[str, str]) -> list[Finding]:
    """The findings that do not depend on a credential: proxy, DNS, TLS, edge, clock, rate limits."""
    from rotator.clob.transport import resolve
    from rotator.config import ignored_proxy_env

    out: list[Finding] = []
    host, port = _host_port(settings.clob.host)
    proxy = adapter.proxy
    if proxy is None:
        out.append(Finding("ok", "proxy", "none: the CLOB is reached directly, from this pod's address"))
        target = (host, port, "the CLOB")
    else:
        how = "HTTP CONNECT" if proxy.scheme == "http" else "SOCKS5"
        out.append(Finding("ok", "proxy", f"{proxy.shown} ({how}; the proxy resolves {host})"))
        target = (proxy.host, proxy.port, "the proxy")
    ignored = ignored_proxy_env(settings, env)
    if ignored:
        out.append(Finding("warn", "proxy", ignored))
    started = time.monotonic()
    try:
        addresses = resolve(target[0], target[1], DNS_TIMEOUT)
        took = (time.monotonic() - started) * 1000
        shown = ", ".join(addresses[:3]) + (f" and {len(addresses) - 3} more" if len(addresses) > 3 else "")
        out.append(Finding("ok", "dns", f"{target[0]} ({target[2]}) resolves to {shown} in {took:.0f} ms"))
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        out.append(Finding("FAIL", "dns", f"cannot resolve {target[0]} ({target[2]}): {why}"))
        return out
    try:
        server = adapter.server_time()
    except Blocked as exc:
        out.append(Finding("FAIL", "edge", str(exc)))
        return out
    except ClobError as exc:
        out.append(Finding("FAIL", "clob", str(exc)))
        return out
    skew = server - time.time()
    answer = next((a for a in reversed(answers.seen) if a.path == "/time"), None)
    if answer is not None:
        out.append(_tls(settings, answer))
        server_header = answer.headers.get("server", "not named")
        ray = f", ray {answer.headers['cf-ray']}" if "cf-ray" in answer.headers else ""
        out.append(
            Finding(
                "ok",
                "edge",
                f"GET /time answered {answer.status} in {answer.seconds * 1000:.0f} ms "
                f"(server {server_header}{ray})",
            )
        )
    out.append(_clock(settings, skew))
    return out


def _tls(settings: Settings, answer: Answer) -> Finding:
    if answer.tls is None:
        return Finding(
            "warn", "tls", f"none: clob.host is {settings.clob.host} (plain HTTP: a local sandbox only)"
        )
    parts = [answer.tls, answer.http_version]
    level = "ok"
    if answer.cert_expires is not None:
        days = (answer.cert_expires - time.time()) / 86400
        parts.append(
            f"certificate by {answer.cert_issuer or 'an unnamed issuer'}, expires in {days:.0f} days"
        )
        if days < CERT_WARN_DAYS:
            level = "warn"
    return Finding(level, "tls", ", ".join(parts))


def _clock(settings: Settings, skew: float) -> Finding:
    limit = settings.clob.clock_skew.max
    text = f"this host's clock is {-skew:+.1f}s off the CLOB's (clob.clock_skew.max {limit:g}s)"
    if abs(skew) <= limit:
        return Finding("ok", "clock", text)
    if settings.clob.clock_skew.mode == "refuse":
        return Finding("FAIL", "clock", text + ": mode refuse fails every pass; fix NTP")
    return Finding("warn", "clock", text + ": requests are signed with the CLOB's time (mode correct)")


def rate_limits(answers: Answers) -> Finding:
    """What the CLOB's answers said of rate limits (``Poly-RateLimit-*``), over everything asked."""
    tier = warn = remaining = None
    for a in answers.seen:
        tier = a.headers.get("poly-ratelimit-tier", tier)
        remaining = a.headers.get("poly-ratelimit-remaining", remaining)
        if a.headers.get("poly-ratelimit-warning", "").lower() == "true":
            warn = a.path
    if tier is None and remaining is None and warn is None:
        return Finding(
            "ok",
            "rate limits",
            "no Poly-RateLimit-* headers in the answers (the tiers govern order endpoints)",
        )
    text = f"tier {tier or 'not named'}" + (f", remaining {remaining}" if remaining is not None else "")
    if warn is not None:
        return Finding("warn", "rate limits", f"{text}; Poly-RateLimit-Warning on {warn}: over the limit")
    return Finding("ok", "rate limits", text)


def credential(
    rt: Runtime, cred: CredentialSettings, adapter: ClobAdapter, answers: Answers, probe_model: bool
) -> list[Finding]:
    """The findings of one credential: signer, state, probe endpoint, closed-only, key model."""
    name = cred.name
    out: list[Finding] = []
    try:
        signer = rt.signer(cred)()
    except RotatorError as exc:
        return [Finding("FAIL", name, f"signer: {exc}")]
    out.append(Finding("ok", name, f"signer {signer.address}"))
    try:
        state = rt.rotator.store_call("load", partial(rt.store.load, rt.ref(cred))).state
    except RotatorError as exc:
        return [*out, Finding("FAIL", name, f"state: {exc}")]
    cur = state.current
    if cur is None:
        out.append(Finding("ok", name, "no key yet: the first pass bootstraps one"))
    else:
        age = rt.rotator.clock() - cur.created_at
        out.append(
            Finding("ok", name, f"current key {cur.masked} at nonce {cur.nonce}, {age / 3600:.1f}h old")
        )
    if state.pending is not None:
        out.append(Finding("warn", name, f"a rotation is in flight (nonce {state.pending.nonce})"))
    try:
        out += _reads(name, adapter, rt, cur)
    except Blocked as exc:
        return [*out, Finding("FAIL", name, str(exc))]
    except ClobError as exc:
        out.append(Finding("warn", name, f"could not ask the CLOB: {exc}"))
    policy = rt.policy(cred)
    if probe_model:
        out.append(probe_key_model(rt.rotator, rt.ref(cred), rt.signer(cred), policy, answers))
    else:
        out.append(_known_model(name, state, policy))
    return out


def _reads(name: str, adapter: ClobAdapter, rt: Runtime, cur: Key | None) -> list[Finding]:
    out: list[Finding] = []
    endpoint = rt.settings.clob.probe.endpoint
    status = adapter.probe_endpoint_status(cur)
    if status == 200:
        out.append(Finding("ok", name, f"probe endpoint GET {endpoint} served; it accepts the current key"))
    elif status == 401 and cur is not None:
        out.append(
            Finding("warn", name, f"the CLOB refuses the current key {cur.masked}: the next pass replaces it")
        )
    elif status == 401:
        out.append(Finding("ok", name, f"probe endpoint GET {endpoint} served (401 unsigned)"))
    else:
        out.append(
            Finding(
                "warn",
                name,
                f"probe endpoint GET {endpoint} not served ({status}): key checks fall back to "
                "GET /auth/api-keys, which spends /auth/*; set clob.probe.endpoint",
            )
        )
    if cur is None or status == 401:
        return out
    try:
        closed = adapter.closed_only(cur)
    except Unauthorized:
        return out
    if closed:
        out.append(Finding("warn", name, "the account is closed-only: it may close positions, not open them"))
    else:
        out.append(Finding("ok", name, "the account is not closed-only"))
    return out


def _known_model(name: str, state: CredentialState, policy: Policy) -> Finding:
    model = key_model(state, policy)
    learned = state.key_model
    if policy.key_model != "auto":
        return Finding("ok", name, f"keys per wallet: {model} (configured: key_model)")
    if model == "unknown" or learned is None:
        return Finding(
            "ok",
            name,
            "keys per wallet: not known yet (`rotator doctor --probe-key-model`, or the next rotation)",
        )
    text = f"keys per wallet: {model} (learned by {learned.by})"
    if model == "one":
        text += ": rotations publish the new key at once, without overlap"
    return Finding("ok", name, text)


@dataclass(frozen=True, slots=True)
class _Probe:
    """What the key-model probe found: ``keys`` several or one, and what it did about it."""

    keys: str
    note: str


def probe_key_model(
    rot: Rotator, ref: CredentialRef, signer: Callable[[], Signer], policy: Policy, answers: Answers
) -> Finding:
    """Create a second key at a fresh nonce, ask whether the first still answers, delete the second;
    record the finding in the state's key model. Never raises a RotatorError."""
    name = ref.name
    start = len(answers.seen)
    ctx = _Ctx(ref, CredentialState(), None, signer=signer, timer=rot.timer)
    ctx.policy = policy
    ctx.reason = "probe"
    try:
        found = _probe(rot, ctx, signer, policy)
    except _Conflict:
        return Finding("FAIL", name, "key model: another worker changed the state meanwhile; run it again")
    except Cancelled:
        return Finding("FAIL", name, "key model: interrupted")
    except RotatorError as exc:
        pending = ctx.state.pending
        left = f" (the intent at nonce {pending.nonce} is resumed by the next pass)" if pending else ""
        return Finding("FAIL", name, f"key model: ({ctx.step}) {exc}{left}")
    spent = answers.auth_requests(start)
    return Finding("ok", name, f"keys per wallet: {found.keys} ({spent} /auth/* requests): {found.note}")


def _probe(rot: Rotator, ctx: _Ctx, signer: Callable[[], Signer], policy: Policy) -> _Probe:
    ctx.begin("doctor")
    snap = rot.store_call("load", partial(rot.store.load, ctx.ref))
    ctx.state, ctx.version = snap.state, snap.version
    rot.bind(ctx, policy)
    state = ctx.state
    if state.kind != "trading":
        raise RotatorError(
            f"only trading keys replace each other or not; {ctx.ref.name} holds {state.kind} keys"
        )
    if state.pending is not None:
        raise RotatorError(
            f"refused: a rotation is in flight (nonce {state.pending.nonce}); run it again once it is done"
        )
    first = state.current
    if first is None:
        raise RotatorError("no key yet to compare with: run a first rotation (rotator rotate), then this")
    wallet = signer()
    if first.address.lower() != wallet.address.lower():
        raise RotatorError(f"the current key is wallet {first.address}'s, the signer is {wallet.address}")
    # The probe key is an intent before it exists (I3): a crash from here on is resumed as a rotation.
    nonce = max(state.next_nonce, policy.start_nonce)
    now = rot.clock()
    intent = Pending(nonce, now, rot.owner, now + policy.lease, address=wallet.address)
    t = rot.timer()
    rot._save(ctx, replace(state, pending=intent, next_nonce=nonce + 1))
    rot._event(ctx, "doctor", "recorded", t, nonce=nonce, reason="key-model probe")
    second = rot._obtain(ctx, policy, fresh=True)  # 1: POST /auth/api-key
    # At the nonce the key is at: a nonce someone else's key holds is walked past (issue 22).
    moved = ctx.state.pending
    assert moved is not None
    rot._save(ctx, replace(ctx.state, pending=replace(moved, key=second)))
    # Wait until the second answers (off /auth/*): a key still propagating cannot delete itself.
    rot._verify(ctx, second, policy)
    ctx.begin("doctor")
    t = rot.timer()
    try:
        listed = rot.clob.list_keys(first)  # 2: GET /auth/api-keys, signed with the first key
        keys = "several"
    except Unauthorized:
        listed, keys = [], "one"
    rot._learn_keys(ctx, keys, by="doctor")
    rot._event(ctx, "doctor", "key-model", t, keys=keys, listed=len(listed))
    if keys == "one":
        # The create killed the published key: the probe key takes its place, as a rotation of a
        # wallet that keeps one key does; deleting it would leave the bots no key at all.
        old = rot._promote(ctx, second, policy, emergency=False)
        if old is not None:
            rot._probe_old(ctx, old)
        return _Probe(
            "one",
            f"creating key {second.masked} invalidated {first.masked}, so {second.masked} was published "
            "in its place (bots carry over on their next 401); rotations of this credential now publish "
            "the new key at once, without overlap",
        )
    now = rot.clock()
    entry = Retiring(second, now, now, "probe")
    rot._save(ctx, replace(ctx.state, pending=None, retiring=(*ctx.state.retiring, entry)))
    rot._revoke(ctx, entry)  # 3: DELETE /auth/api-key, signed with the second key, confirmed gone
    if any(r.key.api_key == second.api_key for r in ctx.state.retiring):
        return _Probe(
            "several",
            f"{first.masked} still answered beside {second.masked}; {second.masked} is not confirmed gone "
            "yet: it stays retiring and the next pass revokes it",
        )
    return _Probe(
        "several",
        f"{first.masked} still answered beside {second.masked}, which is deleted again; rotations overlap "
        "old and new keys for grace",
    )


def run(rt: Runtime, creds: list[CredentialSettings], probe_model: bool) -> int:
    """Print every finding; 1 when one of them is a blocker (FAIL)."""
    from rotator.clob.adapter import ClobAdapter, ProbeEndpoint, RetryPolicy, SkewPolicy
    from rotator.clob.budget import SlidingWindowBudget

    c = rt.settings.clob
    answers = Answers()
    # An adapter of its own that hears every answer; the worker's budgets and retries.
    adapter = ClobAdapter(
        c.host,
        c.chain_id,
        timeout=c.timeout,
        retry=RetryPolicy(c.retry.attempts, c.retry.base, c.retry.cap, min(c.retry.deadline, 30.0)),
        skew=SkewPolicy(c.clock_skew.max, c.clock_skew.mode, c.clock_skew.recheck_every),
        auth_budget=SlidingWindowBudget(c.rate_limits.auth.requests, c.rate_limits.auth.per),
        probe=ProbeEndpoint.parse(c.probe.endpoint),
        probe_budget=SlidingWindowBudget(c.probe.requests, c.probe.per),
        metrics=rt.metrics,
        proxy=rt.clob_proxy(),
        observer=answers,
    )
    rt.use_clob(adapter)
    failed = False
    try:
        for finding in network(rt.settings, adapter, answers, dict(rt.env)):
            print(finding, flush=True)
            failed = failed or finding.level == "FAIL"
        if failed:
            return 1
        for cred in creds:
            for finding in credential(rt, cred, adapter, answers, probe_model):
                print(finding, flush=True)
                failed = failed or finding.level == "FAIL"
        print(rate_limits(answers))
    finally:
        adapter.close()
    return 1 if failed else 0
