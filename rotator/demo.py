"""``rotator demo``: the whole job on embedded defaults, in seconds.

The sandbox CLOB in-process, a file store in a temp dir, a throwaway wallet, a 2 s cadence with a
3 s grace, and a bot that keeps calling an authenticated endpoint through ``rotator.consumer`` (as
``examples/bot.py`` does). The bot acknowledges each key it loads, so old keys are revoked after
``min_grace`` (1 s) instead of the full grace.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rotator.consumer import RotatingClient

ROTATE_EVERY = 2.0
GRACE = 3.0
MIN_GRACE = 1.0


def _bot_loop(client: RotatingClient, stop: threading.Event) -> None:
    """The consumer: an authenticated read every 100 ms; the client counts calls, retries, failures."""
    while not stop.wait(0.1):
        # A failure is counted in client.failed and shown in the summary; the bot keeps going.
        with contextlib.suppress(Exception):
            client.get_orders()


def run_demo(rotations: int = 3) -> int:
    from eth_account import Account

    from rotator.config import load_settings
    from rotator.runtime import Runtime
    from rotator.sandbox import Sandbox
    from rotator.stores.file import generate_file_key

    logging.basicConfig(level=logging.WARNING)
    started = time.time()
    print(
        f"rotator demo: {rotations} rotations, rotate_every {ROTATE_EVERY:g}s, grace {GRACE:g}s", flush=True
    )
    with tempfile.TemporaryDirectory(prefix="rotator-demo-") as tmp, Sandbox() as sandbox:
        wallet = Account.create()
        env = {"DEMO_PRIVATE_KEY": wallet.key.hex(), "DEMO_FILE_KEY": generate_file_key()}
        settings = load_settings(
            None,
            env={},  # embedded defaults: the caller's ROTATOR_* variables are not the demo's
            data={
                "clob": {"host": sandbox.url, "chain_id": 137, "verify_timeout": "10s"},
                "store": {
                    "backend": "file",
                    "file": {"path": str(Path(tmp) / "keys.enc"), "key_env": "DEMO_FILE_KEY"},
                },
                "credentials": [
                    {
                        "name": "demo",
                        "signer": {"source": "env", "env": "DEMO_PRIVATE_KEY"},
                        "path": "polymarket/demo",
                        "rotate_every": ROTATE_EVERY,
                        "grace": GRACE,
                        "min_grace": MIN_GRACE,
                        "consumer_refresh": 0.25,
                    }
                ],
                "metrics": {"port": 0},
            },
        )
        rt = Runtime(settings, env)
        rt.validate()
        cred = settings.credentials[0]
        ref = rt.ref(cred)
        from rotator.consumer import CredentialSource, RotatingClient

        source = CredentialSource(
            rt.store, credential=cred.name, path=cred.path, consumer_id="demo-bot", refresh_every=0.25
        )
        client = RotatingClient.connect(sandbox.url, source, private_key=env["DEMO_PRIVATE_KEY"])
        stop = threading.Event()
        thread = threading.Thread(target=_bot_loop, args=(client, stop), name="demo-bot", daemon=True)

        rows: list[dict[str, object]] = []
        revoked_at: dict[int, float] = {}
        policy = rt.policy(cred)
        deadline = time.monotonic() + 25
        failed = 0
        while time.monotonic() < deadline:
            if len(rows) > rotations:  # enough rotations: keep passing only to revoke after grace
                policy = replace(policy, rotate_every=1e9)
            result = rt.rotator.run_pass(ref, rt.signer(cred), policy)
            if not result.ok:
                failed += 1
                print(f"  pass failed: {result.error}")
            state = rt.store.load(ref).state
            if result.rotated and state.current is not None:
                if not rows:  # the first key is published: the bot can start
                    source.start()
                    thread.start()
                rows.append(
                    {
                        "n": len(rows),
                        "key": state.current.masked,
                        "nonce": state.current.nonce,
                        "at": state.current.created_at - started,
                    }
                )
            for h in state.history:
                if h.revoked_at is not None:  # always, in the history of gone keys
                    revoked_at.setdefault(h.nonce, h.revoked_at - started)
            if len(rows) > rotations and not state.retiring:
                break
            time.sleep(0.25)
        stop.set()
        if thread.is_alive():
            thread.join(timeout=5)
        source.stop()
        live = sandbox.live_keys(wallet.address)
        rt.close()

    print(f"\n{'rotation':<10} {'nonce':>5}  {'key':<14} {'issued':>7}  {'revoked':>8}")
    lives: list[float] = []
    for i, row in enumerate(rows):
        label = "bootstrap" if row["n"] == 0 else f"{row['n']}"
        gone = revoked_at.get(int(row["nonce"]))  # type: ignore[call-overload]
        if gone is not None and i + 1 < len(rows):
            lives.append(gone - float(rows[i + 1]["at"]))  # type: ignore[arg-type]
        print(
            f"{label:<10} {row['nonce']!s:>5}  {row['key']!s:<14} {row['at']:>6.1f}s  "
            f"{(f'{gone:.1f}s' if gone is not None else 'current'):>8}"
        )
    if lives:
        print(
            f"\nold keys lived {sum(lives) / len(lives):.1f}s on average after being replaced: the bot "
            f"acknowledged each new key, so no key waited for the full {GRACE:g}s grace "
            f"(min_grace {MIN_GRACE:g}s)"
        )
    print(f"consumer: {client.calls} requests, {client.retried} retried after 401, {client.failed} failed")
    print(f"keys live at the CLOB at the end: {len(live)} (expected 1); took {time.time() - started:.1f}s")
    ok = len(rows) > rotations and client.failed == 0 and client.calls > 0 and failed == 0 and len(live) == 1
    print("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1
