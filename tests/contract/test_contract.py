"""One contract every connector keeps, run against each provider's sandbox over HTTP (singer-sdk style), and by
`tests/real/` against a real server (Bitcaster).

A test that does not apply to a provider (no remove endpoint, no reset) checks that the connector says so
in its Capabilities and refuses cleanly, instead of being skipped silently. People come from the harness
(`harness.people`: invented for a sandbox, the ones a real server knows), so a test uses as many as it gets
and splits them where it needs two sets; group names come from `harness.group_name`, unique on a shared
server.
"""

from __future__ import annotations

import pytest

from connectors.base import (
    AuthError,
    ResetKind,
    UnsupportedOperation,
)
from connectors.http import RequestTally, count_requests
from sandboxes._core import Fault
from tests.contract.harness import Harness


async def test_find_group_by_name_and_id(harness: Harness) -> None:
    sandbox = harness.sandbox()
    name = harness.group_name(sandbox, "Contract Find")
    gid = harness.seed_group(sandbox, name)
    harness.seed_group(sandbox, name + " Plus")  # a partial-name match must not be taken for it
    async with harness.connector(sandbox) as c:
        by_name = await c.find_group(name=name)
        assert by_name is not None and by_name.id == gid and by_name.name == name
        by_id = await c.find_group(group_id=gid)
        assert by_id is not None and by_id.id == gid
        assert await c.find_group(name=harness.group_name(sandbox, "No Such Group")) is None


async def test_create_group(harness: Harness) -> None:
    sandbox = harness.sandbox()
    name = harness.group_name(sandbox, "Contract Created")
    async with harness.connector(sandbox) as c:
        if not c.capabilities.can_create_group:
            with pytest.raises(UnsupportedOperation):
                await c.create_group(name)
            assert sandbox.mutating_count == 0
            return
        group = await c.create_group(name)
        assert group.name == name
        assert sandbox.mutating_count == 1
        found = await c.find_group(name=name)
        assert found is not None and found.id == group.id
        assert harness.members(sandbox, group.id) == set()


async def test_add_then_read(harness: Harness) -> None:
    sandbox = harness.sandbox()
    people = harness.people(5)
    harness.seed_people(sandbox, people)
    gid = harness.seed_group(sandbox, harness.group_name(sandbox, "Contract Add"))
    async with harness.connector(sandbox) as c:
        group = await c.find_group(group_id=gid)
        assert group is not None
        result = await c.add_members(group, [harness.contact(e) for e in people])
        assert sorted(result.done) == sorted(people) and not result.rejected
        assert harness.members(sandbox, gid) == set(people)
        read = await c.read_members(group)
        assert sorted(m.key for m in read) == sorted(people)


async def test_add_keeps_spelling_and_matches_case_insensitively(harness: Harness) -> None:
    sandbox = harness.sandbox()
    person = harness.people(1, prefix="Mixed.Case", domain="Example.com")[0]  # as the provider spells it
    harness.seed_people(sandbox, [person])
    gid = harness.seed_group(sandbox, harness.group_name(sandbox, "Contract Case"))
    async with harness.connector(sandbox) as c:
        group = await c.find_group(group_id=gid)
        assert group is not None
        result = await c.add_members(group, [harness.contact(person)])
        assert not result.rejected
        read = await c.read_members(group)
        assert [m.key for m in read] == [person.lower()]


async def test_remove(harness: Harness) -> None:
    sandbox = harness.sandbox()
    people = harness.people(4)
    gid = harness.seed_group(sandbox, harness.group_name(sandbox, "Contract Remove"), people)
    async with harness.connector(sandbox) as c:
        group = await c.find_group(group_id=gid)
        assert group is not None
        members = {m.key: m for m in await c.read_members(group)}
        gone = [members[people[0]], members[people[1]]]
        if not c.capabilities.can_remove:
            with pytest.raises(UnsupportedOperation):
                await c.remove_members(group, gone)
            assert sandbox.mutating_count == 0
            return
        result = await c.remove_members(group, gone)
        assert sorted(result.done) == sorted(people[:2])
        assert harness.members(sandbox, gid) == set(people[2:])


