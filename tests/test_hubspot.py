"""The HubSpot source against the bundled HubSpot sandbox: request counts, 207 partial reads, rejects, 429s,
pacing, auth, and the sandbox's own API rules. Nothing is mocked: the source talks HTTP to the sandbox
(in process through an ASGI transport, or over loopback where real timeouts matter)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from connectors.sandbox._core import Fault, Mount, RateLimit
from connectors.sandbox.hubspot import DEFAULT_TOKEN, HubSpotSandbox
from connectors.sandbox.server import ServerThread
from syncd.config import Config, load_config
from syncd.errors import SourceError
from syncd.model import Contact, PostalAddress, RejectCode, Target
from syncd.sources import HubSpotSource, PartialRead, build_sources, read_sources
from syncd.sources.hubspot import quota

SERVER = "http://127.0.0.1"
FAST = {"rate_limit": 1e6, "retry": {"backoff_base": 0}}


@pytest.fixture
def hs() -> HubSpotSandbox:
    return HubSpotSandbox()


def config(tmp_path: Path, groups: list[dict[str, Any]], server: str = SERVER, **source: Any) -> Config:
    entry = {"type": "hubspot", "token": DEFAULT_TOKEN, "base_url": f"{server}/hubspot", "groups": groups}
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


def bodies(hs: HubSpotSandbox, path: str) -> list[Any]:
    with hs.lock:
        return [json.loads(r.body) for r in hs.requests if path in r.path]


# ------------------------------------------------------------------------------------------ requests


async def test_a_1000_member_list_costs_4_membership_pages_and_10_batch_reads(
    tmp_path: Path, hs: HubSpotSandbox
) -> None:
    list_id = hs.seed_list("Customers", 1000)
    (group,) = await source(config(tmp_path, [{"name": "Customers", "list_id": list_id}]), hs).read()

    assert hs.count(method="GET", path=r"/memberships$") == 4
    assert hs.count(method="POST", path=r"/contacts/batch/read$") == 10
    assert hs.count() == 14  # nothing else: no list lookup, no token request
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
    assert (hs.count(path="memberships"), hs.count(path="batch/read")) == (pages, batches)


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
    with hs.lock:
        statuses = [r.status for r in hs.requests if "batch/read" in r.path]
    assert statuses == [207, 207]
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


async def test_default_pacing_is_hubspots_190_requests_per_10_seconds(tmp_path: Path, hs: HubSpotSandbox) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_text("sources:\n  - type: hubspot\n    token: t\n    groups: [{name: G, list_id: 1}]\n")
    cfg = load_config(path)
    src = build_sources(cfg)[1]
    assert isinstance(src, HubSpotSource)
    api = src._client()
    try:
        assert (api.bucket.rate, api.bucket.capacity) == (19.0, 1)  # burst 1: never above 190 in any 10 s
        assert api.quota is quota
    finally:
        await api.aclose()


async def test_pacing_stays_under_the_sandboxs_rolling_limit(tmp_path: Path) -> None:
    """Scaled down (10 requests per rolling second, rate_limit 10): 14 requests, not one 429."""
    hs = HubSpotSandbox(rate_limit=RateLimit(10, 1.0))
    list_id = hs.seed_list("L", 1000)
    cfg = config(tmp_path, [{"name": "L", "list_id": list_id}], rate_limit=10, burst=1)
    started = time.monotonic()
    (group,) = await source(cfg, hs).read()
    assert len(group.members) == 1000
    assert hs.count() == 14 and hs.count(path=".") == 14
    with hs.lock:
        assert all(r.status == 200 for r in hs.requests)
    assert time.monotonic() - started >= 1.2  # 13 waits of 1/10 s after the first


async def test_unpaced_reads_survive_the_sandboxs_rate_limit(tmp_path: Path) -> None:
    hs = HubSpotSandbox(rate_limit=RateLimit(5, 1.0))
    list_id = hs.seed_list("L", 1000)
    (group,) = await source(config(tmp_path, [{"name": "L", "list_id": list_id}]), hs).read()
    assert len(group.members) == 1000
    with hs.lock:
        answered = [r.status for r in hs.requests]
    assert answered.count(200) == 14 and set(answered) <= {200, 429}


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


async def test_a_spent_window_is_waited_for_instead_of_running_into_429s(tmp_path: Path) -> None:
    """Another app spent most of the account's budget: unpaced, syncd still sees no 429 (one slot at a time)."""
    hs = HubSpotSandbox(rate_limit=RateLimit(20, 1.0))
    assert hs.quota is not None
    for _ in range(17):  # the other app's requests, in the same rolling second
        hs.quota.hit()
    list_id = hs.seed_list("L", 600)
    (group,) = await source(config(tmp_path, [{"name": "L", "list_id": list_id}]), hs).read()
    assert len(group.members) == 600
    with hs.lock:
        assert [r.status for r in hs.requests].count(429) <= 1  # at most the one that found out
    assert hs.count(path=".") >= 9


