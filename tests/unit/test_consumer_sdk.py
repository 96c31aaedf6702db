"""The SDK seam of rotator.consumer (rotator/sdk): which adapter a name or a client object picks."""

from __future__ import annotations

import pytest

from rotator.consumer import adapter_for, wrap
from rotator.errors import ConfigError


def test_an_adapter_is_chosen_by_name_or_by_the_client_object() -> None:
    from polymarket import AsyncSecureClient, SecureClient
    from py_clob_client.client import ClobClient as V1
    from py_clob_client_v2 import ClobClient as V2

    assert adapter_for("unified").name == "unified"
    assert adapter_for(V1("http://127.0.0.1:1")).name == "v1"
    assert adapter_for(V2("http://127.0.0.1:1", chain_id=137)).name == "v2"
    assert adapter_for(SecureClient).name == "unified" and adapter_for(SecureClient).rebuilds
    assert adapter_for(AsyncSecureClient).name == "unified-async"
    with pytest.raises(ConfigError, match="sdk 'v3': use one of unified, unified-async, v2, v1"):
        adapter_for("v3")
    with pytest.raises(ConfigError, match="object: not a client of a supported SDK"):
        adapter_for(object())


def test_a_unified_client_cannot_be_wrapped_for_it_holds_its_key_for_life() -> None:
    from polymarket import SecureClient

    with pytest.raises(ConfigError, match="holds its key for life"):
        wrap(SecureClient, None)  # type: ignore[arg-type]
