"""`syncd run --member EMAIL`: one member, now, on every pair (or the chosen ones): only their add or remove is sent.

End to end: `syncd` subprocesses against the Communic8 and CleverReach sandboxes on a real loopback port, with a real
state DB (SQLite, and PostgreSQL when SYNCD_TEST_POSTGRES_URL is set). Each test first lets a full pass make the
provider groups, then gives them drift on several members, and checks that a member pass changes the chosen member
and nobody else, under the same consent rules, guard and ledger as a full pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from syncd.state import Store
from tests.e2e import World, emails
from tests.test_rejects_cli import c8_members
from tests.test_status import run, served, state_url, status, syncd, write

__all__ = ["served", "state_url"]  # fixtures, shared with tests/test_status.py

M0, M1, M2, M3 = emails(4)
STRAY = "stray@example.com"  # on the provider groups, in no source


def drifted(world: World, url: str, state_url: str) -> Path:
    """Team on c8 and cr, made by a full pass with m0 and the stray; then the source wants m0..m3 and not the stray:
    every pair has three members to add and one to remove."""
    world.people([*emails(4), STRAY])
    first = write(world, url, state_url, [{"name": "Team", "members": [M0, STRAY], "targets": ["c8", "cr"]}])
    assert {p["status"] for p in run(first)["pairs"]} == {"applied"}
    return write(world, url, state_url, [{"name": "Team", "members": emails(4), "targets": ["c8", "cr"]}])


def cr_members(world: World, state_url: str, group: str) -> set[str]:
    return world.cr.active_emails(_remote_id(state_url, group, "cr"))


def _remote_id(state_url: str, group: str, provider: str) -> str:
    with Store.open(state_url) as store:
        binding = store.binding(group, provider)
    assert binding is not None
    return binding.remote_id


def ledger(state_url: str) -> list[tuple[str, str, str, str]]:
    with Store.open(state_url) as store:
        rows = store.history()
    return sorted((r.provider, r.email, str(r.op), str(r.outcome)) for r in rows)


def pairs(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["provider"]: p for p in report["pairs"]}


def test_adds_only_that_member(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    path = drifted(world, url, state_url)
    before = ledger(state_url)

    # spelled differently from the source: compared trimmed and case-insensitively
    result = syncd("run", "--config", str(path), "-o", "json", "--detailed-exitcode", "--member", f" {M1.upper()} ")

    assert result.returncode == 2, result.stderr  # changes were applied
    report = pairs(json.loads(result.stdout))
    for provider in ("c8", "cr"):
        pair = report[provider]
        # the whole group's sizes, the chosen member's change
        assert (pair["status"], pair["desired"], pair["actual_before"], pair["add"], pair["remove"]) == (
            "applied",
            4,
            2,
            1,
            0,
        )
        assert pair["requests"]["write"] >= 1
    assert c8_members(world, state_url, "Team") == {M0, M1, STRAY}
    assert cr_members(world, state_url, "Team") == {M0, M1, STRAY}
    new = sorted(set(ledger(state_url)) - set(before))
    assert new == [("c8", M1, "add", "applied"), ("cr", M1, "add", "applied")]

    # the member is on both lists now: a second member pass changes nothing
    again = syncd("run", "--config", str(path), "-o", "json", "--detailed-exitcode", "--member", M1)
    assert again.returncode == 0, again.stderr
    assert {p["status"] for p in json.loads(again.stdout)["pairs"]} == {"in_sync"}


def test_removes_only_that_member_and_the_guard_weighs_the_whole_group(
    served: tuple[World, str], state_url: str
) -> None:
    world, url = served
    path = drifted(world, url, state_url)
    statuses = status(path, "-o", "json").stdout

    # the stray is 1 of the 2 members: removing them alone is not "all members" (the guard sees the whole group)
    report = pairs(run(path, "--member", STRAY, "--provider", "c8"))

    assert list(report) == ["c8"]
    assert (report["c8"]["status"], report["c8"]["add"], report["c8"]["remove"]) == ("applied", 0, 1)
    assert "blocked_reason" not in report["c8"]
    assert c8_members(world, state_url, "Team") == {M0}  # m1..m3 still not added
    assert cr_members(world, state_url, "Team") == {M0, STRAY}  # not a chosen provider
    # a member pass is not the pairs' last pass: `syncd status` still shows the full pass
    assert status(path, "-o", "json").stdout == statuses


def test_a_member_in_no_source_of_an_owned_group_is_left_alone(served: tuple[World, str], state_url: str) -> None:
    """The removal policy holds as in a full pass: an adopted group (owned) keeps members syncd did not add."""
    world, url = served
    world.people([M0, STRAY])
    world.c8.add_group("Adopted", [M0, STRAY])
    path = write(world, url, state_url, [{"name": "Adopted", "members": [M0], "targets": ["c8"]}])

    report = pairs(run(path, "--member", STRAY))

    assert (report["c8"]["status"], report["c8"]["remove"]) == ("in_sync", 0)
    assert c8_members(world, state_url, "Adopted") == {M0, STRAY}


def test_dry_run_sends_nothing_and_says_what_it_would_do(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    path = drifted(world, url, state_url)
    world.clear_logs()

    result = syncd("run", "--config", str(path), "--dry-run", "-o", "json", "--detailed-exitcode", "--member", M2)

    assert result.returncode == 2, result.stderr  # changes pending
    report = json.loads(result.stdout)
    assert report["dry_run"] is True
    assert {(p["provider"], p["status"], p["add"], p["remove"]) for p in report["pairs"]} == {
        ("c8", "pending", 1, 0),
        ("cr", "pending", 1, 0),
    }
    assert world.mutating() == 0
    assert c8_members(world, state_url, "Team") == {M0, STRAY}


def test_a_member_who_unsubscribed_is_not_added_again(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    world.people(emails(2))
    path = write(world, url, state_url, [{"name": "Team", "members": emails(2), "targets": ["cr"]}])
    assert pairs(run(path))["cr"]["status"] == "applied"
    world.cr.unsubscribe(_remote_id(state_url, "Team", "cr"), M1)  # the person left the list at CleverReach
    world.clear_logs()

    report = pairs(run(path, "--member", M1))

    pair = report["cr"]
    assert (pair["status"], pair["add"], pair["remove"]) == ("in_sync", 0, 0)
    assert [(r["email"], r["code"]) for r in pair["rejected"]] == [(M1, "unsubscribed")]
    assert world.mutating() == 0
    assert cr_members(world, state_url, "Team") == {M0}
    with Store.open(state_url) as store:  # remembered, as a full pass remembers it
        assert [r.code for r in store.reject_rows(provider="cr") if r.email == M1] == ["unsubscribed"]


def test_several_members_never_reset_the_group(served: tuple[World, str], state_url: str) -> None:
    """An add and a remove cost two Communic8 calls, one atomic reset only one: but a reset would write the chosen
    members alone and drop everyone else, so a member pass never chooses it."""
    world, url = served
    path = drifted(world, url, state_url)

    report = pairs(run(path, "--member", M1, "--member", STRAY, "--provider", "c8"))

    c8 = report["c8"]
    assert (c8["status"], c8["strategy"], c8["add"], c8["remove"]) == ("applied", "incremental", 1, 1)
    assert c8_members(world, state_url, "Team") == {M0, M1}
    assert ledger(state_url).count(("c8", STRAY, "remove", "applied")) == 1
