"""What the contract suite cannot say about the file store: its format, its failures, its key."""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rotator.errors import AccessDenied, ConfigError, Corrupt, Unavailable
from rotator.model import CredentialRef, CredentialState, Key, Pending, Retiring, Secret
from rotator.stores.file import FileStore, generate_file_key, parse_file_key

REF = CredentialRef("mm-1", "rotator/mm-1")
API_SECRET = "dGhlLWFwaS1zZWNyZXQtdmFsdWUtMDEyMzQ1Njc4OQ=="
PASSPHRASE = "the-passphrase-f00dbabe0123456789"
PENDING_SECRET = "cGVuZGluZy1zZWNyZXQtdmFsdWUtYWJjZGVmZ2g="


def make_key(nonce: int, secret: str = API_SECRET, passphrase: str = PASSPHRASE) -> Key:
    return Key(
        api_key=f"0000000{nonce}-aaaa-4bbb-8ccc-dddddddddddd",
        api_secret=Secret(secret),
        api_passphrase=Secret(passphrase),
        address="0x" + "cd" * 20,
        nonce=nonce,
        created_at=1_700_000_000.0 + nonce,
    )


STATE = CredentialState(
    current=make_key(1),
    pending=Pending(2, 1_700_000_100.0, "w:1", 1_700_000_160.0, make_key(2, PENDING_SECRET, "pp-2")),
    retiring=(Retiring(make_key(0, "b2xkLXNlY3JldA==", "old-pp"), 1_700_000_050.0, 1_700_000_950.0),),
    next_nonce=3,
    rotations=1,
)


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "rotator" / "state.store"


@pytest.fixture
def store(path: Path, key: bytes) -> FileStore:
    return FileStore(path, key)


def envelope(path: Path) -> dict[str, object]:
    data = json.loads(path.read_bytes())
    assert isinstance(data, dict)
    return data


def write_sealed(path: Path, key: bytes, document: object) -> None:
    """Write ``document`` in the on-disk format, as the spec describes it, without the store."""
    nonce = os.urandom(12)
    plaintext = json.dumps(document).encode()
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, b"rotator-file-store/v1")
    env = {
        "format": "rotator-file-store",
        "v": 1,
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(env))


# -- format and files -----------------------------------------------------------------------------


def test_versions_are_per_credential_integers_from_one(store: FileStore) -> None:
    assert store.save(REF, STATE, None) == 1
    assert store.save(REF, STATE, 1) == 2
    assert store.save(CredentialRef("mm-2", "p2"), STATE, None) == 1


def test_missing_file_reads_empty_and_creates_nothing(store: FileStore, path: Path) -> None:
    assert store.load(REF).version is None
    assert store.read_published(REF) is None
    assert store.names() == []
    assert not path.parent.exists()


def test_on_disk_envelope_and_fresh_nonce_per_write(store: FileStore, path: Path) -> None:
    store.save(REF, STATE, None)
    first = envelope(path)
    assert set(first) == {"format", "v", "nonce", "ciphertext"}
    assert (first["format"], first["v"]) == ("rotator-file-store", 1)
    assert len(base64.b64decode(str(first["nonce"]))) == 12
    store.save(REF, STATE, 1)
    assert envelope(path)["nonce"] != first["nonce"]


def test_reads_a_file_written_to_the_documented_format(path: Path, key: bytes) -> None:
    write_sealed(
        path,
        key,
        {
            "credentials": {"mm-1": {"version": 7, "state": STATE.to_dict()}},
            "published": {"rotator/mm-1": make_key(1).to_dict()},
        },
    )
    store = FileStore(path, key)
    assert store.load(REF).state == STATE
    assert store.load(REF).version == 7
    assert store.read_published(REF) == make_key(1)


def test_files_are_private_whatever_the_umask(path: Path, key: bytes) -> None:
    old = os.umask(0)
    try:
        FileStore(path, key).save(REF, STATE, None)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.with_name(path.name + ".lock").stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_no_secret_appears_in_the_file(store: FileStore, path: Path) -> None:
    store.save(REF, STATE, None)
    store.publish(REF, make_key(1))
    raw = path.read_bytes()
    for secret in (API_SECRET, PASSPHRASE, PENDING_SECRET, "b2xkLXNlY3JldA==", "old-pp"):
        assert secret.encode() not in raw
        assert base64.b64encode(secret.encode()) not in raw
    assert b"0000001-aaaa" not in raw  # key ids are not readable either


def test_a_writer_killed_mid_write_leaves_a_temp_file_the_next_writer_removes(
    store: FileStore, path: Path
) -> None:
    store.save(REF, STATE, None)
    leftover = path.with_name(f".{path.name}.tmp")
    leftover.write_bytes(b'{"format": "rotator-file-st')
    assert store.load(REF).version == 1  # readers never look at it
    store.save(REF, STATE, 1)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".lock"]


def test_republishing_the_same_key_does_not_rewrite_the_file(store: FileStore, path: Path) -> None:
    store.publish(REF, make_key(1))
    before = path.stat()
    store.publish(REF, make_key(1))
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


