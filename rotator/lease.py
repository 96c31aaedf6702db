"""Who is rotating: an owner id per process, and whether an owner seen in the store is still alive.

A pending rotation is a lease held by an owner. On the same host a dead owner is recognised at once
(its pid is gone or belongs to a newer process), so a crashed one-shot run is resumed by the next;
owners on other hosts are trusted until their lease runs out.
"""

from __future__ import annotations

import os
import socket
from functools import cache


def _start_ticks(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22 (starttime) counts after the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[-1].split()[19]


@cache
def this_owner() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '0'}"


def owner_alive(owner: str) -> bool:
    """False only when ``owner`` is provably dead; an owner on another host counts as alive."""
    try:
        host, pid_text, ticks = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    if owner == this_owner():
        return True
    current = _start_ticks(pid)
    return current is not None and current == ticks
