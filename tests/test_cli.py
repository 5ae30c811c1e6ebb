"""`syncd` as a user runs it: a subprocess, a config file, sandboxes on a real loopback port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.sandbox.server import ServerThread
from syncd.model import PairStatus
from syncd.state import Store
from tests.e2e import World, emails, provider_entries


def syncd(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "SYNCD_LOG_FORMAT": "json", **(env or {})}
    full_env.pop("SYNCD_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[World, str]]:
    world = World(tmp_path)
    with ServerThread(world.app) as server:
        yield world, server.url


def write(world: World, url: str, groups: list[dict[str, Any]], **top: Any) -> Path:
    return world.write_config(groups, providers=provider_entries(url), **top)


def test_dry_run_json_then_apply_then_quiet(served: tuple[World, str]) -> None:
    world, url = served
    world.people(emails(3))
    path = write(world, url, [{"name": "Team", "members": emails(3)}])

    dry = syncd("run", "--config", str(path), "--dry-run", "--output", "json", "--detailed-exitcode")
    assert dry.returncode == 2, dry.stderr
    out = json.loads(dry.stdout)
    assert set(out) == {"dry_run", "run_id", "pairs"} and out["dry_run"] is True
    first = out["pairs"][0]
    assert set(first) == {
        "group",
        "provider",
        "strategy",
        "status",
        "desired",
        "actual_before",
        "add",
        "remove",
        "unsupported_remove",
        "rejected",
        "requests",
    }
    assert (first["group"], first["status"], first["add"], first["strategy"]) == ("Team", "pending", 3, "incremental")
    assert set(first["requests"]) == {"read", "write"} and first["requests"]["write"] == 0
    assert world.mutating() == 0

    applied = syncd("run", "--config", str(path))
    assert applied.returncode == 0, applied.stderr
    assert "applied" in applied.stdout and "6 member changes made" in applied.stdout

    again = syncd("run", "--config", str(path), "--detailed-exitcode", "-o", "json")
    assert again.returncode == 0
    assert all(p["status"] == "in_sync" and p["requests"]["write"] == 0 for p in json.loads(again.stdout)["pairs"])

    history = syncd("history", "--config", str(path), "--member", emails(1)[0].upper(), "-o", "json")
    rows = json.loads(history.stdout)
    assert {(r["provider"], r["op"], r["outcome"]) for r in rows} == {
        ("c8", "add", "applied"),
        ("cr", "add", "applied"),
    }


def test_guard_trip_exits_1_and_sends_no_removal(served: tuple[World, str]) -> None:
    world, url = served
    world.people(emails(4))
    path = write(world, url, [{"name": "Team", "members": emails(4), "targets": ["c8"]}])
    assert syncd("run", "--config", str(path)).returncode == 0
    world.clear_logs()
    path = write(world, url, [{"name": "Team", "members": [], "targets": ["c8"]}])
    result = syncd("run", "--config", str(path))
    assert result.returncode == 1
    assert "blocked" in result.stdout and "would remove all 4 members" in result.stdout
    assert world.c8.mutating_count == 0
    assert syncd("run", "--config", str(path), "--allow-mass-removal").returncode == 0
    assert world.c8.count(method="DELETE") == 1


BAD_CONFIGS: list[tuple[str, str, str]] = [
    # (yaml, expected "line: key", expected message fragment)
    ("providers: [\n  {name: c8\n", ":3:", "YAML"),
    ("safety:\n  max_removals: many\n", ":2: safety.max_removals:", "integer"),
    ("safety:\n  max_removal: 3\n", ":2: safety.max_removal:", "unknown key"),
    (
        "providers:\n  - name: x\n    type: mailchimp\n    base_url: https://x.example\n",
        ":3: providers[0].type:",
        "mailchimp",
    ),
    (
        "providers:\n  - {name: c8, type: communic8, base_url: 'https://c8.example/int/v1', token: t}\n"
        "groups:\n  - name: G\n    targets: [c8, bc]\n",
        ":5: groups[0].targets[1]",
        "bc",
    ),
    (
        "providers:\n  - name: c8\n    type: communic8\n    base_url: https://c8.example/int/v1\n"
        "    token: ${SYNCD_TEST_UNSET_TOKEN}\n",
        ":5: providers[0].token:",
        "SYNCD_TEST_UNSET_TOKEN",
    ),
]


@pytest.mark.parametrize(("text", "where", "fragment"), BAD_CONFIGS)
@pytest.mark.parametrize("command", [["run"], ["run", "--dry-run"], ["validate"]])
def test_bad_config_is_one_line_naming_file_line_and_key(
    served: tuple[World, str], tmp_path: Path, text: str, where: str, fragment: str, command: list[str]
) -> None:
    world, _ = served
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = syncd(*command, "--config", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"syncd: config error: {path}{where}"), lines[0]
    assert fragment in lines[0]
    assert world.c8.count() == world.cr.count() == 0  # nothing contacted


def test_secrets_never_reach_output_or_logs(served: tuple[World, str]) -> None:
    world, url = served
    world.people(["a@example.com"])
    world.cr.clients.clear()  # refuse our OAuth client: errors must still not echo the secret
    path = write(world, url, [{"name": "T", "members": ["a@example.com"]}])
    result = syncd("run", "--config", str(path), "--log-level", "debug", "-o", "json")
    assert result.returncode == 1
    for secret in ("e2e-secret", world.c8.keys[next(iter(world.c8.keys))]):
        assert secret not in result.stdout and secret not in result.stderr


def test_info_logs_name_no_member(served: tuple[World, str]) -> None:
    world, url = served
    world.people(["Private.Person@example.com"])
    path = write(world, url, [{"name": "T", "members": ["Private.Person@example.com"]}])
    result = syncd("run", "--config", str(path), "--log-format", "json")
    assert result.returncode == 0
    assert "private.person" not in result.stderr.lower()
    assert [json.loads(line)["level"] for line in result.stderr.splitlines()]  # JSON lines off a terminal


def test_validate_offline_and_online(served: tuple[World, str]) -> None:
    world, url = served
    world.cr.add_group("Exists", [])
    path = write(world, url, [{"name": "Exists", "targets": ["cr"]}, {"name": "New", "targets": ["c8"]}])
    offline = syncd("validate", "--config", str(path))
    assert offline.returncode == 0 and "2 providers, 0 sources, 2 groups" in offline.stdout
    assert world.c8.count() == world.cr.count() == 0
    online = syncd("validate", "--online", "--config", str(path))
    assert online.returncode == 0, online.stdout + online.stderr
    assert "credentials ok" in online.stdout and "'New': does not exist yet" in online.stdout
    assert world.mutating() == 0


def test_config_from_environment_variable(served: tuple[World, str]) -> None:
    world, url = served
    path = write(world, url, [])
    result = syncd("validate", env={"SYNCD_CONFIG": str(path)})
    assert result.returncode == 1  # the helper strips SYNCD_CONFIG: proves the default is ./syncd.yaml
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "validate"],
        capture_output=True,
        text=True,
        env={**os.environ, "SYNCD_CONFIG": str(path)},
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_unknown_group_selection_is_an_error_before_any_request(served: tuple[World, str]) -> None:
    world, url = served
    path = write(world, url, [{"name": "A"}])
    result = syncd("run", "--config", str(path), "--group", "Nope")
    assert result.returncode == 1 and "no group named 'Nope'" in result.stderr
    assert world.c8.count() == world.cr.count() == 0


def test_example_config_validates(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "config.example.yaml"
    env = {
        "COMMUNIC8_TOKEN": "x",
        "CLEVERREACH_CLIENT_ID": "id",
        "CLEVERREACH_CLIENT_SECRET": "s",
        "GIFTRONAUT_CLIENT_ID": "id",
        "GIFTRONAUT_CLIENT_SECRET": "s",
        "STANNP_API_KEY": "k",
        "BITCASTER_API_KEY": "k",
    }
    text = yaml.safe_load(example.read_text())
    assert text["providers"]
    result = syncd("validate", "--config", str(example), env=env)
    assert result.returncode == 0, result.stderr


def test_plan_then_apply_and_a_stale_plan_is_refused(served: tuple[World, str], tmp_path: Path) -> None:
    world, url = served
    world.people(emails(2))
    path = write(world, url, [{"name": "Team", "members": emails(2), "targets": ["c8"]}])
    plan_file = tmp_path / "plan.json"
    planned = syncd("plan", "--config", str(path), "-o", str(plan_file), "--detailed-exitcode")
    assert planned.returncode == 2, planned.stderr
    assert "pending" in planned.stdout and f"syncd apply {plan_file}" in planned.stdout
    assert world.mutating() == 0 and json.loads(plan_file.read_text())["pairs"][0]["group"] == "Team"

    applied = syncd("apply", "--config", str(path), str(plan_file), "-o", "json")
    assert applied.returncode == 0, applied.stderr
    assert [(p["status"], p["add"]) for p in json.loads(applied.stdout)["pairs"]] == [("applied", 2)]

    writes = world.mutating()
    again = syncd("apply", "--config", str(path), str(plan_file))
    assert again.returncode == 1
    assert "refusing stale plan" in again.stderr and "provider group changed" in again.stderr
    assert world.mutating() == writes


def test_a_group_created_empty_is_a_change_for_the_detailed_exit_code(served: tuple[World, str]) -> None:
    world, url = served
    path = write(world, url, [{"name": "Empty", "members": [], "targets": ["cr"]}])

    dry = syncd("run", "--config", str(path), "--dry-run", "--detailed-exitcode", "-o", "json")
    assert dry.returncode == 2, dry.stderr  # the group would be created: a change is pending
    assert [p["status"] for p in json.loads(dry.stdout)["pairs"]] == ["pending"]
    assert "1 empty group would be created" in syncd("run", "--config", str(path), "--dry-run").stdout
    assert world.mutating() == 0

    applied = syncd("run", "--config", str(path), "--detailed-exitcode")
    assert applied.returncode == 2, applied.stderr
    assert "1 empty group created" in applied.stdout and len(world.cr.groups) == 1

    again = syncd("run", "--config", str(path), "--detailed-exitcode")
    assert again.returncode == 0 and "nothing changed" in again.stdout


def test_a_provider_that_cannot_be_set_up_fails_its_pairs_and_the_run_is_closed(served: tuple[World, str]) -> None:
    world, url = served
    world.people(["a@example.com"])
    path = write(world, url, [{"name": "T", "members": ["a@example.com"]}])
    # httpx refuses to build a client for a proxy it does not know: a real way for a connector not to come up
    result = syncd("run", "--config", str(path), "-o", "json", env={"ALL_PROXY": "socks9://proxy.invalid:1"})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    pairs = json.loads(result.stdout)["pairs"]
    assert sorted((p["provider"], p["status"]) for p in pairs) == [("c8", "failed"), ("cr", "failed")]
    assert all(f"provider {p['provider']} cannot be used" in p["error"] and "proxy" in p["error"] for p in pairs)
    assert world.c8.count() == world.cr.count() == 0
    store = Store.open(f"sqlite:///{world.tmp}/state.db")
    try:
        (run,) = store.runs()
        assert run.outcome == "failure" and {p.status for p in store.pairs(run.id)} == {PairStatus.FAILED}
    finally:
        store.close()


def test_plan_to_a_missing_directory_is_one_line_before_any_request(served: tuple[World, str], tmp_path: Path) -> None:
    world, url = served
    world.people(["a@example.com"])
    path = write(world, url, [{"name": "T", "members": ["a@example.com"]}])
    result = syncd("plan", "--config", str(path), "-o", str(tmp_path / "no" / "such" / "plan.json"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("syncd: cannot write the plan to ")
    assert "Traceback" not in result.stderr
    assert world.c8.count() == world.cr.count() == 0


def test_a_config_that_syncs_nothing_says_so(tmp_path: Path) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_text(
        f"state: {{url: 'sqlite:///{tmp_path}/s.db'}}\ngroups:\n  - {{name: G, members: [a@example.com]}}\n"
    )
    run = syncd("run", "--config", str(path))
    assert run.returncode == 0
    assert "warning" in run.stderr and "no providers are configured" in run.stderr
    assert "no (group, provider) pairs selected" in run.stdout and "GROUP" not in run.stdout
    validate = syncd("validate", "--config", str(path))
    assert validate.returncode == 0 and "warning: no providers are configured" in validate.stdout


def test_validate_online_reports_a_provider_that_cannot_be_set_up(served: tuple[World, str]) -> None:
    world, url = served
    path = write(world, url, [{"name": "T"}])
    result = syncd("validate", "--online", "--config", str(path), env={"ALL_PROXY": "socks9://proxy.invalid:1"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "c8: cannot be used: ValueError" in result.stdout and "cr: cannot be used" in result.stdout


def test_the_guard_log_line_says_how_to_let_the_removals_through(served: tuple[World, str]) -> None:
    world, url = served
    world.people(emails(2))
    path = write(world, url, [{"name": "Sales Team", "members": emails(2), "targets": ["c8"]}])
    assert syncd("run", "--config", str(path)).returncode == 0
    path = write(world, url, [{"name": "Sales Team", "members": [], "targets": ["c8"]}])
    result = syncd("run", "--config", str(path), "--log-format", "json")
    assert result.returncode == 1
    (line,) = [json.loads(x) for x in result.stderr.splitlines() if "held back" in x]
    assert line["level"] == "warning" and "would remove all 2 members" in line["msg"]
    assert "syncd run --allow-mass-removal --group 'Sales Team'" in line["msg"]


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_history_limit_must_be_positive(tmp_path: Path, limit: str) -> None:
    result = syncd("history", "--limit", limit, cwd=tmp_path)
    assert result.returncode == 2 and "--limit: must be 1 or more" in result.stderr
    assert not (tmp_path / "syncd.db").exists()  # refused before anything is opened


def test_ctrl_c_during_run_records_the_run_as_interrupted(served: tuple[World, str]) -> None:
    import signal
    import time

    from connectors.sandbox._core import Fault
    from syncd.state import Store

    world, url = served
    world.cr.inject(Fault(status=0, delay=30, path="/upsert", times=0))  # the add hangs
    path = write(world, url, [{"name": "T", "members": ["a@example.com"], "targets": ["cr"]}])
    env = {**os.environ, "SYNCD_LOG_FORMAT": "json"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while world.cr.count(method="POST", path="/groups$") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # the group is created: the pass is under way, its add hanging
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    store = Store.open(f"sqlite:///{world.tmp}/state.db")
    try:
        (run,) = store.runs()
        assert run.outcome == "interrupted"
    finally:
        store.close()
