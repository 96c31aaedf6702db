"""I6 for CLOB error bodies (issue 22 item 14): the one function every error body's words pass through
on every route. tests/integration/test_clob_error_echo.py runs every command against a server that
repeats the request's headers in its errors; this pins each of the function's two cuts alone."""

from __future__ import annotations

import base64
import os

from rotator.clob.adapter import MAX_REASON, error_reason


def test_what_the_request_sent_is_cut_whatever_its_shape() -> None:
    # A passphrase no pattern would call key material: only knowing what was sent finds it.
    sent = {"POLY_PASSPHRASE": "hunter2-is-my-pass", "POLY_TIMESTAMP": "1764547173", "POLY_NONCE": "3"}
    reason = error_reason({"error": "bad passphrase hunter2-is-my-pass at 1764547173"}, sent)
    assert reason is not None and "hunter2" not in reason
    assert "1764547173" in reason  # short values (timestamp, nonce) are not secrets and stay


def test_key_material_the_request_never_sent_is_cut_by_its_shape() -> None:
    secret = base64.urlsafe_b64encode(os.urandom(32)).decode()  # an API secret: never sent
    passphrase = os.urandom(32).hex()
    reason = error_reason({"error": f"key secret={secret} pass={passphrase} is Unauthorized/Invalid"}, {})
    assert reason is not None
    assert secret not in reason and passphrase not in reason and secret[:20] not in reason
    assert "Unauthorized/Invalid" in reason  # the server's words stay legible


def test_a_reason_is_one_bounded_line_and_only_a_json_error_field_counts() -> None:
    reason = error_reason({"error": "line one\nline two\x1b[31m" + "x" * 1000}, {})
    assert reason is not None and "\n" not in reason and "\x1b" not in reason
    assert len(reason) <= MAX_REASON + 3
    assert error_reason({"message": "anything"}, {}) is None
    assert error_reason("Unauthorized", {}) is None
    assert error_reason({"error": 401}, {}) is None
