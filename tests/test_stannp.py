"""Stannp specifics, over HTTP against the bundled sandbox (httpx.ASGITransport; nothing of ours is patched).

Exact request counts (k new + m existing recipients cost k + ceil(m/1000) writes; a warm cache reads no
account listing), lost answers (`Fault(lost=True)`: a create resent with the same `X-Idempotency-Key` is
answered 409 with the first answer and makes one recipient, also 30 in a row; without a key honoured,
on_duplicate=ignore with test_level=email still makes one), no `on_duplicate=update` and no `Idempotency-Key`
header on any request, the two regional APIs (UK `recipients/create` / `groups/create` JSON, US
`recipients/new` / `groups/new` form), members lacking a required field rejected before anything is sent
(through the reconciler too), `groups/remove` as POST with the 405 → DELETE fallback, the stale-id refresh,
pagination at the 1000 cap, pacing from the X-RateLimit-* headers (on a virtual clock shared by the sandbox's
window and the connector's token bucket: nothing sleeps for real, nothing asserts wall-clock time), 429s, the
non-atomic reset (never with `delete_recipients: true`), error shapes, tolerance of ids as numbers and bare
bodies, settings, and the sandbox's own fidelity to the docs (routes, idempotency keys, on_duplicate).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import yaml
from pydantic import SecretStr, ValidationError

from connectors.base import (
    AuthError,
    BatchRejected,
    Contact,
    FatalError,
    MemoryRecipientCache,
    NotFound,
    Pacing,
    PostalAddress,
    RateLimited,
    RemoteGroup,
    RemoteMember,
    ResetKind,
    TransientError,
)
from connectors.http import ApiKeyBasicAuth, BearerAuth, RetryPolicy, count_requests, make_client
from connectors.settings import BuildContext
from connectors.stannp import (
    CAPABILITIES,
    ENDPOINTS,
    GROUP_PAGE_SIZE,
    MATCHED_ANOTHER,
    REFUSED,
    RecipientRefused,
    Region,
    StannpConnector,
    StannpSettings,
    build,
    capabilities_for,
    classify,
    is_replay,
    read_quota,
    resolve_region,
    success_body,
)
from sandboxes._core import Fault, Request, Response
from sandboxes.stannp import AUTH_ERROR, DEFAULT_KEY, Recipient, StannpSandbox
from syncd.config import load_config
from syncd.metrics import Metrics
from syncd.model import Member, OpKind, Plan, RemovalPolicy, Strategy
from syncd.planning import Guard, plan
from syncd.reconciler import PassOptions, Reconciler
from syncd.state import Store

BASE = "http://127.0.0.1/v1"
ADDRESS = PostalAddress(line1="1 Test Street", line2="Flat 2", city="Leeds", postcode="LS1 1AA", country="GB")
ADD, REMOVE, NEW = r"/groups/add/", r"/groups/remove/", r"/recipients/create$"
LISTING = r"/recipients/list$"


# -------------------------------------------------------------------------------------------- helpers


def emails(n: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i:05d}@example.com" for i in range(n)]


def contacts(addresses: Sequence[str]) -> list[Contact]:
    return [Contact(email=e, first_name="Ann", last_name="Lee", address=ADDRESS) for e in addresses]


def sandbox(**kwargs: Any) -> StannpSandbox:
    kwargs.setdefault("limit", 1_000_000)  # pacing has its own tests below
    return StannpSandbox(**kwargs)


def settings(**overrides: Any) -> StannpSettings:
    values: dict[str, Any] = {
        "name": "stannp",
        "base_url": BASE,
        "api_key": DEFAULT_KEY,
        "rate_limit": 1e6,
        "retry": {"backoff_base": 0},
    }
    values.update(overrides)
    return StannpSettings.model_validate({k: v for k, v in values.items() if v is not None})


def connect(sb: Any, cache: MemoryRecipientCache | None = None, **overrides: Any) -> StannpConnector:
    ctx = BuildContext(
        transport=httpx.ASGITransport(app=sb), cache=cache if cache is not None else MemoryRecipientCache()
    )
    return build(settings(**overrides), ctx)


def seed(sb: StannpSandbox, addresses: Sequence[str]) -> list[str]:
    return [sb.add_recipient(e) for e in addresses]


def warm_cache(sb: StannpSandbox) -> MemoryRecipientCache:
    """What syncd's state DB holds after an earlier pass: every recipient's id by email."""
    cache = MemoryRecipientCache()
    cache.put_many({r.email.lower(): str(rid) for rid, r in sb.recipients.items() if r.email})
    return cache


def body_of(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return dict(parse_qsl(raw.decode(), keep_blank_values=True))
    return data if isinstance(data, dict) else {}


def assert_recipients_never_deleted(sb: StannpSandbox) -> None:
    """No request the sandbox served asked for `delete_recipients` to be true, and none was deleted."""
    for r in sb.requests:
        value = body_of(r.body).get("delete_recipients")
        assert value in (None, False, "false", "0", ""), f"{r.method} {r.path} sent delete_recipients={value!r}"
    assert sb.recipients_deleted == 0


def applier_chunks(items: Sequence[Contact], size: int = 1000) -> list[Sequence[Contact]]:
    """The planner's ADD ops: the contacts in source order, one batch per op."""
    return [items[i : i + size] for i in range(0, len(items), size)]


