"""`syncd status`: where each (group, provider) pair stands after its last pass, read from the state DB alone.

The state DB is filled by real passes (`syncd run` as a subprocess) against the sandboxes on a real loopback port;
then `syncd status` runs with a config whose providers' credentials are not in the environment. On SQLite, and on
PostgreSQL when SYNCD_TEST_POSTGRES_URL is set (a fresh schema per test).
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from sandboxes.server import ServerThread
from syncd.model import PairStatus
from syncd.report import render_status, short_time
from syncd.state import Store
from syncd.state.records import PairState
from tests.e2e import World, emails, provider_entries
from tests.postgres import pg_schema

HEADER = "GROUP  PROVIDER  STATUS   LAST PASS  DESIRED  ACTUAL  PENDING  REJECTED  WHY BLOCKED"


# ---------------------------------------------------------------------------------------------- helpers
# (tests/test_rejects_cli.py uses them too)


def syncd(
    *args: str, env: dict[str, str] | None = None, stdout: Any = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    inherited = {name: value for name, value in os.environ.items() if name not in ("SYNCD_CONFIG", "NO_COLOR")}
    full_env = {**inherited, "SYNCD_LOG_FORMAT": "json", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


@contextmanager
def state_db(kind: str, tmp_path: Path) -> Iterator[str]:
    """A state DB URL: a SQLite file in tmp_path, or a fresh schema of the test PostgreSQL (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/state.db"
        return
    with pg_schema("syncd_cli") as url:
        yield url


def state_only_config(tmp_path: Path, state_url: str) -> Path:
    """A config for the read-only commands: the state DB, and a provider whose token is not in the environment."""
    path = tmp_path / "readonly.yaml"
    path.write_text(
        f"state:\n  url: '{state_url}'\n"
        "providers:\n"
        "  - {name: c8, type: communic8, base_url: 'https://c8.example/int/v1', token: '${SYNCD_TEST_UNSET_TOKEN}'}\n"
    )
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[World, str]]:
    world = World(tmp_path)
    with ServerThread(world.app) as server:
        yield world, server.url


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with state_db(request.param, tmp_path) as url:
        yield url


def write(world: World, url: str, state_url: str, groups: list[dict[str, Any]]) -> Path:
    return world.write_config(groups, providers=provider_entries(url), state={"url": state_url})


def run(path: Path, *args: str) -> dict[str, Any]:
    """A pass (`syncd run -o json`); its report."""
    result = syncd("run", "--config", str(path), "-o", "json", *args)
    assert result.returncode in (0, 1), result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def recorded_at(state_url: str, run_id: str) -> dict[tuple[str, str], str]:
    """When each pair of a run was recorded, as `last_run` says it (ISO 8601)."""
    with Store.open(state_url) as store:
        return {(p.group, p.provider): p.recorded_at.isoformat() for p in store.pairs(run_id)}


