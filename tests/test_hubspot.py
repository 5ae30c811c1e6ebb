"""The HubSpot source against the bundled HubSpot sandbox: request counts, list readiness, 207 partial reads,
rejects, the burst and daily limits, pacing by tier, auth, and the sandbox's own API rules and wire shapes (parsed
with the official SDK's models). Nothing is mocked: the source talks HTTP to the sandbox (in process through an
ASGI transport, or over loopback where real timeouts matter); where time matters without a real wait, the pacing
bucket runs on a virtual clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from hubspot.crm import contacts as hs_contacts
from hubspot.crm import lists as hs_lists

from sandboxes._core import Fault, Mount, RateLimit
from sandboxes.hubspot import DEFAULT_TOKEN, HubSpotSandbox, rate_limit_body
from sandboxes.server import ServerThread
from syncd.config import Config, load_config
from syncd.errors import ConfigError, SourceError
from syncd.model import Contact, PostalAddress, RejectCode, RunReport, Target
from syncd.sources import HubSpotSource, PartialRead, build_sources, read_sources
from syncd.sources.hubspot import HubSpotSourceSettings, quota
from tests.e2e import World, emails

SERVER = "http://127.0.0.1"
FAST = {"rate_limit": 1e6, "retry": {"backoff_base": 0}}
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
def hs() -> HubSpotSandbox:
    return HubSpotSandbox()


def config(
    tmp_path: Path, groups: list[dict[str, Any]], server: str = SERVER, *, fast: bool = True, **source: Any
) -> Config:
    """A config with one HubSpot source; `fast` (the default) unpaces it and zeroes its backoff, else the
    source runs with syncd's real defaults (the free tier's pace, real backoff)."""
    entry = {"type": "hubspot", "token": DEFAULT_TOKEN, "base_url": f"{server}/hubspot", "groups": groups}
    if fast:
        entry.update(FAST)
    entry.update(source)
    cfg = {
        "providers": [
            {"name": "c8", "type": "communic8", "base_url": f"{server}/communic8/int/v1", "token": "t"},
            {"name": "cr", "type": "cleverreach", "base_url": f"{server}/cleverreach/v3", "token": "t"},
        ],
        "sources": [entry],
    }
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_config(path)


def source(cfg: Config, hs: HubSpotSandbox) -> HubSpotSource:
    built = build_sources(cfg, transport=httpx.ASGITransport(app=Mount({"hubspot": hs})))
    found = built[1]
    assert isinstance(found, HubSpotSource)
    return found


def settings(cfg: Config) -> HubSpotSourceSettings:
    (entry,) = cfg.sources
    assert isinstance(entry, HubSpotSourceSettings)
    return entry


def bodies(hs: HubSpotSandbox, path: str) -> list[Any]:
    with hs.lock:
        return [json.loads(r.body) for r in hs.requests if path in r.path]


def statuses(hs: HubSpotSandbox, path: str = ".") -> list[int]:
    with hs.lock:
        return [r.status for r in hs.requests if re.search(path, r.path)]


class Recorder:
    """syncd's RequestHooks, recorded: every answer the client saw and every retry or rate-limit wait."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.retries: list[str] = []

    def on_request(self, provider: str, method: str, status: str, seconds: float) -> None:
        self.answers.append(status)

    def on_retry(self, provider: str, reason: str) -> None:
        self.retries.append(reason)


class VirtualTime:
    """A clock for the pacing bucket that moves only when the bucket sleeps. Time is counted in steps of 2^-20 s
    (about a microsecond) so that differences are exact, and a sleep lasts at least what was asked, as a real
    one does; `stamps` records the moments a sandbox's rate limit saw requests (its clock)."""

    STEP = 2.0**-20

    def __init__(self) -> None:
        self.steps = 0
        self.sleeps: list[float] = []
        self.stamps: list[float] = []

    def now(self) -> float:
        return self.steps * self.STEP

    def stamp(self) -> float:
        now = self.now()
        self.stamps.append(now)
        return now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.steps += max(0, math.ceil(seconds / self.STEP))
        await asyncio.sleep(0)


