"""Giftronaut specifics the shared contract does not pin down: what resolving, creating and adding people costs
(exact request counts), idempotent creates under failures, stale ids, rejects, OAuth, pacing and error shapes.
Everything runs over HTTP against `GiftronautSandbox` (httpx.ASGITransport); nothing of ours is patched.

Request counts exclude the OAuth token request (like syncd's per-pair tally does) unless a test says so."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import ValidationError

from connectors.base import (
    AddPreparer,
    AuthError,
    Connector,
    Contact,
    FatalError,
    MemberKeyKind,
    MemoryRecipientCache,
    NotFound,
    RateLimited,
    RemoteGroup,
    RemoteMember,
    ResetKind,
    TransientError,
    UnsupportedOperation,
)
from connectors.giftronaut import (
    CAPABILITIES,
    PACING,
    GiftronautConnector,
    GiftronautSettings,
    GroupExists,
    GroupNotFound,
    IdempotencyConflict,
    InvalidRequest,
    MemberNotFound,
    RecipientExists,
    RecipientNotFound,
    classify,
)
from connectors.http import RequestTally, TokenBucket, count_requests
from connectors.settings import BuildContext
from sandboxes._core import Fault, Mount, RateLimit, Recorded
from sandboxes.giftronaut import DEFAULT_CLIENTS, MAX_TEXT, GiftronautSandbox
from tests.contract.harness_giftronaut import CLIENT_SECRET, HARNESS

BASE = "http://127.0.0.1/api/v1"
RECIPIENTS = r"^/api/v1/recipients$"
MEMBERS = r"/members$"
TOKEN = r"^/oauth2/token$"
IDEMPOTENCY = "X-Idempotency-Key"


# ---------------------------------------------------------------------------------------------- helpers


def connect(
    sb: GiftronautSandbox, cache: MemoryRecipientCache | None = None, app: Any = None, **overrides: Any
) -> GiftronautConnector:
    ctx = BuildContext(
        transport=httpx.ASGITransport(app=app or sb),
        cache=cache if cache is not None else MemoryRecipientCache(),
    )
    c = HARNESS.connector(sb, ctx=ctx, **overrides)
    assert isinstance(c, GiftronautConnector)
    return c


def people(n: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i:05d}@example.com" for i in range(n)]


def contacts(emails: list[str]) -> list[Contact]:
    return [Contact(email=e, first_name="Ann", last_name="Lee") for e in emails]


def warm(sb: GiftronautSandbox, emails: list[str] | None = None) -> MemoryRecipientCache:
    """A cache that knows these recipients (default: all), as syncd's state DB does after a pass."""
    cache = MemoryRecipientCache()
    wanted = None if emails is None else {e.lower() for e in emails}
    cache.put_many(
        {r["email"].lower(): rid for rid, r in sb.recipients.items() if wanted is None or r["email"] in wanted}
    )
    return cache


def api(sb: GiftronautSandbox) -> list[Recorded]:
    """Requests to the API (the token endpoint left out)."""
    return [r for r in sb.requests if r.path.startswith("/api/v1/")]


def searches(sb: GiftronautSandbox) -> int:
    return sum(1 for r in sb.requests if r.path == "/api/v1/recipients" and "searchKeyword" in parse_qs(r.query))


def directory_pages(sb: GiftronautSandbox) -> int:
    return sum(
        1
        for r in sb.requests
        if r.method == "GET" and r.path == "/api/v1/recipients" and "searchKeyword" not in parse_qs(r.query)
    )


def creates(sb: GiftronautSandbox) -> int:
    return sb.count(method="POST", path=RECIPIENTS)


def adds(sb: GiftronautSandbox) -> int:
    return sb.count(method="POST", path=MEMBERS)


async def apply_adds(c: GiftronautConnector, group: RemoteGroup, batch: list[Contact], *, prepare: bool = True) -> None:
    """What syncd's applier does: prepare once, then one op per member, run concurrently."""
    if prepare:
        await c.prepare_adds(batch)
    results = await asyncio.gather(*(c.add_members(group, [contact]) for contact in batch))
    assert all(not r.rejected and len(r.done) == 1 for r in results)


def group_of(sb: GiftronautSandbox, name: str = "G", emails: list[str] | None = None) -> RemoteGroup:
    return RemoteGroup(sb.add_group(name, emails or []), name)


# ------------------------------------------------------------------------------------- cost of adding


async def test_n_new_members_cost_n_creates_and_n_adds() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb)
    async with connect(sb) as c:
        new = people(7)
        with count_requests() as tally:
            await apply_adds(c, g, contacts(new))
        # The directory is empty: its first page (total 0) resolves all 7 as absent; then 7 creates, 7 adds.
        assert directory_pages(sb) == 1 and searches(sb) == 0
        assert creates(sb) == 7 and adds(sb) == 7
        assert len(api(sb)) == 15 and sb.token_requests == 1
        assert tally.as_dict() == {"read": 1, "write": 14}
        assert sb.recipient_count() == 7 and sb.group_emails(g.id) == set(new)
        created = [json.loads(r.body) for r in sb.requests if r.method == "POST" and r.path == "/api/v1/recipients"]
        assert sorted(b["email"] for b in created) == new
        assert all(b["firstName"] == "Ann" and b["lastName"] == "Lee" for b in created)


async def test_three_unknown_among_5000_are_searched() -> None:
    sb = HARNESS.sandbox()
    directory = people(5000, "d")
    for e in directory:
        sb.add_recipient(e)
    extra = ["known.elsewhere@example.com", "Also.Known@example.com"]  # exist, but the cache never saw them
    for e in extra:
        sb.add_recipient(e)
    g = group_of(sb)
    async with connect(sb, cache=warm(sb, directory)) as c:  # the cache (5000 entries) says the directory has 50+ pages
        batch = contacts([*extra, "brand.new@example.com"])
        await apply_adds(c, g, batch)
        assert searches(sb) == 3 and directory_pages(sb) == 0
        assert creates(sb) == 1 and adds(sb) == 3
        assert len(api(sb)) == 7
        assert sb.recipient_count() == 5003


async def test_without_any_hint_the_first_directory_page_tells_the_size() -> None:
    sb = HARNESS.sandbox()
    for e in people(5000, "d"):
        sb.add_recipient(e)
    sb.add_recipient("late@example.com")  # not on page 1
    g = group_of(sb)
    async with connect(sb) as c:  # cold cache, no group read: nothing says how big the directory is
        await apply_adds(c, g, contacts(["late@example.com", "new1@example.com", "new2@example.com"]))
        # page 1 (total 5001: 51 pages) costs 1; then 3 searches instead of 50 more pages
        assert directory_pages(sb) == 1 and searches(sb) == 3
        assert creates(sb) == 2 and adds(sb) == 3


