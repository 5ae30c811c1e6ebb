"""Bitcaster-specific behaviour, over HTTP against the bundled sandbox (no patching of our own code).

Pacing is measured on a virtual clock shared by the connector's token bucket and the sandbox's throttle, so
nothing here sleeps for real or asserts on wall-clock time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from connectors.base import (
    AuthError,
    BatchRejected,
    Contact,
    FatalError,
    NotFound,
    ProtocolError,
    RateLimited,
    RemoteGroup,
    RemoteMember,
    TransientError,
    UnsupportedOperation,
)
from connectors.bitcaster import (
    CAPABILITIES,
    MAX_ADD,
    PACING,
    UNKNOWN_ADDRESS,
    BitcasterConnector,
    BitcasterSettings,
    build,
    classify,
    isolate_rejects,
)
from connectors.http import TokenBucket, count_requests
from connectors.sandbox._core import Fault, Request, Response
from connectors.sandbox.bitcaster import API, DEFAULT_KEY, DEFAULT_ORG, DEFAULT_PROJECT, BitcasterSandbox
from connectors.settings import BuildContext

BASE = "http://127.0.0.1" + API
ROOT = f"{API}/o/{DEFAULT_ORG}/p/{DEFAULT_PROJECT}/d/"
ADD = "/add/$"


def settings(**overrides: Any) -> BitcasterSettings:
    values: dict[str, Any] = {
        "name": "bc",
        "type": "bitcaster",
        "base_url": BASE,
        "token": DEFAULT_KEY,
        "organization": DEFAULT_ORG,
        "project": DEFAULT_PROJECT,
        "rate_limit": 1e6,
        "retry": {"backoff_base": 0},
    }
    values.update(overrides)
    return BitcasterSettings.model_validate({k: v for k, v in values.items() if v is not None})


def connect(sandbox: BitcasterSandbox, **overrides: Any) -> BitcasterConnector:
    return build(settings(**overrides), BuildContext(transport=httpx.ASGITransport(app=sandbox)))


def quiet_sandbox(**kwargs: Any) -> BitcasterSandbox:
    """A sandbox without its throttle, for tests that are not about pacing."""
    sandbox = BitcasterSandbox(**kwargs)
    sandbox.rate_limit = None
    return sandbox


def people(n: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i:04d}@example.com" for i in range(n)]


def contacts(emails: Sequence[str]) -> list[Contact]:
    return [Contact(email=e) for e in emails]


def raw(sandbox: BitcasterSandbox, key: str | None = DEFAULT_KEY) -> httpx.AsyncClient:
    headers = {"Authorization": f"Key {key}"} if key else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox), base_url="http://127.0.0.1", headers=headers)


class VirtualTime:
    """A clock that `sleep` advances. It starts at the real monotonic time and stays `offset` ahead of it, so
    `ApiClient`'s own `time.monotonic() + Retry-After` pause lands on the same timeline."""

    def __init__(self) -> None:
        self.offset = 0.0

    def clock(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.offset += max(0.0, seconds)
        await asyncio.sleep(0)


class TimedSandbox(BitcasterSandbox):
    """Notes the (virtual) time at which each request arrived."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.times: list[float] = []

    async def handle(self, request: Request) -> Response:
        self.times.append(self.clock())
        return await super().handle(request)


# ---------------------------------------------------------------------------------------------- classify


def _answer(status: int, body: Any = None, *, path: str = ROOT + "1/add/", **headers: str) -> httpx.Response:
    request = httpx.Request("POST", "http://127.0.0.1" + path)
    if body is None:
        return httpx.Response(status, headers=headers, request=request)
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("response", "error", "words"),
    [
        (_answer(200, {"message": [], "expected": 0, "found": 0, "added": []}), None, ()),
        (_answer(400, {"error": "Invalid addresses"}), BatchRejected, ("Invalid addresses",)),
        # upstream puts str(ValidationError) in `error`
        (_answer(400, {"error": "[ErrorDetail(string='Invalid addresses', code='invalid')]"}), BatchRejected, ()),
        (_answer(400, {"error": "Expecting value: line 1 column 1 (char 0)"}), FatalError, ("Expecting value",)),
        (_answer(405, {"detail": 'Method "POST" not allowed.'}), UnsupportedOperation, ("not allowed", "no such")),
        (_answer(401, {"detail": "Invalid token."}), AuthError, ("Invalid token", "Authorization: Key")),
        (
            _answer(403, {"detail": "Invalid project for API key of acme/x"}),
            AuthError,
            ("Invalid project", f"organization {DEFAULT_ORG!r} and project {DEFAULT_PROJECT!r}"),
        ),
        (_answer(404, {"detail": "Not found."}), NotFound, ("Not found",)),
        (_answer(404, "<!doctype html><h1>Not Found</h1>"), NotFound, ()),
        (_answer(301, "", path=ROOT[:-1], Location="d/"), ProtocolError, ("trailing slash", "redirect")),
        (_answer(500, "Server Error (500)"), TransientError, ("500",)),
        (_answer(502), TransientError, ()),
        (_answer(418, ["odd", "shape"]), FatalError, ("odd",)),
    ],
)
def test_classify(response: httpx.Response, error: type[Exception] | None, words: tuple[str, ...]) -> None:
    found = classify(response)
    if error is None:
        assert found is None
        return
    assert type(found) is error
    assert found is not None and found.status == response.status_code
    for word in words:
        assert word in found.message


def test_classify_honours_retry_after() -> None:
    found = classify(
        _answer(429, {"detail": "Request was throttled. Expected available in 17 seconds."}, **{"Retry-After": "17"})
    )
    assert isinstance(found, RateLimited) and found.delay == 17 and "throttled" in found.message


# ---------------------------------------------------------------------------------------------- adding


async def test_add_of_known_addresses_is_one_request() -> None:
    sandbox = quiet_sandbox()
    emails = people(100)
    for e in emails:
        sandbox.add_address(e)
    gid = sandbox.add_list("L")
    c = connect(sandbox)
    try:
        with count_requests() as tally:
            result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(emails))
        assert list(result.done) == emails and not result.rejected
        assert sandbox.count() == 1 == sandbox.count(method="POST", path=ADD) == sandbox.mutating_count
        assert tally.as_dict() == {"read": 0, "write": 1}
        assert json.loads(sandbox.requests[0].body) == emails  # a bare JSON array of addresses
        assert sandbox.list_emails(gid) == emails
    finally:
        await c.aclose()


# (bad positions among 100 addresses, requests the halving makes). The bound for k bad among n is
# 1 + 2·k·⌈log2 n⌉: 15 for k=1, 29 for k=2.
BISECTION_CASES = [
    pytest.param((), 1, id="k0"),
    pytest.param((99,), 8, id="k1-last"),
    pytest.param((37,), 11, id="k1-middle"),
    pytest.param((0,), 13, id="k1-first"),
    pytest.param((48, 49), 10, id="k2-adjacent-same-half"),
    pytest.param((40, 41), 12, id="k2-adjacent"),
    pytest.param((49, 50), 19, id="k2-adjacent-across-the-middle"),
    pytest.param((10, 90), 19, id="k2-far-apart"),
    pytest.param((0, 99), 19, id="k2-at-both-ends"),
    pytest.param((1, 51), 25, id="k2-worst-placement"),
]


@pytest.mark.parametrize(("bad", "requests"), BISECTION_CASES)
async def test_unknown_addresses_are_isolated_by_halving(bad: tuple[int, ...], requests: int) -> None:
    n = 100
    sandbox = quiet_sandbox()
    emails = people(n)
    for i, e in enumerate(emails):
        if i not in bad:
            sandbox.add_address(e)
    gid = sandbox.add_list("L")
    c = connect(sandbox)
    try:
        with count_requests() as tally:
            result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(emails))
        good = [e for i, e in enumerate(emails) if i not in bad]
        assert list(result.done) == good
        assert [(r.email, r.reason, r.permanent, r.code) for r in result.rejected] == [
            (emails[i], UNKNOWN_ADDRESS, True, "unknown_address") for i in bad
        ]
        assert sandbox.list_emails(gid) == good  # the 98 (or 99, or 100) went in
        assert sandbox.count() == requests == tally.write == sandbox.count(method="POST", path=ADD)
        assert requests <= 1 + 2 * len(bad) * math.ceil(math.log2(n))
        print(f"bitcaster: {n} addresses, bad at {list(bad)}: {requests} requests")
    finally:
        await c.aclose()


async def test_two_unknown_among_100_never_cost_more_than_29_requests() -> None:
    """The issue's check over every placement of 2 bad addresses among 100 (4,950 of them)."""
    n, worst = 100, 0
    for bad in itertools.combinations(range(n), 2):
        sent = 0

        async def send(part: Sequence[int], bad: tuple[int, ...] = bad) -> None:
            nonlocal sent
            sent += 1
            if any(i in bad for i in part):
                raise BatchRejected("Invalid addresses")

        ok, refused = await isolate_rejects(send, range(n))
        assert refused == list(bad) and len(ok) == n - 2
        worst = max(worst, sent)
    assert worst == 25 <= 1 + 2 * 2 * math.ceil(math.log2(n)) == 29


async def test_all_unknown() -> None:
    sandbox = quiet_sandbox()
    emails = people(100)
    gid = sandbox.add_list("L")
    c = connect(sandbox)
    try:
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(emails))
        assert not result.done and [r.email for r in result.rejected] == emails
        # Every node of the halving tree is sent once: 2n - 1 (within the bound 1 + 2·100·7 = 1401).
        assert sandbox.count() == 199
        assert sandbox.list_emails(gid) == []
    finally:
        await c.aclose()


