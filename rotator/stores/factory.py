"""Builds the configured store from settings: the worker's and a bot's (``rotator.consumer``) alike.

Each backend is imported only when it is the one configured, and nothing here loads the worker
(rotation, CLOB adapter, signers, metrics): a bot that reads its key through
``CredentialSource.from_settings`` gets the store and what it needs, no more. The environment
arrives as a mapping; nothing here reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from rotator.errors import ConfigError
from rotator.extras import require

if TYPE_CHECKING:
    from rotator.config import Settings
    from rotator.stores.base import Store


def build_store(settings: Settings, env: Mapping[str, str]) -> Store:
    """The store ``settings.store`` describes, with the secrets it names by variable read from ``env``.

    :raises ConfigError: a variable the settings name is missing or malformed, the backend is unknown,
        or its client library is not installed (the message names the extra that brings it).
    """
    from rotator.config import env_problem

    backend = settings.store.backend
    if backend == "file":
        require("cryptography", "store.backend file")
        from rotator.stores.file import FileStore, parse_file_key

        fs = settings.store.file
        if fs.kms_key_id is not None:
            require("botocore", "store.file.kms_key_id")
            from rotator.stores.envelope import kms_file_key

            return FileStore(Path(fs.path), kms_file_key(settings.store, env))
        keys = []
        for setting, name in (("key_env", fs.key_env), ("previous_key_env", fs.previous_key_env)):
            if name is None:
                continue
            source = f"store.file.{setting} ({name})"
            text = env.get(name)
            problem = env_problem(env, name)
            if problem or text is None:
                raise ConfigError(f"{source}: environment variable {name} {problem}")
            keys.append(parse_file_key(text, source=source))
        return FileStore(Path(fs.path), keys[0], previous_keys=keys[1:])
    if backend == "vault":
        require("hvac", "store.backend vault")
        from rotator.stores.vault import build_vault_store

        assert settings.store.vault is not None  # StoreSettings requires it for this backend
        return build_vault_store(settings.store.vault, env)
    if backend == "aws":
        require("botocore", "store.backend aws")
        from rotator.stores.aws import AwsStore, make_client

        aws = settings.store.aws
        return AwsStore(make_client(aws, env), kms_key_id=aws.kms_key_id, state_prefix=aws.state_prefix)
    raise ConfigError(f"store.backend: {backend!r} is not available in this build")