async def test_a_group_read_is_a_size_hint() -> None:
    sb = HARNESS.sandbox()
    members = people(2000, "m")
    g = group_of(sb, "Big", members)
    async with connect(sb) as c:  # cold cache
        assert len(await c.read_members(g)) == 2000  # 20 pages; the directory has at least 2000 recipients
        sb.clear_log()
        await apply_adds(c, g, contacts(["x1@example.com", "x2@example.com", "x3@example.com"]))
        assert searches(sb) == 3 and directory_pages(sb) == 0
        assert creates(sb) == 3 and adds(sb) == 3


async def test_500_unknown_among_300_read_the_directory() -> None:
    sb = HARNESS.sandbox()
    existing = people(300, "e")
    for e in existing:
        sb.add_recipient(e)
    g = group_of(sb)
    async with connect(sb) as c:
        batch = contacts(existing + people(200, "n"))
        with count_requests() as tally:
            await apply_adds(c, g, batch)
        # page 1 says total 300, so 2 more pages beat 400 searches; then 200 creates and 500 adds
        assert directory_pages(sb) == 3 and searches(sb) == 0
        assert creates(sb) == 200 and adds(sb) == 500
        assert tally.as_dict() == {"read": 3, "write": 700}
        assert sb.recipient_count() == 500 and len(sb.group_emails(g.id)) == 500


async def test_with_a_warm_cache_a_pass_resolves_nothing() -> None:
    sb = HARNESS.sandbox()
    cache = MemoryRecipientCache()
    first, second = group_of(sb, "A"), group_of(sb, "B")
    batch = contacts(people(5))
    async with connect(sb, cache=cache) as c1:
        await apply_adds(c1, first, batch)
    sb.clear_log()
    async with connect(sb, cache=cache) as c2:  # the next pass: syncd's state DB kept the ids
        await apply_adds(c2, second, batch)
        assert sb.count(path=RECIPIENTS) == 0  # no GET /recipients, no create
        assert len(api(sb)) == 5 == adds(sb)


async def test_member_reads_fill_the_cache() -> None:
    sb = HARNESS.sandbox()
    emails = people(5)
    source = group_of(sb, "Source", emails)
    target = group_of(sb, "Target")
    cache = MemoryRecipientCache()
    async with connect(sb, cache=cache) as c:
        members = await c.read_members(source)
        assert {m.id for m in members} == {sb.recipient_id(e) for e in emails}
        assert cache.ids == {e: sb.recipient_id(e) for e in emails}
        sb.clear_log()
        await apply_adds(c, target, contacts(emails))
        assert sb.count(path=RECIPIENTS) == 0 and len(api(sb)) == 5


async def test_without_prepare_concurrent_adds_resolve_together_and_create_once() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb)
    async with connect(sb) as c:
        new = people(50)
        await apply_adds(c, g, contacts(new), prepare=False)
        # The first add resolves its email alone (1 search); the 49 that arrived meanwhile are resolved
        # together by the next lock holder: page 1 of the directory (total <= 1) settles them all.
        assert searches(sb) + directory_pages(sb) == 2
        assert creates(sb) == 50 and adds(sb) == 50
        assert sb.recipient_count() == 50 and sb.group_emails(g.id) == set(new)


async def test_one_person_added_to_many_groups_at_once_is_created_once() -> None:
    sb = HARNESS.sandbox()
    groups = [group_of(sb, f"G{i}") for i in range(5)]
    async with connect(sb) as c:
        person = contacts(["shared@example.com"])
        await c.prepare_adds(person)
        await asyncio.gather(*(c.add_members(g, person) for g in groups))
        assert creates(sb) == 1 and adds(sb) == 5 and sb.recipient_count() == 1


# --------------------------------------------------------------------------------- idempotent creates


async def test_recipient_create_retried_after_a_503_before_processing() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb)
    async with connect(sb) as c:
        await c.prepare_adds(contacts(["a@example.com"]))
        sb.inject(Fault(status=503, method="POST", path=RECIPIENTS))
        result = await c.add_members(g, contacts(["a@example.com"]))
        assert result.done == ("a@example.com",)
        assert [r.status for r in sb.requests if r.path == "/api/v1/recipients" and r.method == "POST"] == [503, 201]
        assert sb.recipient_count() == 1 and sb.replays == 0


@pytest.mark.parametrize("fault", [Fault(status=503), Fault(drop=True)], ids=["503", "dropped"])
async def test_recipient_create_whose_answer_was_lost_is_replayed_not_duplicated(fault: Fault) -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb)
    async with connect(sb) as c:
        await c.prepare_adds(contacts(["a@example.com"]))
        fault.method, fault.path = "POST", RECIPIENTS
        sb.inject_after(fault)  # the recipient is created, the answer is lost
        result = await c.add_members(g, contacts(["a@example.com"]))
        assert result.done == ("a@example.com",)
        # the resend carried the same idempotency key: answered 200 with the first answer, nothing created
        assert [r.status for r in sb.requests if r.path == "/api/v1/recipients" and r.method == "POST"] == [201, 200]
        assert sb.replays == 1 and sb.recipient_count() == 1
        assert sb.group_emails(g.id) == {"a@example.com"}


@pytest.mark.parametrize("how", ["before-processing", "after-processing", "lost"])
async def test_group_create_retried_creates_one_group(how: str) -> None:
    sb = HARNESS.sandbox()
    async with connect(sb) as c:
        fault = Fault(status=503, method="POST", path=r"/recipient-groups$")
        if how == "after-processing":
            sb.inject_after(fault)
        elif how == "lost":
            sb.inject(Fault(lost=True, method="POST", path=r"/recipient-groups$"))  # served, answer dropped
        else:
            sb.inject(fault)
        group = await c.create_group("Launch Team")
        assert len(sb.groups) == 1 and int(group.id) in sb.groups and group.name == "Launch Team"
        posts = [r for r in sb.requests if r.method == "POST" and r.path == "/api/v1/recipient-groups"]
        assert [r.status for r in posts] == [
            503 if how == "before-processing" else 201,
            201 if how == "before-processing" else 200,
        ]
        assert posts[0].body == posts[1].body
        assert sb.replays == (0 if how == "before-processing" else 1)


