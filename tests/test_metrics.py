"""Every metric of DESIGN.md, by name, labels and value, after real passes against the sandboxes; and the
one-shot exports (`syncd run --metrics-file`, `--pushgateway`). Each test has its own CollectorRegistry."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sandboxes._core import Fault
from sandboxes.server import ServerThread
from syncd.metrics import Metrics, category
from tests.e2e import C8_TOKEN, CR_CLIENT, CR_SECRET, World, emails, provider_entries

# DESIGN.md §Metrics, and syncd_unremovable_members (drift only a person can remove, apart from the drift syncd
# will still get done, for an alert of its own): name -> label names (counters by their exposed *_total name)
DESIGN_METRICS: dict[str, tuple[str, ...]] = {
    "syncd_unremovable_members": ("group", "provider"),
    "syncd_pair_blocked": ("group", "provider"),  # the quarantine, so its alert fires once per blocked pair
    "syncd_runs_total": ("outcome",),
    "syncd_run_duration_seconds": (),
    "syncd_last_success_timestamp_seconds": ("group", "provider"),
    "syncd_members": ("group", "provider", "side"),
    "syncd_drift": ("group", "provider", "kind"),
    "syncd_member_changes_total": ("group", "provider", "op"),
    "syncd_members_rejected_total": ("group", "provider", "reason"),
    "syncd_removals_blocked_total": ("group", "provider"),
    "syncd_api_requests_total": ("provider", "method", "status"),
    "syncd_api_request_duration_seconds": ("provider",),
    "syncd_api_retries_total": ("provider", "reason"),
}
HISTOGRAMS = {"syncd_run_duration_seconds", "syncd_api_request_duration_seconds"}

Key = tuple[str, frozenset[tuple[str, str]]]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path, metrics=Metrics(CollectorRegistry()))


def samples(metrics: Metrics, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples called exactly `name`, by label set."""
    return {
        frozenset(s.labels.items()): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name
    }


def labels(**kw: str) -> frozenset[tuple[str, str]]:
    return frozenset(kw.items())


def pair_values(metrics: Metrics, name: str, **fixed: str) -> dict[tuple[str, ...], float]:
    """Samples of `name` keyed by their label values other than `fixed`, for compact assertions."""
    out = {}
    for key, value in samples(metrics, name).items():
        d = dict(key)
        if all(d.get(k) == v for k, v in fixed.items()):
            out[tuple(v for k, v in sorted(d.items()) if k not in fixed)] = value
    return out


def all_label_values(metrics: Metrics) -> set[str]:
    return {v for family in metrics.registry.collect() for s in family.samples for v in s.labels.values()}


# ------------------------------------------------------------------------------------------- the names


def test_every_design_metric_exists_with_exactly_its_labels(world: World) -> None:
    families = {f.name: f for f in world.metrics.registry.collect()}
    exposed = set()
    for family in families.values():
        names = {family.name + "_total" if family.type == "counter" else family.name}
        exposed |= names
        (name,) = names
        assert name in DESIGN_METRICS, f"{name} is not in DESIGN.md"
    assert exposed == set(DESIGN_METRICS)
    # label names, from the collectors themselves (a metric without samples yet still has them)
    for attr in vars(world.metrics).values():
        if hasattr(attr, "_labelnames") and hasattr(attr, "_name"):
            exposed_name = attr._name + ("_total" if attr._type == "counter" else "")
            assert tuple(attr._labelnames) == DESIGN_METRICS[exposed_name], exposed_name
    for name in HISTOGRAMS:
        assert families[name].type == "histogram"
    # the run outcomes exist from the start, at 0, so the first failure is an increase alerts can see
    assert samples(world.metrics, "syncd_runs_total") == {
        labels(outcome=o): 0.0 for o in ("success", "failure", "blocked", "interrupted")
    }


# --------------------------------------------------------------------------------------- after passes


