"""Communic8-specific behaviour, over HTTP against the bundled sandbox (no patching of our own code)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from connectors.base import (
    AuthError,
    BatchRejected,
    ConsentState,
    Contact,
    FatalError,
    MemoryRecipientCache,
    NotFound,
    RemoteGroup,
    RemoteMember,
)
from connectors.communic8 import (
    NO_REASON,
    NOT_A_RECIPIENT,
    SUPPRESSED,
    Communic8Connector,
    Communic8Settings,
    build,
    classify,
)
from connectors.http import count_requests, parse_json
from connectors.settings import BuildContext
from sandboxes._core import Fault, Mount, Request, Response
from sandboxes.communic8 import DEFAULT_KEYS, Communic8Sandbox, ErrorLogStyle

BASE = "http://127.0.0.1/int/v1"
KEY_ID, KEY = next(iter(DEFAULT_KEYS.items()))
RECIPIENTS = "/int/v1/recipient$"
MEMBERS = "/recipients$"
GROUP = r"/recipientGroup/\w+$"
REFUSAL = "This recipient cannot be added to the group"


def settings(**overrides: Any) -> Communic8Settings:
    values: dict[str, Any] = {
        "name": "c8",
        "type": "communic8",
        "base_url": BASE,
        "token": KEY,
        "rate_limit": 1e6,
        "retry": {"backoff_base": 0},
    }
    values.update(overrides)
    return Communic8Settings.model_validate({k: v for k, v in values.items() if v is not None})


def connect(
    sandbox: Communic8Sandbox, cache: MemoryRecipientCache | None = None, app: Any = None, **overrides: Any
) -> Communic8Connector:
    ctx = BuildContext(transport=httpx.ASGITransport(app=app or sandbox), cache=cache or MemoryRecipientCache())
    return build(settings(**overrides), ctx)


def people(n: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i:04d}@example.com" for i in range(n)]


def contacts(emails: list[str]) -> list[Contact]:
    return [Contact(email=e) for e in emails]


def warm_cache(sandbox: Communic8Sandbox) -> MemoryRecipientCache:
    """A cache that knows every recipient, as syncd's state DB does after a first pass."""
    cache = MemoryRecipientCache()
    cache.put_many({r["email"].lower(): rid for rid, r in sandbox.recipients.items()})
    return cache


def bodies(sandbox: Communic8Sandbox) -> list[bytes]:
    return [r.body for r in sandbox.requests]


# ------------------------------------------------------------------------------------ success: false


def _response(status: int, body: Any) -> httpx.Response:
    request = httpx.Request("POST", BASE + "/recipientGroup/abc/recipients")
    if isinstance(body, str):
        return httpx.Response(status, text=body, request=request)
    return httpx.Response(status, json=body, request=request)


def test_classify_checks_success_even_on_http_200() -> None:
    assert classify(_response(200, {"success": True, "data": {}})) is None
    assert isinstance(classify(_response(200, {"success": False, "message": "Object does not exist"})), NotFound)
    rejected = classify(_response(200, {"success": False, "message": "Not all emails founded as recipient in system"}))
    assert isinstance(rejected, BatchRejected)
    other = classify(_response(200, {"success": False, "message": "pb_c_list validation failed"}))
    assert type(other) is FatalError and "pb_c_list" in other.message
    assert isinstance(classify(_response(404, "Not Found")), NotFound)
    assert isinstance(classify(_response(401, "Unauthorized")), AuthError)
    # An HTTP error status wins over a success:false body (a 429 stays retriable).
    limited = classify(_response(429, {"success": False, "message": "slow down"}))
    assert limited is not None and limited.__class__.__name__ == "RateLimited"


async def test_success_false_answers_raise() -> None:
    sandbox = Communic8Sandbox()
    async with connect(sandbox) as c:
        with pytest.raises(FatalError, match="name: Path `name` is required"):
            await c.create_group("")  # the API validates; we do not pre-empt it
        ghost = RemoteGroup(id="0" * 24, name="Ghost")
        sandbox.add_recipient("a@example.com")
        with pytest.raises(NotFound, match="Object does not exist"):
            await c.add_members(ghost, contacts(["a@example.com"]))
        with pytest.raises(NotFound):
            await c.read_members(ghost)  # GET /recipientGroup/:id answers HTTP 404 "Not Found"
        assert await c.find_group(group_id="0" * 24) is None


# ------------------------------------------------------------------------------------- adding members


async def test_add_with_warm_cache_is_one_post() -> None:
    sandbox = Communic8Sandbox()
    emails = people(5)
    for e in emails:
        sandbox.add_recipient(e)
    gid = sandbox.add_group("G")
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        with count_requests() as tally:
            result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert sorted(result.done) == emails and not result.rejected
        assert sandbox.count() == 1 == sandbox.count(method="POST", path=MEMBERS)
        assert tally.as_dict() == {"read": 0, "write": 1}
        assert json.loads(sandbox.requests[0].body) == {"recipientEmails": emails}
        assert sandbox.group_emails(gid) == set(emails)


async def test_unknown_email_is_rejected_without_being_sent() -> None:
    sandbox = Communic8Sandbox()
    known = people(250)  # 3 directory pages of 100
    for e in known:
        sandbox.add_recipient(e)
    gid = sandbox.add_group("G")
    cache = MemoryRecipientCache()
    async with connect(sandbox, cache=cache) as c:
        unknown = "Nobody.Here@example.com"
        batch = contacts([*known[:2], unknown, *known[2:4]])
        with count_requests() as tally:
            result = await c.add_members(RemoteGroup(gid, "G"), batch)
        assert sorted(result.done) == sorted(known[:4])
        assert [(r.email, r.reason, r.permanent) for r in result.rejected] == [(unknown, NOT_A_RECIPIENT, True)]
        assert sandbox.count(method="GET", path=RECIPIENTS) == 3
        assert sandbox.count(method="POST", path=MEMBERS) == 1
        assert sandbox.count() == 4
        assert tally.as_dict() == {"read": 3, "write": 1}
        assert not any(b"nobody.here" in b.lower() for b in bodies(sandbox))
        assert sandbox.group_emails(gid) == set(known[:4])
        assert cache.all() == {e: sandbox._by_email[e] for e in known}  # the directory was written back

        # The directory is read once per connector: the next unknown email costs no request at all.
        sandbox.clear_log()
        again = await c.add_members(RemoteGroup(gid, "G"), contacts([unknown]))
        assert not again.done and len(again.rejected) == 1
        assert sandbox.count() == 0