async def test_big_adds_go_in_batches_of_500() -> None:
    sandbox = quiet_sandbox()
    emails = people(1200)
    for e in emails:
        sandbox.add_address(e)
    gid = sandbox.add_list("L")
    c = connect(sandbox)
    assert c.capabilities.max_add_batch == MAX_ADD == 500
    try:
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(emails))
        assert len(result.done) == 1200
        assert [len(json.loads(r.body)) for r in sandbox.requests] == [500, 500, 200]
    finally:
        await c.aclose()


async def test_one_address_twice_is_sent_once_with_its_first_spelling() -> None:
    sandbox = quiet_sandbox()
    sandbox.add_address("Ann@example.com")
    gid = sandbox.add_list("L")
    c = connect(sandbox)
    try:
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(["Ann@example.com", "ann@EXAMPLE.com"]))
        assert result.done == ("ann@example.com",) and not result.rejected
        assert [json.loads(r.body) for r in sandbox.requests] == [["Ann@example.com"]]  # add/ refuses duplicates
    finally:
        await c.aclose()


async def test_addresses_match_as_spelled() -> None:
    """Upstream matches `address__value__in` exactly: another spelling of a known address is refused."""
    sandbox = quiet_sandbox()
    sandbox.add_address("Mixed.Case@Example.com")
    sandbox.add_address("b@example.com")
    gid = sandbox.add_list("L")
    c = connect(sandbox)
    try:
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(["mixed.case@example.com", "b@example.com"]))
        assert result.done == ("b@example.com",)
        assert [r.email for r in result.rejected] == ["mixed.case@example.com"]
    finally:
        await c.aclose()


