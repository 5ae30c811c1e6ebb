"""The daemon's API (/api/v1/) against a real `syncd serve` subprocess and the sandboxes on a loopback port: the
token, starting passes (waiting for the report or not), polling a run, the pairs' status, the answers for
requests of the wrong shape, and that a pass the API starts and a scheduled one never work one pair at once
(SQLite: the daemon's own registry; PostgreSQL: the queue's per-pair locks)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sandboxes._core import Fault
from sandboxes.server import ServerThread
from syncd.config import load_config
from syncd.errors import ConfigError
from syncd.state import Store
from tests import test_replicas, test_serve
from tests.e2e import World, emails
from tests.test_serve import Daemon

TOKEN = "api-token-for-tests-0123456789abcdef"
SLOW = 2.5  # seconds a slowed sandbox request takes

Answer = tuple[int, dict[str, str], Any]


def call(
    daemon: Daemon,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    raw: bytes | None = None,
    authorization: str | None = None,
) -> Answer:
    """One API request: status, headers (lower-cased names), the body as JSON (text if it is not)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}{path}", method=method, data=data)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    elif token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, headers, text = response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        status, headers, text = exc.code, dict(exc.headers), exc.read().decode()
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    return status, {k.lower(): v for k, v in headers.items()}, parsed


def poll(daemon: Daemon, run_id: str, timeout: float = 30) -> dict[str, Any]:
    """GET the run until it is no longer running: its report."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = call(daemon, "GET", f"/api/v1/runs/{run_id}")
        assert status == 200, body
        if body.get("state") != "running":
            return dict(body)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still running after {timeout}s:\n{daemon.logs()}")


def start_run_when_free(daemon: Daemon, body: dict[str, Any], timeout: float = 30) -> str:
    """POST a no-wait run, again while a scheduled pass holds the pairs (409): the run id once it starts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, answer = call(daemon, "POST", "/api/v1/runs", {**body, "wait": False})
        if status == 202:
            return str(answer["run_id"])
        assert status == 409, answer
        time.sleep(0.05)
    raise AssertionError(f"no API pass could start within {timeout}s:\n{daemon.logs()}")


def serve(
    daemons: list[Daemon],
    world: World,
    url: str,
    groups: list[dict[str, Any]],
    *args: str,
    token: str | None = TOKEN,
    **top: Any,
) -> Daemon:
    top.setdefault("schedule", {"every": "1h"})
    server = {} if token is None else {"api_token": token}
    return test_serve.start(daemons, world, url, groups, *args, server=server, **top).up()


def runs_in_db(world: World) -> list[Any]:
    with Store.open(f"sqlite:///{world.tmp}/state.db") as store:
        return store.runs(limit=None)


def overlapping(a: Any, b: Any) -> bool:
    return bool(a.started_at < b.finished_at and b.started_at < a.finished_at)


# ------------------------------------------------------------------------------------------- the token


def test_without_a_token_the_api_is_not_there(served: tuple[World, str], daemons: list[Daemon]) -> None:
    world, url = served
    daemon = serve(daemons, world, url, [{"name": "Team", "targets": ["cr"]}], token=None)
    for method, path in [("GET", "/api/v1/pairs"), ("POST", "/api/v1/runs"), ("GET", "/api/v1"), ("GET", "/api/v1/x")]:
        status, _, body = call(daemon, method, path, {} if method == "POST" else None)
        assert status == 404, (method, path, body)
    assert json.loads(daemon.get("/healthz")[1])["api"] == "off"


def test_the_token_is_required_and_the_health_endpoints_stay_open(
    served: tuple[World, str], daemons: list[Daemon]
) -> None:
    world, url = served
    daemon = serve(daemons, world, url, [{"name": "Team", "targets": ["cr"]}])
    for token, authorization in [(None, None), ("wrong-token-0123456789", None), (None, f"Basic {TOKEN}")]:
        for method, path in [("GET", "/api/v1/pairs"), ("POST", "/api/v1/runs"), ("GET", "/api/v1/nothing")]:
            status, headers, body = call(daemon, method, path, token=token, authorization=authorization)
            assert status == 401, (token, authorization, method, path, body)
            assert headers["www-authenticate"].startswith("Bearer"), headers
    assert call(daemon, "GET", "/api/v1/pairs", authorization=f"bearer {TOKEN}")[0] == 200  # the scheme: any case
    for path in ("/metrics", "/healthz", "/readyz"):
        assert daemon.get(path)[0] == 200, path
    assert json.loads(daemon.get("/healthz")[1])["api"] == "on"
    daemon.stop()
    assert TOKEN not in daemon.logs()  # nothing logs it


