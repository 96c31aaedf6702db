"""Issue 24: the chart passes an egress proxy through: ``config.clob.proxy`` reaches the worker's
config (its password from a Secret via ``secretEnv``), and the NetworkPolicy lets the pod reach the
proxy, and the CLOB through it only."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.static.test_helm_chart import _render, _scenario_values, chart, helm

__all__ = ["chart", "helm"]  # the session fixtures, shared with test_helm_chart

PROXY_PEER = [{"ipBlock": {"cidr": "10.0.4.7/32"}}]


def _values(proxy: bool) -> dict[str, Any]:
    values = _scenario_values("deployment-aws")
    values["networkPolicy"] = {"enabled": True, "proxy": {"to": PROXY_PEER}, "aws": {"to": PROXY_PEER}}
    if proxy:
        values["config"]["clob"] = {
            "proxy": {"url": "http://10.0.4.7:3128", "username": "rotator", "password_env": "PROXY_PW"}
        }
        values["secretEnv"] = [*values["secretEnv"], {"env": "PROXY_PW", "secretName": "egress", "key": "pw"}]
    return values


def test_with_a_proxy_the_pod_reaches_the_clob_through_it_only(chart: Any) -> None:
    r = _render(chart, _values(proxy=True))
    config = yaml.safe_load(next(iter(r.one("ConfigMap")["data"].values())))
    assert config["clob"]["proxy"]["url"] == "http://10.0.4.7:3128"
    egress = r.one("NetworkPolicy")["spec"]["egress"]
    clob = r.values["networkPolicy"]["clob"]["to"]
    assert all(rule["to"] != clob for rule in egress), "no direct rule to the CLOB"
    assert {"to": PROXY_PEER, "ports": [{"port": 3128, "protocol": "TCP"}]} in egress
    pod = r.one("Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["PROXY_PW"]["valueFrom"]["secretKeyRef"] == {"name": "egress", "key": "pw"}


def test_without_a_proxy_the_direct_clob_rule_stays(chart: Any) -> None:
    r = _render(chart, _values(proxy=False))
    egress = r.one("NetworkPolicy")["spec"]["egress"]
    assert any(rule["to"] == r.values["networkPolicy"]["clob"]["to"] for rule in egress)
    assert {"to": PROXY_PEER, "ports": [{"port": 3128, "protocol": "TCP"}]} in egress  # as listed


def test_a_proxy_password_variable_no_secret_sets_fails_the_install_naming_it(helm: Any, chart: Any) -> None:
    values = _values(proxy=True)
    values["secretEnv"] = [e for e in values["secretEnv"] if e["env"] != "PROXY_PW"]
    with pytest.raises(helm.HelmRenderError, match=r"config\.clob\.proxy\.password_env: .* PROXY_PW"):
        _render(chart, values)


def test_a_proxy_password_file_on_no_volume_fails_the_install_naming_it(helm: Any, chart: Any) -> None:
    values = _values(proxy=True)
    values["config"]["clob"]["proxy"] = {
        "url": "http://10.0.4.7:3128",
        "username": "rotator",
        "password_file": "/run/egress/pw",
    }
    values["secretEnv"] = [e for e in values["secretEnv"] if e["env"] != "PROXY_PW"]
    with pytest.raises(helm.HelmRenderError, match=r"config\.clob\.proxy\.password_file /run/egress/pw"):
        _render(chart, values)