class Recording(StannpSandbox):
    """The sandbox, also keeping every request's headers (the Idempotency-Key, the Authorization scheme)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("limit", 1_000_000)
        super().__init__(**kwargs)
        self.headers: list[tuple[str, str, dict[str, str]]] = []

    async def handle(self, request: Request) -> Response:
        self.headers.append((request.method, request.path, dict(request.headers)))
        return await super().handle(request)


# -------------------------------------------------------------------------------- adding: exact counts


async def test_k_new_and_m_existing_cost_k_plus_ceil_m_over_1000_writes() -> None:
    k, m = 3, 2500
    sb = sandbox()
    existing = emails(m, "old")
    seed(sb, existing)
    gid = sb.add_group("Mailing")
    new = emails(k, "new")
    # source order puts the new people among the existing ones, as a CRM would
    wanted = contacts(existing[:700] + new[:1] + existing[700:1800] + new[1:] + existing[1800:])
    async with connect(sb) as c:
        group = RemoteGroup(gid, "Mailing")
        with count_requests() as tally:
            await c.prepare_adds(wanted)
            results = [await c.add_members(group, chunk) for chunk in applier_chunks(wanted)]
    assert sum(len(r.done) for r in results) == k + m and not any(r.rejected for r in results)
    writes = k + math.ceil(m / 1000)
    reads = math.ceil((m + 1) / 1000)  # the one account listing, pages of 1000 (2500 → 3 pages)
    print(f"\nstannp add k={k} new + m={m} existing: {tally.as_dict()} (expected writes {writes}, reads {reads})")
    assert tally.as_dict() == {"read": reads, "write": writes}
    assert sb.count(method="POST", path=ADD) == math.ceil(m / 1000) and sb.count(path=NEW) == k
    assert sb.count(path=LISTING) == reads == sb.count(mutating=False)
    assert [len(body_of(r.body)["recipients"].split(",")) for r in sb.requests if ADD in r.path] == [999, 998, 503]
    assert sb.group_emails(gid) == set(existing + new)
    assert sb.recipient_count() == k + m  # nobody duplicated
    assert_recipients_never_deleted(sb)


async def test_one_call_with_everything_chunks_existing_ids_by_1000() -> None:
    sb = sandbox()
    existing = emails(2500, "old")
    seed(sb, existing)
    gid = sb.add_group("Mailing")
    async with connect(sb, cache=warm_cache(sb)) as c:
        result = await c.add_members(RemoteGroup(gid, "Mailing"), contacts(emails(2, "new") + existing))
    assert len(result.done) == 2502
    assert sb.mutating_count == 2 + 3
    assert sb.count(mutating=False) == 3  # the two new emails are unknown to the cache: one listing


async def test_a_warm_cache_reads_no_account_listing() -> None:
    sb = sandbox()
    people = emails(5)
    seed(sb, people)
    gid = sb.add_group("G")
    cache = MemoryRecipientCache()
    async with connect(sb, cache=cache) as first:  # pass 1: a cold cache lists the account once and remembers every id
        await first.add_members(RemoteGroup(gid, "G"), contacts(people[:2]))
    assert sb.count(path=LISTING) == 1 and len(cache.all()) == 5
    sb.clear_log()
    async with connect(sb, cache=cache) as second:  # pass 2: a new connector, syncd's persisted cache
        with count_requests() as tally:
            result = await second.add_members(RemoteGroup(gid, "G"), contacts(people))
    assert sorted(result.done) == people
    assert tally.as_dict() == {"read": 0, "write": 1}
    assert [(r.method, r.path) for r in sb.requests] == [("POST", f"/v1/groups/add/{gid}")]
    assert body_of(sb.requests[0].body) == {"recipients": ",".join(cache.get_many(people)[e] for e in people)}


async def test_the_account_is_listed_at_most_once_per_pass() -> None:
    sb = sandbox()
    seed(sb, emails(1500))
    gid = sb.add_group("G")
    async with connect(sb) as c:
        group = RemoteGroup(gid, "G")
        await c.add_members(group, contacts(["a@example.com"]))  # unknown: lists the account (2 pages)
        await c.add_members(group, contacts(["b@example.com", *emails(3)]))  # unknown again: no second listing
        await c.prepare_adds(contacts(["c@example.com"]))
    assert sb.count(path=LISTING) == 2
    assert [dict(parse_qsl(r.query)) for r in sb.requests if r.path.endswith("/recipients/list")] == [
        {"offset": "0", "limit": "1000"},
        {"offset": "1000", "limit": "1000"},
    ]
    assert sb.count(path=NEW) == 2 and sb.count(path=ADD) == 1


async def test_prepare_adds_resolves_once_and_costs_nothing_when_the_cache_knows_everyone() -> None:
    sb = sandbox()
    people = emails(4)
    seed(sb, people)
    gid = sb.add_group("G")
    async with connect(sb, cache=warm_cache(sb)) as c:
        await c.prepare_adds(contacts(people))
        assert sb.count() == 0
        await c.prepare_adds(contacts(["new@example.com"]))  # someone unknown: the one listing
        assert sb.count() == 1
        sb.clear_log()
        result = await c.add_members(RemoteGroup(gid, "G"), contacts([*people, "new@example.com"]))
    assert len(result.done) == 5
    assert sb.count(mutating=False) == 0 and sb.count(path=ADD) == 1 and sb.count(path=NEW) == 1


async def test_new_recipients_are_created_and_joined_in_one_request_each() -> None:
    sb = Recording()
    gid = sb.add_group("G")
    cache = MemoryRecipientCache()
    async with connect(sb, cache=cache) as c:
        person = Contact("Ann.Lee@Example.com", "Ann", "Lee", ADDRESS)
        result = await c.add_members(RemoteGroup(gid, "G"), [person])
    assert result.done == ("ann.lee@example.com",)
    (rid,) = sb.recipients_with_email("ann.lee@example.com")
    assert cache.all() == {"ann.lee@example.com": rid}  # the new id is cached
    create = next(r for r in sb.requests if r.path.endswith("/recipients/create"))
    assert json.loads(create.body) == {
        "email": "Ann.Lee@Example.com",  # the source's spelling
        "firstname": "Ann",
        "lastname": "Lee",
        "address1": "1 Test Street",
        "address2": "Flat 2",
        "city": "Leeds",
        "postcode": "LS1 1AA",
        "country": "GB",
        "group_id": int(gid),
        "on_duplicate": "ignore",
        "test_level": "email",
    }
    headers = next(h for m, p, h in sb.headers if p.endswith("/recipients/create"))
    assert headers["content-type"] == "application/json"
    assert len(headers["x-idempotency-key"]) == 32 and "idempotency-key" not in headers
    assert sb.group_emails(gid) == {"Ann.Lee@Example.com"}


async def test_an_email_that_exists_after_all_is_reused_not_duplicated() -> None:
    sb = sandbox()
    gid = sb.add_group("G")
    async with connect(sb) as c:
        await c.prepare_adds(contacts(["late@example.com"]))  # listed: nobody has this email yet
        rid = sb.add_recipient("LATE@example.com")  # ...then someone creates them in the dashboard
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(["late@example.com"]))
    assert result.done == ("late@example.com",)
    assert sb.recipients_with_email("late@example.com") == [rid]  # on_duplicate=ignore answered it
    assert sb.group_ids(gid) == [rid]
    assert c.cache.get_many(["late@example.com"]) == {"late@example.com": rid}


async def test_a_refused_contact_is_an_invalid_recipient_reject_and_the_rest_go_in() -> None:
    sb = sandbox()
    gid = sb.add_group("G")
    async with connect(sb) as c:
        spelled_out = PostalAddress(line1="1 Road", city="York", postcode="YO1 7HH", country="United Kingdom")
        refused = Contact("x@example.com", "Xan", "Ray", spelled_out)
        result = await c.add_members(RemoteGroup(gid, "G"), [*contacts(["a@example.com"]), refused])
    assert result.done == ("a@example.com",)
    (reject,) = result.rejected
    assert reject.email == "x@example.com" and reject.code == "invalid_recipient" and reject.permanent
    assert reject.reason == f"{REFUSED}: country must be an ISO 3166-1 alpha-2 code (GB, US, FR...)"
    assert sb.group_emails(gid) == {"a@example.com"}
    assert [r.status for r in sb.requests if r.path.endswith("/recipients/create")] == [200, 400]  # not retried


async def test_a_stale_cached_id_refreshes_once_and_the_person_is_recreated() -> None:
    sb = sandbox()
    people = emails(5)
    ids = seed(sb, people)
    gid = sb.add_group("G")
    cache = warm_cache(sb)
    sb.delete_recipient(ids[2])  # deleted in the dashboard; the cache still vouches for it
    async with connect(sb, cache=cache) as c:
        with count_requests() as tally:
            result = await c.add_members(RemoteGroup(gid, "G"), contacts(people))
    assert sorted(result.done) == people and not result.rejected
    # refused (stale id) → one listing → the 4 valid ids → the deleted person created again
    assert [(r.method, r.path.split("/")[-2 if ADD in r.path else -1], r.status) for r in sb.requests] == [
        ("POST", "add", 400),
        ("GET", "list", 200),
        ("POST", "add", 200),
        ("POST", "create", 200),
    ]
    assert tally.as_dict() == {"read": 1, "write": 3}
    assert sb.group_emails(gid) == set(people)
    (fresh,) = sb.recipients_with_email(people[2])
    assert cache.get_many([people[2]]) == {people[2]: fresh} and fresh != ids[2]


async def test_a_recipient_deleted_after_the_listing_is_isolated_and_the_good_ids_go_in() -> None:
    sb = sandbox()
    people = emails(8)
    ids = seed(sb, people)
    gid = sb.add_group("G")
    async with connect(sb) as c:
        await c.prepare_adds(contacts([*people, "someone.new@example.com"]))  # lists the account
        sb.delete_recipient(ids[5])
        sb.clear_log()
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(people))
    assert sorted(result.done) == people and not result.rejected
    # 8 refused; the group still exists (1 read); halves: 4 ok + 4 refused → 2 ok + 2 refused → 1 ok + 1 refused
    assert sb.count(method="POST", path=ADD) == 7
    assert sb.count(method="GET", path="/groups/list$") == 1
    assert sb.count(path=NEW) == 1  # the deleted person is created again
    assert sb.group_emails(gid) == set(people)


async def test_adding_to_a_deleted_group_is_not_found() -> None:
    sb = sandbox()
    people = emails(2)
    seed(sb, people)
    async with connect(sb, cache=warm_cache(sb)) as c:
        with pytest.raises(NotFound):
            await c.add_members(RemoteGroup("999", "Gone"), contacts(people))
        with pytest.raises(NotFound):
            await c.add_members(RemoteGroup("999", "Gone"), contacts(["new@example.com"]))
    assert sb.recipient_count() == 2


# ----------------------------------------------------------------------------------- reading members


@pytest.mark.parametrize(("n", "pages"), [(1, 1), (999, 1), (1000, 2), (1001, 2), (2500, 3)])
async def test_member_reads_page_at_1000(n: int, pages: int) -> None:
    sb = sandbox()
    people = emails(n)
    gid = sb.add_group("Big", people)
    cache = MemoryRecipientCache()
    async with connect(sb, cache=cache) as c:
        with count_requests() as tally:
            members = await c.read_members(RemoteGroup(gid, "Big"))
    assert sorted(m.key for m in members) == people and all(m.id for m in members)
    assert tally.read == pages == sb.count()
    queries = [dict(parse_qsl(r.query)) for r in sb.requests]
    assert queries == [{"group_id": gid, "offset": str(1000 * p), "limit": "1000"} for p in range(pages)]
    assert len(cache.all()) == n  # email -> id remembered for the next pass


async def test_members_without_email_and_duplicate_copies_are_keyed_by_id() -> None:
    sb = sandbox()
    gid = sb.add_group("G", ["a@example.com"])
    no_email = sb.add_recipient(None, group_ids=[gid])
    copy = sb.add_recipient("A@Example.com", group_ids=[gid])  # Stannp allows a second recipient with it
    async with connect(sb) as c:
        members = await c.read_members(RemoteGroup(gid, "G"))
    assert sorted(m.key for m in members) == sorted(["a@example.com", f"id:{no_email}", f"id:{copy}"])
    assert RemoteMember(email=None, id=copy) in members  # mirror removes the extra copy: one letter each


async def test_an_empty_read_checks_that_the_group_exists() -> None:
    class EmptyForUnknownGroups(StannpSandbox):
        """An API that reads an unknown group_id as an empty list instead of a 404."""

        def _list_recipients(self, request: Request) -> dict[str, Any]:
            if request.query.get("group_id", "").isdigit() and int(request.query["group_id"]) not in self.groups:
                return {"success": True, "data": []}
            return super()._list_recipients(request)

    for sb in (sandbox(), EmptyForUnknownGroups(limit=None)):
        gid = sb.add_group("Empty")
        async with connect(sb) as c:
            assert await c.read_members(RemoteGroup(gid, "Empty")) == []
            with pytest.raises(NotFound):
                await c.read_members(RemoteGroup("4040", "Gone"))
    assert sb.count(path="/groups/list$") == 1  # the group listing is read once and shared


# -------------------------------------------------------------------------------------------- groups


async def test_find_group_pages_the_listing_once_per_pass() -> None:
    sb = sandbox()
    for i in range(120):
        sb.add_group(f"Team {i}")
    target = sb.add_group("Team")
    async with connect(sb) as c:
        found = await c.find_group(name="Team")
        assert found is not None and found.id == target and found.member_count == 0
        assert sb.count() == 3  # 121 groups, pages of 50
        assert [dict(parse_qsl(r.query))["offset"] for r in sb.requests] == ["0", "50", "100"]
        assert {dict(parse_qsl(r.query))["limit"] for r in sb.requests} == {str(GROUP_PAGE_SIZE)}
        by_id = await c.find_group(group_id=f" {target} ")
        assert by_id is not None and by_id.name == "Team"
        assert await c.find_group(group_id="1", name="Team 7") is not None  # unknown id: the name decides
        assert await c.find_group(name="team") is None  # exact names only
        assert sb.count() == 3  # answered from the pass's listing


async def test_two_groups_with_one_name_ask_for_a_group_id() -> None:
    sb = sandbox()
    a, b = sb.add_group("Twin"), sb.add_group("Twin")
    async with connect(sb) as c:
        with pytest.raises(FatalError, match=f"2 Stannp groups are named 'Twin' \\(ids {a}, {b}\\)"):
            await c.find_group(name="Twin")


async def test_create_sends_an_idempotency_key_and_is_found_afterwards() -> None:
    sb = Recording()
    async with connect(sb) as c:
        assert await c.find_group(name="New") is None
        group = await c.create_group("New")
        assert group.id == next(iter(sb.groups)).__str__() and group.name == "New"
        again = await c.find_group(name="New")
        assert again is not None and again.id == group.id
    assert sb.mutating_count == 1 and sb.count() == 2  # the listing, the create; the find is answered locally
    assert [(r.method, r.path) for r in sb.requests] == [("GET", "/v1/groups/list"), ("POST", "/v1/groups/create")]
    assert json.loads(sb.requests[1].body) == {"name": "New"}
    create = next(h for m, p, h in sb.headers if m == "POST")
    assert len(create["x-idempotency-key"]) == 32 and create["content-type"] == "application/json"
    assert "idempotency-key" not in create


class LandsThenFails(StannpSandbox):
    """The first group create is processed, but its answer is lost (a 502 from a proxy)."""

    lost = 0

    async def handle(self, request: Request) -> Response:
        response = await super().handle(request)
        if request.path.endswith("/groups/create") and not self.lost:
            self.lost += 1
            return Response(502, "Bad Gateway")
        return response


async def test_a_create_that_landed_is_looked_up_not_sent_twice() -> None:
    sb = LandsThenFails(limit=None)
    async with connect(sb) as c:
        group = await c.create_group("New")
    assert [g.name for g in sb.groups.values()] == ["New"] and group.id == str(next(iter(sb.groups)))
    assert sb.count(method="POST") == 1 and sb.count(method="GET", path="/groups/list$") == 1


async def test_a_create_that_did_not_land_is_sent_again_with_the_same_key() -> None:
    sb = Recording()
    sb.inject(Fault(status=503, method="POST", path="/groups/create$"))
    async with connect(sb) as c:
        group = await c.create_group("New")
    assert [g.name for g in sb.groups.values()] == ["New"] and group.name == "New"
    keys = [h["x-idempotency-key"] for m, p, h in sb.headers if m == "POST"]
    assert len(keys) == 2 and keys[0] == keys[1]


async def test_the_sandbox_replays_an_x_idempotency_key_as_the_docs_say() -> None:
    vt = VirtualTime()
    sb = StannpSandbox(limit=None, clock=vt.clock)
    auth = {"Authorization": f"Bearer {DEFAULT_KEY}"}
    key = {"X-Idempotency-Key": "key-0000001"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sb), base_url=BASE + "/", headers=auth) as http:
        first = await http.post("groups/create", json={"name": "Once"}, headers=key)
        replay = await http.post("groups/create", json={"name": "Once"}, headers=key)
        other_body = await http.post("groups/create", json={"name": "Twice"}, headers=key)
        # the old header name is nothing to Stannp: two requests, two groups
        old = [await http.post("groups/create", json={"name": "Old"}, headers={"Idempotency-Key": "k-1234567890"})]
        old.append(await http.post("groups/create", json={"name": "Old"}, headers={"Idempotency-Key": "k-1234567890"}))
        short = await http.post("groups/create", json={"name": "Short"}, headers={"X-Idempotency-Key": "123456789"})
        listed = await http.get("groups/list", headers=key)  # a key on a GET means nothing
        vt.now += 24 * 3600  # keys are remembered 24 hours
        later = await http.post("groups/create", json={"name": "Once"}, headers=key)
    assert first.status_code == 200 and first.json() == {"success": True, "data": "39"}
    assert replay.status_code == 409 and replay.json() == first.json()  # the first answer, nothing done again
    # the same key on another body: "only identical requests will be treated as idempotent", so it is performed
    assert other_body.status_code == 200 and other_body.json() == {"success": True, "data": "40"}
    assert [a.status_code for a in old] == [200, 200] and old[0].json() != old[1].json()
    assert short.status_code == 400 and short.json()["error"].startswith("Idempotency keys must be between 10")
    assert listed.status_code == 200
    assert later.status_code == 200 and later.json()["data"] != first.json()["data"]
    assert [g.name for g in sb.groups.values()] == ["Once", "Twice", "Old", "Old", "Once"]
    assert (sb.replays, sb.key_reuses) == (1, 1)


async def test_the_sandbox_remembers_successes_only() -> None:
    sb = sandbox()
    auth = {"Authorization": f"Bearer {DEFAULT_KEY}", "X-Idempotency-Key": "retry-after-a-fix"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sb), base_url=BASE + "/", headers=auth) as http:
        refused = await http.post("groups/create", json={"name": ""})
        again = await http.post("groups/create", json={"name": ""})
    assert [refused.status_code, again.status_code] == [400, 400] and sb.replays == 0  # performed (and refused) twice


# ------------------------------------------------------------ lost answers, idempotency keys, on_duplicate


def create_keys(sb: Recording) -> list[str]:
    """The X-Idempotency-Key of every recipient create the sandbox was sent, in order."""
    return [h["x-idempotency-key"] for m, p, h in sb.headers if p.endswith("/recipients/create")]


async def test_a_lost_answer_to_a_create_is_resent_with_the_same_key_and_makes_one_recipient() -> None:
    sb = Recording()
    gid = sb.add_group("G")
    sb.inject(Fault(lost=True, method="POST", path="recipients/create"))  # served, then the answer is lost
    cache = MemoryRecipientCache()
    async with connect(sb, cache=cache) as c:
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(["ann@example.com"]))
    assert result.done == ("ann@example.com",) and not result.rejected
    (rid,) = sb.recipients_with_email("ann@example.com")  # exactly one recipient
    assert sb.group_ids(gid) == [rid] and cache.all() == {"ann@example.com": rid}
    assert [(r.method, r.path, r.status) for r in sb.requests] == [
        ("GET", "/v1/recipients/list", 200),
        ("POST", "/v1/recipients/create", 200),  # its answer never arrived
        ("POST", "/v1/recipients/create", 409),  # the replay: the first answer's body
    ]
    first, retry = create_keys(sb)
    assert first == retry and len(first) == 32 and sb.requests[1].body == sb.requests[2].body
    assert sb.replays == 1


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_thirty_lost_answers_in_a_row_make_thirty_recipients_and_no_duplicate(concurrency: int) -> None:
    sb = Recording()
    existing, new = emails(500, "old"), emails(30, "new")
    seed(sb, existing)
    gid = sb.add_group("G")
    if concurrency == 1:
        # every create loses its first answer, one after the other: create, replay, create, replay, ...
        for i in range(30):
            sb.inject(Fault(lost=True, method="POST", path="recipients/create$", skip=i))
        retry: dict[str, Any] = {"backoff_base": 0}
    else:
        # the next 30 create requests lose their answer, whichever worker sends them (a retry too)
        sb.inject(Fault(lost=True, method="POST", path="recipients/create$", times=30))
        retry = {"backoff_base": 0, "max_retries": 30}
    async with connect(sb, max_concurrency=concurrency, retry=retry) as c:
        wanted = contacts(existing[:200] + new + existing[200:])
        await c.prepare_adds(wanted)
        results = [await c.add_members(RemoteGroup(gid, "G"), chunk) for chunk in applier_chunks(wanted)]
    assert sum(len(r.done) for r in results) == 530 and not any(r.rejected for r in results)
    assert sb.recipient_count() == 530  # 30 new recipients
    assert all(len(sb.recipients_with_email(e)) == 1 for e in new)  # no duplicate
    assert sb.group_emails(gid) == set(existing + new)
    creates = [r for r in sb.requests if r.path.endswith("/recipients/create")]
    # 30 first attempts; each of the 30 lost answers was sent again with its key and answered from it (409)
    assert len(creates) == 30 + 30 and sb.replays == 30 == sum(1 for r in creates if r.status == 409)
    keys = create_keys(sb)
    assert len(set(keys)) == 30 and len(keys) == 30 + 30  # one key per person
    if concurrency == 1:
        assert [r.status for r in creates] == [200, 409] * 30 and keys[::2] == keys[1::2]
    assert sb.count(method="POST", path=ADD) == 1


async def test_a_lost_create_still_makes_one_recipient_where_the_key_is_not_honoured() -> None:
    # Nothing says recipients/create honours the key; then on_duplicate=ignore with test_level=email answers the
    # recipient the lost attempt created.
    sb = Recording(idempotency=False)
    gid = sb.add_group("G")
    sb.inject(Fault(lost=True, method="POST", path="recipients/create"))
    async with connect(sb) as c:
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(["ann@example.com"]))
    assert result.done == ("ann@example.com",)
    assert len(sb.recipients_with_email("ann@example.com")) == 1
    assert [r.status for r in sb.requests if r.path.endswith("/recipients/create")] == [200, 200]
    assert sb.replays == 0


async def test_lost_answers_to_adds_and_group_creates_are_not_failures() -> None:
    sb = Recording()
    people = emails(3)
    seed(sb, people)
    sb.inject(Fault(lost=True, method="POST", path="groups/create$"))
    sb.inject(Fault(lost=True, method="POST", path="groups/add/"))
    async with connect(sb, cache=warm_cache(sb)) as c:
        group = await c.create_group("New")  # landed: found by name, not sent again
        result = await c.add_members(group, contacts(people))  # resent with its key: 409, the first answer
    assert [g.name for g in sb.groups.values()] == ["New"] and sorted(result.done) == people
    assert [(r.method, r.path.rsplit("/", 2)[-2 if ADD in r.path else -1], r.status) for r in sb.requests] == [
        ("POST", "create", 200),
        ("GET", "list", 200),
        ("POST", "add", 200),
        ("POST", "add", 409),
    ]
    add_keys = [h["x-idempotency-key"] for m, p, h in sb.headers if ADD in p]
    assert add_keys[0] == add_keys[1]
    assert sb.group_emails(group.id) == set(people)


def _keyed(status: int, body: Any, path: str = "/v1/recipients/create", key: bool = True) -> httpx.Response:
    headers = {"X-Idempotency-Key": "k" * 32} if key else {}
    request = httpx.Request("POST", "http://127.0.0.1" + path, headers=headers)
    return httpx.Response(status, json=body, request=request)


def test_a_409_replay_is_the_first_answer_and_any_other_409_an_error() -> None:
    first = {"success": True, "data": {"id": "1941", "valid": True}}
    assert classify(_keyed(409, first)) is None and is_replay(_keyed(409, first))
    assert classify(_keyed(409, {"id": "1941", "valid": True})) is None  # a bare body, as one docs version shows
    assert classify(_keyed(409, {"success": True, "data": 2}, "/v1/groups/add/3")) is None
    conflict = classify(_keyed(409, {"success": False, "error": "resource in use"}, "/v1/groups/create"))
    assert type(conflict) is FatalError and conflict.status == 409 and "resource in use" in conflict.message
    assert isinstance(classify(_keyed(409, {"success": False, "error": "in use"}, "/v1/groups/add/3")), FatalError)
    assert isinstance(classify(_keyed(409, {"error": "conflict"})), FatalError)
    assert isinstance(classify(_keyed(409, first, key=False)), FatalError)  # no key sent: no replay either
    # a create whose first answer was a refusal: the replay is that refusal, a reject of this person alone
    replayed_refusal = classify(_keyed(409, {"success": False, "error": "city is required"}))
    assert isinstance(replayed_refusal, RecipientRefused) and replayed_refusal.reason == "city is required"
    assert type(classify(_keyed(409, {"success": False, "error": "x"}, key=False))) is FatalError
    assert not success_body([1]) and not success_body({"success": "true"}) and success_body({"data": "39"})


async def test_a_409_replay_is_parsed_like_the_first_answer() -> None:
    sb = Recording()
    gid = sb.add_group("G")
    async with connect(sb) as c:
        await c.prepare_adds(contacts(["ann@example.com"]))
        sb.inject(Fault(lost=True, method="POST", path="recipients/create"))
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(["ann@example.com"]))
        assert result.done == ("ann@example.com",)
        (rid,) = sb.recipients_with_email("ann@example.com")
        members = await c.read_members(RemoteGroup(gid, "G"))  # the id learnt from the 409 is the member's id
    assert members == [RemoteMember("ann@example.com", rid)]
    assert c.cache.get_many(["ann@example.com"]) == {"ann@example.com": rid}


@pytest.mark.parametrize("region", ["eu", "us"])
async def test_no_request_carries_on_duplicate_update_or_an_idempotency_key_header(region: str) -> None:
    sb = Recording(region=region)
    existing = emails(3, "old")
    seed(sb, existing)
    base = "https://api-us1.stannp.com/v1" if region == "us" else "https://api-eu1.stannp.com/v1"
    async with connect(sb, base_url=base, allow_non_atomic_reset=True) as c:
        group = await c.create_group("All")
        await c.add_members(group, contacts([*existing, *emails(3, "new")]))
        await c.remove_members(group, (await c.read_members(group))[:2])
        await c.reset_members(group, contacts([*existing[:1], "fresh@example.com"]))
    assert sb.group_emails(group.id) == {existing[0], "fresh@example.com"}
    assert not [p for _, p, h in sb.headers if "idempotency-key" in h]
    posts = [h for m, _, h in sb.headers if m == "POST"]
    keys = [h["x-idempotency-key"] for h in posts]
    # group create; 1 add + 3 creates; 1 remove; purge + 1 add + 1 create: a fresh key per logical POST
    assert len(posts) == 1 + 4 + 1 + 3 and len(set(keys)) == len(keys)
    bodies = [body_of(r.body) for r in sb.requests]
    assert {b["on_duplicate"] for b in bodies if "on_duplicate" in b} == {"ignore"}
    assert sum(1 for b in bodies if "on_duplicate" in b) == 4  # 3 new + fresh
    assert_recipients_never_deleted(sb)


# ------------------------------------------------------------------------------------------- regions

US_ADDRESS = PostalAddress(line1="1 Main St", line2=None, city="Austin", postcode="78701", country="US")


@pytest.mark.parametrize(
    ("base_url", "region", "expected"),
    [
        ("https://api-eu1.stannp.com/v1", None, "eu"),
        ("https://api-us1.stannp.com/v1", None, "us"),
        (BASE, None, "eu"),  # a sandbox on loopback: the UK API unless configured
        (BASE, "us", "us"),
        ("https://api-us1.stannp.com/v1", "eu", "eu"),
    ],
)
async def test_the_region_picks_the_create_endpoints_and_their_bodies(
    base_url: str, region: str | None, expected: str
) -> None:
    sb = Recording(region=expected)
    async with connect(sb, base_url=base_url, region=region) as c:
        person = Contact("ann@example.com", "Ann", "Lee", US_ADDRESS)
        group = await c.create_group("Mail")
        result = await c.add_members(group, [person])
    assert result.done == ("ann@example.com",) and sb.group_emails(group.id) == {"ann@example.com"}
    fields = {
        "email": "ann@example.com",
        "firstname": "Ann",
        "lastname": "Lee",
        "address1": "1 Main St",
        "city": "Austin",
        "postcode": "78701",  # the US reference also says postcode
        "country": "US",
        "on_duplicate": "ignore",
        "test_level": "email",
    }
    (_, create_group), _, (_, create_recipient) = [(r.method, r) for r in sb.requests]
    ctypes = [h["content-type"] for m, _, h in sb.headers if m == "POST"]
    if expected == "us":
        assert [r.path for r in sb.requests] == ["/v1/groups/new", "/v1/recipients/list", "/v1/recipients/new"]
        assert body_of(create_group.body) == {"name": "Mail"}
        assert body_of(create_recipient.body) == {**fields, "group_id": group.id}
        assert ctypes == ["application/x-www-form-urlencoded"] * 2
    else:
        assert [r.path for r in sb.requests] == ["/v1/groups/create", "/v1/recipients/list", "/v1/recipients/create"]
        assert json.loads(create_group.body) == {"name": "Mail"}
        assert json.loads(create_recipient.body) == {**fields, "group_id": int(group.id)}
        assert ctypes == ["application/json"] * 2


async def test_a_us_reset_sends_no_delete_recipients_field_at_all() -> None:
    # As a form field, false can only be the string "false", which a loose server reads as true.
    sb = Recording(region="us")
    seed(sb, ["a@example.com"])
    gid = sb.add_group("G", emails(2))
    async with connect(sb, base_url="https://api-us1.stannp.com/v1", cache=warm_cache(sb)) as c:
        await c.reset_members(RemoteGroup(gid, "G"), contacts(["a@example.com"]))
    purge, add = sb.requests
    assert (purge.path, body_of(purge.body)) == ("/v1/groups/purge", {"id": gid})
    assert add.path == f"/v1/groups/add/{gid}" and sb.group_emails(gid) == {"a@example.com"}
    assert_recipients_never_deleted(sb)


def test_region_resolution_and_capabilities() -> None:
    assert resolve_region("https://api-us1.stannp.com/v1") is Region.US
    assert resolve_region("https://us.stannp.com/api/v1") is Region.US  # the old US docs' host
    assert resolve_region("https://api-eu1.stannp.com/v1") is Region.EU
    assert resolve_region("http://127.0.0.1:8080/stannp/v1") is Region.EU
    assert resolve_region("http://127.0.0.1/v1", Region.US) is Region.US
    for region in Region:
        assert capabilities_for(region).required_fields == CAPABILITIES.required_fields  # the US set: the same
    assert (ENDPOINTS[Region.EU].create_recipient, ENDPOINTS[Region.US].create_recipient) == (
        "recipients/create",
        "recipients/new",
    )
    assert settings().region is Region.AUTO and settings(region="us").region is Region.US
    with pytest.raises(ValidationError):
        settings(region="ca")
    assert "api-us" in (StannpSettings.model_fields["region"].description or "")


# ------------------------------------------------------------------------- required fields, duplicates


async def test_a_member_missing_a_required_field_is_rejected_by_the_reconciler_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    sb = sandbox()
    address = {"line1": "1 Test Street", "city": "Leeds", "postcode": "LS1 1AA", "country": "GB"}
    full: dict[str, Any] = {"email": "full@example.com", "first_name": "Ann", "last_name": "Lee", "address": address}
    no_city = {**full, "email": "no.city@example.com", "address": {**address, "city": " "}}
    cfg = {
        "state": {"url": f"sqlite:///{tmp_path}/state.db"},
        "providers": [{"name": "sp", "type": "stannp", "base_url": BASE, "api_key": DEFAULT_KEY, "rate_limit": 1e6}],
        "groups": [{"name": "Post", "members": [full, no_city], "targets": ["sp"]}],
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    config = load_config(path)
    store = Store.open(config.state.url)
    try:
        reconciler = Reconciler(config, store, Metrics(), transport=httpx.ASGITransport(app=sb))
        (pair,) = (await reconciler.run(PassOptions())).pairs
    finally:
        store.close()
    assert pair.add == 1
    assert [(r.email, r.reason) for r in pair.rejected] == [
        ("no.city@example.com", "missing fields sp requires: address.city")
    ]
    assert not any(b"no.city" in r.body for r in sb.requests)  # never sent
    assert sb.count(path=NEW) == 1
    (gid,) = sb.groups
    assert sb.group_emails(gid) == {"full@example.com"}


async def test_the_connector_itself_never_sends_a_contact_lacking_a_required_field() -> None:
    sb = sandbox()
    gid = sb.add_group("G")
    async with connect(sb) as c:
        nameless = Contact("nameless@example.com", address=ADDRESS)
        no_city = Contact("no.city@example.com", "Ann", "Lee", PostalAddress("1 Road", None, None, "LS1 1AA", "GB"))
        result = await c.add_members(RemoteGroup(gid, "G"), [nameless, *contacts(["ok@example.com"]), no_city])
    assert result.done == ("ok@example.com",)
    assert [(r.email, r.reason, r.code) for r in result.rejected] == [
        ("nameless@example.com", "missing fields stannp requires: first_name, last_name", "missing_fields"),
        ("no.city@example.com", "missing fields stannp requires: address.city", "missing_fields"),
    ]
    assert sb.count(path=NEW) == 1 and not any(b"nameless" in r.body or b"no.city" in r.body for r in sb.requests)


class NameMatching(StannpSandbox):
    """A server that does not honour test_level: duplicates are matched on name and address, the default."""

    def _duplicate_of(self, form: dict[str, str]) -> Recipient | None:
        return super()._duplicate_of({k: v for k, v in form.items() if k != "test_level"})


async def test_an_ignore_answer_naming_someone_elses_recipient_is_a_reject_not_a_member() -> None:
    sb = NameMatching(limit=None)
    other = sb.add_recipient("old.address@example.com", firstname="Ann", lastname="Lee", address1="1 Test Street")
    gid = sb.add_group("G")
    bob = PostalAddress("2 Other Road", None, "York", "YO1 7HH", "GB")
    people = [
        Contact("ann.new@example.com", "Ann", "Lee", ADDRESS),  # Stannp answers `other`, listed under another email
        Contact("bob@example.com", "Bob", "Ray", bob),  # new
        Contact("bob.twin@example.com", "Bob", "Ray", bob),  # answered bob's recipient, created this pass
    ]
    async with connect(sb, max_concurrency=1) as c:
        result = await c.add_members(RemoteGroup(gid, "G"), people)
    assert result.done == ("bob@example.com",)
    assert [(r.email, r.code) for r in result.rejected] == [
        ("ann.new@example.com", "duplicate_match"),
        ("bob.twin@example.com", "duplicate_match"),
    ]
    assert result.rejected[0].reason == f"{MATCHED_ANOTHER} (recipient {other}); merge or correct them in Stannp"
    assert sb.recipient_count() == 2  # nobody duplicated
    (bob_id,) = sb.recipients_with_email("bob@example.com")
    assert c.cache.all() == {"old.address@example.com": other, "bob@example.com": bob_id}


async def test_an_existing_recipient_that_ignore_did_not_join_is_added_on_the_next_pass() -> None:
    # The docs say group_id adds the recipient to the group; should a server not do so for a recipient that
    # on_duplicate=ignore matched, the next pass reads the person as missing and adds the learnt id.
    sb = sandbox(ignore_joins_group=False)
    gid = sb.add_group("G")
    group = RemoteGroup(gid, "G")
    cache = MemoryRecipientCache()
    async with connect(sb, cache=cache) as first:
        await first.prepare_adds(contacts(["late@example.com"]))  # listed: nobody has this email yet
        rid = sb.add_recipient("late@example.com")  # ...then someone creates them in the dashboard
        assert (await first.add_members(group, contacts(["late@example.com"]))).done == ("late@example.com",)
    assert sb.group_ids(gid) == [] and sb.recipients_with_email("late@example.com") == [rid]
    sb.clear_log()
    async with connect(sb, cache=cache) as second:
        assert await second.read_members(group) == []
        await second.add_members(group, contacts(["late@example.com"]))
    assert sb.group_ids(gid) == [rid]
    assert [(r.method, r.path) for r in sb.requests] == [
        ("GET", "/v1/recipients/list"),
        ("GET", "/v1/groups/list"),  # an empty read checks the group exists
        ("POST", f"/v1/groups/add/{gid}"),
    ]


# ------------------------------------------------------------------------------------- groups/remove


async def test_remove_is_a_post_and_a_405_switches_to_delete_for_good() -> None:
    for methods, expected in (
        (("POST", "DELETE"), [("POST", 200), ("POST", 200)]),
        (("DELETE",), [("POST", 405), ("DELETE", 200), ("DELETE", 200)]),  # as the newest UK page shows
    ):
        sb = sandbox(remove_methods=methods)
        people = emails(4)
        gid = sb.add_group("G", people)
        async with connect(sb) as c:
            group = RemoteGroup(gid, "G")
            read = await c.read_members(group)
            sb.clear_log()
            assert len((await c.remove_members(group, read[:1])).done) == 1
            assert len((await c.remove_members(group, read[1:2])).done) == 1
        assert [(r.method, r.status) for r in sb.requests] == expected
        assert sb.group_emails(gid) == set(people[2:])


# ------------------------------------------------------------------------------------ remove, reset


async def test_remove_sends_comma_separated_ids_in_batches_and_is_idempotent() -> None:
    sb = sandbox()
    people = emails(2500)
    gid = sb.add_group("G", people)
    async with connect(sb) as c:
        group = RemoteGroup(gid, "G")
        members = await c.read_members(group)
        sb.clear_log()
        result = await c.remove_members(group, members[:2100])
        assert len(result.done) == 2100
        assert [(r.method, r.path) for r in sb.requests] == [("POST", f"/v1/groups/remove/{gid}")] * 3
        first = body_of(sb.requests[0].body)["recipients"].split(",")
        assert first == [m.id for m in members[:1000]]
        assert sb.group_emails(gid) == {m.email for m in members[2100:]}
        sb.clear_log()
        again = await c.remove_members(group, members[:3])  # not members any more: still a success
        assert len(again.done) == 3 and sb.count() == 1
    assert sb.recipient_count() == 2500  # removing from a group never deletes a recipient


async def test_remove_of_a_deleted_recipient_still_removes_the_rest() -> None:
    sb = sandbox()
    people = emails(4)
    gid = sb.add_group("G", people)
    async with connect(sb) as c:
        group = RemoteGroup(gid, "G")
        members = [m for m in await c.read_members(group) if m.key != people[3]]
        assert members[0].id is not None
        sb.delete_recipient(members[0].id)
        result = await c.remove_members(group, [*members, RemoteMember(email="never.seen@example.com")])
    assert sorted(result.done) == sorted([*people[:3], "never.seen@example.com"])
    assert sb.group_emails(gid) == {people[3]}


def members(addresses: Sequence[str], *, address: bool = True) -> tuple[Member, ...]:
    if not address:
        return tuple(Member(email=e) for e in addresses)
    return tuple(Member(email=e, first_name="Ann", last_name="Lee", address=ADDRESS) for e in addresses)


async def test_reset_is_purge_then_adds_only_with_allow_non_atomic_reset_and_never_deletes_recipients() -> None:
    sb = sandbox()
    old, new = emails(1500, "old"), emails(1000, "new")  # 1 add + 2 removes, or a purge + 1 add
    seed(sb, new)
    gid = sb.add_group("G", old)
    async with connect(sb, cache=warm_cache(sb), allow_non_atomic_reset=True) as c:
        group = RemoteGroup(gid, "G")
        actual = tuple(await c.read_members(group))

        def planned(allow: bool) -> Plan:
            return plan(
                group="G",
                provider="stannp",
                desired=members(new),
                actual=actual,
                capabilities=c.capabilities,
                policy=RemovalPolicy.MIRROR,
                guard=Guard(allow_mass_removal=True),
                allow_non_atomic_reset=allow,
            )

        cautious = planned(False)
        assert cautious.strategy is Strategy.INCREMENTAL
        assert [op.kind for op in cautious.ops] == [OpKind.ADD, OpKind.REMOVE, OpKind.REMOVE]
        allowed = planned(True)
        assert allowed.strategy is Strategy.RESET and [op.kind for op in allowed.ops] == [OpKind.RESET]
        sb.clear_log()
        result = await c.reset_members(group, allowed.ops[0].contacts)
    assert len(result.done) == 1000 and not result.rejected
    assert [(r.method, r.path) for r in sb.requests] == [
        ("POST", "/v1/groups/purge"),
        ("POST", f"/v1/groups/add/{gid}"),
    ]
    assert json.loads(sb.requests[0].body) == {"id": int(gid), "delete_recipients": False}
    assert sb.group_emails(gid) == set(new)
    assert sb.recipient_count() == 2500  # the old members are out of the group, not deleted
    assert_recipients_never_deleted(sb)


async def test_a_reset_resolves_before_it_purges() -> None:
    sb = sandbox()
    gid = sb.add_group("G", emails(2, "old"))
    async with connect(sb) as c:
        result = await c.reset_members(RemoteGroup(gid, "G"), contacts(["fresh@example.com"]))
    assert result.done == ("fresh@example.com",)
    assert [r.path.rsplit("/", 2)[-1] for r in sb.requests] == ["list", "purge", "create"]
    assert sb.group_emails(gid) == {"fresh@example.com"}
    assert_recipients_never_deleted(sb)


async def test_the_sandbox_honours_delete_recipients_so_the_checks_above_mean_something() -> None:
    sb = sandbox()
    gid = sb.add_group("G", emails(3))
    other = sb.add_group("Other", emails(3))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sb), base_url=BASE + "/") as http:
        auth = {"Authorization": f"Bearer {DEFAULT_KEY}"}
        answer = await http.post("groups/purge", json={"id": int(gid), "delete_recipients": True}, headers=auth)
    assert answer.json() == {"success": True, "data": True}
    assert sb.recipient_count() == 0 and sb.group_emails(other) == set()  # gone from every group
    with pytest.raises(AssertionError, match="delete_recipients=True"):
        assert_recipients_never_deleted(sb)


# ------------------------------------------------------------------------------ the planner's rejects


def test_the_planner_rejects_members_missing_the_fields_stannp_requires() -> None:
    partial = Member("partial@example.com", "P", "Q", PostalAddress(line1="1 Road", postcode=" ", country="GB"))
    no_names = Member("no.names@example.com", address=ADDRESS)
    present = Member("present@example.com")  # already in the group without an address: not ours to reject
    the_plan = plan(
        group="G",
        provider="stannp",
        desired=(
            *members(["ok@example.com"]),
            *members(["bare@example.com"], address=False),
            partial,
            no_names,
            present,
        ),
        actual=(RemoteMember(email="present@example.com", id="1"),),
        capabilities=CAPABILITIES,
        policy=RemovalPolicy.MIRROR,
        guard=Guard(),
    )
    assert [m.email for m in the_plan.to_add] == ["ok@example.com"]
    everything = "address.city, address.country, address.line1, address.postcode, first_name, last_name"
    assert [(r.email, r.reason) for r in the_plan.rejected] == [
        ("bare@example.com", f"missing fields stannp requires: {everything}"),
        ("partial@example.com", "missing fields stannp requires: address.city, address.postcode"),
        ("no.names@example.com", "missing fields stannp requires: first_name, last_name"),
    ]
    assert {str(r.code) for r in the_plan.rejected} == {"missing_fields"}


# ------------------------------------------------------------------------------------------- pacing


class VirtualTime:
    """A clock both the sandbox's rate-limit window and the connector's token bucket read. It starts at the
    real monotonic time, so it also agrees with anything still timed on time.monotonic()."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def paced(
    sb: StannpSandbox, vt: VirtualTime, *, rate: float = 5.0, burst: int = 1, retries: int = 5
) -> StannpConnector:
    client = make_client(BASE, auth=ApiKeyBasicAuth(SecretStr(DEFAULT_KEY)), transport=httpx.ASGITransport(app=sb))
    return StannpConnector(
        "stannp",
        client,
        pacing=Pacing(rate=rate, burst=burst, max_concurrency=4),
        retry=RetryPolicy(max_retries=retries, backoff_base=0, jitter=0),
        cache=MemoryRecipientCache(),
        clock=vt.clock,
        sleep=vt.sleep,
    )