async def test_recipient_deleted_after_directory_read_is_isolated_by_splitting() -> None:
    sandbox = Communic8Sandbox()
    emails = people(8)
    for e in emails:
        sandbox.add_recipient(e)
    gid = sandbox.add_group("G")
    cache = MemoryRecipientCache()
    async with connect(sandbox, cache=cache) as c:
        await c.add_members(RemoteGroup(gid, "G"), [])  # nothing to add: no request
        assert sandbox.count() == 0
        await c.read_members(RemoteGroup(gid, "G"))  # empty group: one GET, no directory read needed
        await c.add_members(RemoteGroup(gid, "G"), contacts(emails[:1]))  # unknown to the cache: directory read
        sandbox.delete_recipient(emails[5])
        sandbox.clear_log()
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert sorted(result.done) == sorted(set(emails) - {emails[5]})
        assert [r.email for r in result.rejected] == [emails[5]]
        # 8 refused -> 4 ok + 4 refused -> 2 ok + 2 refused -> 1 ok + 1 refused: 7 POSTs, no re-read.
        assert sandbox.count(method="POST", path=MEMBERS) == 7
        assert sandbox.count(method="GET") == 0
        assert sandbox.group_emails(gid) == set(emails) - {emails[5]}
        assert emails[5] not in cache.all()


async def test_stale_cache_entry_triggers_one_directory_read_not_a_split() -> None:
    sandbox = Communic8Sandbox()
    emails = people(4)
    for e in emails:
        sandbox.add_recipient(e)
    gid = sandbox.add_group("G")
    cache = warm_cache(sandbox)
    sandbox.delete_recipient(emails[1])  # the cache still vouches for it
    async with connect(sandbox, cache=cache) as c:
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert [r.email for r in result.rejected] == [emails[1]]
        assert sandbox.count(method="POST", path=MEMBERS) == 2  # refused, then the filtered batch
        assert sandbox.count(method="GET", path=RECIPIENTS) == 1
        assert emails[1] not in cache.all()


# ------------------------------------------------------------ single recipients refused inside a success


def routes(sandbox: Communic8Sandbox) -> list[tuple[str, str]]:
    return [(r.method, r.path.replace(ROOT, "")) for r in sandbox.requests]


ROOT = "/int/v1"


@pytest.mark.parametrize("style", ["email", "id", "text"])
async def test_refused_recipients_named_in_the_error_log_are_rejects_of_one_write(style: ErrorLogStyle) -> None:
    sandbox = Communic8Sandbox(error_log=style)
    emails = people(10)
    for e in emails:
        sandbox.add_recipient(e)
    refused = [emails[3], emails[7]]
    for e in refused:
        sandbox.refuse(e, REFUSAL)
    gid = sandbox.add_group("G")
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        with count_requests() as tally:
            result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert routes(sandbox) == [("POST", f"/recipientGroup/{gid}/recipients")]
        assert tally.as_dict() == {"read": 0, "write": 1}
        assert json.loads(sandbox.requests[0].body) == {"recipientEmails": emails}
        assert sorted(result.done) == sorted(set(emails) - set(refused))
        assert [(r.email, r.reason, r.permanent, r.code) for r in result.rejected] == [
            (e, REFUSAL, True, "provider_rejected") for e in refused
        ]
        assert sandbox.group_emails(gid) == set(emails) - set(refused)


async def test_refused_recipients_the_log_does_not_name_are_found_by_one_group_read() -> None:
    sandbox = Communic8Sandbox(error_log="anonymous")
    emails = people(10)
    for e in emails:
        sandbox.add_recipient(e)
    refused = [emails[3], emails[7]]
    for e in refused:
        sandbox.refuse(e, REFUSAL)
    gid = sandbox.add_group("G", emails[:1])  # one is in the group already: done, not refused
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        with count_requests() as tally:
            result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert routes(sandbox) == [("POST", f"/recipientGroup/{gid}/recipients"), ("GET", f"/recipientGroup/{gid}")]
        assert tally.as_dict() == {"read": 1, "write": 1}
        assert sorted(result.done) == sorted(set(emails) - set(refused))
        assert [(r.email, r.reason, r.permanent, r.code) for r in result.rejected] == [
            (e, REFUSAL, True, "provider_rejected") for e in refused
        ]
        assert sandbox.group_emails(gid) == set(emails) - set(refused)


async def test_a_refused_recipient_that_is_in_the_group_anyway_is_done() -> None:
    # The group, not the count, is the truth: a refusal of someone who is a member already changes nothing.
    sandbox = Communic8Sandbox(error_log="anonymous")
    emails = people(3)
    gid = sandbox.add_group("G", emails[:1])
    for e in emails:
        sandbox.add_recipient(e)
    sandbox.refuse(emails[0], REFUSAL)
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert sorted(result.done) == emails and not result.rejected
        assert sandbox.count() == 2  # the add and the group read the anonymous log called for


class NamesOnlyTheFirst(Communic8Sandbox):
    """An errorLog that names the first refused recipient and not the others."""

    def _log_entry(self, rid: str) -> Any:
        entry = super()._log_entry(rid)
        self.logged = getattr(self, "logged", 0) + 1
        return entry if self.logged == 1 else {"message": entry["message"]}


