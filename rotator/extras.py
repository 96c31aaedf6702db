"""Which install extra brings each optional dependency, and the one line a missing one prints.

The distribution's core is what a bot needs to read its published key (``rotator.consumer``); each
store's client, each bot SDK and the worker itself are extras of ``polymarket-rotator``
(pyproject.toml). A missing one is a usage problem, said in one line with the install command that
fixes it, never an import traceback.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Final

from rotator.errors import ConfigError

DISTRIBUTION: Final = "polymarket-rotator"

#: Top-level module -> the extra that installs it. tests/static/test_lock.py holds each entry to
#: pyproject.toml: the module's distribution is a requirement of that extra, directly or through one.
EXTRA_OF: Final[Mapping[str, str]] = {
    "cryptography": "file",
    "hvac": "vault",
    "requests": "vault",
    "boto3": "aws",
    "botocore": "aws",
    "py_clob_client": "worker",
    "httpx": "worker",
    "httpcore": "worker",
    "apscheduler": "worker",
    "prometheus_client": "worker",
    "coincurve": "worker",
    "eth_hash": "worker",
    "Crypto": "worker",
    "eth_account": "worker",
    "eth_keys": "worker",
    "eth_utils": "worker",
    "py_clob_client_v2": "v2",
    "polymarket": "unified",
}


def install_line(*extras: str) -> str:
    return f"pip install '{DISTRIBUTION}[{','.join(extras)}]'"


def missing_module(exc: ModuleNotFoundError) -> str | None:
    """The line for an optional dependency that failed to import; None for any other module."""
    module = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF.get(module)
    if extra is None:
        return None
    return f"{module} is not installed (it comes with the {extra!r} extra): {install_line(extra)}"


def require(module: str, what: str) -> None:
    """Check, without importing it, that ``module`` (a key of :data:`EXTRA_OF`) is installed.

    :raises ConfigError: it is not; the message names ``what`` needs it and the install line.
    """
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs {module}, which is not installed: {install_line(EXTRA_OF[module])}")
