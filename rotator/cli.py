"""Command line: run, rotate, status, check, revoke, retire, reap, pause, resume, history, rekey,
sandbox, demo.

Exit codes: 0 all good, 1 a rotation (or check) failed, 2 bad config or usage. Errors are one line
on stderr, never a traceback, never a secret. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rotator.config import CredentialSettings, Settings
    from rotator.model import CredentialState, PassResult
    from rotator.rotation import Policy
    from rotator.runtime import Runtime

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: stdout was closed under us (``rotator status | head``): the shell's code for a process killed by SIGPIPE.
EXIT_PIPE = 141


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        from rotator.config import redact

        # argparse quotes what it refused (an unknown command, a bad number): that may be a pasted key.
        self.exit(EXIT_USAGE, f"rotator: {redact(message)}\n")


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def _seconds(high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not a number of seconds") from None
        if not 0 <= value <= high:  # also refuses nan and inf
            raise argparse.ArgumentTypeError(f"must be between 0 and {high:g} seconds")
        return value

    return parse


def _network(text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError("not an address range like 203.0.113.0/24") from None


def _parser() -> argparse.ArgumentParser:
    from rotator import __version__

    p = _Parser(prog="rotator", description="Keeps Polymarket CLOB API credentials fresh.")
    p.add_argument("--version", action="version", version=f"rotator {__version__}", help="print the version")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_config(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument(
            "-c", "--config", required=True, help="YAML config file (ROTATOR_* env vars override it)"
        )
        return sp

    with_config("run", "run the scheduler daemon (serves /metrics, /healthz, /readyz)")
    rot = with_config("rotate", "one pass over credentials (for a CronJob)")
    which = rot.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--credential", metavar="NAME", action="append", help="credential to pass over (repeatable)"
    )
    which.add_argument(
        "--all",
        action="store_true",
        help="every credential in the config, and the retiring keys of those removed from it",
    )
    rot.add_argument("--force", action="store_true", help="rotate even if the key is not due")
    rot.add_argument("--dry-run", action="store_true", help="say what would happen; change nothing")
    st = with_config("status", "show each credential's keys and deadlines (no secrets)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    ck = with_config("check", "check config, store access, signers and the CLOB clock")
    ck.add_argument(
        "--offline",
        action="store_true",
        help="only the config and ROTATOR_* overrides: no store, CLOB or signer (for CI, helm install)",
    )
    dr = with_config(
        "doctor",
        "preflight against the configured CLOB: proxy, DNS, TLS, edge, clock, probe endpoint, "
        "closed-only, rate limits, keys per wallet; one line per finding, exit 1 on a blocker",
    )
    dr.add_argument("--credential", metavar="NAME", action="append", help="only this credential (repeatable)")
    dr.add_argument(
        "--probe-key-model",
        action="store_true",
        help="find out whether the wallet keeps several keys: create a second key, see whether the "
        "first still answers, delete the second (3 /auth/* requests; on a wallet that keeps one key "
        "the second is published instead, as a rotation)",
    )
    rv = with_config("revoke", "rotate now and revoke the old keys without grace")
    rv.add_argument("--credential", metavar="NAME", required=True, help="the credential to rotate and revoke")
    rv.add_argument(
        "--emergency", action="store_true", required=True, help="required: consumers lose the old key now"
    )
    with_config(
        "rekey",
        "re-encrypt the file store under store.file.key_env, reading it with the key in "
        "store.file.previous_key_env (changing ROTATOR_FILE_KEY; no signer needed)",
    )
    ret = with_config(
        "retire",
        "revoke every key of a credential removed from the config (current, retiring, pending), "
        "then archive its state",
    )
    ret.add_argument(
        "--credential", metavar="NAME", required=True, help="the credential whose keys to revoke"
    )
    ret.add_argument(
        "--force",
        action="store_true",
        help="also when the config still has it: its bots lose their key now, and a running worker "
        "with this config issues it a new one",
    )
    ret.add_argument("--dry-run", action="store_true", help="list the keys it would revoke; change nothing")
    rp = with_config(
        "reap",
        "find the keys the credential's wallet holds that rotator does not manage, and revoke those "
        "derive reaches (nonce 0 and unused nonces below next_nonce); a dry run unless --execute",
    )
    rp.add_argument("--credential", metavar="NAME", required=True, help="the credential whose wallet to reap")
    act = rp.add_mutually_exclusive_group()
    act.add_argument(
        "--dry-run", action="store_true", help="the default: say what would be revoked; revoke nothing"
    )
    act.add_argument("--execute", action="store_true", help="revoke the reachable unmanaged keys")
    _day2_commands(with_config)
    sb = sub.add_parser(
        "sandbox", help="run the local CLOB auth sandbox", description="run the local CLOB auth sandbox"
    )
    sb.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sb.add_argument(
        "--port",
        type=_int_in(0, 65535),
        default=8080,
        help="port to listen on, 0 for any free one (default 8080)",
    )
    sb.add_argument(
        "--chain-id",
        type=_int_in(1, 2**53 - 1),
        default=137,
        help="chain id L1 signatures must name (default 137, Polygon)",
    )
    sb.add_argument(
        "--single-key", action="store_true", help="creating a key invalidates the wallet's others"
    )
    sb.add_argument(
        "--propagation-delay",
        type=_seconds(3600),
        default=0.0,
        metavar="S",
        help="new keys answer 401 for S s",
    )
    sb.add_argument(
        "--auth-limit",
        type=_int_in(0, 1_000_000),
        default=100,
        metavar="N",
        help="/auth/* requests per 10 s (0: off)",
    )
    sb.add_argument(
        "--block-clients",
        action="append",
        default=[],
        metavar="CIDR",
        type=_network,
        help="the edge refuses clients in this range with a Cloudflare 403 page (repeatable)",
    )
    sb.add_argument(
        "--edge-page",
        choices=("block", "challenge"),
        default="block",
        help="the page blocked clients get: block (Attention Required) or challenge (Just a moment)",
    )
    sb.add_argument(
        "--key-ttl",
        type=_seconds(366 * 86400),
        default=None,
        metavar="S",
        help="keys stop authenticating S s after their creation",
    )
    sb.add_argument(
        "--revive",
        action="store_true",
        help="a lapsed key (--key-ttl) comes back, identical, on a create at its nonce",
    )
    dm = sub.add_parser(
        "demo", help="the whole job on embedded defaults, in seconds", description="run the demo"
    )
    dm.add_argument(
        "--rotations", type=_int_in(1, 100), default=3, help="rotations to run, 1 to 100 (default 3)"
    )
    return p


def _day2_commands(with_config: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Issue 23: pause, resume and history (no signer needed: they read or write the state only)."""

    def duration(text: str) -> float:
        from rotator.config import parse_duration  # only when --for is given: `--version` stays light

        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if seconds <= 0:
            raise argparse.ArgumentTypeError("must be more than 0")
        return seconds

    pa = with_config(
        "pause",
        "hold a credential's scheduled rotations (recorded in the store: every replica and CronJob run "
        "honours it); retiring keys are still revoked, a rejected key or an emergency still rotates",
    )
    pa.add_argument("--credential", metavar="NAME", required=True, help="the credential to pause")
    pa.add_argument(
        "--for", dest="duration", metavar="DURATION", type=duration, help="end by itself after this (2h, 1d)"
    )
    pa.add_argument("--reason", metavar="TEXT", help="why, for whoever reads status (200 characters at most)")
    pa.add_argument("--by", metavar="WHO", help="who pauses (default: $USER@host)")
    re_ = with_config("resume", "end a credential's pause: its rotations follow its schedule again")
    re_.add_argument("--credential", metavar="NAME", required=True, help="the credential to resume")
    hi = with_config(
        "history",
        "the credential's keys: nonce, masked id, issued, published, retired and revoked times, how, "
        "the reason and trigger of each rotation, and the worker that made it",
    )
    hi.add_argument("--credential", metavar="NAME", required=True, help="the credential (removed ones too)")
    hi.add_argument("--json", action="store_true", help="machine-readable output")
    hi.add_argument(
        "--since",
        metavar="WHEN",
        help="only keys with an event since then: a duration back from now (7d) or a date (2026-12-01, "
        "2026-12-01T03:00:00Z)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from rotator.errors import ConfigError, RotatorError

    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"rotator: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RotatorError as exc:
        print(f"rotator: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ModuleNotFoundError as exc:
        # A worker command on a bot's install (no `worker` extra), or a store's client missing.
        from rotator.extras import missing_module

        line = missing_module(exc)
        if line is None:
            raise
        print(f"rotator: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read our output went away: say nothing more (a second write would fail too, and
        # Python's exit-time flush would print "Exception ignored").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_PIPE


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "sandbox":
        return _sandbox(args)
    if args.command == "demo":
        from rotator.demo import run_demo

        return run_demo(rotations=args.rotations)
    if args.command == "rekey":
        return _rekey(args.config)
    if args.command == "check" and args.offline:
        return _check_offline(args.config)
    # A credential's signer is checked when its pass needs it: one that cannot be used fails alone.
    rt = _runtime(args.config)
    try:
        if args.command == "rotate":
            return _rotate(rt, args)
        if args.command == "run":
            from rotator.config import ignored_proxy_env
            from rotator.scheduler import run_daemon

            ignored = ignored_proxy_env(rt.settings, rt.env)
            if ignored:  # once, at start-up: an operator who set them expects them to count
                import logging

                logging.getLogger("rotator.config").warning("%s", ignored)
            return run_daemon(rt)
        if args.command == "status":
            return _status(rt, args.json)
        if args.command == "check":
            return _check(rt)
        if args.command == "doctor":
            from rotator.doctor import run

            names = args.credential or [c.name for c in rt.settings.credentials]
            return run(rt, [rt.settings.credential(n) for n in dict.fromkeys(names)], args.probe_key_model)
        if args.command == "retire":
            return _retire(rt, args)
        if args.command == "reap":
            return _reap(rt, args)
        if args.command == "revoke":
            _refuse_orphan(rt, args.credential, "revoke --emergency")
            cred = rt.settings.credential(args.credential)
            return _report(rt, [_emergency(rt, cred)])
        if args.command in ("pause", "resume"):
            return _pause(rt, args)
        if args.command == "history":
            return _history(rt, args)
    finally:
        rt.close()
    raise AssertionError(args.command)


def _runtime(path: str) -> Runtime:
    from rotator.config import load_settings
    from rotator.logs import setup_logging
    from rotator.runtime import Runtime

    env = dict(os.environ)
    settings = load_settings(path, env=env)
    setup_logging(settings.log.format, settings.log.level)
    import logging

    for cred in settings.credentials:
        if _long_grace(cred):
            logging.getLogger("rotator.config").warning("%s", _long_grace(cred))
    rt = Runtime(settings, env)
    rt.validate()
    return rt


def _pass(rt: Runtime, cred: CredentialSettings, **kw: bool) -> PassResult:
    # A credential whose signer cannot be used fails alone (a dry run says would-fail).
    return rt.rotator.run_pass(rt.ref(cred), rt.signer(cred), rt.policy(cred), problem=rt.problem(cred), **kw)


#: How often ``revoke --emergency`` runs again when its pass lost the race for the state.
EMERGENCY_TRIES = 3


def _emergency(rt: Runtime, cred: CredentialSettings) -> PassResult:
    """``revoke --emergency``: a pass that lost the race for the state (a daemon's pass wrote it
    meanwhile: both revoking the same retiring key, say) is run again on what that pass left, so the
    operator's "revoke now" does not end as "someone else was quicker". Whatever the lost pass did at
    the CLOB is found again by the next (a key deleted but not recorded is confirmed gone)."""
    result = _pass(rt, cred, force=True, emergency=True)
    for _ in range(EMERGENCY_TRIES - 1):
        if result.outcome != "lost-race":
            break
        import logging

        logging.getLogger("rotator").info("%s: emergency pass lost the race for the state; again", cred.name)
        result = _pass(rt, cred, force=True, emergency=True)
    return result


def _passes(
    rt: Runtime,
    creds: list[CredentialSettings],
    finished: Callable[[PassResult], None] = lambda _: None,
    tick: Callable[[], None] = lambda: None,
    **kw: bool,
) -> list[PassResult]:
    """One pass per credential, several at once: a slow or failing credential delays no other.
    The shared request budgets in the CLOB adapter pace the whole fleet. ``finished`` hears of
    each result as its pass ends (in finish order), ``tick`` about once a second meanwhile; the
    results come back in ``creds``' order. A read-only or builder credential's pass starts once its
    ``via`` credential's pass in the same batch has ended: its calls are signed with the key that
    pass may have just issued or rotated (a first run bootstraps both)."""
    workers = min(rt.settings.clob.concurrency, len(creds))
    names = {c.name for c in creds}

    def after(c: CredentialSettings) -> str | None:
        return c.via if c.via in names else None

    if workers <= 1:
        by_name: dict[str, PassResult] = {}
        for c in sorted(creds, key=lambda c: after(c) is not None):  # stable: vias first
            by_name[c.name] = _pass(rt, c, **kw)
            finished(by_name[c.name])
        return [by_name[c.name] for c in creds]
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    rt.store  # noqa: B018 - build the shared store once, before the threads race to
    with ThreadPoolExecutor(workers, thread_name_prefix="pass") as pool:
        futures: dict[str, Future[PassResult]] = {}
        waiting = [c for c in creds if after(c) is not None]
        for c in creds:
            if after(c) is None:
                futures[c.name] = pool.submit(_pass, rt, c, **kw)
        running = set(futures.values())
        while running:
            done, running = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                finished(future.result())
            for c in [c for c in waiting if futures[str(after(c))].done()]:
                waiting.remove(c)
                futures[c.name] = pool.submit(_pass, rt, c, **kw)
                running.add(futures[c.name])
            tick()
        return [futures[c.name].result() for c in creds]


def _rotate(rt: Runtime, args: argparse.Namespace) -> int:
    from rotator.errors import RotatorError
    from rotator.orphans import orphan_names, serve

    configured = {c.name for c in rt.settings.credentials}
    unlisted: str | None = None
    if args.all:
        creds = list(rt.settings.credentials)
        try:  # the states of credentials removed from the config may hold keys to revoke
            orphans = orphan_names(rt.rotator, configured)
        except RotatorError as exc:
            orphans, unlisted = [], str(exc)
    else:
        creds = [rt.settings.credential(n) for n in args.credential if n in configured]
        orphans = [n for n in dict.fromkeys(args.credential) if n not in configured]
        stored = set(rt.store.names()) if orphans else set()
        for name in orphans:
            if name not in stored:
                rt.settings.credential(name)  # raises "no such credential in the config"
    if not creds and not orphans and unlisted is None:
        raise _config_error("credentials: the config lists none")
    from rotator.progress import FleetProgress

    # Each credential's line as its pass ends, not all at the end; on a terminal, progress too.
    progress = FleetProgress(len(creds) + len(orphans), label="rotate --all" if args.all else "rotate")
    orphaned = frozenset(orphans)

    def finished(r: PassResult) -> None:
        progress.finished(_result_line(r, orphaned), r.ok)

    with progress.logs_above():
        results = _passes(rt, creds, finished, progress.tick, force=args.force, dry_run=args.dry_run)
        for name in orphans:
            results.append(serve(rt.rotator, name, dry_run=args.dry_run))
            finished(results[-1])
    audits = [] if args.dry_run else _audits(rt, creds, results)
    if rt.settings.metrics.pushgateway:  # before raising: a closed stdout must not lose the metrics
        from rotator.exporter import push_metrics

        push_metrics(rt, [c.name for c in creds] + orphans)
    progress.close()  # raises BrokenPipeError when the reader went away
    _report_audits(audits)
    code = EXIT_FAILED if any(not r.ok for r in results) else EXIT_OK
    if unlisted is not None:
        print(f"rotator: cannot list the states of credentials removed from the config: {unlisted}")
        code = EXIT_FAILED
    return code


def _config_error(msg: str) -> Exception:
    from rotator.errors import ConfigError

    return ConfigError(msg)


def _report(rt: Runtime, results: list[PassResult], orphaned: frozenset[str] = frozenset()) -> int:
    for r in results:
        print(_result_line(r, orphaned))
    return EXIT_FAILED if any(not r.ok for r in results) else EXIT_OK


def _result_line(r: PassResult, orphaned: frozenset[str] = frozenset()) -> str:
    # A dry run says what it would do, why and at which nonce; the plan starts with its outcome.
    line = f"{r.credential}: {'; '.join(r.plan) if r.plan else r.outcome}"
    if r.credential in orphaned:
        line += " (orphaned state: not in the config)"
    if r.key_prefix:
        # After a revocation alone, the key shown is not the one revoked: say which is which.
        line += f" {'current' if r.outcome == 'revoked' else 'key'}={r.key_prefix}"
    if r.paused and not r.plan:
        line += f" (paused: rotated anyway, {r.reason})" if r.rotated else " (paused)"
    if r.revoked:
        line += (
            f" revoked={r.revoked} ({', '.join(r.revoked_keys)})"
            if r.revoked_keys
            else f" revoked={r.revoked}"
        )
    if r.invalidated:
        line += f" invalidated-by-server={r.invalidated}"
    if r.error:
        line += f" error=({r.failed_step}) {r.error}"
    return line


def _status(rt: Runtime, as_json: bool) -> int:
    import json

    from rotator.errors import RotatorError
    from rotator.model import CredentialState
    from rotator.status import iso, render

    now, clock, clock_text = _status_clock(rt)
    rows: list[dict[str, Any]] = []
    code = EXIT_OK
    for cred in rt.settings.credentials:
        # One unreadable state (garbage, a newer rotator's) is that row's problem, not the table's.
        # The daemon's view of due-ness: a key is due at rotate_every (a CronJob run may take it
        # a few minutes early, within its start-up jitter).
        policy = rt.policy(cred, probe_every=0.0)
        problem = rt.problem(cred)
        try:
            st = rt.store.load(rt.ref(cred)).state
        except RotatorError as exc:
            row = _state_row(cred.name, CredentialState(), now, policy)
            row |= {"state_error": str(exc), "consumers": "unknown: the state is unreadable"}
            rows.append({**row, "path": cred.path, "ready": False, "problem": problem or f"state: {exc}"})
            code = EXIT_FAILED
            continue
        row = _state_row(cred.name, st, now, policy)
        consumers = _consumers(rt, cred, st, now)
        rows.append(
            {**row, "path": cred.path, "consumers": consumers, "ready": problem is None, "problem": problem}
        )
    try:
        rows += _orphan_rows(rt, now)
    except RotatorError as exc:
        print(
            f"rotator: cannot list the states of credentials removed from the config: {exc}", file=sys.stderr
        )
        code = EXIT_FAILED
    if as_json:
        # Every row says when and on whose clock its relative fields (ages, "live") were computed.
        stamp = {"as_of": round(now, 3), "as_of_iso": iso(now), "clock": clock}
        print(json.dumps([{**row, **stamp} for row in rows], indent=2))
        return code
    print("\n".join(render(rows, now, clock_text)))
    return code


def _status_clock(rt: Runtime) -> tuple[float, str, str]:
    """Now on the CLOB's clock, which every deadline in the state was computed on (DESIGN.md "Time"),
    as ``(now, "clob" or "local", how the table says it)``. One quick ask: an operator runs status
    when things are wrong, and a CLOB that does not answer must not hold it up; then this host's
    clock, said so."""
    import time

    from rotator.clob.adapter import ClobAdapter, RetryPolicy
    from rotator.clob.clock import ClobClock
    from rotator.errors import RotatorError

    c = rt.settings.clob
    timeout = min(c.timeout, 5.0)
    adapter = ClobAdapter(
        c.host,
        c.chain_id,
        timeout=timeout,
        retry=RetryPolicy(attempts=1, deadline=timeout),
        proxy=rt.clob_proxy(),
    )
    clock = ClobClock(adapter.server_time)
    try:
        clock.refresh()
        now = clock()
    except RotatorError as exc:
        print(
            f"rotator: status: CLOB time unavailable, times are on this host's clock: {exc}", file=sys.stderr
        )
        return time.time(), "local", "this host's clock (the CLOB's did not answer)"
    finally:
        adapter.close()
    return now, "clob", f"the CLOB's clock (this host's is {time.time() - now:+.1f}s off)"


def _audit_data(st: CredentialState) -> dict[str, Any] | None:
    """``status`` data of the last wallet audit (issue 16): masked ids and nonces, never a secret."""
    record = st.audit
    if record is None:
        return None
    from rotator.status import iso

    return {
        "at": record.at,
        "at_iso": iso(record.at),
        "closed_only": record.closed_only,
        "unmanaged": [
            {
                "key": u.key_prefix,
                "kind": u.kind,
                "nonce": u.nonce,
                "first_seen": u.first_seen,
                "first_seen_iso": iso(u.first_seen),
            }
            for u in record.unmanaged
        ],
    }


def _audits(rt: Runtime, creds: list[CredentialSettings], results: list[PassResult]) -> list[Any]:
    """One-shot runs (issue 16): audit each credential whose last audit is older than
    ``daemon.audit_every``, after its pass; reap after it when ``reap_unmanaged`` says so. The last
    audit is the one the state held as the pass left it (no second read of every state)."""
    from rotator.clob.budget import one_shot_audits
    from rotator.hygiene import audit_due
    from rotator.model import AuditRecord

    every = rt.settings.daemon.audit_every
    if every <= 0:
        return []
    passes = {r.credential: r for r in results}
    now = rt.rotator.clock()
    due = []
    for cred in creds:
        if cred.kind != "trading":
            continue  # its wallet is audited through its via: a slot here would audit nothing
        result = passes.get(cred.name)
        if result is None or result.failed_step == "read":
            continue  # the pass has already said why the store cannot be read
        last = result.audited_at
        if audit_due(None if last is None else AuditRecord(last), now, every):
            due.append((float("-inf") if last is None else last, cred))
    # The stalest first, and no more than a quarter of one window of the worker's /auth/* budget
    # per run: a CronJob over a large fleet audits it over several runs, not in one burst.
    chosen = [cred for _, cred in sorted(due, key=lambda d: d[0])[: one_shot_audits(rt.settings)]]
    from rotator.hygiene import audit, reap_after

    def one(cred: CredentialSettings) -> Any:
        result = audit(rt.rotator, rt.ref(cred))
        if cred.reap_unmanaged:
            reap_after(rt.rotator, rt.ref(cred), rt.signer(cred), result, start_nonce=cred.start_nonce)
        return result

    workers = min(rt.settings.clob.concurrency, len(chosen))
    if workers <= 1:
        return [one(c) for c in chosen]
    from concurrent.futures import ThreadPoolExecutor

    # Several at once, as the passes run: the shared budget paces them, no RTT adds up.
    with ThreadPoolExecutor(workers, thread_name_prefix="audit") as pool:
        return list(pool.map(one, chosen))


def _report_audits(audits: list[Any]) -> None:
    """One line per audit a one-shot run made: ``audit mm1: unmanaged=2 (new 2) closed-only=no``."""
    for a in audits:
        if a.record is None:
            said = "note" if a.outcome == "covered" else "error"
            print(f"audit {a.credential}: {a.outcome}" + (f" {said}={a.error}" if a.error else ""))
            continue
        closed = {True: "yes", False: "no", None: "unknown"}[a.record.closed_only]
        keys = " ".join(u.key_prefix for u in a.record.unmanaged)
        print(
            f"audit {a.credential}: unmanaged={len(a.record.unmanaged)} (new {len(a.new)}) "
            f"closed-only={closed}" + (f" keys=[{keys}]" if keys else "")
        )


def _reap(rt: Runtime, args: argparse.Namespace) -> int:
    """``rotator reap``: a dry run unless ``--execute`` (DESIGN: revoking is never the default)."""
    from rotator.hygiene import reap

    _refuse_orphan(rt, args.credential, "reap")
    cred = rt.settings.credential(args.credential)
    if cred.kind != "trading":
        raise _config_error(
            f"--credential {cred.name}: a {cred.kind} credential's wallet is audited and reaped through "
            f"its trading credential: reap --credential {cred.via}"
        )
    result = reap(
        rt.rotator, rt.ref(cred), rt.signer(cred), execute=args.execute, start_nonce=cred.start_nonce
    )
    name = cred.name
    verb = "revoked" if args.execute else "would revoke"
    for f in result.reaped:
        print(f"{name}: {verb} unmanaged {f}")
    for f in result.left:
        print(f"{name}: not confirmed gone {f} (run reap again)")
    for f in result.unreachable:
        how = (
            "a builder key is revoked only with its own secret: by whoever made it, or in the web UI"
            if f.kind == "builder"
            else "at no nonce derive reaches: revoke it with its own creds"
        )
        print(f"{name}: unreachable unmanaged {f} ({how})")
    line = f"{name}: {result.outcome} reaped={len(result.reaped) if args.execute else 0}"
    line += f" unreachable={len(result.unreachable)}"
    if not args.execute and result.reaped:
        line += " (dry run: --execute revokes them)"
    if result.error:
        line += f" error={result.error}"
    print(line)
    return EXIT_OK if result.ok else EXIT_FAILED


def _pause(rt: Runtime, args: argparse.Namespace) -> int:
    """``rotator pause`` and ``rotator resume``: a record in the state every worker reads."""
    from rotator.pause import pause, resume
    from rotator.status import _short_iso, duration

    if args.credential not in {c.name for c in rt.settings.credentials}:
        from rotator.stores.base import is_credential_name

        if is_credential_name(args.credential) and args.credential in rt.store.names():
            raise _config_error(
                f"--credential {args.credential}: not in the config: a removed credential is not rotated, "
                "so there is nothing to pause (its retiring keys are still revoked; `rotator retire` ends it)"
            )
    cred = rt.settings.credential(args.credential)
    now, _clock, _text = _status_clock(rt)
    by = _operator_text(args.by, "--by") if getattr(args, "by", None) else _operator(rt)
    if args.command == "resume":
        ended = resume(rt.rotator, rt.ref(cred), now=now, by=by)
        if ended is None:
            print(f"{cred.name}: not paused; nothing to do")
        else:
            print(f"{cred.name}: resumed by {by} (paused by {ended.by} {duration(now - ended.at)} ago)")
        return EXIT_OK
    until = now + args.duration if args.duration else None
    reason = _operator_text(args.reason, "--reason") if args.reason else None
    written, before = pause(rt.rotator, rt.ref(cred), now=now, by=by, until=until, reason=reason)
    ends = "until resumed" if until is None else f"until {_short_iso(until)} (in {duration(until - now)})"
    line = f"{cred.name}: paused {ends} by {written.by}" + (f": {reason}" if reason else "")
    if before is not None:
        line += f" (replaces the pause by {before.by})"
    print(line)
    print(
        f"{cred.name}: no scheduled rotation meanwhile; retiring keys are still revoked on time, and a key "
        "the CLOB rejects or `revoke --emergency` still rotates"
    )
    return EXIT_OK


def _operator(rt: Runtime) -> str:
    """Who runs this command, as the pause records it: ``$USER@host`` (in a pod, its name)."""
    import socket

    user = rt.env.get("USER") or rt.env.get("LOGNAME") or "unknown"
    return _operator_text(f"{user}@{socket.gethostname()}", "$USER")


def _operator_text(text: str, what: str) -> str:
    """A short, printable line for the state and every status table; never key material."""
    from rotator.config import _SECRETISH

    if len(text) > 200 or not text.isprintable() or not text.strip():
        raise _config_error(f"{what}: one printable line of at most 200 characters")
    if _SECRETISH.search(text):
        raise _config_error(f"{what}: looks like key material; not stored")
    return text.strip()


def _history(rt: Runtime, args: argparse.Namespace) -> int:
    """``rotator history``: every key of a credential (removed ones too), from its state."""
    import json

    from rotator.history import parse_since, render, rows, since
    from rotator.orphans import orphan_ref
    from rotator.stores.base import is_credential_name

    name = args.credential
    configured = {c.name: c for c in rt.settings.credentials}
    if name in configured:
        ref = rt.ref(configured[name])
    elif is_credential_name(name):
        ref = orphan_ref(name)
    else:
        raise _config_error("--credential: not a credential name (letters, digits, _ . -; 63 at most)")
    now, clock, clock_text = _status_clock(rt)
    snap = rt.store.load(ref)
    if snap.version is None and name not in configured:
        rt.settings.credential(name)  # raises "no such credential in the config"
    found = rows(snap.state)
    if args.since:
        try:
            found = since(found, parse_since(args.since, now))
        except ValueError as exc:
            raise _config_error(f"--since: {exc}") from None
    if args.json:
        stamp = {"credential": ref.name, "as_of": round(now, 3), "clock": clock}
        print(json.dumps([{**row, **stamp} for row in found], indent=2))
        return EXIT_OK
    print("\n".join(render(ref.name, found, clock_text)))
    return EXIT_OK


def _consumers(rt: Runtime, cred: CredentialSettings, st: CredentialState, now: float) -> list[Any] | str:
    """Who acknowledged which key (consumer-confirmed revocation), or why that cannot be read."""
    from rotator.errors import RotatorError

    try:
        acks = rt.store.acks(rt.ref(cred))
    except RotatorError as exc:
        return f"unreadable ({exc})"
    from rotator.model import ack_prefix, masked_prefix
    from rotator.status import iso

    holds = {ack_prefix(r.key.api_key): ("retiring", r.key.masked) for r in st.retiring}
    if st.current is not None:
        holds[ack_prefix(st.current.api_key)] = ("current", st.current.masked)
    return [
        {
            "consumer": a.consumer_id,
            # The one masked form (the worker's logs show the same); for a key the state no longer
            # holds, the part of it the acknowledgement carries.
            "key": holds.get(a.key_prefix, ("old", masked_prefix(a.key_prefix)))[1],
            "ack_prefix": a.key_prefix,
            "holds": holds.get(a.key_prefix, ("old", ""))[0],
            "seen_seconds_ago": round(now - a.at, 1),
            "seen_at": a.at,
            "seen_at_iso": iso(a.at),
            "live": now - a.at <= cred.consumer_ttl,
        }
        for a in sorted(acks, key=lambda a: a.consumer_id)
    ]


def _state_row(name: str, st: CredentialState, now: float, policy: Policy | None) -> dict[str, Any]:
    """What ``status`` shows of one state: masked key ids, nonces, deadlines; never a secret.
    Epoch seconds (the JSON contract) with their ISO 8601 form beside them in ``*_iso``.
    ``policy``: None for a credential the config no longer names."""
    from rotator.rotation import next_rotation
    from rotator.status import iso

    cur = st.current
    pend = st.pending
    nxt = next_rotation(st, now, policy) if policy is not None else None
    nxt = round(nxt, 1) if nxt is not None else None
    pause = st.paused(now)
    schedule = policy.schedule if policy is not None else None
    window = schedule.next_window(now) if schedule is not None else None
    return {
        "credential": name,
        "orphaned": policy is None,
        "kind": policy.kind if policy is not None else st.kind,
        "via": policy.via if policy is not None else st.via,
        "key": cur.masked if cur else None,
        "nonce": cur.nonce if cur else None,
        "address": cur.address if cur else None,
        "age_seconds": round(now - cur.created_at, 1) if cur else None,
        "created_at": cur.created_at if cur else None,
        "created_at_iso": iso(cur.created_at) if cur else None,
        "next_rotation": nxt,
        "next_rotation_iso": iso(nxt),
        "schedule": {
            "cron": schedule.cron,
            "timezone": schedule.timezone,
            "window_seconds": schedule.window,
            "max_age_seconds": policy.hard_max_age if policy is not None else None,
            "next_window": window[0] if window else None,
            "next_window_iso": iso(window[0]) if window else None,
            "window_closes": window[1] if window and window[1] != float("inf") else None,
            "window_closes_iso": iso(window[1]) if window and window[1] != float("inf") else None,
        }
        if schedule is not None
        else None,
        "paused": {
            "by": pause.by,
            "at": pause.at,
            "at_iso": iso(pause.at),
            "until": pause.until,
            "until_iso": iso(pause.until),
            "reason": pause.reason,
        }
        if pause is not None
        else None,
        "pending": {
            "nonce": pend.nonce,
            "owner": pend.owner,
            "key": pend.key.masked if pend.key else None,
            "started_at": pend.started_at,
            "started_at_iso": iso(pend.started_at),
            "lease_until": pend.lease_until,
            "lease_until_iso": iso(pend.lease_until),
            "reason": pend.reason,
        }
        if pend
        else None,
        "retiring": [
            {
                "key": r.key.masked,
                "nonce": r.key.nonce,
                "revoke_after": r.revoke_after,
                "revoke_after_iso": iso(r.revoke_after),
                "reason": r.reason,
            }
            for r in st.retiring
        ],
        "rotations": st.rotations,
        "history": [{**h.to_dict(), "revoked_at_iso": iso(h.revoked_at)} for h in st.history],
        "audit": _audit_data(st),
        "key_model": _key_model_data(st),
    }


def _key_model_data(st: CredentialState) -> dict[str, Any] | None:
    """``status`` data of what was learned about the wallet's keys (issue 24)."""
    model = st.key_model
    if model is None:
        return None
    from rotator.status import iso

    return {
        **model.to_dict(),
        "at_iso": iso(model.at),
        "revived_at_iso": iso(model.revived_at),
        "overlap": model.keys != "one",
    }


def _orphan_rows(rt: Runtime, now: float) -> list[dict[str, Any]]:
    """``status`` rows of the states the store holds for credentials the config no longer names:
    no path (it was in the config), no next rotation (never), consumers unknown (AWS keeps their
    acknowledgements on the published secret, whose path was in the config)."""
    from rotator.errors import RotatorError
    from rotator.model import CredentialState
    from rotator.orphans import holds_keys, orphan_names, orphan_ref

    rows: list[dict[str, Any]] = []
    for name in orphan_names(rt.rotator, (c.name for c in rt.settings.credentials)):
        consumers, archived = "unknown: not in the config", None
        try:
            st = rt.store.load(orphan_ref(name)).state
            archived = not holds_keys(st)
        except RotatorError as exc:  # one unreadable state must not hide the others
            st, consumers = CredentialState(), f"state unreadable ({exc})"
        row = _state_row(name, st, now, None)
        rows.append({**row, "archived": archived, "path": None, "consumers": consumers, "ready": None})
    return rows


def _refuse_orphan(rt: Runtime, name: str, command: str) -> None:
    """A name the config does not have but the store does: say what to do instead of 'no such'."""
    from rotator.errors import RotatorError
    from rotator.orphans import orphan_names

    if name in {c.name for c in rt.settings.credentials}:
        return
    try:
        stored = orphan_names(rt.rotator, ())
    except RotatorError:
        return  # cannot tell: the usual "no such credential" follows
    if name in stored:
        raise _config_error(
            f"--credential {name}: not in the config, but the store holds its state; {command} needs its "
            f"signer: `rotator retire --credential {name}` revokes every key it holds"
        )


def _retire(rt: Runtime, args: argparse.Namespace) -> int:
    from rotator.orphans import retire
    from rotator.stores.base import is_credential_name

    name = args.credential
    if not is_credential_name(name):
        raise _config_error("--credential: not a credential name (letters, digits, _ . -; 63 at most)")
    signer = None
    if name in {c.name for c in rt.settings.credentials}:
        if not args.force:
            raise _config_error(
                f"--credential {name}: still in the config; remove it first (a worker running with this "
                "config would issue it a new key), or pass --force"
            )
        signer = rt.signer(rt.settings.credential(name))
    managed = [] if args.force else _managed_via(rt, name)
    if managed:
        raise _config_error(
            f"--credential {name}: its key manages {', '.join(managed)} (via), which still hold keys: "
            f"retire them first (only {name}'s key can revoke their keys), or pass --force"
        )
    result = retire(rt.rotator, name, signer, dry_run=args.dry_run, create_window=rt.create_window)
    if result.outcome == "nothing-stored":
        raise _config_error(f"--credential {name}: the store holds no state of that name")
    verb = "would revoke" if args.dry_run else "revoking"
    for held in result.held:
        print(f"{name}: {verb} {held}")
    line = f"{name}: {result.outcome}"
    if not args.dry_run:
        line += f" revoked={result.revoked}"
    if result.left:
        line += " not-confirmed-gone=[" + ", ".join(str(h) for h in result.left) + "]"
        line += " (kept in the state: retiring keys are retried by every pass; without the signer an"
        line += " intent's key cannot be looked up: add the credential back and retire --force)"
    if result.error:
        line += f" error={result.error}"
    print(line)
    return EXIT_OK if result.ok else EXIT_FAILED


def _managed_via(rt: Runtime, name: str) -> list[str]:
    """The read-only and builder credentials of the store whose ``via`` is ``name`` and that still
    hold a key (issue 27): retiring ``name`` first would leave nothing that can revoke those keys."""
    from rotator.orphans import holds_keys, orphan_ref

    out = []
    for other in sorted(rt.store.names()):
        if other == name:
            continue
        state = rt.store.load(orphan_ref(other)).state
        if state.via == name and holds_keys(state):
            out.append(other)
    return out


def _check(rt: Runtime) -> int:
    from rotator.errors import RotatorError

    problems = 0
    for cred in rt.settings.credentials:
        # The permissions a pass needs, asked of the store without changing what anyone reads:
        # ready, unknown (the backend cannot tell without writing: AWS) or error.
        store = rt.store.check(rt.ref(cred))
        label = {"ready": "ok", "unknown": "warn", "error": "FAIL"}[store.status]
        problems += store.status == "error"
        print(f"{label:<5} {cred.name}: store {store.status}: {store.message}")
        try:
            signer = rt.signer(cred)()
            print(f"ok    {cred.name}: signer {signer.address}")
        except RotatorError as exc:
            problems += 1
            print(f"FAIL  {cred.name}: {exc}")
    try:
        server = rt.clob.server_time()
        import time

        skew = server - time.time()
        print(f"ok    clob {rt.settings.clob.host}: reachable, clock skew {skew:+.1f}s")
        if abs(skew) > rt.settings.clob.clock_skew.max:
            print(f"warn  clock skew above clob.clock_skew.max ({rt.settings.clob.clock_skew.max:g}s)")
    except RotatorError as exc:
        problems += 1
        print(f"FAIL  clob {rt.settings.clob.host}: {exc}")
    _print_budget(rt.settings)
    for line in _warnings(rt.settings, rt.env):
        print(line)
    return EXIT_FAILED if problems else EXIT_OK


def _long_grace(cred: CredentialSettings) -> str | None:
    if cred.grace <= cred.rotate_every:
        return None
    return (
        f"{cred.name}: grace {cred.grace:g}s is longer than rotate_every {cred.rotate_every:g}s: "
        "old keys pile up, each live until its grace ends"
    )


def _warnings(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """What the config allows but an operator should hear about (shown by ``check``, online or not)."""
    from rotator.config import ignored_proxy_env

    lines = _schedule_warnings(settings)
    ignored = ignored_proxy_env(settings, env)
    if ignored:
        lines.append(f"warn  {ignored}")
    for cred in settings.credentials:
        if cred.grace < 60:
            lines.append(
                f"warn  {cred.name}: grace {cred.grace:g}s is short: consumers must refresh faster than that"
            )
        if _long_grace(cred):
            lines.append(f"warn  {_long_grace(cred)}")
        refresh = cred.consumer_refresh
        if refresh is not None and cred.grace <= refresh:
            lines.append(
                f"warn  {cred.name}: grace {cred.grace:g}s is not longer than consumer_refresh {refresh:g}s: "
                "a bot may still hold the old key when it is revoked; make grace longer or refresh faster"
            )
        elif refresh is not None and cred.min_grace < refresh:
            lines.append(
                f"warn  {cred.name}: min_grace {cred.min_grace:g}s is shorter than consumer_refresh "
                f"{refresh:g}s: bots that do not acknowledge (Vault Agent, External Secrets, env vars) may "
                "lose the old key once the acknowledging ones have moved; raise min_grace to at least that"
            )
    return lines


def _schedule_warnings(settings: Settings) -> list[str]:
    """Schedules whose windows are further apart than a key may live (issue 23)."""
    import time

    from rotator.schedule import Schedule
    from rotator.status import duration

    lines = []
    for cred in settings.credentials:
        if cred.schedule is None:
            continue
        sched = Schedule.parse(cred.schedule.cron, cred.schedule.timezone, cred.schedule.window)
        gap = sched.longest_gap(time.time())
        max_age = cred.max_age if cred.max_age is not None else 2 * cred.rotate_every
        if gap > max_age:
            lines.append(
                f"warn  {cred.name}: schedule windows up to {duration(gap)} apart, more than max_age "
                f"{duration(max_age)}: keys reach max_age between windows and rotate outside them"
            )
        elif gap > cred.rotate_every:
            lines.append(
                f"warn  {cred.name}: schedule windows up to {duration(gap)} apart, more than rotate_every "
                f"{duration(cred.rotate_every)}: keys live that long, rotated at every window"
            )
    return lines


def _check_offline(path: str) -> int:
    """The config and its ROTATOR_* overrides, nothing else: no store, no CLOB, no signer, no secret."""
    from rotator.config import load_settings

    settings = load_settings(path, env=dict(os.environ))
    backend = settings.store.backend
    print(f"ok    config {path}: store {backend}, {len(settings.credentials)} credential(s)")
    for cred in settings.credentials:
        schedule = cred.schedule
        when = f", schedule {schedule.cron!r} {schedule.timezone}" if schedule else ""
        print(
            f"ok    {cred.name}: path {cred.path}, signer {cred.signer.source}, "
            f"rotate_every {cred.rotate_every:g}s, grace {cred.grace:g}s{when}"
        )
    _print_budget(settings)
    for line in _warnings(settings, os.environ):
        print(line)
    return EXIT_OK


def _print_budget(settings: Settings) -> None:
    """What the fleet takes of the CLOB's per-IP budgets (config only: online and offline checks)."""
    from rotator.clob.budget import budget_report

    for level, line in budget_report(settings):
        print(f"{level:<5} {line}")


def _rekey(path: str) -> int:
    """Re-seal the file store under its key; signs nothing, so it builds no signer (nor a Runtime)."""
    from rotator.config import load_settings
    from rotator.errors import Corrupt
    from rotator.stores.factory import build_store
    from rotator.stores.file import FileStore

    settings = load_settings(path, env=dict(os.environ))
    fs = settings.store.file
    if settings.store.backend != "file":
        raise _config_error(
            f"rekey re-encrypts the file store keyed by store.file.key_env; this config uses "
            f"store.backend {settings.store.backend!r}"
        )
    if fs.kms_key_id is not None:
        raise _config_error(
            "rekey re-encrypts the file store keyed by store.file.key_env; this config uses "
            "store.file.kms_key_id, whose key is rotated in KMS"
        )
    store = build_store(settings, dict(os.environ))
    assert isinstance(store, FileStore)
    try:
        outcome = store.rekey()
    except Corrupt as exc:
        if fs.previous_key_env is None:
            raise Corrupt(
                f"{exc}; to change the file's key, set store.file.previous_key_env to a variable "
                "holding the key it was made with"
            ) from None
        raise
    where, key = store.path, f"store.file.key_env ({fs.key_env})"
    if outcome == "rekeyed":
        print(
            f"{where}: re-encrypted under {key}; the previous key ({fs.previous_key_env}) is no longer needed"
        )
    elif outcome == "current":
        print(f"{where}: already encrypted under {key}; nothing to do")
    else:
        print(f"{where}: no file yet; it will be created under {key}")
    return EXIT_OK


def _sandbox(args: argparse.Namespace) -> int:
    from rotator.sandbox import SandboxSettings, serve

    settings = SandboxSettings(
        chain_id=args.chain_id,
        single_key=args.single_key,
        propagation_delay=args.propagation_delay,
        auth_limit=args.auth_limit,
        edge_block=tuple(args.block_clients),
        edge_page=args.edge_page,
        key_ttl=args.key_ttl or None,
        revive=args.revive,
    )

    def ready(url: str) -> None:  # only once it listens: a port in use is an error, not a start
        print(f"sandbox CLOB on {url} (chain {args.chain_id})", file=sys.stderr, flush=True)

    try:
        serve(settings, args.host, args.port, on_ready=ready)
    except OSError as exc:
        raise _config_error(
            f"sandbox: cannot listen on {args.host}:{args.port} ({exc.strerror or type(exc).__name__})"
        ) from None
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
