"""`syncd` as a user runs it: a subprocess, a config file, sandboxes on a real loopback port."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from syncd.model import LedgerOutcome, OpKind, PairStatus
from syncd.state import LedgerEntry, Store
from syncd.state.store import HistoryRow
from syncd.state.tables import ledger
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
    ("providers: [\n  {name: c8\n", ":2:", "YAML"),  # the line of the '{' that is never closed
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
    assert "credentials ok" in online.stdout and "'New': would create it" in online.stdout
    assert world.mutating() == 0


def test_validate_online_says_what_the_first_run_would_do_and_writes_nothing(served: tuple[World, str]) -> None:
    world, url = served
    exists = world.cr.add_group("Exists", [])
    pinned = world.cr.add_group("Somewhere Else", [])
    path = write(
        world,
        url,
        [
            {"name": "Exists", "targets": ["cr"]},
            {"name": "New", "targets": ["c8"]},
            {"name": "Pinned", "targets": [{"provider": "cr", "group_id": str(pinned)}]},
        ],
    )
    db = world.tmp / "state.db"
    before = syncd("validate", "--online", "--config", str(path))
    assert (before.returncode, before.stderr) == (0, "")
    assert before.stdout == (
        f"{path}: ok (2 providers, 0 sources, 3 groups)\n"
        f"state DB sqlite:///{db}: not created yet (the first run creates it)\n"
        "c8: credentials ok\n"
        "  'New': would create it (c8 has no group of that name yet)\n"
        "cr: credentials ok\n"
        f"  'Exists': would adopt the existing group 'Exists' (id {exists})\n"
        f"  'Pinned': would adopt the existing group 'Somewhere Else' (id {pinned}, the target's group_id)\n"
    )
    assert not db.exists()  # no state DB created
    assert world.mutating() == 0

    assert syncd("run", "--config", str(path)).returncode == 0  # binds all three
    with Store.open(f"sqlite:///{db}") as store:
        binding = store.binding("New", "c8")
    assert binding is not None
    content = db.read_bytes()
    writes = world.mutating()
    after = syncd("validate", "--online", "--config", str(path))
    assert (after.returncode, after.stderr) == (0, "")
    assert after.stdout == (
        f"{path}: ok (2 providers, 0 sources, 3 groups)\n"
        f"state DB sqlite:///{db}: ok\n"
        "c8: credentials ok\n"
        f"  'New': bound to 'New' (id {binding.remote_id})\n"
        "cr: credentials ok\n"
        f"  'Exists': bound to 'Exists' (id {exists})\n"
        f"  'Pinned': bound to 'Somewhere Else' (id {pinned})\n"
    )
    assert db.read_bytes() == content and world.mutating() == writes  # the state DB untouched, nothing sent


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
    assert "syncd approve 'Sales Team' --provider c8 --reason '…'" in line["msg"]
    (quarantined,) = [json.loads(x) for x in result.stderr.splitlines() if "quarantined" in x]
    assert quarantined["level"] == "warning" and "Sales Team" in quarantined["msg"]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--limit", "-1"], "argument --limit: must be 0 (no limit) or more, got -1"),
        (["--limit", "many"], "argument --limit: expected a whole number, got 'many'"),
        (
            ["--since", "last tuesday"],
            "argument --since: expected an ISO date or date-time (2024-05-01, 2024-05-01T09:30) or a time back "
            "from now (7d, 12h, 1h30m), got 'last tuesday'",
        ),
    ],
)
def test_history_refuses_a_bad_limit_or_since(tmp_path: Path, option: list[str], message: str) -> None:
    result = syncd("history", *option, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"syncd history: error: {message}"
    assert not (tmp_path / "syncd.db").exists()  # refused before anything is opened


def test_ctrl_c_during_run_records_the_run_as_interrupted(served: tuple[World, str]) -> None:
    import signal
    import time

    from sandboxes._core import Fault
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


# ---------------------------------------------------------------------------------------------- history

# Providers and a source whose credentials are not in the environment: history needs none of them.
NO_CREDENTIALS_CONFIG = """\
state:
  url: sqlite:///${SYNCD_TEST_STATE_DIR}/state.db
