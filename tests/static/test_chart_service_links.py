"""Issue 22 item 15: any Helm release name starts, whatever service-link variables Kubernetes injects.

Kubernetes gives every container variables for every Service in its namespace ("service links",
pkg/kubelet/envvars): a release named ``rotator-prod`` gets ``ROTATOR_PROD_SERVICE_PORT``,
``ROTATOR_PROD_PORT_9464_TCP_PORT`` and so on, which share the worker's ``ROTATOR_`` prefix. The
chart turns them off (``enableServiceLinks: false``) and the config tells them from settings anyway
(a pod spec written by hand, an older chart). Each release is rendered offline, the variables
Kubernetes would inject for its Services and a neighbouring ``rotator-pushgateway`` are computed as
the kubelet does, and ``rotator check --offline`` runs in a subprocess on the rendered config with
them, as the pod would.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require
from tests.harness import OUTPUTS
from tests.static.test_helm_chart import CHART, Rendered, _pod_specs, _scenario_values

RELEASES = ["rotator", "rotator-prod", "rotator-pushgateway", "x"]
NAMESPACE = "trading"
#: A Service beside the release, as the prometheus-community chart names it in a release of that name.
NEIGHBOUR = {
    "kind": "Service",
    "metadata": {"name": "rotator-pushgateway"},
    "spec": {"ports": [{"name": "http", "port": 9091, "protocol": "TCP"}]},
}


def service_link_env(services: list[dict[str, Any]]) -> dict[str, str]:
    """What the kubelet sets for these Services (FromServices in pkg/kubelet/envvars/envvars.go)."""
    env: dict[str, str] = {}
    for i, svc in enumerate(services):
        ip = str(ipaddress.IPv4Address("10.96.0.10") + i)
        name = svc["metadata"]["name"].upper().replace("-", "_")
        ports = svc["spec"]["ports"]
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
        first = ports[0]
        env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            proto = port.get("protocol", "TCP")
            prefix = f"{name}_PORT_{port['port']}_{proto.upper()}"
            env[prefix] = f"{proto.lower()}://{ip}:{port['port']}"
            env[f"{prefix}_PROTO"] = proto.lower()
            env[f"{prefix}_PORT"] = str(port["port"])
            env[f"{prefix}_ADDR"] = ip
    return env


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    try:
        import helm_python
    except (ImportError, OSError) as exc:  # OSError: the bundled libhelm_c does not load here
        require(False, f"helm-python-sdk ({type(exc).__name__}: {exc})")
        raise
    with helm_python.Chart.load(str(CHART)) as loaded:
        yield loaded


def _render(chart: Any, release: str, scenario: str) -> list[dict[str, Any]]:
    files = chart.render(_scenario_values(scenario), name=release, namespace=NAMESPACE)
    return [
        doc
        for path, text in files.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def _check_offline(
    tmp_path: Path, docs: list[dict[str, Any]], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {})]
    path = tmp_path / "config.yaml"
    path.write_text(config["data"]["config.yaml"])
    proc = subprocess.run(
        [sys.executable, "-m", "rotator.cli", "check", "--offline", "-c", str(path)],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    OUTPUTS.extend((proc.stdout, proc.stderr))
    return proc


@pytest.mark.parametrize("scenario", ["deployment-vault", "cronjob-aws"])
@pytest.mark.parametrize("release", RELEASES)
def test_every_release_name_starts_with_the_service_links_kubernetes_injects(
    chart: Any, tmp_path: Path, release: str, scenario: str
) -> None:
    docs = _render(chart, release, scenario)
    services = [d for d in docs if d["kind"] == "Service"]
    if scenario.startswith("deployment"):
        assert services, "a Deployment release renders its metrics Service"
    # Two Services cannot share a name: the release rotator-pushgateway's own takes the neighbour's.
    taken = {s["metadata"]["name"] for s in services}
    neighbour = [] if NEIGHBOUR["metadata"]["name"] in taken else [NEIGHBOUR]
    env = service_link_env([*services, *neighbour])
    ours = sorted(k for k in env if k.startswith("ROTATOR_"))
    if release.startswith("rotator"):
        assert ours, "the release's Services share the worker's ROTATOR_ prefix"
    proc = _check_offline(tmp_path, docs, env)
    assert proc.returncode == 0, f"{release}: {proc.stderr.strip()} (injected: {ours})"
    # The pods take none of this in the first place.
    specs = _pod_specs(Rendered(values={}, files={}, docs=docs))
    assert specs and all(spec.get("enableServiceLinks") is False for _, spec in specs), specs


def test_a_genuinely_unknown_variable_beside_the_service_links_is_still_refused(
    chart: Any, tmp_path: Path
) -> None:
    docs = _render(chart, "rotator-prod", "deployment-vault")
    env = service_link_env([d for d in docs if d["kind"] == "Service"] + [NEIGHBOUR])
    for name, value in {
        "ROTATOR_PROD_SERVICE_HOST": "tcp://10.0.0.1:9464",  # a link's name with another link's value
        "ROTATOR_CLOB_TIMEOUT": "5",  # a misspelt override (one underscore)
        "ROTATOR_PROD_PORT_9464_TCP_PORT": "x",
    }.items():
        proc = _check_offline(tmp_path, docs, {**env, name: value})
        assert proc.returncode == 2, proc.stdout
        assert proc.stderr.strip().startswith(f"rotator: config error: {name}: unknown setting"), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