async def test_recipient_create_whose_answer_was_lost_leaves_one_recipient() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb)
    async with connect(sb) as c:
        await c.prepare_adds(contacts(["a@example.com"]))
        sb.inject(Fault(lost=True, method="POST", path=RECIPIENTS))
        result = await c.add_members(g, contacts(["a@example.com"]))
        assert result.done == ("a@example.com",) and not result.rejected
        assert [r.status for r in sb.requests if r.path == "/api/v1/recipients" and r.method == "POST"] == [201, 200]
        assert sb.recipient_count() == 1 and sb.replays == 1
        assert sb.group_emails(g.id) == {"a@example.com"}


async def test_a_group_create_lost_in_a_pass_that_died_is_found_by_its_name_next_pass() -> None:
    sb = HARNESS.sandbox()
    async with connect(sb, retry={"backoff_base": 0, "max_retries": 0}) as c1:
        sb.inject(Fault(lost=True, method="POST", path=r"/recipient-groups$"))
        with pytest.raises(TransientError):
            await c1.create_group("Launch Team")
    (gid,) = sb.groups
    sb.clear_log()
    async with connect(sb) as c2:  # a new pass: a new idempotency key, so no replay; the name is taken
        group = await c2.create_group("Launch Team")
        assert group.id == str(gid) and group.name == "Launch Team" and len(sb.groups) == 1
        assert [(r.method, r.status) for r in api(sb)] == [("POST", 409), ("GET", 200)]


async def test_a_name_taken_by_a_group_spelled_otherwise_is_an_error_not_a_binding() -> None:
    sb = HARNESS.sandbox()
    sb.add_group("launch team")
    async with connect(sb) as c:
        with pytest.raises(FatalError, match="no group is named exactly so") as caught:
            await c.create_group("Launch Team")
        assert caught.value.status == 409 and "GROUP_EXISTS" in caught.value.message
        assert len(sb.groups) == 1


async def test_group_ids_are_integers_on_the_wire_and_strings_in_syncd() -> None:
    sb = HARNESS.sandbox()
    sb.add_recipient("a@example.com")
    async with connect(sb, cache=warm(sb)) as c:
        group = await c.create_group("Team")
        created = next(r for r in sb.requests if r.method == "POST" and r.path == "/api/v1/recipient-groups")
        assert created.status == 201
        raw = await c.api.json("GET", f"recipient-groups/{group.id}")
        assert isinstance(raw["groupId"], int) and group.id == str(raw["groupId"])
        bound = await c.find_group(group_id=group.id)  # as syncd's binding hands it back: a string
        assert bound == RemoteGroup(group.id, "Team", 0)
        assert (await c.add_members(bound, contacts(["a@example.com"]))).done == ("a@example.com",)
        members = await c.read_members(bound)
        assert (await c.remove_members(bound, members)).done == ("a@example.com",)
        paths = {r.path for r in api(sb)}
        assert f"/api/v1/recipient-groups/{group.id}/members" in paths
        assert await c.find_group(group_id="RG-1001") is None  # not a number: no group
        assert await c.find_group(group_id=" " + group.id + " ") == bound


async def test_idempotency_keys_live_for_one_pass_only() -> None:
    sb = HARNESS.sandbox()
    async with connect(sb) as c1:
        first = await c1.create_group("Launch Team")
        sb.delete_group(first.id)
        # the same instance re-sending the same create gets the replay (one pass = one key per name) ...
        assert (await c1.create_group("Launch Team")).id == first.id and sb.replays == 1
    async with connect(sb) as c2:
        # ... a later pass deliberately re-creating the deleted group gets a new one
        second = await c2.create_group("Launch Team")
        assert second.id != first.id and int(second.id) in sb.groups


async def test_recipient_that_appeared_meanwhile_is_found_on_409() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb)
    async with connect(sb) as c:
        await c.prepare_adds(contacts(["late@example.com"]))  # the directory (empty) says: absent
        rid = sb.add_recipient("Late@Example.com")  # someone creates it before we do
        sb.clear_log()
        result = await c.add_members(g, contacts(["late@example.com"]))
        assert result.done == ("late@example.com",) and not result.rejected
        assert [r.status for r in api(sb)] == [409, 200, 201]  # create, search, add
        assert creates(sb) == 1 and searches(sb) == 1 and adds(sb) == 1
        assert sb.recipient_count() == 1 and sb.group_emails(g.id) == {"Late@Example.com"}
        assert c.cache.get_many(["late@example.com"]) == {"late@example.com": rid}


@pytest.mark.parametrize("fresh_cache", [False, True], ids=["shared-cache", "fresh-cache"])
async def test_killed_and_restarted_sync_leaves_no_duplicates(fresh_cache: bool) -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb)
    cache = MemoryRecipientCache()
    batch = contacts(people(10))
    async with connect(sb, cache=cache, retry={"backoff_base": 0, "max_retries": 0}) as c1:
        # the 4th create lands, but the connection drops and this pass dies with it
        sb.inject_after(Fault(drop=True, method="POST", path=RECIPIENTS, skip=3))
        await c1.prepare_adds(batch)
        for contact in batch[:3]:
            await c1.add_members(g, [contact])
        with pytest.raises(TransientError):
            await c1.add_members(g, [batch[3]])
    assert sb.recipient_count() == 4 and len(sb.group_emails(g.id)) == 3
    sb.clear_log()

    async with connect(sb, cache=MemoryRecipientCache() if fresh_cache else cache) as c2:
        # the next pass reads the group, plans the 7 missing members, and adds them
        members = await c2.read_members(g)
        assert len(members) == 3
        todo = [c for c in batch if c.key not in {m.key for m in members}]
        await apply_adds(c2, g, todo)
        # 7 unknown > the 1 page 4 known recipients suggest: page 1 (total 4) finds the orphan; no search
        assert directory_pages(sb) == 1 and searches(sb) == 0
        assert creates(sb) == 6 and adds(sb) == 7
        assert sb.recipient_count() == 10 and sb.group_emails(g.id) == {c.email for c in batch}


# ------------------------------------------------------------------------------ stale ids and rejects


async def test_stale_cached_id_is_forgotten_and_resolved_again_once() -> None:
    sb = HARNESS.sandbox()
    rid = sb.add_recipient("a@example.com")
    g = group_of(sb)
    cache = MemoryRecipientCache()
    cache.put_many({"a@example.com": "RE-00000000"})  # an id Giftronaut does not know
    async with connect(sb, cache=cache) as c:
        result = await c.add_members(g, contacts(["a@example.com"]))
        assert result.done == ("a@example.com",)
        assert [r.status for r in api(sb)] == [404, 200, 201]  # add (stale), search, add
        assert creates(sb) == 0 and cache.ids == {"a@example.com": rid}