async def test_a_log_naming_fewer_than_the_error_count_is_completed_by_a_group_read() -> None:
    sandbox = NamesOnlyTheFirst()
    emails = people(6)
    for e in emails:
        sandbox.add_recipient(e)
    sandbox.refuse(emails[1], "Recipient bounced")
    sandbox.refuse(emails[4], REFUSAL)
    gid = sandbox.add_group("G")
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert sandbox.count(method="POST") == 1 and sandbox.count(method="GET", path=GROUP) == 1
        assert sorted(result.done) == sorted(set(emails) - {emails[1], emails[4]})
        # the named one keeps its own message; the other gets the message of the entry that named nobody
        assert [(r.email, r.reason, r.code) for r in result.rejected] == [
            (emails[1], "Recipient bounced", "bounced"),
            (emails[4], REFUSAL, "provider_rejected"),
        ]


class ShapedLog(Communic8Sandbox):
    """errorLog entries in a shape given by the test (the real shape is undocumented)."""

    def __init__(self, shape: Callable[[str, str, str], Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shape = shape

    def _log_entry(self, rid: str) -> Any:
        email = self.recipients[rid]["email"]
        rid_out: Any = int(rid) if self.int_ids else rid
        return self.shape(rid_out, email, self.refusals[email.lower()])


@pytest.mark.parametrize(
    ("shape", "reads"),
    [
        (lambda rid, email, m: {"recipientEmail": email.upper(), "msg": m}, 0),
        (lambda rid, email, m: {"_id": rid, "reason": m}, 0),
        (lambda rid, email, m: {"id": rid, "error": {"message": m}}, 0),
        (lambda rid, email, m: {"recipient": {"_id": rid, "email": email}, "message": m}, 0),
        (lambda rid, email, m: f"{m} ({email.upper()})", 0),
        (lambda rid, email, m: {"message": f"{email} - {m}"}, 0),
        (lambda rid, email, m: f"{m}: x{email}", 1),  # names a longer address, not the one sent: read the group
        (lambda rid, email, m: {"error": m}, 1),
        (lambda rid, email, m: 42, 1),  # not an entry at all: the count still says someone was refused
    ],
)
@pytest.mark.parametrize("int_ids", [False, True])
async def test_error_log_entries_are_read_defensively(
    shape: Callable[[Any, str, str], Any], reads: int, int_ids: bool
) -> None:
    sandbox = ShapedLog(shape, int_ids=int_ids)
    emails = people(4)
    for e in emails:
        sandbox.add_recipient(e)
    sandbox.refuse(emails[1], REFUSAL)
    gid = sandbox.add_group("G")
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert sandbox.count(method="GET") == reads and sandbox.count(method="POST") == 1
        assert [r.email for r in result.rejected] == [emails[1]]
        assert result.rejected[0].reason == (REFUSAL if shape(1, "e@x.io", "m") != 42 else NO_REASON)
        assert sorted(result.done) == [emails[0], *emails[2:]]


async def test_a_short_numeric_id_in_a_message_is_not_taken_for_a_name() -> None:
    # "after 2 attempts" must not name recipient 2: short ids are looked for in fields of their own only.
    sandbox = ShapedLog(lambda rid, email, m: {"message": f"{m} after {rid} attempts"}, int_ids=True)
    emails = people(3)
    for e in emails:
        sandbox.add_recipient(e)
    refused_id = sandbox.recipients[sandbox._by_email[emails[2]]]["_id"]
    sandbox.refuse(emails[2], "Refused")
    gid = sandbox.add_group("G")
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert sandbox.count(method="GET", path=GROUP) == 1  # not named: the group says who is missing
        assert [(r.email, r.reason) for r in result.rejected] == [(emails[2], f"Refused after {refused_id} attempts")]
        assert sorted(result.done) == emails[:2]


@pytest.mark.parametrize("style", ["email", "anonymous"])
async def test_remove_with_refused_recipients(style: ErrorLogStyle) -> None:
    sandbox = Communic8Sandbox(error_log=style)
    emails = people(5)
    gid = sandbox.add_group("G", emails)
    sandbox.refuse(emails[1], "Recipient is locked by an administrator")
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        group = RemoteGroup(gid, "G")
        members = {m.key: m for m in await c.read_members(group)}
        sandbox.clear_log()
        gone = [members[e] for e in emails[:3]]
        with count_requests() as tally:
            result = await c.remove_members(group, gone)
        assert json.loads(sandbox.requests[0].body) == {"recipientIds": [m.id for m in gone]}
        assert tally.as_dict() == {"read": 0 if style == "email" else 1, "write": 1}
        assert sorted(result.done) == [emails[0], emails[2]]
        assert [(r.email, r.reason, r.permanent) for r in result.rejected] == [
            (emails[1], "Recipient is locked by an administrator", True)
        ]
        assert sandbox.group_emails(gid) == {emails[1], *emails[3:]}


async def test_remove_by_email_with_an_anonymous_log() -> None:
    sandbox = Communic8Sandbox(error_log="anonymous")
    emails = people(3)
    gid = sandbox.add_group("G", emails)
    sandbox.refuse(emails[0], REFUSAL)
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        result = await c.remove_members(RemoteGroup(gid, "G"), [RemoteMember(e.upper()) for e in emails[:2]])
        assert [r.email for r in result.rejected] == [emails[0].upper()] and result.done == (emails[1],)
        assert sandbox.group_emails(gid) == {emails[0], emails[2]}
        assert sandbox.count() == 2  # the DELETE and the group read; the cache knew both ids


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("Recipient has unsubscribed", ConsentState.UNSUBSCRIBED),
        ("UNSUBSCRIBED", ConsentState.UNSUBSCRIBED),
        ("Email address bounced", ConsentState.BOUNCED),
        ("Recipient is on the blacklist", ConsentState.BLACKLISTED),
        ("blocklisted domain", ConsentState.BLACKLISTED),
        ("Recipient is suppressed", ConsentState.BLACKLISTED),
        ("Recipient is inactive", "provider_rejected"),
    ],
)
@pytest.mark.parametrize("style", ["email", "anonymous"])
async def test_a_refusal_message_naming_a_consent_state_gives_its_code(
    message: str, code: str, style: ErrorLogStyle
) -> None:
    sandbox = Communic8Sandbox(error_log=style)
    emails = people(2)
    for e in emails:
        sandbox.add_recipient(e)
    sandbox.refuse(emails[0], message)
    gid = sandbox.add_group("G")
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert [(r.email, r.reason, r.code, r.permanent) for r in result.rejected] == [
            (emails[0], message, str(code), True)
        ]
        assert result.done == (emails[1],)