async def test_adding_present_members_is_harmless_and_retried_on_5xx() -> None:
    sandbox = quiet_sandbox()
    gid = sandbox.add_list("L", ["a@example.com"])
    sandbox.add_address("b@example.com")
    c = connect(sandbox)
    try:
        sandbox.inject(Fault(status=503, method="POST"))
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(["a@example.com", "b@example.com"]))
        assert sorted(result.done) == ["a@example.com", "b@example.com"]
        assert sandbox.list_emails(gid) == ["a@example.com", "b@example.com"]
        assert [r.status for r in sandbox.requests] == [503, 200]
    finally:
        await c.aclose()


# ----------------------------------------------------------------------------------- paths and slashes


async def test_every_request_path_ends_with_a_slash() -> None:
    sandbox = quiet_sandbox()
    sandbox.add_address("a@example.com")
    gid = sandbox.add_list("Team", ["x@example.com"])
    c = connect(sandbox)
    try:
        group = await c.find_group(name="Team")
        assert group is not None
        await c.read_members(group)
        await c.add_members(group, contacts(["a@example.com", "nobody@example.com"]))
        fresh = connect(sandbox)
        assert await fresh.find_group(group_id=str(gid)) is not None
        assert await fresh.find_group(group_id="999") is None
        await fresh.aclose()
        paths = [r.path for r in sandbox.requests]
        # the refused pair is halved: [a] goes in, and [nobody] is then known bad without a request of its own
        assert paths == [ROOT, *[f"{ROOT}{gid}/{end}" for end in ("m/", "add/", "add/", "")], f"{ROOT}999/", ROOT]
        assert all(p.endswith("/") for p in paths)
        assert all(r.status != 301 for r in sandbox.requests)
    finally:
        await c.aclose()