def busiest_window(times: list[float], span: float) -> int:
    """The most requests in any half-open window [t, t + span)."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - span:
            first += 1
        most = max(most, last - first + 1)
    return most


# ------------------------------------------------------------------------------------------ requests


async def test_a_1000_member_list_costs_1_list_read_4_membership_pages_and_10_batch_reads(
    tmp_path: Path, hs: HubSpotSandbox
) -> None:
    list_id = hs.seed_list("Customers", 1000)
    (group,) = await source(config(tmp_path, [{"name": "Customers", "list_id": list_id}]), hs).read()

    with hs.lock:
        first = hs.requests[0]
    assert (first.method, first.path) == ("GET", f"/crm/v3/lists/{list_id}")  # the list before its members
    assert hs.count(method="GET", path=rf"/lists/{list_id}$") == 1
    assert hs.count(method="GET", path=r"/memberships$") == 4
    assert hs.count(method="POST", path=r"/contacts/batch/read$") == 10
    assert hs.count() == 15  # nothing else: no token request, no search
    with hs.lock:
        pages = [r.query for r in hs.requests if r.path.endswith("/memberships")]
    assert all("limit=250" in q for q in pages) and "after=" not in pages[0]
    assert [len(b["inputs"]) for b in bodies(hs, "batch/read")] == [100] * 10
    assert bodies(hs, "batch/read")[0]["properties"] == ["email", "firstname", "lastname"]

    assert len(group.members) == 1000 and group.rejected == ()
    assert group.members[0] == Contact("contact00000@example.com", "First0", "Last0")
    assert [m.email for m in group.members] == [f"contact{i:05d}@example.com" for i in range(1000)]
    assert group.source == "hubspot" and group.targets == (Target("c8"), Target("cr"))


@pytest.mark.parametrize(("size", "pages", "batches"), [(0, 1, 0), (1, 1, 1), (250, 1, 3), (251, 2, 3), (1001, 5, 11)])
async def test_request_counts_follow_the_page_and_batch_caps(
    tmp_path: Path, hs: HubSpotSandbox, size: int, pages: int, batches: int
) -> None:
    list_id = hs.seed_list("L", size)
    (group,) = await source(config(tmp_path, [{"name": "L", "list_id": list_id}], allow_empty=True), hs).read()
    assert len(group.members) == size
    assert (hs.count(path=r"/lists/\d+$"), hs.count(path="memberships"), hs.count(path="batch/read")) == (
        1,
        pages,
        batches,
    )
    assert hs.count() == 1 + pages + batches


async def test_mapped_properties_fill_names_and_address(tmp_path: Path, hs: HubSpotSandbox) -> None:
    ada = hs.add_contact(
        "Ada@Example.com", "Ada", "Lovelace", address="12 St James's Sq", city="London", zip="SW1Y 4JH", country="GB"
    )
    bob = hs.add_contact("bob@example.com", None, "Stone", nickname="Bobby")
    list_id = hs.add_list("Print", [bob, ada])
    properties = {
        "address.line1": "address",
        "address.city": "city",
        "address.postcode": "zip",
        "address.country": "country",
        "first_name": "nickname",
    }
    cfg = config(tmp_path, [{"name": "Print", "list_id": list_id, "targets": ["c8"]}], properties=properties)
    (group,) = await source(cfg, hs).read()
    assert bodies(hs, "batch/read")[0]["properties"] == [
        "email",
        "nickname",
        "lastname",
        "address",
        "city",
        "zip",
        "country",
    ]
    # membership order is ascending recordId: ada (created first) before bob
    assert group.members == (
        Contact(
            "Ada@Example.com", None, "Lovelace", PostalAddress("12 St James's Sq", None, "London", "SW1Y 4JH", "GB")
        ),
        Contact("bob@example.com", "Bobby", "Stone"),
    )
    assert group.targets == (Target("c8"),)


# ----------------------------------------------------------------------------------- list readiness

NOT_READY = [
    pytest.param(
        {"processing_status": "PROCESSING"},
        "still processing (processingStatus PROCESSING, not COMPLETE): its memberships are partial",
        id="processing",
    ),
    pytest.param(
        {"processing_status": "REFRESHING"},
        "still processing (processingStatus REFRESHING, not COMPLETE): its memberships are partial",
        id="refreshing",
    ),
    pytest.param(
        {"object_type_id": "0-2"},
        "a list of 0-2, not contacts (objectTypeId 0-1): syncd reads contact lists only",
        id="companies",
    ),
]


@pytest.mark.parametrize(("state", "reason"), NOT_READY)
async def test_a_list_not_ready_or_not_of_contacts_fails_its_group_without_reading_members(
    tmp_path: Path, hs: HubSpotSandbox, state: dict[str, str], reason: str
) -> None:
    good = hs.seed_list("Good", 5)
    odd = hs.seed_list("Odd", 5, prefix="odd")
    hs.set_list(odd, **state)
    cfg = config(tmp_path, [{"name": "Odd", "list_id": odd}, {"name": "Good", "list_id": good}])
    read = await read_sources([source(cfg, hs)])

    assert [(g.name, len(g.members)) for g in read.groups] == [("Good", 5)]  # the other list still applies
    assert read.errors == [f"source hubspot: list {odd} (group 'Odd'): {reason} (left untouched this pass)"]
    assert hs.count(path=rf"/lists/{odd}$") == 1
    assert hs.count(path=rf"/lists/{odd}/memberships") == 0  # not one membership page of that list
    assert hs.count(path=rf"/lists/{good}/memberships") == 1 and hs.count(path="batch/read") == 1
    assert hs.count() == 4


async def test_a_list_answer_without_its_state_fails_closed(tmp_path: Path, hs: HubSpotSandbox) -> None:
    list_id = hs.seed_list("L", 3)
    drifted = {"list": {"listId": list_id, "listVersion": 1, "name": "L", "objectTypeId": "0-1", "processingType": "X"}}
    hs.inject(Fault(status=200, body=drifted, path=rf"/lists/{list_id}$"))
    with pytest.raises(SourceError) as info:
        await source(config(tmp_path, [{"name": "L", "list_id": list_id}]), hs).read()
    assert str(info.value) == (
        f"source hubspot: list {list_id} (group 'L'): HubSpot list {list_id}: the answer has no processingStatus "
        "(refusing to guess)"
    )
    assert hs.count(path="memberships") == 0


async def test_a_list_answered_as_deleted_fails_closed(tmp_path: Path, hs: HubSpotSandbox) -> None:
    list_id = hs.seed_list("L", 3)
    deleted = {"listId": list_id, "listVersion": 1, "name": "L", "objectTypeId": "0-1", "processingStatus": "COMPLETE"}
    deleted |= {"processingType": "MANUAL", "size": 3, "deletedAt": "2026-11-02T10:00:00.000Z"}
    hs.inject(Fault(status=200, body={"list": deleted}, path=rf"/lists/{list_id}$"))
    read = await read_sources([source(config(tmp_path, [{"name": "L", "list_id": list_id}]), hs)])
    assert read.errors == [
        f"source hubspot: list {list_id} (group 'L'): the list was deleted (deletedAt 2026-11-02T10:00:00.000Z): "
        "restore it in HubSpot, or remove the group"
    ]
    assert hs.count(path="memberships") == 0


@dataclass
class HubSpotWorld(World):
    """The e2e world (Communic8, CleverReach, a state DB) plus the HubSpot sandbox at /hubspot."""

    hs: HubSpotSandbox = field(default_factory=HubSpotSandbox)

    @property
    def app(self) -> Mount:
        return Mount({"communic8": self.c8, "cleverreach": self.cr, "hubspot": self.hs})

    def seed(self, name: str, people: list[str]) -> str:
        self.people(people)
        return self.hs.add_list(name, self.hs.add_contacts(people))

    def settings(self, lists: dict[str, str]) -> Config:
        groups = [{"name": name, "list_id": list_id} for name, list_id in lists.items()]
        entry = {"type": "hubspot", "token": DEFAULT_TOKEN, "base_url": f"{SERVER}/hubspot", "groups": groups}
        return self.config([], sources=[{**entry, **FAST}])


async def test_a_processing_list_leaves_its_group_untouched_at_every_provider(tmp_path: Path) -> None:
    world = HubSpotWorld(tmp_path)
    first, second = emails(30, "a"), emails(20, "b")
    a, b = world.seed("A", first), world.seed("B", second)
    cfg = world.settings({"A": a, "B": b})
    assert (await world.run(cfg)).ok

    # HubSpot re-evaluates list A: half its members are not back yet. List B gains a member.
    with world.hs.lock:
        members = sorted(world.hs.lists[int(a)]["members"])
    world.hs.remove_from_list(a, [str(i) for i in members[:15]])
    world.hs.set_list(a, processing_status="PROCESSING")
    world.people(["new@example.com"])
    world.hs.add_to_list(b, world.hs.add_contacts(["new@example.com"]))
    world.clear_logs()
    world.hs.clear_log()

    report: RunReport = await world.run(cfg)
    assert report.errors == (
        f"source hubspot: list {a} (group 'A'): still processing (processingStatus PROCESSING, not COMPLETE): its "
        "memberships are partial (left untouched this pass)",
    )
    assert {(p.group, p.provider, p.add, p.remove) for p in report.pairs} == {("B", "c8", 1, 0), ("B", "cr", 1, 0)}
    assert world.hs.count(path=rf"/lists/{a}/memberships") == 0
    group_a = next(g for g, data in world.c8.groups.items() if data["name"] == "A")
    assert world.c8.group_emails(group_a) == set(first)  # nobody removed on a partial list


# -------------------------------------------------------------------------------------------- rejects


async def test_207_partial_batch_read_rejects_the_missing_contacts_and_keeps_the_rest(
    tmp_path: Path, hs: HubSpotSandbox
) -> None:
    list_id = hs.seed_list("L", 150)
    with hs.lock:
        ids = sorted(hs.lists[int(list_id)]["members"])
    gone = [str(ids[3]), str(ids[120])]
    for contact_id in gone:
        hs.delete_contact(contact_id, keep_in_lists=True)
    (group,) = await source(config(tmp_path, [{"name": "L", "list_id": list_id}]), hs).read()
    assert statuses(hs, "batch/read") == [207, 207]
    assert len(group.members) == 148
    assert [(r.email, r.code) for r in group.rejected] == [("", "not_found"), ("", "not_found")]
    assert [r.reason for r in group.rejected] == [
        f"HubSpot contact {c} is in list {list_id} but could not be read (deleted?)" for c in gone
    ]


async def test_contacts_without_email_are_rejects_of_the_group_not_errors(tmp_path: Path, hs: HubSpotSandbox) -> None:
    ok = hs.add_contact("ok@example.com")
    no_email = hs.add_contact(None, "No", "Email")
    blank = hs.add_contact("   ", "Blank")
    invalid = hs.add_contact("not-an-email")
    duplicate = hs.add_contact("OK@example.com")
    list_id = hs.add_list("L", [ok, no_email, blank, invalid, duplicate])
    (group,) = await source(config(tmp_path, [{"name": "L", "list_id": list_id}]), hs).read()
    assert [m.email for m in group.members] == ["ok@example.com"]
    assert [(r.email, r.reason, r.code) for r in group.rejected] == [
        ("", f"HubSpot contact {no_email} has no email address", RejectCode.MISSING_FIELDS),
        ("", f"HubSpot contact {blank} has no email address", RejectCode.MISSING_FIELDS),
        ("not-an-email", "not an email address: needs exactly one '@'", RejectCode.INVALID_EMAIL),
        ("OK@example.com", "duplicate of ok@example.com in the same group", RejectCode.DUPLICATE),
    ]


# ------------------------------------------------------------------------------------- the daily limit


async def test_a_daily_limit_429_on_the_first_request_is_the_only_request_and_fails_every_group(
    tmp_path: Path,
) -> None:
    """syncd's real defaults (the free tier's pace, real backoff): no retry, no wait, one request in all."""
    hs = HubSpotSandbox(daily_limit=250_000)
    lists = {name: hs.seed_list(name, 300, prefix=name.lower()) for name in ("A", "B", "C")}
    hs.exhaust_daily()
    cfg = config(tmp_path, [{"name": n, "list_id": i} for n, i in lists.items()], fast=False)
    assert settings(cfg).retry.backoff_base == 0.5 and settings(cfg).pacing_rate == 10.0
    hooks, sleeps = Recorder(), VirtualTime()
    src = HubSpotSource(
        settings(cfg), cfg, transport=httpx.ASGITransport(app=Mount({"hubspot": hs})), hooks=hooks, sleep=sleeps.sleep
    )

    started = time.monotonic()
    read = await read_sources([src])
    elapsed = time.monotonic() - started

    assert hs.count() == 1  # the first list's read, and nothing after it
    with hs.lock:
        (only,) = hs.requests
    assert (only.method, only.path, only.status) == ("GET", f"/crm/v3/lists/{lists['A']}", 429)
    assert read.groups == []
    (error,) = read.errors
    assert re.fullmatch(
        "source hubspot: HubSpot's daily API limit for this account is used up \\(429 policyName DAILY; "
        "X-HubSpot-RateLimit-Daily 250000; X-HubSpot-RateLimit-Daily-Remaining 0; correlationId "
        f"{UUID}\\): no further request goes to HubSpot from this source this pass, and its groups \\('A', 'B', "
        "'C'\\) are left untouched; the limit resets at midnight in the account's time zone",
        error,
    ), error
    assert hooks.answers == ["429"] and hooks.retries == []  # not retried, not waited out
    assert sleeps.sleeps == []  # the pacing never slept either
    assert elapsed < 0.5


async def test_the_daily_limit_mid_pass_stops_the_source_and_fails_all_its_groups(tmp_path: Path) -> None:
    """The limit runs out on the 21st request: that one answers 429 DAILY and nothing is sent after it, and the
    list that was already read in full is not applied either (a SourceError, not a PartialRead)."""
    hs = HubSpotSandbox(daily_limit=20)
    a, b = hs.seed_list("A", 1000), hs.seed_list("B", 1000, prefix="b")
    cfg = config(tmp_path, [{"name": "A", "list_id": a}, {"name": "B", "list_id": b}], max_concurrency=1)
    hooks = Recorder()
    src = HubSpotSource(settings(cfg), cfg, transport=httpx.ASGITransport(app=Mount({"hubspot": hs})), hooks=hooks)
    with pytest.raises(SourceError) as info:
        await src.read()
    assert not isinstance(info.value, PartialRead)
    assert statuses(hs) == [200] * 20 + [429]
    assert "X-HubSpot-RateLimit-Daily 20; X-HubSpot-RateLimit-Daily-Remaining 0;" in str(info.value)
    assert "its groups ('A', 'B') are left untouched" in str(info.value)
    assert hooks.retries == []


async def test_the_daily_limit_cancels_requests_already_queued(tmp_path: Path) -> None:
    """With 4 requests in flight at once, at most those already sent meet the daily limit."""
    hs = HubSpotSandbox(daily_limit=20)
    lists = [hs.seed_list(f"L{i}", 600, prefix=f"l{i}") for i in range(3)]
    cfg = config(tmp_path, [{"name": f"L{i}", "list_id": list_id} for i, list_id in enumerate(lists)])
    with pytest.raises(SourceError, match="daily API limit"):
        await source(cfg, hs).read()
    answered = statuses(hs)
    assert answered.count(200) == 20 and 1 <= answered.count(429) <= 4
    await asyncio.sleep(0.05)
    assert statuses(hs) == answered  # nothing left running after read() returned


async def test_a_daily_limit_pass_sends_nothing_to_any_provider(tmp_path: Path) -> None:
    world = HubSpotWorld(tmp_path)
    a = world.seed("A", emails(30, "a"))
    cfg = world.settings({"A": a})
    assert (await world.run(cfg)).ok
    world.hs.exhaust_daily()
    world.clear_logs()
    world.hs.clear_log()

    report = await world.run(cfg)
    assert not report.ok and report.pairs == ()
    (error,) = report.errors
    assert error.startswith("source hubspot: HubSpot's daily API limit for this account is used up (429 policyName")
    assert world.hs.count() == 1
    assert world.c8.count() == world.cr.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            rate_limit_body("You have reached your ten_secondly_rolling limit.", "TEN_SECONDLY_ROLLING"), id="burst"
        ),
        pytest.param(rate_limit_body("You have reached your secondly limit.", "SECONDLY"), id="secondly"),
        pytest.param("", id="no body"),
        pytest.param("policyName DAILY", id="not JSON"),
        pytest.param({"status": "error", "policyName": None}, id="null policyName"),
        pytest.param({"policyName": 5, "message": ["x"]}, id="odd types"),
        pytest.param(["DAILY"], id="a list"),
    ],
)
async def test_any_other_429_is_waited_out(tmp_path: Path, hs: HubSpotSandbox, body: Any) -> None:
    list_id = hs.seed_list("L", 300)
    hs.inject(Fault(status=429, body=body, path="memberships", skip=1, times=1))
    hooks = Recorder()
    cfg = config(tmp_path, [{"name": "L", "list_id": list_id}])
    src = HubSpotSource(settings(cfg), cfg, transport=httpx.ASGITransport(app=Mount({"hubspot": hs})), hooks=hooks)
    (group,) = await src.read()
    assert len(group.members) == 300
    assert statuses(hs, "memberships") == [200, 429, 200]
    assert hooks.retries == ["rate_limited"]


async def test_a_daily_429_is_recognised_by_its_body_alone(tmp_path: Path, hs: HubSpotSandbox) -> None:
    """No daily headers (HubSpot leaves them out for OAuth tokens), a minimal body: still the daily limit."""
    list_id = hs.seed_list("L", 300)
    hs.inject(Fault(status=429, body={"policyName": "DAILY"}, path="memberships", skip=1, times=0))
    with pytest.raises(SourceError) as info:
        await source(config(tmp_path, [{"name": "L", "list_id": list_id}]), hs).read()
    assert str(info.value).startswith(
        "source hubspot: HubSpot's daily API limit for this account is used up (429 policyName DAILY): no further "
        "request"
    )
    assert statuses(hs, "memberships") == [200, 429]
    assert hs.count(path="batch/read") <= 2  # the first page's two batch reads: queued, then cancelled or sent


async def test_a_burst_429_that_outlasts_its_waits_names_the_policy(tmp_path: Path, hs: HubSpotSandbox) -> None:
    list_id = hs.seed_list("L", 3)
    body = rate_limit_body("You have reached your ten_secondly_rolling limit.", "TEN_SECONDLY_ROLLING")
    hs.inject(Fault(status=429, body=body, path="memberships", times=0))
    cfg = config(tmp_path, [{"name": "L", "list_id": list_id}], retry={"backoff_base": 0, "max_rate_limit_waits": 2})
    with pytest.raises(SourceError) as info:
        await source(cfg, hs).read()
    assert re.fullmatch(
        f"source hubspot: list {list_id} \\(group 'L'\\): HTTP 429: RATE_LIMIT: You have reached your "
        f"ten_secondly_rolling limit. \\(policyName TEN_SECONDLY_ROLLING; correlationId {UUID}\\)",
        str(info.value),
    )
    assert statuses(hs, "memberships") == [429, 429, 429]


# ------------------------------------------------------------------------------------ rate limits


async def test_a_429_with_retry_after_is_waited_out(tmp_path: Path, hs: HubSpotSandbox) -> None:
    list_id = hs.seed_list("L", 600)
    hs.inject(Fault(status=429, retry_after=1, path="memberships", skip=1, times=1))
    started = time.monotonic()
    (group,) = await source(config(tmp_path, [{"name": "L", "list_id": list_id}]), hs).read()
    assert time.monotonic() - started >= 1.0
    assert len(group.members) == 600
    with hs.lock:
        pages = [(r.status, r.at) for r in hs.requests if r.path.endswith("/memberships")]
    assert [status for status, _ in pages] == [200, 429, 200, 200]  # 3 pages + the refused one, retried
    assert pages[2][1] - pages[1][1] >= 1.0  # the retry came after Retry-After


@pytest.mark.parametrize(
    ("tier", "limit", "rate"),
    [("free", 100, 10.0), ("starter", 100, 10.0), ("professional", 190, 19.0), ("enterprise", 190, 19.0)]
    + [("api_limit_increase", 250, 25.0)],
)
async def test_the_tier_sets_the_default_pace(tmp_path: Path, tier: str, limit: int, rate: float) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_text(
        f"sources:\n  - type: hubspot\n    token: t\n    tier: {tier}\n    groups: [{{name: G, list_id: 1}}]\n"
    )
    src = build_sources(load_config(path))[1]
    assert isinstance(src, HubSpotSource)
    assert src.settings.burst_limit == limit
    api = src._client()
    try:
        assert (api.bucket.rate, api.bucket.capacity) == (rate, 1)  # burst 1: never above `limit` in any 10 s
    finally:
        await api.aclose()


async def test_the_default_tier_is_free_and_rate_limit_overrides_it(tmp_path: Path) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_text("sources:\n  - type: hubspot\n    token: t\n    groups: [{name: G, list_id: 1}]\n")
    default = settings(load_config(path))
    assert (default.tier, default.rate_limit, default.burst_limit, default.pacing_rate) == ("free", None, 100, 10.0)
    path.write_text(
        "sources:\n  - type: hubspot\n    token: t\n    tier: enterprise\n    rate_limit: 5\n"
        "    groups: [{name: G, list_id: 1}]\n"
    )
    assert settings(load_config(path)).pacing_rate == 5.0
    path.write_text("sources:\n  - type: hubspot\n    token: t\n    tier: gold\n    groups: [{name: G, list_id: 1}]\n")
    with pytest.raises(ConfigError, match="tier"):
        load_config(path)


async def test_default_pacing_sends_exactly_100_requests_in_any_10_seconds(tmp_path: Path) -> None:
    """The free tier's default pace against a sandbox enforcing HubSpot's free burst limit (100 per rolling
    10 s), on a virtual clock: 211 requests, none refused, never more than 100 in any 10 s window, and the
    budget used in full (100 in the busiest windows, 21 s for 211 requests: the pace is not halved when
    X-HubSpot-RateLimit-Remaining reaches 0, as it does on every request once the window is full)."""
    clock = VirtualTime()
    hs = HubSpotSandbox(rate_limit=RateLimit(100, 10.0, clock=clock.stamp))
    clock.stamps.clear()
    list_id = hs.seed_list("L", 15_000)
    cfg = config(tmp_path, [{"name": "L", "list_id": list_id}], fast=False)
    transport = httpx.ASGITransport(app=Mount({"hubspot": hs}))
    src = HubSpotSource(settings(cfg), cfg, transport=transport, clock=clock.now, sleep=clock.sleep)

    (group,) = await src.read()
    assert len(group.members) == 15_000
    assert hs.count() == 1 + 60 + 150 == len(clock.stamps)
    assert set(statuses(hs)) == {200}
    assert busiest_window(clock.stamps, 10.0) == 100
    assert 21.0 <= clock.now() < 21.01


async def test_pacing_stays_under_the_sandboxs_rolling_limit(tmp_path: Path) -> None:
    """Scaled down (10 requests per rolling second, rate_limit 10): 15 requests, not one 429."""
    hs = HubSpotSandbox(rate_limit=RateLimit(10, 1.0))
    list_id = hs.seed_list("L", 1000)
    cfg = config(tmp_path, [{"name": "L", "list_id": list_id}], rate_limit=10, burst=1)
    started = time.monotonic()
    (group,) = await source(cfg, hs).read()
    assert len(group.members) == 1000
    assert hs.count() == 15
    assert set(statuses(hs)) == {200}
    assert time.monotonic() - started >= 1.3  # 14 waits of 1/10 s after the first


async def test_unpaced_reads_survive_the_sandboxs_rate_limit(tmp_path: Path) -> None:
    """HubSpot sends no Retry-After: the rate-limit headers and the backoff wait the 429s out."""
    hs = HubSpotSandbox(rate_limit=RateLimit(5, 1.0))
    list_id = hs.seed_list("L", 1000)
    (group,) = await source(config(tmp_path, [{"name": "L", "list_id": list_id}]), hs).read()
    assert len(group.members) == 1000
    answered = statuses(hs)
    assert answered.count(200) == 15 and set(answered) <= {200, 429}


def test_quota_headers_pause_only_when_the_window_is_spent() -> None:
    def response(remaining: int, maximum: int = 190, interval: int = 10_000) -> httpx.Response:
        headers = {
            "X-HubSpot-RateLimit-Max": str(maximum),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(interval),
        }
        return httpx.Response(200, headers=headers)

    assert quota(response(150)) is None and quota(response(1)) is None
    spent = quota(response(0))
    assert spent is not None and spent.remaining == 0
    assert spent.reset_in == pytest.approx(10 / 190)  # one slot of the rolling window
    assert quota(httpx.Response(200)) is None
    assert quota(response(0, interval=0)) is None
    # a paced client waits only for what its pace does not already wait
    assert quota(response(0), pace=19) is None and quota(response(0, maximum=100), pace=10) is None
    slower = quota(response(0, maximum=100), pace=20)
    assert slower is not None and slower.reset_in == pytest.approx(0.1 - 0.05)


async def test_a_spent_window_is_waited_for_instead_of_running_into_429s(tmp_path: Path) -> None:
    """Another client of the same app spent most of its budget: unpaced, syncd still sees at most one 429 (the
    other client's requests all went at once, so the window frees only after a whole second: the sandbox says so
    with a Retry-After here, which HubSpot does not promise; without one, backoff waits, see above)."""
    hs = HubSpotSandbox(rate_limit=RateLimit(20, 1.0), retry_after=True)
    assert hs.quota is not None
    for _ in range(17):  # the other client's requests, in the same rolling second
        hs.quota.hit()
    list_id = hs.seed_list("L", 600)
    (group,) = await source(config(tmp_path, [{"name": "L", "list_id": list_id}]), hs).read()
    assert len(group.members) == 600
    assert statuses(hs).count(429) <= 1  # at most the one that found out
    assert hs.count(path=".") >= 10


# -------------------------------------------------------------------------------------------- failures


async def test_a_refused_token_fails_the_whole_source_after_one_request(tmp_path: Path, hs: HubSpotSandbox) -> None:
    hs.tokens = {"another-token"}
    a, b = hs.seed_list("A", 3), hs.seed_list("B", 3, prefix="b")
    src = source(config(tmp_path, [{"name": "A", "list_id": a}, {"name": "B", "list_id": b}]), hs)
    with pytest.raises(SourceError) as info:
        await src.read()
    assert not isinstance(info.value, PartialRead)
    text = str(info.value)
    assert text.startswith("source hubspot: HubSpot refused the token (HTTP 401: INVALID_AUTHENTICATION:")
    assert "correlationId" in text and "crm.lists.read" in text
    assert DEFAULT_TOKEN not in text and DEFAULT_TOKEN not in repr(src)
    assert hs.count() == 1  # list B is not even asked for


async def test_a_list_that_is_gone_fails_that_group_only(tmp_path: Path, hs: HubSpotSandbox) -> None:
    good = hs.seed_list("Good", 5)
    cfg = config(tmp_path, [{"name": "Good", "list_id": good}, {"name": "Gone", "list_id": "999"}])
    read = await read_sources([source(cfg, hs)])
    assert [g.name for g in read.groups] == ["Good"]
    (error,) = read.errors
    assert error.startswith(
        "source hubspot: list 999 (group 'Gone'): the list does not exist (deleted?): HTTP 404: OBJECT_NOT_FOUND: "
        "List 999 does not exist. (correlationId "
    )
    assert error.endswith("(left untouched this pass)")
    assert hs.count(path="/lists/999") == 1  # its memberships are not asked for


async def test_a_fault_mid_pagination_fails_the_group_and_cancels_its_batch_reads(
    tmp_path: Path, hs: HubSpotSandbox
) -> None:
    list_id = hs.seed_list("L", 1000)
    hs.inject(Fault(status=503, path="memberships", skip=2, times=0))  # the 3rd page and every retry of it
    cfg = config(tmp_path, [{"name": "L", "list_id": list_id}], retry={"backoff_base": 0, "max_retries": 2})
    src = source(cfg, hs)
    with pytest.raises(SourceError) as info:
        await src.read()
    assert f"list {list_id} (group 'L'): HTTP 503" in str(info.value)
    assert hs.count(path="memberships") == 2 + 3  # two good pages, the third tried 1 + 2 times


def test_a_slow_hubspot_times_out_and_fails_closed(tmp_path: Path) -> None:
    """Real loopback HTTP (timeouts are the network's business, not the ASGI transport's)."""
    hs = HubSpotSandbox()
    list_id = hs.seed_list("L", 10)
    hs.inject(Fault(status=0, delay=1.5, path="memberships", times=0))
    with ServerThread(Mount({"hubspot": hs})) as server:
        cfg = config(
            tmp_path,
            [{"name": "L", "list_id": list_id}],
            server=server.url,
            timeout=0.2,
            retry={"backoff_base": 0, "max_retries": 1},
        )
        started = time.monotonic()
        read = asyncio.run(read_sources(build_sources(cfg)))
        elapsed = time.monotonic() - started
    assert read.groups == [] and len(read.errors) == 1
    assert read.errors[0] == (
        f"source hubspot: list {list_id} (group 'L'): GET crm/v3/lists/{list_id}/memberships: timed out (ReadTimeout)"
    )
    assert elapsed < 1.4  # two attempts of 0.2 s, not the 1.5 s the sandbox would take


def test_a_failing_batch_read_stops_the_list_read_early(tmp_path: Path, hs: HubSpotSandbox) -> None:
    """Over real HTTP (the in-process transport never yields between pages, so nothing could interleave)."""
    list_id = hs.seed_list("L", 2500)
    bad = {"status": "error", "message": "bad", "category": "VALIDATION_ERROR"}
    hs.inject(Fault(status=400, body=bad, path="batch/read", times=0))
    hs.inject(Fault(status=0, delay=0.05, path="memberships", times=0))  # pages take a moment, as real ones do
    with ServerThread(Mount({"hubspot": hs})) as server:
        cfg = config(tmp_path, [{"name": "L", "list_id": list_id}], server=server.url)
        with pytest.raises(SourceError, match="HTTP 400: VALIDATION_ERROR: bad"):
            asyncio.run(build_sources(cfg)[1].read())
    assert hs.count(path="memberships") < 10  # it did not page through all 10 pages first


async def test_check_reads_each_list_once_and_names_problems(tmp_path: Path, hs: HubSpotSandbox) -> None:
    good = hs.seed_list("Customers", 3)
    busy = hs.seed_list("Busy", 2, prefix="busy")
    hs.set_list(busy, processing_status="PROCESSING")
    deals = hs.add_list("Deals", object_type_id="0-3")
    groups = [
        {"name": "C", "list_id": good},
        {"name": "Gone", "list_id": "999"},
        {"name": "Busy", "list_id": busy},
        {"name": "Deals", "list_id": deals},
    ]
    src = source(config(tmp_path, groups), hs)
    lines = await src.check()
    assert [(line.ok, line.text.split(":")[0]) for line in lines] == [
        (True, "group 'C'"),
        (False, "group 'Gone'"),
        (False, "group 'Busy'"),
        (False, "group 'Deals'"),
    ]
    assert lines[0].text == f"group 'C': list {good} 'Customers', 3 members"
    assert "OBJECT_NOT_FOUND" in lines[1].text
    assert lines[2].text == (
        f"group 'Busy': list {busy} 'Busy', 2 members: still processing (processingStatus PROCESSING, not "
        "COMPLETE): its memberships are partial"
    )
    assert lines[3].text.endswith(
        "0 members: a list of 0-3, not contacts (objectTypeId 0-1): syncd reads contact lists only"
    )
    assert hs.count() == 4 and hs.count(path="memberships") == 0

    hs.clear_log()
    hs.exhaust_daily()
    (daily,) = await src.check()
    assert not daily.ok and daily.text.startswith("HubSpot's daily API limit for this account is used up (429")
    assert daily.text.endswith(": the remaining lists were not checked") and hs.count() == 1

    hs.reset_daily()
    hs.tokens.clear()
    (refused,) = await src.check()
    assert not refused.ok and refused.text.startswith("HubSpot refused the token")


# ------------------------------------------------------------------------------------- the sandbox


@pytest.fixture
def client(hs: HubSpotSandbox) -> Iterator[httpx.Client]:
    with (
        ServerThread(hs) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}) as http,
    ):
        yield http


def test_sandbox_api_rules(hs: HubSpotSandbox, client: httpx.Client) -> None:
    list_id = hs.seed_list("Customers", 3)
    assert client.get(f"/crm/v3/lists/{list_id}").json()["list"] | {"createdAt": 0, "updatedAt": 0} == {
        "listId": list_id,
        "listVersion": 1,
        "name": "Customers",
        "objectTypeId": "0-1",
        "processingStatus": "COMPLETE",
        "processingType": "MANUAL",
        "size": 3,
        "createdAt": 0,
        "updatedAt": 0,
    }
    hs.set_list(list_id, processing_status="REFRESHING", object_type_id="0-2")
    changed = client.get(f"/crm/v3/lists/{list_id}").json()["list"]
    assert (changed["processingStatus"], changed["objectTypeId"], changed["listVersion"]) == ("REFRESHING", "0-2", 2)
    missing = client.get("/crm/v3/lists/4242")
    assert missing.status_code == 404
    assert set(missing.json()) == {"status", "message", "category", "correlationId"}
    assert missing.json()["category"] == "OBJECT_NOT_FOUND"

    assert client.get(f"/crm/v3/lists/{list_id}/memberships", params={"limit": 251}).status_code == 400
    first = client.get(f"/crm/v3/lists/{list_id}/memberships", params={"limit": 2}).json()
    assert [r["recordId"] for r in first["results"]] == ["101", "102"]
    after = first["paging"]["next"]["after"]
    assert first["paging"]["next"]["link"] == f"/crm/v3/lists/{list_id}/memberships?limit=2&after={after}"
    second = client.get(f"/crm/v3/lists/{list_id}/memberships", params={"limit": 2, "after": after}).json()
    assert [r["recordId"] for r in second["results"]] == ["103"] and "paging" not in second
    forged = client.get(f"/crm/v3/lists/{list_id}/memberships", params={"after": "MTAx"})
    assert forged.status_code == 400 and forged.json()["category"] == "VALIDATION_ERROR"

    too_many = client.post("/crm/v3/objects/contacts/batch/read", json={"inputs": [{"id": str(i)} for i in range(101)]})
    assert too_many.status_code == 400
    partial = client.post(
        "/crm/v3/objects/contacts/batch/read", json={"inputs": [{"id": "101"}, {"id": "9"}], "properties": ["email"]}
    )
    assert partial.status_code == 207
    body = partial.json()
    assert [r["properties"]["email"] for r in body["results"]] == ["contact00000@example.com"]
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND" and body["errors"][0]["context"] == {"ids": ["9"]}

    found = client.post("/crm/v3/lists/search", json={"query": "cust"}).json()
    assert [lst["listId"] for lst in found["lists"]] == [list_id]

    anonymous = httpx.get(str(client.base_url).rstrip("/") + f"/crm/v3/lists/{list_id}")
    assert anonymous.status_code == 401 and anonymous.json()["category"] == "INVALID_AUTHENTICATION"
    assert hs.mutating_count == 0  # a CRM sandbox syncd only reads


RATE_LIMIT_BODY_KEYS = {"status", "message", "errorType", "correlationId", "policyName", "requestId"}


def test_sandbox_burst_limit_headers_and_429() -> None:
    for retry_after in (False, True):
        hs = HubSpotSandbox(rate_limit=RateLimit(3, 10.0), retry_after=retry_after)
        with (
            ServerThread(hs) as server,
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}) as http,
        ):
            list_id = hs.seed_list("L", 1)
            answers = [http.get(f"/crm/v3/lists/{list_id}") for _ in range(4)]
            search = http.post("/crm/v3/lists/search", json={})
            anonymous = httpx.get(f"{server.url}/crm/v3/lists/{list_id}")
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["X-HubSpot-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert answers[0].headers["X-HubSpot-RateLimit-Max"] == "3"
        assert answers[0].headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        refused = answers[3].json()
        assert set(refused) == RATE_LIMIT_BODY_KEYS  # no `category`: not the generic Error schema
        assert (refused["status"], refused["errorType"], refused["policyName"]) == (
            "error",
            "RATE_LIMIT",
            "TEN_SECONDLY_ROLLING",
        )
        assert ("Retry-After" in answers[3].headers) is retry_after  # HubSpot documents none
        assert search.status_code == 200 and not any(h.startswith("x-hubspot-ratelimit") for h in search.headers)
        assert anonymous.status_code == 401 and "X-HubSpot-RateLimit-Remaining" not in anonymous.headers
        assert "X-HubSpot-RateLimit-Daily" not in answers[0].headers  # no daily limit configured


def test_sandbox_daily_limit() -> None:
    hs = HubSpotSandbox(daily_limit=3)
    with (
        ServerThread(hs) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}) as http,
    ):
        list_id = hs.seed_list("L", 1)
        anonymous = httpx.get(f"{server.url}/crm/v3/lists/{list_id}")  # not the account's: does not count
        answers = [http.get(f"/crm/v3/lists/{list_id}/memberships") for _ in range(5)]
        hs.reset_daily()
        again = http.get(f"/crm/v3/lists/{list_id}")
    assert anonymous.status_code == 401
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert [a.headers["X-HubSpot-RateLimit-Daily-Remaining"] for a in answers] == ["2", "1", "0", "0", "0"]
    assert {a.headers["X-HubSpot-RateLimit-Daily"] for a in answers} == {"3"}
    refused = answers[3].json()
    assert set(refused) == RATE_LIMIT_BODY_KEYS
    assert (refused["message"], refused["errorType"], refused["policyName"]) == (
        "You have reached your daily limit.",
        "RATE_LIMIT",
        "DAILY",
    )
    assert "Retry-After" not in answers[3].headers
    assert again.status_code == 200 and again.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "2"


# ------------------------------------------------------- the sandbox's shapes, as the official SDK reads them


class _Answer:
    """What `ApiClient.deserialize` reads of an answer: its `.data`."""

    def __init__(self, response: httpx.Response) -> None:
        self.data = response.text


def strict_client(package: ModuleType) -> Any:
    """The SDK's ApiClient of one API package, with client-side validation on (off by default): a required
    field missing, or an enum value outside the spec, raises ValueError."""
    configuration = package.Configuration()
    configuration.client_side_validation = True
    return package.ApiClient(configuration=configuration)


def conforms(value: Any, kind: str, models: ModuleType, where: str = "$") -> None:
    """Check JSON against the SDK model's own declared types (`openapi_types`, `attribute_map`), which client-side
    validation does not: every key known to the model, every value of the declared type. None passes (the
    validation catches required fields that are None)."""
    if value is None:
        return
    if kind.startswith("list["):
        assert isinstance(value, list), f"{where}: expected a list, got {value!r}"
        for i, item in enumerate(value):
            conforms(item, kind[5:-1], models, f"{where}[{i}]")
    elif kind.startswith(("dict(", "dict[")):  # both notations occur in the generated models
        inner = kind[5:-1].split(", ", 1)[1]
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        for key, item in value.items():
            assert isinstance(key, str)
            conforms(item, inner, models, f"{where}.{key}")
    elif kind == "datetime":
        assert isinstance(value, str), f"{where}: expected a date-time string, got {value!r}"
        dt.datetime.fromisoformat(value)
    elif kind in ("str", "int", "bool", "float", "object"):
        expected = {"str": str, "int": int, "bool": bool, "float": int | float, "object": object}[kind]
        assert isinstance(value, expected) and not (kind in ("int", "float") and isinstance(value, bool)), (
            f"{where}: expected {kind}, got {value!r}"
        )
    else:
        model = getattr(models, kind)
        assert isinstance(value, dict), f"{where}: expected a {kind} object, got {value!r}"
        keys = {json_key: attr for attr, json_key in model.attribute_map.items()}
        unknown = set(value) - set(keys)
        assert not unknown, f"{where}: keys the SDK's {kind} does not have: {sorted(unknown)}"
        for json_key, item in value.items():
            conforms(item, model.openapi_types[keys[json_key]], models, f"{where}.{json_key}")


def parse(response: httpx.Response, kind: str, package: ModuleType) -> Any:
    """The answer as the official SDK's model `kind`, validated, and conforming key by key."""
    model = strict_client(package).deserialize(_Answer(response), kind)
    conforms(response.json(), kind, package.models)
    return model