def served(sb: StannpSandbox, start: float) -> list[tuple[float, int]]:
    return [(at - start, status) for at, _, _, status in sb.timeline]


async def test_pacing_slows_as_remaining_falls() -> None:
    vt = VirtualTime()
    sb = StannpSandbox(limit=300, window=60, clock=vt.clock)
    start = vt.now
    async with paced(sb, vt, rate=5.0) as c:
        for _ in range(3):  # a window wide open: the plan's 5/s
            await c.api.request("GET", "groups/list")
        sb.consume(287)  # another client of the account takes most of the window: 10 left
        for _ in range(12):
            await c.api.request("GET", "groups/list")
    times = served(sb, start)
    assert len(times) == 15 and all(status == 200 for _, status in times)  # no 429
    gaps = [round(b[0] - a[0], 2) for a, b in itertools.pairwise(times)]
    assert gaps[:3] == [0.2, 0.2, 0.2]  # 1/rate while the window is wide open
    # Remaining 9, 8, ... 1 are spread over what is left of the window: gaps of about reset/remaining seconds.
    assert gaps[3] == pytest.approx((60 - times[3][0]) / 9, rel=0.05)
    assert all(6 < g < 7.5 for g in gaps[3:11])
    assert times[11][0] < 60 <= times[12][0]  # the last of the 10 went in this window, the next in a new one
    assert gaps[12:] == [0.2, 0.2]  # and the new window goes at the plan's rate again


