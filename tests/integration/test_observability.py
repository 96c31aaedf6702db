"""Metrics, logs, dashboard and alerts, checked against the real things.

- The alert rules pass ``promtool check rules`` and their ``promtool test rules`` suite, with a firing
  and a silent test for every alert, and a runbook section in docs/runbook.md for every alert.
- A live daemon (``rotator run`` as a subprocess, against the sandbox CLOB) answers /healthz and
  /readyz, exports the DESIGN.md metrics with safe labels, writes JSON-line audit logs, stops on
  SIGTERM with exit 0; every dashboard query parses (promtool) and names only metrics it exports.
- One-shot runs push to a real Pushgateway, one group per (job, credential); after a forced failure
  the failure counter and the streak are there, and the RotatorRotationFailing expression fires
  on the observed values (evaluated by promtool).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rotator.model import mask
from rotator.sandbox import Sandbox
from tests.conftest import require_tool
from tests.harness import OUTPUTS, SECRETS, Worker, wait_for
from tests.servers import Pushgateway, free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rotator-rules.yaml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rotator-rules.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "rotator-dashboard.json"
RUNBOOK = ROOT / "docs" / "runbook.md"

#: DESIGN.md's metric table: names are an interface.
DESIGN_METRICS = {
    "rotator_rotations_total": "counter",
    "rotator_rotation_duration_seconds": "histogram",
    "rotator_last_success_timestamp_seconds": "gauge",
    "rotator_key_created_timestamp_seconds": "gauge",
    "rotator_retiring_keys": "gauge",
    "rotator_revocations_total": "counter",
    "rotator_old_key_invalidated_total": "counter",
    "rotator_clob_requests_total": "counter",
    "rotator_clock_skew_seconds": "gauge",
    "rotator_store_operations_total": "counter",
    "rotator_build_info": "gauge",
    "rotator_leader": "gauge",  # the daemon's; one-shot runs do not export it
    "rotator_clob_blocked": "gauge",
    "rotator_key_model": "gauge",
    "rotator_keys_revived_total": "counter",
}
#: Every label the worker may put on a series: bounded by config (credential, backend) or by code.
# model: rotator_key_model's bounded enum (several, one, unknown; issue 24). kind: trading, readonly,
# builder; via: a configured credential's name (rotator_credential_info, issue 27).
ALLOWED_LABELS = {
    "credential",
    "result",
    "endpoint",
    "code",
    "backend",
    "operation",
    "version",
    "le",
    "tier",
    "model",
    "kind",
    "via",
}
#: Series the rules may use that are not the worker's: Prometheus' own and the Pushgateway's.
NOT_OURS = {"up", "push_time_seconds"}


# -- helpers -------------------------------------------------------------------------------------------


def promtool() -> str:
    return require_tool("promtool")


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def alert_rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_KEYWORDS |= {"offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (enough of a parser for our own expressions)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\b(?:\d+(?:ms|[smhdwy]))+\b", " ", s)  # durations (offset 5m)
    s = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", " ", s)  # numbers
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        rest = s[m.end() :].lstrip()
        if rest.startswith("(") or m.group(0) in _KEYWORDS:
            continue  # a function, an aggregation or an operator
        names.add(m.group(0))
    return names


def grafana_to_promql(expr: str) -> str:
    """A panel's query as Prometheus receives it once Grafana has filled the variables in."""
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$job", ".+")
        .replace("$kind", ".+")
        .replace("$credential", ".+")
    )


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expr) of every query of the dashboard: panel targets and variable queries."""
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
            assert m, f"variable {var['name']}: expected label_values(<selector>, <label>), got {q}"
            out.append((f"variable {var['name']}", m.group(1)))
    return out


def exported_names(text: str) -> set[str]:
    """Names the exposition text declares (``# TYPE``), with a histogram's and a counter's series."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def new_wallet() -> tuple[str, str]:
    from eth_account import Account

    acct = Account.create()
    key = acct.key.hex()
    SECRETS.update((key, key.removeprefix("0x")))
    return key, acct.address


def unique_job() -> str:
    return f"rotator-test-{secrets.token_hex(4)}"


# -- alert rules -------------------------------------------------------------------------------------------


def test_rules_pass_promtool_check() -> None:
    proc = run_promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in proc.stdout


def test_rules_unit_tests_pass() -> None:
    proc = run_promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_firing_and_a_silent_test() -> None:
    doc = yaml.safe_load(RULES_TEST.read_text())
    fires: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = set(alert_rules())
    assert alerts - fires == set(), "alerts without a test where they fire"
    assert alerts - silent == set(), "alerts without a test where they stay silent"
    assert (fires | silent) - alerts == set(), "tests of alerts the rules do not define"


def test_required_alerts_exist() -> None:
    """The issue's list: failing rotation, old key, retiring key past deadline, skew, 429s, worker
    down / no metrics, CronJob not succeeding."""
    alerts = alert_rules()
    required = {
        "RotatorRotationFailing": "rotator_consecutive_failures",
        "RotatorNoRecentSuccess": "rotator_last_success_timestamp_seconds",
        "RotatorKeyTooOld": "rotator_rotate_every_seconds",
        "RotatorRetiringKeyNotRevoked": "rotator_retiring_deadline_timestamp_seconds",
        "RotatorClockSkew": "rotator_clock_skew_seconds",
        "RotatorClobRateLimited": 'code="429"',
        "RotatorDown": "up{",
        "RotatorMetricsAbsent": "absent(",
        "RotatorCronJobNotSucceeding": "push_time_seconds",
        "RotatorNoLeader": "rotator_leader",
    }
    for name, needle in required.items():
        assert name in alerts, name
        assert needle in alerts[name]["expr"], f"{name}: expected {needle} in its expression"


def test_every_alert_has_severity_text_and_a_runbook_section() -> None:
    readme = RUNBOOK.read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#{1,4} (.+)$", readme, flags=re.M)
    }
    assert "alerts-and-runbook" in headings, "docs/runbook.md lacks its '# Alerts and runbook' title"
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        ann = rule["annotations"]
        assert ann["summary"].strip() and ann["description"].strip(), name
        anchor = ann["runbook_url"].split("#", 1)[1]
        assert anchor == name.lower() and anchor in headings, (
            f"{name}: no section #{anchor} in docs/runbook.md"
        )