async def test_reset_with_a_refused_recipient() -> None:
    sandbox = Communic8Sandbox(error_log="anonymous")
    old, new = people(2, "old"), people(4, "new")
    gid = sandbox.add_group("G", old + new[:1])
    for e in new:
        sandbox.add_recipient(e)
    sandbox.refuse(new[2], "Recipient has unsubscribed")
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        result = await c.reset_members(RemoteGroup(gid, "G"), contacts(new))
        assert routes(sandbox) == [("POST", f"/recipientGroup/{gid}/recipients"), ("GET", f"/recipientGroup/{gid}")]
        assert json.loads(sandbox.requests[0].body) == {"recipientEmails": new, "reset": True}
        assert sorted(result.done) == sorted(set(new) - {new[2]})
        assert [(r.email, r.code) for r in result.rejected] == [(new[2], "unsubscribed")]
        assert sandbox.group_emails(gid) == set(new) - {new[2]}


async def test_an_error_count_without_any_log_reads_the_group_and_says_so() -> None:
    class CountOnly(Communic8Sandbox):
        def _log_entry(self, rid: str) -> Any:
            return None  # stripped below

        def _members(self, request: Request, *, add: bool) -> dict[str, Any]:
            answer = super()._members(request, add=add)
            answer["data"].pop("errorLog", None)
            return answer

    sandbox = CountOnly()
    emails = people(3)
    for e in emails:
        sandbox.add_recipient(e)
    sandbox.refuse(emails[2])
    gid = sandbox.add_group("G")
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert [(r.email, r.reason, r.code) for r in result.rejected] == [(emails[2], NO_REASON, "provider_rejected")]
        assert sorted(result.done) == emails[:2] and sandbox.count() == 2


async def test_a_suppressed_recipient_is_never_sent() -> None:
    sandbox = Communic8Sandbox()
    emails = people(4)
    for e in emails:
        sandbox.add_recipient(e, suppressed=e == emails[1])
    gid = sandbox.add_group("G")
    async with connect(sandbox) as c:  # the cache does not know them: the directory is read, and says who is suppressed
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert routes(sandbox) == [("GET", "/recipient"), ("POST", f"/recipientGroup/{gid}/recipients")]
        assert json.loads(sandbox.requests[1].body) == {"recipientEmails": [emails[0], *emails[2:]]}
        assert [(r.email, r.reason, r.code, r.permanent) for r in result.rejected] == [
            (emails[1], SUPPRESSED, "blacklisted", True)
        ]
        assert sorted(result.done) == [emails[0], *emails[2:]]
        assert not any(emails[1].encode() in b for b in bodies(sandbox))
        # a reset leaves them out too; and nothing but suppressed people sends nothing
        sandbox.clear_log()
        reset = await c.reset_members(RemoteGroup(gid, "G"), contacts(emails[:2]))
        assert reset.done == (emails[0],) and [r.code for r in reset.rejected] == ["blacklisted"]
        assert json.loads(sandbox.requests[0].body) == {"recipientEmails": [emails[0]], "reset": True}
        sandbox.clear_log()
        alone = await c.add_members(RemoteGroup(gid, "G"), contacts([emails[1]]))
        assert not alone.done and [r.code for r in alone.rejected] == ["blacklisted"] and sandbox.count() == 0


async def test_a_warm_cache_pays_no_directory_read_to_look_for_suppressions() -> None:
    # Steady state: the cache vouches for everyone, so no directory read; a suppression made since is caught
    # by the provider's own refusal, if it makes one.
    sandbox = Communic8Sandbox()
    emails = people(3)
    for e in emails:
        sandbox.add_recipient(e)
    gid = sandbox.add_group("G")
    cache = warm_cache(sandbox)
    sandbox.set_flags(emails[0], suppressed=True)
    sandbox.refuse(emails[0], "Recipient is suppressed")
    async with connect(sandbox, cache=cache) as c:
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
        assert sandbox.count() == 1 and sandbox.count(path=RECIPIENTS) == 0
        assert [(r.email, r.code) for r in result.rejected] == [(emails[0], "blacklisted")]
        assert sorted(result.done) == emails[1:]


async def test_the_directory_shows_the_flags() -> None:
    sandbox = Communic8Sandbox()
    sandbox.add_recipient("a@example.com")
    sandbox.add_recipient("b@example.com", active=False, suppressed=True)
    async with connect(sandbox) as c:
        body = await c.api.json("GET", "recipient")
        assert [(r["email"], r["active"], r["suppressed"]) for r in body["data"]] == [
            ("a@example.com", True, False),
            ("b@example.com", False, True),
        ]