def status(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = syncd("status", "--config", str(path), *args)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result


# ------------------------------------------------------------------------------------------------ tests


def test_status_after_real_passes_as_a_table_and_as_json(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    world.people(emails(3) + emails(4, "o"))  # zoe@example.com is no Communic8 recipient: rejected there
    team = {"name": "Team", "members": [*emails(3), "zoe@example.com"], "targets": ["c8", "cr"]}
    old = {"name": "Old", "members": emails(4, "o"), "targets": ["c8"]}
    path = write(world, url, state_url, [team, old])
    first = run(path)
    assert sorted((p["group"], p["provider"], p["status"]) for p in first["pairs"]) == [
        ("Old", "c8", "applied"),
        ("Team", "c8", "applied"),
        ("Team", "cr", "applied"),
    ]
    path = write(world, url, state_url, [team, {**old, "members": []}])  # Old would lose everyone: blocked
    second = run(path)
    assert {p["status"] for p in second["pairs"]} == {"in_sync", "blocked"}
    when = recorded_at(state_url, second["run_id"])

    readonly = state_only_config(world.tmp, state_url)
    text = status(readonly)
    assert text.stdout == (
        f"{HEADER}\n"
        "Old    c8        blocked  just now         0       4  +0 -4           0  would remove all 4 members\n"
        "Team   c8        in_sync  just now         4       3  +0 -0           1\n"
        "Team   cr        in_sync  just now         4       4  +0 -0           0\n"
    )
    assert json.loads(status(readonly, "-o", "json").stdout) == {
        "pairs": [
            {
                "group": "Old",
                "provider": "c8",
                "status": "blocked",
                "last_run": when[("Old", "c8")],
                "desired": 0,
                "actual": 4,
                "pending_add": 0,
                "pending_remove": 4,
                "rejected": 0,
                "blocked_reason": "would remove all 4 members",
            },
            {
                "group": "Team",
                "provider": "c8",
                "status": "in_sync",
                "last_run": when[("Team", "c8")],
                "desired": 4,
                "actual": 3,
                "pending_add": 0,
                "pending_remove": 0,
                "rejected": 1,
                "blocked_reason": None,
            },
            {
                "group": "Team",
                "provider": "cr",
                "status": "in_sync",
                "last_run": when[("Team", "cr")],
                "desired": 4,
                "actual": 4,
                "pending_add": 0,
                "pending_remove": 0,
                "rejected": 0,
                "blocked_reason": None,
            },
        ]
    }
    assert datetime.fromisoformat(when[("Old", "c8")]).tzinfo is not None  # ISO 8601 with its offset

    # filters
    assert status(readonly, "--provider", "cr").stdout == (
        "GROUP  PROVIDER  STATUS   LAST PASS  DESIRED  ACTUAL  PENDING  REJECTED  WHY BLOCKED\n"
        "Team   cr        in_sync  just now         4       4  +0 -0           0\n"
    )
    by_group = json.loads(status(readonly, "--group", "Old", "--provider", "c8", "-o", "json").stdout)
    assert [(p["group"], p["provider"]) for p in by_group["pairs"]] == [("Old", "c8")]
    assert status(readonly, "--group", "Nobody").stdout == "no pair matches\n"
    assert json.loads(status(readonly, "--group", "Nobody", "-o", "json").stdout) == {"pairs": []}


def test_a_dry_run_is_a_last_pass_only_when_asked(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    world.people(emails(3))
    path = write(world, url, state_url, [{"name": "Team", "members": emails(2), "targets": ["c8"]}])
    real = run(path)
    path = write(world, url, state_url, [{"name": "Team", "members": emails(3), "targets": ["c8"]}])
    dry = run(path, "--dry-run")
    assert [p["status"] for p in dry["pairs"]] == ["pending"]
    readonly = state_only_config(world.tmp, state_url)

    assert status(readonly).stdout == (
        "GROUP  PROVIDER  STATUS   LAST PASS  DESIRED  ACTUAL  PENDING  REJECTED  WHY BLOCKED\n"
        "Team   c8        applied  just now         2       2  +0 -0           0\n"
    )
    (pair,) = json.loads(status(readonly, "-o", "json").stdout)["pairs"]
    assert (pair["status"], pair["last_run"]) == ("applied", recorded_at(state_url, real["run_id"])[("Team", "c8")])

    assert status(readonly, "--include-dry-runs").stdout == (
        "GROUP  PROVIDER  STATUS   LAST PASS           DESIRED  ACTUAL  PENDING  REJECTED  WHY BLOCKED\n"
        "Team   c8        pending  just now (dry run)        3       2  +1 -0           0\n"
    )
    (pair,) = json.loads(status(readonly, "--include-dry-runs", "-o", "json").stdout)["pairs"]
    assert pair == {
        "group": "Team",
        "provider": "c8",
        "status": "pending",
        "last_run": recorded_at(state_url, dry["run_id"])[("Team", "c8")],
        "desired": 3,
        "actual": 2,
        "pending_add": 1,
        "pending_remove": 0,
        "rejected": 0,
        "blocked_reason": None,
    }


def test_a_pair_that_failed_before_reading_its_group_shows_what_is_not_known(served: tuple[World, str]) -> None:
    world, url = served
    world.people(["a@example.com"])
    state_url = f"sqlite:///{world.tmp}/state.db"
    path = write(world, url, state_url, [{"name": "T", "members": ["a@example.com"]}])
    # httpx refuses to build a client for a proxy it does not know: neither provider can be used
    result = syncd("run", "--config", str(path), "-o", "json", env={"ALL_PROXY": "socks9://proxy.invalid:1"})
    assert result.returncode == 1
    errors = {p["provider"]: p["error"] for p in json.loads(result.stdout)["pairs"]}
    readonly = state_only_config(world.tmp, state_url)
    content = (world.tmp / "state.db").read_bytes()

    assert status(readonly).stdout == (
        "GROUP  PROVIDER  STATUS  LAST PASS  DESIRED  ACTUAL  PENDING  REJECTED  WHY BLOCKED\n"
        "T      c8        failed  just now         1       ?  ?               0\n"
        "T      cr        failed  just now         1       ?  ?               0\n"
        f"error: T → c8: {errors['c8']}\n"
        f"error: T → cr: {errors['cr']}\n"
    )
    pairs = json.loads(status(readonly, "-o", "json").stdout)["pairs"]
    assert [(p["status"], p["actual"], p["pending_add"], p["pending_remove"]) for p in pairs] == [
        ("failed", None, None, None),
        ("failed", None, None, None),
    ]
    assert (world.tmp / "state.db").read_bytes() == content  # read, never written


def test_status_without_a_state_db_says_so_and_creates_none(tmp_path: Path) -> None:
    readonly = state_only_config(tmp_path, f"sqlite:///{tmp_path}/state.db")
    said = f"syncd: no state DB at sqlite:///{tmp_path}/state.db yet: nothing has run with this config\n"
    text = syncd("status", "--config", str(readonly))
    assert (text.returncode, text.stdout, text.stderr) == (0, "no pair has had a pass yet\n", said)
    as_json = syncd("status", "--config", str(readonly), "-o", "json")
    assert (as_json.returncode, json.loads(as_json.stdout), as_json.stderr) == (0, {"pairs": []}, said)
    assert list(tmp_path.iterdir()) == [readonly]


def test_status_is_coloured_on_a_terminal_unless_no_color(served: tuple[World, str]) -> None:
    world, url = served
    world.people(emails(2))
    state_url = f"sqlite:///{world.tmp}/state.db"
    path = write(world, url, state_url, [{"name": "Team", "members": emails(2), "targets": ["c8"]}])
    run(path)
    readonly = state_only_config(world.tmp, state_url)

    def on_a_terminal(**env: str) -> str:
        leader, follower = pty.openpty()
        try:
            result = syncd("status", "--config", str(readonly), env=env, stdout=follower)
        finally:
            os.close(follower)
        assert (result.returncode, result.stderr) == (0, "")
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and everything was read
                break
            if not chunk:
                break
            out += chunk
        os.close(leader)
        return out.decode().replace("\r\n", "\n")

    row = "Team   c8        {}  just now         2       2  +0 -0           0\n"
    assert on_a_terminal() == f"{HEADER}\n" + row.format("\x1b[32mapplied\x1b[0m")
    assert on_a_terminal(NO_COLOR="1") == f"{HEADER}\n" + row.format("applied")
    assert status(readonly).stdout == f"{HEADER}\n" + row.format("applied")  # not a terminal


# ---------------------------------------------------------------------------------------------- rendering

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _state(status: PairStatus, **changes: Any) -> PairState:
    values: dict[str, Any] = {
        "group": "G",
        "provider": "c8",
        "run_id": "r" * 32,
        "dry_run": False,
        "last_run": NOW - timedelta(minutes=5),
        "status": status,
        "desired": 10,
        "actual": 10,
        "pending_add": 0,
        "pending_remove": 0,
        "rejected": 0,
        "blocked_reason": None,
        "error": None,
    }
    values.update(changes)
    return PairState(**values)


@pytest.mark.parametrize(
    ("ago", "shown"),
    [
        (timedelta(seconds=0), "just now"),
        (timedelta(seconds=59), "just now"),
        (timedelta(seconds=-30), "just now"),  # a clock a little ahead
        (timedelta(minutes=1), "1m ago"),
        (timedelta(minutes=59, seconds=59), "59m ago"),
        (timedelta(hours=1), "1h ago"),
        (timedelta(hours=23, minutes=59), "23h ago"),
        (timedelta(days=1), "2026-12-04 12:00"),
        (timedelta(days=40, minutes=30), "2026-10-26 11:30"),
        (timedelta(minutes=-5), "2026-12-05 12:05"),  # far ahead: say when
    ],
)
def test_short_time(ago: timedelta, shown: str) -> None:
    assert short_time(NOW - ago, NOW) == shown


def test_each_status_has_its_colour_and_columns_stay_aligned() -> None:
    states = [
        _state(PairStatus.IN_SYNC, group="In sync"),
        _state(PairStatus.APPLIED, group="Applied"),
        _state(PairStatus.PENDING, group="Pending", dry_run=True, pending_add=12),
        _state(PairStatus.BLOCKED, group="Blocked", pending_remove=600, blocked_reason="would remove 600 members"),
        _state(PairStatus.PARTIAL, group="Partial", pending_add=3, error="HTTP 500 on add"),
        _state(PairStatus.FAILED, group="Failed", actual=None, pending_add=None, pending_remove=None, error="401"),
    ]
    plain, coloured = StringIO(), StringIO()
    render_status(states, plain, now=NOW)
    render_status(states, coloured, now=NOW, colour=True)
    assert plain.getvalue() == (
        "GROUP    PROVIDER  STATUS   LAST PASS         DESIRED  ACTUAL  PENDING   REJECTED  WHY BLOCKED\n"
        "In sync  c8        in_sync  5m ago                 10      10   +0   -0         0\n"
        "Applied  c8        applied  5m ago                 10      10   +0   -0         0\n"
        "Pending  c8        pending  5m ago (dry run)       10      10  +12   -0         0\n"
        "Blocked  c8        blocked  5m ago                 10      10   +0 -600         0  would remove 600 members\n"
        "Partial  c8        partial  5m ago                 10      10   +3   -0         0\n"
        "Failed   c8        failed   5m ago                 10       ?  ?                0\n"
        "error: Partial → c8: HTTP 500 on add\n"
        "error: Failed → c8: 401\n"
    )
    green, yellow, red = "\x1b[32m{}\x1b[0m", "\x1b[33m{}\x1b[0m", "\x1b[31m{}\x1b[0m"
    expected = plain.getvalue()
    for name, paint in [
        ("in_sync", green),
        ("applied", green),
        ("pending", yellow),
        ("blocked", red),
        ("partial", red),
        ("failed", red),
    ]:
        assert expected.count(f"  {name} ") == 1
        expected = expected.replace(f"  {name} ", f"  {paint.format(name)} ")
    assert coloured.getvalue() == expected
    assert "\x1b" not in coloured.getvalue().splitlines()[0]  # the header is plain


def test_nothing_to_show_is_a_sentence_not_an_empty_table() -> None:
    out = StringIO()
    render_status([], out, now=NOW)
    assert out.getvalue() == "no pair has had a pass yet\n"