async def test_sandbox_redirects_paths_without_their_slash() -> None:
    sandbox = quiet_sandbox()
    gid = sandbox.add_list("L")
    async with raw(sandbox, key=None) as client:  # Django redirects before any authentication
        lists = await client.get(ROOT[:-1])
        add = await client.post(f"{ROOT}{gid}/add", json=["a@example.com"])
        unknown = await client.get(f"{ROOT}{gid}/remove")
    assert (lists.status_code, lists.headers["Location"]) == (301, "d/")
    assert (add.status_code, add.headers["Location"]) == (301, "add/")
    assert unknown.status_code == 404
    assert sandbox.mutating_count == 0  # a redirected POST reached no write endpoint


async def test_a_redirect_is_a_protocol_error_that_names_the_slash() -> None:
    sandbox = quiet_sandbox()
    c = connect(sandbox)
    try:
        with pytest.raises(ProtocolError, match="trailing slash"):
            await c.api.request("GET", f"o/{DEFAULT_ORG}/p/{DEFAULT_PROJECT}/d")
        assert sandbox.count() == 1  # not retried, not followed
    finally:
        await c.aclose()


# ------------------------------------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    ("org", "project", "detail"),
    [("acme", "other", "Invalid project"), ("umbrella", "newsletters", "Invalid organization")],
)
async def test_key_of_another_organization_or_project_is_an_auth_error(org: str, project: str, detail: str) -> None:
    sandbox = quiet_sandbox()
    sandbox.add_key("key-of-elsewhere", org, project)
    sandbox.add_list("Team")
    c = connect(sandbox, token="key-of-elsewhere")
    try:
        with pytest.raises(AuthError) as caught:
            await c.find_group(name="Team")
        message = caught.value.message
        assert caught.value.status == 403 and detail in message
        assert f"organization {DEFAULT_ORG!r} and project {DEFAULT_PROJECT!r}" in message
        assert "key-of-elsewhere" not in message
        assert sandbox.count() == 1 and sandbox.mutating_count == 0
    finally:
        await c.aclose()


async def test_unknown_key_is_an_auth_error_without_the_key() -> None:
    sandbox = quiet_sandbox()
    c = connect(sandbox, token="wrong-key-value")
    try:
        with pytest.raises(AuthError) as caught:
            await c.find_group(name="Team")
        assert caught.value.status == 401 and "wrong-key-value" not in str(caught.value)
        assert "Invalid token" in caught.value.message
        assert sandbox.count() == 1
    finally:
        await c.aclose()


async def test_the_key_goes_in_a_key_header() -> None:
    c = connect(quiet_sandbox(), token="s3cret-key")
    flow = c.api.client.auth.auth_flow(httpx.Request("GET", BASE + "/"))  # type: ignore[union-attr]
    assert next(flow).headers["Authorization"] == "Key s3cret-key"
    await c.aclose()
    sandbox = quiet_sandbox()
    async with raw(sandbox, key=None) as client:
        bearer = await client.get(ROOT, headers={"Authorization": f"Bearer {DEFAULT_KEY}"})
        bare = await client.get(ROOT)
        good = await client.get(ROOT, headers={"Authorization": f"Key {DEFAULT_KEY}"})
    assert bearer.status_code == bare.status_code == 401 and bare.headers["WWW-Authenticate"] == "Key"
    assert bare.json() == {"detail": "Authentication credentials were not provided."}
    assert good.status_code == 200


async def test_unknown_project_says_which_settings_to_check() -> None:
    sandbox = quiet_sandbox()
    c = connect(sandbox, project="no-such-project")
    try:
        with pytest.raises(NotFound, match="check the provider's `organization` and `project`"):
            await c.find_group(name="Team")
        with pytest.raises(NotFound, match="no-such-project"):
            await c.find_group(group_id="1")  # 404 on d/1/, then d/ tells why
    finally:
        await c.aclose()


# ------------------------------------------------------------------------------- what the API cannot do