# -- failures ---------------------------------------------------------------------------------------


def test_wrong_key_is_corrupt_naming_the_file_and_no_key(store: FileStore, path: Path, key: bytes) -> None:
    store.save(REF, STATE, None)
    before = path.read_bytes()
    other = os.urandom(32)
    wrong = FileStore(path, other)
    for attempt in (
        lambda: wrong.load(REF),
        lambda: wrong.read_published(REF),
        lambda: wrong.save(REF, CredentialState(), 1),
        lambda: wrong.publish(REF, make_key(5)),
    ):
        with pytest.raises(Corrupt) as info:
            attempt()
        text = str(info.value)
        assert text == f"{path}: cannot decrypt (wrong key or tampered file)"
        for k in (key, other):
            assert base64.b64encode(k).decode()[:12] not in text
            assert k.hex()[:12] not in text
    assert path.read_bytes() == before  # never a silent reset


@pytest.mark.parametrize("field", ["nonce", "ciphertext"])
@pytest.mark.parametrize("where", [0, 6, -1], ids=["first", "middle", "last"])
def test_a_flipped_byte_is_corrupt(store: FileStore, path: Path, field: str, where: int) -> None:
    store.save(REF, STATE, None)
    env = envelope(path)
    data = bytearray(base64.b64decode(str(env[field])))
    data[where] ^= 0x01
    env[field] = base64.b64encode(bytes(data)).decode()
    path.write_text(json.dumps(env))
    with pytest.raises(Corrupt, match="cannot decrypt"):
        store.load(REF)


@pytest.mark.parametrize("cut", [0, 1, 0.5, -2])
def test_a_truncated_file_is_corrupt(store: FileStore, path: Path, cut: float) -> None:
    store.save(REF, STATE, None)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(cut * len(raw)) if isinstance(cut, float) else cut])
    with pytest.raises(Corrupt, match=re.escape(str(path))):
        store.load(REF)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"v": 2}, "unsupported file store version 2"),
        ({"format": "something-else"}, "not a rotator file store"),
        ({"nonce": "not base64!"}, "malformed envelope"),
        ({"nonce": base64.b64encode(b"short").decode()}, "malformed envelope"),
        ({"ciphertext": None}, "malformed envelope"),
    ],
)
def test_an_edited_envelope_is_corrupt(
    store: FileStore, path: Path, edit: dict[str, object], message: str
) -> None:
    store.save(REF, STATE, None)
    path.write_text(json.dumps({**envelope(path), **edit}))
    with pytest.raises(Corrupt, match=message):
        store.load(REF)


@pytest.mark.parametrize(
    "content", [b"", b"[]", b"not json at all", b'{"format": "rotator-file-store", "v": 1}']
)
def test_a_foreign_file_is_corrupt(path: Path, key: bytes, content: bytes) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(Corrupt, match=re.escape(str(path))):
        FileStore(path, key).load(REF)


def test_a_malformed_state_is_corrupt_for_that_credential_only(path: Path, key: bytes) -> None:
    bad = make_key(1).to_dict() | {"nonce": -1}
    write_sealed(
        path,
        key,
        {
            "credentials": {
                "mm-1": {"version": 1, "state": {"current": bad}},
                "fine": {"version": 3, "state": CredentialState(next_nonce=4).to_dict()},
            },
            "published": {"rotator/mm-1": {"api_key": "k"}},
        },
    )
    store = FileStore(path, key)
    with pytest.raises(Corrupt, match=r"state of credential 'mm-1' is malformed.*nonce") as info:
        store.load(REF)
    assert API_SECRET not in str(info.value)
    assert store.load(CredentialRef("fine", "f")).state.next_nonce == 4
    assert store.names() == ["fine", "mm-1"]  # listed, so an operator can see it
    with pytest.raises(Corrupt, match=r"published key at 'rotator/mm-1' is malformed.*api_secret"):
        store.read_published(REF)


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"credentials": []},
        {"credentials": {"mm-1": {"state": {}}}},
        {"credentials": {"mm-1": {"version": 0, "state": {}}}},
        {"credentials": {"mm-1": {"version": 1, "state": "x"}}},
        {"published": {"p": "x"}},
    ],
)
def test_malformed_decrypted_contents_are_corrupt(path: Path, key: bytes, document: object) -> None:
    write_sealed(path, key, document)
    with pytest.raises(Corrupt, match=re.escape(str(path))):
        FileStore(path, key).load(REF)