# -- dashboard structure (no server needed) --------------------------------------------------------------


def test_dashboard_has_datasource_and_credential_variables() -> None:
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["credential"]["type"] == "query"
    assert variables["credential"]["multi"] and variables["credential"]["includeAll"]
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]
            if "credential" in target["expr"]:
                assert 'credential=~"$credential"' in target["expr"], panel["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_covers_what_on_call_needs() -> None:
    used = {name for _, expr in dashboard_queries() for name in metric_names(grafana_to_promql(expr))}
    for needed in (
        "rotator_key_created_timestamp_seconds",  # key age per credential
        "rotator_next_rotation_timestamp_seconds",  # time to next rotation
        "rotator_rotations_total",  # success / failure rate
        "rotator_rotation_duration_seconds_bucket",  # rotation duration
        "rotator_revocations_total",  # revocations
        "rotator_clob_requests_total",  # CLOB responses by code, rate-limited requests
        "rotator_clock_skew_seconds",  # clock skew
    ):
        assert needed in used, needed
    exprs = [e for _, e in dashboard_queries()]
    assert any('code="429"' in e for e in exprs), "no rate-limited-requests panel"
    assert any("by (endpoint, code)" in e for e in exprs), "no responses-by-code panel"


def test_dashboard_covers_wallet_hygiene() -> None:
    """Issue 16: unmanaged keys, closed-only accounts, the rate-limit tier and its warnings."""
    used = {name for _, expr in dashboard_queries() for name in metric_names(grafana_to_promql(expr))}
    for needed in (
        "rotator_unmanaged_keys",
        "rotator_account_closed_only",
        "rotator_clob_rate_limit_tier_info",
        "rotator_clob_rate_limit_warnings_total",
    ):
        assert needed in used, needed
    assert {"RotatorUnmanagedKeys", "RotatorAccountClosedOnly"} <= set(alert_rules())
    assert alert_rules()["RotatorAccountClosedOnly"]["labels"]["severity"] == "critical"


def test_dashboard_and_alerts_cover_the_credential_kinds() -> None:
    """Issue 27: a Kind variable narrows the credentials (and so every per-credential panel), lost
    builder keys and unmanaged keys by kind have panels, and the alerts say the kind."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert list(variables).index("kind") < list(variables).index("credential")
    kind, cred = variables["kind"], variables["credential"]
    assert kind["type"] == "query" and kind["multi"] and kind["includeAll"]
    assert kind["query"]["query"] == 'label_values(rotator_credential_info{job=~"$job"}, kind)'
    assert cred["query"]["query"] == (
        'label_values(rotator_credential_info{job=~"$job", kind=~"$kind"}, credential)'
    )
    # "All" must be the kind's credentials as listed: an allValue (".+") would match every kind.
    assert "allValue" not in cred
    by_metric = {name: expr for _, expr in dashboard_queries() for name in metric_names(expr)}
    assert 'kind=~"$kind"' in by_metric["rotator_unmanaged_keys_by_kind"]
    assert 'kind="builder"' in by_metric["rotator_lost_keys"]
    rules = alert_rules()
    lost = rules["RotatorLostBuilderKey"]
    assert lost["labels"]["severity"] == "warning" and "rotator_lost_keys" in lost["expr"]
    unmanaged = rules["RotatorUnmanagedKeys"]
    assert "by (namespace, job, credential, kind) (rotator_unmanaged_keys_by_kind)" in unmanaged["expr"]
    assert "$labels.kind" in unmanaged["annotations"]["summary"]


#: Metrics with no panel, on purpose, and whether an alert rule reads them (checked).
OFF_DASHBOARD = {
    "rotator_max_key_age_seconds": ("RotatorKeyTooOld's threshold per credential", True),
    "rotator_schedule_interval_seconds": ("the schedule alerts' threshold (a window missed)", True),
    "rotator_paused_since_timestamp_seconds": ("RotatorPausedTooLong's clock; a panel shows the pause", True),
    "rotator_grace_seconds": ("configuration, for ad-hoc queries; Retiring key deadline shows it", False),
    "rotator_last_failure_timestamp_seconds": (
        "ad-hoc detail beside Consecutive failed passes, which the panel and the alert read",
        False,
    ),
}


def test_every_metric_has_a_panel_or_a_reason_not_to() -> None:
    """A metric added to rotator/metrics.py shows on the dashboard, or says here why it does not
    (issue 24's edge metrics went two rounds without a panel)."""
    from prometheus_client import CollectorRegistry

    from rotator.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    families = {m.name + ("_total" if m.type == "counter" else "") for m in registry.collect()}
    on_dashboard = "\n".join(expr for _, expr in dashboard_queries())
    in_rules = "\n".join(r["expr"] for r in alert_rules().values())
    missing = sorted(
        name
        for name in families
        if name.startswith("rotator_") and name not in on_dashboard and name not in OFF_DASHBOARD
    )
    assert not missing, f"metrics with neither a dashboard panel nor a reason in OFF_DASHBOARD: {missing}"
    for name, (_, alerted) in OFF_DASHBOARD.items():
        assert name in families, f"OFF_DASHBOARD names {name}, which rotator no longer exports"
        assert (name in in_rules) == alerted, f"{name}: an alert reads it: {name in in_rules}"


def test_dashboard_shows_the_clobs_edge() -> None:
    """Issue 24: an egress block, how the wallet keeps keys, key propagation, revived keys."""
    panels = {p["title"]: p for p in dashboard()["panels"]}
    edge = {
        "Egress blocked": "rotator_clob_blocked",
        "How the wallet keeps keys": "rotator_key_model",
        "Key propagation": "rotator_key_propagation_seconds",
        "Revived keys per day": "rotator_keys_revived_total",
        "Reaped keys per day": "rotator_reaped_keys_total",
    }
    for title, metric in edge.items():
        assert metric in metric_names(grafana_to_promql(panels[title]["targets"][0]["expr"])), title
    assert panels["How the wallet keeps keys"]["options"]["textMode"] == "name"
    assert "== 1" in panels["How the wallet keeps keys"]["targets"][0]["expr"]  # the model that holds, only


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Every query, with Grafana's variables filled in, is valid PromQL for promtool."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = run_promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_metric_name_extraction() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, credential) (increase(a_bucket{x=~"$y"}[1d]))) / b'
    ) == {"a_bucket", "b"}
    assert metric_names("time() - max by (job) (c offset 5m) > on (job) d + 7200") == {"c", "d"}
    assert metric_names('absent(up{job=~".*rotator.*"}) or vector(1)') == {"up"}


# -- a live daemon ---------------------------------------------------------------------------------------


class Daemon:
    def __init__(self, worker: Worker, proc: subprocess.Popen[str], port: int) -> None:
        self.worker = worker
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.stderr = ""
        self.returncode: int | None = None

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5.0)

    def metrics(self) -> str:
        r = self.get("/metrics")
        assert r.status_code == 200
        OUTPUTS.append(r.text)
        return r.text

    def stop(self) -> int:
        if self.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            self.returncode, _out, self.stderr = self.worker.finish(self.proc, timeout=30)
        return self.returncode


