"""The sandboxes keep up with large groups: a listing's later pages cost their own length (no walk over every
skipped item, no sort of the whole group per page), an add to a large group costs the size of the add, and what
a listing shows is still what the sandbox holds when it changes between two pages."""

from __future__ import annotations

from typing import Any

import httpx

from sandboxes._core import SandboxApp
from sandboxes.cleverreach import CleverReachSandbox
from sandboxes.communic8 import DEFAULT_KEYS, Communic8Sandbox

C8 = "http://sandbox/int/v1"
C8_AUTH = {"Authorization": f"Bearer {next(iter(DEFAULT_KEYS.values()))}"}
CR = "http://sandbox/v3"
CR_AUTH = {"Authorization": "Bearer static-token"}


def client(app: SandboxApp, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), headers=headers)


async def c8_directory(http: httpx.AsyncClient, *, between: Any = None) -> list[str]:
    emails: list[str] = []
    skip = 0
    while True:
        body = (await http.get(f"{C8}/recipient", params={"limit": 100, "skip": skip})).json()
        emails += [r["email"] for r in body["data"]]
        skip += len(body["data"])
        if skip >= body["total"] or not body["data"]:
            return emails
        if between is not None:
            between(skip)


async def test_communic8_directory_pages_see_changes_made_between_them() -> None:
    sandbox = Communic8Sandbox()
    emails = [f"p{i:05d}@example.com" for i in range(1_050)]
    for e in emails:
        sandbox.add_recipient(e)
    async with client(sandbox, C8_AUTH) as http:
        assert await c8_directory(http) == emails

        def change(skip: int) -> None:
            if skip == 500:
                sandbox.delete_recipient(emails[0])  # everyone after it moves up one place
                sandbox.add_recipient("late@example.com")

        seen = await c8_directory(http, between=change)
    assert seen == emails[:500] + emails[501:] + ["late@example.com"]


async def test_communic8_adds_to_a_large_group_and_direct_edits_of_its_leads() -> None:
    sandbox = Communic8Sandbox()
    emails = [f"p{i:05d}@example.com" for i in range(20_000)]
    for e in emails:
        sandbox.add_recipient(e)
    gid = sandbox.add_group("G", emails[:10_000])
    members = f"{C8}/recipientGroup/{gid}/recipients"
    async with client(sandbox, C8_AUTH) as http:
        for start in range(10_000, 20_000, 1_000):
            answer = await http.post(members, json={"recipientEmails": emails[start - 500 : start + 1_000]})
            assert answer.json()["data"]["successCount"] == 1_000  # the first 500 were in already
        group = sandbox.groups[gid]
        assert group["leadsTotal"] == len(group["leads"]) == 20_000 and group["__v"] == 10
        assert sandbox.group_emails(gid) == set(emails)
        group["leads"] = group["leads"][:5]  # edited behind the sandbox's back: its index follows
        await http.post(members, json={"recipientEmails": emails[:6]})
        assert sandbox.group_emails(gid) == set(emails[:6])
        await http.request("DELETE", members, json={"recipientEmails": emails[:2]})
        assert sandbox.group_emails(gid) == set(emails[2:6])
        await http.post(members, json={"recipientEmails": emails[:2]})
        assert sandbox.groups[gid]["leads"][-2:] == [sandbox._by_email[e] for e in emails[:2]]


async def cr_active(http: httpx.AsyncClient, gid: int, *, between: Any = None) -> list[str]:
    emails: list[str] = []
    page = 0
    while True:
        params: dict[str, Any] = {"page": page, "pagesize": 100, "type": "active"}
        rows = (await http.get(f"{CR}/groups/{gid}/receivers", params=params)).json()
        emails += [r["email"] for r in rows]
        if len(rows) < 100:
            return emails
        page += 1
        if between is not None:
            await between(page)


async def test_cleverreach_receiver_pages_see_changes_made_between_them() -> None:
    sandbox = CleverReachSandbox(tokens=["static-token"])
    emails = [f"p{i:05d}@example.com" for i in range(1_000)]
    gid = sandbox.add_group("G", emails)
    async with client(sandbox, CR_AUTH) as http:
        assert await cr_active(http, gid) == emails

        async def change(page: int) -> None:
            if page == 5:  # an upsert switching the first receiver off, between two pages of one read
                upsert = f"{CR}/groups/{gid}/receivers/upsertplus"
                await http.post(upsert, json=[{"email": emails[0], "activated": 0}])

        seen = await cr_active(http, gid, between=change)
        assert seen == emails[:500] + emails[501:]
        sandbox.unsubscribe(gid, emails[1])  # a helper, as a test changes the world
        assert await cr_active(http, gid) == emails[2:]
        sandbox.groups[gid].receivers.clear()  # edited behind the sandbox's back
        assert await cr_active(http, gid) == []