async def test_deleted_recipient_is_created_again() -> None:
    sb = HARNESS.sandbox()
    old = sb.add_recipient("a@example.com")
    cache = warm(sb)
    sb.delete_recipient("a@example.com")
    g = group_of(sb)
    async with connect(sb, cache=cache) as c:
        result = await c.add_members(g, contacts(["a@example.com"]))
        assert result.done == ("a@example.com",)
        assert [(r.method, r.status) for r in api(sb)] == [("POST", 404), ("GET", 200), ("POST", 201), ("POST", 201)]
        new = sb.recipient_id("a@example.com")
        assert new is not None and new != old and cache.ids == {"a@example.com": new}


async def test_validation_error_rejects_the_contact_permanently_and_only_once_per_pass() -> None:
    sb = HARNESS.sandbox()
    a, b = group_of(sb, "A"), group_of(sb, "B")
    good = contacts(people(3))
    bad = Contact("long.name@example.com", first_name="N" * (MAX_TEXT + 1))
    async with connect(sb) as c:
        await c.prepare_adds([*good, bad])
        results = await asyncio.gather(*(c.add_members(a, [x]) for x in [*good, bad]))
        (reject,) = [r for res in results for r in res.rejected]
        assert reject.email == bad.email and reject.permanent and reject.code == "invalid_recipient"
        assert "firstName must be at most" in reject.reason and "HTTP" not in reject.reason
        again = await c.add_members(b, [bad])  # another group, same pass: not sent again
        assert again.rejected == (reject,)
        assert creates(sb) == 4 and sb.group_emails(a.id) == {x.email for x in good}


async def test_an_uncoded_400_is_a_reject_that_is_not_permanent() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb)
    async with connect(sb) as c:
        sb.inject(Fault(status=400, body="Bad Request", method="POST", path=RECIPIENTS))
        result = await c.add_members(g, contacts(["a@example.com"]))
        (reject,) = result.rejected
        assert not reject.permanent and reject.code == "invalid_recipient" and "Bad Request" in reject.reason


async def test_add_to_a_missing_group_raises_not_found() -> None:
    sb = HARNESS.sandbox()
    sb.add_recipient("a@example.com")
    async with connect(sb, cache=warm(sb)) as c:
        with pytest.raises(GroupNotFound):
            await c.add_members(RemoteGroup("999999", "Gone"), contacts(["a@example.com"]))
        with pytest.raises(NotFound):
            await c.read_members(RemoteGroup("999999", "Gone"))


async def test_already_a_member_is_done() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb, "G", ["a@example.com"])
    async with connect(sb, cache=warm(sb)) as c:
        result = await c.add_members(g, contacts(["A@example.com"]))
        assert result.done == ("a@example.com",) and [r.status for r in api(sb)] == [200]


# -------------------------------------------------------------------------------------------- removes


async def test_remove_is_one_delete_per_member_and_absent_is_done() -> None:
    sb = HARNESS.sandbox()
    emails = people(3)
    g = group_of(sb, "G", emails)
    async with connect(sb) as c:
        members = {m.key: m for m in await c.read_members(g)}
        sb.clear_log()
        gone = [members[emails[0]], members[emails[1]]]
        result = await c.remove_members(g, gone)
        assert sorted(result.done) == emails[:2] and sb.group_emails(g.id) == {emails[2]}
        assert [(r.method, r.status) for r in api(sb)] == [("DELETE", 204)] * 2
        again = await c.remove_members(g, gone[:1])  # 404 MEMBER_NOT_FOUND: already gone
        assert again.done == (emails[0],) and api(sb)[-1].status == 404
        with pytest.raises(GroupNotFound):
            await c.remove_members(RemoteGroup("999999", "Gone"), gone[:1])


async def test_remove_of_a_member_known_only_by_email() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb, "G", ["a@example.com"])
    async with connect(sb) as c:
        result = await c.remove_members(g, [RemoteMember("a@example.com"), RemoteMember("nobody@example.com")])
        assert sorted(result.done) == ["a@example.com", "nobody@example.com"]
        assert searches(sb) == 2 and sb.count(method="DELETE") == 1  # nobody is no recipient: nothing to delete
        assert sb.group_emails(g.id) == set()


async def test_reset_is_unsupported_and_sends_nothing() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb)
    async with connect(sb) as c:
        with pytest.raises(UnsupportedOperation):
            await c.reset_members(g, contacts(["a@example.com"]))
        assert sb.requests == []


# ------------------------------------------------------------------------------------- groups, reads


@pytest.mark.parametrize(("n", "pages"), [(0, 1), (100, 1), (101, 2), (250, 3)])
async def test_member_reads_page_by_total(n: int, pages: int) -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb, "G", people(n))
    async with connect(sb) as c:
        with count_requests() as tally:
            assert len(await c.read_members(g)) == n
        assert tally.read == pages == len(api(sb))
        assert sorted(parse_qs(r.query)["page"][0] for r in api(sb)) == sorted(str(p) for p in range(1, pages + 1))
        assert all(parse_qs(r.query)["pageSize"] == ["100"] for r in api(sb))


async def test_find_group_by_exact_name_across_pages_and_by_id() -> None:
    sb = HARNESS.sandbox()
    for i in range(150):
        sb.add_group(f"Team {i:03d}")
    gid = sb.add_group("Team")
    async with connect(sb) as c:
        found = await c.find_group(name="Team")
        assert found is not None and found.id == gid and found.member_count == 0
        assert len(api(sb)) == 2  # 151 partial matches: two pages of 100
        assert await c.find_group(name="team") is None  # exact, case and all
        by_id = await c.find_group(group_id=gid)
        assert by_id is not None and by_id.name == "Team"
        assert await c.find_group(group_id="999999") is None
        fallback = await c.find_group(group_id="999999", name="Team")
        assert fallback is not None and fallback.id == gid
        with pytest.raises(ValueError, match="unique"):
            sb.add_group("Team")  # names are unique (vendor docs) ...
        sb._new_group("Team")  # ... so only a server breaking that rule could list two: no guess then
        with pytest.raises(FatalError, match="bind one by group_id"):
            await c.find_group(name="Team")