async def test_pacing_waits_for_the_reset_when_remaining_reaches_zero() -> None:
    vt = VirtualTime()
    sb = StannpSandbox(limit=300, window=60, clock=vt.clock)
    start = vt.now
    sb.consume(299)  # one request left in this window
    async with paced(sb, vt, rate=5.0, burst=5) as c:
        for _ in range(3):
            await c.api.request("GET", "groups/list")
    times = served(sb, start)
    assert [status for _, status in times] == [200, 200, 200]  # waited instead of running into a 429
    assert times[0][0] == 0 and 60 <= times[1][0] <= 61 and times[2][0] - times[1][0] == pytest.approx(0.2, rel=0.01)


async def test_a_spent_window_is_waited_out_and_the_429_does_not_use_the_retry_budget() -> None:
    vt = VirtualTime()
    sb = StannpSandbox(limit=300, window=60, clock=vt.clock)
    start = vt.now
    sb.consume(300)  # the window is spent before we start
    async with paced(sb, vt, retries=0) as c:
        await c.api.request("GET", "groups/list")
    (t0, s0), (t1, s1) = served(sb, start)
    assert (s0, s1) == (429, 200)
    assert t0 == 0 and 60 <= t1 <= 61  # X-RateLimit-Reset said when; no Retry-After was needed


