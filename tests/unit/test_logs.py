"""rotator.logs: JSON lines off a terminal, readable lines on one, audit fields in both, and the last
line of defence against secrets (I6)."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from rotator.logs import JsonFormatter, TextFormatter, setup_logging
from rotator.model import Secret

PRIVATE_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
PASSPHRASE = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def record(msg: str = "%s %s %s", *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"bad thing near {PASSPHRASE}")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("rotator.audit", logging.INFO, __file__, 1, msg, args or None, exc_info)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


AUDIT = {
    "credential": "mm1",
    "step": "create",
    "outcome": "created",
    "duration": 0.0123,
    "nonce": 4,
    "key": "0190b1e2",
}


def test_json_line_carries_the_audit_fields() -> None:
    line = JsonFormatter().format(record("%s %s %s", "mm1", "create", "created", **AUDIT))
    assert "\n" not in line
    out = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", out["ts"])
    assert out["level"] == "info" and out["logger"] == "rotator.audit"
    assert out["msg"] == "mm1 create created"
    for k, v in AUDIT.items():
        assert out[k] == v


def test_text_line_is_readable_and_keeps_the_fields() -> None:
    line = TextFormatter().format(record("%s %s %s", "mm1", "create", "created", **AUDIT))
    assert re.match(r"\d\d:\d\d:\d\d info    mm1 create created  ", line)
    assert "nonce=4" in line and "key=0190b1e2" in line and "duration=0.0123" in line
    assert "credential=" not in line  # already in the message


@pytest.mark.parametrize("fmt", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_no_secret_gets_through(fmt: logging.Formatter) -> None:
    rec = record(
        "signing with %s and %s",
        PRIVATE_KEY,
        Secret("hunter2-passphrase"),
        exc=True,
        api_secret="c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=",
        passphrase="whatever",
        key="0190b1e2-7c3d-7aaa-8bbb-1234567890ab",
        previous="0190aaaa-0000-7000-8000-000000000000",
        note=f"wallet {PRIVATE_KEY.removeprefix('0x')}",
    )
    out = fmt.format(rec)
    for leaked in (
        PRIVATE_KEY.removeprefix("0x"),
        PASSPHRASE,
        "hunter2",
        "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=",
        "whatever",
        "7c3d-7aaa",
        "0000-7000",
    ):
        assert leaked not in out, leaked
    # key ids masked to their two ends (``model.mask``), not dropped
    assert "0190b1e2" in out and "90ab" in out and "0190aaaa" in out
    assert "[redacted]" in out
    assert "ValueError" in out  # the exception is still reported


def test_list_fields_are_json_arrays() -> None:
    out = json.loads(JsonFormatter().format(record("forced", lagging=["vm", "bot-2"], keys=("a", "b"))))
    assert out["lagging"] == ["vm", "bot-2"] and out["keys"] == ["a", "b"]


def test_list_fields_are_scrubbed_too() -> None:
    out = JsonFormatter().format(record("forced", lagging=[PRIVATE_KEY, "vm"]))
    assert PRIVATE_KEY.removeprefix("0x") not in out and json.loads(out)["lagging"][1] == "vm"


def test_a_field_cannot_overwrite_the_envelope() -> None:
    out = json.loads(JsonFormatter().format(record("real message", msg_extra=1, logger_name="x")))
    assert out["msg"] == "real message" and out["logger"] == "rotator.audit"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    rot_level = logging.getLogger("rotator").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("rotator").setLevel(rot_level)


@pytest.mark.parametrize(
    ("stream", "fmt", "is_json"),
    [
        (io.StringIO(), "auto", True),  # a pipe or a pod's log: JSON lines
        (_Tty(), "auto", False),  # a terminal: readable
        (_Tty(), "json", True),
        (io.StringIO(), "text", False),
    ],
)
def test_setup_logging_picks_the_format(
    restore_logging: None, stream: io.StringIO, fmt: str, is_json: bool
) -> None:
    setup_logging(fmt, "info", stream=stream)
    logging.getLogger("rotator.audit").info("hello", extra={"credential": "mm1", "step": "read"})
    logging.getLogger("rotator.audit").debug("hidden at info")
    logging.getLogger("urllib3").info("library chatter stays out")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    if is_json:
        assert json.loads(lines[0])["credential"] == "mm1"
    else:
        assert lines[0].endswith("hello") and not lines[0].startswith("{")
