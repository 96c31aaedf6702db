"""The file store parses its file once per distinct contents: what another writer does is still seen."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rotator.errors import Unavailable
from rotator.model import CredentialRef, CredentialState, Key, Secret
from rotator.stores.file import FileStore

REF = CredentialRef("mm-1", "rotator/mm-1")
OTHER = CredentialRef("mm-2", "rotator/mm-2")


def make_key(nonce: int) -> Key:
    return Key(
        api_key=f"0000000{nonce}-aaaa-4bbb-8ccc-dddddddddddd",
        api_secret=Secret(base64.urlsafe_b64encode(bytes([nonce]) * 32).decode()),
        api_passphrase=Secret(f"pp-{nonce}"),
        address="0x" + "cd" * 20,
        nonce=nonce,
        created_at=1_700_000_000.0 + nonce,
    )


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


def test_a_write_by_another_instance_is_seen(tmp_path: Path, key: bytes) -> None:
    mine, theirs = FileStore(tmp_path / "k.enc", key), FileStore(tmp_path / "k.enc", key)
    v1 = mine.save(REF, CredentialState(next_nonce=1), None)
    assert mine.load(REF).state.next_nonce == 1  # parsed and kept
    theirs.save(REF, CredentialState(next_nonce=7), v1)
    theirs.publish(REF, make_key(3))
    snap = mine.load(REF)
    assert (snap.state.next_nonce, snap.version) == (7, 2)
    published = mine.read_published(REF)
    assert published is not None and published.nonce == 3


def test_a_write_by_another_process_is_seen(tmp_path: Path, key: bytes) -> None:
    store = FileStore(tmp_path / "k.enc", key)
    v1 = store.save(REF, CredentialState(next_nonce=1), None)
    assert store.load(REF).state.next_nonce == 1
    script = (
        "import sys; from pathlib import Path; from rotator.model import CredentialRef, CredentialState; "
        "from rotator.stores.file import FileStore; "
        "FileStore(Path(sys.argv[1]), bytes.fromhex(sys.argv[2]))"
        f".save(CredentialRef('mm-1', 'rotator/mm-1'), CredentialState(next_nonce=9), {v1!r})"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "k.enc"), key.hex()], check=True)
    assert store.load(REF).state.next_nonce == 9


def test_writers_never_change_what_readers_were_handed(tmp_path: Path, key: bytes) -> None:
    store = FileStore(tmp_path / "k.enc", key)
    store.save(REF, CredentialState(next_nonce=1), None)
    store.ack(REF, "bot-1", "0000000", 1.0)
    before = store.load(REF)
    acks_before = store.acks(REF)
    store.save(OTHER, CredentialState(next_nonce=5), None)
    store.publish(OTHER, make_key(5))
    store.ack(REF, "bot-2", "0000000", 2.0)
    assert before.state.next_nonce == 1 and len(acks_before) == 1
    assert {a.consumer_id for a in store.acks(REF)} == {"bot-1", "bot-2"}
    assert store.load(OTHER).state.next_nonce == 5
    assert store.read_published(REF) is None


def test_a_failed_write_leaves_reads_on_the_file(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "k.enc"
    store = FileStore(path, key)
    v1 = store.save(REF, CredentialState(next_nonce=1), None)
    assert store.load(REF).state.next_nonce == 1
    blocker = tmp_path / ".k.enc.tmp"  # the writer's temp file: a directory there fails the write
    blocker.mkdir()
    with pytest.raises(Unavailable):
        store.save(REF, CredentialState(next_nonce=2), v1)
    blocker.rmdir()
    assert (store.load(REF).state.next_nonce, store.load(REF).version) == (1, v1)
