"""Who is rotating: an owner id per process, and whether an owner seen in the store is still alive.

A pending rotation, like the leader lease, is held by an owner. A dead owner is recognised at once
only when it ran where this process can look: the same host *and* the same pid namespace (its pid
is gone or belongs to a newer process). Everywhere else nothing proves it dead: the pending lease
runs out on the CLOB's clock, and the leader lease once its record stops changing (leader.py).

An owner id is ``host/where:pid:start``: ``where`` names this pid namespace on this boot of this
machine, so two containers that share a host name (``hostNetwork`` pods on one node, ``--hostname``)
never judge each other by their own ``/proc``. Owners written by older versions (``host:pid:start``)
cannot say where they ran: they count as alive, so they run out on their lease.
"""

from __future__ import annotations

import hashlib
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
def _where() -> str:
    """This boot of this kernel and this pid namespace, in 8 hex digits ('' when /proc cannot say)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:8]


@cache
def this_owner() -> str:
    pid = os.getpid()
    where = _where()
    host = f"{socket.gethostname()}/{where}" if where else socket.gethostname()
    return f"{host}:{pid}:{_start_ticks(pid) or '0'}"


def owner_host(owner: str) -> str:
    """The host (pod) name of an owner id, as people know it: what the keys' history records as
    the worker that acted (issue 23)."""
    return owner.rsplit(":", 2)[0].partition("/")[0]


def owner_alive(owner: str) -> bool:
    """False only when ``owner`` is provably dead: it ran in this very pid namespace and its
    process is gone. An owner anywhere else, or of unknown origin, counts as alive."""
    try:
        host, pid_text, ticks = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return True
    if owner == this_owner():
        return True
    name, _, where = host.partition("/")
    if name != socket.gethostname() or not where or where != _where():
        return True
    current = _start_ticks(pid)
    return current is not None and current == ticks
