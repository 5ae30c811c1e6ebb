"""`syncd serve` as it runs in production: a subprocess, a config file, sandboxes on a real loopback port, the
HTTP endpoints on another, and signals. Plus the scheduling rules in-process (no overlap, coalescing, cron)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sandboxes._core import Fault
from sandboxes.server import free_port
from syncd.cli import build_parser
from syncd.config import ScheduleSettings, load_config
from syncd.model import PairResult, PairStatus, Strategy
from syncd.scheduling import PassScheduler, build_trigger, cron_day_of_week
from syncd.serve import STOP_TIMEOUT
from syncd.serve import Daemon as SyncdDaemon
from syncd.state import Store
from tests.e2e import World, emails, provider_entries

STOP_BOUND = 15.0  # seconds from SIGTERM to exit that the tests accept (the daemon's own default bound is 30)
# From the "stopped after" line to the exit: measured ~0.02 s; the interpreter's teardown alone took 0.2 s here,
# 2 s in a container with a tenth of a CPU, and a worker thread stuck on the state DB held it up for 30 s.
EXIT_AFTER_STOPPED = 1.0


# ------------------------------------------------------------------------------------------ the process


class Daemon:
    """`python -m syncd serve` in a subprocess, its stderr in a file, its HTTP port known. `python`: what runs
    the `syncd` command (``-c SCRIPT`` to run something before it)."""

    def __init__(self, config: Path, port: int, log: Path, *args: str, python: Sequence[str] = ("-m", "syncd")) -> None:
        self.port, self.log = port, log
        env = {**os.environ, "SYNCD_LOG_FORMAT": "json"}
        env.pop("SYNCD_CONFIG", None)
        self._stderr = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, *python, "serve", "--config", str(config), *args],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
        )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_until(self, what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"syncd serve exited ({self.proc.returncode}) waiting for {what}:\n{self.logs()}")
            try:
                if condition():
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.logs()}")

    def up(self) -> Daemon:
        self.wait_until("/healthz", lambda: self.get("/healthz")[0] == 200)
        return self

    def runs_total(self) -> dict[str, float]:
        status, text = self.get("/metrics")
        assert status == 200
        return {
            s.labels["outcome"]: s.value
            for family in text_string_to_metric_families(text)
            if family.name == "syncd_runs"
            for s in family.samples
            if s.name == "syncd_runs_total"
        }

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, float]:
        """Send `sig`; the exit code and the seconds it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"syncd serve did not exit within 60 s of {sig.name}:\n{self.logs()}") from None
        return code, time.monotonic() - started

    def stop_and_time_the_exit(self) -> float:
        """SIGTERM; the seconds from the daemon's "stopped after" line, which must be the last it writes, to its
        exit, which must be 0."""
        code, _ = self.stop(signal.SIGTERM)
        exited = time.time()
        assert code == 0, self.logs()
        last = json.loads(self.logs().splitlines()[-1])
        assert last["logger"] == "syncd.serve" and last["msg"].startswith("stopped after"), self.logs()
        return exited - datetime.fromisoformat(last["ts"].replace("Z", "+00:00")).timestamp()

    def logs(self) -> str:
        self._stderr.flush()
        return self.log.read_text()

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def start(
    daemons: list[Daemon],
    world: World,
    url: str,
    groups: list[dict[str, Any]],
    *args: str,
    python: Sequence[str] = ("-m", "syncd"),
    server: Mapping[str, Any] | None = None,
    **top: Any,
) -> Daemon:
    """A `syncd serve` (not started yet: `.up()`) on a free port; `server`: more of its server settings."""
    port = free_port()
    top.setdefault("schedule", {"every": "1s"})
    top.setdefault("providers", provider_entries(url))
    path = world.write_config(groups, server={"listen": f"127.0.0.1:{port}", **(server or {})}, **top)
    daemon = Daemon(path, port, world.tmp / f"serve-{len(daemons)}.log", *args, python=python)
    daemons.append(daemon)
    return daemon