async def test_refusals_can_be_set_over_the_control_endpoint() -> None:
    sandbox = Communic8Sandbox()
    emails = people(2)
    for e in emails:
        sandbox.add_recipient(e)
    gid = sandbox.add_group("G")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox), base_url="http://127.0.0.1") as client:
        made = await client.post("/_sandbox/refusals", json={"email": emails[0].upper(), "message": "Bounced"})
        assert made.status_code == 201 and sandbox.refusals == {emails[0]: "Bounced"}
        headers = {"Authorization": f"Bearer {KEY}"}
        answer = await client.post(
            f"/int/v1/recipientGroup/{gid}/recipients", json={"recipientEmails": emails}, headers=headers
        )
        assert answer.json() == {
            "success": True,
            "data": {"successCount": 1, "errorCount": 1, "errorLog": [{"email": emails[0], "message": "Bounced"}]},
        }
        assert (await client.delete("/_sandbox/refusals")).status_code == 204 and not sandbox.refusals
    assert sandbox.count() == 1  # control requests are not recorded; the member call is


# ------------------------------------------------------------------------------------ reading members


async def test_steady_state_read_is_one_request() -> None:
    sandbox = Communic8Sandbox()
    emails = people(150)
    gid = sandbox.add_group("G", emails)
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        with count_requests() as tally:
            members = await c.read_members(RemoteGroup(gid, "G"))
        assert sorted(m.key for m in members) == emails
        assert all(m.id for m in members)
        assert sandbox.count() == 1 and tally.read == 1
        # Binding by id and then reading costs one request too: find_group hands the leads over.
        sandbox.clear_log()
        group = await c.find_group(group_id=gid)
        assert group is not None and group.member_count == 150
        assert len(await c.read_members(group)) == 150
        assert sandbox.count() == 1


async def test_cold_read_pairs_share_one_directory_read() -> None:
    sandbox = Communic8Sandbox()
    a = sandbox.add_group("A", people(120, "a"))
    b = sandbox.add_group("B", people(30, "b"))
    async with connect(sandbox) as c:
        read_a, read_b = await asyncio.gather(c.read_members(RemoteGroup(a, "A")), c.read_members(RemoteGroup(b, "B")))
        assert sorted(m.key for m in read_a) == people(120, "a")
        assert sorted(m.key for m in read_b) == people(30, "b")
        assert sandbox.count(path=RECIPIENTS) == 2  # 150 recipients: 2 pages, read once for both groups
        assert sandbox.count() == 4


async def test_lead_without_a_known_recipient_is_kept_by_id() -> None:
    sandbox = Communic8Sandbox()
    gid = sandbox.add_group("G", ["x@example.com"])
    sandbox.groups[gid]["leads"] = [*sandbox.groups[gid]["leads"], "f" * 24]  # a dangling id
    async with connect(sandbox) as c:
        members = await c.read_members(RemoteGroup(gid, "G"))
        assert sorted(m.key for m in members) == [f"id:{'f' * 24}", "x@example.com"]
        assert RemoteMember(email=None, id="f" * 24) in members


# ---------------------------------------------------------------------------------- groups by name


async def test_find_by_name_pages_and_compares_exactly() -> None:
    sandbox = Communic8Sandbox()
    for i in range(120):
        sandbox.add_group(f"Team 1 / {i}")  # all match the (partial) name filter for "Team 1"
    target = sandbox.add_group("Team 1")
    sandbox.add_group("team 1")  # differs in case only: not it
    async with connect(sandbox) as c:
        found = await c.find_group(name="Team 1")
        assert found is not None and found.id == target and found.name == "Team 1"
        assert [r.query.endswith("skip=100") for r in sandbox.requests] == [False, True]  # two pages
        sandbox.clear_log()
        found = await c.find_group(name="Team 1 / 5")
        assert found is not None and sandbox.count() == 1  # found on the first page: no further read
        sandbox.clear_log()
        assert await c.find_group(name="team") is None  # partial and case-insensitive matches are not it
        assert sandbox.count() == 2  # 122 groups match the filter: paged to the end (total), then stop


class LandsThenFails(Communic8Sandbox):
    """The first group create is processed, but its answer is lost (a 502 from a proxy)."""

    lost = 0

    async def handle(self, request: Request) -> Response:
        response = await super().handle(request)
        if request.method == "POST" and request.path.endswith("/recipientGroup") and not self.lost:
            self.lost += 1
            return Response(502, "Bad Gateway")
        return response


async def test_create_that_landed_is_not_sent_twice() -> None:
    sandbox = LandsThenFails()
    async with connect(sandbox) as c:
        group = await c.create_group("New")
        assert [g["name"] for g in sandbox.groups.values()] == ["New"]
        assert group.id == next(iter(sandbox.groups))
        assert sandbox.count(method="POST") == 1 and sandbox.count(method="GET") == 1


async def test_create_that_did_not_land_is_sent_again() -> None:
    sandbox = Communic8Sandbox()
    sandbox.inject(Fault(status=503, method="POST", path="/recipientGroup$"))
    async with connect(sandbox) as c:
        group = await c.create_group("New")
        assert [g["name"] for g in sandbox.groups.values()] == ["New"] and group.name == "New"
        assert sandbox.count(method="POST") == 2 and sandbox.count(method="GET") == 1


# -------------------------------------------------------------------------------- reset and remove


async def test_reset_is_one_mutating_request() -> None:
    sandbox = Communic8Sandbox()
    old, new = people(3, "old"), people(3, "new")
    for e in new:
        sandbox.add_recipient(e)
    gid = sandbox.add_group("G", old + new[:1])
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        result = await c.reset_members(RemoteGroup(gid, "G"), contacts([*new, "ghost@example.com"]))
        assert sorted(result.done) == new and [r.email for r in result.rejected] == ["ghost@example.com"]
        assert sandbox.mutating_count == 1 and sandbox.count() == 2  # plus one directory page (cold for ghost)
        assert json.loads(sandbox.requests[-1].body) == {"recipientEmails": new, "reset": True}
        assert sandbox.group_emails(gid) == set(new)
        # Nobody we want exists: the group is not wiped.
        sandbox.clear_log()
        nobody = await c.reset_members(RemoteGroup(gid, "G"), contacts(["ghost@example.com"]))
        assert not nobody.done and len(nobody.rejected) == 1
        assert sandbox.count() == 0 and sandbox.group_emails(gid) == set(new)


