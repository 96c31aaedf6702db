"""Structured logs: JSON lines when not on a terminal (or when asked), readable lines on one.

Audit events (logger ``rotator.audit``, one per protocol step) carry their fields as ``extra``:
``credential``, ``step``, ``outcome``, ``duration`` and, where a key is involved, ``nonce`` and
``key`` (its id masked by :func:`rotator.model.mask`, ``01a22d6a…9f3c``). Both formats show them;
in JSON a list field (``lagging``) is a JSON array.

Callers never pass secrets, and :class:`rotator.model.Secret` masks itself; the formatters add a
last line of defence anyway (I6): fields named like a secret are dropped, key-id fields are cut to
their masked length, and 64-hex-digit runs (the shape of a wallet private key and of a CLOB
passphrase) are blanked wherever they appear, message and traceback included.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from rotator.model import mask

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}

#: Extra fields that must never be written, whatever a caller passes.
SECRET_FIELDS = frozenset(
    {"secret", "api_secret", "passphrase", "api_passphrase", "private_key", "password", "token"}
)
#: Extra fields holding a key id: shown masked (``model.mask``).
KEY_FIELDS = frozenset({"key", "api_key", "previous", "key_prefix"})
_HEX_SECRET = re.compile(r"\b(?:0x)?[0-9a-fA-F]{64}\b")
REDACTED = "[redacted]"
#: Fields the text format already shows in the audit message (``"<credential> <step> <outcome>"``).
_IN_MESSAGE = frozenset({"credential", "step", "outcome"})


def scrub(text: str) -> str:
    """``text`` with anything shaped like a private key or a passphrase blanked."""
    return _HEX_SECRET.sub(REDACTED, text)


def _clean(name: str, value: Any) -> Any:
    if name in KEY_FIELDS and isinstance(value, str):
        return mask(value)
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        # A JSON array in JSON lines, each element cleaned as the field itself would be.
        return [_clean(name, v) for v in value]
    return scrub(str(value))


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``extra`` fields, cleaned: no secret-named field, key ids masked."""
    return {
        k: _clean(k, v)
        for k, v in record.__dict__.items()
        if k not in _STANDARD and not k.startswith("_") and k.lower() not in SECRET_FIELDS
    }


def _exception(record: logging.LogRecord, formatter: logging.Formatter) -> str | None:
    if not record.exc_info:
        return None
    return scrub(formatter.formatException(record.exc_info))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "ts": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for k, v in fields(record).items():
            out.setdefault(k, v)  # a field may not overwrite the envelope
        exc = _exception(record, self)
        if exc is not None:
            out["exc_type"] = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
            out["exc"] = exc
        return json.dumps(out, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level message  field=value ...`` for a human at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(
            f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in fields(record).items()
            if k not in _IN_MESSAGE and v is not None
        )
        line = f"{stamp} {record.levelname.lower():7} {scrub(record.getMessage())}"
        if extra:
            line += f"  {extra}"
        exc = _exception(record, self)
        if exc is not None:
            line += "\n" + exc
        return line


def setup_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure the root logger once, for the CLI. Libraries' chatter stays at warning.

    ``auto`` picks readable text on a terminal and JSON lines otherwise (a pod's log, a pipe).
    """
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if _isatty(stream) else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("rotator").setLevel(level.upper())


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or exotic stream is no terminal
        return False