def state(world: World) -> Store:
    return Store.open(f"sqlite:///{world.tmp}/state.db")


# --------------------------------------------------------------------------------------- the daemon


def test_passes_on_schedule_endpoints_and_clean_stop(served: tuple[World, str], daemons: list[Daemon]) -> None:
    world, url = served
    world.people(emails(3))
    daemon = start(daemons, world, url, [{"name": "Team", "members": emails(3)}]).up()

    # the first pass (at start) applies the members; the next ones, on the 1 s schedule, only read
    daemon.wait_until("the first pass", lambda: daemon.runs_total().get("success", 0) >= 1)
    assert world.c8.mutating_count > 0 and world.cr.mutating_count > 0
    world.clear_logs()
    after_first = daemon.runs_total()["success"]
    daemon.wait_until("two more passes", lambda: daemon.runs_total().get("success", 0) >= after_first + 2)
    assert world.c8.count(mutating=False) >= 2 and world.cr.count(mutating=False) >= 2  # each pass read both
    assert world.mutating() == 0
    assert daemon.runs_total()["failure"] == 0

    status, body = daemon.get("/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["scheduler"] == "running"
    assert health["last_pass"]["outcome"] == "success" and health["passes_started"] >= 2
    status, body = daemon.get("/readyz")
    assert status == 200 and json.loads(body)["status"] == "ok", body
    assert daemon.get("/nope")[0] == 404

    status, text = daemon.get("/metrics")
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"syncd_runs", "syncd_members", "syncd_drift", "syncd_api_requests", "process_start_time_seconds"} <= names

    code, seconds = daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.logs()
    assert seconds < STOP_BOUND
    lines = daemon.log_lines()
    assert any("SIGTERM" in line["msg"] for line in lines)
    assert all(line["level"] not in ("error", "critical") for line in lines), daemon.logs()
    # run ids on the lines of a pass, and no member's address at INFO
    assert any(line.get("run_id") for line in lines if line["logger"] == "syncd.reconciler")
    assert "m00000@example.com" not in daemon.logs()

    with state(world) as store:
        runs = store.runs(limit=None)
        assert len(runs) >= 2 and all(r.trigger == "serve" for r in runs)
        assert {r.outcome for r in runs} <= {"success", "interrupted"} and runs[-1].outcome == "success"


def test_sigterm_during_a_slow_pass_finishes_requests_in_flight_and_records_interrupted(
    served: tuple[World, str], daemons: list[Daemon]
) -> None:
    world, url = served
    world.cr.inject(Fault(status=0, delay=0.8, path="/upsert", times=0))  # every upsert takes a while
    providers = provider_entries(url, batch_size=250, max_concurrency=2)
    daemon = start(
        daemons,
        world,
        url,
        [{"name": "Big", "members": emails(5000), "targets": ["cr"]}],
        providers=providers,
        schedule={"every": "1h"},
    ).up()
    daemon.wait_until("the first upsert", lambda: world.cr.count(path="/upsert") >= 1)

    code, seconds = daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.logs()
    assert seconds < STOP_BOUND
    upserts = world.cr.count(path="/upsert")
    assert upserts < 20  # far from the 20 the whole pass needs: nothing new started after the signal
    (gid,) = world.cr.groups
    assert len(world.cr.active_emails(gid)) == 250 * upserts  # what was in flight finished and was kept
    with state(world) as store:
        (run,) = store.runs()
        assert run.outcome == "interrupted" and run.finished_at is not None