async def test_create_remove_and_reset_send_nothing_and_say_what_to_do() -> None:
    sandbox = quiet_sandbox()
    gid = sandbox.add_list("Team", ["a@example.com"])
    group = RemoteGroup(str(gid), "Team")
    c = connect(sandbox)
    try:
        with count_requests() as tally:
            with pytest.raises(UnsupportedOperation) as created:
                await c.create_group("Sales")
            with pytest.raises(UnsupportedOperation) as removed:
                await c.remove_members(group, [RemoteMember("a@example.com", "1")])
            with pytest.raises(UnsupportedOperation) as reset:
                await c.reset_members(group, contacts(["a@example.com"]))
        assert sandbox.count() == 0 and tally.as_dict() == {"read": 0, "write": 0}
        assert "create the list 'Sales' in Bitcaster" in created.value.message and "405" in created.value.message
        assert "remove the 1 member(s) from list 'Team' in Bitcaster" in removed.value.message
        assert "remove the others in Bitcaster" in reset.value.message
        assert sandbox.list_emails(gid) == ["a@example.com"]
    finally:
        await c.aclose()
    caps = c.capabilities
    assert not caps.can_create_group and not caps.can_remove and caps.reset.value == "none"


async def test_sandbox_answers_like_drf_where_routes_are_missing() -> None:
    sandbox = quiet_sandbox()
    gid = sandbox.add_list("Team")
    async with raw(sandbox) as client:
        create = await client.post(ROOT, json={"name": "New"})
        delete = await client.delete(f"{ROOT}{gid}/")
        rename = await client.put(f"{ROOT}{gid}/", json={"name": "X"})
        remove = await client.post(f"{ROOT}{gid}/remove/", json=["a@example.com"])
        by_name = await client.get(f"{ROOT}Team/")  # <int:pk>
    assert create.status_code == 405 and create.json() == {"detail": 'Method "POST" not allowed.'}
    assert delete.status_code == rename.status_code == 405
    assert remove.status_code == by_name.status_code == 404
    assert sandbox.mutating_count == 0
    c = connect(sandbox)
    try:  # a 405 is the API saying it cannot: UnsupportedOperation, not a retry
        with pytest.raises(UnsupportedOperation):
            await c.api.request("POST", f"o/{DEFAULT_ORG}/p/{DEFAULT_PROJECT}/d/", json={"name": "New"})
    finally:
        await c.aclose()


# --------------------------------------------------------------------------------- finding and reading


async def test_find_by_name_is_exact_and_one_read_serves_every_lookup() -> None:
    sandbox = quiet_sandbox()
    team = sandbox.add_list("Team")
    sandbox.add_list("team")
    sandbox.add_list("Team A")
    c = connect(sandbox)
    try:
        found, lower, none = await asyncio.gather(
            c.find_group(name="Team"), c.find_group(name="team"), c.find_group(name="Tea")
        )
        assert found is not None and (found.id, found.name) == (str(team), "Team")
        assert lower is not None and lower.name == "team" and none is None
        assert sandbox.count() == 1  # GET d/, once, shared
        assert await c.find_group(group_id=str(team)) == found
        assert sandbox.count() == 1  # the listing already knows every id
    finally:
        await c.aclose()


async def test_find_by_id() -> None:
    sandbox = quiet_sandbox()
    gid = sandbox.add_list("Team")
    c = connect(sandbox)
    try:
        found = await c.find_group(group_id=str(gid))
        assert found == RemoteGroup(str(gid), "Team")
        assert [r.path for r in sandbox.requests] == [f"{ROOT}{gid}/"]
        sandbox.clear_log()
        assert await c.find_group(group_id="abc") is None  # list ids are integers: no request
        assert sandbox.count() == 0
        assert await c.find_group(group_id="404") is None
        assert [(r.path, r.status) for r in sandbox.requests] == [(f"{ROOT}404/", 404), (ROOT, 200)]
    finally:
        await c.aclose()


async def test_read_members_counts_every_address_once_whatever_active_says() -> None:
    sandbox = quiet_sandbox()
    gid = sandbox.add_list("Team", ["a@example.com", "B@Example.com"])
    sandbox.attach(gid, sandbox.add_address("c@example.com", active=False))  # inactive: still a member
    sandbox.attach(gid, sandbox.add_address("a@example.com", channel="Gmail"))  # a second channel: once
    sms = sandbox.add_address("+441134960000", channel="SMS")
    sandbox.attach(gid, sms)  # not an email: kept, keyed by member id
    c = connect(sandbox)
    try:
        with count_requests() as tally:
            members = await c.read_members(RemoteGroup(str(gid), "Team"))
        assert [m.key for m in members] == ["a@example.com", "b@example.com", "c@example.com", f"id:{sms}"]
        assert members[1] == RemoteMember(
            "B@Example.com", str(sandbox.projects[(DEFAULT_ORG, DEFAULT_PROJECT)].by_address["B@Example.com"][0])
        )
        assert tally.read == 1 == sandbox.count()
        with pytest.raises(NotFound):
            await c.read_members(RemoteGroup("999", "Gone"))
    finally:
        await c.aclose()


