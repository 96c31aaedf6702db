"""``rotator demo``: the whole job on embedded defaults, in seconds.

The sandbox CLOB in-process, a file store in a temp dir, a throwaway wallet, a 2 s cadence with a
3 s grace, and a bot that keeps calling an authenticated endpoint with whatever key is published.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROTATE_EVERY = 2.0
GRACE = 3.0


@dataclass
class _Bot:
    """A consumer: reads the published key, calls GET /data/orders every 100 ms, retries a 401 once."""

    url: str
    private_key: str
    read_key: object
    requests: int = 0
    failures: int = 0
    retried: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from py_clob_client.client import ClobClient
        from py_clob_client.clob_types import ApiCreds
        from py_clob_client.exceptions import PolyApiException

        client = ClobClient(self.url, chain_id=137, key=self.private_key)
        loaded = None

        def refresh() -> None:
            nonlocal loaded
            key = self.read_key()  # type: ignore[operator]
            if key is not None and key.api_key != loaded:
                client.set_api_creds(
                    ApiCreds(key.api_key, key.api_secret.reveal(), key.api_passphrase.reveal())
                )
                loaded = key.api_key

        while not self.stop.wait(0.1):
            refresh()
            if loaded is None:
                continue
            self.requests += 1
            try:
                client.get_orders()
            except PolyApiException as exc:
                if exc.status_code != 401:
                    self.failures += 1
                    continue
                self.retried += 1
                refresh()
                try:
                    client.get_orders()
                except PolyApiException:
                    self.failures += 1


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
                    }
                ],
                "metrics": {"port": 0},
            },
        )
        rt = Runtime(settings, env)
        rt.validate()
        cred = settings.credentials[0]
        ref = rt.ref(cred)
        import py_clob_client.client  # noqa: F401 - import once here, not racing in the bot thread

        bot = _Bot(sandbox.url, env["DEMO_PRIVATE_KEY"], lambda: rt.store.read_published(ref))
        thread = threading.Thread(target=bot.run, name="demo-bot", daemon=True)
        thread.start()

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
                rows.append(
                    {
                        "n": len(rows),
                        "key": state.current.masked,
                        "nonce": state.current.nonce,
                        "at": state.current.created_at - started,
                    }
                )
            for h in state.history:
                revoked_at.setdefault(h.nonce, h.revoked_at - started)
            if len(rows) > rotations and not state.retiring:
                break
            time.sleep(0.25)
        bot.stop.set()
        thread.join(timeout=5)
        live = sandbox.live_keys(wallet.address)
        rt.close()

    print(f"\n{'#':>2}  {'key':<10} {'nonce':>5}  {'issued':>7}  {'revoked':>8}")
    for row in rows:
        label = "bootstrap" if row["n"] == 0 else f"{row['n']}"
        gone = revoked_at.get(int(row["nonce"]))  # type: ignore[call-overload]
        print(
            f"{label:>2}  {row['key']!s:<10} {row['nonce']!s:>5}  {row['at']:>6.1f}s  "
            f"{(f'{gone:.1f}s' if gone is not None else 'current'):>8}"
        )
    print(f"\nconsumer: {bot.requests} requests, {bot.retried} retried after 401, {bot.failures} failed")
    print(f"keys live at the CLOB at the end: {len(live)} (expected 1); took {time.time() - started:.1f}s")
    ok = len(rows) > rotations and bot.failures == 0 and failed == 0 and len(live) == 1
    print("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1
