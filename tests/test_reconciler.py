"""Whole passes against the Communic8 and CleverReach sandboxes: config file → state DB → HTTP → ledger.

Request counts are exact: they are what the sandboxes served, and what the run reports per pair.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from sandboxes._core import Fault
from syncd.errors import StateError
from syncd.model import LedgerOutcome, PairStatus, RejectCode, Strategy
from syncd.reconciler import Reconciler
from tests.e2e import World, emails


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def pair(report, group: str, provider: str):  # type: ignore[no-untyped-def]
    (found,) = [p for p in report.pairs if p.group == group and p.provider == provider]
    return found


async def test_dry_run_sends_nothing_that_changes_anything(world: World) -> None:
    people = emails(30)
    world.people(people)
    world.cr.add_group("Existing", emails(5, "old"))
    existing = {
        "name": "Existing",
        "members": [*people[:3], "old00000@example.com"],
        "removal_policy": "mirror",
    }
    config = world.config([{"name": "Team", "members": people}, existing])
    report = await world.run(config, dry_run=True)
    assert world.mutating() == 0
    assert report.dry_run and report.ok
    team = pair(report, "Team", "c8")
    assert (team.status, team.add, team.remove, team.actual_before) == (PairStatus.PENDING, 30, 0, 0)
    existing = pair(report, "Existing", "cr")
    assert (existing.add, existing.remove) == (3, 4)
    # nothing was bound or created: a real run afterwards still has everything to do
    report2 = await world.run(config, dry_run=True)
    assert [p.as_dict() | {"requests": None} for p in report2.pairs] == [
        p.as_dict() | {"requests": None} for p in report.pairs
    ]


async def test_apply_reaches_desired_state_with_minimum_writes_then_goes_quiet(world: World) -> None:
    people = emails(2500)
    world.people(people)
    config = world.config([{"name": "Big", "members": people}], provider_extra={"batch_size": 1000})
    report = await world.run(config)
    assert report.ok
    for provider in ("c8", "cr"):
        p = pair(report, "Big", provider)
        assert (p.status, p.add, p.remove, p.strategy) == (PairStatus.APPLIED, 2500, 0, Strategy.INCREMENTAL)
        # create the group + ceil(2500 / 1000) adds; nothing else writes
        assert p.requests["write"] == 1 + math.ceil(2500 / 1000)
    assert world.c8.mutating_count == world.cr.mutating_count == 4
    (c8_id,) = world.c8.groups
    assert world.c8.group_emails(c8_id) == set(people)
    (cr_id,) = world.cr.groups
    assert world.cr.active_emails(cr_id) == set(people)

    world.clear_logs()
    second = await world.run(config)
    assert world.mutating() == 0
    assert all(p.status is PairStatus.IN_SYNC and p.requests["write"] == 0 for p in second.pairs)
    # steady state: one read per pair. The stored binding is trusted (the read proves the group exists);
    # Communic8 carries members inline in the group, CleverReach's 2,500 fit one receivers page.
    assert pair(second, "Big", "c8").requests == {"read": 1, "write": 0}
    assert pair(second, "Big", "cr").requests == {"read": 1, "write": 0}


@pytest.mark.parametrize(("batch_size", "writes"), [(1000, 3), (500, 5), (10**6, 3), (7, 358)])
async def test_writes_follow_the_batch_size(world: World, batch_size: int, writes: int) -> None:
    people = emails(2500)
    world.people(people)
    config = world.config([{"name": "Big", "members": people}], provider_extra={"batch_size": batch_size})
    report = await world.run(config)
    for provider in ("c8", "cr"):
        assert pair(report, "Big", provider).requests["write"] == 1 + writes
    assert world.c8.mutating_count == world.cr.mutating_count == 1 + writes


async def test_removal_guard_holds_removals_back_but_adds_go(world: World) -> None:
    old = emails(30, "old")
    world.people([*old, "new@example.com"])
    config = world.config([{"name": "Team", "members": old}])
    await world.run(config)  # syncd creates the groups: mirror policy
    world.clear_logs()

    config = world.config([{"name": "Team", "members": [*old[:10], "new@example.com"]}])
    report = await world.run(config)
    assert not report.ok
    for provider in ("c8", "cr"):
        p = pair(report, "Team", provider)
        assert p.status is PairStatus.BLOCKED
        assert (p.add, p.remove, p.held_back) == (1, 0, 20)
        assert "would remove 20 of 30 members (67%)" in (p.guard or "")
    assert world.c8.count(method="DELETE") == 0
    assert world.cr.count(path="upsertplus") == 0 and world.cr.count(method="DELETE") == 0
    assert world.metrics.removals_blocked.labels("Team", "c8")._value.get() == 1

    store = world.store(config)
    try:
        blocked = [r for r in store.history(group="Team", provider="c8") if r.outcome == LedgerOutcome.BLOCKED]
        assert len(blocked) == 20 and "held back" in blocked[0].reason
    finally:
        store.close()

    report = await world.run(config, allow_mass_removal=True)
    assert report.ok
    assert all(p.remove == 20 and p.status is PairStatus.APPLIED for p in report.pairs)
    (c8_id,) = world.c8.groups
    assert world.c8.group_emails(c8_id) == {*old[:10], "new@example.com"}


async def test_unknown_communic8_email_is_rejected_while_the_rest_go_in(world: World) -> None:
    people = emails(5)
    world.people(people)
    config = world.config([{"name": "Team", "members": [*people, "stranger@example.com"], "targets": ["c8"]}])
    report = await world.run(config)
    p = pair(report, "Team", "c8")
    assert p.status is PairStatus.APPLIED and p.add == 5
    assert [(r.email, r.code) for r in p.rejected] == [("stranger@example.com", "unknown_recipient")]
    assert "no Communic8 recipient" in p.rejected[0].reason
    (gid,) = world.c8.groups
    assert world.c8.group_emails(gid) == set(people)
    # the unknown email was never sent: no request body carries it
    assert not any(b"stranger" in r.body for r in world.c8.requests)
    # remembered: the next pass neither re-reads the directory nor sends anything for it
    world.clear_logs()
    again = pair(await world.run(config), "Team", "c8")
    assert again.status is PairStatus.IN_SYNC and again.requests == {"read": 1, "write": 0}
    assert [r.code for r in again.rejected] == [RejectCode.REMEMBERED]


async def test_invalid_and_duplicate_members_are_rejected_before_planning(world: World) -> None:
    world.people(["a@example.com"])
    config = world.config([{"name": "T", "members": ["a@example.com", "A@Example.com", "nope"], "targets": ["cr"]}])
    report = await world.run(config)
    p = pair(report, "T", "cr")
    assert p.add == 1 and p.status is PairStatus.APPLIED
    assert sorted(r.code for r in p.rejected) == [RejectCode.DUPLICATE, RejectCode.INVALID_EMAIL]
    assert not any(b"nope" in r.body for r in world.cr.requests)


@pytest.mark.parametrize("status", [429, 503])
async def test_a_pass_survives_injected_rate_limits_and_server_errors(world: World, status: int) -> None:
    people = emails(20)
    world.people(people)
    world.c8.inject(Fault(status=status, retry_after=0, times=3))
    world.cr.inject(Fault(status=status, retry_after=0, times=3, path="/v3/"))
    config = world.config([{"name": "Team", "members": people}])
    report = await world.run(config)
    assert report.ok, report.as_dict()
    assert all(p.status is PairStatus.APPLIED and p.add == 20 for p in report.pairs)
    assert sum(1 for r in world.c8.requests if r.status == status) == 3
    assert sum(1 for r in world.cr.requests if r.status == status) == 3


async def test_adopted_group_removes_only_what_syncd_added(world: World) -> None:
    world.cr.add_group("Newsletter", ["manual@example.com", "keep@example.com"])
    config = world.config(
        [{"name": "Newsletter", "members": ["keep@example.com", "ours@example.com"], "targets": ["cr"]}]
    )
    report = await world.run(config)
    p = pair(report, "Newsletter", "cr")
    assert (p.add, p.remove) == (1, 0)  # manual@ is not ours: left alone
    config = world.config([{"name": "Newsletter", "members": ["keep@example.com"], "targets": ["cr"]}])
    report = await world.run(config)
    p = pair(report, "Newsletter", "cr")
    assert (p.add, p.remove, p.status) == (0, 1, PairStatus.APPLIED)
    (gid,) = world.cr.groups
    assert world.cr.active_emails(gid) == {"manual@example.com", "keep@example.com"}


async def test_a_group_deleted_on_the_provider_is_rebound_by_name_or_recreated(world: World) -> None:
    world.people(["a@example.com"])
    config = world.config([{"name": "Team", "members": ["a@example.com"], "targets": ["cr"]}])
    await world.run(config)
    (old_id,) = world.cr.groups
    del world.cr.groups[old_id]
    report = await world.run(config)
    assert pair(report, "Team", "cr").status is PairStatus.APPLIED
    (new_id,) = world.cr.groups
    assert new_id != old_id and world.cr.active_emails(new_id) == {"a@example.com"}


async def test_a_rename_on_the_provider_creates_no_duplicate(world: World) -> None:
    world.people(["a@example.com"])
    config = world.config([{"name": "Team", "members": ["a@example.com"]}])
    await world.run(config)
    (c8_id,) = world.c8.groups
    world.c8.groups[c8_id]["name"] = "Team (renamed by marketing)"
    (cr_id,) = world.cr.groups
    world.cr.groups[cr_id].name = "Team renamed"
    world.clear_logs()
    report = await world.run(config)
    assert report.ok and world.mutating() == 0
    assert len(world.c8.groups) == len(world.cr.groups) == 1


async def test_provider_reject_is_remembered_until_the_source_changes(world: World) -> None:
    # A CleverReach receiver left out of the upsert answer (an account that silently drops some addresses)
    world.cr.suppressed_upsert = "omit"
    groups = [{"name": "T", "members": ["ok@example.com", "dropped@example.com"], "targets": ["cr"]}]
    config = world.config(groups)
    first = pair(await world.run(config), "T", "cr")
    world.cr.blacklist("dropped@example.com")  # blacklisted after the pass read the blacklist
    world.cr.groups[next(iter(world.cr.groups))].receivers.clear()
    world.clear_logs()
    first = pair(await world.run(config), "T", "cr")  # consent lists read again: now it is known
    assert [(r.email, r.code) for r in first.rejected] == [("dropped@example.com", "blacklisted")]
    world.clear_logs()
    second = pair(await world.run(config), "T", "cr")
    assert world.cr.mutating_count == 0 and second.status is PairStatus.IN_SYNC
    assert [r.code for r in second.rejected] == ["blacklisted"]  # remembered: no consent list read for it
    assert world.cr.count(path="blacklist|bounced") == 0
    groups[0]["members"][1] = {"email": "dropped@example.com", "first_name": "Now", "last_name": "Known"}
    world.clear_logs()
    third = pair(await world.run(world.config(groups)), "T", "cr")
    assert world.cr.mutating_count == 0 and third.rejected[0].code == "blacklisted"  # checked again, still no
    assert world.cr.count(path="blacklist") == 1


async def test_a_provider_reject_without_a_consent_reason_is_remembered_as_such(world: World) -> None:
    world.cr.suppressed_upsert = "omit"
    world.cr.too_large.add("huge@example.com")
    groups = [{"name": "T", "members": ["ok@example.com", "huge@example.com"], "targets": ["cr"]}]
    config = world.config(groups)
    first = pair(await world.run(config), "T", "cr")
    assert first.add == 1 and [(r.email, r.code) for r in first.rejected] == [("huge@example.com", "too_large")]
    world.clear_logs()
    second = pair(await world.run(config), "T", "cr")
    assert world.cr.mutating_count == 0 and [r.code for r in second.rejected] == [RejectCode.REMEMBERED]


# ---------------------------------------------------------------------------------------------- consent


async def test_a_person_who_unsubscribed_is_never_subscribed_again(world: World) -> None:
    gid = world.cr.add_group("News", ["stay@example.com", "Left@Example.com"])
    world.cr.unsubscribe(gid, "left@example.com")  # clicked "unsubscribe" before syncd ever ran
    members = ["stay@example.com", "left@example.com", "new@example.com"]
    config = world.config([{"name": "News", "members": members, "targets": ["cr"]}])

    dry = pair(await world.run(config, dry_run=True), "News", "cr")
    assert world.mutating() == 0
    assert (dry.add, [r.as_dict() for r in dry.rejected]) == (
        1,
        [{"email": "left@example.com", "reason": "unsubscribed", "code": "unsubscribed"}],
    )

    report = await world.run(config)
    news = pair(report, "News", "cr")
    assert news.status is PairStatus.APPLIED and news.add == 1
    assert [r.as_dict() for r in news.rejected] == [
        {"email": "left@example.com", "reason": "unsubscribed", "code": "unsubscribed"}
    ]
    assert report.ok  # a reject is reported, not an error
    assert world.cr.violations == []
    for r in world.cr.requests:
        if r.mutating:
            assert b"left@example.com" not in r.body.lower() and b'"deactivated": 0' not in r.body
    sample = world.metrics.registry.get_sample_value
    labels = {"group": "News", "provider": "cr", "reason": "unsubscribed"}
    assert sample("syncd_members_rejected_total", labels) == 1
    store = world.store(config)
    try:
        rows = [r for r in store.history(member="left@example.com") if r.run_id == report.run_id]
        ((row),) = rows
        assert (row.op, row.outcome) == ("add", LedgerOutcome.REJECTED)
        assert row.reason.startswith("unsubscribed: the receiver was deactivated in CleverReach on ")
        (remembered,) = store.reject_rows("cr", group="News")
        assert (remembered.email, remembered.code) == ("left@example.com", "unsubscribed")
    finally:
        store.close()

    world.clear_logs()
    again = pair(await world.run(config), "News", "cr")  # remembered: nothing read for them, nothing sent
    assert again.status is PairStatus.IN_SYNC and [r.reason for r in again.rejected] == ["unsubscribed"]
    assert world.cr.mutating_count == 0 and world.cr.count(path="blacklist|bounced|type=inactive") == 0


async def test_only_a_removal_syncd_made_is_undone(world: World) -> None:
    people = ["a@example.com", "b@example.com", "c@example.com"]
    config = world.config([{"name": "News", "members": people, "targets": ["cr"]}])
    await world.run(config)
    (gid,) = world.cr.groups
    # a and b leave the source: syncd switches them off; then b also unsubscribes on their own
    fewer = world.config(
        [{"name": "News", "members": people[2:], "targets": ["cr"]}], safety={"max_removal_ratio": 1.0}
    )
    removed = pair(await world.run(fewer), "News", "cr")
    assert removed.remove == 2
    world.cr.unsubscribe(gid, "b@example.com", at=int(time.time()) + 60)  # a minute after syncd's removal
    # both come back to the source: a is switched on again, b is not
    world.clear_logs()
    back = pair(await world.run(config), "News", "cr")
    assert back.add == 1 and [(r.email, r.code) for r in back.rejected] == [("b@example.com", "unsubscribed")]
    assert world.cr.active_emails(gid) == {"a@example.com", "c@example.com"}
    assert world.cr.violations == []
    store = world.store(config)
    try:
        ops = [(r.op, r.outcome) for r in reversed(store.history(member="a@example.com"))]
    finally:
        store.close()
    assert ops == [("add", "applied"), ("remove", "applied"), ("add", "applied")]


async def test_the_ledger_says_who_was_removed_when_and_why(world: World) -> None:
    world.people(["stay@example.com", "Leaver@Example.com"])
    config = world.config([{"name": "T", "members": ["stay@example.com", "Leaver@Example.com"], "targets": ["c8"]}])
    await world.run(config)
    config = world.config(
        [{"name": "T", "members": ["stay@example.com"], "targets": ["c8"]}], safety={"max_removal_ratio": 1.0}
    )
    report = await world.run(config)
    store = world.store(config)
    try:
        rows = store.history(member="leaver@example.com")
    finally:
        store.close()
    assert [(r.op, r.outcome) for r in rows] == [
        ("remove", LedgerOutcome.APPLIED),
        ("add", LedgerOutcome.APPLIED),
    ]
    assert rows[0].run_id == report.run_id and "not in source" in rows[0].reason and rows[0].group == "T"


async def test_one_failing_provider_does_not_stop_the_other(world: World) -> None:
    world.people(["a@example.com"])
    world.cr.clients.clear()  # CleverReach will refuse our client credentials
    config = world.config([{"name": "T", "members": ["a@example.com"]}])
    report = await world.run(config)
    assert not report.ok
    assert pair(report, "T", "c8").status is PairStatus.APPLIED
    failed = pair(report, "T", "cr")
    assert failed.status is PairStatus.FAILED and "client_id / client_secret" in (failed.error or "")
    assert "e2e-secret" not in str(report.as_dict())


async def test_atomic_reset_is_chosen_when_cheaper(world: World) -> None:
    keep, drop = emails(5, "keep"), emails(40, "drop")
    world.people([*keep, *drop])
    cfg = {"safety": {"max_removal_ratio": 1.0}, "provider_extra": {"batch_size": 10}}
    config = world.config([{"name": "T", "members": [*keep, *drop], "targets": ["c8"]}], **cfg)
    await world.run(config)
    world.clear_logs()
    config = world.config([{"name": "T", "members": keep, "targets": ["c8"]}], **cfg)
    report = await world.run(config)
    p = pair(report, "T", "c8")
    assert (p.strategy, p.remove, p.add, p.status) == (Strategy.RESET, 40, 0, PairStatus.APPLIED)
    assert world.c8.mutating_count == 1  # instead of ceil(40 / 10) = 4 removes
    (gid,) = world.c8.groups
    assert world.c8.group_emails(gid) == set(keep)


async def test_group_and_provider_filters(world: World) -> None:
    world.people(["a@example.com"])
    config = world.config([{"name": "A", "members": ["a@example.com"]}, {"name": "B", "members": ["a@example.com"]}])
    report = await world.run(config, groups=frozenset({"a"}), providers=frozenset({"cr"}))
    assert [(p.group, p.provider) for p in report.pairs] == [("A", "cr")]
    assert world.c8.count() == 0


async def test_bitcaster_like_missing_group_with_group_id_fails_the_pair_clearly(world: World) -> None:
    world.people(["a@example.com"])
    config = world.config(
        [{"name": "T", "members": ["a@example.com"], "targets": [{"provider": "c8", "group_id": "0" * 24}]}]
    )
    report = await world.run(config)
    p = pair(report, "T", "c8")
    assert p.status is PairStatus.FAILED and "no group with id" in (p.error or "")
    assert world.c8.mutating_count == 0


async def test_a_pass_killed_halfway_has_recorded_what_it_did(world: World) -> None:
    people = emails(2500)
    config = world.config([{"name": "Big", "members": people, "targets": ["cr"]}], provider_extra={"batch_size": 1000})
    # the first upsert goes through, the next ones hang until the pass is killed
    world.cr.inject(Fault(status=0, delay=30, path="/upsert", skip=1, times=0))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(world.run(config), timeout=2)
    (gid,) = world.cr.groups
    store = world.store(config)
    try:
        binding = store.binding("Big", "cr")
        assert binding is not None and binding.remote_id == str(gid) and binding.created_by_syncd
        applied = [r for r in store.history(group="Big") if r.outcome == LedgerOutcome.APPLIED]
        assert len(applied) == 1000 == len(store.owned("Big", "cr"))
    finally:
        store.close()
    world.cr.faults.clear()
    report = await world.run(config)
    p = pair(report, "Big", "cr")
    assert (p.status, p.actual_before, p.add) == (PairStatus.APPLIED, 1000, 1500)
    assert len(world.cr.groups) == 1 and world.cr.active_emails(gid) == set(people)


async def test_stop_lets_requests_in_flight_finish_and_starts_nothing_new(world: World) -> None:
    people = emails(2500)
    config = world.config(
        [{"name": "Big", "members": people, "targets": ["cr"]}],
        provider_extra={"batch_size": 250, "max_concurrency": 2},
    )
    world.cr.inject(Fault(status=0, delay=0.3, path="/upsert", times=0))  # each upsert takes a while
    stop = asyncio.Event()

    seen: list[int] = []

    async def stop_soon() -> None:
        while world.cr.count(path="/upsert") == 0:  # noqa: ASYNC110 - the sandbox has no event to wait on
            await asyncio.sleep(0.01)
        seen.append(world.cr.count(path="/upsert"))
        stop.set()

    store = world.store(config)
    try:
        reconciler = Reconciler(config, store, world.metrics, transport=httpx.ASGITransport(app=world.app))
        report, _ = await asyncio.gather(reconciler.run(stop=stop), stop_soon())
        (run,) = store.runs()
        assert run.outcome == "interrupted"
    finally:
        store.close()
    p = pair(report, "Big", "cr")
    assert p.status is PairStatus.PARTIAL and "syncd is stopping" in (p.error or "")
    # what had finished when the stop came, plus at most the two then in flight (max_concurrency 2)
    upserts = world.cr.count(path="/upsert")
    assert seen[0] <= upserts <= seen[0] + 2 < 10
    (gid,) = world.cr.groups
    assert len(world.cr.active_emails(gid)) == p.add == 250 * upserts


async def test_a_group_renamed_in_its_source_only_in_case_keeps_its_provider_group(world: World) -> None:
    # An adopted group (policy owned): syncd adds a member, later takes it out again under the new spelling.
    gid = world.cr.add_group("Newsletter", ["manual@example.com"])
    config = world.config(
        [{"name": "Newsletter", "members": ["manual@example.com", "a@example.com"], "targets": ["cr"]}]
    )
    assert pair(await world.run(config), "Newsletter", "cr").add == 1
    renamed = world.config([{"name": "NEWSLETTER", "members": ["manual@example.com"], "targets": ["cr"]}])

    dry = pair(await world.run(renamed, dry_run=True), "NEWSLETTER", "cr")
    assert (dry.status, dry.add, dry.remove) == (PairStatus.PENDING, 0, 1)  # still bound, still knows what it added
    world.clear_logs()
    report = pair(await world.run(renamed), "NEWSLETTER", "cr")
    assert (report.status, report.remove) == (PairStatus.APPLIED, 1)
    assert list(world.cr.groups) == [gid] and world.cr.count(method="POST", path="^/v3/groups$") == 0
    assert world.cr.active_emails(gid) == {"manual@example.com"}
    store = world.store(renamed)
    try:
        binding = store.binding("NEWSLETTER", "cr")
        assert binding is not None and (binding.group, binding.remote_id) == ("NEWSLETTER", str(gid))
        assert not binding.created_by_syncd  # adopted, as before the rename
    finally:
        store.close()


async def test_a_pair_the_state_db_cannot_record_ends_the_pass_only_after_the_others(world: World) -> None:
    world.people(["a@example.com"])
    config = world.config(
        [
            {"name": "Boom", "members": ["a@example.com"], "targets": ["c8"]},
            {"name": "Slow", "members": ["a@example.com"], "targets": ["cr"]},
        ]
    )
    store = world.store(config)  # creates the schema; then the database refuses one pair's result, for real
    store.close()
    db = sqlite3.connect(world.tmp / "state.db")
    db.execute(
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON pair_results WHEN NEW.group_name = 'Boom' "
        "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )
    db.commit()
    db.close()
    world.cr.inject(Fault(status=0, delay=0.5, path="/groups", times=0))  # CleverReach answers slowly

    with pytest.raises(StateError, match="disk I/O error"):
        await world.run(config)
    store = world.store(config)
    try:
        (run,) = store.runs()
        # the slow pair was not abandoned mid-flight: it ran to its end and was recorded, then the run closed
        assert [(p.group, p.status) for p in store.pairs(run.id)] == [("Slow", PairStatus.APPLIED)]
        assert run.outcome == "failure" and "disk I/O error" in run.errors[0]
    finally:
        store.close()
    (gid,) = world.cr.groups
    assert world.cr.active_emails(gid) == {"a@example.com"}


async def test_members_built_in_bulk_are_frozen_out_of_collection_until_the_pass_ends(world: World) -> None:
    """A collection that walks a million members stops the event loop: members built at once are frozen
    (`connectors.base.in_bulk(freeze=True)`), and the pass unfreezes everything when it ends, so no garbage stays
    frozen for good."""
    import gc

    from connectors.base import RemoteMember, in_bulk

    gc.unfreeze()
    with in_bulk(freeze=True):
        made = [RemoteMember(f"m{i}@example.com") for i in range(100)]
    frozen = gc.get_freeze_count()
    assert frozen >= len(made) and gc.isenabled()
    with in_bulk():  # without freeze: nothing more is frozen
        more = [RemoteMember(f"n{i}@example.com") for i in range(100)]
    assert gc.get_freeze_count() == frozen and len(more) == 100
    people = emails(5)
    world.people(people)
    await world.run(world.config([{"name": "Team", "members": people}]))
    assert gc.get_freeze_count() == 0
