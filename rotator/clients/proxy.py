"""What an egress proxy said when it refused a tunnel, as both SDKs' errors carry it.

urllib3 (under botocore and requests alike) raises ``OSError("Tunnel connection failed: 407 Proxy
Authentication Required")`` when the proxy answers CONNECT with anything but 200, and the SDKs nest
that text in their own exceptions. The status is what tells a wrong password (407, or tinyproxy's
401) from a refused destination (403) or a broken upstream (502); the proxy's URL, which may carry
its credentials, is never part of what is returned.
"""

from __future__ import annotations

import re

_REFUSED = re.compile(r"Tunnel connection failed: (\d{3}(?: [A-Za-z -]{1,40})?)")


def tunnel_refusal(text: str) -> str | None:
    """The status line of a proxy's refusal of CONNECT found in ``text`` (``"407 Proxy
    Authentication Required"``), or None when the text holds none (the proxy was not reached)."""
    answered = _REFUSED.search(text)
    return answered.group(1).strip() if answered else None
