"""Rotation overhead: one full rotation by rotator versus a hand-written script making the same calls.

Both sides run in this process, one credential each (a fresh wallet per run), against the sandbox
CLOB in a child process and an OpenBao (Vault API) server, with no rate limit on either. A rotation
is a forced pass over a credential that already has a published key:

* rotator: ``Rotator.run_pass(force=True)`` as ``rotator rotate --force`` does it, built by
  ``Runtime`` from settings, audit logging at ``info`` in JSON (to /dev/null), metrics on.
* baseline: py-clob-client's ``ClobClient`` and a plain ``hvac.Client`` making the same requests in
  the same order, with the state kept in a dict: read the state; list acknowledgements once a key is
  retiring; write the intent (cas); ``create_api_key``; write the pending key (cas);
  ``get_balance_allowance`` (an L2 read outside /auth/*) with the new key; write the promoted state
  (cas); read and write (cas) the published secret; write the published nonce (cas);
  ``get_balance_allowance`` with the old key. No retries, no metrics, no logs, no crash recovery.

Both sides' requests are counted in an untimed rotation (the sandbox counts CLOB requests, a
response hook on each side's hvac session counts Vault requests), so the results show they made
the same calls.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from common import Row, Section, alternate, main, median, openbao, sandbox, spread, wallets

TARGET = 1.3


class Baseline:
    """The hand-written rotation: SDK and hvac calls, the state as a dict, nothing else."""

    def __init__(self, clob_url: str, vault_url: str, token: str, name: str, private_key: str) -> None:
        import hvac
        from py_clob_client.client import ClobClient

        self.clob_url = clob_url
        self.pk = private_key
        self.l1 = ClobClient(clob_url, chain_id=137, key=private_key)
        self.vault = hvac.Client(url=vault_url, token=token)
        self.state_path = f"rotator-state/{name}"
        self.acks_path = f"rotator-state/{name}/acks"
        self.path = f"bench/{name}"

    def _kv(self) -> Any:
        return self.vault.secrets.kv.v2

    def _read(self, path: str) -> tuple[dict[str, Any] | None, int]:
        from hvac.exceptions import InvalidPath

        try:
            r = self._kv().read_secret_version(
                path=path, mount_point="secret", raise_on_deleted_version=False
            )
        except InvalidPath:
            return None, 0
        return r["data"]["data"], int(r["data"]["metadata"]["version"])

    def _write(self, path: str, data: dict[str, Any], cas: int) -> int:
        r = self._kv().create_or_update_secret(path=path, secret=data, cas=cas, mount_point="secret")
        return int(r["data"]["version"])

    def _creds(self, c: Any, nonce: int) -> dict[str, Any]:
        return {
            "api_key": c.api_key,
            "api_secret": c.api_secret,
            "api_passphrase": c.api_passphrase,
            "address": self.l1.get_address(),
            "nonce": nonce,
            "created_at": time.time(),
        }

    def bootstrap(self) -> None:
        creds = self.l1.create_api_key(0)
        key = self._creds(creds, 0)
        version = self._write(self.state_path, {"current": key, "next_nonce": 1, "retiring": []}, 0)
        self._write(self.path, key, 0)
        self._write(
            self.state_path, {"current": key, "next_nonce": 1, "retiring": [], "published": 0}, version
        )

    def rotate(self) -> None:
        from hvac.exceptions import InvalidPath
        from py_clob_client.clob_types import ApiCreds

        state, version = self._read(self.state_path)
        assert state is not None
        if state["retiring"]:
            with contextlib.suppress(InvalidPath):
                self._kv().list_secrets(path=self.acks_path, mount_point="secret")
        nonce = state["next_nonce"]
        state = {**state, "pending": {"nonce": nonce}, "next_nonce": nonce + 1}
        version = self._write(self.state_path, state, version)
        creds = self.l1.create_api_key(nonce)
        key = self._creds(creds, nonce)
        state = {**state, "pending": {"nonce": nonce, "key": key}}
        version = self._write(self.state_path, state, version)
        self.l1.set_api_creds(creds)
        self._check()  # raises PolyApiException unless the new key works
        old = state["current"]
        state = {
            **state,
            "current": key,
            "pending": None,
            "retiring": [*state["retiring"], {"key": old, "revoke_after": time.time() + 3600}],
        }
        version = self._write(self.state_path, state, version)
        published, pversion = self._read(self.path)
        if published != key:
            self._write(self.path, key, pversion)
        version = self._write(self.state_path, {**state, "published": nonce}, version)
        self.l1.set_api_creds(ApiCreds(old["api_key"], old["api_secret"], old["api_passphrase"]))
        self._check()

    def _check(self) -> None:
        from py_clob_client.clob_types import AssetType, BalanceAllowanceParams

        self.l1.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))


class Rotator:
    """rotator's own pass, built the way the CLI builds it."""

    def __init__(self, clob_url: str, vault_url: str, token: str, name: str, private_key: str) -> None:
        from rotator.config import load_settings
        from rotator.runtime import Runtime

        settings = load_settings(
            None,
            data={
                "clob": {
                    "host": clob_url,
                    "verify_timeout": "10s",
                    "rate_limits": {"auth": {"requests": 0}, "read": {"requests": 0}},
                    "probe": {"requests": 0},
                },
                "store": {"backend": "vault", "vault": {"url": vault_url}},
                "credentials": [
                    {
                        "name": name,
                        "signer": {"source": "env", "env": "BENCH_KEY"},
                        "path": f"bench/{name}",
                        "rotate_every": "1d",
                        "grace": "1h",
                    }
                ],
                "metrics": {"port": 0},
            },
        )
        self.rt = Runtime(settings, {"BENCH_KEY": private_key, "VAULT_TOKEN": token})
        self.rt.validate()
        self.cred = settings.credentials[0]

    def _pass(self, force: bool) -> None:
        rt = self.rt
        result = rt.rotator.run_pass(
            rt.ref(self.cred), rt.signer(self.cred), rt.policy(self.cred), force=force
        )
        if not result.rotated:
            raise RuntimeError(f"rotator: the pass did not rotate: {result.outcome} {result.error}")

    def bootstrap(self) -> None:
        self._pass(False)

    def rotate(self) -> None:
        self._pass(True)

    def close(self) -> None:
        self.rt.close()