def test_sandbox_list_answers_parse_as_the_sdks_list_fetch_response(hs: HubSpotSandbox, client: httpx.Client) -> None:
    ready = hs.seed_list("Customers", 3)
    busy = hs.add_list("Busy", processing_status="PROCESSING", processing_type="DYNAMIC")
    deals = hs.add_list("Deals", object_type_id="0-3")
    for list_id, status, kind, size in [(ready, "COMPLETE", "0-1", 3), (busy, "PROCESSING", "0-1", 0)] + [
        (deals, "COMPLETE", "0-3", 0)
    ]:
        answer = client.get(f"/crm/v3/lists/{list_id}")
        fetched = parse(answer, "ListFetchResponse", hs_lists).list
        assert isinstance(fetched, hs_lists.models.PublicObjectList)
        assert (fetched.list_id, fetched.processing_status, fetched.object_type_id, fetched.size) == (
            list_id,
            status,
            kind,
            size,
        )
        assert fetched.list_version == 1 and isinstance(fetched.created_at, dt.datetime)


def test_sandbox_membership_pages_parse_as_the_sdks_collection(hs: HubSpotSandbox, client: httpx.Client) -> None:
    list_id = hs.seed_list("Customers", 3)
    first = client.get(f"/crm/v3/lists/{list_id}/memberships", params={"limit": 2})
    page = parse(first, "ApiCollectionResponseJoinTimeAndRecordId", hs_lists)
    assert [r.record_id for r in page.results] == ["101", "102"]
    assert all(isinstance(r.membership_timestamp, dt.datetime) for r in page.results)
    assert page.paging.next.after and page.paging.next.link
    last = client.get(f"/crm/v3/lists/{list_id}/memberships", params={"limit": 2, "after": page.paging.next.after})
    end = parse(last, "ApiCollectionResponseJoinTimeAndRecordId", hs_lists)
    assert [r.record_id for r in end.results] == ["103"] and end.paging is None


