"""The chart's own pod spec, run: render the chart offline (both modes), take the rotator container's
command, args, env, volume mounts and security context, and run exactly that with the engine on the
host network, against the session's sandbox CLOB and OpenBao (CronJob, Vault store) or moto
(Deployment, AWS store). The rendered ConfigMap is mounted where the chart mounts it; what the chart
takes from Kubernetes Secrets (secretKeyRef) is given by the test, by name, as the kubelet would.

The translation is strict: a field of the container or its security context that it does not know
fails the test, so a chart change cannot silently go unrun.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rotator.model import Key
from rotator.sandbox import Sandbox
from tests.conftest import require
from tests.harness import OUTPUTS, SECRETS, sdk_works, wait_for
from tests.image.conftest import Built, Engine
from tests.servers import MOTO_ENV, OpenBao, free_port

#: The first test's setup may build the image (2-3 min cold on a loaded 2-core machine).
pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(900)]

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "rotator"
RELEASE, NAMESPACE = "rot", "trading"
#: Container fields the translation handles; resources and probes are the kubelet's business (the
#: Deployment test calls the probes' paths itself).
KNOWN_CONTAINER_FIELDS = {
    "name", "image", "imagePullPolicy", "command", "args", "env", "securityContext", "resources",
    "volumeMounts", "ports", "livenessProbe", "readinessProbe",
}  # fmt: skip


@pytest.fixture(scope="module")
def chart() -> Any:
    try:
        import helm_python
    except (ImportError, OSError) as exc:
        require(False, f"helm-python-sdk ({type(exc).__name__}: {exc})")
        raise
    with helm_python.Chart.load(str(CHART)) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    files = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [
        doc
        for path, text in files.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def pod_spec(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (workload,) = [d for d in docs if d["kind"] == kind]
    template = workload["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else workload["spec"]
    spec = template["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def pod_to_engine_flags(
    docs: list[dict[str, Any]], spec: dict[str, Any], workdir: Path, secrets: Mapping[tuple[str, str], str]
) -> tuple[list[str], list[str], dict[str, str]]:
    """(engine flags, args after the image, environment passed by name) for the ``rotator`` container."""
    assert "initContainers" not in spec, "signerFiles: not translated (no init containers here)"
    (c,) = [c for c in spec["containers"] if c["name"] == "rotator"]
    assert set(c) <= KNOWN_CONTAINER_FIELDS, sorted(set(c) - KNOWN_CONTAINER_FIELDS)
    flags: list[str] = []

    # Security: the pod's context, overridden by the container's (Kubernetes' own precedence).
    pod_sc, sc = dict(spec.get("securityContext", {})), dict(c.get("securityContext", {}))
    merged = {**pod_sc, **sc}
    known = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile",
             "allowPrivilegeEscalation", "readOnlyRootFilesystem", "capabilities"}  # fmt: skip
    assert set(merged) <= known, sorted(set(merged) - known)
    uid, gid = merged["runAsUser"], merged["runAsGroup"]
    if merged.get("runAsNonRoot"):
        assert uid != 0
    flags += ["--user", f"{uid}:{gid}"]
    if "fsGroup" in merged:
        flags += ["--group-add", str(merged["fsGroup"])]
    assert merged.get("seccompProfile", {"type": "RuntimeDefault"}) == {"type": "RuntimeDefault"}
    if merged.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    if merged.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    caps = merged.get("capabilities", {})
    assert set(caps) <= {"drop"}
    for cap in caps.get("drop", []):
        flags += ["--cap-drop", cap]

    # Volumes: ConfigMaps as rendered, emptyDirs as tmpfs.
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for m in c.get("volumeMounts", []):
        assert set(m) <= {"name", "mountPath", "readOnly"}, m
        vol = volumes[m["name"]]
        if "configMap" in vol:
            data = configmaps[vol["configMap"]["name"]]["data"]
            host = workdir / m["name"]
            host.mkdir()
            for fname, text in data.items():
                (host / fname).write_text(text)
            host.chmod(0o755)
            flags += ["--volume", f"{host}:{m['mountPath']}:{'ro' if m.get('readOnly') else 'rw'}"]
        elif "emptyDir" in vol:
            size = vol["emptyDir"].get("sizeLimit")
            opts = f"rw,size={size.removesuffix('i').lower()}" if size else "rw"
            flags += ["--tmpfs", f"{m['mountPath']}:{opts}"]
        else:
            raise AssertionError(f"volume {vol} is not translated")

    # Environment: literal values, and Secret keys the test provides in the Secrets' place.
    env: dict[str, str] = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[(ref["name"], ref["key"])]

    if "command" in c:
        flags += ["--entrypoint", c["command"][0]]
        args = [*c["command"][1:], *c.get("args", [])]
    else:
        args = list(c.get("args", []))
    return flags, args, env


def _credential(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "signer": {"source": "env", "env": "SIGNER_MM"},
        "path": f"polymarket/{name}",
        "rotate_every": "1h",
        "grace": "2s",
        "verify_timeout": "10s",
    }


def _published(bao: OpenBao, path: str) -> Key:
    raw = bao.client().secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    return Key.from_dict(raw)


def test_cronjob_pod_runs_one_rotate_pass_against_vault(
    engine: Engine,
    image: Built,
    chart: Any,
    openbao: OpenBao,
    sandbox: Sandbox,
    wallet: tuple[str, str],
    tmp_path: Path,
) -> None:
    private_key, address = wallet
    name = f"mm-{uuid.uuid4().hex[:8]}"
    SECRETS.add(openbao.root_token)
    values: dict[str, Any] = {
        "mode": "cronjob",
        "config": {
            "clob": {"host": sandbox.url},
            "store": {
                "backend": "vault",
                "vault": {
                    "url": openbao.url,
                    "mount": "secret",
                    "auth": {"method": "token", "token_env": "VAULT_TOKEN"},
                },
            },
            "credentials": [_credential(name)],
            "log": {"format": "json"},
        },
        "secretEnv": [
            {"env": "VAULT_TOKEN", "secretName": "rotator-vault-token", "key": "token"},
            {"env": "SIGNER_MM", "secretName": "rotator-signers", "key": "mm"},
        ],
    }
    secrets = {("rotator-vault-token", "token"): openbao.root_token, ("rotator-signers", "mm"): private_key}

    def one_pass(extra_args: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
        docs = render(chart, {**values, "cronjob": {"extraArgs": extra_args}})
        flags, args, env = pod_to_engine_flags(docs, pod_spec(docs, "CronJob"), workdir, secrets)
        assert args[:4] == ["rotate", "-c", "/etc/rotator/config.yaml", "--all"]
        return engine.run(image.ref, args, flags=flags, env=env, timeout=120)

    # The first pass issues the wallet's first key and publishes it.
    (tmp_path / "1").mkdir()
    proc = one_pass([], tmp_path / "1")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"{name}: rotated" in proc.stdout
    k1 = _published(openbao, f"polymarket/{name}")
    SECRETS.update((k1.api_secret.reveal(), k1.api_passphrase.reveal()))
    assert sdk_works(sandbox.url, private_key, k1)

    # The chart's extraArgs (--force): the key rotates; the old one stays live for its grace.
    (tmp_path / "2").mkdir()
    proc = one_pass(["--force"], tmp_path / "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    k2 = _published(openbao, f"polymarket/{name}")
    SECRETS.update((k2.api_secret.reveal(), k2.api_passphrase.reveal()))
    assert k2.api_key != k1.api_key and k2.nonce == k1.nonce + 1
    assert sdk_works(sandbox.url, private_key, k2)
    assert sorted(sandbox.live_keys(address)) == sorted([k1.api_key, k2.api_key])


def test_deployment_pod_serves_health_readiness_and_metrics_against_aws(
    engine: Engine,
    image: Built,
    chart: Any,
    moto_server: str,
    sandbox: Sandbox,
    wallet: tuple[str, str],
    tmp_path: Path,
    container_name: str,
) -> None:
    private_key, address = wallet
    name = f"mm-{uuid.uuid4().hex[:8]}"
    port = free_port()
    values: dict[str, Any] = {
        "mode": "deployment",
        "config": {
            "clob": {"host": sandbox.url},
            "store": {"backend": "aws", "aws": {"region": "us-east-1", "endpoint_url": moto_server}},
            "credentials": [_credential(name)],
            "metrics": {"port": port},
            "log": {"format": "json"},
        },
        "aws": {"roleArn": "arn:aws:iam::123456789012:role/rotator"},
        "secretEnv": [{"env": "SIGNER_MM", "secretName": "rotator-signers", "key": "mm"}],
    }
    docs = render(chart, values)
    spec = pod_spec(docs, "Deployment")
    flags, args, env = pod_to_engine_flags(docs, spec, tmp_path, {("rotator-signers", "mm"): private_key})
    assert args[:3] == ["run", "-c", "/etc/rotator/config.yaml"]
    (c,) = [c for c in spec["containers"] if c["name"] == "rotator"]
    assert [p["containerPort"] for p in c["ports"]] == [port]
    # On EKS, IRSA's webhook injects the AWS credentials' environment; moto takes these.
    env.update(MOTO_ENV)

    proc = subprocess.Popen(
        engine.command(image.ref, args, flags=flags, env_names=sorted(env), name=container_name),
        env=engine.env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def answers(path: str) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the container exited {proc.returncode}")
        try:
            return httpx.get(base + path, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(lambda: answers(c["livenessProbe"]["httpGet"]["path"]), timeout=60)
        wait_for(lambda: answers(c["readinessProbe"]["httpGet"]["path"]), timeout=60)
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # The daemon bootstraps the credential on its first tick.
        wait_for(lambda: len(sandbox.live_keys(address)) == 1, timeout=60)
        metrics = httpx.get(base + "/metrics", timeout=5.0)
        assert metrics.status_code == 200
        assert "rotator_build_info" in metrics.text
        assert f'credential="{name}"' in metrics.text
    finally:
        engine.stop(container_name)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        OUTPUTS.extend((out, err))
    assert proc.returncode in (0, 143), err[-2000:]
