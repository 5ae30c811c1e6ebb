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
)
from connectors.cleverreach import (
    REJECT_REASON,
    CleverReachConnector,
    CleverReachSettings,
    RemoveMode,
    classify,
)
from connectors.http import RequestTally, count_requests
from connectors.sandbox._core import Fault
from connectors.sandbox.cleverreach import CleverReachSandbox
from connectors.settings import BuildContext
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


def group(gid: int, name: str = "G") -> RemoteGroup:
    return RemoteGroup(id=str(gid), name=name)


def bodies(sb: CleverReachSandbox, path: str) -> list[Any]:
    return [json.loads(r.body) for r in sb.requests if r.path.endswith(path)]


# ------------------------------------------------------------------------------------------------ auth


async def test_token_is_fetched_once_and_reused() -> None:
    sb = sandbox()
    gid = sb.add_group("G", emails(3))
    c = connector(sb)
    try:
        assert await c.find_group(group_id=str(gid)) is not None
        await c.read_members(group(gid))
        await c.add_members(group(gid), contacts(emails(2, "new")))
        await c.remove_members(group(gid), (await c.read_members(group(gid)))[:1])
    finally:
        await c.aclose()
    assert sb.token_requests == 1
    assert sb.count(path="^/v3/") == 5
    assert all(r.status == 200 for r in sb.requests)
    assert not any("token=" in r.query for r in sb.requests)  # never the ?token= form


async def test_401_mid_run_refreshes_once_then_succeeds() -> None:
    sb = sandbox()
    gid = sb.add_group("G", emails(3))
    c = connector(sb)
    try:
        await c.find_group(group_id=str(gid))
        sb.revoke_tokens()  # the token dies before its expires_in
        with count_requests() as tally:
            members = await c.read_members(group(gid))
    finally:
        await c.aclose()
    assert len(members) == 3
    assert sb.token_requests == 2
    reads = [r.status for r in sb.requests if r.path.endswith("/receivers")]
    assert reads == [401, 200]
    assert tally.read == 1  # one logical request; the token request is not counted


async def test_bad_client_is_an_auth_error_and_nothing_else_is_sent() -> None:
    sb = sandbox()
    c = connector(sb, bad_credentials=True)
    try:
        with pytest.raises(AuthError) as caught:
            await c.find_group(name="G")
    finally:
        await c.aclose()
    assert "not-the-secret" not in str(caught.value)
    assert sb.token_requests == 1
    assert sb.count(path="^/v3/") == 0


async def test_static_token_and_a_wrong_one() -> None:
    sb = sandbox()
    gid = sb.add_group("G", emails(2))
    good, bad = static(sb), static(sb, token="wrong-token")
    try:
        assert len(await good.read_members(group(gid))) == 2
        with pytest.raises(AuthError) as caught:
            await bad.read_members(group(gid))
    finally:
        await good.aclose()
        await bad.aclose()
    assert sb.token_requests == 0
    assert caught.value.status == 401 and "Unauthorized" in caught.value.message
    assert "wrong-token" not in caught.value.message


# ------------------------------------------------------------------------------------------ pagination


@pytest.mark.parametrize(("n", "pages"), [(0, 1), (4999, 1), (5000, 2), (5001, 2), (10000, 3)])
async def test_reads_pages_of_5000_until_a_short_page(n: int, pages: int) -> None:
    sb = sandbox()
    gid = sb.add_group("Big", emails(n))
    c = connector(sb)
    try:
        await c.find_group(group_id=str(gid))  # fetches the token
        sb.clear_log()
        with count_requests() as tally:
            members = await c.read_members(group(gid))
    finally:
        await c.aclose()
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


async def test_upserts_go_in_batches_of_1000() -> None:
    sb = sandbox()
    gid = sb.add_group("G")
    c = connector(sb)
    try:
        await c.find_group(group_id=str(gid))
        sb.clear_log()
        result = await c.add_members(group(gid), contacts(emails(2500)))
    finally:
        await c.aclose()
    assert len(result.done) == 2500 and not result.rejected
    assert sb.mutating_count == 3
    batches = bodies(sb, "/receivers/upsert")
    assert [len(b) for b in batches] == [1000, 1000, 500]
    first = batches[0][0]
    assert first["deactivated"] == 0 and first["activated"] > 0
    assert first["global_attributes"] == {"firstname": "Ann", "lastname": "Lee"}
    assert sb.active_emails(gid) == set(emails(2500))


async def test_sandbox_refuses_more_than_1000_per_upsert() -> None:
    sb = sandbox()
    gid = sb.add_group("G")
    headers = {"Authorization": f"Bearer {STATIC_TOKEN}"}
    async with httpx.AsyncClient(transport=HARNESS.transport(sb), base_url="http://127.0.0.1") as http:
        answer = await http.post(
            f"/v3/groups/{gid}/receivers/upsert", headers=headers, json=[{"email": e} for e in emails(1001)]
        )
    assert answer.status_code == 400
    assert "1000" in answer.json()["error"]["message"]
    assert sb.active_emails(gid) == set()


