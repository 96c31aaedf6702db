"""KMS envelope encryption for the file store (``store.file.kms_key_id``, instead of ``key_env``).

The file's AES-256 key is a KMS data key: ``GenerateDataKey`` once, its encrypted form
(``CiphertextBlob``) kept beside the file in ``<path>.datakey``, and ``Decrypt`` at every start. The
plaintext key exists only in the worker's memory; whoever copies both files still needs ``kms:Decrypt``
on the key. The encryption context binds the data key to this use, so it cannot be decrypted in
another context by mistake.

The KMS client and the error translation come from :mod:`rotator.clients.aws`, the one importer of
botocore.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rotator.clients import aws
from rotator.errors import ConfigError, Corrupt, RotatorError, StoreError
from rotator.stores.file import make_private_dirs

if TYPE_CHECKING:
    from rotator.config import StoreSettings

FORMAT = "rotator-file-store-datakey"
FORMAT_VERSION = 1
SUFFIX = ".datakey"
#: Bound into every data key: Decrypt must name the same context.
CONTEXT = {"rotator:purpose": "file-store"}
_KEY_BYTES = 32
_UNDECRYPTABLE = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})


class KmsDataKeyClient(Protocol):
    """The calls of boto3's ``kms`` client the envelope makes (keyword arguments as boto3's)."""

    def generate_data_key(self, **kwargs: Any) -> dict[str, Any]: ...

    def decrypt(self, **kwargs: Any) -> dict[str, Any]: ...


def datakey_path(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


def open_data_key(path: Path, client: KmsDataKeyClient, kms_key_id: str) -> bytes:
    """The 32-byte key of the file store at ``path``: ``<path>.datakey`` decrypted, or a new data key
    when neither that nor the store file exists yet (two workers starting at once agree on one).

    :raises ConfigError: the store file exists without its data key, or KMS refuses (names the key).
    :raises Corrupt: the data key file is malformed or does not decrypt under ``kms_key_id``.
    :raises rotator.errors.Unavailable: KMS cannot be reached.
    """
    holder = datakey_path(path)
    for _ in range(2):
        try:
            text = holder.read_text(encoding="ascii")
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"{holder}: cannot read the data key ({type(exc).__name__})") from None
        else:
            return _decrypt(holder, text, client, kms_key_id)
        if path.exists():
            raise ConfigError(
                f"store.file.kms_key_id: {path} exists but its data key {holder} does not; restore that "
                "file (the store cannot be decrypted without it), or use the key_env the file was made with"
            )
        key, document = _generate(client, kms_key_id)
        if _create(holder, document):
            return key
        # Another worker created it first: use theirs, so both encrypt with the same key.
    raise StoreError(f"{holder}: appeared and vanished again; check what else writes there")


def _generate(client: KmsDataKeyClient, kms_key_id: str) -> tuple[bytes, bytes]:
    try:
        resp = client.generate_data_key(KeyId=kms_key_id, KeySpec="AES_256", EncryptionContext=CONTEXT)
    except aws.errors() as exc:
        raise _kms_error(exc, f"store.file.kms_key_id ({kms_key_id}): GenerateDataKey") from exc
    key, blob = resp.get("Plaintext"), resp.get("CiphertextBlob")
    if not isinstance(key, bytes) or len(key) != _KEY_BYTES or not isinstance(blob, bytes):
        raise StoreError(f"store.file.kms_key_id ({kms_key_id}): GenerateDataKey returned no AES-256 key")
    document = {
        "format": FORMAT,
        "v": FORMAT_VERSION,
        "key_id": str(resp.get("KeyId") or kms_key_id),  # for operators: which key to grant kms:Decrypt on
        "ciphertext_blob": base64.b64encode(blob).decode("ascii"),
    }
    return key, (json.dumps(document) + "\n").encode()


def _create(holder: Path, document: bytes) -> bool:
    """Write ``holder`` only if absent, complete or not at all. False: it already exists."""
    tmp = holder.with_name(f".{holder.name}.{uuid.uuid4().hex}.tmp")  # one per writer, threads included
    try:
        make_private_dirs(holder.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # exact, whatever the umask
            os.write(fd, document)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, holder)  # unlike rename, fails when the target exists: create-if-absent
        except FileExistsError:
            return False
    except OSError as exc:
        raise StoreError(
            f"{holder}: cannot write the data key ({exc.strerror or type(exc).__name__})"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return True


def _decrypt(holder: Path, text: str, client: KmsDataKeyClient, kms_key_id: str) -> bytes:
    try:
        document = json.loads(text)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("not a data key file")
        if document.get("v") != FORMAT_VERSION:
            raise ValueError(f"format version {document.get('v')!r} is not {FORMAT_VERSION}")
        blob = base64.b64decode(str(document["ciphertext_blob"]), validate=True)
    except (ValueError, KeyError, binascii.Error) as exc:
        raise Corrupt(f"{holder}: malformed data key file ({type(exc).__name__})") from None
    try:
        resp = client.decrypt(CiphertextBlob=blob, KeyId=kms_key_id, EncryptionContext=CONTEXT)
    except aws.errors() as exc:
        if aws.error_code(exc) in _UNDECRYPTABLE:
            raise Corrupt(
                f"{holder}: does not decrypt under store.file.kms_key_id ({kms_key_id}): another key made "
                "it, or it was altered"
            ) from exc
        raise _kms_error(exc, f"store.file.kms_key_id ({kms_key_id}): Decrypt") from exc
    key = resp.get("Plaintext")
    if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
        raise Corrupt(f"{holder}: decrypts to something other than an AES-256 key")
    return key


def _kms_error(exc: BaseException, doing: str) -> RotatorError:
    # What retrying cannot fix is the operator's to fix in the config (exit 2); outages stay retryable.
    return aws.translate(exc, doing, denied=ConfigError, permanent=ConfigError)


def kms_file_key(store: StoreSettings, env: Mapping[str, str] | None = None) -> bytes:
    """The file store's key per ``store.file.kms_*`` (KMS client settings otherwise from ``store.aws``)."""
    fs = store.file
    assert fs.kms_key_id is not None
    client = aws.make_client(
        "kms",
        region=fs.kms_region or store.aws.region,
        endpoint_url=fs.kms_endpoint_url,
        timeout=store.aws.timeout,
        max_attempts=store.aws.max_attempts,
        setting="store.file.kms_region",
        proxy=aws.proxy_url(store.aws.proxy, env or {}),
    )
    try:
        return open_data_key(Path(fs.path), client, fs.kms_key_id)
    finally:
        client.close()
