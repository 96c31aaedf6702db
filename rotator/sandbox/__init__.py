"""A faithful local Polymarket CLOB auth server (L1/L2 verification, key semantics, rate limit, faults).

Used by ``rotator demo``/``rotator sandbox`` and by the integration tests in place of the real CLOB.
"""

from __future__ import annotations

from rotator.sandbox.server import Hold, HoldPhase, Sandbox, serve
from rotator.sandbox.state import (
    Credentials,
    DuplicateNonce,
    KeyRecord,
    OtherKeyRecord,
    RevokedBy,
    SandboxSettings,
)

__all__ = [
    "Credentials",
    "DuplicateNonce",
    "Hold",
    "HoldPhase",
    "KeyRecord",
    "OtherKeyRecord",
    "RevokedBy",
    "Sandbox",
    "SandboxSettings",
    "serve",
]
