"""``rotator status --json`` writes each time twice: epoch seconds (rounded to the millisecond) and
ISO 8601. The two must say the same instant."""

from __future__ import annotations

from datetime import datetime

import pytest

from rotator.status import iso


@pytest.mark.parametrize(
    ("epoch", "text"),
    [
        (1796091331.611, "2026-12-01T02:15:31.611Z"),  # a float just under .611: rounded, not truncated
        (0.9996, "1970-01-01T00:00:01.000Z"),  # rounding carries into the second
        (1796091331.0, "2026-12-01T02:15:31.000Z"),
    ],
)
def test_iso_rounds_to_the_millisecond_like_the_epoch_fields(epoch: float, text: str) -> None:
    assert iso(epoch) == text
    assert datetime.fromisoformat(text).timestamp() == pytest.approx(round(epoch, 3), abs=1e-6)


def test_iso_of_nothing_is_nothing() -> None:
    assert iso(None) is None