def test_a_pass_stuck_past_the_stop_timeout_is_cancelled_and_still_recorded(
    served: tuple[World, str], daemons: list[Daemon]
) -> None:
    world, url = served
    world.cr.inject(Fault(status=0, delay=8, path="/upsert", times=1))  # one request that hangs for long
    daemon = start(
        daemons,
        world,
        url,
        [{"name": "Stuck", "members": emails(10), "targets": ["cr"]}],
        "--stop-timeout",
        "2",
        schedule={"every": "1h"},
    ).up()
    daemon.wait_until("the group created", lambda: bool(world.cr.groups))
    time.sleep(0.5)  # the upsert is sent next and hangs (the sandbox logs a request once it has answered)
    assert world.cr.count(path="/upsert") == 0
    code, seconds = daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.logs()
    assert seconds < 7  # the 2 s bound plus interpreter exit, well before the request would have answered
    lines = daemon.log_lines()
    assert any("cancelling it" in line["msg"] for line in lines)
    assert [line for line in lines if line["level"] == "error"] == [], daemon.logs()
    with state(world) as store:
        (run,) = store.runs()
        assert run.outcome == "interrupted" and run.finished_at is not None


# Stand-ins for what an interpreter's exit waits for besides syncd's own work: an exit hook some library
# registered, a (non-daemon) thread still blocked in a call. Once the daemon has stopped, neither may delay it.
SLOW_TEARDOWN = """
import atexit, sys, threading, time
atexit.register(time.sleep, 30)
threading.Thread(target=time.sleep, args=(30,), name="blocked-call").start()
from syncd.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("teardown", ["plain", "slow"])
def test_the_process_exits_as_soon_as_it_says_it_stopped(
    served: tuple[World, str], daemons: list[Daemon], teardown: str
) -> None:
    world, url = served
    world.people(emails(3))
    python = ("-c", SLOW_TEARDOWN) if teardown == "slow" else ("-m", "syncd")
    daemon = start(daemons, world, url, [{"name": "Team", "members": emails(3)}], python=python).up()
    daemon.wait_until("a pass", lambda: daemon.runs_total().get("success", 0) >= 1)
    after = daemon.stop_and_time_the_exit()
    assert after < EXIT_AFTER_STOPPED, f"exited {after:.2f}s after the stopped line:\n{daemon.logs()}"


def test_a_thread_stuck_on_the_state_db_does_not_hold_up_the_exit(
    served: tuple[World, str], daemons: list[Daemon]
) -> None:
    world, url = served
    # another process holds the state DB: opening it (in a worker thread) waits out SQLite's 30 s busy timeout
    locker = sqlite3.connect(world.tmp / "state.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        daemon = start(
            daemons, world, url, [{"name": "Team", "targets": ["cr"]}], "--stop-timeout", "2", schedule={"every": "1h"}
        ).up()
        daemon.wait_until("the first pass", lambda: json.loads(daemon.get("/healthz")[1])["pass_running"])
        time.sleep(0.3)
        after = daemon.stop_and_time_the_exit()  # the pass is cancelled at the stop bound; the thread waits on
    finally:
        locker.close()
    assert after < EXIT_AFTER_STOPPED, f"exited {after:.2f}s after the stopped line:\n{daemon.logs()}"
    assert any("cancelling it" in line["msg"] for line in daemon.log_lines())


def test_not_ready_while_the_state_db_is_unreachable_then_recovers(
    served: tuple[World, str], daemons: list[Daemon]
) -> None:
    world, url = served
    world.people(emails(2))
    missing = world.tmp / "not-yet"
    daemon = start(
        daemons,
        world,
        url,
        [{"name": "Team", "members": emails(2)}],
        state={"url": f"sqlite:///{missing}/state.db"},
    ).up()

    status, body = daemon.get("/readyz")
    assert status == 503, body
    ready = json.loads(body)
    assert ready["status"] == "unavailable"
    assert any("state DB" in r and "unable to open database file" in r for r in ready["reasons"]), body
    assert daemon.get("/healthz")[0] == 200  # alive: not ready is not dead
    daemon.wait_until("failed passes counted", lambda: daemon.runs_total().get("failure", 0) >= 2)
    assert world.c8.count() == world.cr.count() == 0  # nothing is contacted without a state DB
    assert daemon.proc.poll() is None

    missing.mkdir()  # the database becomes reachable: the daemon opens it and carries on
    daemon.wait_until("ready", lambda: daemon.get("/readyz")[0] == 200)
    daemon.wait_until("a successful pass", lambda: daemon.runs_total().get("success", 0) >= 1)

    code, seconds = daemon.stop(signal.SIGINT)
    assert code == 0 and seconds < STOP_BOUND, daemon.logs()


def test_failing_passes_are_counted_and_the_daemon_goes_on(served: tuple[World, str], daemons: list[Daemon]) -> None:
    world, url = served
    world.people(emails(2))
    world.cr.clients.clear()  # CleverReach refuses our credentials: every pass fails its cr pair
    daemon = start(daemons, world, url, [{"name": "Team", "members": emails(2)}]).up()
    daemon.wait_until("two failed passes", lambda: daemon.runs_total().get("failure", 0) >= 2)
    status, body = daemon.get("/healthz")
    assert status == 200 and json.loads(body)["last_pass"]["outcome"] == "failure"
    assert daemon.get("/readyz")[0] == 200  # a provider's trouble is not the daemon's readiness
    assert world.c8.mutating_count > 0  # the other pair was applied all the same
    code, _ = daemon.stop()
    assert code == 0


def test_dry_run_daemon_reports_drift_and_changes_nothing(served: tuple[World, str], daemons: list[Daemon]) -> None:
    world, url = served
    world.people(emails(3))
    daemon = start(daemons, world, url, [{"name": "Team", "members": emails(3)}], "--dry-run").up()
    daemon.wait_until("two passes", lambda: daemon.runs_total().get("success", 0) >= 2)
    _, text = daemon.get("/metrics")
    drift = {
        (s.labels["provider"], s.labels["kind"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "syncd_drift"
        for s in family.samples
    }
    assert drift == {("c8", "add"): 3, ("c8", "remove"): 0, ("cr", "add"): 3, ("cr", "remove"): 0}
    assert world.mutating() == 0
    assert daemon.stop()[0] == 0


def test_the_cli_default_stop_timeout_is_the_daemons() -> None:
    assert build_parser().parse_args(["serve"]).stop_timeout == STOP_TIMEOUT


def test_unreadable_config_is_one_line_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "syncd.yaml"
    bad.write_text("schedule:\n  every: often\n")
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"syncd: config error: {bad}:2: schedule.every:"), line

    missing = subprocess.run(
        [sys.executable, "-m", "syncd", "serve", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "not found" in missing.stderr


def test_a_taken_port_is_one_line_and_exit_1(served: tuple[World, str], tmp_path: Path) -> None:
    world, url = served
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        path = world.write_config([], providers=provider_entries(url), server={"listen": f"127.0.0.1:{port}"})
        result = subprocess.run(
            [sys.executable, "-m", "syncd", "serve", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"server.listen 127.0.0.1:{port}: cannot listen there" in result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------------- scheduling


async def test_passes_never_overlap() -> None:
    running = 0
    most = 0
    passes = 0

    async def slow_pass() -> None:
        nonlocal running, most, passes
        running += 1
        passes += 1
        most = max(most, running)
        await asyncio.sleep(0.35)  # longer than the 0.05 s interval: every fire time meanwhile comes due
        running -= 1

    scheduler = PassScheduler(ScheduleSettings(every=0.05), slow_pass)
    scheduler.start()
    try:
        await asyncio.sleep(1.2)
        job = scheduler.scheduler.get_job("reconciliation-pass")
        assert (job.max_instances, job.coalesce, job.misfire_grace_time) == (1, True, None)
    finally:
        scheduler.pause()
        await asyncio.wait_for(scheduler.wait_idle(), 5)
        scheduler.shutdown()
    assert most == 1
    assert 2 <= passes <= 5  # ~1.2 s / 0.35 s, not one per 0.05 s tick
    assert scheduler.skipped_while_running >= 5  # the ticks that came while a pass ran were dropped, not queued


async def test_missed_passes_are_coalesced_into_one() -> None:
    times: list[float] = []

    async def quick_pass() -> None:
        times.append(time.monotonic())

    scheduler = PassScheduler(ScheduleSettings(every=0.1), quick_pass, first_pass_at_start=False)
    scheduler.start()
    try:
        await asyncio.sleep(0.25)
        before = len(times)
        time.sleep(1.5)  # noqa: ASYNC251 - the loop is blocked on purpose (as if suspended): ~15 fire times go by
        woke = time.monotonic()
        await asyncio.sleep(0.05)  # half the interval: the catch-up, and at most one regular tick, run in here
        caught_up = [t for t in times if t >= woke]
    finally:
        scheduler.shutdown()
    assert before >= 1
    assert 1 <= len(caught_up) <= 2  # one pass for all the missed ones, not a burst of 15


async def test_first_pass_runs_at_start() -> None:
    ran = asyncio.Event()

    async def a_pass() -> None:
        ran.set()

    scheduler = PassScheduler(ScheduleSettings(every=3600), a_pass)
    scheduler.start()
    try:
        await asyncio.wait_for(ran.wait(), 5)
        assert scheduler.alive and scheduler.next_pass_at is not None
    finally:
        scheduler.shutdown()


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("*", "*"),
        ("0-6", "*"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
        ("sat,sun", "sat,sun"),
        ("0,6", "sat,sun"),
        ("5-7", "fri,sat,sun"),
        ("*/2", "tue,thu,sat,sun"),
        ("1-5/2", "mon,wed,fri"),
    ],
)
def test_cron_day_of_week_means_what_cron_means(field: str, expected: str) -> None:
    assert cron_day_of_week(field) == expected


UTC = ZoneInfo("UTC")


def fire_times(schedule: ScheduleSettings, start: datetime, n: int) -> list[datetime]:
    trigger = build_trigger(schedule, timezone=UTC)
    out: list[datetime] = []
    previous = None
    now = start
    for _ in range(n):
        nxt = trigger.get_next_fire_time(previous, now)
        assert nxt is not None
        out.append(nxt)
        previous, now = nxt, nxt + timedelta(microseconds=1)
    return out


MONDAY = datetime(2026, 11, 2, 0, 0, 30, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("cron", "weekdays"),
    [
        ("0 9 * * 1-5", [0, 1, 2, 3, 4, 0]),  # Python: Monday is 0
        ("0 9 * * mon-fri", [0, 1, 2, 3, 4, 0]),
        ("0 9 * * 0", [6, 6]),  # cron's 0 is Sunday
        ("0 9 * * 7", [6, 6]),
        ("0 9 * * 0-6", [0, 1, 2, 3, 4, 5, 6, 0]),
        ("0 9 * * sat,0", [5, 6, 5]),
    ],
)
def test_cron_schedule_fires_on_crons_days(cron: str, weekdays: list[int]) -> None:
    times = fire_times(ScheduleSettings(cron=cron), MONDAY, len(weekdays))
    assert [t.weekday() for t in times] == weekdays
    assert all((t.hour, t.minute) == (9, 0) for t in times)


def test_cron_with_day_of_month_and_day_of_week_fires_on_either() -> None:
    # cron: both restricted -> the 1st of the month OR a Sunday (APScheduler alone would demand both)
    times = fire_times(ScheduleSettings(cron="0 0 1 * 0"), MONDAY, 4)
    assert [t.date().isoformat() for t in times] == ["2026-11-08", "2026-11-15", "2026-11-22", "2026-11-29"]
    times = fire_times(ScheduleSettings(cron="0 0 1 * 0"), datetime(2026, 11, 29, 1, tzinfo=UTC), 2)
    assert [t.date().isoformat() for t in times] == ["2026-12-01", "2026-12-06"]


def test_interval_and_jitter() -> None:
    times = fire_times(ScheduleSettings(every="15m"), MONDAY, 3)
    assert [b - a for a, b in itertools.pairwise(times)] == [timedelta(minutes=15)] * 2
    jittered = fire_times(ScheduleSettings(cron="*/15 * * * *", jitter="30s"), MONDAY, 20)
    offsets = [(t - t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)) for t in jittered]
    assert all(timedelta(0) <= o <= timedelta(seconds=30) for o in offsets)
    assert len(set(offsets)) > 1


# ----------------------------------------------------------------------------------- deployment files

ROOT = Path(__file__).parent.parent


def test_kubernetes_manifests_fit_the_daemon(tmp_path: Path) -> None:
    docs = {}
    for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    assert {"ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment", "Service", "ServiceMonitor"} <= set(docs)
    kustomized = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "kustomization.yaml").read_text())["resources"]
    assert all((ROOT / "deploy" / "kubernetes" / name).exists() for name in kustomized)

    # the ConfigMap's syncd.yaml is a valid config, its ${VAR}s all come from the Secret
    secret = docs["Secret"]["stringData"]
    config_file = tmp_path / "syncd.yaml"
    config_file.write_text(docs["ConfigMap"]["data"]["syncd.yaml"])
    config = load_config(config_file, env=dict(secret))
    assert config.providers and config.groups

    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > STOP_TIMEOUT + 5
    (container,) = pod["containers"]
    assert container["args"] == ["serve"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == config.server.port == 9108
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["readinessProbe"]["timeoutSeconds"] > 5  # /readyz gives the DB ping 5 s
    assert container["envFrom"] == [{"secretRef": {"name": docs["Secret"]["metadata"]["name"]}}]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"config": "/etc/syncd", "state": "/var/lib/syncd"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    claim = volumes["state"]["persistentVolumeClaim"]["claimName"]
    assert claim == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert docs["Service"]["metadata"]["annotations"]["prometheus.io/port"] == "9108"
    assert docs["ServiceMonitor"]["spec"]["endpoints"][0]["path"] == "/metrics"


def test_dockerfile_and_its_default_config() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = dockerfile.split("\nFROM ")[-1]  # the last stage is the image
    assert runtime.startswith("python:3.11-slim")
    assert 'ENTRYPOINT ["syncd"]' in runtime and 'CMD ["serve"]' in runtime and "EXPOSE 9108" in runtime
    assert "SYNCD_CONFIG=/etc/syncd/syncd.yaml" in runtime
    assert "SYNCD_STATE__URL=sqlite:////var/lib/syncd/syncd.db" in runtime
    assert "USER 10001" in runtime and "HEALTHCHECK" in runtime and "/healthz" in runtime
    # the config the image ships serves nothing, and is valid
    config = load_config(ROOT / "deploy" / "docker" / "syncd.yaml", env={})
    assert config.providers == [] and config.server.port == 9108


async def test_the_daemon_seeds_the_last_success_of_every_named_group_from_the_state_db(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "crm.db").close()
    segment = {"type": "sql", "url": f"sqlite:///{tmp_path}/crm.db", "query": "SELECT email FROM t", "group": "Segment"}
    config = load_config(World(tmp_path).write_config([{"name": "Inline", "targets": ["cr"]}], sources=[segment]))
    store = Store.open(config.state.url)
    try:  # an earlier process reconciled both groups
        run_id = store.start_run(dry_run=False, trigger="serve")
        for group, provider in (("Inline", "cr"), ("Segment", "c8")):
            result = PairResult(group, provider, Strategy.INCREMENTAL, PairStatus.IN_SYNC, 1, 1, 0, 0)
            store.record_pair(run_id, result, remote_group_id="1")
        store.finish_run(run_id, outcome="success")
    finally:
        store.close()

    daemon = SyncdDaemon(config)
    try:
        assert await daemon.get_store() is not None
        registry = daemon.metrics.registry
        for group, provider in (("Inline", "cr"), ("Segment", "c8")):
            labels = {"group": group, "provider": provider}
            assert registry.get_sample_value("syncd_last_success_timestamp_seconds", labels), labels
    finally:
        await daemon.shutdown()


# ------------------------------------------------------------------------------------------ config reload


def reloads_total(daemon: Daemon) -> dict[str, float]:
    _, text = daemon.get("/metrics")
    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "syncd_config_reloads"
        for s in family.samples
        if s.name == "syncd_config_reloads_total"
    }


def logged(daemon: Daemon, text: str) -> list[dict[str, Any]]:
    return [line for line in daemon.log_lines() if text in line["msg"]]


def bearer(daemon: Daemon, path: str, token: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_sighup_reloads_a_valid_config_and_keeps_the_running_one_when_invalid(
    served: tuple[World, str], daemons: list[Daemon]
) -> None:
    world, url = served
    daemon = start(daemons, world, url, [{"name": "Team", "targets": ["cr"]}], schedule={"every": "1h"}).up()
    daemon.wait_until("the first pass", lambda: daemon.runs_total().get("success", 0) >= 1)
    assert reloads_total(daemon) == {"success": 0.0, "failure": 0.0}
    assert bearer(daemon, "/api/v1/pairs", "a-token-from-the-reload-0123") == 404  # no API yet

    # valid: a new group, a faster schedule, an API token; and a new listen address, which needs a restart
    token = "a-token-from-the-reload-0123"
    server = {"listen": f"127.0.0.1:{free_port()}", "api_token": token}
    path = world.write_config(
        [{"name": "Team", "targets": ["cr"]}, {"name": "New", "targets": ["cr"]}],
        providers=provider_entries(url),
        schedule={"every": "1s"},
        server=server,
    )
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_until("the reload", lambda: bool(logged(daemon, "config reloaded (SIGHUP)")))
    (line,) = logged(daemon, "config reloaded (SIGHUP)")
    assert "groups added: New" in line["msg"] and "schedule every 1h → every 1s" in line["msg"], line
    (restart,) = logged(daemon, "server.listen changed in the config: that needs a restart")
    assert f"stays 127.0.0.1:{daemon.port}" in restart["msg"]
    daemon.wait_until("the new group created", lambda: "New" in {g.name for g in world.cr.groups.values()})
    assert daemon.get("/healthz")[0] == 200  # still on the address it started with
    assert bearer(daemon, "/api/v1/pairs", token) == 200
    assert reloads_total(daemon)["success"] >= 1

    # invalid: logged with its file:line: key, counted, and the running config stays
    passes = daemon.runs_total()["success"]
    path.write_text(path.read_text().replace("every: 1s", "every: often"))
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_until("the failed reload", lambda: reloads_total(daemon).get("failure", 0) >= 1)
    (error,) = [line for line in logged(daemon, "config not reloaded (SIGHUP)") if line["level"] == "error"]
    assert f"the running config stays: {path}:" in error["msg"] and ": schedule.every: " in error["msg"], error
    daemon.wait_until("passes on the running config", lambda: daemon.runs_total()["success"] >= passes + 2)
    assert bearer(daemon, "/api/v1/pairs", token) == 200
    assert daemon.stop()[0] == 0
    assert token not in daemon.logs()


def test_a_changed_config_file_is_picked_up_without_a_signal(served: tuple[World, str], daemons: list[Daemon]) -> None:
    world, url = served
    world.people(emails(2))
    daemon = start(daemons, world, url, [{"name": "Team", "targets": ["cr"]}], schedule={"every": "1s"}).up()
    daemon.wait_until("the first pass", lambda: daemon.runs_total().get("success", 0) >= 1)
    config = load_config(world.tmp / "syncd.yaml")
    world.write_config(
        [{"name": "Team", "members": emails(2), "targets": ["cr"]}],
        providers=provider_entries(url),
        schedule={"every": "1s"},
        server={"listen": config.server.listen},
    )
    daemon.wait_until("the reload", lambda: bool(logged(daemon, "config reloaded (the file changed)")))
    (gid,) = world.cr.groups
    daemon.wait_until("the new members", lambda: world.cr.active_emails(gid) == set(emails(2)))
    assert reloads_total(daemon) == {"success": 1.0, "failure": 0.0}
    assert not logged(daemon, "needs a restart")