async def test_create_group_sends_an_idempotency_key_and_a_request_id() -> None:
    sb = HARNESS.sandbox()
    seen: list[httpx.Request] = []

    async def spy(request: httpx.Request) -> None:
        seen.append(request)

    async with connect(sb) as c:
        c.api.client.event_hooks["request"].append(spy)
        group = await c.create_group("Launch Team")
        post = next(r for r in seen if r.url.path.endswith("/recipient-groups"))
        key = post.headers["X-Idempotency-Key"]
        assert key.startswith("syncd-") and "Launch" not in key and len(key) <= 128
        assert json.loads(post.content) == {"groupName": "Launch Team"}
        assert all(uuid.UUID(r.headers["X-Request-Id"]).version == 4 for r in seen)
        assert group.name == "Launch Team" and group.id == str(next(iter(sb.groups)))
        await c.prepare_adds(contacts(["a@example.com"]))
        await c.add_members(group, contacts(["a@example.com"]))
        keys = [r.headers[IDEMPOTENCY] for r in seen if IDEMPOTENCY in r.headers]
        assert len(keys) == 2 and all(len(k) <= 128 for k in keys)


# ---------------------------------------------------------------------------------------------- OAuth


async def test_token_is_fetched_once_with_the_scopes_and_reused() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb, "G", people(3))
    async with connect(sb) as c:
        for _ in range(3):
            await c.read_members(g)
        assert sb.token_requests == 1
        form = parse_qs(next(r for r in sb.requests if r.path == "/oauth2/token").body.decode())
        assert form["grant_type"] == ["client_credentials"]
        assert form["scope"] == ["recipients.read recipients.write"]


async def test_token_is_refreshed_once_on_401() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb, "G", people(3))
    async with connect(sb) as c:
        await c.read_members(g)
        sb.revoke_tokens()
        assert len(await c.read_members(g)) == 3
        assert sb.token_requests == 2
        assert [r.status for r in api(sb)] == [200, 401, 200]


async def test_bad_client_is_an_auth_error_without_the_secret() -> None:
    sb = HARNESS.sandbox()
    async with connect(sb, client_secret="wrong-secret-value") as c:
        with pytest.raises(AuthError) as caught:
            await c.find_group(name="Anything")
        assert "wrong-secret-value" not in str(caught.value)
        assert api(sb) == [] and sb.token_requests == 1


async def test_token_url_is_derived_through_a_mounted_sandbox() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb, "G", ["a@example.com"])
    app = Mount({"giftronaut": sb})
    async with connect(sb, app=app, base_url="http://127.0.0.1/giftronaut/api/v1") as c:
        assert [m.email for m in await c.read_members(g)] == ["a@example.com"]
        assert sb.token_requests == 1


# --------------------------------------------------------------------------------------------- pacing


US = 1e6  # virtual clock units per second


def virtual_time() -> tuple[Callable[[], float], Callable[[float], Awaitable[None]]]:
    """A clock that moves only when someone sleeps, counting whole microseconds: every time and difference is
    then exact, and a window boundary (all these tests are about) is not blurred by float rounding. Buckets
    and windows on it take rates per microsecond and windows in microseconds."""
    now = [0]

    def clock() -> float:
        return float(now[0])

    async def sleep(units: float) -> None:
        now[0] += max(0, round(units))
        await asyncio.sleep(0)

    return clock, sleep


def busiest_minute(starts: list[float]) -> int:
    """The most requests started in any 60 s window [t, t + 60 s)."""
    return max(sum(1 for s in starts[i:] if s < t + 60 * US) for i, t in enumerate(starts))


@pytest.mark.parametrize(("burst", "busiest", "refused"), [(PACING.burst, 300, 0), (5, 304, 4)])
async def test_pacing_stays_within_300_per_minute_only_without_a_burst(burst: int, busiest: int, refused: int) -> None:
    """The default pacing never starts more than 300 requests in any minute, so a sliding 300/60 s window never
    refuses one; a burst of 5 would start 4 too many in the first minute (and earn 429s)."""
    clock, sleep = virtual_time()
    bucket = TokenBucket(PACING.rate / US, burst, clock=clock, sleep=sleep)
    window = RateLimit(300, 60 * US, clock=clock)
    starts: list[float] = []
    refusals = 0
    for _ in range(900):
        await bucket.acquire()
        starts.append(clock())
        refusals += not window.hit()[0]
    assert busiest_minute(starts[:400]) == busiest and refusals == refused
    assert starts[-1] == pytest.approx((900 - burst) / PACING.rate * US)  # 5/s sustained


async def test_5_requests_per_second_end_to_end_in_virtual_time() -> None:
    clock, sleep = virtual_time()
    sb = GiftronautSandbox(rate_limit=RateLimit(300, 60 * US, clock=clock))  # production's limit
    g = group_of(sb)
    async with connect(sb, rate_limit=None) as c:  # the default pacing
        assert (c.api.bucket.rate, c.api.bucket.capacity) == (5.0, 1)
        c.api.bucket = TokenBucket(PACING.rate / US, PACING.burst, clock=clock, sleep=sleep)  # the same, virtual
        await apply_adds(c, g, contacts(people(400)))
        sent = len(api(sb))
        assert sent == 1 + 400 + 400  # directory page 1, creates, adds
        assert all(r.status != 429 for r in sb.requests)
        assert clock() == (sent - 1) / PACING.rate * US  # 160 s: the first request goes at once


async def test_requests_in_flight_are_capped_at_max_concurrency() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb)
    in_flight = [0, 0]  # now, peak

    async def app(scope: Any, receive: Any, send: Any) -> None:
        in_flight[0] += 1
        in_flight[1] = max(in_flight[1], in_flight[0])
        try:
            await asyncio.sleep(0.001)
            await sb(scope, receive, send)
        finally:
            in_flight[0] -= 1

    async with connect(sb, app=app) as c:  # harness: rate unlimited, so only the semaphore holds requests back
        await apply_adds(c, g, contacts(people(40)))
        assert in_flight[1] == PACING.max_concurrency == 8


async def test_429_is_waited_out_without_spending_retries() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb, "G", ["a@example.com"])
    async with connect(sb, retry={"backoff_base": 0, "max_retries": 0}) as c:
        limited = {"error": "RATE_LIMITED", "message": "slow down"}
        sb.inject(Fault(status=429, body=limited, retry_after=0, times=3, path=MEMBERS))
        assert len(await c.read_members(g)) == 1
        assert [r.status for r in api(sb)] == [429, 429, 429, 200]


# --------------------------------------------------------------------------------------------- errors