def test_sandbox_batch_reads_parse_as_the_sdks_batch_responses(hs: HubSpotSandbox, client: httpx.Client) -> None:
    ada = hs.add_contact("ada@example.com", "Ada", None)
    gone = hs.add_contact("gone@example.com")
    hs.delete_contact(gone)
    url = "/crm/v3/objects/contacts/batch/read"
    whole = client.post(url, json={"inputs": [{"id": ada}], "properties": ["email", "firstname", "lastname"]})
    assert whole.status_code == 200
    batch = parse(whole, "BatchResponseSimplePublicObject", hs_contacts)
    assert batch.status == "COMPLETE" and isinstance(batch.completed_at, dt.datetime)
    (contact,) = batch.results
    assert (contact.id, contact.archived) == (ada, False)
    assert {k: contact.properties[k] for k in ("email", "firstname", "lastname")} == {
        "email": "ada@example.com",
        "firstname": "Ada",
        "lastname": None,  # requested and unset: null, as HubSpot answers
    }

    some = client.post(url, json={"inputs": [{"id": ada}, {"id": gone}], "properties": ["email"]})
    assert some.status_code == 207
    partial = parse(some, "BatchResponseSimplePublicObjectWithErrors", hs_contacts)
    assert [r.id for r in partial.results] == [ada] and partial.num_errors == 1
    (error,) = partial.errors
    assert (error.status, error.category, error.context) == ("error", "OBJECT_NOT_FOUND", {"ids": [gone]})