@contextlib.contextmanager
def running_daemon(sandbox: Sandbox, tmp: Path, name: str) -> Iterator[Daemon]:
    """``rotator run`` against the sandbox, file store, metrics on a free port, logs on "auto";
    yields once the first pass has published a key."""
    key, address = new_wallet()
    port = free_port()
    worker = Worker(
        tmp,
        sandbox.url,
        key,
        address,
        name=name,
        extra={
            "metrics": {"port": port, "host": "127.0.0.1"},
            "daemon": {"tick": "1s", "jitter": 0},
            # "auto" on a pipe must give JSON lines: that is what a pod's log is.
            "log": {"format": "auto", "level": "info"},
        },
    )
    proc = worker.start("run")
    d = Daemon(worker, proc, port)

    def ready() -> bool:
        if proc.poll() is not None:
            code, _out, err = worker.finish(proc)  # collected for the suite's leak check
            raise AssertionError(f"the daemon exited with {code}:\n{err}")
        try:
            return (
                d.get("/readyz").status_code == 200
                and "rotator_key_created_timestamp_seconds{" in d.metrics()
            )
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=30)
        yield d
    finally:
        if d.returncode is None and proc.poll() is None:
            d.stop()


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One running daemon shared by the read-only tests of this module."""
    with running_daemon(sandbox, tmp_path_factory.mktemp("daemon"), "daemon-mm1") as d:
        yield d


def test_daemon_health_endpoints(daemon: Daemon) -> None:
    assert daemon.get("/healthz").status_code == 200
    ready = daemon.get("/readyz")
    assert ready.status_code == 200 and ready.text.strip() == "ready"
    assert daemon.get("/nope").status_code == 404
    assert daemon.get("/metrics").headers["content-type"].startswith("text/plain")


def test_daemon_exports_design_metrics_with_safe_labels(daemon: Daemon) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = daemon.metrics()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in DESIGN_METRICS.items():
        family_name = name.removesuffix("_total") if kind == "counter" else name
        assert family_name in families, f"{name} is not exported"
        assert families[family_name].type == kind, name
    key = daemon.worker.published()
    assert key is not None
    for family in families.values():
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, f"{sample.name}: labels {set(sample.labels)}"
    # No key id (in full), no address, no secret anywhere in the exposition.
    for forbidden in (key.api_key, key.address, key.address.lower(), key.api_secret.reveal()):
        assert forbidden not in text
    cred = {"credential": "daemon-mm1"}
    m = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}

    def value(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted({**cred, **labels}.items())))]

    assert value("rotator_key_created_timestamp_seconds") == pytest.approx(key.created_at)
    assert value("rotator_rotate_every_seconds") == 3600
    assert value("rotator_grace_seconds") == 2
    assert value("rotator_next_rotation_timestamp_seconds") == pytest.approx(key.created_at + 3600)
    assert value("rotator_consecutive_failures") == 0
    assert value("rotator_rotations_total", result="success") >= 1
    assert time.time() - value("rotator_last_success_timestamp_seconds") < 30


def test_dashboard_and_rules_name_only_metrics_the_daemon_exports(daemon: Daemon) -> None:
    exported = exported_names(daemon.metrics())
    for where, expr in dashboard_queries():
        unknown = metric_names(grafana_to_promql(expr)) - exported
        assert not unknown, f"dashboard {where} uses metrics the worker does not export: {unknown}"
    for name, rule in alert_rules().items():
        unknown = metric_names(rule["expr"]) - exported - NOT_OURS
        assert not unknown, f"alert {name} uses metrics the worker does not export: {unknown}"


def test_daemon_logs_json_audit_events_and_stops_on_sigterm(sandbox: Sandbox, tmp_path: Path) -> None:
    with running_daemon(sandbox, tmp_path, "daemon-stop") as daemon:
        key = daemon.worker.published()
        assert key is not None
        assert daemon.stop() == 0
    lines = [ln for ln in daemon.stderr.splitlines() if ln.strip()]
    events = [json.loads(ln) for ln in lines]  # every line is a JSON object: "auto" on a pipe
    audit = [e for e in events if e["logger"] == "rotator.audit"]
    steps = {e["step"] for e in audit}
    assert {"intent", "create", "verify", "promote"} <= steps, steps
    for e in audit:
        assert e["credential"] == "daemon-stop"
        assert isinstance(e["duration"], float | int) and e["outcome"]
        for field in ("key", "previous"):
            if e.get(field) is not None:
                assert e[field] == mask(e[field]) and len(e[field]) <= 18, f"{field} not masked in {e}"
    created = next(e for e in audit if e["step"] == "create")
    assert created["nonce"] == key.nonce and created["key"] == key.masked
    assert key.api_key not in daemon.stderr, "a full key id in the logs"
    assert any(e["msg"] == "daemon stopped" for e in events)


# -- one-shot runs and the Pushgateway -------------------------------------------------------------------


def oneshot_worker(tmp: Path, url: str, pg: Pushgateway, job: str, name: str) -> Worker:
    key, address = new_wallet()
    tmp.mkdir(parents=True, exist_ok=True)
    return Worker(
        tmp,
        url,
        key,
        address,
        name=name,
        extra={"metrics": {"port": 0, "pushgateway": pg.url, "job": job}},
    )


def pushed(pg: Pushgateway, job: str, name: str, **labels: str) -> float | None:
    """The value the Pushgateway holds for ``name`` with exactly these labels (plus job and instance)."""
    want = {"job": job, "instance": "", **labels}
    for (n, lbls), v in pg.samples(job).items():
        if n == name and dict(lbls) == want:
            return v
    return None


def test_oneshot_pushes_one_group_per_credential(
    sandbox: Sandbox, pushgateway: Pushgateway, tmp_path: Path
) -> None:
    job = unique_job()
    a = oneshot_worker(tmp_path / "a", sandbox.url, pushgateway, job, "push-a")
    b = oneshot_worker(tmp_path / "b", sandbox.url, pushgateway, job, "push-b")
    started = time.time()
    a.rotate()
    b.rotate()  # a run over another credential must not erase push-a's series
    text = pushgateway.metrics_text()
    OUTPUTS.append(text)
    for w in (a, b):
        key = w.published()
        assert key is not None
        cred = w.name
        assert pushed(pushgateway, job, "rotator_key_created_timestamp_seconds", credential=cred) == (
            pytest.approx(key.created_at)
        )
        assert pushed(pushgateway, job, "rotator_rotations_total", credential=cred, result="success") == 1
        assert pushed(pushgateway, job, "rotator_consecutive_failures", credential=cred) == 0
        last = pushed(pushgateway, job, "rotator_last_success_timestamp_seconds", credential=cred)
        assert last is not None and last >= started
        assert pushed(pushgateway, job, "push_time_seconds", credential=cred) is not None
        for forbidden in (key.api_key, key.address, key.address.lower()):
            assert forbidden not in text
    # Process-wide series (no credential label) sit in the job's own group, not in a credential's.
    assert pushed(pushgateway, job, "rotator_build_info", version=_version()) == 1
    assert pushed(pushgateway, job, "rotator_clob_requests_total", endpoint="/auth/api-key", code="200") == 1
    assert pushed(pushgateway, job, "rotator_build_info", credential="push-a", version=_version()) is None


def _version() -> str:
    from rotator import __version__

    return __version__


@pytest.mark.slow
def test_forced_failure_is_counted_and_fires_the_rotation_failing_alert(
    fresh_sandbox: Sandbox, pushgateway: Pushgateway, tmp_path: Path
) -> None:
    job = unique_job()
    w = oneshot_worker(tmp_path, fresh_sandbox.url, pushgateway, job, "failing-mm1")
    w.rotate()  # a healthy first key
    good = pushed(pushgateway, job, "rotator_last_success_timestamp_seconds", credential=w.name)
    healthy_streak = pushed(pushgateway, job, "rotator_consecutive_failures", credential=w.name)
    assert good is not None and healthy_streak == 0

    fresh_sandbox.inject("POST", "/auth/api-key", 503, '{"error":"service unavailable"}', times=20)
    started = time.time()
    for run in (1, 2, 3):
        proc = w.run("rotate", "--all", "--force")
        assert proc.returncode == 1, f"run {run}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "failing-mm1: failed" in proc.stdout
        # The failure counter of this run, and the streak carried across runs.
        assert pushed(pushgateway, job, "rotator_rotations_total", credential=w.name, result="failure") == 1
        assert pushed(pushgateway, job, "rotator_consecutive_failures", credential=w.name) == run
    last_failure = pushed(pushgateway, job, "rotator_last_failure_timestamp_seconds", credential=w.name)
    assert last_failure is not None and last_failure >= started
    # A failed run does not push a success timestamp: the Pushgateway keeps the last good run's.
    assert pushed(pushgateway, job, "rotator_last_success_timestamp_seconds", credential=w.name) == good
    streak = pushed(pushgateway, job, "rotator_consecutive_failures", credential=w.name)
    assert streak is not None

    # The observed values, fed to the real alert rule by promtool: the failing streak fires the alert,
    # the healthy value observed before the failures does not.
    rule = alert_rules()["RotatorRotationFailing"]

    def render(text: str) -> str:
        return (
            text.replace("{{ $labels.credential }}", w.name)
            .replace("{{ $labels.job }}", job)
            .replace("{{ $value }}", f"{streak:g}")
        )

    series = f'rotator_consecutive_failures{{job="{job}",credential="{w.name}"}}'
    test_file = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": f"{streak:g}+0x20"}],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "RotatorRotationFailing",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "job": job, "credential": w.name},
                                "exp_annotations": {k: render(v) for k, v in rule["annotations"].items()},
                            }
                        ],
                    }
                ],
            },
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": f"{healthy_streak:g}+0x20"}],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "RotatorRotationFailing", "exp_alerts": []}
                ],
            },
        ],
    }
    path = tmp_path / "observed.test.yaml"
    path.write_text(yaml.safe_dump(test_file, sort_keys=False))
    proc = run_promtool("test", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_oneshot_with_unreachable_pushgateway_still_reports_the_rotation(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    key, address = new_wallet()
    w = Worker(
        tmp_path,
        sandbox.url,
        key,
        address,
        name="nopush-mm1",
        extra={"metrics": {"port": 0, "pushgateway": f"http://127.0.0.1:{free_port()}"}},
    )
    proc = w.rotate()  # exit 0: the rotation succeeded; the push is not the job's purpose
    errors = [json.loads(ln) for ln in proc.stderr.splitlines() if '"level":"error"' in ln]
    assert len(errors) == 1, proc.stderr  # one line says it all
    assert "push failed for group(s) credential=nopush-mm1, job=rotator" in errors[0]["msg"]
    assert "Traceback" not in proc.stderr