async def test_remove_sends_a_json_body_and_is_idempotent() -> None:
    sandbox = Communic8Sandbox()
    emails = people(4)
    gid = sandbox.add_group("G", emails)
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        group = RemoteGroup(gid, "G")
        members = {m.key: m for m in await c.read_members(group)}
        sandbox.clear_log()
        by_email = RemoteMember(email=emails[3].upper())  # no id: removed by email, in a call of its own
        result = await c.remove_members(group, [members[emails[0]], members[emails[1]], by_email])
        assert sorted(result.done) == sorted([emails[0], emails[1], emails[3]])
        assert sandbox.count(method="DELETE", path=MEMBERS) == 2 == sandbox.mutating_count
        first, second = (json.loads(r.body) for r in sandbox.requests)
        assert first == {"recipientIds": [members[emails[0]].id, members[emails[1]].id]}
        assert second == {"recipientEmails": [emails[3].upper()]}
        assert sandbox.group_emails(gid) == {emails[2]}
        again = await c.remove_members(group, [members[emails[0]]])
        assert again.done == (emails[0],) and not again.rejected


async def test_remove_of_a_deleted_recipient_still_removes_the_rest() -> None:
    sandbox = Communic8Sandbox()
    emails = people(4)
    gid = sandbox.add_group("G", emails)
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        group = RemoteGroup(gid, "G")
        members = [m for m in await c.read_members(group) if m.key != emails[3]]
        sandbox.delete_recipient(emails[0])  # gone from the system (and so from the group)
        result = await c.remove_members(group, members)
        assert sorted(result.done) == emails[:3] and not result.rejected
        assert sandbox.group_emails(gid) == {emails[3]}


# ------------------------------------------------------------------------------------------- auth


async def test_oauth_token_is_refreshed_once_on_401() -> None:
    sandbox = Communic8Sandbox()
    gid = sandbox.add_group("G")
    async with connect(sandbox, token=None, client_id=KEY_ID, client_secret=KEY) as c:
        assert await c.find_group(group_id=gid) is not None
        assert sandbox.count(path="/oauth/token$") == 1
        await c.find_group(group_id=gid)
        assert sandbox.count(path="/oauth/token$") == 1  # the token is reused
        sandbox.revoke_tokens()
        sandbox.clear_log()
        with count_requests() as tally:
            assert await c.find_group(group_id=gid) is not None
        assert [(r.method, r.status) for r in sandbox.requests] == [
            ("GET", 401),
            ("POST", 200),
            ("GET", 200),
        ]
        assert tally.as_dict() == {"read": 1, "write": 0}  # token requests are not the pair's requests


async def test_oauth_token_is_requested_as_the_vendor_documents_it() -> None:
    # The authentication page: Authorization: Bearer base64(client_id:client_secret), a JSON grant_type.
    sandbox = Communic8Sandbox(token_auth="docs")
    gid = sandbox.add_group("G")
    async with connect(sandbox, token=None, client_id=KEY_ID, client_secret=KEY) as c:
        assert await c.find_group(group_id=gid) is not None
    (token_request,) = [r for r in sandbox.requests if r.path.endswith("/oauth/token")]
    assert token_request.status == 200
    assert json.loads(token_request.body) == {"grant_type": "client_credentials"}
    assert KEY.encode() not in token_request.body  # the secret travels only in the header


async def test_a_token_endpoint_taking_form_fields_only_is_asked_again_once() -> None:
    sandbox = Communic8Sandbox(token_auth="form")
    gid = sandbox.add_group("G")
    async with connect(sandbox, token=None, client_id=KEY_ID, client_secret=KEY) as c:
        assert await c.find_group(group_id=gid) is not None
        sandbox.revoke_tokens()
        assert await c.find_group(group_id=gid) is not None  # the way that worked is kept
    assert [r.status for r in sandbox.requests if r.path.endswith("/oauth/token")] == [401, 200, 200]


async def test_oauth_through_a_mounted_sandbox_derives_the_token_url() -> None:
    sandbox = Communic8Sandbox()
    sandbox.add_group("G")
    app = Mount({"communic8": sandbox})
    base = "http://127.0.0.1/communic8/int/v1"
    async with connect(sandbox, app=app, base_url=base, token=None, client_id=KEY_ID, client_secret=KEY) as c:
        assert await c.find_group(name="G") is not None
        assert sandbox.count(path="^/int/v1/oauth/token$") == 1


async def test_static_bad_token_is_an_auth_error_without_the_token() -> None:
    sandbox = Communic8Sandbox()
    async with connect(sandbox, token="wrong-token-value") as c:
        with pytest.raises(AuthError) as caught:
            await c.find_group(name="G")
        assert caught.value.status == 401 and "wrong-token-value" not in str(caught.value)
        assert sandbox.count() == 1  # a static key is not retried


async def test_wrong_client_secret_is_an_auth_error() -> None:
    sandbox = Communic8Sandbox()
    async with connect(sandbox, token=None, client_id=KEY_ID, client_secret="not-it") as c:
        with pytest.raises(AuthError):
            await c.find_group(name="G")
        assert sandbox.count(path="/recipientGroup") == 0