async def test_suppressed_addresses_are_rejected_with_a_reason_and_the_rest_go_in() -> None:
    sb = sandbox()
    gid = sb.add_group("G")
    sb.blacklist("Black@Example.com")
    sb.bounce("bounced@example.com")
    good = emails(3)
    c = connector(sb)
    try:
        batch = contacts([good[0], "black@example.com", good[1], "bounced@example.com", good[2]])
        result = await c.add_members(group(gid), batch)
    finally:
        await c.aclose()
    assert sorted(result.done) == good
    assert sorted(r.email for r in result.rejected) == ["black@example.com", "bounced@example.com"]
    assert all(r.reason == REJECT_REASON and r.permanent for r in result.rejected)
    assert sb.active_emails(gid) == set(good)
    assert sb.mutating_count == 1  # no splitting: the refusal is per receiver


# ----------------------------------------------------------------------------------------------- removal


async def test_deactivate_is_one_upsertplus_and_deactivated_receivers_are_not_members() -> None:
    sb = sandbox()
    people = emails(5)
    gid = sb.add_group("G", people)
    c = connector(sb)
    assert c.remove_mode is RemoveMode.DEACTIVATE and c.capabilities.max_remove_batch == 1000
    try:
        members = {m.key: m for m in await c.read_members(group(gid))}
        sb.clear_log()
        result = await c.remove_members(group(gid), [members[e] for e in people[:3]])
        assert sorted(result.done) == people[:3] and not result.rejected
        assert sb.mutating_count == 1 and sb.count(path="/receivers/upsertplus$") == 1
        assert sorted(m.key for m in await c.read_members(group(gid))) == people[3:]
        # the receivers stay in the group, inactive: history kept
        stored = {r["email"]: r for r in sb.receivers(gid)}
        assert len(stored) == 5 and all(stored[e]["deactivated"] > 0 for e in people[:3])
        # and adding one back reactivates it (same receiver id)
        again = await c.add_members(group(gid), contacts(people[:1]))
        assert again.done == (people[0],)
        assert sb.receivers(gid)[0]["id"] == stored[people[0]]["id"]
        assert sb.active_emails(gid) == {people[0], *people[3:]}
    finally:
        await c.aclose()


async def test_delete_mode_sends_one_delete_each_and_404_is_done() -> None:
    sb = sandbox()
    people = emails(4)
    gid = sb.add_group("G", people)
    c = connector(sb, remove_mode="delete")
    assert c.capabilities.max_remove_batch == 1
    try:
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
    finally:
        await c.aclose()


# ------------------------------------------------------------------------------------------------- reset


async def test_reset_is_clear_then_upsert_and_only_when_asked() -> None:
    sb = sandbox()
    old, new = emails(3, "old"), emails(2, "new")
    gid = sb.add_group("G", old)
    c = connector(sb)
    assert c.capabilities.reset is ResetKind.NON_ATOMIC
    try:
        members = list(await c.read_members(group(gid)))
        await c.add_members(group(gid), contacts(new))
        await c.remove_members(group(gid), members[:1])
        assert sb.count(path="/clear$") == 0  # adds and removes never clear
        sb.clear_log()
        result = await c.reset_members(group(gid), contacts(new))
    finally:
        await c.aclose()
    assert sorted(result.done) == new
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in sb.requests] == [
        ("DELETE", "clear"),
        ("POST", "upsert"),
    ]
    assert sb.active_emails(gid) == set(new)


# ------------------------------------------------------------------------------------------------ groups


async def test_find_group_edges() -> None:
    sb = sandbox()
    sb.add_group("Twin")
    sb.add_group("Twin")
    gid = sb.add_group("Solo")
    c = connector(sb)
    try:
        assert await c.find_group(group_id="not-a-number") is None
        assert await c.find_group(group_id="999999") is None
        fallback = await c.find_group(group_id="999999", name="Solo")  # the id is gone: the name decides
        assert fallback is not None and fallback.id == str(gid)
        with pytest.raises(FatalError, match="2 CleverReach groups are named 'Twin'"):
            await c.find_group(name="Twin")
        with pytest.raises(NotFound):
            await c.read_members(group(999999))
    finally:
        await c.aclose()


