"""Bitcaster-specific behaviour, over HTTP against the bundled sandbox (no patching of our own code), with exact
request counts; the same behaviour against a real 3.1.2 server is checked in tests/real/.

Pacing is measured on a virtual clock shared by the connector's pacing and the sandbox's throttle, so nothing
here sleeps for real or asserts on wall-clock time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
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
    UNKNOWN_SPELLING,
    BitcasterConnector,
    BitcasterSettings,
    ListUnavailable,
    NameTaken,
    build,
    classify,
    isolate_rejects,
)
from connectors.http import TokenBucket, count_requests
from connectors.settings import BuildContext
from sandboxes._core import Fault, Request, Response
from sandboxes.bitcaster import (
    API,
    DEFAULT_KEY,
    DEFAULT_ORG,
    DEFAULT_PROJECT,
    DJANGO_500,
    INVALID_ADDRESSES,
    BitcasterSandbox,
)
from syncd.config import load_config
from syncd.model import PairStatus, RunReport
from syncd.reconciler import PassOptions, Reconciler
from syncd.state import Store

BASE = "http://127.0.0.1" + API
ROOT = f"{API}/o/{DEFAULT_ORG}/p/{DEFAULT_PROJECT}/d/"
ADD = "/add/$"
MISSING = object()  # a settings key left out
WINDOW_OFF: dict[str, Any] = {"throttle_requests": None}  # no window pacing: tests not about pacing


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
        **WINDOW_OFF,
    }
    values.update(overrides)
    return BitcasterSettings.model_validate({k: v for k, v in values.items() if v is not MISSING})


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


def trail(sandbox: BitcasterSandbox) -> list[tuple[str, str, int]]:
    """What the sandbox served: (method, path below d/, status)."""
    return [(r.method, r.path.removeprefix(ROOT), r.status) for r in sandbox.requests]


class VirtualTime:
    """A clock that `sleep` advances. It starts at the real monotonic time and stays `offset` ahead of it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def clock(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.offset += max(0.0, seconds)
        await asyncio.sleep(0)


def paced(sandbox: BitcasterSandbox, vt: VirtualTime, **overrides: Any) -> BitcasterConnector:
    """A connector with the default pacing (unless overridden), its pacing on the virtual clock."""
    c = connect(sandbox, **{"rate_limit": None, "throttle_requests": 30, **overrides})
    pacing = c.capabilities.pacing
    c.api.bucket = TokenBucket(pacing.rate, pacing.burst, window=pacing.window, clock=vt.clock, sleep=vt.sleep)
    return c


class TimedSandbox(BitcasterSandbox):
    """Notes the (virtual) time at which each request arrived."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.times: list[float] = []

    async def handle(self, request: Request) -> Response:
        self.times.append(self.clock())
        return await super().handle(request)


def max_in_any_window(times: Sequence[float], span: float = 60.0) -> int:
    return max((sum(1 for u in times if t <= u < t + span) for t in times), default=0)


# ---------------------------------------------------------------------------------------------- classify


def _answer(status: int, body: Any = None, *, path: str = ROOT + "1/add/", **headers: str) -> httpx.Response:
    request = httpx.Request("POST", "http://127.0.0.1" + path)
    if body is None:
        return httpx.Response(status, headers=headers, request=request)
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


ORG_SCOPE = f"project {DEFAULT_PROJECT!r} (organization {DEFAULT_ORG!r})"


@pytest.mark.parametrize(
    ("response", "error", "words"),
    [
        (_answer(200, {"message": [], "expected": 0, "found": 0, "added": []}), None, ()),
        (_answer(400, {"error": "Invalid addresses"}), BatchRejected, ("Invalid addresses",)),
        (_answer(400, {"error": INVALID_ADDRESSES}), BatchRejected, ("Invalid addresses",)),  # the real body
        (_answer(400, {"error": "Expecting value: line 1 column 1 (char 0)"}), FatalError, ("Expecting value",)),
        (_answer(400, {"name": ["Name already exists!"]}, path=ROOT), NameTaken, ("exists already",)),
        (_answer(400, {"name": ["This field is required."]}, path=ROOT), FatalError, ("required",)),
        (_answer(405, {"detail": 'Method "POST" not allowed.'}), UnsupportedOperation, ("not allowed", "no such")),
        (_answer(401, {"detail": "Invalid token."}), AuthError, ("Invalid token", "Authorization: Key")),
        (
            _answer(403, {"detail": "Invalid organization for syncd key"}),
            AuthError,
            (
                "Invalid organization for syncd key",
                "set the provider's `organization`",
                f"organization {DEFAULT_ORG!r}",
            ),
        ),
        (
            _answer(403, {"detail": "Invalid project for syncd key"}),
            AuthError,
            ("Invalid project for syncd key", "set the provider's `project`", f"key of {ORG_SCOPE}"),
        ),
        (
            _answer(403, {"detail": "Key not enabled for project scope"}),
            AuthError,
            ("not bound to a project", f"project {DEFAULT_PROJECT!r} of organization {DEFAULT_ORG!r}"),
        ),
        (
            _answer(403, {"detail": "You do not have permission to perform this action. [Grant.DISTRIBUTION_LIST]"}),
            AuthError,
            ("lacks the distribution-list grant", "DISTRIBUTION_LIST grant (or FULL_ACCESS)"),
        ),
        (_answer(404, {"detail": "Not found."}), NotFound, ("Not found",)),
        (_answer(404, "<!doctype html><h1>Not Found</h1>"), NotFound, ()),
        (_answer(301, "", path=ROOT[:-1], Location="d/"), ProtocolError, ("trailing slash", "redirect")),
        (_answer(500, DJANGO_500), ListUnavailable, ("HTTP 500", "does not exist")),  # add/ of a missing list
        (_answer(500, DJANGO_500, path=ROOT + "7/"), ListUnavailable, ()),
        (_answer(500, "Server Error (500)", path=ROOT), TransientError, ("500",)),  # d/ itself: a server error
        (_answer(500, "[]", path=ROOT + "7/m/"), TransientError, ()),
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
        _answer(429, {"detail": "Request was throttled. Expected available in 2 seconds."}, **{"Retry-After": "2"})
    )
    assert isinstance(found, RateLimited) and found.delay == 2 and "throttled" in found.message


# ---------------------------------------------------------------------------------------------- adding


async def test_add_of_known_addresses_is_one_request() -> None:
    sandbox = quiet_sandbox()
    emails = people(100)
    for e in emails:
        sandbox.add_address(e)
    gid = sandbox.add_list("L")
    async with connect(sandbox) as c:
        with count_requests() as tally:
            result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(emails))
        assert list(result.done) == emails and not result.rejected
        assert sandbox.count() == 1 == sandbox.count(method="POST", path=ADD) == sandbox.mutating_count
        assert tally.as_dict() == {"read": 0, "write": 1}
        assert json.loads(sandbox.requests[0].body) == emails  # a bare JSON array of addresses
        assert sandbox.list_emails(gid) == emails


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
    async with connect(sandbox) as c:
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
    async with connect(sandbox) as c:
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(emails))
        assert not result.done and [r.email for r in result.rejected] == emails
        # Every node of the halving tree is sent once: 2n - 1 (within the bound 1 + 2·100·7 = 1401).
        assert sandbox.count() == 199
        assert sandbox.list_emails(gid) == []


async def test_big_adds_go_in_batches_of_500() -> None:
    sandbox = quiet_sandbox()
    emails = people(1200)
    for e in emails:
        sandbox.add_address(e)
    gid = sandbox.add_list("L")
    async with connect(sandbox) as c:
        assert c.capabilities.max_add_batch == MAX_ADD == 500
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(emails))
        assert len(result.done) == 1200
        assert [len(json.loads(r.body)) for r in sandbox.requests] == [500, 500, 200]


async def test_one_address_twice_is_sent_once_with_its_first_spelling() -> None:
    sandbox = quiet_sandbox()
    sandbox.add_address("Ann@example.com")
    gid = sandbox.add_list("L")
    async with connect(sandbox) as c:
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(["Ann@example.com", "ann@EXAMPLE.com"]))
        assert result.done == ("ann@example.com",) and not result.rejected
        assert [json.loads(r.body) for r in sandbox.requests] == [["Ann@example.com"]]  # add/ refuses duplicates


async def test_a_differently_spelled_address_goes_in_lower_cased() -> None:
    """Bitcaster matches as spelled, syncd does not: a source spelling Bitcaster refuses is tried once in lower
    case (the address records here are lower-case, as on the real server)."""
    sandbox = quiet_sandbox()
    for e in ("alice@example.com", "bob@example.com"):
        sandbox.add_address(e)
    gid = sandbox.add_list("L")
    async with connect(sandbox) as c:
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(["Alice@Example.com", "bob@example.com"]))
    assert result.done == ("bob@example.com", "alice@example.com") and not result.rejected
    assert [json.loads(r.body) for r in sandbox.requests] == [
        ["Alice@Example.com", "bob@example.com"],  # the source's spelling first: refused as a whole
        ["Alice@Example.com"],  # refused alone
        ["bob@example.com"],
        ["alice@example.com"],  # once more, in lower case
    ]
    assert [r.status for r in sandbox.requests] == [400, 400, 200, 200]
    assert sandbox.list_emails(gid) == ["bob@example.com", "alice@example.com"]


async def test_spellings_bitcaster_does_not_know_are_rejected_saying_it_matches_case_sensitively() -> None:
    sandbox = quiet_sandbox()
    sandbox.add_address("Mixed.Case@Example.com")  # a record that is not lower-case
    sandbox.add_address("b@example.com")
    gid = sandbox.add_list("L")
    async with connect(sandbox) as c:
        result = await c.add_members(
            RemoteGroup(str(gid), "L"), contacts(["mixed.case@example.com", "b@example.com", "MIXED.case@example.com"])
        )
    # one key: the first spelling is sent, in lower case already, so it is not tried again
    assert result.done == ("b@example.com",)
    assert [(r.email, r.reason, r.code) for r in result.rejected] == [
        ("mixed.case@example.com", UNKNOWN_ADDRESS, "unknown_address")
    ]
    assert "case-sensitively" in UNKNOWN_ADDRESS and "case-sensitively" in UNKNOWN_SPELLING
    assert sandbox.count() == 3  # [mixed, b] 400, [mixed] 400, [b] 200
    sandbox.clear_log()
    async with connect(sandbox) as c:
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(["MIXED.case@example.com"]))
    assert [(r.email, r.reason) for r in result.rejected] == [("MIXED.case@example.com", UNKNOWN_SPELLING)]
    assert [json.loads(r.body) for r in sandbox.requests] == [["MIXED.case@example.com"], ["mixed.case@example.com"]]


async def test_several_respellings_go_in_one_batch() -> None:
    sandbox = quiet_sandbox()
    for e in people(6):
        sandbox.add_address(e)
    gid = sandbox.add_list("L")
    upper = [e.upper() for e in people(6)]
    async with connect(sandbox) as c:
        with count_requests() as tally:
            result = await c.add_members(RemoteGroup(str(gid), "L"), contacts([*upper[:3], "ghost@example.com"]))
    assert sorted(result.done) == people(3) and [r.email for r in result.rejected] == ["ghost@example.com"]
    # 1 + 2·4·2 at most to isolate the 4 refused as spelled (here 7: every node), then 1 for the 3 in lower case
    assert tally.write == sandbox.count() == 8
    assert json.loads(sandbox.requests[-1].body) == people(3)


async def test_adding_present_members_is_harmless_and_retried_on_5xx() -> None:
    sandbox = quiet_sandbox()
    gid = sandbox.add_list("L", ["a@example.com"])
    sandbox.add_address("b@example.com")
    async with connect(sandbox) as c:
        sandbox.inject(Fault(status=503, method="POST"))
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(["a@example.com", "b@example.com"]))
        assert sorted(result.done) == ["a@example.com", "b@example.com"]
        assert sandbox.list_emails(gid) == ["a@example.com", "b@example.com"]
        assert [r.status for r in sandbox.requests] == [503, 200]


# ----------------------------------------------------------------------------------- paths and slashes


async def test_every_request_path_ends_with_a_slash() -> None:
    sandbox = quiet_sandbox()
    sandbox.add_address("a@example.com")
    gid = sandbox.add_list("Team", ["x@example.com"])
    async with connect(sandbox) as c:
        group = await c.find_group(name="Team")
        assert group is not None
        await c.read_members(group)
        await c.add_members(group, contacts(["a@example.com", "nobody@example.com"]))
        async with connect(sandbox) as fresh:
            assert await fresh.find_group(group_id=str(gid)) is not None
            assert await fresh.find_group(group_id="999") is None
        # the refused pair is halved: [a] goes in, and [nobody] is then known bad without a request of its own;
        # list 999 answers 500, and d/ says it does not exist
        assert trail(sandbox) == [
            ("GET", "", 200),
            ("GET", f"{gid}/m/", 200),
            ("POST", f"{gid}/add/", 400),
            ("POST", f"{gid}/add/", 200),
            ("GET", f"{gid}/", 200),
            ("GET", "999/", 500),
            ("GET", "", 200),
        ]
        assert all(r.path.endswith("/") for r in sandbox.requests)


async def test_sandbox_redirects_paths_without_their_slash() -> None:
    sandbox = quiet_sandbox()
    gid = sandbox.add_list("L")
    async with raw(sandbox, key=None) as client:  # Django redirects before any authentication
        lists = await client.get(ROOT[:-1])
        add = await client.post(f"{ROOT}{gid}/add", json=["a@example.com"])
        unknown = await client.get(f"{ROOT}{gid}/remove")
    assert (lists.status_code, lists.headers["Location"]) == (301, ROOT)  # an absolute path, as Django sends
    assert (add.status_code, add.headers["Location"]) == (301, f"{ROOT}{gid}/add/")
    assert lists.headers["Content-Type"] == "text/html; charset=utf-8" and "Allow" not in lists.headers
    assert unknown.status_code == 404 and unknown.headers["Content-Type"].startswith("text/html")
    assert sandbox.mutating_count == 0  # a redirected POST reached no write endpoint


async def test_a_redirect_is_a_protocol_error_that_names_the_slash() -> None:
    sandbox = quiet_sandbox()
    async with connect(sandbox) as c:
        with pytest.raises(ProtocolError, match="trailing slash"):
            await c.api.request("GET", f"o/{DEFAULT_ORG}/p/{DEFAULT_PROJECT}/d")
        assert sandbox.count() == 1  # not retried, not followed


# ------------------------------------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    ("org", "project", "detail", "fix"),
    [
        ("acme", "other", "Invalid project for key-name", "set the provider's `project` to the key's project slug"),
        ("umbrella", "newsletters", "Invalid organization for key-name", "set the provider's `organization`"),
    ],
)
async def test_key_of_another_organization_or_project_says_which_setting_to_fix(
    org: str, project: str, detail: str, fix: str
) -> None:
    sandbox = quiet_sandbox()
    sandbox.add_key("key-of-elsewhere", org, project, name="key-name")
    sandbox.add_list("Team")
    async with connect(sandbox, token="key-of-elsewhere") as c:
        with pytest.raises(AuthError) as caught:
            await c.find_group(name="Team")
        message = caught.value.message
        assert caught.value.status == 403 and detail in message and fix in message
        assert "key-of-elsewhere" not in message
        assert sandbox.count() == 1 and sandbox.mutating_count == 0


async def test_a_wrong_organization_or_project_in_the_url_is_a_403_never_a_404() -> None:
    sandbox = quiet_sandbox()
    for org, project in (("no-such-org", DEFAULT_PROJECT), (DEFAULT_ORG, "no-such-project")):
        async with connect(sandbox, organization=org, project=project) as c:
            with pytest.raises(AuthError, match=r"HTTP 403: Invalid (organization|project) for"):
                await c.find_group(name="Team")
            with pytest.raises(AuthError):
                await c.find_group(group_id="1")
    assert {r.status for r in sandbox.requests} == {403}


async def test_a_key_without_the_grant_or_without_a_project_says_what_to_fix() -> None:
    sandbox = quiet_sandbox()
    sandbox.add_key("no-grant", grants=["SYSTEM_PING"])
    sandbox.add_key("org-wide", DEFAULT_ORG, None)
    sandbox.add_key("full", grants=["FULL_ACCESS"])
    sandbox.add_list("Team")
    messages = []
    for token in ("no-grant", "org-wide"):
        async with connect(sandbox, token=token) as c:
            with pytest.raises(AuthError) as caught:
                await c.find_group(name="Team")
            messages.append(caught.value.message)
    assert "You do not have permission to perform this action." in messages[0]
    assert "give it the DISTRIBUTION_LIST grant (or FULL_ACCESS)" in messages[0]
    assert "Key not enabled for project scope" in messages[1] and "not bound to a project" in messages[1]
    async with connect(sandbox, token="full") as c:
        assert await c.find_group(name="Team") is not None  # FULL_ACCESS covers it
    assert sandbox.count() == 3


async def test_unknown_key_is_an_auth_error_without_the_key() -> None:
    sandbox = quiet_sandbox()
    async with connect(sandbox, token="wrong-key-value") as c:
        with pytest.raises(AuthError) as caught:
            await c.find_group(name="Team")
        assert caught.value.status == 401 and "wrong-key-value" not in str(caught.value)
        assert "Invalid token" in caught.value.message
        assert sandbox.count() == 1


async def test_the_key_goes_in_a_key_header() -> None:
    async with connect(quiet_sandbox(), token="s3cret-key") as c:
        flow = c.api.client.auth.auth_flow(httpx.Request("GET", BASE + "/"))  # type: ignore[union-attr]
        assert next(flow).headers["Authorization"] == "Key s3cret-key"
    sandbox = quiet_sandbox()
    async with raw(sandbox, key=None) as client:
        bearer = await client.get(ROOT, headers={"Authorization": f"Bearer {DEFAULT_KEY}"})
        token = await client.get(ROOT, headers={"Authorization": f"Token {DEFAULT_KEY}"})
        bare = await client.get(ROOT)
        wrong = await client.get(ROOT, headers={"Authorization": "Key nope"})
        good = await client.get(ROOT, headers={"Authorization": f"Key {DEFAULT_KEY}"})
    for answer in (bearer, token, bare):
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Key"
        assert answer.json() == {"detail": "Authentication credentials were not provided."}
    assert (wrong.status_code, wrong.json(), wrong.headers["WWW-Authenticate"]) == (
        401,
        {"detail": "Invalid token."},
        "Key",
    )
    assert wrong.headers["Allow"] == "GET, POST, HEAD, OPTIONS"  # DRF names the view's methods on every answer
    assert good.status_code == 200


async def test_401_and_403_do_not_count_against_the_throttle_but_400s_do() -> None:
    now = [0.0]
    sandbox = BitcasterSandbox(clock=lambda: now[0])
    sandbox.add_key("no-grant", grants=[])
    gid = sandbox.add_list("L")
    async with raw(sandbox, key="nope") as bad, raw(sandbox, key="no-grant") as denied, raw(sandbox) as good:
        assert {(await bad.get(ROOT)).status_code for _ in range(40)} == {401}
        assert {(await denied.get(ROOT)).status_code for _ in range(40)} == {403}
        refused = [(await good.post(f"{ROOT}{gid}/add/", json=["ghost@example.com"])).status_code for _ in range(30)]
        throttled = await good.get(ROOT)
    assert refused == [400] * 30 and throttled.status_code == 429


# ------------------------------------------------------------------------------------------- creating lists


async def test_create_is_one_post_and_the_probe_reads_the_allow_header_it_already_has() -> None:
    sandbox = quiet_sandbox()
    async with connect(sandbox) as c:
        assert c.capabilities.can_create_group
        assert await c.find_group(name="Sales") is None  # GET d/: its Allow names POST
        assert await c.can_create_groups() and await c.can_create_groups()
        group = await c.create_group("Sales")
        assert await c.find_group(name="Sales") == group  # the listing knows it: no request
        assert await c.read_members(group) == []  # created this pass: believed empty without a d/ check
    assert trail(sandbox) == [("GET", "", 200), ("POST", "", 201), ("GET", f"{group.id}/m/", 200)]
    assert json.loads(sandbox.requests[1].body) == {"name": "Sales"}
    assert sandbox.list_names() == ["Sales"] and sandbox.mutating_count == 1


@pytest.mark.parametrize(("release", "can"), [("3.1.2", True), ("legacy", False)])
async def test_probe_without_a_listing_is_one_options_request_kept_for_the_connector_life(
    release: str, can: bool
) -> None:
    sandbox = quiet_sandbox(release=release)
    async with connect(sandbox) as c:
        assert [await c.can_create_groups() for _ in range(3)] == [can] * 3
    assert trail(sandbox) == [("OPTIONS", "", 200)] and sandbox.mutating_count == 0


class NoAllowHeader(BitcasterSandbox):
    """A server (or a proxy in front of one) that drops DRF's Allow header."""

    async def handle(self, request: Request) -> Response:
        response = await super().handle(request)
        response.headers.pop("Allow", None)
        return response


@pytest.mark.parametrize(("release", "can"), [("3.1.2", True), ("legacy", False)])
async def test_probe_without_any_allow_header_reads_drf_metadata(release: str, can: bool) -> None:
    sandbox = NoAllowHeader(release=release)
    sandbox.rate_limit = None
    async with connect(sandbox) as c:
        assert await c.find_group(name="Sales") is None
        assert await c.can_create_groups() is can
    assert trail(sandbox) == [("GET", "", 200), ("OPTIONS", "", 200)]


async def test_legacy_server_create_is_one_405_then_nothing() -> None:
    sandbox = quiet_sandbox(release="legacy")
    async with connect(sandbox) as c:
        with pytest.raises(UnsupportedOperation) as first:
            await c.create_group("Sales")
        with pytest.raises(UnsupportedOperation) as second:
            await c.create_group("Sales")
        assert await c.can_create_groups() is False  # the 405 answered it
    for caught in (first, second):
        assert "create the list 'Sales' in Bitcaster" in caught.value.message and "405" in caught.value.message
    assert trail(sandbox) == [("POST", "", 405)] and sandbox.list_names() == []


async def test_a_name_taken_in_another_case_is_that_list() -> None:
    sandbox = quiet_sandbox()
    team = sandbox.add_list("Team")
    async with connect(sandbox) as c:
        group = await c.create_group("TEAM")
    assert group == RemoteGroup(str(team), "Team")
    assert trail(sandbox) == [("POST", "", 400), ("GET", "", 200)] and sandbox.list_names() == ["Team"]


async def test_a_lost_create_answer_is_looked_up_and_not_sent_again() -> None:
    sandbox = quiet_sandbox()
    sandbox.inject(Fault(lost=True, method="POST", path=r"/d/$"))  # created, but the answer never comes
    async with connect(sandbox) as c:
        group = await c.create_group("Sales")
    assert group.name == "Sales" and sandbox.list_names() == ["Sales"]
    assert [(m, p) for m, p, _ in trail(sandbox)] == [("POST", ""), ("GET", "")]


async def test_a_create_that_failed_is_looked_up_then_sent_again() -> None:
    sandbox = quiet_sandbox()
    sandbox.inject(Fault(status=503, method="POST", path=r"/d/$"))  # refused before anything was created
    async with connect(sandbox) as c:
        group = await c.create_group("Sales")
    assert sandbox.list_names() == ["Sales"] and group.name == "Sales"
    assert trail(sandbox) == [("POST", "", 503), ("GET", "", 200), ("POST", "", 201)]


async def test_creates_that_keep_failing_end_after_the_retry_budget() -> None:
    sandbox = quiet_sandbox()
    sandbox.inject(Fault(status=502, method="POST", path=r"/d/$", times=0))
    async with connect(sandbox, retry={"backoff_base": 0, "max_retries": 2}) as c:
        with pytest.raises(TransientError):
            await c.create_group("Sales")
    assert [m for m, _, _ in trail(sandbox)] == ["POST", "GET"] * 3 and sandbox.list_names() == []


# --------------------------------------------------------------------------------- lists that are gone


async def test_sandbox_answers_unknown_lists_like_the_real_server() -> None:
    sandbox = quiet_sandbox()
    async with raw(sandbox) as client:
        detail = await client.get(f"{ROOT}42/")
        add = await client.post(f"{ROOT}42/add/", json=["a@example.com"])
        members = await client.get(f"{ROOT}42/m/")
    for answer in (detail, add):
        assert answer.status_code == 500 and answer.text == DJANGO_500
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8" and "Allow" not in answer.headers
    assert (members.status_code, members.json()) == (200, [])


async def test_an_empty_read_is_believed_after_one_listing_shared_by_every_list() -> None:
    sandbox = quiet_sandbox()
    a, b = sandbox.add_list("A"), sandbox.add_list("B")
    full = sandbox.add_list("Full", ["x@example.com"])
    async with connect(sandbox) as c:
        assert await c.read_members(RemoteGroup(str(full), "Full")) != []  # not empty: no check
        assert await c.read_members(RemoteGroup(str(a), "A")) == []
        assert await c.read_members(RemoteGroup(str(b), "B")) == []  # the listing is known now
    assert trail(sandbox) == [
        ("GET", f"{full}/m/", 200),
        ("GET", f"{a}/m/", 200),
        ("GET", "", 200),
        ("GET", f"{b}/m/", 200),
    ]


async def test_an_empty_read_of_a_deleted_list_is_not_found() -> None:
    sandbox = quiet_sandbox()
    gone = sandbox.add_list("Gone")
    sandbox.delete_list(gone)
    async with connect(sandbox) as c:
        with pytest.raises(NotFound, match=f"Bitcaster list {gone} .* no longer exists"):
            await c.read_members(RemoteGroup(str(gone), "Gone"))
    assert trail(sandbox) == [("GET", f"{gone}/m/", 200), ("GET", "", 200)]


async def test_a_500_on_add_to_a_deleted_list_is_checked_once_and_never_retried() -> None:
    sandbox = quiet_sandbox()
    sandbox.add_address("a@example.com")
    gone = sandbox.add_list("Gone")
    sandbox.delete_list(gone)
    async with connect(sandbox) as c:
        with pytest.raises(NotFound) as caught:
            await c.add_members(RemoteGroup(str(gone), "Gone"), contacts(["a@example.com"]))
    assert f"Bitcaster list {gone} no longer exists" in caught.value.message
    assert trail(sandbox) == [("POST", f"{gone}/add/", 500), ("GET", "", 200)]


async def test_a_500_on_add_to_a_list_that_exists_is_retried_after_the_check() -> None:
    sandbox = quiet_sandbox()
    sandbox.add_address("a@example.com")
    gid = sandbox.add_list("Team")
    sandbox.inject(Fault(status=500, path=ADD, times=2))
    async with connect(sandbox) as c:
        result = await c.add_members(RemoteGroup(str(gid), "Team"), contacts(["a@example.com"]))
    assert result.done == ("a@example.com",) and sandbox.list_emails(gid) == ["a@example.com"]
    assert trail(sandbox) == [
        ("POST", f"{gid}/add/", 500),
        ("GET", "", 200),  # still listed: a server error, retried as usual from here on
        ("POST", f"{gid}/add/", 500),
        ("POST", f"{gid}/add/", 200),
    ]


async def test_a_list_that_keeps_answering_500_spends_the_retry_budget_once() -> None:
    sandbox = quiet_sandbox()
    gid = sandbox.add_list("Team")
    sandbox.inject(Fault(status=500, path=ADD, times=0))
    async with connect(sandbox, retry={"backoff_base": 0, "max_retries": 2}) as c:
        with pytest.raises(TransientError):
            await c.add_members(RemoteGroup(str(gid), "Team"), contacts(["a@example.com"]))
    assert [(m, p) for m, p, _ in trail(sandbox)] == [("POST", f"{gid}/add/"), ("GET", "")] + [
        ("POST", f"{gid}/add/")
    ] * 3


# ------------------------------------------------------------------------------- what the API cannot do


async def test_remove_and_reset_send_nothing_and_say_what_to_do() -> None:
    sandbox = quiet_sandbox()
    gid = sandbox.add_list("Team", ["a@example.com"])
    group = RemoteGroup(str(gid), "Team")
    async with connect(sandbox) as c:
        with count_requests() as tally:
            with pytest.raises(UnsupportedOperation) as removed:
                await c.remove_members(group, [RemoteMember("a@example.com", "1")])
            with pytest.raises(UnsupportedOperation) as reset:
                await c.reset_members(group, contacts(["a@example.com"]))
        assert sandbox.count() == 0 and tally.as_dict() == {"read": 0, "write": 0}
        assert "remove the 1 member(s) from list 'Team' in Bitcaster" in removed.value.message
        assert "remove the others in Bitcaster" in reset.value.message
        assert sandbox.list_emails(gid) == ["a@example.com"]
    caps = c.capabilities
    assert caps.can_create_group and not caps.can_remove and caps.reset.value == "none"


@pytest.mark.parametrize(
    ("release", "lists_allow", "add_allow"),
    [("3.1.2", "GET, POST, HEAD, OPTIONS", "GET, POST, OPTIONS"), ("legacy", "GET, HEAD, OPTIONS", "POST, OPTIONS")],
)
async def test_sandbox_answers_like_drf_for_each_release(release: str, lists_allow: str, add_allow: str) -> None:
    sandbox = quiet_sandbox(release=release)
    gid = sandbox.add_list("Team")
    async with raw(sandbox) as client:
        create = await client.post(ROOT, json={"name": "New"})
        delete = await client.delete(f"{ROOT}{gid}/")
        rename = await client.put(f"{ROOT}{gid}/", json={"name": "X"})
        remove = await client.post(f"{ROOT}{gid}/remove/", json=["a@example.com"])
        by_name = await client.get(f"{ROOT}Team/")  # <int:pk>
        head = await client.head(ROOT)
        options = await client.options(ROOT)
        add = await client.post(f"{ROOT}{gid}/add/", json=[])
        members = await client.options(f"{ROOT}{gid}/m/")
    assert delete.status_code == rename.status_code == 405
    assert delete.json() == {"detail": 'Method "DELETE" not allowed.'}
    assert remove.status_code == by_name.status_code == 404
    assert (head.status_code, head.content, head.headers["Allow"]) == (200, b"", lists_allow)
    assert options.status_code == 200 and options.headers["Allow"] == lists_allow
    assert (add.headers["Allow"], members.headers["Allow"]) == (add_allow, "GET, HEAD, OPTIONS")
    assert "actions" not in members.json()
    if release == "3.1.2":
        assert create.status_code == 201 and create.headers["Allow"] == lists_allow
        assert create.json() == {
            "name": "New",
            "id": gid + 1,
            "members": f"http://127.0.0.1{ROOT}{gid + 1}/m/",
            "application": None,
        }
        assert options.json()["actions"]["POST"]["name"]["required"] is True
        assert sandbox.mutating_count == 2  # the create, and the add
    else:
        assert create.status_code == 405 and create.json() == {"detail": 'Method "POST" not allowed.'}
        assert create.headers["Allow"] == lists_allow and "actions" not in options.json()
        assert sandbox.list_names() == ["Team"] and sandbox.mutating_count == 1  # the add
    async with connect(sandbox) as c:  # a 405 is the API saying it cannot: UnsupportedOperation, not a retry
        with pytest.raises(UnsupportedOperation):
            await c.api.request("DELETE", f"o/{DEFAULT_ORG}/p/{DEFAULT_PROJECT}/d/{gid}/")


async def test_sandbox_create_validates_the_name_like_drf() -> None:
    sandbox = quiet_sandbox()
    sandbox.add_list("Team")
    async with raw(sandbox) as client:
        answers = [
            await client.post(ROOT, json=body)
            for body in ({}, {"name": "  "}, {"name": "x" * 256}, {"name": "team"}, {"name": "TEAM "})
        ]
    assert [(a.status_code, a.json()) for a in answers] == [
        (400, {"name": ["This field is required."]}),
        (400, {"name": ["This field may not be blank."]}),
        (400, {"name": ["Ensure this field has no more than 255 characters."]}),
        (400, {"name": ["Name already exists!"]}),
        (400, {"name": ["Name already exists!"]}),
    ]
    with pytest.raises(ValueError, match="exists"):
        sandbox.add_list("TEAM")


async def test_sandbox_add_answers_like_the_real_server() -> None:
    sandbox = quiet_sandbox()
    sandbox.add_address("alice@example.com")
    gid = sandbox.add_list("L")
    path = f"{ROOT}{gid}/add/"
    async with raw(sandbox) as client:
        upper = await client.post(path, json=["ALICE@example.com"])
        twice = await client.post(path, json=["alice@example.com", "alice@example.com"])
        empty = await client.post(path, json=[])
        first = await client.post(path, json=["alice@example.com"])
        again = await client.post(path, json=["alice@example.com"])
        garbage = await client.post(path, content=b"nope", headers={"Content-Type": "application/json"})
    for refused in (upper, twice):
        assert refused.status_code == 400
        assert refused.json() == {"error": "[ErrorDetail(string='Invalid addresses', code='invalid')]"}
    assert (empty.status_code, empty.json()) == (200, {"message": [], "expected": 0, "found": 0, "added": []})
    ok = {"message": ["alice@example.com"], "expected": 1, "found": 1, "added": ["alice@example.com"]}
    assert (first.status_code, first.json()) == (again.status_code, again.json()) == (200, ok)
    assert (garbage.status_code, garbage.json()) == (400, {"error": "Expecting value: line 1 column 1 (char 0)"})
    assert sandbox.list_emails(gid) == ["alice@example.com"]


# --------------------------------------------------------------------------------- finding and reading


async def test_find_by_name_is_exact_then_case_insensitive_and_one_read_serves_every_lookup() -> None:
    sandbox = quiet_sandbox()
    team = sandbox.add_list("Team")
    sandbox.add_list("Team A")
    async with connect(sandbox) as c:
        found, other_case, none = await asyncio.gather(
            c.find_group(name="Team"), c.find_group(name="TEAM"), c.find_group(name="Tea")
        )
        assert found is not None and (found.id, found.name) == (str(team), "Team")
        assert other_case == found and none is None  # Bitcaster's names are unique whatever their case
        assert sandbox.count() == 1  # GET d/, once, shared
        assert await c.find_group(group_id=str(team)) == found
        assert sandbox.count() == 1  # the listing already knows every id


async def test_find_by_id() -> None:
    sandbox = quiet_sandbox()
    gid = sandbox.add_list("Team")
    async with connect(sandbox) as c:
        found = await c.find_group(group_id=str(gid))
        assert found == RemoteGroup(str(gid), "Team")
        assert [r.path for r in sandbox.requests] == [f"{ROOT}{gid}/"]
        sandbox.clear_log()
        assert await c.find_group(group_id="abc") is None  # list ids are integers: no request
        assert sandbox.count() == 0
        assert await c.find_group(group_id="404") is None  # 500 for an unknown list: d/ says it does not exist
        assert trail(sandbox) == [("GET", "404/", 500), ("GET", "", 200)]
        sandbox.clear_log()
        assert await c.read_members(found) == []  # read by id this pass: an empty read needs no check
        assert sandbox.count() == 1


async def test_read_members_counts_every_address_once_whatever_active_says() -> None:
    sandbox = quiet_sandbox()
    gid = sandbox.add_list("Team", ["a@example.com", "B@Example.com"])
    sandbox.attach(gid, sandbox.add_address("c@example.com", active=False))  # inactive: still a member
    sandbox.attach(gid, sandbox.add_address("a@example.com", channel="Gmail"))  # a second channel: once
    sms = sandbox.add_address("+441134960000", channel="SMS")
    sandbox.attach(gid, sms)  # not an email: kept, keyed by member id
    async with connect(sandbox) as c:
        with count_requests() as tally:
            members = await c.read_members(RemoteGroup(str(gid), "Team"))
        assert [m.key for m in members] == ["a@example.com", "b@example.com", "c@example.com", f"id:{sms}"]
        assert members[1] == RemoteMember(
            "B@Example.com", str(sandbox.projects[(DEFAULT_ORG, DEFAULT_PROJECT)].by_address["B@Example.com"][0])
        )
        assert tally.read == 1 == sandbox.count()
        with pytest.raises(NotFound):
            await c.read_members(RemoteGroup("999", "Gone"))


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
    async with connect(sandbox) as c:
        members = await c.read_members(RemoteGroup(str(gid), "Team"))
        assert [m.key for m in members] == people(5) and sandbox.count() == 3
        sandbox.other_host = True
        sandbox.clear_log()
        with pytest.raises(ProtocolError, match="refusing to follow"):
            await c.read_members(RemoteGroup(str(gid), "Team"))
        assert sandbox.count() == 1


# ------------------------------------------------------------------------------------------------ pacing


def test_default_pacing_is_the_sliding_window() -> None:
    assert PACING.window == (30, 60.0) and PACING.burst == 30 and PACING.rate == 0.5 and PACING.max_concurrency == 2
    assert CAPABILITIES.pacing == PACING
    default = connect(quiet_sandbox(), rate_limit=MISSING, throttle_requests=MISSING)
    assert default.capabilities.pacing == PACING
    tuned = connect(quiet_sandbox(), rate_limit=0.25, burst=1, throttle_requests=MISSING)
    assert tuned.capabilities.pacing == replace(PACING, rate=0.25, burst=1)  # the window stays
    assert connect(quiet_sandbox(), throttle_requests=10, throttle_seconds=20).capabilities.pacing.window == (10, 20.0)
    assert connect(quiet_sandbox(), throttle_requests=None).capabilities.pacing.window is None


async def test_window_pacing_lets_30_go_at_once_and_never_more_in_any_60_seconds() -> None:
    vt = VirtualTime()
    sandbox = TimedSandbox(clock=vt.clock)  # throttle on: 30 per 60 s, sliding, on the virtual clock
    emails = people(80)
    for e in emails:
        sandbox.add_address(e)
    a, b = sandbox.add_list("A"), sandbox.add_list("B")
    async with paced(sandbox, vt, batch_size=1) as c:  # the default pacing; one request per member
        start = vt.clock()
        await asyncio.gather(
            c.add_members(RemoteGroup(str(a), "A"), contacts(emails[:40])),
            c.add_members(RemoteGroup(str(b), "B"), contacts(emails[40:])),
        )
    times = [t - start for t in sandbox.times]
    assert len(times) == 80 and all(r.status == 200 for r in sandbox.requests)  # not one 429
    assert max_in_any_window(times) == 30
    assert max(times[:30]) < 1 and min(times[30:60]) >= 60 and max(times[30:60]) < 61 and min(times[60:]) >= 120
    elapsed = vt.clock() - start
    assert elapsed == pytest.approx(120, abs=1)  # bursts of 30 at 0, 60 and 120 s (the old 29/60 s pacing: 163 s)
    print(f"bitcaster: 80 requests at the default pacing took {elapsed:.0f} virtual seconds")


async def test_a_429_waits_until_the_window_frees_instead_of_retry_after() -> None:
    """Another client used 25 of the key's 30: the 6th request of ours is throttled with `Retry-After: 2`, while
    the window frees only 60 s after its oldest request. One wait, not thirty."""
    vt = VirtualTime()
    sandbox = TimedSandbox(clock=vt.clock)
    emails = people(10)
    for e in emails:
        sandbox.add_address(e)
    gid = sandbox.add_list("L")
    async with raw(sandbox) as other:
        for _ in range(25):
            assert (await other.get(ROOT)).status_code == 200
    sandbox.clear_log()
    async with paced(sandbox, vt, batch_size=1) as c:
        start = vt.clock()
        result = await c.add_members(RemoteGroup(str(gid), "L"), contacts(emails))
    assert len(result.done) == 10 and sandbox.list_emails(gid) == emails
    statuses = [r.status for r in sandbox.requests]
    assert statuses == [200] * 5 + [429] + [200] * 5
    throttled = sandbox.requests[5]
    assert throttled.status == 429
    assert 59 <= vt.clock() - start <= 61  # one wait, until the window freed


async def test_without_the_window_a_429_costs_a_wait_every_2_seconds() -> None:
    """The same, paced by Retry-After alone (`throttle_requests: null`): what the window avoids."""
    vt = VirtualTime()
    sandbox = TimedSandbox(clock=vt.clock)
    emails = people(10)
    for e in emails:
        sandbox.add_address(e)
    gid = sandbox.add_list("L")
    async with raw(sandbox) as other:
        for _ in range(25):
            await other.get(ROOT)
    sandbox.clear_log()
    async with paced(
        sandbox,
        vt,
        batch_size=1,
        rate_limit=1e6,
        throttle_requests=None,
        retry={"backoff_base": 0, "max_rate_limit_waits": 100},
    ) as c:
        await c.add_members(RemoteGroup(str(gid), "L"), contacts(emails))
    assert sum(1 for r in sandbox.requests if r.status == 429) >= 25


async def test_rate_limit_and_burst_still_shape_requests_inside_the_window() -> None:
    vt = VirtualTime()
    sandbox = TimedSandbox(clock=vt.clock)
    emails = people(50)
    for e in emails:
        sandbox.add_address(e)
    gid = sandbox.add_list("L")
    async with paced(sandbox, vt, batch_size=1, rate_limit=0.25, burst=1) as slow:  # one request every 4 s
        start = vt.clock()
        await slow.add_members(RemoteGroup(str(gid), "L"), contacts(emails[:10]))
        assert vt.clock() - start == pytest.approx(36, abs=0.5)
    sandbox.times.clear()
    sandbox.clear_log()
    vt.offset += 60  # the window is empty again
    async with paced(sandbox, vt, batch_size=1, rate_limit=100, burst=100) as fast:  # the window still caps it
        start = vt.clock()
        await fast.add_members(RemoteGroup(str(gid), "L"), contacts(emails[10:]))
        assert vt.clock() - start == pytest.approx(60, abs=1)
    assert max_in_any_window(sandbox.times) == 30 and {r.status for r in sandbox.requests} == {200}


async def test_token_bucket_window() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = TokenBucket(0, window=(3, 10.0), clock=lambda: now[0], sleep=sleep)
    sent = [await bucket.acquire() for _ in range(3)]
    assert sent == [0.0, 0.0, 0.0] and bucket.window_frees_in() == 10.0
    now[0] = 2.0
    bucket.settle(sent[0])  # its answer came at 2 s: it stays in the window until 12 s
    bucket.forget(sent[1])  # throttled: the server did not count it
    assert await bucket.acquire() == 2.0  # the forgotten one's slot
    assert await bucket.acquire() == 10.0  # the oldest (0 s) left the window
    assert await bucket.acquire() == 12.0
    assert bucket.window_frees_in() == pytest.approx(8.0)  # the one of 10 s leaves at 20 s
    with pytest.raises(ValueError):
        TokenBucket(1, window=(0, 10.0))
    assert TokenBucket(1).window_frees_in() is None


async def test_sandbox_throttle_says_retry_after_2_whatever_the_real_wait() -> None:
    now = [0.0]
    sandbox = BitcasterSandbox(clock=lambda: now[0])
    sandbox.add_key("second-key")
    async with raw(sandbox) as first, raw(sandbox, key="second-key") as second:
        answers = [await first.get(ROOT) for _ in range(30)]
        over = await first.get(ROOT)
        assert (await second.get(ROOT)).status_code == 200  # each key has its own window
        now[0] = 59.0
        assert (await first.head(ROOT)).status_code == 429
        now[0] = 60.0
        assert (await first.options(ROOT)).status_code == 200  # every method counts; throttled ones did not
    assert {a.status_code for a in answers} == {200}
    assert over.status_code == 429 and over.headers["Retry-After"] == "2"
    assert over.json() == {"detail": "Request was throttled. Expected available in 2 seconds."}
    assert not [h for a in [*answers, over] for h in a.headers if h.lower().startswith("x-ratelimit")]


# ------------------------------------------------------------------------------------ whole passes


def _config(tmp_path: Path, groups: list[dict[str, Any]]) -> Path:
    provider = {
        "name": "bc",
        "type": "bitcaster",
        "base_url": BASE,
        "token": DEFAULT_KEY,
        "organization": DEFAULT_ORG,
        "project": DEFAULT_PROJECT,
        "rate_limit": 1e6,
        "throttle_requests": None,
        "retry": {"backoff_base": 0},
    }
    cfg = {"state": {"url": f"sqlite:///{tmp_path}/state.db"}, "providers": [provider], "groups": groups}
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


async def run_pass(path: Path, sandbox: BitcasterSandbox) -> RunReport:
    config = load_config(path)
    store = Store.open(config.state.url)
    try:
        return await Reconciler(config, store, transport=httpx.ASGITransport(app=sandbox)).run(PassOptions())
    finally:
        store.close()


def by_group(report: RunReport) -> dict[str, Any]:
    return {p.group: p for p in report.pairs}


async def test_a_pass_on_3_1_2_creates_the_missing_list_and_fills_it(tmp_path: Path) -> None:
    sandbox = quiet_sandbox(release="3.1.2")
    for e in ("a@example.com", "b@example.com"):
        sandbox.add_address(e)
    existing = sandbox.add_list("Existing", ["a@example.com"])
    both = ["a@example.com", "b@example.com"]
    path = _config(tmp_path, [{"name": "New", "members": both}, {"name": "Existing", "members": both}])
    pairs = by_group(await run_pass(path, sandbox))
    assert (pairs["New"].status, pairs["New"].add) == (PairStatus.APPLIED, 2)
    assert (pairs["Existing"].status, pairs["Existing"].add) == (PairStatus.APPLIED, 1)
    (created,) = [dl.id for dl in sandbox.projects[(DEFAULT_ORG, DEFAULT_PROJECT)].lists.values() if dl.name == "New"]
    assert sandbox.list_emails(created) == both and sandbox.list_emails(existing) == both
    # one listing (shared, its Allow header answers the probe), one create, one add each, one member read
    assert sorted(trail(sandbox)) == sorted(
        [
            ("GET", "", 200),
            ("POST", "", 201),
            ("POST", f"{created}/add/", 200),
            ("GET", f"{existing}/m/", 200),
            ("POST", f"{existing}/add/", 200),
        ]
    )
    sandbox.clear_log()
    again = by_group(await run_pass(path, sandbox))
    assert {p.status for p in again.values()} == {PairStatus.IN_SYNC}
    assert sorted(trail(sandbox)) == sorted([("GET", f"{created}/m/", 200), ("GET", f"{existing}/m/", 200)])


async def test_a_pass_on_an_older_release_fails_the_pair_saying_to_create_the_list_and_goes_on(
    tmp_path: Path,
) -> None:
    sandbox = quiet_sandbox(release="legacy")
    for e in ("a@example.com", "b@example.com"):
        sandbox.add_address(e)
    existing = sandbox.add_list("Existing", ["a@example.com"])
    both = ["a@example.com", "b@example.com"]
    path = _config(tmp_path, [{"name": "New", "members": both}, {"name": "Existing", "members": both}])
    pairs = by_group(await run_pass(path, sandbox))
    new = pairs["New"]
    assert new.status is PairStatus.FAILED
    assert "cannot create groups" in (new.error or "") and "create it in bc" in (new.error or "")
    assert (pairs["Existing"].status, pairs["Existing"].add) == (PairStatus.APPLIED, 1)
    assert sandbox.list_names() == ["Existing"]
    # the probe read the Allow header of the listing: no OPTIONS, no POST d/
    assert sorted(trail(sandbox)) == sorted(
        [("GET", "", 200), ("GET", f"{existing}/m/", 200), ("POST", f"{existing}/add/", 200)]
    )


@pytest.mark.parametrize("release", ["3.1.2", "legacy"])
async def test_a_bound_list_deleted_in_bitcaster_is_looked_up_by_name_again(tmp_path: Path, release: str) -> None:
    sandbox = quiet_sandbox(release=release)
    for e in ("a@example.com", "b@example.com"):
        sandbox.add_address(e)
    first = sandbox.add_list("Team", ["a@example.com"])
    path = _config(tmp_path, [{"name": "Team", "members": ["a@example.com", "b@example.com"]}])
    (p,) = (await run_pass(path, sandbox)).pairs
    assert (p.status, p.add) == (PairStatus.APPLIED, 1)
    sandbox.delete_list(first)
    sandbox.clear_log()
    (p,) = (await run_pass(path, sandbox)).pairs
    if release == "3.1.2":
        (second,) = sandbox.projects[(DEFAULT_ORG, DEFAULT_PROJECT)].lists
        assert (p.status, p.add) == (PairStatus.APPLIED, 2)
        assert sandbox.list_emails(second) == ["a@example.com", "b@example.com"]
        assert trail(sandbox) == [
            ("GET", f"{first}/m/", 200),  # [] for a list that does not exist...
            ("GET", "", 200),  # ...which d/ shows: NotFound, so the reconciler binds by name again
            ("POST", "", 201),
            ("POST", f"{second}/add/", 200),
        ]
    else:
        assert p.status is PairStatus.FAILED and "create it in bc" in (p.error or "")
        assert trail(sandbox) == [("GET", f"{first}/m/", 200), ("GET", "", 200)]


# ---------------------------------------------------------------------------------------------- settings


def test_settings() -> None:
    s = settings(base_url="https://bitcaster.acme.example/api", throttle_requests=MISSING)
    assert (s.organization, s.project, s.type) == (DEFAULT_ORG, DEFAULT_PROJECT, "bitcaster")
    assert s.window == (30, 60.0)
    for bad in (
        {"token": ""},
        {"token": "   "},
        {"organization": "acme corp"},
        {"project": "news/letters"},
        {"organization": ""},
        {"base_url": "http://bitcaster.acme.example/api"},  # plain http off loopback
        {"type": "communic8"},
        {"surprise": 1},
        {"throttle_requests": 0},
        {"throttle_seconds": 0},
    ):
        with pytest.raises(ValidationError):
            settings(**bad)
    for missing in ("base_url", "token", "organization", "project"):
        with pytest.raises(ValidationError):
            settings(**{missing: MISSING})
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
    async with connect(sandbox) as c:
        caplog.set_level(logging.DEBUG, logger="syncd")
        group = await c.find_group(name="Team")
        assert group is not None
        await c.add_members(group, contacts([*emails, "ghost@example.com", "Ghost.Two@example.com"]))
        await c.read_members(RemoteGroup(str(gid), "Team"))
        await c.create_group("Sales")
        with pytest.raises(NotFound):
            await c.read_members(RemoteGroup("999", "Gone"))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "@example.com" not in text.lower() and DEFAULT_KEY not in text
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
    async with connect(sandbox) as c:
        result = await c.add_members(
            RemoteGroup(str(gid), "Team"), contacts([*known[:2], "ghost@example.com", *known[2:]])
        )
    assert sorted(result.done) == known
    assert [(r.email, r.code) for r in result.rejected] == [("ghost@example.com", "unknown_address")]
    assert sandbox.list_emails(gid) == known


def test_a_400_that_is_not_about_addresses_is_not_a_batch_reject() -> None:
    for body in ({"detail": "JSON parse error - Expecting value"}, ["Expected a list of items but got type dict."]):
        found = classify(_answer(400, body))
        assert type(found) is FatalError