async def test_samples_after_a_pass(world: World) -> None:
    world.people(emails(4))
    world.cr.inject(Fault(status=429, retry_after=0, method="POST", path="/upsert", times=1))
    world.c8.inject(Fault(status=503, method="GET", times=1))
    config = world.config([{"name": "Team", "members": [*emails(4), "not-an-email", emails(1)[0].upper()]}])
    before = time.time()
    report = await world.run(config)
    assert report.ok
    m = world.metrics

    assert samples(m, "syncd_runs_total") == {
        labels(outcome="success"): 1.0,
        labels(outcome="failure"): 0.0,
        labels(outcome="blocked"): 0.0,
        labels(outcome="interrupted"): 0.0,
    }
    assert samples(m, "syncd_run_duration_seconds_count") == {labels(): 1.0}
    assert 0 < samples(m, "syncd_run_duration_seconds_sum")[labels()] < 60
    success = pair_values(m, "syncd_last_success_timestamp_seconds")
    assert set(success) == {("Team", "c8"), ("Team", "cr")}
    assert all(before <= v <= time.time() for v in success.values())
    assert pair_values(m, "syncd_members") == {
        ("Team", "c8", "actual"): 0.0,
        ("Team", "c8", "desired"): 4.0,
        ("Team", "cr", "actual"): 0.0,
        ("Team", "cr", "desired"): 4.0,
    }
    assert set(pair_values(m, "syncd_drift").values()) == {0.0} and len(pair_values(m, "syncd_drift")) == 4
    assert pair_values(m, "syncd_member_changes_total") == {
        ("Team", "add", "c8"): 4.0,
        ("Team", "remove", "c8"): 0.0,
        ("Team", "add", "cr"): 4.0,
        ("Team", "remove", "cr"): 0.0,
    }
    assert pair_values(m, "syncd_members_rejected_total") == {
        ("Team", "c8", "duplicate"): 1.0,
        ("Team", "c8", "invalid_email"): 1.0,
        ("Team", "cr", "duplicate"): 1.0,
        ("Team", "cr", "invalid_email"): 1.0,
    }
    assert pair_values(m, "syncd_removals_blocked_total") == {("Team", "c8"): 0.0, ("Team", "cr"): 0.0}

    # API requests: each one the sandboxes served (token requests aside), by method and status
    requests = pair_values(m, "syncd_api_requests_total")
    c8_served = {(r.method, str(r.status)) for r in world.c8.requests}
    assert {(meth, st) for (meth, p, st) in requests if p == "c8"} == c8_served
    assert requests[("GET", "c8", "503")] == 1.0 and requests[("POST", "cr", "429")] == 1.0
    assert sum(v for (_, p, _), v in requests.items() if p == "c8") == len(world.c8.requests)
    pair_requests = {p.provider: p.requests["read"] + p.requests["write"] for p in report.pairs}
    assert sum(v for (_, p, _), v in requests.items() if p == "cr") == pair_requests["cr"]
    assert pair_values(m, "syncd_api_retries_total") == {("c8", "5xx"): 1.0, ("cr", "rate_limited"): 1.0}
    durations = samples(m, "syncd_api_request_duration_seconds_count")
    assert durations == {
        labels(provider="c8"): float(len(world.c8.requests)),
        labels(provider="cr"): float(pair_requests["cr"]),
    }
    buckets = samples(m, "syncd_api_request_duration_seconds_bucket")
    assert buckets[labels(provider="c8", le="+Inf")] == durations[labels(provider="c8")]


async def test_no_label_value_is_an_email_or_a_secret(world: World) -> None:
    world.people(["known@example.com"])  # c8 rejects members it does not know: provider rejects, by category
    people = ["known@example.com", "Stranger.Person@example.com", "bad@@example.com"]
    config = world.config([{"name": "Team", "members": people}])
    await world.run(config)
    await world.run(config, dry_run=True)
    values = all_label_values(world.metrics)
    assert "unknown_recipient" in values  # the provider's reject, as a category
    for value in values:
        assert "@" not in value, value
        for secret in (C8_TOKEN, CR_SECRET, CR_CLIENT):
            assert secret not in value
    assert category("Unknown recipient alice@example.com") == "other"
    assert category("unknown_recipient") == "unknown_recipient"