# -------------------------------------------------------------------------------------------- failures


async def test_a_refused_token_fails_the_whole_source_without_echoing_it(tmp_path: Path, hs: HubSpotSandbox) -> None:
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


async def test_a_list_that_cannot_be_read_fails_that_group_only(tmp_path: Path, hs: HubSpotSandbox) -> None:
    good = hs.seed_list("Good", 5)
    cfg = config(tmp_path, [{"name": "Good", "list_id": good}, {"name": "Gone", "list_id": "999"}])
    read = await read_sources([source(cfg, hs)])
    assert [g.name for g in read.groups] == ["Good"]
    (error,) = read.errors
    assert error.startswith("source hubspot: list 999 (group 'Gone'): HTTP 404: OBJECT_NOT_FOUND: List 999 does not")
    assert error.endswith("(left untouched this pass)")


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
        "name": "Customers",
        "objectTypeId": "0-1",
        "processingType": "MANUAL",
        "processingStatus": "COMPLETE",
        "listVersion": 1,
        "size": 3,
        "createdAt": 0,
        "updatedAt": 0,
    }
    missing = client.get("/crm/v3/lists/4242")
    assert missing.status_code == 404
    assert set(missing.json()) == {"status", "message", "category", "correlationId"}
    assert missing.json()["category"] == "OBJECT_NOT_FOUND"

    assert client.get(f"/crm/v3/lists/{list_id}/memberships", params={"limit": 251}).status_code == 400
    first = client.get(f"/crm/v3/lists/{list_id}/memberships", params={"limit": 2}).json()
    assert [r["recordId"] for r in first["results"]] == ["101", "102"]
    after = first["paging"]["next"]["after"]
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


def test_sandbox_rate_limit_headers_and_429(client: httpx.Client) -> None:
    hs = HubSpotSandbox(rate_limit=RateLimit(3, 10.0))
    with (
        ServerThread(hs) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}) as http,
    ):
        list_id = hs.seed_list("L", 1)
        answers = [http.get(f"/crm/v3/lists/{list_id}") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-HubSpot-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert answers[0].headers["X-HubSpot-RateLimit-Max"] == "3"
    assert answers[0].headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert answers[3].json()["policyName"] == "TEN_SECONDLY_ROLLING"


async def test_check_reads_each_list_once_and_names_problems(tmp_path: Path, hs: HubSpotSandbox) -> None:
    good = hs.seed_list("Customers", 3)
    src = source(config(tmp_path, [{"name": "C", "list_id": good}, {"name": "Gone", "list_id": "999"}]), hs)
    lines = await src.check()
    assert [(line.ok, line.text.split(":")[0]) for line in lines] == [(True, "group 'C'"), (False, "group 'Gone'")]
    assert lines[0].text == f"group 'C': list {good} 'Customers', 3 members"
    assert "OBJECT_NOT_FOUND" in lines[1].text
    assert hs.count() == 2 and hs.count(path="memberships") == 0
    hs.tokens.clear()
    (refused,) = await src.check()
    assert not refused.ok and refused.text.startswith("HubSpot refused the token")


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