async def test_a_429_with_retry_after_is_honoured() -> None:
    vt = VirtualTime()
    sb = StannpSandbox(limit=None, clock=vt.clock)
    sb.inject(Fault(status=429, retry_after=2, body={"success": False, "error": "slow down"}))
    start = vt.now
    async with paced(sb, vt, retries=0) as c:
        assert await c.find_group(name="x") is None
    assert [r.status for r in sb.requests] == [429, 200]
    ((t1, _),) = served(sb, start)  # the fault answer is not in the timeline; the retry is
    assert 2 <= t1 < 3


async def test_a_sync_of_600_new_people_at_300_per_minute_never_hits_the_limit() -> None:
    vt = VirtualTime()
    sb = StannpSandbox(limit=300, window=60, clock=vt.clock)
    gid = sb.add_group("G")
    start = vt.now
    async with paced(sb, vt, rate=5.0, burst=5) as c:
        people = contacts(emails(600))
        with count_requests() as tally:
            await c.prepare_adds(people)
            for chunk in applier_chunks(people):
                await c.add_members(RemoteGroup(gid, "G"), chunk)
    times = served(sb, start)
    assert tally.as_dict() == {"read": 1, "write": 600}
    assert all(status == 200 for _, status in times)
    windows: dict[int, int] = {}
    for t, _ in times:
        windows[int(t // 60)] = windows.get(int(t // 60), 0) + 1
    assert max(windows.values()) <= 300
    print(f"\n600 new at 300/min: {len(times)} requests over {times[-1][0]:.1f} virtual s (bound {601 / 5:.0f} s)")


def test_quota_reading() -> None:
    request = httpx.Request("GET", BASE + "/groups/list")

    def quota(**headers: str) -> tuple[int, float] | None:
        q = read_quota(httpx.Response(200, headers=headers, request=request))
        return None if q is None else (q.remaining, round(q.reset_in))

    assert quota(**{"X-RateLimit-Remaining": "12", "X-RateLimit-Reset": "40", "X-RateLimit-Limit": "300"}) == (12, 40)
    assert quota(**{"X-RateLimit-Remaining": "900", "X-RateLimit-Reset": "40", "X-RateLimit-Limit": "300"}) == (300, 40)
    epoch = str(int(time.time()) + 30)  # a Reset given as a timestamp
    assert quota(**{"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": epoch}) in ((5, 29), (5, 30))
    assert quota() is None


# ------------------------------------------------------------------------------------------- errors


def _answer(status: int, body: Any, path: str = "/v1/groups/create") -> httpx.Response:
    request = httpx.Request("POST", "http://127.0.0.1" + path)
    if isinstance(body, str):
        return httpx.Response(status, text=body, request=request)
    return httpx.Response(status, json=body, request=request)


def test_classify_checks_success_even_on_http_200() -> None:
    assert classify(_answer(200, {"success": True, "data": "39"})) is None
    assert classify(_answer(200, [1, 2])) is None
    refused = classify(_answer(200, {"success": False, "error": "name is required"}))
    assert type(refused) is FatalError and refused.message.endswith("name is required") and refused.status == 200
    add = classify(_answer(400, {"success": False, "error": "recipient 7 does not exist"}, "/v1/groups/add/3"))
    assert isinstance(add, BatchRejected) and "recipient 7" in add.message
    assert isinstance(classify(_answer(200, {"success": False, "error": "x"}, "/v1/groups/remove/3")), BatchRejected)
    bad_key = classify(_answer(401, {"success": False, "error": AUTH_ERROR}))
    assert isinstance(bad_key, AuthError) and AUTH_ERROR in bad_key.message and "region" in bad_key.message
    assert isinstance(classify(_answer(200, {"success": False, "error": AUTH_ERROR})), AuthError)
    assert isinstance(classify(_answer(404, {"success": False, "error": "Group not found"})), NotFound)
    assert isinstance(classify(_answer(429, {"success": False, "error": "slow"})), RateLimited)
    assert isinstance(classify(_answer(503, "Service Unavailable")), TransientError)
    shapes = [
        {"success": False, "error": {"message": "nested"}},
        {"success": False, "error": ["nested"]},
        {"success": False, "message": "nested"},
    ]
    for body in shapes:
        error = classify(_answer(400, body, "/v1/groups/create"))
        assert type(error) is FatalError and error.status == 400 and "nested" in error.message
        refused = classify(_answer(400, body, "/v1/recipients/new"))
        assert isinstance(refused, RecipientRefused) and refused.reason == "nested" and refused.status == 400
    on_200 = classify(_answer(200, {"success": False, "error": "bad country"}, "/v1/recipients/new"))
    assert isinstance(on_200, RecipientRefused) and on_200.reason == "bad country"
    assert isinstance(classify(_answer(404, {"success": False}, "/v1/recipients/new")), NotFound)


async def test_a_bad_key_is_an_auth_error_for_both_schemes_and_the_key_never_shows() -> None:
    sb = sandbox()
    sb.add_group("G")
    for scheme in ("basic", "bearer"):
        async with (
            connect(sb, auth_scheme=scheme) as good,
            connect(sb, auth_scheme=scheme, api_key="wrong-key-123") as bad,
        ):
            assert await good.find_group(name="G") is not None
            with pytest.raises(AuthError) as caught:
                await bad.find_group(name="G")
        assert caught.value.status == 401 and AUTH_ERROR in caught.value.message
        assert "wrong-key-123" not in str(caught.value)
    assert [r.status for r in sb.requests] == [200, 401, 200, 401]  # a bad key is not retried


async def test_basic_auth_is_the_key_with_an_empty_password_and_bearer_the_key() -> None:
    sb = Recording()
    for scheme in ("basic", "bearer"):
        async with connect(sb, auth_scheme=scheme) as c:
            await c.find_group(name="G")
    basic, bearer = (h["authorization"] for _, _, h in sb.headers)
    assert basic == "Basic " + base64.b64encode(f"{DEFAULT_KEY}:".encode()).decode()
    assert bearer == f"Bearer {DEFAULT_KEY}"


async def test_every_answer_carries_rate_limit_headers() -> None:
    sb = StannpSandbox(limit=300)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sb), base_url=BASE + "/") as http:
        ok = await http.get("groups/list", headers={"Authorization": f"Bearer {DEFAULT_KEY}"})
        denied = await http.get("groups/list")
        missing = await http.get("nope", headers={"Authorization": f"Bearer {DEFAULT_KEY}"})
    for answer, remaining in ((ok, "299"), (denied, "298"), (missing, "297")):
        assert answer.headers["X-RateLimit-Limit"] == "300"
        assert answer.headers["X-RateLimit-Remaining"] == remaining
        assert 0 < int(answer.headers["X-RateLimit-Reset"]) <= 60
    assert denied.status_code == 401 and denied.json() == {"success": False, "error": AUTH_ERROR}
    assert missing.status_code == 404