async def test_no_email_or_secret_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    sandbox = Communic8Sandbox(error_log="text")  # errorLog entries that echo the email
    emails = people(3)
    for e in emails:
        sandbox.add_recipient(e)
    sandbox.refuse(emails[0], "Recipient has unsubscribed")
    gid = sandbox.add_group("G")
    async with connect(sandbox, token=None, client_id=KEY_ID, client_secret=KEY) as c:
        caplog.set_level(logging.DEBUG, logger="syncd")
        result = await c.add_members(RemoteGroup(gid, "G"), contacts([*emails, "ghost@example.com"]))
        await c.read_members(RemoteGroup(gid, "G"))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "@example.com" not in text and KEY not in text
    refused = next(r for r in result.rejected if r.email == emails[0])
    assert refused.reason == "Recipient has unsubscribed" and refused.code == "unsubscribed"
    assert all(r.levelno <= logging.DEBUG for r in caplog.records if r.name.startswith("syncd.connectors"))


# --------------------------------------------------------------------------------------- settings


def test_settings_take_exactly_one_auth_style() -> None:
    static = settings()
    assert static.token is not None and static.client_id is None
    oauth = settings(token=None, client_id="id", client_secret="s3cret", base_url="https://acme.example/int/v1")
    assert oauth.oauth_token_url == "https://acme.example/int/v1/oauth/token"
    explicit = settings(token=None, client_id="id", client_secret="s", token_url="https://sso.example/token")
    assert explicit.oauth_token_url == "https://sso.example/token"
    for bad in (
        {"token": None},  # neither
        {"client_id": "id", "client_secret": "s"},  # both
        {"token": None, "client_id": "id"},  # half of the pair
        {"token": ""},
        {"token_url": "https://sso.example/token"},  # only meaningful with client credentials
        {"base_url": "http://acme.example/int/v1"},  # plain http off loopback
        {"token": None, "client_id": "i", "client_secret": "s", "token_url": "http://sso.example/t"},
        {"type": "stannp"},
        {"surprise": 1},
    ):
        with pytest.raises(ValidationError):
            settings(**bad)
    with pytest.raises(ValidationError):
        Communic8Settings.model_validate({"name": "c8", "type": "communic8", "token": "t"})  # base_url required


def test_secrets_never_show() -> None:
    for s in (settings(token="tok-123456"), settings(token=None, client_id="id", client_secret="sec-123456")):
        for text in (repr(s), str(s), s.model_dump_json()):
            assert "tok-123456" not in text and "sec-123456" not in text
    c = connect(Communic8Sandbox(), token=None, client_id="id", client_secret="sec-123456")
    assert "sec-123456" not in repr(c) and "sec-123456" not in repr(c.api.client.auth)


def test_capabilities_and_batch_size() -> None:
    c = connect(Communic8Sandbox(), batch_size=250)
    assert c.capabilities.max_add_batch == 250 == c.capabilities.max_remove_batch
    assert c.capabilities.reset.value == "atomic" and c.capabilities.member_key.value == "email"
    for f in Communic8Settings.model_fields.values():
        assert f.description, "every settings key is documented"


# --------------------------------------------------- other answers an independent server may give


async def test_listings_without_total_and_with_a_lower_page_cap_are_read_to_the_end() -> None:
    # `total` is optional in the docs and the page cap is unverified: a server that caps pages at 50 and sends
    # no total must not have its listings cut after the first (short) page.
    sandbox = Communic8Sandbox(page_cap=50, omit_total=True)
    emails = people(120)
    for e in emails:
        sandbox.add_recipient(e)
    for i in range(120):
        sandbox.add_group(f"Team 1 / {i}")
    target = sandbox.add_group("Team 1")
    async with connect(sandbox) as c:
        found = await c.find_group(name="Team 1")
        assert found is not None and found.id == target
        assert [r.query.split("skip=")[1] for r in sandbox.requests] == ["0", "50", "100"]
        sandbox.clear_log()
        result = await c.add_members(found, contacts(emails))
        assert sorted(result.done) == emails and not result.rejected
        assert sandbox.count(method="GET", path=RECIPIENTS) == 3  # 50 + 50 + 20: the short page ends it
        assert sandbox.group_emails(target) == set(emails)


async def test_a_short_round_first_page_costs_one_more_request_only_without_a_total() -> None:
    emails = people(50)
    for omit_total, pages in ((False, 1), (True, 2)):
        sandbox = Communic8Sandbox(omit_total=omit_total)
        for e in emails:
            sandbox.add_recipient(e)
        gid = sandbox.add_group("G")
        async with connect(sandbox) as c:
            result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
            assert len(result.done) == 50
            # 50 of 100 asked: maybe a server cap, so without a total one more (empty) page makes sure.
            assert sandbox.count(method="GET", path=RECIPIENTS) == pages


async def test_numeric_ids_work_everywhere() -> None:
    sandbox = Communic8Sandbox(int_ids=True)
    emails = people(4)
    gid = sandbox.add_group("G", emails[:2])
    for e in emails:
        sandbox.add_recipient(e)
    async with connect(sandbox) as c:
        raw = await c.api.json("GET", f"recipientGroup/{gid}")
        assert isinstance(raw["data"]["_id"], int)  # the knob does what it says
        group = await c.find_group(name="G")
        assert group is not None and group.id == gid
        members = await c.read_members(group)
        assert sorted(m.key for m in members) == emails[:2] and all(m.id for m in members)
        await c.add_members(group, contacts(emails[2:]))
        await c.remove_members(group, members[:1])
        assert sandbox.group_emails(gid) == set(emails[1:])
        created = await c.create_group("New")
        assert created.id.isdigit() and await c.read_members(created) == []


async def test_group_answers_without_leads_are_read_by_id() -> None:
    sandbox = Communic8Sandbox(lean_groups=True)
    gid = sandbox.add_group("G", people(3))
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        group = await c.find_group(name="G")
        assert group is not None and group.id == gid
        assert sorted(m.key for m in await c.read_members(group)) == people(3)
        assert [r.path for r in sandbox.requests] == ["/int/v1/recipientGroup", f"/int/v1/recipientGroup/{gid}"]
        sandbox.clear_log()
        created = await c.create_group("New")  # created by name only: it has no members to read
        assert await c.read_members(created) == [] and sandbox.count() == 1