async def test_drift_is_what_a_dry_run_would_change(world: World) -> None:
    world.people(emails(5))
    config = world.config([{"name": "Team", "members": emails(5)}])
    await world.run(config, dry_run=True)
    m = world.metrics
    assert pair_values(m, "syncd_drift") == {
        ("Team", "add", "c8"): 5.0,
        ("Team", "remove", "c8"): 0.0,
        ("Team", "add", "cr"): 5.0,
        ("Team", "remove", "cr"): 0.0,
    }
    assert set(pair_values(m, "syncd_member_changes_total").values()) == {0.0}  # a dry run changes nothing
    assert samples(m, "syncd_last_success_timestamp_seconds") == {}  # pending is not a success
    assert world.mutating() == 0

    await world.run(config)  # applied: no drift left
    assert set(pair_values(m, "syncd_drift").values()) == {0.0}
    assert pair_values(m, "syncd_member_changes_total", op="add") == {("Team", "c8"): 5.0, ("Team", "cr"): 5.0}


async def test_drift_keeps_the_removals_the_guard_held_back(world: World) -> None:
    world.people(emails(40))
    group: dict[str, Any] = {"name": "Team", "members": emails(40), "targets": ["cr"]}
    await world.run(world.config([group]))
    group["members"] = emails(10)  # removing 30 of 40 is over the 25 % ratio: held back
    report = await world.run(world.config([group]))
    (pair,) = report.pairs
    assert str(pair.status) == "blocked" and pair.held_back == 30
    m = world.metrics
    assert pair_values(m, "syncd_drift") == {("Team", "add", "cr"): 0.0, ("Team", "remove", "cr"): 30.0}
    assert pair_values(m, "syncd_removals_blocked_total") == {("Team", "cr"): 1.0}
    assert pair_values(m, "syncd_member_changes_total", op="remove") == {("Team", "cr"): 0.0}
    assert samples(m, "syncd_runs_total")[labels(outcome="blocked")] == 1.0
    assert pair_values(m, "syncd_members") == {("Team", "cr", "actual"): 40.0, ("Team", "cr", "desired"): 10.0}

    await world.run(world.config([group]), allow_mass_removal=True)
    assert pair_values(m, "syncd_drift", kind="remove") == {("Team", "cr"): 0.0}
    assert pair_values(m, "syncd_member_changes_total", op="remove") == {("Team", "cr"): 30.0}


async def test_a_failed_pair_counts_a_failed_run_and_keeps_its_last_success(world: World) -> None:
    world.people(emails(2))
    config = world.config([{"name": "Team", "members": emails(2)}])
    await world.run(config)
    success = pair_values(world.metrics, "syncd_last_success_timestamp_seconds")
    world.cr.clients.clear()  # CleverReach refuses our client from now on
    await world.run(config)
    m = world.metrics
    assert samples(m, "syncd_runs_total")[labels(outcome="failure")] == 1.0
    after = pair_values(m, "syncd_last_success_timestamp_seconds")
    assert after[("Team", "cr")] == success[("Team", "cr")]  # unchanged: the alert on its age can fire
    assert after[("Team", "c8")] >= success[("Team", "c8")]


# --------------------------------------------------------------------------------------- one-shot runs


