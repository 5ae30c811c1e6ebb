"""CleverReach specifics the shared contract does not pin down: OAuth token reuse and refresh, exact page and
batch request counts, both removal modes, the non-atomic reset, suppressed addresses, error shapes and
settings. Everything runs over HTTP against `CleverReachSandbox` (httpx.ASGITransport); nothing is patched."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from connectors.base import (
    AuthError,
    Contact,
    FatalError,
    NotFound,
    ProtocolError,
    RateLimited,
    RemoteGroup,
    ResetKind,
    TransientError,
    UnsupportedOperation,
)
from connectors.cleverreach import (
    REJECT_REASON,
    CleverReachConnector,
    CleverReachSettings,
    RemoveMode,
    classify,
)
from connectors.http import RequestTally, count_requests
from connectors.settings import BuildContext
from sandboxes._core import Fault
from sandboxes.cleverreach import CleverReachSandbox
from tests.contract.harness_cleverreach import CLIENT_SECRET, HARNESS

STATIC_TOKEN = "static-v3-token-for-tests"


def emails(n: int, prefix: str = "person") -> list[str]:
    return [f"{prefix}{i:05d}@example.com" for i in range(n)]


def contacts(addresses: list[str]) -> list[Contact]:
    return [Contact(email=e, first_name="Ann", last_name="Lee") for e in addresses]


def sandbox() -> CleverReachSandbox:
    sb = HARNESS.sandbox()
    sb.add_token(STATIC_TOKEN)
    return sb


def connector(sb: CleverReachSandbox, **overrides: Any) -> CleverReachConnector:
    c = HARNESS.connector(sb, **overrides)
    assert isinstance(c, CleverReachConnector)
    return c


def static(sb: CleverReachSandbox, token: str = STATIC_TOKEN, **overrides: Any) -> CleverReachConnector:
    return connector(sb, client_id=None, client_secret=None, token=token, **overrides)


ANN = {"firstname": "Ann", "lastname": "Lee"}


def group(gid: int, name: str = "G") -> RemoteGroup:
    return RemoteGroup(id=str(gid), name=name)


def bodies(sb: CleverReachSandbox, path: str) -> list[Any]:
    return [json.loads(r.body) for r in sb.requests if r.path.endswith(path)]


# ------------------------------------------------------------------------------------------------ auth


async def test_token_is_fetched_once_and_reused() -> None:
    sb = sandbox()
    gid = sb.add_group("G", emails(3))
    async with connector(sb) as c:
        assert await c.find_group(group_id=str(gid)) is not None
        await c.read_members(group(gid))
        await c.add_members(group(gid), contacts(emails(2, "new")))
        await c.remove_members(group(gid), (await c.read_members(group(gid)))[:1])
    assert sb.token_requests == 1
    # 1 group + 2 member reads, 3 consent reads before the first add (bounces, blacklist, the group's inactive
    # receivers: once per connector), the upsert and the upsertplus
    assert sb.count(path="^/v3/") == 8
    assert all(r.status == 200 for r in sb.requests)
    assert not any("token=" in r.query for r in sb.requests)  # never the ?token= form


async def test_401_mid_run_refreshes_once_then_succeeds() -> None:
    sb = sandbox()
    gid = sb.add_group("G", emails(3))
    async with connector(sb) as c:
        await c.find_group(group_id=str(gid))
        sb.revoke_tokens()  # the token dies before its expires_in
        with count_requests() as tally:
            members = await c.read_members(group(gid))
    assert len(members) == 3
    assert sb.token_requests == 2
    reads = [r.status for r in sb.requests if r.path.endswith("/receivers")]
    assert reads == [401, 200]
    assert tally.read == 1  # one logical request; the token request is not counted


async def test_bad_client_is_an_auth_error_and_nothing_else_is_sent() -> None:
    sb = sandbox()
    async with connector(sb, bad_credentials=True) as c:
        with pytest.raises(AuthError) as caught:
            await c.find_group(name="G")
    assert "not-the-secret" not in str(caught.value)
    assert sb.token_requests == 1
    assert sb.count(path="^/v3/") == 0


async def test_static_token_and_a_wrong_one() -> None:
    sb = sandbox()
    gid = sb.add_group("G", emails(2))
    async with static(sb) as good, static(sb, token="wrong-token") as bad:
        assert len(await good.read_members(group(gid))) == 2
        with pytest.raises(AuthError) as caught:
            await bad.read_members(group(gid))
    assert sb.token_requests == 0
    assert caught.value.status == 401 and "Unauthorized" in caught.value.message
    assert "wrong-token" not in caught.value.message


# ------------------------------------------------------------------------------------------ pagination


@pytest.mark.parametrize(("n", "pages"), [(0, 1), (4999, 1), (5000, 2), (5001, 2), (10000, 3)])
async def test_reads_pages_of_5000_until_a_short_page(n: int, pages: int) -> None:
    sb = sandbox()
    gid = sb.add_group("Big", emails(n))
    async with connector(sb) as c:
        await c.find_group(group_id=str(gid))  # fetches the token
        sb.clear_log()
        with count_requests() as tally:
            members = await c.read_members(group(gid))
    assert sorted(m.key for m in members) == emails(n)
    assert tally.read == pages == len(sb.requests)
    queries = [dict(httpx.QueryParams(r.query)) for r in sb.requests]
    assert queries == [{"page": str(p), "pagesize": "5000", "type": "active"} for p in range(pages)]


async def test_sandbox_pagesize_default_50_and_cap_5000() -> None:
    sb = sandbox()
    gid = sb.add_group("Big", emails(6000))
    headers = {"Authorization": f"Bearer {STATIC_TOKEN}"}
    async with httpx.AsyncClient(transport=HARNESS.transport(sb), base_url="http://127.0.0.1") as http:
        default = (await http.get(f"/v3/groups/{gid}/receivers", headers=headers)).json()
        capped = (await http.get(f"/v3/groups/{gid}/receivers?pagesize=9999", headers=headers)).json()
        as_post = await http.post(f"/v3/groups/{gid}/get_receivers", headers=headers, json={"page": 1})
    assert len(default) == 50 and len(capped) == 5000
    assert [r["email"] for r in as_post.json()] == emails(100)[50:]
    assert sb.mutating_count == 0  # get_receivers is a read


# -------------------------------------------------------------------------------------------------- adds


async def test_upserts_go_in_batches_of_250_as_the_vendor_sends_them() -> None:
    sb = sandbox()
    gid = sb.add_group("G")
    async with connector(sb) as c:
        await c.find_group(group_id=str(gid))
        sb.clear_log()
        result = await c.add_members(group(gid), contacts(emails(2500)))
    assert len(result.done) == 2500 and not result.rejected
    assert sb.mutating_count == 10
    batches = bodies(sb, "/receivers/upsert")
    assert [len(b) for b in batches] == [250] * 10
    first = batches[0][0]
    # a new receiver: registered and activated now, never a `deactivated` field
    assert "deactivated" not in first and first["activated"] > 0 and first["registered"] > 0
    assert first["global_attributes"] == {"firstname": "Ann", "lastname": "Lee"}
    assert sb.active_emails(gid) == set(emails(2500))


async def test_batch_size_can_go_up_to_1000() -> None:
    sb = sandbox()
    gid = sb.add_group("G")
    async with connector(sb, batch_size=5000) as c:
        assert c.capabilities.max_add_batch == 1000  # capped at the API's (commonly quoted) limit
        await c.add_members(group(gid), contacts(emails(2500)))
    assert [len(b) for b in bodies(sb, "/receivers/upsert")] == [1000, 1000, 500]


async def test_a_413_halves_the_batch_and_the_size_that_worked_is_kept() -> None:
    # The server takes at most 250: a batch of 1000 is answered 413, halved (500: 413 again), halved (250, 250:
    # both go through, so the size was the trouble), and everything after goes in batches of 250.
    sb = CleverReachSandbox(upsert_limit=250)
    sb.add_token(STATIC_TOKEN)
    gid = sb.add_group("G")
    async with static(sb, batch_size=1000) as c:
        result = await c.add_members(group(gid), contacts(emails(2000)))
    assert len(result.done) == 2000 and not result.rejected
    sizes = [len(b) for b in bodies(sb, "/receivers/upsert")]
    assert sizes == [1000, 500, 250, 250, 250, 250, 250, 250, 250, 250]
    statuses = [r.status for r in sb.requests if r.path.endswith("/upsert")]
    assert statuses == [413, 413] + [200] * 8
    assert sb.active_emails(gid) == set(emails(2000))


async def test_a_413_in_the_error_body_counts_even_on_another_http_status() -> None:
    # The code in the error body takes precedence over the HTTP status (CleverReach's own code reads it first).
    sb = CleverReachSandbox(upsert_limit=2, codes_in_body_only=True)
    sb.add_token(STATIC_TOKEN)
    gid = sb.add_group("G")
    async with static(sb) as c:
        result = await c.add_members(group(gid), contacts(emails(4)))
    assert sorted(result.done) == emails(4)
    assert [r.status for r in sb.requests if r.path.endswith("/upsert")] == [400, 200, 200]


async def test_a_receiver_too_large_on_its_own_is_isolated_as_a_reject() -> None:
    sb = sandbox()
    gid = sb.add_group("G")
    people = emails(8)
    sb.too_large.add(people[5])
    async with connector(sb) as c:
        result = await c.add_members(group(gid), contacts(people))
        later = await c.add_members(group(gid), contacts(emails(8, "later")))
    assert sorted(result.done) == sorted(set(people) - {people[5]})
    ((reject),) = result.rejected
    assert (reject.email, reject.code, reject.permanent) == (people[5], "too_large", True)
    # 8 → 4 + (4 → (2 → 1 + 1) + 2): one member's fault, so the batch size is not lowered for later adds
    assert [len(b) for b in bodies(sb, "/receivers/upsert")] == [8, 4, 4, 2, 1, 1, 2, 8]
    assert len(later.done) == 8


async def test_sandbox_answers_413_above_its_upsert_limit() -> None:
    sb = sandbox()
    gid = sb.add_group("G")
    headers = {"Authorization": f"Bearer {STATIC_TOKEN}"}
    async with httpx.AsyncClient(transport=HARNESS.transport(sb), base_url="http://127.0.0.1") as http:
        answer = await http.post(
            f"/v3/groups/{gid}/receivers/upsert", headers=headers, json=[{"email": e} for e in emails(1001)]
        )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == 413
    assert sb.active_emails(gid) == set()


async def test_blacklisted_and_bounced_addresses_are_refused_before_sending() -> None:
    sb = sandbox()
    gid = sb.add_group("G")
    sb.blacklist("Black@Example.com")
    sb.bounce("bounced@example.com")
    good = emails(3)
    async with connector(sb) as c:
        batch = contacts([good[0], "black@example.com", good[1], "bounced@example.com", good[2]])
        result = await c.add_members(group(gid), batch)
    assert sorted(result.done) == good
    codes = {r.email: (r.code, r.permanent) for r in result.rejected}
    assert codes == {"black@example.com": ("blacklisted", True), "bounced@example.com": ("bounced", True)}
    (sent,) = bodies(sb, "/receivers/upsert")
    assert sorted(e["email"] for e in sent) == good  # never sent
    assert sb.active_emails(gid) == set(good) and sb.violations == []


async def test_an_account_that_leaves_suppressed_addresses_out_of_the_answer() -> None:
    # Should the blacklist read miss one (added since), an answer leaving a receiver out is a permanent reject.
    sb = CleverReachSandbox(suppressed_upsert="omit")
    sb.add_token(STATIC_TOKEN)
    gid = sb.add_group("G")
    async with static(sb) as c:
        await c.suppressed(group(gid), ["late@example.com"], undo={})  # reads the (empty) lists first
        sb.blacklist("late@example.com")
        result = await c.add_members(group(gid), contacts(["late@example.com", *emails(1)]))
    assert result.done == (emails(1)[0],)
    ((reject),) = result.rejected
    assert reject.reason == REJECT_REASON and reject.permanent


# -------------------------------------------------------------------------------------------------- consent


async def test_an_unsubscribed_receiver_is_never_subscribed_again() -> None:
    sb = sandbox()
    people = emails(4)
    gid = sb.add_group("G", people[:2])
    sb.unsubscribe(gid, people[0])  # the person clicked "unsubscribe" before syncd ever saw them
    sb.unsubscribe(gid, people[2])  # a receiver who left before being a member syncd knew of
    async with connector(sb) as c:
        members = await c.read_members(group(gid))
        assert [m.key for m in members] == [people[1]]  # inactive receivers are not members
        found = await c.suppressed(group(gid), [people[0], people[2], people[3]], undo={})
        assert {k: s.state for k, s in found.items()} == {people[0]: "unsubscribed", people[2]: "unsubscribed"}
        assert "not by syncd" in found[people[0]].reason and found[people[0]].since is not None
        # even when asked to, add_members refuses them and sends nothing for them
        result = await c.add_members(group(gid), contacts([people[0], people[2], people[3]]))
    assert result.done == (people[3],)
    assert {r.email: r.code for r in result.rejected} == {people[0]: "unsubscribed", people[2]: "unsubscribed"}
    for batch in bodies(sb, "/receivers/upsert"):
        assert all(e["email"] == people[3] for e in batch)
        assert all("deactivated" not in e for e in batch)
    assert sb.violations == []
    assert sb.active_emails(gid) == {people[1], people[3]}


async def test_a_removal_syncd_made_is_undone_and_only_that() -> None:
    sb = sandbox()
    people = emails(3)
    gid = sb.add_group("G", people)
    async with connector(sb) as c:
        members = {m.key: m for m in await c.read_members(group(gid))}
        removed = await c.remove_members(group(gid), [members[people[0]], members[people[1]]])
        assert sorted(removed.done) == people[:2]
    # switched off the way CleverReach's own code does it: activated 0, `deactivated` left to the person
    (sent,) = bodies(sb, "/receivers/upsertplus")
    assert sent == [{"email": people[0], "activated": 0}, {"email": people[1], "activated": 0}]
    stored = {r["email"]: r for r in sb.receivers(gid)}
    assert stored[people[0]]["activated"] == 0 and stored[people[0]]["deactivated"] == 0
    sb.unsubscribe(gid, people[1])  # later the person unsubscribes too (e.g. from an old mailing's link)

    async with connector(sb) as c:  # the next pass
        removed_at = float(stored[people[0]]["registered"])  # syncd's ledger knows when it removed them
        undo = {people[0]: removed_at, people[1]: removed_at - 1000}
        found = await c.suppressed(group(gid), people[:2], undo=undo)
        assert list(found) == [people[1]]  # their own unsubscribe came after syncd's removal
        sb.clear_log()
        result = await c.add_members(group(gid), contacts(people[:2]))
    assert result.done == (people[0],)
    assert [r.code for r in result.rejected] == ["unsubscribed"]
    (sent,) = bodies(sb, "/receivers/upsert")
    assert sent == [{"email": people[0], "activated": sent[0]["activated"], "global_attributes": ANN}]
    assert sb.receivers(gid)[0]["id"] == stored[people[0]]["id"]  # the same receiver, switched on again
    assert sb.violations == []


async def test_a_deactivation_by_an_older_syncd_is_recognised_by_its_stamp() -> None:
    # Older syncd versions removed with `deactivated: <now>`; such a stamp no later than the ledger's removal
    # (give or take clock skew) is syncd's own and is undone with `deactivated: 0`.
    sb = sandbox()
    gid = sb.add_group("G")
    sb.unsubscribe(gid, "old@example.com", at=1_700_000_000)
    sb.withdrawn.clear()  # it was syncd, not the person
    async with connector(sb) as c:
        mine = await c.suppressed(group(gid), ["old@example.com"], undo={"old@example.com": 1_700_000_030.0})
        assert mine == {}
        result = await c.add_members(group(gid), contacts(["old@example.com"]))
    assert result.done == ("old@example.com",)
    (sent,) = bodies(sb, "/receivers/upsert")
    assert sent[0]["deactivated"] == 0 and sent[0]["activated"] > 0
    async with connector(sb) as c:  # a stamp well after syncd's removal is someone else's
        sb.unsubscribe(gid, "old@example.com", at=1_800_000_000)
        found = await c.suppressed(group(gid), ["old@example.com"], undo={"old@example.com": 1_700_000_030.0})
    assert found["old@example.com"].state == "unsubscribed"


async def test_a_steady_state_reads_no_consent_lists() -> None:
    sb = sandbox()
    gid = sb.add_group("G", emails(3))
    async with connector(sb) as c:
        await c.read_members(group(gid))
        assert await c.suppressed(group(gid), [], undo={}) == {}
    assert sb.count(path="blacklist|bounced") == 0 and sb.count(path="/receivers$") == 1


# ----------------------------------------------------------------------------------------------- removal


async def test_deactivate_is_one_upsertplus_and_deactivated_receivers_are_not_members() -> None:
    sb = sandbox()
    people = emails(5)
    gid = sb.add_group("G", people)
    async with connector(sb) as c:
        assert c.remove_mode is RemoveMode.DEACTIVATE and c.capabilities.max_remove_batch == 250
        members = {m.key: m for m in await c.read_members(group(gid))}
        sb.clear_log()
        result = await c.remove_members(group(gid), [members[e] for e in people[:3]])
        assert sorted(result.done) == people[:3] and not result.rejected
        assert sb.mutating_count == 1 and sb.count(path="/receivers/upsertplus$") == 1
        assert sorted(m.key for m in await c.read_members(group(gid))) == people[3:]
        # the receivers stay in the group, switched off: history kept
        stored = {r["email"]: r for r in sb.receivers(gid)}
        assert len(stored) == 5 and all(stored[e]["activated"] == 0 for e in people[:3])
        # adding one back needs the engine's word that syncd removed it (its ledger); without it: refused
        refused = await c.add_members(group(gid), contacts(people[:1]))
        assert [r.code for r in refused.rejected] == ["unsubscribed"] and not refused.done
        await c.suppressed(group(gid), people[:1], undo={people[0]: float(stored[people[0]]["registered"])})
        again = await c.add_members(group(gid), contacts(people[:1]))
        assert again.done == (people[0],)
        assert sb.receivers(gid)[0]["id"] == stored[people[0]]["id"]
        assert sb.active_emails(gid) == {people[0], *people[3:]}


async def test_delete_mode_sends_one_delete_each_and_404_is_done() -> None:
    sb = sandbox()
    people = emails(4)
    gid = sb.add_group("G", people)
    async with connector(sb, remove_mode="delete") as c:
        assert c.capabilities.max_remove_batch == 1
        gone = [m for m in await c.read_members(group(gid)) if m.key in people[:3]]
        sb.clear_log()
        result = await c.remove_members(group(gid), gone)
        assert sorted(result.done) == people[:3]
        assert sb.count(method="DELETE", path=r"/receivers/\d+$") == 3 == sb.mutating_count
        assert [r["email"] for r in sb.receivers(gid)] == people[3:]  # deleted, not kept inactive
        sb.clear_log()
        again = await c.remove_members(group(gid), gone)
        assert sorted(again.done) == people[:3] and not again.rejected
        assert [r.status for r in sb.requests] == [404, 404, 404]


# ------------------------------------------------------------------------------------------------- reset


async def test_there_is_no_reset_because_clearing_forgets_who_unsubscribed() -> None:
    sb = sandbox()
    gid = sb.add_group("G", emails(3, "old"))
    async with connector(sb) as c:
        assert c.capabilities.reset is ResetKind.NONE
        with pytest.raises(UnsupportedOperation, match="unsubscribed"):
            await c.reset_members(group(gid), contacts(emails(2, "new")))
    assert sb.requests == []


# ------------------------------------------------------------------------------------------------ groups


async def test_find_group_edges() -> None:
    sb = sandbox()
    sb.add_group("Twin")
    sb.add_group("Twin")
    gid = sb.add_group("Solo")
    async with connector(sb) as c:
        assert await c.find_group(group_id="not-a-number") is None
        assert await c.find_group(group_id="999999") is None
        fallback = await c.find_group(group_id="999999", name="Solo")  # the id is gone: the name decides
        assert fallback is not None and fallback.id == str(gid)
        with pytest.raises(FatalError, match="2 CleverReach groups are named 'Twin'"):
            await c.find_group(name="Twin")
        with pytest.raises(NotFound):
            await c.read_members(group(999999))


async def test_create_retried_after_a_server_error_creates_one_group() -> None:
    sb = sandbox()
    sb.inject(Fault(status=503, method="POST", path="^/v3/groups$"))
    async with connector(sb) as c:
        created = await c.create_group("New")
    assert created.name == "New"
    assert sb.count(method="POST", path="^/v3/groups$") == 2  # looked up by name in between
    assert sb.count(method="GET", path="^/v3/groups$") == 1
    assert [g.name for g in sb.groups.values()] == ["New"]


class LoseFirstCreateAnswer:
    """An ASGI wrapper: the sandbox creates the group, but the client gets a 502 instead of the answer."""

    def __init__(self, app: CleverReachSandbox) -> None:
        self.app = app
        self.spoiled = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.spoiled and (scope["method"], scope["path"]) == ("POST", "/v3/groups"):
            self.spoiled = True

            async def swallow(message: dict[str, Any]) -> None:
                return None

            await self.app(scope, receive, swallow)
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


async def test_create_whose_answer_was_lost_is_found_not_duplicated() -> None:
    sb = sandbox()
    ctx = BuildContext(transport=httpx.ASGITransport(app=LoseFirstCreateAnswer(sb)))  # type: ignore[arg-type]
    async with HARNESS.connector(sb, ctx=ctx) as c:
        created = await c.create_group("New")
    assert [(str(g.id), g.name) for g in sb.groups.values()] == [(created.id, "New")]
    assert sb.count(method="POST", path="^/v3/groups$") == 1


# ------------------------------------------------------------------------------------------------ errors


def response(status: int, body: Any = None, text: str | None = None, **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "https://rest.cleverreach.com/v3/groups")
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


def test_error_messages_of_every_shape() -> None:
    nested = classify(response(404, {"error": {"code": 404, "message": "Not Found: invalid group"}}))
    assert isinstance(nested, NotFound) and nested.message == "HTTP 404: Not Found: invalid group"
    oauth = classify(response(401, {"error": "invalid_client", "error_description": "bad client"}))
    assert isinstance(oauth, AuthError) and oauth.message == "HTTP 401: invalid_client: bad client"
    plain = classify(response(400, {"message": "pagesize must be an integer"}))
    assert type(plain) is FatalError and plain.message == "HTTP 400: pagesize must be an integer"
    limited = classify(response(429, {"error": "slow down"}, **{"Retry-After": "3"}))
    assert isinstance(limited, RateLimited) and limited.delay == 3.0 and "slow down" in limited.message
    html = classify(response(503, text="<html>down</html>"))
    assert isinstance(html, TransientError) and html.message == "HTTP 503: Service Unavailable"
    assert classify(response(200, [])) is None


# ---------------------------------------------------------------------------------------------- settings


def settings(**values: Any) -> CleverReachSettings:
    return CleverReachSettings.model_validate({"name": "cr", **values})


def test_settings_auth_styles() -> None:
    oauth = settings(client_id="id", client_secret="s3cr3t-value")
    assert oauth.base_url == "https://rest.cleverreach.com/v3"
    assert oauth.resolved_token_url == "https://rest.cleverreach.com/oauth/token.php"
    assert oauth.remove_mode is RemoveMode.DEACTIVATE
    custom = settings(client_id="id", client_secret="x", token_url="https://auth.example.com/token")
    assert custom.resolved_token_url == "https://auth.example.com/token"
    assert settings(token="t0k3n-value", remove_mode="delete").remove_mode is RemoveMode.DELETE
    for bad in (
        {},  # neither
        {"token": "t", "client_id": "id", "client_secret": "s"},  # both
        {"client_id": "id"},  # half an OAuth client
        {"client_secret": "s"},
        {"token": "t", "token_url": "https://rest.cleverreach.com/oauth/token.php"},
        {"token": "t", "base_url": "http://rest.cleverreach.com/v3"},  # plain http off loopback
        {"client_id": "id", "client_secret": "s", "token_url": "http://auth.example.com/token"},
        {"token": "t", "remove_mode": "purge"},
    ):
        with pytest.raises(ValidationError):
            settings(**bad)
    assert settings(token="t", base_url="http://127.0.0.1:8080/v3").base_url == "http://127.0.0.1:8080/v3"


def test_settings_document_every_field() -> None:
    undocumented = [n for n, f in CleverReachSettings.model_fields.items() if not f.description]
    assert undocumented == []


async def test_secrets_never_show() -> None:
    oauth = settings(client_id="id", client_secret="s3cr3t-value")
    token = settings(token="t0k3n-value")
    for s in (oauth, token):
        for text in (repr(s), str(s), s.model_dump_json()):
            assert "s3cr3t-value" not in text and "t0k3n-value" not in text
    sb = sandbox()
    async with connector(sb) as c:
        await c.find_group(name="x")
        assert CLIENT_SECRET not in repr(c) and CLIENT_SECRET not in repr(c.api.client.auth)
        issued = next(iter(sb.issued))
        assert issued not in repr(c.api.client.auth)


async def test_logs_carry_no_email_and_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="syncd")
    sb = sandbox()
    gid = sb.add_group("G", emails(3))
    sb.blacklist("blocked@example.com")
    sb.inject(Fault(status=503, method="POST", path="upsert$"))
    async with connector(sb) as c:
        members = await c.read_members(group(gid))
        sb.revoke_tokens()
        await c.add_members(group(gid), contacts(["blocked@example.com", *emails(2, "new")]))
        await c.remove_members(group(gid), members[:1])
    ours = [r for r in caplog.records if r.name.startswith("syncd")]
    assert ours and all(r.levelno <= logging.DEBUG for r in ours if r.name.startswith("syncd.connectors"))
    text = "\n".join(r.getMessage() for r in ours)
    assert "@" not in text and CLIENT_SECRET not in text
    assert not any(t in text for t in sb.issued)


async def test_requests_are_tallied_as_reads_and_writes() -> None:
    sb = sandbox()
    gid = sb.add_group("G", emails(2))
    async with connector(sb) as c:
        tally = RequestTally()
        with count_requests(tally):
            await c.find_group(group_id=str(gid))
            members = await c.read_members(group(gid))
            await c.add_members(group(gid), contacts(emails(1, "new")))
            await c.remove_members(group(gid), members[:1])
    assert tally.as_dict() == {"read": 5, "write": 2}  # 2 + 3 consent reads before the add


# --------------------------------------------------- other answers an independent server may give


@pytest.mark.parametrize(("cap", "n", "pages"), [(100, 250, 3), (50, 100, 3), (100, 100, 2), (100, 37, 1)])
async def test_a_server_capping_pages_below_5000_is_read_to_the_end(cap: int, n: int, pages: int) -> None:
    # The docs say pagesize <= 5000 but give no total: a server that caps lower (or ignores pagesize and sends
    # its default 50) must not have the group cut after the first page. A short first page of a length no cap
    # explains (37) still ends the read at once.
    sb = CleverReachSandbox(page_cap=cap)
    sb.add_token(STATIC_TOKEN)
    gid = sb.add_group("Big", emails(n))
    async with static(sb) as c:
        with count_requests() as tally:
            members = await c.read_members(group(gid))
    assert sorted(m.key for m in members) == emails(n)
    assert tally.read == pages == len(sb.requests)


@pytest.mark.parametrize("token_auth", ["basic", "form"])
async def test_token_endpoint_taking_the_client_either_way(token_auth: str) -> None:
    # /oauth/token.php is known from community code, which sends the client with HTTP Basic; others read form
    # fields. The connector sends both, so either kind of server issues the token.
    sb = CleverReachSandbox(clients={"cr-client": CLIENT_SECRET}, token_auth=token_auth)
    gid = sb.add_group("G", emails(2))
    async with connector(sb, client_id="cr-client") as c:
        assert len(await c.read_members(group(gid))) == 2
    assert sb.token_requests == 1 and all(r.status == 200 for r in sb.requests)


async def test_a_create_answering_only_the_id_keeps_the_name() -> None:
    sb = CleverReachSandbox(lean_create=True)
    sb.add_token(STATIC_TOKEN)
    async with static(sb) as c:
        created = await c.create_group("Fresh")
    assert created == RemoteGroup(id=str(next(iter(sb.groups))), name="Fresh")
    assert sb.count(method="POST") == 1


async def test_a_redirect_is_an_error_not_a_silent_success() -> None:
    # Nothing follows redirects; a write answered with a 3xx did not happen, so it must not count as done.
    sb = sandbox()
    gid = sb.add_group("G", emails(2))
    sb.inject(Fault(status=301, body="", headers={"Location": "/v3/elsewhere"}, method="POST", path="/upsertplus$"))
    async with static(sb) as c:
        members = await c.read_members(group(gid))
        with pytest.raises(ProtocolError, match="redirect"):
            await c.remove_members(group(gid), members[:1])
    assert sb.count(method="POST") == 1  # not retried
    assert sb.active_emails(gid) == set(emails(2))