class PaginatedBitcaster(BitcasterSandbox):
    """A server with DRF pagination switched on (not documented; tolerated): pages of 2 members."""

    other_host = False

    def _get_members(self, request: Request) -> Any:
        items = super()._get_members(request)
        page = int(request.query.get("page", "1"))
        nxt = None
        if page * 2 < len(items):
            host = "elsewhere.example" if self.other_host else "127.0.0.1"
            nxt = f"http://{host}{request.path}?page={page + 1}"
        return {"count": len(items), "next": nxt, "previous": None, "results": items[(page - 1) * 2 : page * 2]}


async def test_a_paginated_listing_is_followed_on_the_same_host_only() -> None:
    sandbox = PaginatedBitcaster()
    sandbox.rate_limit = None
    gid = sandbox.add_list("Team", people(5))
    c = connect(sandbox)
    try:
        members = await c.read_members(RemoteGroup(str(gid), "Team"))
        assert [m.key for m in members] == people(5) and sandbox.count() == 3
        sandbox.other_host = True
        sandbox.clear_log()
        with pytest.raises(ProtocolError, match="refusing to follow"):
            await c.read_members(RemoteGroup(str(gid), "Team"))
        assert sandbox.count() == 1
    finally:
        await c.aclose()


# ------------------------------------------------------------------------------------------------ pacing


def test_default_pacing_fits_the_sliding_window() -> None:
    # A token bucket lets burst + 60·rate requests into any 60 s window: never above Bitcaster's 30.
    assert PACING.burst + 60 * PACING.rate <= 30
    assert PACING.burst == 1 and PACING.max_concurrency <= 2
    assert CAPABILITIES.pacing == PACING


async def test_pacing_never_exceeds_30_requests_in_any_60_seconds() -> None:
    vt = VirtualTime()
    sandbox = TimedSandbox(clock=vt.clock)  # throttle on: 30 per 60 s, sliding, on the virtual clock
    emails = people(80)
    for e in emails:
        sandbox.add_address(e)
    a, b = sandbox.add_list("A"), sandbox.add_list("B")
    c = connect(sandbox, rate_limit=None, batch_size=1)  # the default pacing; one request per member
    c.api.bucket = TokenBucket(PACING.rate, PACING.burst, clock=vt.clock, sleep=vt.sleep)
    start = vt.clock()
    try:
        await asyncio.gather(
            c.add_members(RemoteGroup(str(a), "A"), contacts(emails[:40])),
            c.add_members(RemoteGroup(str(b), "B"), contacts(emails[40:])),
        )
    finally:
        await c.aclose()
    times = sandbox.times
    assert len(times) == 80 and all(r.status == 200 for r in sandbox.requests)  # not one 429
    gaps = [times[i + 30] - times[i] for i in range(len(times) - 30)]
    assert min(gaps) >= 60  # any 31 consecutive requests span at least a whole window
    elapsed = vt.clock() - start
    assert elapsed == pytest.approx(79 / PACING.rate, rel=1e-3)  # 60/29 s apart after the first
    print(f"bitcaster: 80 requests at the default pacing took {elapsed:.0f} virtual seconds")


async def test_429_with_retry_after_is_honoured() -> None:
    vt = VirtualTime()
    sandbox = TimedSandbox(clock=vt.clock)
    emails = people(35)
    for e in emails:
        sandbox.add_address(e)
    gid = sandbox.add_list("L")
    c = connect(sandbox, batch_size=1)  # rate_limit 1e6: far too fast for the server's throttle
    c.api.bucket = TokenBucket(1e6, 1, clock=vt.clock, sleep=vt.sleep)
    try:
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(emails))
    finally:
        await c.aclose()
    assert len(result.done) == 35 and sandbox.list_emails(gid) == emails
    statuses = [r.status for r in sandbox.requests]
    assert statuses.count(429) == 1 and statuses.index(429) == 30  # the 31st in the window
    # The client waited the Retry-After (the ~60 s until the first request left the window), then went on.
    assert vt.offset >= 59
    assert sandbox.times[31] - sandbox.times[0] >= 60


