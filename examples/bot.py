"""An example bot that never notices a rotation: it reads its CLOB API key with ``rotator.consumer``.

AUTH-ONLY: this one uses py-clob-client (V1), which cannot place orders on production since CLOB V2
(2026-04-28). New bots: ``bot_unified.py`` (polymarket-client) or ``bot_v2.py`` (py-clob-client-v2);
both reuse this file's config loading, loop and summary.

It places no orders. Every ``--every`` seconds it makes one authenticated read (``GET /data/orders``)
and, with ``--heartbeat``, one heartbeat (``POST /v1/heartbeats``, the call whose absence makes
Polymarket cancel a bot's open orders). On SIGTERM/SIGINT, or after ``--duration`` seconds, it prints
one JSON summary line and exits 0 if no request failed, 1 otherwise.

It reads the worker's own config file for the ``store:`` section, the CLOB host and the named
credential's publish path (a bot may equally get a trimmed copy holding only those), and its
secrets from the environment: the wallet key (``--wallet-key-env``) and whatever the store section
names (``store.file.key_env``, a Vault token; AWS credentials through boto3's standard chain)::

    BOT_WALLET_KEY=0x... ROTATOR_FILE_KEY=... python examples/bot.py -c rotator.yaml --credential mm1
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from rotator.consumer import CredentialSource, RotatingClient
from rotator.errors import RotatorError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", required=True, help="the worker's config (store, clob, credentials)")
    p.add_argument("--credential", required=True, help="the credential's name in that config")
    p.add_argument("--wallet-key-env", default="BOT_WALLET_KEY", help="variable holding the wallet key")
    p.add_argument("--consumer-id", default=None, help="this bot's name in acknowledgements (default: host)")
    p.add_argument("--every", type=float, default=1.0, help="seconds between requests")
    p.add_argument("--refresh", type=float, default=30.0, help="seconds between key refreshes (< grace)")
    p.add_argument("--heartbeat", action="store_true", help="also post a heartbeat every round")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    return p.parse_args(argv)


def load(config: str, credential: str) -> tuple[dict[str, Any], str, str, int]:
    """(store section, publish path, CLOB host, chain id) from the worker's config file."""
    raw = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    creds = [c for c in raw.get("credentials") or [] if c.get("name") == credential]
    if not creds:
        raise SystemExit(f"bot: {config}: no credential named {credential!r}")
    clob = raw.get("clob") or {}
    return (
        raw.get("store") or {},
        str(creds[0]["path"]),
        str(clob.get("host", "https://clob.polymarket.com")),
        int(clob.get("chain_id", 137)),
    )


def open_source(args: argparse.Namespace) -> tuple[CredentialSource, str, str]:
    """(source, CLOB host, wallet key) for the bot's arguments; exits 2 with one line if they are wrong."""
    store, path, host, args.chain_id = load(args.config, args.credential)
    env = dict(os.environ)
    wallet_key = env.get(args.wallet_key_env)
    if not wallet_key:
        print(f"bot: environment variable {args.wallet_key_env} is not set", file=sys.stderr)
        raise SystemExit(2)
    try:
        source = CredentialSource.from_settings(
            store,
            credential=args.credential,
            path=path,
            env=env,
            consumer_id=args.consumer_id,
            refresh_every=args.refresh,
        )
    except RotatorError as exc:
        print(f"bot: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return source, host, wallet_key


def run(args: argparse.Namespace, source: CredentialSource, client: Any, request: Any) -> dict[str, Any]:
    """Call ``request()`` every ``--every`` seconds until SIGTERM/SIGINT or ``--duration``: the summary."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    keys: list[str] = []
    # The one masked form the worker's logs and `rotator status` show too (grep one in the other).
    source.subscribe(lambda key: keys.append(key.masked))
    current = source.current()
    if current is not None:
        keys.append(current.masked)
    deadline = time.monotonic() + args.duration if args.duration is not None else None
    errors: list[str] = []
    # The longest time between two requests that succeeded: with --heartbeat (or a heartbeat bot),
    # how close the CLOB came to cancelling the bot's orders (it does after ~10 s without one).
    last_ok: float | None = None
    longest = 0.0
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        try:
            request()
            now = time.monotonic()
            longest = max(longest, now - last_ok) if last_ok is not None else longest
            last_ok = now
        except Exception as exc:  # noqa: BLE001 - a bot keeps going; the client counts the failure
            errors.append(type(exc).__name__ + f" {getattr(exc, 'status_code', '')}".rstrip())
        stop.wait(args.every)
    return {
        "consumer": source.consumer_id,
        "requests": client.calls,
        "retried": client.retried,
        "failed": client.failed,
        "errors": errors[:5],
        "keys": list(dict.fromkeys(keys)),
        "longest_gap": round(longest, 3),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source, host, wallet_key = open_source(args)
    with source:
        client = RotatingClient.connect(host, source, private_key=wallet_key, chain_id=args.chain_id)
        source.start()  # once the client listens: each key is acknowledged once the client holds it
        heartbeat: dict[str, str | None] = {"id": None}

        def request() -> None:
            client.get_orders()
            if args.heartbeat:
                heartbeat["id"] = client.post_heartbeat(heartbeat["id"]).get("heartbeat_id", heartbeat["id"])

        summary = run(args, source, client, request)
    print(json.dumps(summary), flush=True)
    return 0 if client.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
