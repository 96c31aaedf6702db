"""The Helm chart, offline: every ``ci/*-values.yaml`` scenario renders, lints clean, validates strictly.

No cluster here: helm-python-sdk (Helm's own Go code, as a shared library) renders and lints the
chart like ``helm template`` / ``helm lint --strict``; kubernetes-validate checks every manifest
against the current Kubernetes schemas with ``--strict`` (unknown fields fail). On top of that the
tests check what those tools cannot: the restricted Pod Security Standard, probes, labels,
where secrets come from, and that the PrometheusRule and the Grafana dashboard are the repository's
rules and dashboard files byte for byte. Each scenario is rendered once per session.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.config import Settings, load_settings
from rotator.errors import ConfigError
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "rotator"
RULES = ROOT / "deploy" / "prometheus" / "rotator-rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "rotator-dashboard.json"
RELEASE, NAMESPACE = "rot", "trading"
FULLNAME = "rot-rotator"

SCENARIOS = [
    "defaults",
    *sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")),
]
CRONJOBS = [s for s in SCENARIOS if s.startswith("cronjob-") or s == "defaults"]
DEPLOYMENTS = [s for s in SCENARIOS if s.startswith("deployment-")]
MONITORED = [s for s in SCENARIOS if s.endswith("-monitoring")]


def _scenario_values(name: str) -> dict[str, Any]:
    if name == "defaults":
        return {}
    data = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# --- the tools ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm() -> Any:
    try:
        import helm_python
    except (ImportError, OSError) as exc:  # OSError: the bundled libhelm_c does not load here
        require(False, f"helm-python-sdk ({type(exc).__name__}: {exc})")
        raise
    return helm_python


@pytest.fixture(scope="session")
def kube_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        require(False, "kubernetes-validate")
        raise
    return kubernetes_validate


@pytest.fixture(scope="session")
def kube_version(kube_validate: Any) -> str:
    """The newest Kubernetes release kubernetes-validate ships schemas for: "a current version"."""
    return str(kube_validate.latest_version())


@pytest.fixture(scope="session")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


@dataclass(frozen=True)
class Rendered:
    values: dict[str, Any]  # the scenario's values, merged with the chart's defaults
    files: dict[str, str]  # template path -> rendered text
    docs: list[dict[str, Any]]  # every Kubernetes object

    def kinds(self) -> list[str]:
        return sorted(d["kind"] for d in self.docs)

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [
            d for d in self.docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
        ]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def text(self, template: str) -> str:
        return self.files[f"rotator/templates/{template}"]


#: The API versions a cluster with the Prometheus Operator's CRDs serves (``helm --api-versions``).
OPERATOR_APIS = ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule")


def _render(chart: Any, values: dict[str, Any], api_versions: tuple[str, ...] = ()) -> Rendered:
    """``helm template`` offline; ``api_versions`` as its ``--api-versions`` (what the cluster serves)."""
    if api_versions:
        # helm-python-sdk's Chart.render does not pass api_versions on; libhelm_c's render takes them.
        from helm_python import _native

        opts = {"name": RELEASE, "namespace": NAMESPACE, "api_versions": list(api_versions)}
        raw = _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
        files: dict[str, str] = json.loads(raw)
    else:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    docs = [
        doc
        for path, text in files.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return Rendered(values=chart.merge_values(values), files=files, docs=docs)


@pytest.fixture(scope="session")
def rendered(chart: Any) -> dict[str, Rendered]:
    # The monitoring scenarios stand for a cluster with the Prometheus Operator.
    return {
        name: _render(chart, _scenario_values(name), OPERATOR_APIS if name in MONITORED else ())
        for name in SCENARIOS
    }


def _pod_specs(r: Rendered) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for d in r.docs:
        if d["kind"] == "CronJob":
            specs.append(("CronJob", d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif d["kind"] in ("Deployment", "Job"):
            specs.append((d["kind"], d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            specs.append(("Pod", d["spec"]))
    return specs


def _worker(r: Rendered) -> dict[str, Any]:
    kind = "CronJob" if r.values["mode"] == "cronjob" else "Deployment"
    spec = next(s for k, s in _pod_specs(r) if k == kind)
    return next(c for c in spec["containers"] if c["name"] == "rotator")


def _worker_pod(r: Rendered) -> dict[str, Any]:
    kind = "CronJob" if r.values["mode"] == "cronjob" else "Deployment"
    return next(s for k, s in _pod_specs(r) if k == kind)


# --- render, lint, validate -----------------------------------------------------------------------


def test_the_matrix_covers_both_modes_both_stores_and_monitoring_on_and_off() -> None:
    combos = {
        (s.split("-")[0], s.split("-")[1], s.endswith("-monitoring")) for s in SCENARIOS if s != "defaults"
    }
    assert combos == {
        (m, st, mon) for m in ("cronjob", "deployment") for st in ("vault", "aws") for mon in (False, True)
    }
    creds = [c for s in SCENARIOS for c in _scenario_values(s).get("config", {}).get("credentials", [])]
    sources = {cred["signer"]["source"] for cred in creds if "signer" in cred}
    assert sources == {"env", "file", "vault", "aws-secretsmanager", "aws-kms"}
    # Issue 27: every kind renders, lints, validates and passes `rotator check --offline` somewhere.
    assert {cred.get("kind", "trading") for cred in creds} == {"trading", "readonly", "builder"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_renders_the_objects_the_values_ask_for(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    v = r.values
    expected = ["ConfigMap", "Pod", "ServiceAccount"]  # Pod: the `helm test` check
    expected += ["CronJob"] if v["mode"] == "cronjob" else ["Deployment", "Service"]
    operator = scenario in MONITORED  # rendered with the operator's CRDs
    if v["serviceMonitor"]["enabled"] and (operator or v["serviceMonitor"]["renderMode"] == "alwaysRender"):
        expected.append("ServiceMonitor")
    if v["prometheusRule"]["enabled"] and (operator or v["prometheusRule"]["renderMode"] == "alwaysRender"):
        expected.append("PrometheusRule")
    if v["grafanaDashboard"]["enabled"]:
        expected.append("ConfigMap")
    if v["networkPolicy"]["enabled"]:
        expected.append("NetworkPolicy")
    if v["mode"] == "deployment" and v["deployment"]["replicas"] > 1:
        expected.append("PodDisruptionBudget")
    assert r.kinds() == sorted(expected)
    # The chart never creates a Secret: keys come from existing ones, Vault or KMS.
    assert "Secret" not in r.kinds()
    if scenario in MONITORED:
        assert {"PrometheusRule", "ConfigMap"} <= set(r.kinds())
        assert v["pushgateway"]["url"] or v["serviceMonitor"]["enabled"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_is_clean(helm: Any, kube_version: str, scenario: str) -> None:
    report = helm.lint(str(CHART), _scenario_values(scenario), strict=True, kube_version=f"v{kube_version}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert report["total_charts_linted"] == 1
    assert problems == [] and report["errors"] == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_manifest_validates_strictly(
    rendered: dict[str, Rendered], kube_validate: Any, kube_version: str, scenario: str
) -> None:
    checked = 0
    for doc in rendered[scenario].docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            _validate_operator_object(doc)
            # kubernetes-validate has no schema for the operator's CRDs: check their metadata as the
            # metadata of a core object, strictly.
            doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
        kube_validate.validate(doc, kube_version, strict=True)
        checked += 1
    assert checked == len(rendered[scenario].docs) > 0


def test_strict_validation_catches_an_unknown_field(
    rendered: dict[str, Rendered], kube_validate: Any, kube_version: str
) -> None:
    doc = copy.deepcopy(rendered["defaults"].one("CronJob"))
    doc["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(kube_validate.ValidationError):
        kube_validate.validate(doc, kube_version, strict=True)


# The operator's Duration pattern.
_DURATION = "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
# The Prometheus Operator CRD fields the chart can produce (monitoring.coreos.com/v1): strict, so a
# rules file field the operator does not know, or a misspelt endpoint option, fails here.
_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "expr": {"type": ["string", "integer"]},
        "for": {"type": "string"},
        "keep_firing_for": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_OPERATOR_SPECS: dict[str, dict[str, Any]] = {
    "PrometheusRule": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": {"type": "string"},
                        "query_offset": {"type": "string"},
                        "limit": {"type": "integer"},
                        "partial_response_strategy": {"type": "string"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "rules": {"type": "array", "items": _RULE},
                    },
                },
            }
        },
    },
    "ServiceMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": {"type": "object"},
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array"}},
            },
            "endpoints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string"},
                        "scheme": {"type": "string"},
                        "interval": {
                            "type": "string",
                            "pattern": _DURATION,
                        },
                        "scrapeTimeout": {
                            "type": "string",
                            "pattern": _DURATION,
                        },
                        "honorLabels": {"type": "boolean"},
                        "relabelings": {"type": "array", "items": {"type": "object"}},
                        "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
    },
}


def _validate_operator_object(doc: dict[str, Any]) -> None:
    import jsonschema

    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    jsonschema.validate(doc["spec"], _OPERATOR_SPECS[doc["kind"]])


# --- security -------------------------------------------------------------------------------------

_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What keeps ``pod`` from the "restricted" Pod Security Standard (which includes "baseline").

    The rules of kubernetes.io/docs/concepts/security/pod-security-standards, as the
    PodSecurity admission controller applies them to a pod spec.
    """
    out: list[str] = []
    psc = pod.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            out.append(f"{field} is set")
    for vol in pod.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            out.append(f"volume {vol['name']}: type {sorted(kinds)} not allowed")
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in _SAFE_SYSCTLS:
            out.append(f"sysctl {sysctl['name']}")
    if psc.get("windowsOptions", {}).get("hostProcess"):
        out.append("windowsOptions.hostProcess")
    containers = (
        pod.get("containers", []) + pod.get("initContainers", []) + pod.get("ephemeralContainers", [])
    )
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    for c in containers:
        sc = c.get("securityContext", {})
        who = f"container {c['name']}"
        if sc.get("privileged"):
            out.append(f"{who}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{who}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"{who}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{who}: adds capabilities {caps['add']}")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"{who}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{who}: runs as uid 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{who}: seccompProfile is {seccomp}")
        selinux = sc.get("seLinuxOptions", psc.get("seLinuxOptions", {}))
        if selinux.get("type", "") not in (
            "",
            "container_t",
            "container_init_t",
            "container_kvm_t",
            "container_engine_t",
        ):
            out.append(f"{who}: seLinuxOptions.type")
        if selinux.get("user") or selinux.get("role"):
            out.append(f"{who}: seLinuxOptions.user/role")
        apparmor = sc.get("appArmorProfile", psc.get("appArmorProfile", {})).get("type", "RuntimeDefault")
        if apparmor not in ("RuntimeDefault", "Localhost"):
            out.append(f"{who}: appArmorProfile is {apparmor}")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{who}: procMount")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{who}: hostPort")
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_passes_the_restricted_pod_security_standard(
    rendered: dict[str, Rendered], scenario: str
) -> None:
    specs = _pod_specs(rendered[scenario])
    assert len(specs) == 2  # the worker and the `helm test` pod
    for kind, pod in specs:
        assert restricted_violations(pod) == [], kind
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
            assert c["resources"]["limits"]["memory"]
            # The one writable place is a memory-backed /tmp.
            writable = [m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")]
            assert set(writable) <= {"/tmp", "/signers"}, writable
        tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
        assert tmp["emptyDir"]["medium"] == "Memory"


def test_the_restricted_check_is_not_vacuous(chart: Any) -> None:
    # Helm merges these into the defaults, so each override is explicit.
    insecure = {
        "podSecurityContext": {"runAsUser": 0, "runAsNonRoot": False},
        "securityContext": {
            "privileged": True,
            "allowPrivilegeEscalation": True,
            "runAsNonRoot": False,
            "capabilities": {"drop": [], "add": ["SYS_ADMIN"]},
        },
        "extraVolumes": [{"name": "host", "hostPath": {"path": "/"}}],
    }
    # The chart refuses such values at install (test_a_wiring_mistake_fails_the_render_naming_the_value):
    # the checker is tried on a rendered pod with the same overrides applied after the render.
    with pytest.raises(Exception, match=r"is refused|must be"):
        _render(chart, insecure)
    pod = copy.deepcopy(_worker_pod(_render(chart, {})))
    pod["securityContext"].update(insecure["podSecurityContext"])
    pod["volumes"] += insecure["extraVolumes"]
    for c in pod["containers"]:
        c["securityContext"] = {**c["securityContext"], **insecure["securityContext"]}
    found = restricted_violations(pod)
    assert found == [
        "volume host: type ['hostPath'] not allowed",
        "container rotator: privileged",
        "container rotator: allowPrivilegeEscalation is not false",
        "container rotator: capabilities do not drop ALL",
        "container rotator: adds capabilities ['SYS_ADMIN']",
        "container rotator: runAsNonRoot is not true",
        "container rotator: runs as uid 0",
    ]


# --- the workloads --------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", CRONJOBS)
def test_cronjob_runs_one_pass_over_all_credentials(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    cj = r.one("CronJob")["spec"]
    v = r.values["cronjob"]
    assert cj["concurrencyPolicy"] == "Forbid"
    assert cj["schedule"] == v["schedule"]
    assert cj["startingDeadlineSeconds"] == v["startingDeadlineSeconds"] > 0
    assert cj["successfulJobsHistoryLimit"] == v["successfulJobsHistoryLimit"]
    assert cj["failedJobsHistoryLimit"] == v["failedJobsHistoryLimit"]
    job = cj["jobTemplate"]["spec"]
    assert job["backoffLimit"] == v["backoffLimit"]
    assert job["activeDeadlineSeconds"] == v["activeDeadlineSeconds"]
    # A bad config (exit 2) fails the Job at once instead of burning retries.
    assert job["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]
    assert job["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    worker = _worker(r)
    assert "command" not in worker  # the image's ENTRYPOINT is `rotator`
    assert worker["args"] == ["rotate", "-c", "/etc/rotator/config.yaml", "--all"]
    assert "livenessProbe" not in worker and "ports" not in worker


@pytest.mark.parametrize("scenario", DEPLOYMENTS)
def test_deployment_runs_the_daemon_with_health_probes(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    worker = _worker(r)
    assert worker["args"] == ["run", "-c", "/etc/rotator/config.yaml"]
    port = (r.values["config"].get("metrics") or {}).get("port", 9464)
    assert worker["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    dep = r.one("Deployment")["spec"]
    assert dep["replicas"] == r.values["deployment"]["replicas"]
    # SIGTERM starts no new step and abandons the CLOB request in flight within a second; what is left
    # is a store write under way and the lease hand-over, each bounded by the store's timeout (10 s per
    # try). Past the grace period a kill costs a standby the lease's 20 s, never a key.
    grace = dep["template"]["spec"]["terminationGracePeriodSeconds"]
    assert 1 + 2 * 2 * 10 <= grace <= 60
    svc = r.one("Service")["spec"]
    assert svc["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}]
    if r.values["serviceMonitor"]["enabled"]:
        sm = r.one("ServiceMonitor")
        assert sm["spec"]["endpoints"][0]["port"] == "metrics"
        assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
        assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        assert r.values["serviceMonitor"]["labels"].items() <= sm["metadata"]["labels"].items()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_labels_are_the_standard_ones_and_selectors_use_name_and_instance(
    rendered: dict[str, Rendered], scenario: str
) -> None:
    r = rendered[scenario]
    selector = {"app.kubernetes.io/name": "rotator", "app.kubernetes.io/instance": RELEASE}
    for d in r.docs:
        labels = d["metadata"]["labels"]
        assert selector.items() <= labels.items(), d["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == (r.values["image"]["tag"] or "0.1.0")
        assert labels["helm.sh/chart"] == "rotator-0.1.0"
        if d["kind"] != "ConfigMap" or not d["metadata"]["name"].endswith("-dashboard"):
            assert d["metadata"]["namespace"] == NAMESPACE
    selectors = []
    for d in r.docs:
        if d["kind"] == "Deployment":
            selectors.append(d["spec"]["selector"]["matchLabels"])
            assert selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        elif d["kind"] == "Service":
            selectors.append(d["spec"]["selector"])
        elif d["kind"] in ("NetworkPolicy",):
            selectors.append(d["spec"]["podSelector"]["matchLabels"])
        elif d["kind"] == "ServiceMonitor":
            selectors.append(d["spec"]["selector"]["matchLabels"])
        elif d["kind"] == "CronJob":
            assert (
                selector.items() <= d["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"].items()
            )
    assert all(s == selector for s in selectors)


# --- config and secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_config_map_holds_values_config_which_the_worker_loads(
    rendered: dict[str, Rendered], scenario: str, tmp_path: Path
) -> None:
    from rotator.config import load_settings

    r = rendered[scenario]
    text = r.one("ConfigMap", FULLNAME)["data"]["config.yaml"]
    expected = copy.deepcopy(r.values["config"])
    if r.values["mode"] == "cronjob" and r.values["pushgateway"]["url"]:
        expected.setdefault("metrics", {})["pushgateway"] = r.values["pushgateway"]["url"]
    assert yaml.safe_load(text) == expected
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    settings = load_settings(path)
    assert [c.name for c in settings.credentials] == [c["name"] for c in expected["credentials"]]
    mounts = {m["name"]: m for m in _worker(r)["volumeMounts"]}
    assert mounts["config"] == {"name": "config", "mountPath": "/etc/rotator", "readOnly": True}


def test_a_config_change_rolls_the_pods_and_nothing_else_does(
    chart: Any, rendered: dict[str, Rendered]
) -> None:
    base_values = _scenario_values("deployment-aws")
    base = rendered["deployment-aws"]
    changed = copy.deepcopy(base_values)
    changed["config"]["credentials"][0]["grace"] = "2h"
    other = copy.deepcopy(base_values)
    other["podLabels"] = {"team": "trading"}

    def checksum(r: Rendered) -> str:
        return str(r.one("Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert re.fullmatch(r"[0-9a-f]{64}", checksum(base))
    assert checksum(_render(chart, changed)) != checksum(base)
    assert checksum(_render(chart, other)) == checksum(base)
    cj = rendered["cronjob-aws"].one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]
    assert "checksum/config" in cj["annotations"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_service_account_carries_irsa_and_mounts_a_token_only_for_vault_kubernetes_auth(
    rendered: dict[str, Rendered], scenario: str
) -> None:
    r = rendered[scenario]
    sa = r.one("ServiceAccount")
    pod = _worker_pod(r)
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    role = r.values["aws"]["roleArn"]
    annotations = sa["metadata"].get("annotations", {})
    assert annotations.get("eks.amazonaws.com/role-arn") == (role or None)
    assert r.values["serviceAccount"]["annotations"].items() <= annotations.items()
    store = r.values["config"].get("store", {})
    kube_auth = (
        store.get("backend") == "vault" and store["vault"].get("auth", {}).get("method") == "kubernetes"
    )
    assert sa["automountServiceAccountToken"] is kube_auth
    assert pod["automountServiceAccountToken"] is kube_auth
    if store.get("backend") == "aws":
        assert role, "the AWS scenarios use IRSA"


def test_vault_kubernetes_auth_can_be_asked_for_explicitly(chart: Any) -> None:
    r = _render(chart, {"vault": {"kubernetesAuth": True}})
    assert r.one("ServiceAccount")["automountServiceAccountToken"] is True
    assert _worker_pod(r)["automountServiceAccountToken"] is True


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_signer_keys_come_from_existing_secrets_never_from_values(
    rendered: dict[str, Rendered], scenario: str
) -> None:
    r = rendered[scenario]
    worker, pod = _worker(r), _worker_pod(r)
    env = {e["name"]: e for e in worker.get("env", [])}
    for item in r.values["secretEnv"]:
        assert env[item["env"]] == {
            "name": item["env"],
            "valueFrom": {"secretKeyRef": {"name": item["secretName"], "key": item["key"]}},
        }
    files = r.values["signerFiles"]
    if files:
        init = pod["initContainers"][0]
        assert init["command"] == ["install", "-m", "0400", "-t", "/signers"]
        assert init["args"] == [f"/signer-secrets/{f['name']}" for f in files]
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["signers"]["emptyDir"]["medium"] == "Memory"
        sources = vols["signer-secrets"]["projected"]["sources"]
        assert [s["secret"]["name"] for s in sources] == [f["secretName"] for f in files]
        mounts = {m["name"]: m for m in worker["volumeMounts"]}
        assert mounts["signers"]["readOnly"] is True
        assert "signer-secrets" not in mounts  # only the init container sees the Secret itself
        for cred in r.values["config"]["credentials"]:
            if cred.get("signer", {}).get("source") == "file":
                assert Path(cred["signer"]["path"]).parent == Path(mounts["signers"]["mountPath"])
    else:
        assert "initContainers" not in pod
    # Nothing rendered looks like a private key (the config checksum and an image digest are hashes).
    text = "\n".join(r.files.values())
    text = re.sub(r"checksum/config: [0-9a-f]{64}", "", text).replace(r.values["image"]["digest"] or "-", "")
    assert not re.search(r"(?<![0-9A-Fa-f])(0x)?[0-9A-Fa-f]{64}(?![0-9A-Fa-f])", text)


_KEY = "0x" + "ab" * 32


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # Refused by the schema (fields that do not exist, a pattern), which never shows the value.
        (
            {"config": {"credentials": [{"name": "a", "signer": {"source": "inline", "key": _KEY}}]}},
            "additional properties 'key' not allowed",
        ),
        ({"config": {"store": {"backend": "vault", "vault": {"token": _KEY}}}}, "'token' not allowed"),
        (
            {"config": {"credentials": [{"name": "a", "signer": {"source": "env", "env": _KEY}}]}},
            "/config/credentials/0/signer/env': value must be '(not shown",
        ),
        # Fields the schema cannot tell from a key (free text): the template refuses them.
        (
            {
                "config": {
                    "store": {
                        "backend": "vault",
                        "vault": {
                            "url": "https://vault:8200",
                            "auth": {"method": "approle", "role_id": _KEY[2:], "secret_id_env": "S"},
                        },
                    }
                }
            },
            "config: a value looks like a private key",
        ),
        ({"extraEnv": [{"name": "SIGNER_KEY", "value": "ef" * 32}]}, "looks like a private key"),
    ],
    ids=["signer-key", "unknown-field", "signer-env", "64-hex-anywhere", "extra-env"],
)
def test_an_inline_private_key_is_refused_and_never_shown(
    helm: Any, chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(caught.value)
    assert "abababab" not in str(caught.value) and "efefefef" not in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"mode": "cronjob", "serviceMonitor": {"enabled": True}},
            "serviceMonitor.enabled needs mode: deployment",
        ),
        (
            {"mode": "deployment", "pushgateway": {"url": "http://pg:9091"}},
            "pushgateway.url applies to mode: cronjob",
        ),
        (
            # Each pod's file store is its own: every replica would hold "the" leader lease.
            {"mode": "deployment", "deployment": {"replicas": 2}, "config": {"store": {"backend": "file"}}},
            "deployment.replicas above 1 needs a store the pods share",
        ),
    ],
)
def test_settings_the_mode_cannot_honour_are_refused(
    helm: Any, chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"mode": "daemonset"}, "/mode"),
        ({"modes": "cronjob"}, "modes"),
        ({"cronjob": {"backoffLimit": -1}}, "/cronjob/backoffLimit"),
        ({"cronjob": {"concurrencyPolicy": "Allow"}}, "concurrencyPolicy"),
        ({"serviceAccount": {"anotations": {}}}, "anotations"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"aws": {"roleArn": "rotator"}}, "/aws/roleArn"),
        ({"secretEnv": [{"env": "SIGNER", "secretName": "s"}]}, "/secretEnv/0"),
        ({"secretEnv": [{"env": "SIGNER", "secretName": "s", "key": "k", "value": "0xab"}]}, "value"),
        ({"signerFiles": [{"name": "../etc", "secretName": "s", "key": "k"}]}, "/signerFiles/0/name"),
        ({"config": {"metrics": {"port": 70000}}}, "/config/metrics/port"),
        ({"pushgateway": {"url": "pushgateway:9091"}}, "/pushgateway/url"),
        ({"networkPolicy": {"vault": {"to": [], "ports": [{"port": 8200, "protocol": "HTTP"}]}}}, "protocol"),
    ],
    ids=[
        "unknown-mode",
        "unknown-key",
        "negative-backoff",
        "concurrency-policy-is-not-a-value",
        "misspelt-key",
        "digest-not-sha256",
        "role-arn-not-an-arn",
        "secret-env-without-key",
        "secret-env-with-inline-value",
        "signer-file-name-with-path",
        "metrics-port-out-of-range",
        "pushgateway-url-without-scheme",
        "unknown-protocol",
    ],
)
def test_the_schema_rejects_bad_values(helm: Any, chart: Any, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(values)
    assert where in str(caught.value)
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_schema_accepts_every_scenario(chart: Any, scenario: str) -> None:
    chart.validate_schema(_scenario_values(scenario))  # raises on a problem
    assert chart.merge_values(_scenario_values(scenario))["mode"] in ("cronjob", "deployment")


def test_every_value_is_documented_in_place() -> None:
    """Every value in values.yaml has a ``# --`` comment above it or above one of its parents.

    A section header (a key whose value is on the following lines) needs none: its own keys do.
    """
    pending_doc = False
    open_keys: list[tuple[int, bool]] = []  # (indent, documented) of the keys enclosing this line
    undocumented = []
    for line in (CHART / "values.yaml").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending_doc = pending_doc or stripped.startswith("# --")
            continue
        m = re.match(r"^( *)(- )?([A-Za-z_][\w./-]*):(.*)$", line)
        if not m:
            pending_doc = False
            continue
        indent = len(m.group(1)) + (2 if m.group(2) else 0)
        while open_keys and open_keys[-1][0] >= indent:
            open_keys.pop()
        documented = pending_doc or any(doc for _, doc in open_keys)
        header = m.group(4).strip() == ""
        if not documented and not header:
            undocumented.append(m.group(3))
        open_keys.append((indent, documented))
        pending_doc = False
    assert undocumented == []


# --- network --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", MONITORED)
def test_network_policy_allows_only_the_listed_destinations(
    rendered: dict[str, Rendered], scenario: str
) -> None:
    r = rendered[scenario]
    np_values = r.values["networkPolicy"]
    assert np_values["enabled"], "the monitoring scenarios also exercise the NetworkPolicy"
    spec = r.one("NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    wanted = ["dns", "clob", "vault", "aws"] + (["pushgateway"] if r.values["mode"] == "cronjob" else [])
    expected = [
        {"to": np_values[d]["to"], "ports": np_values[d]["ports"]} for d in wanted if np_values[d]["to"]
    ]
    assert spec["egress"] == expected
    ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
    assert ports <= {53, 443, 8200, 9091}
    store = r.values["config"]["store"]["backend"]
    assert any(rule["to"] == np_values[store]["to"] for rule in spec["egress"]), "the store is reachable"
    if r.values["mode"] == "cronjob":
        assert spec["ingress"] == []
        assert any(rule["to"] == np_values["pushgateway"]["to"] for rule in spec["egress"])
    else:
        assert [p["port"] for p in spec["ingress"][0]["ports"]] == ["metrics"]
        assert spec["ingress"][0].get("from", []) == np_values["metricsFrom"]


# --- the one source of truth for rules and dashboard ----------------------------------------------


def test_chart_files_are_links_to_the_repository_rules_and_dashboard() -> None:
    for link, target in (("rotator-rules.yaml", RULES), ("rotator-dashboard.json", DASHBOARD)):
        path = CHART / "files" / link
        assert path.is_symlink(), f"{path} must be a symlink, not a copy"
        assert path.resolve() == target.resolve()
        assert target.is_file() and not target.is_symlink()


@pytest.mark.parametrize("scenario", MONITORED)
def test_prometheus_rule_is_the_rules_file_byte_for_byte_but_absolute_runbook_links(
    rendered: dict[str, Rendered], scenario: str
) -> None:
    r = rendered[scenario]
    text = r.text("prometheusrule.yaml")
    head, sep, body = text.partition("\nspec:\n")
    assert sep
    # The template indents the file by two spaces and makes runbook links absolute, nothing else.
    lines = body.rstrip("\n").split("\n")
    assert all(line.startswith("  ") or line == "" for line in lines)
    unindented = "\n".join(line[2:] for line in lines) + "\n"
    relative = re.sub(r'runbook_url: "https://[^"#]*#', 'runbook_url: "docs/runbook.md#', unindented)
    assert relative != unindented
    source = RULES.read_bytes()
    assert relative.encode() == source
    assert r.values["prometheusRule"]["labels"].items() <= yaml.safe_load(head)["metadata"]["labels"].items()


@pytest.mark.parametrize("scenario", MONITORED)
def test_grafana_dashboard_is_the_dashboard_file_byte_for_byte(
    rendered: dict[str, Rendered], scenario: str
) -> None:
    r = rendered[scenario]
    cm = r.one("ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["data"]["rotator-dashboard.json"].encode() == DASHBOARD.read_bytes()
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == (r.values["grafanaDashboard"]["namespace"] or NAMESPACE)
    assert (
        r.values["grafanaDashboard"]["annotations"].items() <= cm["metadata"].get("annotations", {}).items()
    )


# --- NOTES ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_notes_tell_how_to_check_the_first_rotation(rendered: dict[str, Rendered], scenario: str) -> None:
    r = rendered[scenario]
    notes = r.text("NOTES.txt")
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes
    if r.values["mode"] == "cronjob":
        assert f"kubectl -n {NAMESPACE} create job --from=cronjob/{FULLNAME} {FULLNAME}-first" in notes
        assert f"logs job/{FULLNAME}-first" in notes
    else:
        assert f"exec deployment/{FULLNAME} -- rotator status -c /etc/rotator/config.yaml" in notes
        assert "/readyz" in notes
    assert ("config.credentials is empty" in notes) == (not r.values["config"]["credentials"])


# --- config: the worker's own schema -----------------------------------------------------------------


def _script(name: str) -> Any:
    """A generator of scripts/ (run as ``python scripts/NAME.py``), imported."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_values_schema_checks_config_with_the_schema_generated_from_the_settings_model() -> None:
    text = (CHART / "values.schema.json").read_text(encoding="utf-8")
    assert _script("chart_schema").render(text) == text, "stale: run python scripts/chart_schema.py"
    config = json.loads(text)["properties"]["config"]
    assert config["additionalProperties"] is False
    assert set(config["properties"]) == set(Settings.model_fields)


def _set(config: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """``config`` with ``dotted`` (``credentials.0.grace``) set to ``value``; None deletes it."""
    out = copy.deepcopy(config)
    *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    node: Any = out
    for part in parents:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    if value is None:
        del node[last]
    else:
        node[last] = value
    return out


_BASE = "deployment-vault"  # Vault store with AppRole auth, an env signer, daemon settings


@pytest.mark.parametrize(
    ("dotted", "value", "where"),
    [
        ("credentials.0.rotate_evry", "1h", "'rotate_evry' not allowed"),
        ("credentials.0.grace", "7days", "/config/credentials/0/grace"),
        ("store.backend", "consul", "/config/store/backend"),
        ("stor", {"backend": "vault"}, "'stor' not allowed"),
        ("credentials.0.rotate_every", 0, "/config/credentials/0/rotate_every"),
        ("credentials.0.signer.source", "ledger", "/config/credentials/0/signer/source"),
        ("credentials.0.signer.env", "0xdeadbeef", "/config/credentials/0/signer/env"),
        ("store.vault.auth.method", "jwt", "/config/store/vault/auth/method"),
        ("log.level", "verbose", "/config/log/level"),
        ("daemon.tick", "5 minutes", "/config/daemon/tick"),
        ("clob.concurrency", 0, "/config/clob/concurrency"),
        ("credentials.0.path", None, "missing property 'path'"),
        ("credentials.0.name", "market maker", "/config/credentials/0/name"),
    ],
    ids=[
        "rotate_evry",
        "grace-7days",
        "unknown-backend",
        "misspelt-section",
        "zero-rotate_every",
        "unknown-signer-source",
        "signer-env-is-a-value",
        "unknown-vault-auth",
        "unknown-log-level",
        "tick-in-words",
        "zero-concurrency",
        "no-path",
        "name-with-space",
    ],
)
def test_a_bad_config_fails_the_install_with_the_field_named(
    helm: Any, chart: Any, dotted: str, value: Any, where: str, tmp_path: Path
) -> None:
    values = _scenario_values(_BASE)
    values["config"] = _set(values["config"], dotted, value)
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(values)
    assert where in str(caught.value)
    with pytest.raises(helm.HelmValuesError):  # what `helm install` (and --dry-run) runs first
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    # A bad value for the worker too, not a schema stricter than the worker.
    with pytest.raises(ConfigError):
        load_settings(None, data=values["config"], env={})


_DURATIONS = [
    *["30s", "15m", "24h", "7d", "2w", "1.5h", " 7d ", "3600", "0.5s", "10 m", 3600, 0.5, 7 * 86400],
    *["7days", "1 hour", "-1h", "0", "0s", "0.0m", 0, -5, "1e3", "7D", "h", "", True, 20 * 365 * 86400],
]


@pytest.mark.parametrize("grace", _DURATIONS, ids=repr)
def test_the_schema_takes_the_durations_the_worker_takes(chart: Any, helm: Any, grace: Any) -> None:
    values = _scenario_values(_BASE)
    values["config"] = _set(values["config"], "credentials.0.grace", grace)
    try:
        load_settings(None, data=values["config"], env={})
        worker_takes = True
    except ConfigError:
        worker_takes = False
    try:
        chart.validate_schema(values)
        schema_takes = True
    except helm.HelmValuesError as exc:
        assert "/config/credentials/0/grace" in str(exc)
        schema_takes = False
    assert schema_takes is worker_takes


# --- credential kinds (issue 27) -------------------------------------------------------------------------

#: A trading credential with a read-only and a builder credential on its wallet (neither has a signer).
KINDS = "deployment-aws-monitoring"


def test_a_config_with_every_kind_renders_and_the_worker_loads_it(
    rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    r = rendered[KINDS]
    path = tmp_path / "config.yaml"
    path.write_text(r.one("ConfigMap", FULLNAME)["data"]["config.yaml"], encoding="utf-8")
    creds = load_settings(path, env={}).credentials
    assert [(c.name, c.kind, c.via) for c in creds] == [
        ("market-maker-1", "trading", None),
        ("market-maker-1-readonly", "readonly", "market-maker-1"),
        ("market-maker-1-builder", "builder", "market-maker-1"),
    ]
    assert all("signer" not in c for c in r.values["config"]["credentials"][1:])
    assert creds[1].signer == creds[2].signer == creds[0].signer  # their via's wallet


@pytest.mark.parametrize(
    ("index", "edit", "message"),
    [
        pytest.param(
            1,
            lambda c: c.update(signer={"source": "aws-kms", "key_id": "alias/polymarket-ro"}),
            "'not' failed",
            id="readonly-with-a-signer",
        ),
        pytest.param(1, lambda c: c.pop("via"), "missing property 'via'", id="readonly-without-via"),
        pytest.param(2, lambda c: c.pop("via"), "missing property 'via'", id="builder-without-via"),
        pytest.param(2, lambda c: c.update(start_nonce=3), "'not' failed", id="builder-with-a-nonce"),
        pytest.param(0, lambda c: c.pop("signer"), "missing property 'signer'", id="trading-without-signer"),
        pytest.param(0, lambda c: c.update(via="market-maker-1"), "'not' failed", id="trading-with-via"),
        pytest.param(1, lambda c: c.update(kind="read-only"), "/kind", id="unknown-kind"),
    ],
)
def test_a_credential_kind_mistake_fails_the_install_naming_the_credential(
    helm: Any, chart: Any, index: int, edit: Any, message: str
) -> None:
    values = _scenario_values(KINDS)
    chart.validate_schema(values)  # the scenario itself is fine
    edit(values["config"]["credentials"][index])
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(values)
    assert f"at '/config/credentials/{index}" in str(caught.value) and message in str(caught.value)
    with pytest.raises(helm.HelmValuesError):  # what `helm install` (and --dry-run) runs first
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(ConfigError):  # and the worker refuses it too
        load_settings(None, data=values["config"], env={})


# --- Prometheus Operator objects: only where the cluster has their CRDs --------------------------------


_OPERATOR_CASES = [
    # (API versions the cluster serves, renderMode of both, kinds rendered)
    ((), None, []),
    (OPERATOR_APIS[:1], None, ["ServiceMonitor"]),
    (OPERATOR_APIS[1:], None, ["PrometheusRule"]),
    (OPERATOR_APIS, None, ["PrometheusRule", "ServiceMonitor"]),
    ((), "alwaysRender", ["PrometheusRule", "ServiceMonitor"]),
    (OPERATOR_APIS, "failIfMissing", ["PrometheusRule", "ServiceMonitor"]),
]


@pytest.mark.parametrize(
    ("apis", "mode", "kinds"),
    _OPERATOR_CASES,
    ids=["no-crds", "servicemonitor-crd", "prometheusrule-crd", "both-crds", "forced", "fail-if-missing-ok"],
)
def test_servicemonitor_and_prometheusrule_render_only_where_their_crds_exist_or_when_forced(
    chart: Any, apis: tuple[str, ...], mode: str | None, kinds: list[str]
) -> None:
    values = _scenario_values("deployment-aws-monitoring")
    if mode is not None:
        values["serviceMonitor"]["renderMode"] = values["prometheusRule"]["renderMode"] = mode
    r = _render(chart, values, apis)
    assert sorted(k for k in r.kinds() if k in ("ServiceMonitor", "PrometheusRule")) == kinds
    assert "ConfigMap" in r.kinds() and r.one("ConfigMap", f"{FULLNAME}-dashboard")  # the dashboard stays
    notes = r.text("NOTES.txt")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        skipped = f"WARNING: the {kind} was not created" in notes
        assert skipped is (kind not in kinds), notes


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_fail_if_missing_refuses_an_install_without_the_crd(helm: Any, chart: Any, kind: str) -> None:
    key = kind[0].lower() + kind[1:]
    values = _scenario_values("deployment-aws-monitoring")
    values[key]["renderMode"] = "failIfMissing"
    other = [a for a in OPERATOR_APIS if not a.endswith("/" + kind)]
    message = f"{key}.enabled: the cluster has no {kind} CRD"
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        _render(chart, values, tuple(other))


def test_disabled_operator_objects_never_render(chart: Any) -> None:
    values = _scenario_values("deployment-aws-monitoring")
    values["serviceMonitor"] = {"enabled": False, "renderMode": "alwaysRender"}
    values["prometheusRule"] = {"enabled": False, "renderMode": "alwaysRender"}
    r = _render(chart, values, OPERATOR_APIS)
    assert not {"ServiceMonitor", "PrometheusRule"} & set(r.kinds())
    assert "WARNING: the" not in r.text("NOTES.txt")


# --- rotator check --offline on what the chart renders -------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rotator_check_offline_passes_on_the_rendered_config(
    rendered: dict[str, Rendered], scenario: str, tmp_path: Path
) -> None:
    """The real CLI on the ConfigMap's file, with the environment the pod has (no ROTATOR_* variable
    but what the chart sets), as `helm test` would run it minus the store, CLOB and signers."""
    import os
    import subprocess
    import sys

    r = rendered[scenario]
    path = tmp_path / "config.yaml"
    path.write_text(r.one("ConfigMap", FULLNAME)["data"]["config.yaml"], encoding="utf-8")
    worker = _worker(r)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ROTATOR_")}
    env["PYTHONPATH"] = str(ROOT)
    for item in worker.get("env", []):
        env[item["name"]] = item.get("value", "set-from-a-secret")
    done = subprocess.run(
        [sys.executable, "-m", "rotator.cli", "check", "--offline", "-c", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    names = [c["name"] for c in r.values["config"]["credentials"]]
    assert f"ok    config {path}:" in done.stdout
    for name in names:
        assert f"ok    {name}: path " in done.stdout


# --- the chart's README ---------------------------------------------------------------------------------


def test_chart_readme_lists_every_value_and_is_fresh() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    values_text = (CHART / "values.yaml").read_text(encoding="utf-8")
    gen = _script("chart_readme")
    assert gen.render(readme, values_text) == readme, "stale: run python scripts/chart_readme.py"
    keys = [path for path, _, _ in gen.documented(values_text)]
    assert len(keys) == len(set(keys)) > 50
    for key in ("mode", "config", "serviceMonitor.renderMode", "deployment.terminationGracePeriodSeconds"):
        assert f"| `{key}` |" in readme
    # Every top-level value is in the table, itself or through its keys.
    for top in yaml.safe_load(values_text):
        assert any(k == top or k.startswith(top + ".") for k in keys), top
    for heading in ("### Vault", "### AWS Secrets Manager", "## Upgrading"):
        assert heading in readme


def test_chart_readme_install_examples_install_and_pass_the_worker_check(chart: Any, tmp_path: Path) -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    examples = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)]
    examples = [e for e in examples if isinstance(e, dict) and "config" in e]
    assert {e["config"]["store"]["backend"] for e in examples} == {"vault", "aws"}
    for values in examples:
        chart.validate_schema(values)
        r = _render(chart, values)
        path = tmp_path / "config.yaml"
        path.write_text(r.one("ConfigMap", FULLNAME)["data"]["config.yaml"], encoding="utf-8")
        assert load_settings(path, env={}).credentials


# --- wiring mistakes refused at install (issue 25) --------------------------------------------------

VAULT = "cronjob-vault"  # token auth, a CA on an extra volume, an env signer and a Vault signer
SIGNER_FILES = "cronjob-vault-monitoring"  # a file signer through signerFiles


def _mistake(scenario: str, edit: Any) -> dict[str, Any]:
    values = copy.deepcopy(_scenario_values(scenario))
    edit(values)
    return values


def _creds(values: dict[str, Any]) -> list[dict[str, Any]]:
    creds = values["config"]["credentials"]
    assert isinstance(creds, list)
    return creds


@pytest.mark.parametrize(
    ("scenario", "edit", "message"),
    [
        pytest.param(
            VAULT,
            lambda v: v["secretEnv"][1].update(env="SIGNER_MM_1"),
            "config.credentials[0].signer.env (market-maker-1): the worker reads environment variable "
            "SIGNER_MARKET_MAKER_1, which no secretEnv (or extraEnv) entry sets",
            id="secret-env-differs-from-the-signer-env",
        ),
        pytest.param(
            VAULT,
            lambda v: v["secretEnv"].append({"env": "SIGNER_MM_3", "secretName": "s", "key": "k"}),
            "secretEnv[2].env SIGNER_MM_3: nothing in config names this variable",
            id="secret-env-nothing-reads",
        ),
        pytest.param(
            VAULT,
            lambda v: v["secretEnv"].pop(0),
            "config.store.vault.auth.token_env: the worker reads environment variable VAULT_TOKEN",
            id="vault-token-env-not-set",
        ),
        pytest.param(
            SIGNER_FILES,
            lambda v: v["signerFiles"].append({"name": "market-maker-9", "secretName": "s", "key": "k"}),
            "signerFiles[2].name market-maker-9: no signer has path /var/run/rotator/signers/market-maker-9",
            id="signer-file-no-signer-uses",
        ),
        pytest.param(
            SIGNER_FILES,
            lambda v: v["signerFiles"].clear(),
            "config.credentials[0].signer.path (market-maker-1) /var/run/rotator/signers/market-maker-1: "
            "no volume is mounted there",
            id="signer-path-without-signer-files",
        ),
        pytest.param(
            VAULT,
            lambda v: v["config"]["store"]["vault"]["tls"].update(ca_cert="/etc/vault/ca.crt"),
            "config.store.vault.tls.ca_cert /etc/vault/ca.crt: no volume is mounted there",
            id="ca-cert-nothing-mounts",
        ),
        pytest.param(
            VAULT,
            lambda v: v["extraVolumeMounts"][0].update(name="vault-cert"),
            "extraVolumeMounts[0].name vault-cert: no volume of that name (extraVolumes)",
            id="volume-mount-without-volume",
        ),
        pytest.param(
            VAULT,
            lambda v: v.update(cronjob={"schedule": "*/15 * * *"}),
            'cronjob.schedule "*/15 * * *": needs 5 fields',
            id="schedule-four-fields",
        ),
        pytest.param(
            VAULT,
            lambda v: v.update(cronjob={"schedule": "0 24 * * *"}),
            'cronjob.schedule "0 24 * * *": "24" is not a valid hour field',
            id="schedule-hour-out-of-range",
        ),
        pytest.param(
            VAULT,
            lambda v: v.update(cronjob={"schedule": "*/15 * * * MON-FUNDAY"}),
            '"MON-FUNDAY" is not a valid day of week field',
            id="schedule-bad-day-name",
        ),
        pytest.param(
            VAULT,
            lambda v: v.update(cronjob={"timeZone": "Europe/Lodnon"}),
            'cronjob.timeZone "Europe/Lodnon": not a time zone name of the IANA database',
            id="time-zone-misspelt",
        ),
        pytest.param(
            VAULT,
            lambda v: v.update(podSecurityContext={"runAsUser": 0}),
            "podSecurityContext.runAsUser: 0 (root) is refused",
            id="pod-run-as-root",
        ),
        pytest.param(
            VAULT,
            lambda v: v.update(securityContext={"runAsUser": 0}),
            "securityContext.runAsUser: 0 (root) is refused",
            id="container-run-as-root",
        ),
        pytest.param(
            VAULT,
            lambda v: v.update(podSecurityContext={"runAsNonRoot": False}),
            "podSecurityContext.runAsNonRoot: false is refused",
            id="run-as-non-root-false",
        ),
        pytest.param(
            VAULT,
            lambda v: v.update(securityContext={"allowPrivilegeEscalation": True}),
            "securityContext.allowPrivilegeEscalation must be false",
            id="privilege-escalation",
        ),
        pytest.param(
            VAULT,
            lambda v: v.update(securityContext={"privileged": True, "allowPrivilegeEscalation": False}),
            "securityContext.privileged: true is refused",
            id="privileged",
        ),
        pytest.param(
            VAULT,
            lambda v: v.update(securityContext={"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}),
            "securityContext.capabilities.add: SYS_ADMIN is refused",
            id="capability-added",
        ),
        pytest.param(
            VAULT,
            lambda v: v.update(podSecurityContext={"seccompProfile": {"type": "Unconfined"}}),
            "podSecurityContext.seccompProfile.type: Unconfined is refused",
            id="seccomp-unconfined",
        ),
        pytest.param(
            VAULT,
            lambda v: v["extraVolumes"].append({"name": "host", "hostPath": {"path": "/"}}),
            "extraVolumes[1] (host): hostPath volumes are refused",
            id="host-path-volume",
        ),
    ],
)
def test_a_wiring_mistake_fails_the_render_naming_the_value(
    helm: Any, chart: Any, scenario: str, edit: Any, message: str
) -> None:
    good = _scenario_values(scenario)
    chart.render(good, name=RELEASE, namespace=NAMESPACE)  # the scenario itself renders
    with pytest.raises(helm.HelmRenderError) as caught:
        chart.render(_mistake(scenario, edit), name=RELEASE, namespace=NAMESPACE)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "schedule",
    ["*/15 * * * *", "0 3 * * 1-5", "30 2 1,15 * ?", "0 0 1 jan,JUL *", "5-55/10 */2 * * SUN", "@hourly"],
)
def test_valid_schedules_and_time_zones_render(chart: Any, schedule: str) -> None:
    values = {"cronjob": {"schedule": schedule, "timeZone": "Europe/London"}}
    r = _render(chart, values)
    assert r.one("CronJob")["spec"]["schedule"] == schedule
    assert r.one("CronJob")["spec"]["timeZone"] == "Europe/London"


def test_the_time_zone_list_is_the_iana_database() -> None:
    import zoneinfo

    names = (CHART / "files" / "timezones.txt").read_text(encoding="utf-8").splitlines()
    assert names == sorted(set(names)) and {"UTC", "Europe/London", "America/New_York"} <= set(names)
    for name in names:
        zoneinfo.ZoneInfo(name)  # raises for a name the database does not have


def test_files_on_mounted_volumes_and_known_variables_render(chart: Any) -> None:
    values = _mistake(
        VAULT,
        lambda v: (
            v["config"]["store"]["vault"]["tls"].update(
                client_cert="/etc/vault-ca/tls.crt", client_key="/etc/vault-ca/tls.key"
            ),
            v["secretEnv"].append({"env": "AWS_ACCESS_KEY_ID", "secretName": "aws", "key": "id"}),
        ),
    )
    r = _render(chart, values)
    assert r.one("CronJob")


def _rule_urls(text: str) -> list[str]:
    return re.findall(r'runbook_url: "([^"]*)"', text)


@pytest.mark.parametrize("scenario", MONITORED)
def test_every_alert_links_an_absolute_runbook_url(rendered: dict[str, Rendered], scenario: str) -> None:
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    base = f"{chart_meta['home']}/blob/v{chart_meta['appVersion']}/docs/runbook.md"
    spec = yaml.safe_load(rendered[scenario].text("prometheusrule.yaml"))["spec"]
    alerts = [r for g in spec["groups"] for r in g["rules"] if "alert" in r]
    assert alerts
    source = {
        r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r
    }
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        relative = source[alert["alert"]]["annotations"]["runbook_url"]
        assert relative.startswith("docs/runbook.md#")  # the repository's file keeps relative links
        assert url == base + relative.removeprefix("docs/runbook.md"), url


def test_runbook_base_url_is_a_value(chart: Any) -> None:
    values = {**_scenario_values(MONITORED[0]), "runbookBaseUrl": "https://wiki.example.com/rotator"}
    r = _render(chart, values, OPERATOR_APIS)
    urls = _rule_urls(r.text("prometheusrule.yaml"))
    assert urls and all(u.startswith("https://wiki.example.com/rotator#rotator") for u in urls)


def test_the_project_home_is_one_url() -> None:
    import tomllib

    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]
    assert chart_meta["home"] == urls["Homepage"] == urls["Source"] and chart_meta["sources"] == [
        urls["Source"]
    ]
    assert urls["Documentation"] == chart_meta["home"] + "/tree/main/docs"


@pytest.mark.parametrize("scenario", DEPLOYMENTS)
def test_replicas_get_a_disruption_budget_and_spread_across_nodes_and_zones(
    chart: Any, scenario: str
) -> None:
    base = _scenario_values(scenario)
    # Replicas need a shared store (the chart refuses replicas > 1 with the file store): every
    # deployment scenario has one, or this test would judge nothing for it.
    assert (base.get("config", {}).get("store") or {}).get("backend", "file") != "file", scenario
    one = _render(chart, {**base, "deployment": {"replicas": 1}})
    assert "PodDisruptionBudget" not in one.kinds()
    assert "topologySpreadConstraints" not in _worker_pod(one)
    two = _render(chart, {**base, "deployment": {"replicas": 2}})
    pdb = two.one("PodDisruptionBudget")
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {
            "matchLabels": {"app.kubernetes.io/name": "rotator", "app.kubernetes.io/instance": RELEASE}
        },
    }
    spread = _worker_pod(two)["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    assert all(c["labelSelector"] == pdb["spec"]["selector"] and c["maxSkew"] == 1 for c in spread)
    custom = {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
    three = _render(chart, {**base, "deployment": {"replicas": 3, "topologySpreadConstraints": [custom]}})
    assert _worker_pod(three)["topologySpreadConstraints"] == [
        {**custom, "labelSelector": pdb["spec"]["selector"]}
    ]


def test_make_template_renders_offline_and_names_a_mistake(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = ROOT / "scripts" / "template.py"
    good = subprocess.run(
        [sys.executable, str(script), "-f", str(CHART / "ci" / f"{VAULT}-values.yaml"), "--name", "rot"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(good.stdout) if d]
    assert "CronJob" in kinds and "ConfigMap" in kinds
    bad = tmp_path / "bad.yaml"
    bad.write_text("cronjob:\n  timeZone: Mars/Olympus\n")
    proc = subprocess.run(
        [sys.executable, str(script), "-f", str(CHART / "ci" / f"{VAULT}-values.yaml"), "-f", str(bad)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    assert 'cronjob.timeZone "Mars/Olympus": not a time zone name' in proc.stderr
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^template: .*\n\t\$\(PY\) scripts/template\.py", makefile, re.MULTILINE)