def syncd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYNCD_LOG_FORMAT": "json"}
    env.pop("SYNCD_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.fixture
def served(world: World) -> Iterator[tuple[World, str]]:
    with ServerThread(world.app) as server:
        yield world, server.url


def parse(text: str) -> dict[Key, float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_run_writes_a_node_exporter_textfile(served: tuple[World, str], tmp_path: Path) -> None:
    world, url = served
    world.people(emails(3))
    path = world.write_config([{"name": "Team", "members": emails(3)}], providers=provider_entries(url))
    out_dir = tmp_path / "textfile"
    out_dir.mkdir()
    prom = out_dir / "syncd.prom"
    result = syncd("run", "--config", str(path), "--metrics-file", str(prom))
    assert result.returncode == 0, result.stderr
    assert os.listdir(out_dir) == ["syncd.prom"]  # written beside under a temporary name, then renamed
    values = parse(prom.read_text())
    assert values[("syncd_runs_total", labels(outcome="success"))] == 1.0
    assert values[("syncd_member_changes_total", labels(group="Team", provider="c8", op="add"))] == 3.0
    assert values[("syncd_members", labels(group="Team", provider="cr", side="desired"))] == 3.0
    assert values[("syncd_drift", labels(group="Team", provider="cr", kind="add"))] == 0.0
    assert values[("syncd_run_duration_seconds_count", labels())] == 1.0
    names = {name for name, _ in values}
    assert {"syncd_api_requests_total", "syncd_last_success_timestamp_seconds"} <= names

    # a second run replaces the file whole
    again = syncd("run", "--config", str(path), "--metrics-file", str(prom))
    assert again.returncode == 0
    assert parse(prom.read_text())[("syncd_member_changes_total", labels(group="Team", provider="c8", op="add"))] == 0


def test_run_reports_an_unwritable_metrics_file_in_one_line(served: tuple[World, str], tmp_path: Path) -> None:
    world, url = served
    path = world.write_config([], providers=provider_entries(url))
    result = syncd("run", "--config", str(path), "--metrics-file", str(tmp_path / "missing" / "syncd.prom"))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert "cannot write the metrics file" in line and "Traceback" not in result.stderr


class Gateway(http.server.BaseHTTPRequestHandler):
    """A Pushgateway stand-in: records each request (method, path, content type, body)."""

    received: list[dict[str, Any]]
    status = 200

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append(
            {"method": self.command, "path": self.path, "type": self.headers.get("Content-Type"), "body": body}
        )
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST = _record

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, type[Gateway]]]:
    handler = type("Handler", (Gateway,), {"received": [], "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_run_pushes_to_a_pushgateway(served: tuple[World, str], gateway: tuple[str, type[Gateway]]) -> None:
    world, url = served
    gw_url, handler = gateway
    world.people(emails(2))
    path = world.write_config([{"name": "Team", "members": emails(2)}], providers=provider_entries(url))
    result = syncd("run", "--config", str(path), "--pushgateway", gw_url)
    assert result.returncode == 0, result.stderr
    (pushed,) = handler.received
    assert pushed["method"] == "PUT" and pushed["path"] == "/metrics/job/syncd"
    assert pushed["type"].startswith("text/plain")
    values = parse(pushed["body"].decode())
    assert values[("syncd_runs_total", labels(outcome="success"))] == 1.0
    assert values[("syncd_member_changes_total", labels(group="Team", provider="cr", op="add"))] == 2.0


def test_a_failing_pushgateway_is_reported_and_does_not_change_the_exit_code(
    served: tuple[World, str], gateway: tuple[str, type[Gateway]]
) -> None:
    world, url = served
    gw_url, handler = gateway
    handler.status = 500
    path = world.write_config([], providers=provider_entries(url))
    result = syncd("run", "--config", str(path), "--pushgateway", gw_url)
    assert result.returncode == 0
    assert f"could not push metrics to {gw_url}" in result.stderr
    assert len(handler.received) == 1


# ------------------------------------------------------------------------------- dashboard and alert rules

DEPLOY = Path(__file__).parent.parent / "deploy"
_METRIC_NAME = re.compile(r"\b(syncd_[a-z_]+)")


def _design_name(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "syncd.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_and_alerts_use_only_design_metrics() -> None:
    exprs = dashboard_exprs()
    used = {_design_name(n) for e in exprs for n in _METRIC_NAME.findall(e)}
    assert used == set(DESIGN_METRICS)  # every metric is on the dashboard, and nothing else is
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "SyncdPassesFailing",
        "SyncdDriftNotShrinking",
        "SyncdRemovalsBlocked",
        "SyncdNoRecentSuccess",
        "SyncdUnremovableMembers",
        "SyncdMembersRejected",
    } <= set(alerts)
    for expr in alerts.values():
        assert {_design_name(n) for n in _METRIC_NAME.findall(expr)} <= set(DESIGN_METRICS)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (.ci/run installs it)")
def test_dashboard_queries_and_alert_rules_pass_promtool(tmp_path: Path) -> None:
    # Grafana's variables replaced by values, each query becomes a recording rule: promtool parses them all.
    substitutions = {"$__rate_interval": "5m", "$job": ".*", "$group": ".*", "$provider": ".*"}
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run(
            ["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
