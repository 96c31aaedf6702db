"""The embedded-default store: rotation state and published keys in one AES-256-GCM encrypted file.

Writers serialise on an ``fcntl`` lock of a sidecar file and replace the data file atomically
(temp file, fsync, rename, fsync of the directory); readers take no lock, since a rename is atomic.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import json
import os
import stat
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rotator.errors import AccessDenied, ConfigError, Corrupt, StoreError, Unavailable, VersionConflict
from rotator.model import Ack, CredentialRef, CredentialState, Key, NewerSchema
from rotator.stores.base import (
    PUBLISHED_MEMORY,
    CheckResult,
    LeaseRecord,
    Snapshot,
    Version,
    is_credential_name,
    key_digest,
)

FORMAT = "rotator-file-store"
FORMAT_VERSION = 1
KEY_BYTES = 32
_NONCE_BYTES = 12
_HEX = frozenset(string.hexdigits)


def parse_file_key(text: str, *, source: str) -> bytes:
    """The 32-byte key written as standard or URL-safe base64 (padding optional) or 64 hex digits.

    :raises ConfigError: naming ``source``, never echoing ``text``.
    """
    s = text.strip()
    if len(s) == 2 * KEY_BYTES and set(s) <= _HEX:
        return bytes.fromhex(s)
    t = s.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(t + "=" * (-len(t) % 4), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{source}: must be {KEY_BYTES} bytes as base64 or {2 * KEY_BYTES} hex characters")
    return raw


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each mode 0700 whatever the umask.

    ``mkdir -p`` semantics otherwise: directories that already exist keep their mode (they are not
    ours). :raises OSError:
    """
    missing: list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue  # another process made it meanwhile: its mode is its own
        os.chmod(d, 0o700)  # exact: the umask may have taken bits from 0700