def response(
    status: int, body: Any = None, *, text: str | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    request = httpx.Request("POST", BASE + "/recipients?searchKeyword=someone%40example.com")
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


def test_classify_maps_every_assumed_code() -> None:
    def err(status: int, code: str) -> Any:
        return classify(response(status, {"error": code, "message": "m"}))

    assert classify(response(200, {})) is None and classify(response(204, text="")) is None
    assert isinstance(err(400, "VALIDATION_ERROR"), InvalidRequest) and err(400, "VALIDATION_ERROR").coded
    assert isinstance(err(404, "GROUP_NOT_FOUND"), GroupNotFound)
    assert isinstance(err(404, "RECIPIENT_NOT_FOUND"), RecipientNotFound)
    assert isinstance(err(404, "MEMBER_NOT_FOUND"), MemberNotFound)
    assert isinstance(err(409, "RECIPIENT_EXISTS"), RecipientExists)
    assert isinstance(err(409, "GROUP_EXISTS"), GroupExists)
    assert isinstance(err(409, "DUPLICATE_IDEMPOTENCY_KEY"), IdempotencyConflict)
    limited = classify(response(429, {"error": "RATE_LIMITED", "message": "m"}, headers={"Retry-After": "7"}))
    assert isinstance(limited, RateLimited) and limited.delay == 7.0
    assert isinstance(err(401, "UNAUTHORIZED"), AuthError) and isinstance(err(403, "FORBIDDEN"), AuthError)


def test_classify_tolerates_other_shapes() -> None:
    plain_404 = classify(response(404, text="Not Found"))
    assert type(plain_404) is NotFound and "Not Found" in plain_404.message
    nested = classify(response(404, {"error": {"code": "GROUP_NOT_FOUND", "message": "gone"}}))
    assert isinstance(nested, GroupNotFound) and "gone" in nested.message
    message_only = classify(response(400, {"message": "email is invalid"}))
    assert isinstance(message_only, InvalidRequest) and not message_only.coded
    assert message_only.detail == "email is invalid"
    assert isinstance(classify(response(429, text="Too Many Requests")), RateLimited)
    html = classify(response(502, text="<html><body>" + "x" * 1000 + "</body></html>"))
    assert isinstance(html, TransientError) and len(html.message) < 400
    conflict = classify(response(409, {"message": "conflict"}))
    assert type(conflict) is FatalError and conflict.status == 409
    other = classify(response(418, {"error": "TEAPOT"}))
    assert type(other) is FatalError and "TEAPOT" in other.message


def test_error_messages_name_the_path_and_request_id_but_no_email() -> None:
    error = classify(
        response(
            409,
            {"error": "RECIPIENT_EXISTS", "message": "recipient someone@example.com already exists"},
            headers={"X-Request-Id": "req-123"},
        )
    )
    assert error is not None
    assert (
        error.message
        == "HTTP 409: RECIPIENT_EXISTS: recipient <email> already exists (POST /api/v1/recipients, request id req-123)"
    )
    assert "example.com" not in error.message


# ------------------------------------------------------------------------------------------- settings


def test_settings_defaults_and_derived_token_url() -> None:
    s = GiftronautSettings.model_validate({"name": "gt", "client_id": "id", "client_secret": "secret"})
    assert s.type == "giftronaut" and s.base_url == "https://api.giftronaut.com/api/v1"
    assert s.resolved_token_url == "https://api.giftronaut.com/oauth2/token"
    assert s.scope == "recipients.read recipients.write"
    assert HARNESS.settings(base_url="http://127.0.0.1:9/giftronaut/api/v1").resolved_token_url == (
        "http://127.0.0.1:9/giftronaut/oauth2/token"
    )
    assert HARNESS.settings(token_url="https://auth.example.com/token").resolved_token_url == (
        "https://auth.example.com/token"
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"client_id": ""},
        {"client_secret": "  "},
        {"client_secret": None},
        {"token_url": "http://auth.example.com/token"},
        {"base_url": "http://api.giftronaut.com/api/v1"},
        {"type": "communic8"},
    ],
)
def test_settings_refuse_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        HARNESS.settings(**bad)


def test_settings_document_every_field() -> None:
    assert all(f.description for f in GiftronautSettings.model_fields.values())


async def test_secrets_never_show() -> None:
    s = HARNESS.settings()
    for text in (repr(s), str(s), s.model_dump_json()):
        assert CLIENT_SECRET not in text
    sb = HARNESS.sandbox()
    async with connect(sb) as c:
        assert CLIENT_SECRET not in repr(c) and CLIENT_SECRET not in repr(c.api.client.auth)


async def test_it_is_a_connector_with_the_prepare_adds_hook() -> None:
    async with connect(HARNESS.sandbox()) as c:
        assert isinstance(c, Connector) and isinstance(c, AddPreparer)


def test_capabilities() -> None:
    assert CAPABILITIES.member_key is MemberKeyKind.ID and CAPABILITIES.reset is ResetKind.NONE
    assert (CAPABILITIES.max_add_batch, CAPABILITIES.max_remove_batch) == (1, 1)
    assert CAPABILITIES.can_create_group and CAPABILITIES.can_remove and CAPABILITIES.extra_requests_per_add == 1
    assert (PACING.rate, PACING.burst, PACING.max_concurrency) == (5.0, 1, 8)
    assert CAPABILITIES.with_batch_size(500).max_add_batch == 1


async def test_logs_carry_no_email_and_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb, "G", ["old@example.com"])
    async with connect(sb) as c:
        with caplog.at_level(logging.DEBUG):
            members = await c.read_members(g)
            await apply_adds(c, g, contacts(["new.person@example.com"]))
            await c.remove_members(g, members)
        text = caplog.text
        assert "example.com" not in text and CLIENT_SECRET not in text


async def test_requests_are_tallied_per_pair() -> None:
    sb = HARNESS.sandbox()
    g = group_of(sb, "G", ["a@example.com"])
    async with connect(sb) as c:
        tally = RequestTally()
        with count_requests(tally):
            members = await c.read_members(g)
            await apply_adds(c, g, contacts(["b@example.com"]))
            await c.remove_members(g, members)
        # read 1 + directory page 1; create 1 + add 1 + delete 1 (the token request is not counted)
        assert tally.as_dict() == {"read": 2, "write": 3}


# -------------------------------------------------------------------------------------------- sandbox