# ------------------------------------------------------------------------ building to the API, not to us


async def test_ids_given_as_numbers_work_everywhere() -> None:
    sb = sandbox(int_ids=True)
    seed(sb, emails(3))
    async with connect(sb) as c:
        group = await c.create_group("Numbers")
        assert group.id.isdigit()
        assert (await c.find_group(group_id=group.id)) == group
        result = await c.add_members(group, contacts([*emails(3), "new@example.com"]))
        assert len(result.done) == 4
        read = await c.read_members(group)
        assert sorted(m.key for m in read) == sorted([*emails(3), "new@example.com"])
        await c.remove_members(group, read[:1])
        await c.reset_members(group, contacts(emails(1)))
    assert sb.group_emails(group.id) == set(emails(1))


async def test_bare_bodies_without_a_data_envelope_are_accepted() -> None:
    groups = [{"id": 7, "name": "Bare", "recipients": 1}]

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/groups/list"):
            return httpx.Response(200, json=groups if request.url.params["offset"] == "0" else [])
        if path.endswith("/groups/create"):
            return httpx.Response(200, json={"success": True, "id": 8})
        if path.endswith("/recipients/list"):
            if request.url.params["offset"] != "0":
                return httpx.Response(200, json={"success": True, "data": False})
            return httpx.Response(200, json={"success": True, "data": {"recipients": [{"id": 99, "email": "x@y.org"}]}})
        if path.endswith("/recipients/create"):
            if b"quiet" in request.content:  # success without naming the id
                return httpx.Response(200, json={"success": True})
            return httpx.Response(200, json={"success": True, "data": 123})
        return httpx.Response(200, json={"success": True, "data": 1})

    client = make_client(BASE, auth=BearerAuth(SecretStr("k")), transport=httpx.MockTransport(answer))
    async with StannpConnector("stannp", client, pacing=Pacing(rate=0), cache=MemoryRecipientCache()) as c:
        assert await c.find_group(name="Bare") == RemoteGroup("7", "Bare", 1)
        assert (await c.create_group("Made")).id == "8"
        assert await c.read_members(RemoteGroup("7", "Bare")) == [RemoteMember("x@y.org", "99")]
        added = await c.add_members(RemoteGroup("7", "Bare"), contacts(["n@y.org", "quiet@y.org"]))
        assert sorted(added.done) == ["n@y.org", "quiet@y.org"]
        assert c.cache.all() == {"x@y.org": "99", "n@y.org": "123"}


