"""A worker on any of the three stores (file, OpenBao, moto), for issue 23's scenarios over real
processes: pause and resume, history, the restore drill. Each backend's own test file has richer
helpers; this one gives a scenario the same worker on all three, and raw access to what a backup
holds (the state's and the published secret's stored bytes, by each backend's own means)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rotator.sandbox import Sandbox
from rotator.stores.base import Store
from tests.harness import SECRETS, Worker

BACKENDS = ["file", "vault", "aws"]


@dataclass
class StoreWorker(Worker):
    """A :class:`Worker` whose store section, environment and inspection store the backend sets."""

    backend: str = "file"
    store_section: dict[str, Any] = field(default_factory=dict)
    store_env: dict[str, str] = field(default_factory=dict)
    opener: Any = None
    daemon: dict[str, Any] = field(default_factory=dict)
    bao: Any = None
    aws_url: str = ""

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        if self.store_section:
            cfg["store"] = self.store_section
        if self.daemon:
            cfg["daemon"] = self.daemon
        return cfg

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.store_env}

    def store(self) -> Store:  # type: ignore[override]
        return self.opener() if self.opener is not None else super().store()

    # -- what a backup holds, read and put back by the backend's own means ------------------------
    def backup(self) -> dict[str, Any]:
        """The state and the published secret as stored now (file: the whole encrypted file)."""
        if self.backend == "file":
            return {"file": (self.tmp / "keys.enc").read_bytes()}
        if self.backend == "vault":
            kv = self.bao.client().secrets.kv.v2
            prefix = self.store_section["vault"]["state_prefix"]

            def version(path: str) -> int:
                read = kv.read_secret_version(path=path, raise_on_deleted_version=True)
                return int(read["data"]["metadata"]["version"])

            return {"state": version(f"{prefix}/{self.name}"), "published": version(self.ref.path)}
        sm = self._sm()
        prefix = self.store_section["aws"]["state_prefix"]
        return {
            "state": sm.get_secret_value(SecretId=prefix + self.name, VersionStage="AWSCURRENT")["VersionId"],
            "published": sm.get_secret_value(SecretId=self.ref.path, VersionStage="AWSCURRENT")["VersionId"],
        }

    def restore(self, backup: dict[str, Any]) -> None:
        """Put the backup back as docs/upgrading.md says: the file copied over; Vault's KV versions
        rolled back (their data written again as the newest version); AWS's AWSCURRENT stage moved
        back to the versions it had."""
        if self.backend == "file":
            (self.tmp / "keys.enc").write_bytes(backup["file"])
            return
        if self.backend == "vault":
            kv = self.bao.client().secrets.kv.v2
            prefix = self.store_section["vault"]["state_prefix"]
            for path, version in (
                (f"{prefix}/{self.name}", backup["state"]),
                (self.ref.path, backup["published"]),
            ):
                old = kv.read_secret_version(path=path, version=version, raise_on_deleted_version=True)[
                    "data"
                ]["data"]
                kv.create_or_update_secret(path=path, secret=old)  # what `bao kv rollback` does
            return
        sm = self._sm()
        prefix = self.store_section["aws"]["state_prefix"]
        for secret, version in ((prefix + self.name, backup["state"]), (self.ref.path, backup["published"])):
            current = sm.get_secret_value(SecretId=secret, VersionStage="AWSCURRENT")["VersionId"]
            sm.update_secret_version_stage(
                SecretId=secret,
                VersionStage="AWSCURRENT",
                MoveToVersionId=version,
                RemoveFromVersionId=current,
            )

    def _sm(self) -> Any:
        import boto3

        return boto3.client("secretsmanager", endpoint_url=self.aws_url, region_name="us-east-1")


def store_worker(
    request: pytest.FixtureRequest, backend: str, tmp: Path, sb: Sandbox, wallet: tuple[str, str], **kw: Any
) -> StoreWorker:
    """A :class:`StoreWorker` on ``backend``, its names unique to the test."""
    name = f"d2-{uuid.uuid4().hex[:8]}"
    kw.setdefault("name", name)
    kw.setdefault("cred_extra", {"verify_timeout": "10s"})
    if backend == "vault":
        from rotator.config import VaultSettings
        from rotator.stores.vault import build_vault_store

        bao = request.getfixturevalue("openbao")
        SECRETS.add(bao.root_token)
        section: dict[str, Any] = {
            "url": bao.url,
            "state_prefix": f"state-{name}",
            "auth": {"method": "token", "token_env": "VAULT_TOKEN"},
        }
        settings = VaultSettings(**{**section, "auth": {"method": "token", "token_env": "ROOT"}})
        kw.update(
            store_section={"backend": "vault", "vault": section},
            store_env={"VAULT_TOKEN": bao.root_token},
            opener=lambda: build_vault_store(settings, {"ROOT": bao.root_token}),
            bao=bao,
        )
    elif backend == "aws":
        from rotator.config import AwsStoreSettings
        from rotator.stores.aws import AwsStore, make_client

        url = request.getfixturevalue("moto_server")
        aws = {"region": "us-east-1", "endpoint_url": url, "state_prefix": f"state/{name}/"}
        kw.update(
            store_section={"backend": "aws", "aws": aws},
            opener=lambda: AwsStore(make_client(AwsStoreSettings(**aws)), state_prefix=aws["state_prefix"]),
            aws_url=url,
        )
    return StoreWorker(tmp, sb.url, *wallet, backend=backend, **kw)


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a run's stderr (other lines skipped)."""
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