providers:
  - name: c8
    type: communic8
    base_url: https://acme.communic8.example/int/v1
    token: ${SYNCD_TEST_UNSET_TOKEN}
sources:
  - type: hubspot
    token: ${SYNCD_TEST_UNSET_HUBSPOT_TOKEN}
    groups: [{name: Newsletter, list_id: "123", targets: [c8]}]
"""


def history(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "syncd.yaml"
    if not path.exists():
        path.write_text(NO_CREDENTIALS_CONFIG)
    return syncd("history", "--config", str(path), *args, env={"SYNCD_TEST_STATE_DIR": str(tmp_path), **(env or {})})


def _entry(email: str, outcome: LedgerOutcome = LedgerOutcome.APPLIED, reason: str = "in source") -> LedgerEntry:
    return LedgerEntry("Newsletter", "c8", email, OpKind.ADD, outcome, reason)


def ledger_db(tmp_path: Path) -> list[HistoryRow]:
    """A state DB with a real run (two entries) and a dry run (one of each dry-run outcome); its rows, newest first."""
    with Store.open(f"sqlite:///{tmp_path}/state.db") as store:
        real = store.start_run(dry_run=False, trigger="cli")
        store.record_ledger(real, [_entry("Ann@example.com"), _entry("bob@example.com")])
        dry = store.start_run(dry_run=True, trigger="cli")
        store.record_ledger(
            dry,
            [
                _entry("cat@example.com", LedgerOutcome.WOULD),
                _entry("dan@example.com", LedgerOutcome.REJECTED, "unsubscribed at the provider"),
                _entry("eve@example.com", LedgerOutcome.FAILED, "HTTP 500"),
            ],
        )
        return list(store.stream_history())


def text_line(row: HistoryRow) -> str:
    return (
        f"{row.at:%Y-%m-%d %H:%M:%S}  {row.run_id[:8]}  Newsletter → c8  add    {row.outcome!s:<11} {row.email}  "
        f"({row.reason})" + ("  [dry run]" if row.dry_run else "")
    )


def json_entry(row: HistoryRow) -> dict[str, object]:
    return {
        "at": row.at.isoformat(),
        "run_id": row.run_id,
        "dry_run": row.dry_run,
        "group": "Newsletter",
        "provider": "c8",
        "email": row.email,
        "op": "add",
        "outcome": str(row.outcome),
        "reason": row.reason,
    }


def test_history_reads_only_the_state_db_and_leaves_dry_runs_out(tmp_path: Path) -> None:
    rows = ledger_db(tmp_path)
    real = [r for r in rows if not r.dry_run]
    assert [r.email for r in real] == ["bob@example.com", "Ann@example.com"]
    content = (tmp_path / "state.db").read_bytes()

    result = history(tmp_path)  # no provider or source credential in the environment
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "".join(text_line(r) + "\n" for r in real)

    dry_too = history(tmp_path, "--include-dry-runs")
    assert (dry_too.returncode, dry_too.stderr) == (0, "")
    assert dry_too.stdout == "".join(text_line(r) + "\n" for r in rows)
    assert dry_too.stdout.count("[dry run]") == 3

    as_json = history(tmp_path, "-o", "json")
    assert (as_json.returncode, as_json.stderr) == (0, "")
    assert json.loads(as_json.stdout) == [json_entry(r) for r in real]
    assert json.loads(history(tmp_path, "-o", "json", "--include-dry-runs").stdout) == [json_entry(r) for r in rows]

    member = history(tmp_path, "--member", " ANN@example.com", "--group", "Newsletter", "--provider", "c8")
    assert member.stdout == text_line(real[1]) + "\n"
    assert history(tmp_path, "--provider", "cr").stdout == "no ledger entries match\n"
    assert json.loads(history(tmp_path, "--provider", "cr", "-o", "json").stdout) == []
    assert (tmp_path / "state.db").read_bytes() == content  # read, never written


def test_history_json_is_an_array_with_one_entry_per_line(tmp_path: Path) -> None:
    rows = ledger_db(tmp_path)
    result = history(tmp_path, "-o", "json", "--include-dry-runs")
    lines = result.stdout.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == len(rows) + 2
    assert [json.loads(line.rstrip(",")) for line in lines[1:-1]] == [json_entry(r) for r in rows]


def test_history_without_a_state_db_creates_none(tmp_path: Path) -> None:
    result = history(tmp_path)
    assert result.returncode == 0
    assert result.stdout == "no ledger entries match\n"
    assert (
        result.stderr == f"syncd: no state DB at sqlite:///{tmp_path}/state.db yet: nothing has run with this config\n"
    )
    assert json.loads(history(tmp_path, "-o", "json").stdout) == []
    assert list(tmp_path.iterdir()) == [tmp_path / "syncd.yaml"]


def test_history_state_settings_and_their_errors(tmp_path: Path) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_text(NO_CREDENTIALS_CONFIG.replace("${SYNCD_TEST_STATE_DIR}", "${SYNCD_TEST_UNSET_DIR}"))
    result = syncd("history", "--config", str(path))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"syncd: config error: {path}:2: state.url: environment variable SYNCD_TEST_UNSET_DIR is not set\n"
    )
    path.write_text(NO_CREDENTIALS_CONFIG)
    other = f"sqlite:///{tmp_path}/other.db"
    overridden = history(tmp_path, env={"SYNCD_STATE__URL": other})
    assert overridden.returncode == 0
    assert overridden.stderr == f"syncd: no state DB at {other} yet: nothing has run with this config\n"
    wrong = history(tmp_path, env={"SYNCD_STATE__URL": "mysql://syncd:hunter2@db/syncd"})
    assert (wrong.returncode, wrong.stdout) == (1, "")
    assert wrong.stderr == (
        "syncd: config error: environment variable SYNCD_STATE__URL: state.url: unsupported database 'mysql' "
        "(syncd supports sqlite and postgresql)\n"
    )


def test_history_since_and_limit(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path}/state.db") as store:
        old = store.start_run(dry_run=False, trigger="cli")
        store.record_ledger(old, [_entry(f"old{i}@example.com") for i in range(3)])
        new = store.start_run(dry_run=False, trigger="cli")
        store.record_ledger(new, [_entry(f"new{i}@example.com") for i in range(3)])
    engine = sa.create_engine(f"sqlite:///{tmp_path}/state.db")  # the old run was ten days ago
    with engine.begin() as conn:
        conn.execute(ledger.update().where(ledger.c.run_id == old).values(at=datetime.now(UTC) - timedelta(days=10)))
    engine.dispose()

    def emails(*args: str) -> list[str]:
        result = history(tmp_path, "-o", "json", *args)
        assert result.returncode == 0, result.stderr
        return [entry["email"] for entry in json.loads(result.stdout)]

    newest = ["new2@example.com", "new1@example.com", "new0@example.com"]
    oldest = ["old2@example.com", "old1@example.com", "old0@example.com"]
    assert emails() == newest + oldest
    assert emails("--since", "7d") == newest
    assert emails("--since", "240h") == newest
    assert emails("--since", "11d") == newest + oldest
    five_days_ago = datetime.now(UTC) - timedelta(days=5)
    assert emails("--since", five_days_ago.date().isoformat()) == newest
    assert emails("--since", five_days_ago.strftime("%Y-%m-%dT%H:%M")) == newest
    assert emails("--since", five_days_ago.astimezone(timezone(timedelta(hours=-7))).isoformat()) == newest
    assert emails("--since", "2000-01-01") == newest + oldest

    limited = history(tmp_path, "--limit", "4")
    assert [line.split()[8] for line in limited.stdout.splitlines()] == [*newest, "old2@example.com"]
    assert (
        limited.stderr
        == "syncd: showing the newest 4 entries; there are more (--limit N for more, --limit 0 for all)\n"
    )
    exact = history(tmp_path, "--limit", "6")
    assert (len(exact.stdout.splitlines()), exact.stderr) == (6, "")  # no more than these: nothing to say
    assert emails("--limit", "0") == newest + oldest


def test_history_shows_100_entries_unless_told_otherwise(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path}/state.db") as store:
        run_id = store.start_run(dry_run=False, trigger="cli")
        store.record_ledger(run_id, [_entry(f"m{i:04d}@example.com") for i in range(150)])
    default = history(tmp_path, "-o", "json")
    assert len(json.loads(default.stdout)) == 100 and "showing the newest 100 entries" in default.stderr
    everything = history(tmp_path, "-o", "json", "--limit", "0")
    assert len(json.loads(everything.stdout)) == 150 and everything.stderr == ""


# ------------------------------------------------------------------------------------------- closed pipes


def test_a_closed_pipe_ends_history_quietly(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path}/state.db") as store:
        run_id = store.start_run(dry_run=False, trigger="cli")
        store.record_ledger(run_id, [_entry(f"m{i:05d}@example.com") for i in range(5_000)])  # ~500 kB of text
    (tmp_path / "syncd.yaml").write_text(NO_CREDENTIALS_CONFIG)
    env = {**os.environ, "SYNCD_TEST_STATE_DIR": str(tmp_path), "SYNCD_LOG_FORMAT": "json"}
    proc = subprocess.Popen(  # syncd history --limit 0 | head -1
        [sys.executable, "-m", "syncd", "history", "--config", str(tmp_path / "syncd.yaml"), "--limit", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert b"m04999@example.com" in proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141  # as a process that SIGPIPE ended
    assert proc.stderr.read() == b""  # no traceback, no "Exception ignored"
    proc.stderr.close()


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (["--help"], 0),  # argparse itself ignores a failed write of its help
        (["history", "--help"], 0),
        (["validate"], 141),
        (["history"], 141),
        (["run", "--dry-run", "--log-level", "error"], 141),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else str(value),
)
def test_a_closed_pipe_ends_every_command_quietly(served: tuple[World, str], command: list[str], code: int) -> None:
    world, url = served
    path = write(world, url, [{"name": "T", "members": ["a@example.com"]}])
    Store.open(f"sqlite:///{world.tmp}/state.db").close()  # an empty ledger: history prints just a line
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before syncd writes a byte: even buffered output meets a closed pipe
    try:
        result = subprocess.run(
            [sys.executable, "-m", "syncd", *command, *([] if "--help" in command else ["--config", str(path)])],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SYNCD_LOG_FORMAT": "json"},
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (code, "")


# --------------------------------------------------------------------------------------------- the parser


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield f"{path} {choice.dest}", choice
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")
        else:
            yield f"{path} {'/'.join(action.option_strings) or action.dest}", action


def test_every_command_and_option_has_help_text() -> None:
    from syncd.cli import build_parser

    walked = list(_walk(build_parser(), "syncd"))
    assert len(walked) > 50  # the walk reached every command
    missing = [where for where, action in walked if not action.help or action.help == argparse.SUPPRESS]
    assert missing == []


@pytest.mark.parametrize("command", ["demo", "sandbox"])
def test_commands_that_read_no_config_do_not_offer_config(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from syncd.cli import build_parser

    parser = build_parser()
    offered = {where.split()[-1] for where, _ in _walk(parser, "syncd") if where.split()[1] == command}
    assert "--config" not in offered and {"--log-format", "--log-level"} <= offered
    with pytest.raises(SystemExit) as exited:
        parser.parse_args([command, "--config", "syncd.yaml"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "syncd: error: unrecognized arguments: --config syncd.yaml"