# ------------------------------------------------------------------------------ settings and secrets


def test_settings_defaults_and_validation() -> None:
    s = StannpSettings.model_validate({"name": "stannp", "type": "stannp", "api_key": "k"})
    assert s.base_url == "https://api-eu1.stannp.com/v1" and s.auth_scheme == "auto"  # basic, else bearer
    assert s.pacing(CAPABILITIES.pacing) == Pacing(rate=5.0, burst=5, max_concurrency=4)
    us = settings(base_url="https://api-us1.stannp.com/v1", auth_scheme="bearer")
    assert us.base_url.endswith("us1.stannp.com/v1") and us.auth_scheme == "bearer"
    for bad in (
        {"api_key": None},
        {"api_key": "  "},
        {"auth_scheme": "digest"},
        {"base_url": "http://api-eu1.stannp.com/v1"},  # plain http off loopback
        {"type": "communic8"},
        {"surprise": 1},
    ):
        with pytest.raises(ValidationError):
            settings(**bad)
    for name, f in StannpSettings.model_fields.items():
        assert f.description, f"{name} is undocumented"
    assert "api-us1.stannp.com" in (StannpSettings.model_fields["base_url"].description or "")


def test_capabilities_and_batch_size() -> None:
    assert CAPABILITIES.member_key.value == "id" and CAPABILITIES.reset is ResetKind.NON_ATOMIC
    assert (CAPABILITIES.max_add_batch, CAPABILITIES.max_remove_batch) == (1000, 1000)
    assert CAPABILITIES.can_create_group and CAPABILITIES.can_remove
    assert CAPABILITIES.required_fields == {
        "first_name",
        "last_name",
        "address.line1",
        "address.city",
        "address.postcode",
        "address.country",
    }
    small = connect(sandbox(), batch_size=250)
    assert small.capabilities.max_add_batch == 250 == small.capabilities.max_remove_batch


async def test_secrets_never_show() -> None:
    s = settings(api_key="sk-secret-123456")
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "sk-secret-123456" not in text
    for scheme in ("basic", "bearer"):
        async with connect(sandbox(), api_key="sk-secret-123456", auth_scheme=scheme) as c:
            assert "sk-secret-123456" not in repr(c) + repr(c.api.client.auth)


async def test_no_email_or_key_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    sb = sandbox()
    seed(sb, emails(3))
    gid = sb.add_group("G", emails(1, "old"))
    async with connect(sb) as c:
        caplog.set_level(logging.DEBUG)
        group = RemoteGroup(gid, "G")
        await c.add_members(group, contacts([*emails(3), "new@example.com"]))
        await c.add_members(group, [Contact("bad@example.com")])
        await c.remove_members(group, await c.read_members(group))
        await c.reset_members(group, contacts(emails(2)))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "@example.com" not in text and DEFAULT_KEY not in text
    assert all(r.levelno <= logging.DEBUG for r in caplog.records if r.name.startswith("syncd.connectors"))


# ----------------------------------------------------------------------------- the sandbox as documented