@pytest.mark.parametrize(
    "words", ["Not all emails found as recipient in system", "Not all recipients were found", "not all ids found"]
)
async def test_the_refusal_in_mended_words_is_still_isolated(words: str) -> None:
    # The docs quote the refusal with its typo ("founded"); a server that mends it must still have its refusal
    # read as "some recipient is unknown" (split the batch), not as a failure of the whole add.
    sandbox = Communic8Sandbox(unknown_message=words)
    emails = people(4)
    for e in emails:
        sandbox.add_recipient(e)
    gid = sandbox.add_group("G")
    async with connect(sandbox, cache=warm_cache(sandbox)) as c:
        sandbox.delete_recipient(emails[2])  # the cache still vouches for it
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails))
    assert [r.email for r in result.rejected] == [emails[2]]
    assert sandbox.group_emails(gid) == set(emails) - {emails[2]}


# ------------------------------------------------------------------------------------- large groups


class SpyCache(MemoryRecipientCache):
    """A cache that says how it was asked, and refuses to be read whole."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def get_many(self, keys: Any) -> dict[str, str]:
        self.calls.append(("get_many", len(keys)))
        return super().get_many(keys)

    def keys_by_id(self, ids: Any) -> dict[str, str]:
        self.calls.append(("keys_by_id", len(ids)))
        return super().keys_by_id(ids)

    def put_many(self, ids: Any) -> None:
        self.calls.append(("put_many", len(ids)))
        super().put_many(ids)

    def replace_all(self, ids: Any) -> None:
        self.calls.append(("replace_all", len(ids)))
        super().replace_all(ids)

    def all(self) -> dict[str, str]:
        raise AssertionError("a pass looks up what it needs, never the whole cache")


async def test_a_steady_read_looks_the_group_s_ids_up_and_nothing_else() -> None:
    sandbox = Communic8Sandbox()
    emails = people(300)
    for e in emails:
        sandbox.add_recipient(e)
    gid = sandbox.add_group("G", emails[:200])
    cache = SpyCache()
    cache.put_many({e: sandbox._by_email[e] for e in emails})  # the directory, as a first pass left it
    cache.calls.clear()
    async with connect(sandbox, cache=cache) as c:
        members = await c.read_members(RemoteGroup(gid, "G"))
        assert sorted(m.key for m in members) == emails[:200]
        assert cache.calls == [("keys_by_id", 200)]
        assert sandbox.count() == 1
        # adds look up their own keys (one chunk), and send
        cache.calls.clear()
        result = await c.add_members(RemoteGroup(gid, "G"), contacts(emails[200:]))
        assert sorted(result.done) == emails[200:] and cache.calls == [("get_many", 100)]
        assert sandbox.count(method="GET") == 1  # still no directory read


async def test_a_lead_the_cache_lacks_costs_one_directory_read_that_writes_back_only_what_changed() -> None:
    sandbox = Communic8Sandbox()
    emails = people(150)
    gid = sandbox.add_group("G", emails)
    cache = SpyCache()
    cache.put_many({e: sandbox._by_email[e] for e in emails[:149]})
    cache.put_many({"gone@example.com": "0" * 24})  # a recipient deleted since
    async with connect(sandbox, cache=cache) as c:
        cache.calls.clear()
        members = await c.read_members(RemoteGroup(gid, "G"))
        assert sorted(m.key for m in members) == emails
        assert sandbox.count(path=RECIPIENTS) == 2
        assert cache.calls == [("keys_by_id", 150), ("replace_all", 150)]
        assert cache.ids == {e: sandbox._by_email[e] for e in emails}


async def test_adds_stop_looking_up_at_the_first_chunk_the_cache_lacks() -> None:
    sandbox = Communic8Sandbox()
    emails = people(100)
    for e in emails:
        sandbox.add_recipient(e)
    gid = sandbox.add_group("G")
    cache = SpyCache()
    cache.put_many({e: sandbox._by_email[e] for e in emails[:15]})  # the second chunk has unknown keys
    cache.calls.clear()
    async with connect(sandbox, cache=cache) as c:
        c.lookup_chunk = 10
        rejects = await c.check_adds(RemoteGroup(gid, "G"), contacts([*emails, "nobody@example.com"]))
        assert [r.email for r in rejects] == ["nobody@example.com"]
        assert cache.calls == [("get_many", 10), ("get_many", 10), ("replace_all", 100)]
        assert sandbox.count(path=RECIPIENTS) == 1


async def test_every_answer_is_parsed_once() -> None:
    """Watched with a profile hook: every call of the one JSON parser (`connectors.http.parse_json`), by body."""
    parsed: list[int] = []

    def watch(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is parse_json.__code__:
            parsed.append(id(frame.f_locals["content"]))

    sandbox = Communic8Sandbox()
    gid = sandbox.add_group("G", people(250))
    async with connect(sandbox) as c:  # a cold cache: the group, then the directory's 3 pages
        sys.setprofile(watch)
        try:
            assert len(await c.read_members(RemoteGroup(gid, "G"))) == 250
        finally:
            sys.setprofile(None)
    assert sandbox.count() == 4
    assert len(parsed) == len(set(parsed)) == 4  # classified and read: one parse each


def test_a_parsed_answer_keeps_its_body_and_an_answer_that_is_not_json_still_says_so() -> None:
    from connectors.base import ProtocolError
    from connectors.communic8 import _answer

    ok = _response(200, {"success": True, "data": [1]})
    assert classify(ok) is None
    assert _answer(ok) == {"success": True, "data": [1]}
    html = _response(200, "<html>maintenance</html>")
    assert classify(html) is None
    with pytest.raises(ProtocolError, match="expected JSON"):
        _answer(html)