@contextlib.asynccontextmanager
async def sandbox_client(sb: GiftronautSandbox, scope: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client holding a token for the sandbox, closed when the block ends."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sb), base_url="http://127.0.0.1") as client:
        client_id, secret = next(iter(DEFAULT_CLIENTS.items()))
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        if scope is not None:
            form["scope"] = scope
        token = (await client.post("/oauth2/token", data=form)).json()
        client.headers["Authorization"] = f"Bearer {token['access_token']}"
        yield client


async def test_sandbox_listing_defaults_caps_and_search() -> None:
    sb = GiftronautSandbox()
    for i in range(150):
        sb.add_recipient(f"user{i:03d}@example.com", "Ann", f"Lee{i:03d}")
    sb.add_recipient("Zed.Mixed@Example.com", "Zed", "Quist")
    async with sandbox_client(sb) as client:
        page = (await client.get("/api/v1/recipients")).json()
        assert (len(page["data"]), page["page"], page["pageSize"], page["total"]) == (20, 1, 20, 151)
        capped = (await client.get("/api/v1/recipients", params={"pageSize": 500, "page": 2})).json()
        assert (len(capped["data"]), capped["pageSize"]) == (51, 100)
        by_email = (await client.get("/api/v1/recipients", params={"searchKeyword": "zed.MIXED@"})).json()
        assert [r["email"] for r in by_email["data"]] == ["Zed.Mixed@Example.com"]
        by_name = (await client.get("/api/v1/recipients", params={"searchKeyword": "zed quist"})).json()
        assert by_name["total"] == 1
        partial = (await client.get("/api/v1/recipients", params={"searchKeyword": "user00"})).json()
        assert partial["total"] == 10
        bad = await client.get("/api/v1/recipients", params={"page": 0})
        assert bad.status_code == 400 and bad.json()["error"] == "VALIDATION_ERROR"


async def test_sandbox_idempotency_replay_and_conflict() -> None:
    sb = GiftronautSandbox()
    async with sandbox_client(sb) as client:
        headers = {"X-Idempotency-Key": "k1"}
        first = await client.post("/api/v1/recipients", json={"email": "a@example.com"}, headers=headers)
        replay = await client.post("/api/v1/recipients", json={"email": "a@example.com"}, headers=headers)
        assert (first.status_code, replay.status_code) == (201, 200) and first.json() == replay.json()
        other = await client.post("/api/v1/recipients", json={"email": "b@example.com"}, headers=headers)
        assert other.status_code == 409 and other.json()["error"] == "DUPLICATE_IDEMPOTENCY_KEY"
        exists = await client.post("/api/v1/recipients", json={"email": "A@EXAMPLE.com"})
        assert exists.status_code == 409 and exists.json()["error"] == "RECIPIENT_EXISTS"
        assert sb.recipient_count() == 1


async def test_sandbox_groups_members_and_request_ids() -> None:
    sb = GiftronautSandbox()
    rid = sb.add_recipient("a@example.com", "Ann", "Lee")
    async with sandbox_client(sb) as client:
        created = await client.post("/api/v1/recipient-groups", json={"groupName": "US Sales"})
        assert created.status_code == 201
        gid = created.json()["groupId"]
        assert isinstance(gid, int) and created.json()["memberCount"] == 0
        members = f"/api/v1/recipient-groups/{gid}/members"
        assert (await client.post(members, json={"recipientId": rid})).status_code == 201
        assert (await client.post(members, json={"recipientId": rid})).status_code == 200
        missing = await client.post(members, json={"recipientId": "RE-00000000"})
        assert missing.status_code == 404 and missing.json()["error"] == "RECIPIENT_NOT_FOUND"
        listed = (await client.get(members)).json()
        assert listed["data"] == [{"recipientId": rid, "email": "a@example.com", "firstName": "Ann", "lastName": "Lee"}]
        renamed = await client.put(f"/api/v1/recipient-groups/{gid}", json={"groupName": "APAC Sales"})
        assert renamed.json()["groupName"] == "APAC Sales" and renamed.json()["memberCount"] == 1
        assert (await client.delete(f"{members}/{rid}")).status_code == 204
        gone = await client.delete(f"{members}/{rid}")
        assert gone.status_code == 404 and gone.json()["error"] == "MEMBER_NOT_FOUND"
        assert (await client.delete(f"/api/v1/recipient-groups/{gid}")).status_code == 204
        lost = await client.get(f"/api/v1/recipient-groups/{gid}")
        assert lost.status_code == 404 and lost.json()["error"] == "GROUP_NOT_FOUND"
        assert (await client.get(f"/api/v1/recipients/{rid}")).json()["email"] == "a@example.com"
        echoed = await client.get("/api/v1/recipient-groups", headers={"X-Request-Id": "trace-1"})
        assert echoed.headers["X-Request-Id"] == "trace-1"
        assert sb.count(mutating=True) == 8  # the refused writes count too: they hit write endpoints


async def test_sandbox_group_names_are_unique_and_ids_integers() -> None:
    sb = GiftronautSandbox()
    async with sandbox_client(sb) as client:
        first = await client.post("/api/v1/recipient-groups", json={"groupName": "US Sales"})
        second = await client.post("/api/v1/recipient-groups", json={"groupName": "APAC"})
        assert (first.status_code, second.status_code) == (201, 201)
        a, b = first.json()["groupId"], second.json()["groupId"]
        assert isinstance(a, int) and isinstance(b, int) and a != b
        for name in ("US Sales", " us  sales "):
            taken = await client.post("/api/v1/recipient-groups", json={"groupName": name})
            assert taken.status_code == 409 and taken.json()["error"] == "GROUP_EXISTS" and taken.json()["message"]
        rename = await client.put(f"/api/v1/recipient-groups/{b}", json={"groupName": "us sales"})
        assert rename.status_code == 409 and rename.json()["error"] == "GROUP_EXISTS"
        same = await client.put(f"/api/v1/recipient-groups/{a}", json={"groupName": "US SALES"})  # its own name
        assert same.status_code == 200 and same.json()["groupName"] == "US SALES"
        listed = (await client.get("/api/v1/recipient-groups")).json()["data"]
        assert [g["groupId"] for g in listed] == [a, b]
        for bad in ("RG-1001", "1001x", "-1"):
            lost = await client.get(f"/api/v1/recipient-groups/{bad}")
            assert lost.status_code == 404 and lost.json()["error"] == "GROUP_NOT_FOUND"
        assert len(sb.groups) == 2 and sb.count(mutating=True) == 6


async def test_sandbox_idempotency_keys_are_at_most_128_characters_and_live_24_hours() -> None:
    now = [0.0]
    sb = GiftronautSandbox(clock=lambda: now[0], token_ttl=10 * 24 * 3600)
    async with sandbox_client(sb) as client:
        too_long = await client.post(
            "/api/v1/recipient-groups", json={"groupName": "A"}, headers={IDEMPOTENCY: "k" * 129}
        )
        assert too_long.status_code == 400 and too_long.json()["error"] == "VALIDATION_ERROR" and not sb.groups
        key = {IDEMPOTENCY: "k" * 128}
        first = await client.post("/api/v1/recipient-groups", json={"groupName": "A"}, headers=key)
        now[0] += 24 * 3600 - 1
        replay = await client.post("/api/v1/recipient-groups", json={"groupName": "A"}, headers=key)
        assert (first.status_code, replay.status_code) == (201, 200) and replay.json() == first.json()
        now[0] += 1  # 24 h after the first use: forgotten, so a different request under it is new
        fresh = await client.post("/api/v1/recipient-groups", json={"groupName": "B"}, headers=key)
        assert fresh.status_code == 201 and len(sb.groups) == 2


async def test_sandbox_auth_scopes_and_rate_limit() -> None:
    sb = GiftronautSandbox(rate_limit=RateLimit(3, 60))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sb), base_url="http://127.0.0.1") as anonymous:
        assert (await anonymous.get("/api/v1/recipients")).status_code == 401
        refused = await anonymous.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": "x"})
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    async with sandbox_client(sb, scope="recipients.read") as reader:  # token requests are not rate limited
        assert (await reader.get("/api/v1/recipients")).status_code == 200
        forbidden = await reader.post("/api/v1/recipients", json={"email": "a@example.com"})
        assert forbidden.status_code == 403
        limited = await reader.get("/api/v1/recipients")
        assert limited.status_code == 429 and limited.json()["error"] == "RATE_LIMITED"
        assert int(limited.headers["Retry-After"]) >= 1