async def test_syncds_batch_read_request_parses_as_the_sdks_request_model(tmp_path: Path, hs: HubSpotSandbox) -> None:
    """The other direction: what syncd sends is what the spec asks (inputs, properties and propertiesWithHistory,
    all three required by BatchReadInputSimplePublicObjectId)."""
    list_id = hs.seed_list("L", 3)
    await source(config(tmp_path, [{"name": "L", "list_id": list_id}]), hs).read()
    with hs.lock:
        (sent,) = [r for r in hs.requests if r.path.endswith("/batch/read")]
    request = parse(httpx.Response(200, content=sent.body), "BatchReadInputSimplePublicObjectId", hs_contacts)
    assert [i.id for i in request.inputs] == ["101", "102", "103"]
    assert request.properties == ["email", "firstname", "lastname"] and request.properties_with_history == []


def test_sandbox_error_bodies_parse_as_the_sdks_error(hs: HubSpotSandbox, client: httpx.Client) -> None:
    """The generic Error schema (category, correlationId, message required). HubSpot's error bodies also carry
    `status: "error"`, which the schema does not list, so only the validation applies here."""
    missing = client.get("/crm/v3/lists/4242")
    error = strict_client(hs_lists).deserialize(_Answer(missing), "Error")
    assert (error.category, error.message) == ("OBJECT_NOT_FOUND", "List 4242 does not exist.")