async def test_sandbox_routes_follow_the_docs() -> None:
    sb = sandbox()
    ids = seed(sb, emails(1001))
    gid = sb.add_group("G")
    auth = {"Authorization": f"Bearer {DEFAULT_KEY}"}
    person = {"firstname": "Zed", "lastname": "Ray", "address1": "1 Main", "city": "York", "postcode": "YO1 7HH"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sb), base_url=BASE + "/", headers=auth) as http:
        too_many = await http.post(f"groups/add/{gid}", json={"recipients": ",".join(ids)})
        unknown = await http.post(f"groups/add/{gid}", json={"recipients": f"{ids[0]},1"})
        added = await http.post(f"groups/add/{gid}", json={"recipients": f"{ids[0]},{ids[1]}"})
        default_page = (await http.get("recipients/list")).json()["data"]
        capped = (await http.get("recipients/list", params={"limit": 5000})).json()["data"]
        no_address = await http.post("recipients/create", json={"email": "n@example.com", "country": "GB"})
        no_city = await http.post("recipients/create", json={**person, "city": "", "country": "GB"})
        made = await http.post("recipients/create", json={**person, "email": "z@example.com", "country": "GB"})
        dup = await http.post("recipients/create", json={**person, "email": "Z@example.com", "country": "GB"})
        us_path = await http.post("recipients/new", data={**person, "country": "GB"})  # the US API's path
        us_group = await http.post("groups/new", data={"name": "US"})
        calc = await http.post(f"groups/calculate/{gid}")
        gone = await http.post("groups/add/12345", json={"recipients": ids[0]})
        listed = (await http.get("groups/list")).json()["data"]
        removed_by_post = await http.post(f"groups/remove/{gid}", json={"recipients": ids[0]})
        removed_by_delete = await http.request("DELETE", f"groups/remove/{gid}", json={"recipients": ids[1]})
        deleted = await http.request("DELETE", "groups/delete", json={"id": int(gid)})
    assert too_many.status_code == 400 and "at most 1000" in too_many.json()["error"]
    assert unknown.status_code == 400 and unknown.json()["success"] is False
    assert added.json() == {"success": True, "data": 2}
    assert len(default_page) == 100 and len(capped) == 1000
    fields = "id email firstname lastname company address1 address2 city postcode country ref_id"
    assert set(default_page[0]) == set(fields.split())
    assert isinstance(default_page[0]["id"], str) and default_page[0]["id"].isdigit()
    assert no_address.status_code == 400
    assert no_address.json() == {
        "success": False,
        "error": "firstname, lastname, address1, city, postcode are required",
    }
    assert no_city.status_code == 400 and no_city.json()["error"] == "city is required"
    assert made.json()["success"] is True and made.json()["data"]["valid"] is True
    assert dup.json()["data"]["id"] != made.json()["data"]["id"]  # on_duplicate defaults to a duplicate
    assert us_path.status_code == 404 and us_group.status_code == 404  # the UK API has /create, not /new
    assert calc.json() == {"success": True, "data": True}
    assert gone.status_code == 404
    assert listed[0]["recipients"] == "2" and listed[0]["id"] == gid
    assert removed_by_post.json() == removed_by_delete.json() == {"success": True, "data": 1}  # POST, as the SDKs
    assert deleted.json() == {"success": True, "data": True} and not sb.groups
    assert sb.recipient_count() == 1003  # deleting a group without delete_recipients keeps them


async def test_the_us_sandbox_serves_the_us_paths_and_legacy_paths_are_a_knob() -> None:
    auth = {"Authorization": f"Bearer {DEFAULT_KEY}"}
    address = {"firstname": "Zed", "lastname": "Ray", "address1": "1 Main St", "city": "Austin", "country": "US"}
    answers: dict[str, list[int]] = {}
    for name, sb in (("us", sandbox(region="us")), ("eu+legacy", sandbox(legacy_paths=True))):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sb), base_url=BASE + "/", headers=auth) as h:
            answers[name] = [
                (await h.post("groups/new", data={"name": "A"})).status_code,
                (await h.post("groups/create", json={"name": "B"})).status_code,
                (await h.post("recipients/new", data={**address, "zipcode": "78701"})).status_code,  # as postcode
                (await h.post("recipients/new", data={"email": "x@example.com", "country": "US"})).status_code,
                (await h.post("recipients/create", json={**address, "postcode": "78701"})).status_code,
            ]
    assert answers == {"us": [200, 404, 200, 400, 404], "eu+legacy": [200, 200, 200, 400, 200]}
    with pytest.raises(ValueError, match="region"):
        StannpSandbox(region="ca")


async def test_the_sandbox_on_duplicate_values() -> None:
    sb = sandbox()
    gid = sb.add_group("G")
    old = sb.add_recipient("ann@example.com", firstname="Ann", lastname="Lee", address1="1 Road", postcode="LS1 1AA")
    auth = {"Authorization": f"Bearer {DEFAULT_KEY}"}
    ann = {"firstname": "Ann", "lastname": "Lee", "address1": "1 Road", "city": "Leeds", "postcode": "LS1 1AA"}
    moved = {**ann, "address1": "9 New Street", "country": "GB", "group_id": int(gid)}

    async def create(http: httpx.AsyncClient, **fields: Any) -> str:
        answer = await http.post("recipients/create", json=fields)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["data"]["id"])

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sb), base_url=BASE + "/", headers=auth) as http:
        # test_level=email: the same email (any case) is the duplicate, wherever they live now
        ignored = await create(http, **moved, email="ANN@example.com", on_duplicate="ignore", test_level="email")
        # the default test_level (fullname): name, address line 1 and postcode; a new address is someone new
        by_name = await create(http, **ann, country="GB", email="other@example.com", on_duplicate="ignore")
        someone_new = await create(http, **moved, email="ann@example.com", on_duplicate="ignore")
        # duplicate, and anything undocumented (update): the default, a second recipient
        duplicated = await create(http, **moved, email="ann@example.com", on_duplicate="duplicate", test_level="email")
        updated = await create(http, **moved, email="ann@example.com", on_duplicate="update", test_level="email")
        replaced = await create(http, **moved, email="ann@example.com", on_duplicate="replace", test_level="email")
    assert ignored == old == by_name == replaced
    assert len({old, someone_new, duplicated, updated}) == 4
    assert sb.recipients[int(old)].address1 == "9 New Street"  # replace overwrote; ignore left it alone
    assert sb.group_ids(gid) == [old, someone_new, duplicated, updated]  # ignore joined group_id too
    assert len(sb.recipients_with_email("ann@example.com")) == 4


# --------------------------------------------------- other answers an independent server may give


@pytest.mark.parametrize(("cap", "n", "known_count", "reads"), [(100, 250, False, 3), (30, 70, True, 3)])
async def test_member_reads_survive_a_server_capping_pages_below_1000(
    cap: int, n: int, known_count: bool, reads: int
) -> None:
    # The listing has no total and its cap is unverified: a server capping below the 1000 asked (at its
    # default 100, or at 30 with the group listing counting 70) must not have the group cut after one page.
    sb = sandbox(page_cap=cap)
    people = emails(n)
    gid = sb.add_group("Big", people)
    async with connect(sb) as c:
        group = await c.find_group(group_id=gid) if known_count else RemoteGroup(gid, "Big")
        assert group is not None and (group.member_count == n) is known_count
        sb.clear_log()
        with count_requests() as tally:
            members = await c.read_members(group)
    assert sorted(m.key for m in members) == people
    assert tally.read == reads == sb.count()


async def test_the_group_listing_survives_a_server_capping_pages_below_50() -> None:
    sb = sandbox(page_cap=20)
    ids = [sb.add_group(f"Team {i}") for i in range(45)]
    async with connect(sb) as c:
        found = await c.find_group(name="Team 44")
        assert found is not None and found.id == ids[44]
        assert [dict(parse_qsl(r.query))["offset"] for r in sb.requests] == ["0", "20", "40"]


async def test_the_account_listing_survives_a_capped_page_so_existing_people_are_not_created() -> None:
    sb = sandbox(page_cap=100)
    existing = emails(250)
    seed(sb, existing)
    gid = sb.add_group("G")
    async with connect(sb) as c:
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(existing))
    assert sorted(result.done) == existing and not result.rejected
    assert sb.count(path=LISTING) == 3  # 100 + 100 + 50
    assert sb.count(path=NEW) == 0 and sb.count(path=ADD) == 1  # one groups/add, no recipients/new
    assert sb.group_emails(gid) == set(existing)


@pytest.mark.parametrize(("schemes", "first_401s"), [(("bearer",), 1), (("basic",), 0), (("basic", "bearer"), 0)])
async def test_the_default_auth_works_whichever_way_the_server_takes_the_key(
    schemes: tuple[str, ...], first_401s: int
) -> None:
    # PROVIDERS.md documents HTTP Basic; the groups excerpt's examples all send `Authorization: Bearer`. A server
    # taking only one of them must work with the default settings, at the cost of one refused request at most.
    sb = sandbox(schemes=schemes)
    gid = sb.add_group("G", emails(3))
    async with connect(sb, auth_scheme=None) as c:  # the default
        with count_requests() as tally:
            group = await c.find_group(group_id=gid)
            assert group is not None
            assert sorted(m.key for m in await c.read_members(group)) == emails(3)
            await c.add_members(group, contacts(["new@example.com"]))
    assert [r.status for r in sb.requests].count(401) == first_401s  # learnt once, kept afterwards
    assert all(r.status == 200 for r in sb.requests[first_401s:])
    assert tally.as_dict() == {"read": 3, "write": 1}  # a refused scheme is not a request of the pair's


async def test_a_bad_key_with_the_default_auth_is_tried_both_ways_then_an_auth_error() -> None:
    sb = sandbox()
    async with connect(sb, auth_scheme=None, api_key="wrong-key-123") as c:
        with pytest.raises(AuthError) as caught:
            await c.find_group(name="G")
    assert caught.value.status == 401 and "wrong-key-123" not in str(caught.value) + repr(c.api.client.auth)
    assert [r.status for r in sb.requests] == [401, 401]