# --------------------------------------------------- other answers an independent server may give


async def test_bare_listings_from_a_server_capping_pages_lower_are_read_to_the_end() -> None:
    # The docs give pageSize <= 100 and the listing shape is assumed: a server answering `{"data": [...]}` only
    # (no total, no pageSize) and capping pages at 50 must not have a group cut after its first page.
    sb = GiftronautSandbox(page_cap=50, bare_listings=True)
    emails = people(120)
    gid = sb.add_group("Team", emails)
    sb.add_group("Team B")
    async with connect(sb) as c:
        found = await c.find_group(name="Team")  # the search listing: one page of 2, no cap can explain it
        assert found is not None and found.id == gid and found.member_count == 120
        assert len(api(sb)) == 1
        # Known to hold 120 (memberCount), or not known at all (50 of 100 asked may be a cap): read on either way.
        for group in (found, RemoteGroup(gid, "Team")):
            sb.clear_log()
            with count_requests() as tally:
                members = await c.read_members(group)
            assert sorted(m.key for m in members) == emails
            assert tally.read == 3 == len(api(sb))  # 50 + 50 + 20: the short page ends it
            assert [parse_qs(r.query)["page"] for r in api(sb)] == [["1"], ["2"], ["3"]]


async def test_a_possibly_capped_first_directory_page_does_not_pass_for_the_whole_directory() -> None:
    # Without a total, a first directory page of 50 (of the 100 asked) may be a cap: the people not on it are
    # searched for, not taken as absent (which would send 70 creates, each answered 409 RECIPIENT_EXISTS).
    sb = GiftronautSandbox(page_cap=50, bare_listings=True)
    emails = people(120)
    for e in emails:
        sb.add_recipient(e)
    group = group_of(sb)
    async with connect(sb) as c:
        await apply_adds(c, group, contacts(emails))
        assert creates(sb) == 0 and sb.recipient_count() == 120
        assert directory_pages(sb) == 1 and searches(sb) == 70
        assert sb.group_emails(group.id) == set(emails)


async def test_counts_given_as_numeric_strings_are_read() -> None:
    class StringCounts(GiftronautSandbox):
        def _listing(self, items: Any, total: int, page: int, size: int) -> dict[str, Any]:
            listing = super()._listing(items, total, page, size)
            return {**listing, "total": str(total), "pageSize": str(size), "page": str(page)}

        def _group_json(self, group: dict[str, Any]) -> dict[str, Any]:
            return {**super()._group_json(group), "memberCount": str(len(self.memberships[group["groupId"]]))}

    sb = StringCounts(page_cap=50)
    emails = people(120)
    gid = sb.add_group("Team", emails)
    async with connect(sb) as c:
        group = await c.find_group(group_id=gid)
        assert group is not None and group.member_count == 120
        sb.clear_log()
        assert sorted(m.key for m in await c.read_members(group)) == emails
        assert len(api(sb)) == 3  # total "120" at pageSize "50": pages 2 and 3 fetched at once


@pytest.mark.parametrize("ttl", [30.0, 60.0])
async def test_a_token_living_less_than_the_refresh_margin_is_used_not_refused(ttl: float) -> None:
    # expires_in is read from the answer; a server issuing short-lived tokens (at or below the 60 s refresh
    # margin) must not make the fresh token count as expired before its first use.
    sb = GiftronautSandbox(token_ttl=ttl)
    group = group_of(sb, "G", people(2))
    async with connect(sb) as c:
        assert len(await c.read_members(group)) == 2
        assert len(await c.read_members(group)) == 2
    assert sb.token_requests == 1  # still valid for the second read: reused, not fetched again
    assert all(r.status in (200, 201) for r in sb.requests)


async def test_a_listing_echoing_the_page_size_asked_while_capping_lower_is_read_whole() -> None:
    class EchoesAsked(GiftronautSandbox):
        """Answers `pageSize` as asked (100) while holding at most 50 per page: the page's own length tells."""

        def _paging(self, request: Any) -> tuple[int, int]:
            page, size = super()._paging(request)
            self.asked = int(request.query.get("pageSize", "20"))
            return page, size

        def _listing(self, items: Any, total: int, page: int, size: int) -> dict[str, Any]:
            return {**super()._listing(items, total, page, size), "pageSize": self.asked}

    sb = EchoesAsked(page_cap=50)
    emails = people(120)
    gid = sb.add_group("Team", emails)
    async with connect(sb) as c:
        members = await c.read_members(RemoteGroup(gid, "Team"))
    assert sorted(m.key for m in members) == emails
    assert len(api(sb)) == 3