class VaultCounter:
    """Counts the Vault requests an hvac client sends, with a response hook on its requests session.

    OpenBao refuses to enable audit devices over the API, so the count is taken client-side, in an
    untimed rotation; the hook only records the method and the path."""

    def __init__(self, client: Any) -> None:
        self.session = client.adapter.session
        self.seen: dict[str, int] = {}

    def _hook(self, response: Any, *args: Any, **kwargs: Any) -> None:
        method = response.request.method
        what = "list" if method == "LIST" or "list=true" in response.request.url else method
        self.seen[what] = self.seen.get(what, 0) + 1

    def __enter__(self) -> VaultCounter:
        self.session.hooks["response"].append(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.hooks["response"].remove(self._hook)


def _clob_calls(before: dict[Any, int], after: dict[Any, int]) -> str:
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return ", ".join(f"{m} {p} {s} x{n}" for (m, p, s), n in sorted(diff.items()) if n)


def run(quick: bool) -> Section:
    from rotator.logs import setup_logging

    runs, per_run = (5, 3) if quick else (11, 20)
    section = Section("Rotation overhead")
    null = open("/dev/null", "w")  # noqa: SIM115 - open for the whole benchmark
    # The daemon's and the CronJob's logging: JSON at info, one line per protocol step.
    setup_logging("json", "info", stream=null)
    counter = 0
    # No limit on either side: neither /auth/* nor the probe endpoint (the baseline does not pace).
    with openbao() as bao, sandbox(auth_limit=0, read_limits={}) as sb:

        def make(kind: type[Any]) -> Any:
            nonlocal counter
            counter += 1
            (_, key) = wallets(1)[0]
            side = kind(sb.url, bao.url, bao.root_token, f"{kind.__name__.lower()}-{counter}", key)
            side.bootstrap()
            return side

        def timed(kind: type[Any]) -> float:
            side = make(kind)
            side.rotate()  # warm: connections open, a key retiring, as in steady state
            t = time.perf_counter()
            for _ in range(per_run):
                side.rotate()
            took = (time.perf_counter() - t) / per_run
            if hasattr(side, "close"):
                side.close()
            return took

        # What each side sends for one rotation (not timed).
        calls: dict[str, str] = {}
        for kind in (Rotator, Baseline):
            side = make(kind)
            side.rotate()
            before = sb.counts()
            # rotator's hvac session is private to its store: reached into here, for counting only.
            client = side.rt.store._session.client if kind is Rotator else side.vault
            with VaultCounter(client) as vault_counter:
                side.rotate()
            vault = vault_counter.seen
            calls[kind.__name__] = f"CLOB: {_clob_calls(before, sb.counts())}; Vault KV: " + ", ".join(
                f"{op} x{n}" for op, n in sorted(vault.items())
            )
        xs, ys = alternate(lambda: timed(Rotator), lambda: timed(Baseline), runs)
    logging.getLogger().handlers[:] = []
    null.close()
    r, b = median(xs), median(ys)
    ratio = r / b
    section.rows.append(
        Row(
            "rotation overhead (Vault store)",
            f"{r * 1000:.1f} ms",
            f"{b * 1000:.1f} ms (hand-written, same calls)",
            ratio,
            f"<= {TARGET}x",
            ratio <= TARGET,
        )
    )
    section.details += [
        f"{runs} runs per side, alternating; each run times {per_run} forced rotations of a fresh "
        f"credential (after one untimed warm-up rotation); per-rotation medians. rotator runs: "
        f"{spread([x * 1000 for x in xs])} ms; baseline runs: {spread([y * 1000 for y in ys])} ms.",
        f"rotator's requests per rotation: {calls['Rotator']}.",
        f"baseline's requests per rotation: {calls['Baseline']}.",
    ]
    return section


if __name__ == "__main__":
    main(run)
