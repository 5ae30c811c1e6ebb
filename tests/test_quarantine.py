"""Quarantine: a pair the removal guard blocked stays blocked pass after pass (adds still go) until `syncd approve`
lets its held removals go once, a run with --allow-mass-removal, or a plan back under the limits. Real passes
against the sandboxes, a real SQLite file and PostgreSQL (when SYNCD_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syncd.model import LedgerOutcome, OpKind, PairStatus
from syncd.state import Store
from tests.e2e import World, emails
from tests.test_status import run, served, state_only_config, state_url, syncd, write

__all__ = ["served", "state_url"]  # fixtures, shared with tests/test_status.py

FIRST = "would remove 20 of 30 members (67%), more than max_removal_ratio=0.25"
GUARD = "would remove 20 of 31 members (65%), more than max_removal_ratio=0.25"  # with the newcomer added


def statuses(report: dict[str, Any]) -> dict[str, tuple[str, int, int]]:
    return {p["provider"]: (p["status"], p["add"], p["remove"]) for p in report["pairs"]}


def held(state_url: str) -> dict[str, tuple[str, bool]]:
    with Store.open(state_url) as store:
        return {q.provider: (q.reason, q.approved) for q in store.quarantined("Team")}


def members(world: World, state_url: str, provider: str) -> int:
    with Store.open(state_url) as store:
        binding = store.binding("Team", provider)
    assert binding is not None
    if provider == "c8":
        return len(world.c8.group_emails(binding.remote_id))
    return len(world.cr.active_emails(binding.remote_id))


def test_a_blocked_pair_stays_blocked_until_an_approval_lets_one_pass_remove(
    served: tuple[World, str], state_url: str
) -> None:
    world, url = served
    old = emails(30)
    world.people([*old, "new@example.com"])
    path = write(world, url, state_url, [{"name": "Team", "members": old, "targets": ["c8", "cr"]}])
    assert statuses(run(path)) == {"c8": ("applied", 30, 0), "cr": ("applied", 30, 0)}

    # The CRM loses 20 people: both pairs are quarantined; the newcomer is still added.
    path = write(world, url, state_url, [{"name": "Team", "members": [*old[:10], "new@example.com"]}])
    assert statuses(run(path)) == {"c8": ("blocked", 1, 0), "cr": ("blocked", 1, 0)}
    assert held(state_url) == {"c8": (FIRST, False), "cr": (FIRST, False)}
    assert statuses(run(path)) == {"c8": ("blocked", 0, 0), "cr": ("blocked", 0, 0)}  # and again, pass after pass
    assert held(state_url) == {"c8": (GUARD, False), "cr": (GUARD, False)}  # why: as the latest pass saw it

    readonly = state_only_config(world.tmp, state_url)  # approve needs no provider credential
    approved = syncd(
        "approve", "Team", "--provider", "c8", "--reason", "CRM cleanup, checked by Ann", "--config", str(readonly)
    )
    assert (approved.returncode, approved.stderr) == (0, "")
    assert approved.stdout.startswith("approved Team → c8: the 20 removals held back since ")
    assert approved.stdout.endswith(f" ({GUARD}) go at its next pass\n")
    assert held(state_url) == {"c8": (GUARD, True), "cr": (GUARD, False)}

    # A dry run says what the approved pass will do, and spends no approval.
    assert statuses(run(path, "--dry-run")) == {"c8": ("pending", 0, 20), "cr": ("blocked", 0, 0)}
    assert held(state_url) == {"c8": (GUARD, True), "cr": (GUARD, False)}

    # The next real pass removes at c8 only, once; the ledger says who approved what.
    assert statuses(run(path)) == {"c8": ("applied", 0, 20), "cr": ("blocked", 0, 0)}
    assert held(state_url) == {"cr": (GUARD, False)}
    assert (members(world, state_url, "c8"), members(world, state_url, "cr")) == (11, 31)
    with Store.open(state_url) as store:
        removed = [
            r
            for r in store.history(group="Team", provider="c8")
            if r.op is OpKind.REMOVE and r.outcome is LedgerOutcome.APPLIED
        ]
    assert len(removed) == 20
    assert {r.reason.split("; ")[0] for r in removed} == {"not in source (removal_policy mirror)"}
    assert all(
        r.reason.endswith(": CRM cleanup, checked by Ann") and "mass removal approved " in r.reason for r in removed
    )

    # The approval was for that pass: the next mass removal at c8 is held back again.
    path = write(world, url, state_url, [{"name": "Team", "members": [], "targets": ["c8"]}])
    report = run(path)
    assert statuses(report) == {"c8": ("blocked", 0, 0)}
    assert report["pairs"][0]["blocked_reason"] == "would remove all 11 members"


def test_approve_says_when_nothing_is_held_back(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    world.people(emails(3))
    path = write(world, url, state_url, [{"name": "Team", "members": emails(3), "targets": ["c8"]}])
    run(path)
    result = syncd("approve", "Team", "--reason", "why not", "--config", str(path))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "syncd: Team: no pair is held back by the removal guard: nothing to approve\n"
    blank = syncd("approve", "Team", "--reason", "  ", "--config", str(path))
    assert blank.returncode == 2 and "--reason must say why" in blank.stderr
    missing = syncd("approve", "Team", "--config", str(path))
    assert missing.returncode == 2 and "--reason" in missing.stderr


async def test_a_pair_leaves_quarantine_when_its_plan_is_back_under_the_limits(tmp_path: Path) -> None:
    world = World(tmp_path)
    old = emails(30)
    world.people(old)
    full = world.config([{"name": "Team", "members": old, "targets": ["c8"]}])
    await world.run(full)
    short = world.config([{"name": "Team", "members": old[:5], "targets": ["c8"]}])
    for _ in range(3):  # three blocked passes: one quarantine, one alert
        report = await world.run(short)
        assert report.pairs[0].status is PairStatus.BLOCKED
    assert world.metrics.removals_blocked.labels("Team", "c8")._value.get() == 1
    assert world.metrics.blocked.labels("Team", "c8")._value.get() == 1

    world.clear_logs()
    report = await world.run(full)  # the CRM is back: nothing to remove, and no approval is needed
    assert (report.pairs[0].status, report.pairs[0].remove) == (PairStatus.IN_SYNC, 0)
    assert world.metrics.blocked.labels("Team", "c8")._value.get() == 0
    with world.store(full) as store:
        assert store.quarantined() == []
    assert world.c8.mutating_count == 0

    await world.run(short)  # a new mass removal is a new quarantine, counted again
    assert world.metrics.removals_blocked.labels("Team", "c8")._value.get() == 2
    report = await world.run(short, allow_mass_removal=True)  # someone allows it on the command line
    assert (report.pairs[0].status, report.pairs[0].remove) == (PairStatus.APPLIED, 25)
    assert world.metrics.blocked.labels("Team", "c8")._value.get() == 0
    with world.store(full) as store:
        assert store.quarantined() == []