def generate_file_key() -> str:
    """A fresh random key, base64-encoded, for the demo and the docs."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


@dataclass(slots=True)
class _Entry:
    version: int
    state: dict[str, Any]  # CredentialState.to_dict(), parsed only when asked for


@dataclass(slots=True)
class _Contents:
    credentials: dict[str, _Entry]
    published: dict[str, dict[str, Any]]  # path -> Key.published()
    # credential name -> consumer id -> Ack.to_dict(); kept apart from the state so that a
    # consumer's acknowledgement never moves the credential's version.
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # path -> digests (base.key_digest) of the keys published there before the current one, oldest
    # first, at most PUBLISHED_MEMORY: what Store.ever_published answers from, no secret kept.
    history: dict[str, list[str]] = field(default_factory=dict)


def _aad(fmt: str, v: int) -> bytes:
    # Binds the ciphertext to the envelope's header: an edited header fails authentication.
    return f"{fmt}/v{v}".encode()


def _translate(exc: OSError, path: Path, doing: str) -> StoreError:
    reason = exc.strerror or type(exc).__name__
    message = f"{path}: cannot {doing} ({reason})"
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return AccessDenied(message)
    return Unavailable(message)


class FileStore:
    """The :class:`~rotator.stores.base.Store` kept in one encrypted file at ``path``.

    Versions are per-credential integers starting at 1, so a compare-and-set on one credential
    never conflicts with a write to another. Every call reads the file (other processes write
    it), but decrypts and parses it only when its bytes differ from the last ones parsed: each
    write seals with a fresh random nonce, so equal bytes are the same contents. With a thousand
    credentials that turns a pass's read from a ~1 MB decrypt and parse into a compare
    (bench/RESULTS.md). Safe to share between threads: every call opens its own file descriptors,
    ``flock`` locks belong to those, and the parsed contents are never changed in place.
    """

    backend = "file"

    def __init__(self, path: Path, key: bytes, previous_keys: Sequence[bytes] = ()) -> None:
        for k in (key, *previous_keys):
            if not isinstance(k, bytes) or len(k) != KEY_BYTES:
                raise ConfigError(f"file store key must be {KEY_BYTES} bytes (AES-256)")
        self._path = Path(path)
        self._lock_path = self._path.with_name(self._path.name + ".lock")
        # Only the lock holder writes it, so a fixed name is safe and a writer killed mid-write
        # leaves at most this one file, which the next writer removes.
        self._tmp_path = self._path.with_name(f".{self._path.name}.tmp")
        # Lease records (no secrets) live in a small plain JSON file beside the data file, so a
        # renewal every few seconds never makes every reader re-decrypt the big one.
        self._leases_path = self._path.with_name(self._path.name + ".leases.json")
        self._aead = AESGCM(key)
        # Keys the file may still be sealed with during a key change: read with them, never write.
        self._previous = tuple(AESGCM(k) for k in previous_keys if k != key)
        # (file bytes, their parse): only replaced, never changed; writers work on copies.
        self._parsed: tuple[bytes, _Contents] | None = None

    def __repr__(self) -> str:
        return f"FileStore({str(self._path)!r})"

    @property
    def path(self) -> Path:
        return self._path

    # -- the Store protocol ---------------------------------------------------------------------

    def load(self, ref: CredentialRef) -> Snapshot:
        return self._snapshot(self._read(), ref.name)

    def names(self) -> list[str]:
        return sorted(n for n in self._read().credentials if is_credential_name(n))

    def save(self, ref: CredentialRef, state: CredentialState, expected: Version | None) -> Version:
        raw = state.to_dict()
        with self._locked():
            contents = self._read_copy()
            entry = contents.credentials.get(ref.name)
            stored = entry.version if entry else None
            if expected != stored or isinstance(expected, bool):
                raise VersionConflict(
                    f"credential {ref.name!r}: stored version is {stored}, expected {expected!r} "
                    "(another writer got there first)"
                )
            version = (stored or 0) + 1
            contents.credentials[ref.name] = _Entry(version, raw)
            self._write(contents)
        return version

    def publish(self, ref: CredentialRef, key: Key) -> None:
        raw = key.published()
        with self._locked():
            contents = self._read_copy()
            before = contents.published.get(ref.path)
            if before == raw:
                return
            if before is not None:
                earlier = self._digest(before)
                kept = [d for d in contents.history.get(ref.path, []) if d != earlier]
                contents.history[ref.path] = [*kept, earlier][-PUBLISHED_MEMORY:]
            contents.published[ref.path] = raw
            self._write(contents)

    def ever_published(self, ref: CredentialRef, keys: Sequence[Key]) -> set[str]:
        contents = self._read()
        seen = set(contents.history.get(ref.path, []))
        current = contents.published.get(ref.path)
        if current is not None:
            seen.add(self._digest(current))
        return {k.api_key for k in keys if key_digest(k) in seen}

    def _digest(self, raw: dict[str, Any]) -> str:
        try:
            return key_digest(Key.from_dict(raw))
        except ValueError as exc:  # Key.from_dict names the field, never a value
            raise self._corrupt(f"a published key is malformed ({exc})") from None

    def read_published(self, ref: CredentialRef) -> Key | None:
        raw = self._read().published.get(ref.path)
        if raw is None:
            return None
        try:
            return Key.from_dict(raw)
        except ValueError as exc:  # Key.from_dict names the field, never a value
            raise Corrupt(f"{self._path}: published key at {ref.path!r} is malformed ({exc})") from None

    def ack(self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float) -> None:
        self._write_ack(ref, Ack(consumer_id, key_prefix, at))

    def report_refusal(
        self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float, refused_at: float, count: int
    ) -> None:
        self._write_ack(ref, Ack(consumer_id, key_prefix, at, refused_at, count))

    def _write_ack(self, ref: CredentialRef, ack: Ack) -> None:
        consumer_id, entry = ack.consumer_id, ack.to_dict()
        with self._locked():
            contents = self._read_copy()
            contents.acks.setdefault(ref.name, {})[consumer_id] = entry
            self._write(contents)

    def acks(self, ref: CredentialRef) -> list[Ack]:
        out: list[Ack] = []
        for raw in self._read().acks.get(ref.name, {}).values():
            try:
                out.append(Ack.from_dict(raw))
            except ValueError:
                continue  # the file is authenticated, so only our own older format could land here
        return out

    def load_lease(self, name: str) -> LeaseRecord | None:
        return self._leases().get(name)

    def save_lease(self, name: str, holder: str, until: float, expected: LeaseRecord | None) -> LeaseRecord:
        with self._locked():
            records = self._leases()
            stored = records.get(name)
            if (stored.version if stored else None) != (expected.version if expected else None):
                raise VersionConflict(
                    f"{self._leases_path}: lease {name!r} changed since it was read (another writer)"
                )
            version = int(stored.version if stored else 0) + 1
            records[name] = LeaseRecord(holder, float(until), version)
            doc = {
                n: {"holder": r.holder, "until": r.until, "version": r.version} for n, r in records.items()
            }
            self._replace(self._leases_path, json.dumps(doc, sort_keys=True).encode() + b"\n")
        return records[name]

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""

    def rekey(self) -> Literal["rekeyed", "current", "absent"]:
        """Re-seal the file under this store's key if a previous key sealed it (a key change).

        ``"rekeyed"``: it was sealed with a previous key and now is not; ``"current"``: it already was
        sealed with this key; ``"absent"``: there is no file yet (it will be made with this key).
        Contents and versions are unchanged. Any write does the same as a side effect; this makes the
        switch explicit, so the previous key can be retired at once.

        :raises Corrupt: no key given to this store decrypts the file (it is left as it was).
        """
        if not self._path.exists():
            return "absent"  # and make no directory or lock file for nothing
        with self._locked():
            try:
                blob = self._path.read_bytes()
            except FileNotFoundError:
                return "absent"
            except OSError as exc:
                raise _translate(exc, self._path, "read") from exc
            contents, previous = self._unseal(blob)
            if not previous:
                return "current"
            self._write(contents)
        return "rekeyed"

    def _leases(self) -> dict[str, LeaseRecord]:
        try:
            raw = json.loads(self._leases_path.read_bytes())
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise _translate(exc, self._leases_path, "read") from exc
        except ValueError:
            raise Corrupt(f"{self._leases_path}: not a lease file (unreadable JSON)") from None
        out: dict[str, LeaseRecord] = {}
        for name, item in raw.items() if isinstance(raw, dict) else ():
            try:
                out[name] = LeaseRecord(str(item["holder"]), float(item["until"]), int(item["version"]))
            except (KeyError, TypeError, ValueError):
                raise Corrupt(f"{self._leases_path}: lease {name!r} is malformed") from None
        return out

    # -- reading ----------------------------------------------------------------------------------

    def _snapshot(self, contents: _Contents, name: str) -> Snapshot:
        entry = contents.credentials.get(name)
        if entry is None:
            return Snapshot(CredentialState(), None)
        try:
            state = CredentialState.from_dict(entry.state)
        except NewerSchema as exc:
            raise Corrupt(f"{self._path}: credential {name!r}: {exc}") from None
        except ValueError as exc:
            raise Corrupt(f"{self._path}: state of credential {name!r} is malformed ({exc})") from None
        return Snapshot(state, entry.version)

    def _read(self) -> _Contents:
        """The file's contents; shared with other calls, so never to be changed (see _read_copy)."""
        try:
            blob = self._path.read_bytes()
        except FileNotFoundError:
            return _Contents({}, {})
        except OSError as exc:
            raise _translate(exc, self._path, "read") from exc
        parsed = self._parsed
        if parsed is not None and parsed[0] == blob:
            return parsed[1]
        contents, _ = self._unseal(blob)
        self._parsed = (blob, contents)
        return contents

    def _read_copy(self) -> _Contents:
        """The file's contents for a writer: the containers it changes are its own (entries are
        replaced, never changed, so the copies can share them)."""
        c = self._read()
        return _Contents(
            dict(c.credentials), dict(c.published), {n: dict(a) for n, a in c.acks.items()}, dict(c.history)
        )

    def _corrupt(self, why: str) -> Corrupt:
        return Corrupt(f"{self._path}: {why}")

    def _unseal(self, blob: bytes) -> tuple[_Contents, bool]:
        """The contents of ``blob``, and whether a previous key (not this store's) sealed it."""
        try:
            envelope = json.loads(blob)
        except ValueError:
            raise self._corrupt("not a rotator file store (unreadable envelope: truncated?)") from None
        if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
            raise self._corrupt("not a rotator file store (no format header)")
        v = envelope.get("v")
        if v != FORMAT_VERSION or isinstance(v, bool):
            shown = v if isinstance(v, int) else "?"
            raise self._corrupt(
                f"unsupported file store version {shown} (this rotator reads {FORMAT_VERSION})"
            )
        try:
            nonce = base64.b64decode(envelope["nonce"], validate=True)
            ciphertext = base64.b64decode(envelope["ciphertext"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise self._corrupt("malformed envelope (nonce or ciphertext)") from None
        if len(nonce) != _NONCE_BYTES:
            raise self._corrupt("malformed envelope (nonce length)")
        for i, aead in enumerate((self._aead, *self._previous)):
            try:
                plaintext = aead.decrypt(nonce, ciphertext, _aad(FORMAT, FORMAT_VERSION))
            except InvalidTag:
                continue
            return self._parse(plaintext), i > 0
        if self._previous:
            raise self._corrupt(
                "cannot decrypt with the key or the previous key (wrong keys or tampered file)"
            )
        raise self._corrupt("cannot decrypt (wrong key or tampered file)")

    def _parse(self, plaintext: bytes) -> _Contents:
        # Authenticated, so only rotator wrote it; these checks catch our own bugs and version skew.
        # Messages name the part that is wrong and never echo contents (they hold secrets).
        try:
            data = json.loads(plaintext)
        except ValueError:
            raise self._corrupt("decrypted contents are not JSON") from None
        if not isinstance(data, dict):
            raise self._corrupt("decrypted contents are not a JSON object")
        creds, published = data.get("credentials", {}), data.get("published", {})
        if not isinstance(creds, dict) or not isinstance(published, dict):
            raise self._corrupt("decrypted contents lack 'credentials' or 'published' objects")
        credentials: dict[str, _Entry] = {}
        for name, item in creds.items():
            version = item.get("version") if isinstance(item, dict) else None
            state = item.get("state") if isinstance(item, dict) else None
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise self._corrupt(f"credential {name!r} has no valid version")
            if not isinstance(state, dict):
                raise self._corrupt(f"credential {name!r} has no state object")
            credentials[name] = _Entry(version, state)
        for path, key in published.items():
            if not isinstance(key, dict):
                raise self._corrupt(f"published key at {path!r} is not a JSON object")
        acks = data.get("acks", {})
        if not isinstance(acks, dict) or not all(isinstance(a, dict) for a in acks.values()):
            raise self._corrupt("decrypted contents have a malformed 'acks' object")
        history = data.get("history", {})
        if not isinstance(history, dict) or not all(
            isinstance(h, list) and all(isinstance(d, str) for d in h) for h in history.values()
        ):
            raise self._corrupt("decrypted contents have a malformed 'history' object")
        return _Contents(credentials, published, acks, history)

    # -- writing ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            make_private_dirs(self._path.parent)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _translate(exc, self._lock_path, "open the lock file") from exc
        with contextlib.suppress(OSError):  # exact whatever the umask; not ours to change if we can't
            if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
                os.fchmod(fd, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise _translate(exc, self._lock_path, "lock") from exc
            yield
        finally:
            os.close(fd)  # releases the lock; so does the process dying, which is why it is flock

    def _seal(self, contents: _Contents) -> bytes:
        creds = {n: {"version": e.version, "state": e.state} for n, e in contents.credentials.items()}
        document: dict[str, Any] = {"credentials": creds, "published": contents.published}
        if contents.acks:
            document["acks"] = contents.acks
        if contents.history:
            document["history"] = contents.history
        plaintext = json.dumps(document, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = self._aead.encrypt(nonce, plaintext, _aad(FORMAT, FORMAT_VERSION))
        envelope = {
            "format": FORMAT,
            "v": FORMAT_VERSION,
            "nonce": base64.b64encode(nonce).decode("ascii"),
            "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
        }
        return json.dumps(envelope).encode() + b"\n"

    def _write(self, contents: _Contents) -> None:
        """Replace the file with ``contents``. The caller holds the lock."""
        blob = self._seal(contents)
        self._replace(self._path, blob)
        self._parsed = (blob, contents)  # the next read of these bytes needs no decrypt

    def _replace(self, path: Path, blob: bytes) -> None:
        """Atomically replace ``path`` with ``blob`` (temp file, fsync, rename). The caller holds the lock."""
        tmp = self._tmp_path
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # left by a writer that died mid-write
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # exact, whatever the umask
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _translate(exc, path, "write") from exc
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        # Makes the rename itself durable: without it a power loss can bring back the old file.
        # If this fails the new file is already in place: Unavailable then means "maybe written",
        # and the caller's next load tells which.
        try:
            dfd = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise _translate(exc, self._path.parent, "sync the directory") from exc

    # -- check ------------------------------------------------------------------------------------

    def check(self, ref: CredentialRef) -> CheckResult:
        # Taking the lock opens (creates, the first time) the lock file beside the data file: the
        # directory takes new files, as the atomic write's temp file needs. Nothing else is written.
        try:
            with self._locked():
                self.load(ref)
                self.read_published(ref)
            if self._path.exists() and not os.access(self._path, os.R_OK | os.W_OK):
                return CheckResult("error", f"{self._path}: not readable and writable by this user")
        except StoreError as exc:
            return CheckResult("error", str(exc))
        return CheckResult("ready", f"{self._path}: readable and writable, state of {ref.name!r} readable")