def test_the_token_is_a_secret_in_the_config(tmp_path: Path) -> None:
    world = World(tmp_path)
    config = load_config(world.write_config([], server={"api_token": TOKEN}))
    assert config.server.api_token is not None and config.server.api_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(config) and TOKEN not in str(config.server)
    assert load_config(world.write_config([], server={"api_token": ""})).server.api_token is None  # empty: off
    with pytest.raises(ConfigError) as caught:
        load_config(world.write_config([], server={"api_token": "short-secret"}))
    assert "server.api_token: " in str(caught.value) and "16 characters" in str(caught.value)
    assert "short-secret" not in str(caught.value)


# ------------------------------------------------------------------------------------------- the runs


def test_a_run_waited_for_answers_the_run_report_of_syncd_run(served: tuple[World, str], daemons: list[Daemon]) -> None:
    world, url = served
    world.people(emails(3))
    groups = [{"name": "Team", "members": [*emails(3), "not-an-email"]}, {"name": "Other", "targets": ["cr"]}]
    daemon = serve(daemons, world, url, groups)
    daemon.wait_until("the first pass", lambda: daemon.runs_total().get("success", 0) >= 1)
    world.people(emails(5))

    status, headers, report = call(daemon, "POST", "/api/v1/runs", {"groups": ["team"], "providers": ["c8"]})
    assert status == 200, report
    assert set(report) == {"dry_run", "run_id", "pairs"} and report["dry_run"] is False
    (pair,) = report["pairs"]
    assert (pair["group"], pair["provider"], pair["status"], pair["add"]) == ("Team", "c8", "in_sync", 0)
    assert pair["rejected"] == [
        {"email": "not-an-email", "reason": pair["rejected"][0]["reason"], "code": "invalid_email"}
    ]
    assert headers["location"] == f"/api/v1/runs/{report['run_id']}"
    assert call(daemon, "GET", f"/api/v1/runs/{report['run_id']}")[2] == report  # from memory: exactly the same

    # every key optional: all pairs; a dry run sends nothing
    before = world.mutating()
    status, _, dry = call(daemon, "POST", "/api/v1/runs", {"dry_run": True})
    assert status == 200 and dry["dry_run"] is True
    assert {(p["group"], p["provider"]) for p in dry["pairs"]} == {("Team", "c8"), ("Team", "cr"), ("Other", "cr")}
    assert world.mutating() == before
    status, _, empty_body = call(daemon, "POST", "/api/v1/runs", raw=b"")
    assert status == 200 and len(empty_body["pairs"]) == 3

    with Store.open(f"sqlite:///{world.tmp}/state.db") as store:
        run = store.run(report["run_id"])
        assert run is not None and run.trigger == "api" and run.outcome == "success"
    daemon.stop()

    # the same pass from the command line prints the same JSON (but for its run id and fresh requests)
    cli = subprocess.run(
        [sys.executable, "-m", "syncd", "run", "--config", str(world.tmp / "syncd.yaml"), "--output", "json"]
        + ["--group", "team", "--provider", "c8"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    printed = json.loads(cli.stdout)
    assert printed == {**report, "run_id": printed["run_id"]}


def test_a_run_not_waited_for_answers_202_then_polls_to_its_report(
    served: tuple[World, str], daemons: list[Daemon]
) -> None:
    world, url = served
    groups = [{"name": "Team", "members": emails(3), "targets": ["cr"]}]
    daemon = serve(daemons, world, url, groups)
    daemon.wait_until("the first pass", lambda: daemon.runs_total().get("success", 0) >= 1)
    world.cr.inject(Fault(status=0, delay=SLOW, path="/receivers", times=1))  # the next read is slow

    started = time.monotonic()
    status, headers, body = call(daemon, "POST", "/api/v1/runs", {"wait": False})
    assert status == 202 and set(body) == {"run_id"}, body
    assert time.monotonic() - started < SLOW  # at once, the pass going on
    run_id = body["run_id"]
    assert headers["location"] == f"/api/v1/runs/{run_id}"
    assert call(daemon, "GET", f"/api/v1/runs/{run_id}")[2] == {"run_id": run_id, "state": "running"}
    report = poll(daemon, run_id)
    assert report["run_id"] == run_id and [p["status"] for p in report["pairs"]] == ["in_sync"]
    assert time.monotonic() - started >= SLOW

    # a run the API did not start (the scheduled one) comes from the state DB, rebuilt
    (scheduled,) = [r for r in runs_in_db(world) if r.trigger == "serve"]
    status, _, rebuilt = call(daemon, "GET", f"/api/v1/runs/{scheduled.id}")
    assert status == 200 and rebuilt["reconstructed"] is True and rebuilt["run_id"] == scheduled.id
    (pair,) = rebuilt["pairs"]
    assert (pair["group"], pair["provider"], pair["status"], pair["add"], pair["desired"]) == (
        "Team",
        "cr",
        "applied",
        3,
        3,
    )
    assert pair["rejected"] is None and pair["rejected_count"] == 0
    assert call(daemon, "GET", "/api/v1/runs/" + "0" * 32)[0] == 404
    assert call(daemon, "GET", "/api/v1/runs/not-a-run-id")[0] == 404


def test_the_pairs_status(served: tuple[World, str], daemons: list[Daemon]) -> None:
    world, url = served
    world.people(emails(4))
    groups = [{"name": "Team", "members": [*emails(4), "not-an-email"]}, {"name": "Later", "targets": ["cr"]}]
    daemon = serve(daemons, world, url, groups, "--dry-run")
    daemon.wait_until("the first pass", lambda: daemon.runs_total().get("success", 0) >= 1)
    status, _, body = call(daemon, "GET", "/api/v1/pairs")
    assert status == 200, body
    keys = {"group", "provider", "status", "last_run", "desired", "actual", "pending_add", "pending_remove"}
    keys |= {"rejected", "blocked_reason"}
    assert all(set(p) == keys for p in body["pairs"])
    by_pair = {(p["group"], p["provider"]): p for p in body["pairs"]}
    assert list(by_pair) == [("Team", "c8"), ("Team", "cr"), ("Later", "cr")]
    team = by_pair["Team", "cr"]
    assert (team["status"], team["desired"], team["actual"], team["pending_add"], team["pending_remove"]) == (
        "pending",
        4,
        0,
        4,
        0,
    )
    assert team["rejected"] == 1 and team["blocked_reason"] is None
    assert datetime.fromisoformat(team["last_run"]).tzinfo is not None
    later = by_pair["Later", "cr"]  # it would be created
    assert (later["status"], later["desired"], later["actual"], later["pending_add"]) == ("pending", 0, 0, 0)

    # the daemon runs dry, whatever the API asks
    status, _, report = call(daemon, "POST", "/api/v1/runs", {"dry_run": False, "groups": ["Team"]})
    assert status == 200 and report["dry_run"] is True and world.mutating() == 0


def test_requests_of_the_wrong_shape(served: tuple[World, str], daemons: list[Daemon]) -> None:
    world, url = served
    daemon = serve(daemons, world, url, [{"name": "Team", "targets": ["cr"]}])
    bad: list[tuple[bytes, str]] = [
        (b"{not json", "not JSON"),
        (b"[]", "a JSON object"),
        (b'{"groups": "Team"}', "groups: "),
        (b'{"groups": [1]}', "groups[0]: "),
        (b'{"dry_run": "yes"}', "dry_run: "),
        (b'{"wait": 1}', "wait: "),
        (b'{"group": ["Team"]}', "group: unknown key"),
    ]
    for raw, says in bad:
        status, _, body = call(daemon, "POST", "/api/v1/runs", raw=raw)
        assert status == 400 and says in body["error"], (raw, body)
    status, _, body = call(daemon, "POST", "/api/v1/runs", {"groups": ["Team", "Nope"], "providers": ["cr", "xx"]})
    assert status == 400, body
    assert (body["unknown_groups"], body["unknown_providers"]) == (["Nope"], ["xx"])
    assert "'Nope'" in body["error"] and "'xx'" in body["error"] and "configured: c8, cr" in body["error"]
    status, headers, _ = call(daemon, "GET", "/api/v1/runs")
    assert status == 405 and headers["allow"] == "POST"
    assert call(daemon, "POST", "/api/v1/pairs", {})[0] == 405
    assert call(daemon, "GET", "/api/v1/nothing")[0] == 404
    status, _, body = call(daemon, "POST", "/api/v1/runs", raw=b'{"groups": [' + b'"x",' * 20000 + b'"x"]}')
    assert status == 413, body


# ------------------------------------------------------------------------------ never two at once on a pair


def test_a_pair_the_scheduled_pass_works_is_409_and_api_passes_exclude_each_other(
    served: tuple[World, str], daemons: list[Daemon]
) -> None:
    world, url = served
    groups = [{"name": "Team", "members": emails(2), "targets": ["cr"]}, {"name": "Other", "targets": ["c8"]}]
    world.cr.inject(Fault(status=0, delay=SLOW, path="/receivers", times=1))  # the first (scheduled) pass is slow
    daemon = serve(daemons, world, url, groups)
    daemon.wait_until("the scheduled pass", lambda: json.loads(daemon.get("/healthz")[1])["pass_running"])

    status, _, body = call(daemon, "POST", "/api/v1/runs", {"groups": ["Team"]})
    assert status == 409, body
    assert body["busy"] == ["Team → cr"] and "the scheduled pass" in body["error"]
    assert call(daemon, "POST", "/api/v1/runs", {"groups": ["Other"]})[0] == 409  # it holds every pair
    daemon.wait_until("the scheduled pass's end", lambda: daemon.runs_total().get("success", 0) >= 1)

    world.cr.inject(Fault(status=0, delay=SLOW, path="/receivers", times=1))  # now the API's pass is slow
    status, _, first = call(daemon, "POST", "/api/v1/runs", {"groups": ["Team"], "wait": False})
    assert status == 202, first
    status, _, body = call(daemon, "POST", "/api/v1/runs", {"providers": ["cr"]})
    assert status == 409 and body["busy"] == ["Team → cr"] and "another API pass" in body["error"], body
    status, _, other = call(daemon, "POST", "/api/v1/runs", {"groups": ["Other"]})  # other pairs: at once
    assert status == 200 and [p["group"] for p in other["pairs"]] == ["Other"], other
    assert [p["status"] for p in poll(daemon, first["run_id"])["pairs"]] == ["in_sync"]
    assert call(daemon, "POST", "/api/v1/runs", {"groups": ["Team"]})[0] == 200  # free again


def test_a_scheduled_pass_waits_for_the_api_pass_on_its_pairs(served: tuple[World, str], daemons: list[Daemon]) -> None:
    world, url = served
    daemon = serve(
        daemons, world, url, [{"name": "Team", "members": emails(2), "targets": ["cr"]}], schedule={"every": "1s"}
    )
    daemon.wait_until("the first pass", lambda: daemon.runs_total().get("success", 0) >= 1)
    world.cr.inject(Fault(status=0, delay=SLOW, path="/receivers", times=0))  # every pass is slow from now on
    run_id = start_run_when_free(daemon, {"groups": ["Team"]})
    report = poll(daemon, run_id)
    assert report["pairs"][0]["status"] == "in_sync"
    daemon.wait_until(
        "a scheduled pass after it",
        lambda: any(
            r.trigger == "serve" and r.finished_at is not None and r.started_at >= runs_by_id(world)[run_id].finished_at
            for r in runs_in_db(world)
        ),
    )
    daemon.stop()
    runs = runs_in_db(world)
    (api,) = [r for r in runs if r.trigger == "api"]
    scheduled = [r for r in runs if r.trigger == "serve" and r.finished_at is not None]
    assert len(scheduled) >= 2 and not [r for r in scheduled if overlapping(r, api)]
    assert any("waits for the API's passes to end (Team → cr)" in line["msg"] for line in daemon.log_lines())


def runs_by_id(world: World) -> dict[str, Any]:
    return {r.id: r for r in runs_in_db(world)}


# ------------------------------------------------------------------------------------------- PostgreSQL

pg_url = test_replicas.pg_url  # a fresh schema of the test PostgreSQL (skipped without SYNCD_TEST_POSTGRES_URL)


@pytest.fixture
def fleet(tmp_path: Path, pg_url: str) -> Iterator[test_replicas.Fleet]:
    world = World(tmp_path)
    with ServerThread(world.app) as server:
        replicas = test_replicas.Fleet(tmp_path, pg_url, world, server.url, api_token=TOKEN)
        try:
            yield replicas
        finally:
            replicas.close()


def doing(url: str, lock: str) -> list[tuple[int, bool]]:
    """The `doing` jobs of a pair's lock: (id, whether an API pass claimed it)."""
    rows = test_replicas.sql(
        url, "SELECT id, args ? 'api' FROM procrastinate_jobs WHERE status = 'doing' AND lock = :lock", lock=lock
    )
    return [(int(job_id), bool(api)) for job_id, api in rows]


def pair_spans(url: str, group: str) -> list[tuple[str, float, float]]:
    """(trigger, started, finished) of the finished runs that worked `group`."""
    rows = test_replicas.sql(
        url,
        "SELECT r.trigger, extract(epoch FROM r.started_at), extract(epoch FROM r.finished_at) FROM runs r "
        "JOIN pair_results p ON p.run_id = r.id WHERE p.group_name = :g AND r.finished_at IS NOT NULL ORDER BY 2",
        g=group,
    )
    return [(str(t), float(s), float(f)) for t, s, f in rows]


def test_on_postgresql_api_passes_and_queue_jobs_never_work_one_pair_at_once(fleet: test_replicas.Fleet) -> None:
    lock = "Team\x1fcr"
    (a, b) = fleet.start(2, [{"name": "Team", "members": emails(2), "targets": ["cr"]}])
    test_replicas.wait_for(lambda: pair_spans(fleet.url, "Team"), 30, "the pair's first job")
    status, _, report = call(a, "POST", "/api/v1/runs", {"groups": ["Team"]})
    if status == 409:  # a queue job has the pair right now: once more when it is done
        test_replicas.wait_for(lambda: not doing(fleet.url, lock), 30, "the job's end")
        status, _, report = call(a, "POST", "/api/v1/runs", {"groups": ["Team"]})
    assert status == 200 and report["pairs"][0]["status"] == "in_sync", report

    # a queue job works the pair (slowly): an API pass on either replica is refused
    fleet.world.cr.inject(Fault(status=0, delay=SLOW, path="/receivers", times=0))
    test_replicas.wait_for(lambda: [j for j in doing(fleet.url, lock) if not j[1]], 30, "a slow queue job")
    for replica in (a, b):
        status, _, body = call(replica, "POST", "/api/v1/runs", {"providers": ["cr"]})
        assert status == 409 and body["busy"] == ["Team → cr"], body

    # an API pass holds the pair: no queue job starts on it meanwhile, on any replica
    run_id = start_run_when_free(b, {"groups": ["Team"]})
    claims = doing(fleet.url, lock)
    assert [api for _, api in claims] == [True], claims
    status, _, body = call(a, "POST", "/api/v1/runs", {"groups": ["Team"]})
    assert status == 409 and "API pass" in body["error"], body
    while call(b, "GET", f"/api/v1/runs/{run_id}")[2].get("state") == "running":
        assert [api for _, api in doing(fleet.url, lock)] == [True]
        time.sleep(0.1)
    assert poll(b, run_id)["pairs"][0]["status"] == "in_sync"
    (claim_id, _) = claims[0]
    assert test_replicas.sql(fleet.url, "SELECT status FROM procrastinate_jobs WHERE id = :j", j=claim_id) == [
        ("succeeded",)
    ]
    test_replicas.wait_for(lambda: pair_spans(fleet.url, "Team")[-1][0] == "serve", 30, "a queue job after it")
    spans = pair_spans(fleet.url, "Team")
    assert {t for t, _, _ in spans} == {"serve", "api"}
    for (_, _, end), (_, start, _) in itertools.pairwise(spans):
        assert start >= end, spans  # never two at once, whoever started them


def test_on_postgresql_a_reload_registers_the_jobs_of_the_pairs_added_and_removed(fleet: test_replicas.Fleet) -> None:
    (replica,) = fleet.start(1, [{"name": "Old", "targets": ["cr"]}])
    test_replicas.wait_for(lambda: pair_spans(fleet.url, "Old"), 30, "the old pair's job")
    fleet.config([{"name": "New", "targets": ["cr"]}], replica.port)  # the file changes
    replica.wait_until("the reload", lambda: "config reloaded (the file changed)" in replica.logs())
    assert "groups added: New" in replica.logs() and "groups removed: Old" in replica.logs()
    test_replicas.wait_for(lambda: len(pair_spans(fleet.url, "New")) >= 2, 30, "the new pair's jobs")
    reloaded = time.time()
    time.sleep(4)  # two periods
    assert not [s for _, s, _ in pair_spans(fleet.url, "Old") if s > reloaded]
    assert "New" in {g.name for g in fleet.world.cr.groups.values()}