async def test_sandbox_throttles_each_key_in_its_own_window() -> None:
    now = [0.0]
    sandbox = BitcasterSandbox(clock=lambda: now[0])
    sandbox.add_key("second-key")
    async with raw(sandbox) as first, raw(sandbox, key="second-key") as second:
        assert [(await first.get(ROOT)).status_code for _ in range(30)] == [200] * 30
        over = await first.get(ROOT)
        assert (await second.get(ROOT)).status_code == 200
        now[0] = 59.0
        assert (await first.get(ROOT)).status_code == 429
        now[0] = 60.0
        assert (await first.get(ROOT)).status_code == 200
    assert over.status_code == 429 and over.headers["Retry-After"] == "60"
    assert over.json() == {"detail": "Request was throttled. Expected available in 60 seconds."}


# ---------------------------------------------------------------------------------------------- settings


def test_settings() -> None:
    s = settings(base_url="https://bitcaster.acme.example/api")
    assert (s.organization, s.project, s.type) == (DEFAULT_ORG, DEFAULT_PROJECT, "bitcaster")
    for bad in (
        {"token": ""},
        {"token": "   "},
        {"organization": "acme corp"},
        {"project": "news/letters"},
        {"organization": ""},
        {"base_url": "http://bitcaster.acme.example/api"},  # plain http off loopback
        {"type": "communic8"},
        {"surprise": 1},
    ):
        with pytest.raises(ValidationError):
            settings(**bad)
    for missing in ("base_url", "token", "organization", "project"):
        with pytest.raises(ValidationError):
            settings(**{missing: None})
    for f in BitcasterSettings.model_fields.values():
        assert f.description, "every settings key is documented"


def test_secrets_never_show() -> None:
    s = settings(token="tok-123456")
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "tok-123456" not in text
    c = connect(quiet_sandbox(), token="tok-123456")
    assert "tok-123456" not in repr(c) and "tok-123456" not in repr(c.api.client.auth)


def test_batch_size_is_capped() -> None:
    assert connect(quiet_sandbox(), batch_size=100).capabilities.max_add_batch == 100
    assert connect(quiet_sandbox(), batch_size=10_000).capabilities.max_add_batch == MAX_ADD


async def test_no_email_or_key_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    sandbox = quiet_sandbox()
    emails = people(3)
    for e in emails:
        sandbox.add_address(e)
    gid = sandbox.add_list("Team", ["x@example.com"])
    c = connect(sandbox)
    caplog.set_level(logging.DEBUG, logger="syncd")
    try:
        group = await c.find_group(name="Team")
        assert group is not None
        await c.add_members(group, contacts([*emails, "ghost@example.com"]))
        await c.read_members(RemoteGroup(str(gid), "Team"))
    finally:
        await c.aclose()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "@example.com" not in text and DEFAULT_KEY not in text
    assert all(r.levelno <= logging.DEBUG for r in caplog.records if r.name.startswith("syncd.connectors"))


# --------------------------------------------------- other answers an independent server may give


@pytest.mark.parametrize(
    "answer",
    [
        ["Invalid addresses"],  # DRF's own shape for a ValidationError raised in a view
        {"detail": "Invalid addresses"},
        {"error": "Invalid email addresses"},  # the excerpt's words: "invalid email addresses"
        "Invalid addresses",
    ],
)
async def test_the_all_or_nothing_refusal_in_other_shapes_still_isolates_the_unknown(answer: Any) -> None:
    sandbox = quiet_sandbox(invalid_answer=answer)
    known = people(4)
    for e in known:
        sandbox.add_address(e)
    gid = sandbox.add_list("Team")
    c = connect(sandbox)
    try:
        result = await c.add_members(
            RemoteGroup(str(gid), "Team"), contacts([*known[:2], "ghost@example.com", *known[2:]])
        )
    finally:
        await c.aclose()
    assert sorted(result.done) == known
    assert [(r.email, r.code) for r in result.rejected] == [("ghost@example.com", "unknown_address")]
    assert sandbox.list_emails(gid) == known


def test_a_400_that_is_not_about_addresses_is_not_a_batch_reject() -> None:
    for body in ({"detail": "JSON parse error - Expecting value"}, ["Expected a list of items but got type dict."]):
        found = classify(_answer(400, body))
        assert type(found) is FatalError
