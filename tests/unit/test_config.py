"""Settings: the documented example loads, durations parse, the environment overrides the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.config import load_settings, parse_duration
from rotator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads() -> None:
    s = load_settings(ROOT / "config.example.yaml")
    assert s.credentials[0].name == "mm1"
    assert s.credentials[0].rotate_every == 86400 and s.credentials[0].grace == 900
    assert s.clob.verify_timeout == 180


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("24h", 86400), ("7d", 604800), (90, 90), ("2.5s", 2.5), ("45", 45)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5x", "-1s", "", "1h30m", True])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATOR_CLOB__CHAIN_ID", "80002")
    monkeypatch.setenv("ROTATOR_METRICS__PORT", "0")
    s = load_settings(ROOT / "config.example.yaml")
    assert s.clob.chain_id == 80002 and s.metrics.port == 0
    assert s.clob.host == "https://clob.polymarket.com"  # the rest still from the file


def test_errors_name_the_credential(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "credentials:\n"
        "  - {name: a, signer: {source: env, env: X}, path: p, rotate_every: 1h, grace: 1m}\n"
        "  - {name: b, signer: {source: env, env: X}, path: p, rotate_every: 1h, grace: soon}\n"
    )
    with pytest.raises(ConfigError, match=r"credentials\[b\]\.grace: bad duration 'soon'"):
        load_settings(cfg)


def test_leader_lease_defaults_and_validation() -> None:
    from rotator.config import load_settings
    from rotator.errors import ConfigError

    s = load_settings(None)
    assert (s.daemon.leader.lease, s.daemon.leader.renew) == (20.0, 5.0)
    assert s.daemon.leader.lease < 30
    ok = load_settings(None, data={"daemon": {"leader": {"lease": "9s", "renew": "3s"}}})
    assert ok.daemon.leader.renew == 3.0
    with pytest.raises(
        ConfigError, match=r"daemon\.leader: .*renew \(10s\) must be at most a third of lease"
    ):
        load_settings(None, data={"daemon": {"leader": {"lease": "20s", "renew": "10s"}}})
    with pytest.raises(ConfigError, match=r"daemon\.leader\.lase: unknown key"):
        load_settings(None, data={"daemon": {"leader": {"lase": "20s"}}})