def test_permission_denied_is_access_denied(
    store: FileStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(REF, STATE, None)

    def refuse(self: Path) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(AccessDenied, match=re.escape(f"{path}: cannot read (Permission denied)")):
        store.load(REF)


def test_a_path_under_a_regular_file_is_unavailable(tmp_path: Path, key: bytes) -> None:
    (tmp_path / "file").write_text("")
    store = FileStore(tmp_path / "file" / "state.store", key)
    with pytest.raises(Unavailable):
        store.save(REF, STATE, None)
    with pytest.raises(Unavailable):
        store.load(REF)


# -- the key ----------------------------------------------------------------------------------------

RAW = bytes([0xFB, 0xFF, 0xBE]) * 10 + b"\x00\x01"  # encodes to '+' and '/' in standard base64


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(RAW).decode(),
        base64.b64encode(RAW).decode().rstrip("="),
        base64.urlsafe_b64encode(RAW).decode(),
        base64.urlsafe_b64encode(RAW).decode().rstrip("="),
        RAW.hex(),
        RAW.hex().upper(),
        f"  {RAW.hex()}\n",
    ],
    ids=["base64", "base64-unpadded", "urlsafe", "urlsafe-unpadded", "hex", "HEX", "hex-with-newline"],
)
def test_parse_file_key_accepts_base64_and_hex(text: str) -> None:
    assert "+" in base64.b64encode(RAW).decode()
    assert parse_file_key(text, source="store.file.key_env (ROTATOR_FILE_KEY)") == RAW


@pytest.mark.parametrize(
    "text",
    [
        "",
        "correct-horse-battery-staple-passphrase",
        base64.b64encode(RAW[:31]).decode(),
        base64.b64encode(RAW + b"\x00").decode(),
        RAW.hex()[:-1],
        RAW.hex() + "a",
        RAW.hex()[:-1] + "g",
        base64.b64encode(RAW).decode()[:20] + " " + base64.b64encode(RAW).decode()[20:],
    ],
    ids=["empty", "words", "31-bytes", "33-bytes", "63-hex", "65-hex", "non-hex", "inner-space"],
)
def test_parse_file_key_rejects_anything_else_without_echoing_it(text: str) -> None:
    source = "store.file.key_env (ROTATOR_FILE_KEY)"
    with pytest.raises(ConfigError) as info:
        parse_file_key(text, source=source)
    message = str(info.value)
    assert message == f"{source}: must be 32 bytes as base64 or 64 hex characters"
    assert info.value.__context__ is None  # no chained error that could carry the text


def test_generate_file_key_makes_distinct_parseable_keys() -> None:
    a, b = generate_file_key(), generate_file_key()
    assert a != b
    assert len(parse_file_key(a, source="t")) == 32


def test_a_key_of_the_wrong_size_is_refused_without_echo(path: Path) -> None:
    with pytest.raises(ConfigError, match="32 bytes") as info:
        FileStore(path, b"sixteen-byte-key")
    assert "sixteen" not in str(info.value)


def test_repr_shows_the_path_not_the_key(path: Path, key: bytes) -> None:
    text = repr(FileStore(path, key))
    assert text == f"FileStore({str(path)!r})"


# -- directories, and changing the file's key ---------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o777], ids=oct)
def test_every_directory_it_creates_is_private_whatever_the_umask(
    tmp_path: Path, key: bytes, umask: int
) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "a" / "b" / "c" / "keys.enc"
    old = os.umask(umask)
    try:
        FileStore(path, key).save(REF, STATE, None)
    finally:
        os.umask(old)
    for made in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755  # not ours: left as it was
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.with_name(path.name + ".lock").stat().st_mode) == 0o600
    assert FileStore(path, key).load(REF).state == STATE


def test_a_directory_it_did_not_create_keeps_its_mode(tmp_path: Path, key: bytes) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    shared.chmod(0o750)
    FileStore(shared / "keys.enc", key).save(REF, STATE, None)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o750


def test_a_file_sealed_under_the_previous_key_is_read_and_rekeyed_under_the_new_one(
    path: Path, key: bytes
) -> None:
    FileStore(path, key).save(REF, STATE, None)
    new = os.urandom(32)
    switching = FileStore(path, new, previous_keys=(key,))
    assert switching.load(REF).state == STATE and switching.load(REF).version == 1
    assert switching.rekey() == "rekeyed"
    assert FileStore(path, new).load(REF).version == 1  # the new key alone reads it: versions kept
    with pytest.raises(Corrupt, match="cannot decrypt"):
        FileStore(path, key).load(REF)
    assert switching.rekey() == "current"
    assert FileStore(path.with_name("none.enc"), new).rekey() == "absent"
    assert not path.with_name("none.enc").exists() and not path.with_name("none.enc.lock").exists()


def test_any_write_during_a_key_change_seals_under_the_new_key(path: Path, key: bytes) -> None:
    FileStore(path, key).save(REF, STATE, None)
    new = os.urandom(32)
    FileStore(path, new, previous_keys=(key,)).publish(REF, make_key(3))
    assert FileStore(path, new).read_published(REF) == make_key(3)
    assert FileStore(path, new).load(REF).state == STATE


def test_a_file_under_neither_key_is_corrupt_and_rekey_leaves_it(path: Path, key: bytes) -> None:
    FileStore(path, key).save(REF, STATE, None)
    before = path.read_bytes()
    store = FileStore(path, os.urandom(32), previous_keys=(os.urandom(32),))
    with pytest.raises(Corrupt, match="cannot decrypt"):
        store.rekey()
    assert path.read_bytes() == before