async def test_create_retried_after_a_server_error_creates_one_group() -> None:
    sb = sandbox()
    sb.inject(Fault(status=503, method="POST", path="^/v3/groups$"))
    c = connector(sb)
    try:
        created = await c.create_group("New")
    finally:
        await c.aclose()
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
    c = HARNESS.connector(sb, ctx=ctx)
    try:
        created = await c.create_group("New")
    finally:
        await c.aclose()
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
    c = connector(sb)
    try:
        await c.find_group(name="x")
        assert CLIENT_SECRET not in repr(c) and CLIENT_SECRET not in repr(c.api.client.auth)
        issued = next(iter(sb.issued))
        assert issued not in repr(c.api.client.auth)
    finally:
        await c.aclose()


async def test_logs_carry_no_email_and_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="syncd")
    sb = sandbox()
    gid = sb.add_group("G", emails(3))
    sb.blacklist("blocked@example.com")
    sb.inject(Fault(status=503, method="POST", path="upsert$"))
    c = connector(sb)
    try:
        members = await c.read_members(group(gid))
        sb.revoke_tokens()
        await c.add_members(group(gid), contacts(["blocked@example.com", *emails(2, "new")]))
        await c.remove_members(group(gid), members[:1])
        await c.reset_members(group(gid), contacts(emails(1, "last")))
    finally:
        await c.aclose()
    ours = [r for r in caplog.records if r.name.startswith("syncd")]
    assert ours and all(r.levelno <= logging.DEBUG for r in ours if r.name.startswith("syncd.connectors"))
    text = "\n".join(r.getMessage() for r in ours)
    assert "@" not in text and CLIENT_SECRET not in text
    assert not any(t in text for t in sb.issued)


async def test_requests_are_tallied_as_reads_and_writes() -> None:
    sb = sandbox()
    gid = sb.add_group("G", emails(2))
    c = connector(sb)
    tally = RequestTally()
    try:
        with count_requests(tally):
            await c.find_group(group_id=str(gid))
            members = await c.read_members(group(gid))
            await c.add_members(group(gid), contacts(emails(1, "new")))
            await c.remove_members(group(gid), members[:1])
    finally:
        await c.aclose()
    assert tally.as_dict() == {"read": 2, "write": 2}


# --------------------------------------------------- other answers an independent server may give


@pytest.mark.parametrize(("cap", "n", "pages"), [(100, 250, 3), (50, 100, 3), (100, 100, 2), (100, 37, 1)])
async def test_a_server_capping_pages_below_5000_is_read_to_the_end(cap: int, n: int, pages: int) -> None:
    # The docs say pagesize <= 5000 but give no total: a server that caps lower (or ignores pagesize and sends
    # its default 50) must not have the group cut after the first page. A short first page of a length no cap
    # explains (37) still ends the read at once.
    sb = CleverReachSandbox(page_cap=cap)
    sb.add_token(STATIC_TOKEN)
    gid = sb.add_group("Big", emails(n))
    c = static(sb)
    try:
        with count_requests() as tally:
            members = await c.read_members(group(gid))
    finally:
        await c.aclose()
    assert sorted(m.key for m in members) == emails(n)
    assert tally.read == pages == len(sb.requests)


@pytest.mark.parametrize("token_auth", ["basic", "form"])
async def test_token_endpoint_taking_the_client_either_way(token_auth: str) -> None:
    # /oauth/token.php is known from community code, which sends the client with HTTP Basic; others read form
    # fields. The connector sends both, so either kind of server issues the token.
    sb = CleverReachSandbox(clients={"cr-client": CLIENT_SECRET}, token_auth=token_auth)
    gid = sb.add_group("G", emails(2))
    c = connector(sb, client_id="cr-client")
    try:
        assert len(await c.read_members(group(gid))) == 2
    finally:
        await c.aclose()
    assert sb.token_requests == 1 and all(r.status == 200 for r in sb.requests)


async def test_a_create_answering_only_the_id_keeps_the_name() -> None:
    sb = CleverReachSandbox(lean_create=True)
    sb.add_token(STATIC_TOKEN)
    c = static(sb)
    try:
        created = await c.create_group("Fresh")
    finally:
        await c.aclose()
    assert created == RemoteGroup(id=str(next(iter(sb.groups))), name="Fresh")
    assert sb.count(method="POST") == 1


async def test_a_redirect_is_an_error_not_a_silent_success() -> None:
    # Nothing follows redirects; a write answered with a 3xx did not happen, so it must not count as done.
    sb = sandbox()
    gid = sb.add_group("G", emails(2))
    sb.inject(Fault(status=301, body="", headers={"Location": "/v3/elsewhere"}, method="DELETE", path="/clear$"))
    c = static(sb)
    try:
        with pytest.raises(ProtocolError, match="redirect"):
            await c.reset_members(group(gid), contacts(emails(1, "new")))
    finally:
        await c.aclose()
    assert sb.count(method="DELETE") == 1 and sb.count(method="POST") == 0  # not retried, no upsert after it
    assert sb.active_emails(gid) == set(emails(2))
