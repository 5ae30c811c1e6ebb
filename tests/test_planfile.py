"""`syncd plan` then `syncd apply`: the saved ops are applied as reviewed, and only if nothing moved since."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from syncd.errors import StalePlanError
from syncd.model import LedgerOutcome, PairStatus
from syncd.planfile import apply_plan, make_plan
from syncd.reconciler import PassOptions
from tests.e2e import World, emails


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def plan_then(world: World, groups: list[dict], out: Path, **options):  # type: ignore[no-untyped-def]
    config = world.config(groups)
    store = world.store(config)
    try:
        transport = httpx.ASGITransport(app=world.app)
        report = await make_plan(config, store, world.metrics, PassOptions(**options), out, transport=transport)
    finally:
        store.close()
    return config, report


async def apply(world: World, config, path: Path):  # type: ignore[no-untyped-def]
    store = world.store(config)
    try:
        return await apply_plan(config, store, world.metrics, path, transport=httpx.ASGITransport(app=world.app))
    finally:
        store.close()


async def test_plan_is_saved_and_applied_exactly(world: World, tmp_path: Path) -> None:
    world.people(emails(3))
    out = tmp_path / "plan.json"
    config, report = await plan_then(world, [{"name": "T", "members": emails(3)}], out)
    assert world.mutating() == 0 and all(p.status is PairStatus.PENDING for p in report.pairs)
    doc = json.loads(out.read_text())
    assert doc["format"] == "syncd-plan/1"
    assert {(p["group"], p["provider"]) for p in doc["pairs"]} == {("T", "c8"), ("T", "cr")}
    assert [op["kind"] for op in doc["pairs"][0]["ops"]] == ["create_group", "add"]

    applied = await apply(world, config, out)
    assert applied.ok and all(p.status is PairStatus.APPLIED and p.add == 3 for p in applied.pairs)
    (gid,) = world.c8.groups
    assert world.c8.group_emails(gid) == set(emails(3))

    world.clear_logs()
    with pytest.raises(StalePlanError, match="provider group changed"):
        await apply(world, config, out)  # applied once: the groups moved on
    assert world.mutating() == 0


async def test_a_plan_is_refused_when_the_provider_group_changed(world: World, tmp_path: Path) -> None:
    world.people(emails(3))
    gid = world.cr.add_group("T", emails(1))
    out = tmp_path / "plan.json"
    config, _ = await plan_then(world, [{"name": "T", "members": emails(3), "targets": ["cr"]}], out)
    world.cr.add_group("unrelated")  # does not matter
    world.cr.groups[gid].receivers.clear()  # somebody emptied the list in CleverReach meanwhile
    with pytest.raises(StalePlanError, match="nothing was applied"):
        await apply(world, config, out)
    assert world.cr.mutating_count == 0


async def test_a_plan_is_refused_when_the_source_changed(world: World, tmp_path: Path) -> None:
    world.people(emails(3))
    out = tmp_path / "plan.json"
    await plan_then(world, [{"name": "T", "members": emails(2), "targets": ["c8"]}], out)
    changed = world.config([{"name": "T", "members": emails(3), "targets": ["c8"]}])
    with pytest.raises(StalePlanError, match="source's members changed"):
        await apply(world, changed, out)
    assert world.mutating() == 0


async def test_a_blocked_plan_applies_its_adds_only(world: World, tmp_path: Path) -> None:
    world.people(emails(5) + ["new@example.com"])
    config = world.config([{"name": "T", "members": emails(5), "targets": ["c8"]}])
    await world.run(config)
    out = tmp_path / "plan.json"
    config, report = await plan_then(world, [{"name": "T", "members": ["new@example.com"], "targets": ["c8"]}], out)
    assert report.pairs[0].status is PairStatus.BLOCKED
    applied = await apply(world, config, out)
    (gid,) = world.c8.groups
    assert world.c8.group_emails(gid) == set(emails(5)) | {"new@example.com"}
    assert applied.pairs[0].add == 1 and applied.pairs[0].remove == 0


async def test_applying_a_plan_reports_and_records_what_it_holds_back_as_the_run_would(
    world: World, tmp_path: Path
) -> None:
    world.people(emails(5) + ["new@example.com"])
    config = world.config([{"name": "T", "members": emails(5), "targets": ["c8"]}])
    await world.run(config)
    out = tmp_path / "plan.json"
    groups = [{"name": "T", "members": ["new@example.com", "not-an-email"], "targets": ["c8"]}]
    config, planned = await plan_then(world, groups, out)
    (p,) = planned.pairs
    assert (p.status, p.held_back) == (PairStatus.BLOCKED, 5)

    applied = await apply(world, config, out)
    (a,) = applied.pairs
    assert (a.status, a.add, a.remove, a.held_back, a.guard) == (PairStatus.BLOCKED, 1, 0, 5, p.guard)
    assert a.rejected == p.rejected
    store = world.store(config)
    try:
        held = [r for r in store.history(run_id=applied.run_id) if r.outcome == LedgerOutcome.BLOCKED]
        assert sorted(r.email for r in held) == emails(5)
    finally:
        store.close()
    drift = world.metrics.registry.get_sample_value("syncd_drift", {"group": "T", "provider": "c8", "kind": "remove"})
    assert drift == 5


async def test_a_plan_whose_provider_cannot_be_read_is_refused_saying_so(world: World, tmp_path: Path) -> None:
    world.people(emails(2))
    out = tmp_path / "plan.json"
    config, _ = await plan_then(world, [{"name": "T", "members": emails(2)}], out)
    world.cr.clients.clear()  # CleverReach now refuses our credentials: the check cannot read the group
    with pytest.raises(StalePlanError) as refused:
        await apply(world, config, out)
    message = str(refused.value)
    assert "T → cr: could not be checked:" in message and "client_id / client_secret" in message
    assert "not found any more" not in message  # the group is not gone; it could not be looked at
    assert world.mutating() == 0