async def test_reset(harness: Harness) -> None:
    sandbox = harness.sandbox()
    people = harness.people(6)
    before, after = people[: len(people) // 2], people[len(people) // 2 :]
    harness.seed_people(sandbox, after)
    gid = harness.seed_group(sandbox, harness.group_name(sandbox, "Contract Reset"), before + after[:1])
    async with harness.connector(sandbox) as c:
        group = await c.find_group(group_id=gid)
        assert group is not None
        if c.capabilities.reset is ResetKind.NONE:
            with pytest.raises(UnsupportedOperation):
                await c.reset_members(group, [harness.contact(e) for e in after])
            assert sandbox.mutating_count == 0
            return
        sandbox.clear_log()
        await c.reset_members(group, [harness.contact(e) for e in after])
        assert harness.members(sandbox, gid) == set(after)
        if c.capabilities.reset is ResetKind.ATOMIC:
            assert sandbox.mutating_count == 1


async def test_idempotent_add_and_remove(harness: Harness) -> None:
    sandbox = harness.sandbox()
    people = harness.people(3)
    harness.seed_people(sandbox, people)
    gid = harness.seed_group(sandbox, harness.group_name(sandbox, "Contract Idem"), people[:1])
    async with harness.connector(sandbox) as c:
        group = await c.find_group(group_id=gid)
        assert group is not None
        first = await c.add_members(group, [harness.contact(e) for e in people])
        second = await c.add_members(group, [harness.contact(e) for e in people])
        assert not first.rejected and not second.rejected
        assert harness.members(sandbox, gid) == set(people)
        if c.capabilities.can_remove:
            members = {m.key: m for m in await c.read_members(group)}
            target = [members[people[2]]]
            await c.remove_members(group, target)
            again = await c.remove_members(group, target)  # already gone: still a success
            assert not again.rejected
            assert harness.members(sandbox, gid) == set(people[:2])


async def test_one_full_batch_is_one_write(harness: Harness) -> None:
    """An add of exactly `max_add_batch` known people costs exactly one mutating request per batch (a batch as
    large as the people the provider has, where it has fewer)."""
    sandbox = harness.sandbox()
    async with harness.connector(sandbox) as c0:
        caps = c0.capabilities
    people = harness.people(min(caps.max_add_batch, 1000))
    size = len(people)
    harness.seed_people(sandbox, people)
    gid = harness.seed_group(sandbox, harness.group_name(sandbox, "Contract Batch"))
    async with harness.connector(sandbox, **({} if size == caps.max_add_batch else {"batch_size": size})) as c:
        group = await c.find_group(group_id=gid)
        assert group is not None
        await c.read_members(group)  # warm any directory the connector reads first
        sandbox.clear_log()
        result = await c.add_members(group, [harness.contact(e) for e in people])
        assert len(result.done) == size
        assert sandbox.mutating_count == 1


async def test_batch_size_setting_is_capped(harness: Harness) -> None:
    """A batch_size above the API's cap is the cap (the default batch may be smaller than the cap)."""
    sandbox = harness.sandbox()
    async with (
        harness.connector(sandbox, batch_size=10**9) as c,
        harness.connector(sandbox, batch_size=1) as small,
        harness.connector(sandbox) as default,
        harness.connector(sandbox, batch_size=10**8) as capped,
    ):
        cap = c.capabilities.max_add_batch
        assert default.capabilities.max_add_batch <= cap == capped.capabilities.max_add_batch < 10**8
        assert small.capabilities.max_add_batch == 1 and small.capabilities.max_remove_batch == 1


@pytest.mark.parametrize("extra", [0, 1])
async def test_pagination_at_the_cap(harness: Harness, extra: int) -> None:
    if harness.page_cap is None:
        pytest.skip(f"{harness.type} reads a group's members in one unpaginated request (documented)")
    n = harness.page_cap + extra
    sandbox = harness.sandbox()
    people = harness.people(n)
    if len(people) < n:
        pytest.skip(f"the {harness.type} server knows {len(people)} people, fewer than a page")
    gid = harness.seed_group(sandbox, harness.group_name(sandbox, "Contract Pages"), people)
    async with harness.connector(sandbox) as c:
        group = await c.find_group(group_id=gid)
        assert group is not None
        sandbox.clear_log()
        with count_requests() as tally:
            read = await c.read_members(group)
        keys = [m.key for m in read]
        assert len(keys) == len(set(keys)) == n
        assert set(keys) == set(people)
        expected = harness.read_requests(n)
        if expected is not None:
            assert tally.read == expected == sandbox.count()


async def test_rejects_do_not_sink_the_batch(harness: Harness) -> None:
    sandbox = harness.sandbox()
    good = harness.people(6)
    harness.seed_people(sandbox, good)
    bad = harness.bad_contacts(sandbox)
    if not bad:
        pytest.skip(f"{harness.type} accepts any valid email")
    gid = harness.seed_group(sandbox, harness.group_name(sandbox, "Contract Rejects"))
    async with harness.connector(sandbox) as c:
        group = await c.find_group(group_id=gid)
        assert group is not None
        await c.read_members(group)
        half = len(good) // 2
        batch = [harness.contact(e) for e in good[:half]] + bad + [harness.contact(e) for e in good[half:]]
        result = await c.add_members(group, batch)
        assert sorted(r.email.lower() for r in result.rejected) == sorted(b.email.lower() for b in bad)
        assert all(r.reason for r in result.rejected)
        assert harness.members(sandbox, gid) == set(good)


@pytest.mark.parametrize("status", [429, 503])
async def test_retries_survive_rate_limits_and_server_errors(harness: Harness, status: int) -> None:
    sandbox = harness.sandbox()
    people = harness.people(2)
    harness.seed_people(sandbox, people)
    gid = harness.seed_group(sandbox, harness.group_name(sandbox, "Contract Retry"))
    async with harness.connector(sandbox) as c:
        group = await c.find_group(group_id=gid)
        assert group is not None
        await c.read_members(group)
        sandbox.inject(Fault(status=status, retry_after=0, times=2))
        result = await c.add_members(group, [harness.contact(e) for e in people])
        assert sorted(result.done) == people
        assert harness.members(sandbox, gid) == set(people)
        assert sum(1 for r in sandbox.requests if r.status == status) == 2


async def test_bad_credentials_are_fatal(harness: Harness) -> None:
    sandbox = harness.sandbox()
    name = harness.group_name(sandbox, "Contract Auth")
    harness.seed_group(sandbox, name)
    async with harness.connector(sandbox, bad_credentials=True) as c:
        with pytest.raises(AuthError):
            await c.find_group(name=name)
        assert sandbox.mutating_count == 0


async def test_token_expiring_mid_run_is_refreshed(harness: Harness) -> None:
    sandbox = harness.sandbox()
    people = harness.people(2)
    harness.seed_people(sandbox, people)
    gid = harness.seed_group(sandbox, harness.group_name(sandbox, "Contract Token"))
    async with harness.connector(sandbox) as c:
        group = await c.find_group(group_id=gid)
        assert group is not None
        if not harness.expire_tokens(sandbox):
            pytest.skip(f"{harness.type} uses a static key")
        tally = RequestTally()
        with count_requests(tally):
            result = await c.add_members(group, [harness.contact(e) for e in people])
        assert not result.rejected
        assert harness.members(sandbox, gid) == set(people)