@pytest.mark.parametrize(
    ("body", "kind", "package"),
    [
        pytest.param({"listId": "1"}, "ListFetchResponse", hs_lists, id="no list wrapper"),
        pytest.param(
            {
                "list": {
                    "listId": 7,
                    "listVersion": 1,
                    "name": "n",
                    "objectTypeId": "0-1",
                    "processingStatus": "COMPLETE",
                }
                | {"processingType": "MANUAL"}
            },
            "ListFetchResponse",
            hs_lists,
            id="listId as a number",
        ),
        pytest.param(
            {
                "list": {
                    "listId": "7",
                    "listVersion": 1,
                    "name": "n",
                    "objectTypeId": "0-1",
                    "processingStatus": "COMPLETE",
                }
                | {"processingType": "MANUAL", "memberCount": 3}
            },
            "ListFetchResponse",
            hs_lists,
            id="an unknown key",
        ),
        pytest.param(
            {"results": [{"recordId": "1"}]}, "ApiCollectionResponseJoinTimeAndRecordId", hs_lists, id="no timestamp"
        ),
        pytest.param(
            {"results": [], "paging": {"next": {"link": "x"}}},
            "ApiCollectionResponseJoinTimeAndRecordId",
            hs_lists,
            id="no cursor",
        ),
        pytest.param(
            {
                "status": "DONE",
                "results": [],
                "startedAt": "2024-01-01T00:00:00Z",
                "completedAt": "2024-01-01T00:00:01Z",
            },
            "BatchResponseSimplePublicObject",
            hs_contacts,
            id="batch status outside the enum",
        ),
        pytest.param(
            {"status": "COMPLETE", "results": [{"id": "1", "properties": {}, "archived": False}]}
            | {"startedAt": "2024-01-01T00:00:00Z", "completedAt": "2024-01-01T00:00:01Z"},
            "BatchResponseSimplePublicObject",
            hs_contacts,
            id="contact without createdAt",
        ),
    ],
)
def test_the_shape_check_catches_drift(body: Any, kind: str, package: ModuleType) -> None:
    """The check above is not vacuous: answers that drift from the SDK's models fail it."""
    with pytest.raises((ValueError, AssertionError)):
        parse(httpx.Response(200, json=body), kind, package)
