"""What the issue asks to check against a real Bitcaster 3.1.2 server, beyond the contract suite: list creation
and the release probe, case-sensitive addresses, lists that no longer exist, what 401/403 say, pacing to the
throttle's sliding window, and that the sandbox answers the same requests the same way (status, headers that
matter, bodies).

Every test starts with a fresh throttle budget (tests/real/conftest.py). `test_window_pacing_against_the_real_
throttle` waits for the real window: it takes about a minute.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from connectors.base import AuthError, Contact, NotFound, RemoteGroup
from connectors.bitcaster import UNKNOWN_SPELLING, BitcasterConnector
from sandboxes.bitcaster import BitcasterSandbox
from tests.real.harness import RealBitcaster, RealBitcasterHarness, RealServer, flush_throttle

INVALID = {"error": "[ErrorDetail(string='Invalid addresses', code='invalid')]"}


def unique(name: str) -> str:
    return f"{name} {uuid.uuid4().hex[:8]}"


def connector(harness: RealBitcasterHarness, server: RealServer, **overrides: Any) -> BitcasterConnector:
    c = harness.connector(server, **overrides)
    assert isinstance(c, BitcasterConnector)
    return c


def trail(server: RealServer, env: RealBitcaster) -> list[tuple[str, str, int]]:
    root = f"/api/{env.root}"
    return [(r.method, r.path.split(root, 1)[-1], r.status) for r in server.requests]


async def test_lists_are_created_and_a_name_taken_in_another_case_is_that_list(
    harness: RealBitcasterHarness, real: RealBitcaster
) -> None:
    server = harness.sandbox()
    name = unique("Real Create")
    async with connector(harness, server) as c:
        assert await c.find_group(name=name) is None
        assert await c.can_create_groups() is True  # from the Allow header of the GET d/ just read
        created = await c.create_group(name)
        async with connector(harness, server) as other:
            again = await other.create_group(name.upper())
    assert created.name == name and again == created
    assert trail(server, real) == [("GET", "", 200), ("POST", "", 201), ("POST", "", 400), ("GET", "", 200)]
    async with connector(harness, server) as fresh:
        server.clear_log()
        assert await fresh.can_create_groups() is True
    assert trail(server, real) == [("OPTIONS", "", 200)]  # no listing read yet: one OPTIONS, nothing written


async def test_addresses_match_case_sensitively_and_a_source_spelling_goes_in_lower_cased(
    harness: RealBitcasterHarness, real: RealBitcaster
) -> None:
    alice, bob = real.addresses[:2]
    assert alice == alice.lower(), "the real server's addresses are lower-case"
    server = harness.sandbox()
    gid = harness.seed_group(server, harness.group_name(server, "Real Case"))
    with real.client() as client:
        refused = client.post(f"{real.root}{gid}/add/", json=[alice.upper()])
    assert (refused.status_code, refused.json()) == (400, INVALID)
    ghost = real.unknown[0].upper() + real.unknown[1:]
    async with connector(harness, server) as c:
        group = RemoteGroup(gid, "Real Case")
        result = await c.add_members(group, [Contact(alice.title()), Contact(bob), Contact(ghost)])
        members = await c.read_members(group)
    assert sorted(result.done) == sorted([alice, bob])
    assert [(r.email, r.reason) for r in result.rejected] == [(ghost, UNKNOWN_SPELLING)]
    assert sorted(m.key for m in members) == sorted([alice, bob])
    assert harness.members(server, gid) == {alice, bob}
    # [Alice, bob, Ghost] refused; halved: [Alice] refused, [bob, Ghost] refused, [bob] in ([Ghost] then refused
    # without a request); the two respelled in lower case: [alice, ghost] refused, [alice] in; then one read
    assert [s for _, _, s in trail(server, real)] == [400, 400, 400, 200, 400, 200, 200]


async def test_a_list_that_no_longer_exists(harness: RealBitcasterHarness, real: RealBitcaster) -> None:
    with real.client() as client:
        lists = client.get(real.root).json()
        gone = str(max([0, *(int(g["id"]) for g in lists)]) + 1000)
        detail = client.get(f"{real.root}{gone}/")
        add = client.post(f"{real.root}{gone}/add/", json=[real.addresses[0]])
        members = client.get(f"{real.root}{gone}/m/")
    for answer in (detail, add):
        assert answer.status_code == 500 and answer.headers["Content-Type"].startswith("text/html")
    assert (members.status_code, members.json()) == (200, [])
    server = harness.sandbox()
    async with connector(harness, server) as c:
        with pytest.raises(NotFound, match=f"Bitcaster list {gone} .*no longer exists"):
            await c.read_members(RemoteGroup(gone, "Gone"))
        with pytest.raises(NotFound, match=f"Bitcaster list {gone} no longer exists"):
            await c.add_members(RemoteGroup(gone, "Gone"), [Contact(real.addresses[0])])
        assert await c.find_group(group_id=gone) is None  # the listing this pass read knows: no request
    assert trail(server, real) == [
        ("GET", f"{gone}/m/", 200),  # [] ...
        ("GET", "", 200),  # ... and d/ does not list it
        ("POST", f"{gone}/add/", 500),  # checked against d/ before any retry
        ("GET", "", 200),
    ]
    async with connector(harness, server) as fresh:
        server.clear_log()
        assert await fresh.find_group(group_id=gone) is None
    assert trail(server, real) == [("GET", f"{gone}/", 500), ("GET", "", 200)]


@pytest.mark.parametrize(
    ("overrides", "status", "words"),
    [
        ({"token": "not-a-bitcaster-key"}, 401, ("Invalid token.", "check the token")),
        ({"organization": "no-such-org"}, 403, ("Invalid organization for ", "set the provider's `organization`")),
        ({"project": "no-such-project"}, 403, ("Invalid project for ", "set the provider's `project`")),
    ],
)
async def test_auth_errors_say_what_to_fix(
    harness: RealBitcasterHarness, real: RealBitcaster, overrides: dict[str, str], status: int, words: tuple[str, ...]
) -> None:
    server = harness.sandbox()
    async with connector(harness, server, **overrides) as c:
        with pytest.raises(AuthError) as caught:
            await c.find_group(name="anything")
    assert caught.value.status == status and real.token not in caught.value.message
    for word in words:
        assert word in caught.value.message
    assert server.count() == 1  # never retried


async def test_window_pacing_against_the_real_throttle(harness: RealBitcasterHarness, real: RealBitcaster) -> None:
    """Another client spends 25 of the key's 30; the connector then reads 35 times at its default pacing. Its 6th
    request is throttled (`Retry-After: 2`); it waits once, until the window frees (about 60 s), and the other
    29 go. Takes about a minute."""
    server = harness.sandbox()
    gid = harness.seed_group(server, harness.group_name(server, "Real Pacing"), real.addresses[:1])
    flush_throttle(real.throttle_redis)
    with real.client() as other:
        assert {other.head(real.root).status_code for _ in range(25)} == {200}
    async with connector(harness, server, throttle_requests=30) as c:  # the default pacing, window included
        started = time.monotonic()
        for _ in range(35):
            assert len(await c.read_members(RemoteGroup(gid, "Real Pacing"))) == 1
    elapsed = time.monotonic() - started
    statuses = [r.status for r in server.requests]
    print(f"real bitcaster: 35 reads after another client's 25: {elapsed:.1f} s, statuses {statuses}")
    assert statuses.count(200) == 35 and 1 <= statuses.count(429) <= 2  # 2: someone else shares the key
    assert statuses[:6] == [200] * 5 + [429]
    assert 55 <= elapsed <= 70
    sent = [t for t, r in zip(server.times, server.requests, strict=True) if r.status == 200]
    assert max(sum(1 for u in sent if t <= u < t + 60) for t in sent) <= 30


# ------------------------------------------------------------------------- the sandbox answers the same way


def _shape(answer: httpx.Response, list_id: str) -> tuple[Any, ...]:
    """What must match: status, the headers syncd reads, and the body with ids and hosts taken out."""
    headers = {k: answer.headers.get(k) for k in ("Allow", "WWW-Authenticate", "Retry-After")}
    ctype = answer.headers.get("Content-Type", "").split(";")[0]
    location = answer.headers.get("Location")
    if location is not None:
        location = httpx.URL(location).path
    try:
        body: Any = answer.json()
    except ValueError:
        body = "<html>" if answer.text.lstrip().startswith("<") else answer.text
    text = str(body).replace(f"/{list_id}/", "/<id>/")
    return answer.status_code, headers, ctype, location, _scrub(text, list_id)


def _scrub(text: str, list_id: str) -> str:
    import re

    text = re.sub(r"https?://[^/'\"]+", "<host>", text)
    text = re.sub(r"'id': \d+, 'address'", "'id': <member>, 'address'", text)
    text = re.sub(rf"'id': {list_id}\b", "'id': <id>", text)
    text = re.sub(r"for [^'\"]+", "for <key name>", text)  # "Invalid organization for <key name>"
    return re.sub(r"'name': '([^']*) [0-9a-f]{8}'", r"'name': '\1 <tag>'", text)


async def _conversation(client: httpx.AsyncClient, root: str, known: str, name: str) -> list[tuple[Any, ...]]:
    created = await client.post(root, json={"name": name})
    gid = str(created.json()["id"])
    list_path, gone = f"{root}{gid}/", f"{root}999999/"
    answers = [
        created,
        await client.post(root, json={"name": name.upper()}),
        await client.post(root, json={}),
        await client.post(root, json={"name": "   "}),
        await client.get(list_path),
        await client.post(list_path + "add/", json=[known.upper()]),
        await client.post(list_path + "add/", json=[known, known]),
        await client.post(list_path + "add/", json=[]),
        await client.post(list_path + "add/", json=[known]),
        await client.post(list_path + "add/", json=[known]),
        await client.post(list_path + "add/", content=b"nope", headers={"Content-Type": "application/json"}),
        await client.get(list_path + "m/"),
        await client.get(gone),
        await client.post(gone + "add/", json=[known]),
        await client.get(gone + "m/"),
        await client.delete(list_path),
        await client.options(root),
        await client.options(list_path + "m/"),
        await client.head(root),
        await client.get(root[:-1]),
        await client.get(root, headers={"Authorization": "Key not-a-key"}),
        await client.get(root, headers={"Authorization": "Token not-a-key"}),
        await client.get("o/x" + root.removeprefix("o/")),  # another organization
        await client.get(root.replace("/p/", "/p/x")),  # another project
    ]
    return [_shape(a, gid) for a in answers]


async def test_the_sandbox_answers_like_the_real_server(real: RealBitcaster) -> None:
    name = unique("Fidelity")
    known = real.addresses[0]
    async with httpx.AsyncClient(
        base_url=real.url.rstrip("/") + "/", headers={"Authorization": f"Key {real.token}"}, timeout=30
    ) as client:
        observed = await _conversation(client, real.root, known, name)
    sandbox = BitcasterSandbox(keys={real.token: (real.org, real.project)})
    sandbox.add_address(known, org=real.org, project=real.project)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox),
        base_url="http://127.0.0.1/api/",
        headers={"Authorization": f"Key {real.token}"},
    ) as client:
        served = await _conversation(client, real.root, known, name)
    assert [o[0] for o in observed] == [
        *(201, 400, 400, 400, 200),  # create, taken in another case, no name, blank name, the list
        *(400, 400, 200, 200, 200, 400, 200),  # add/: upper case, twice, [], added, again, not JSON; members
        *(500, 500, 200),  # a list that does not exist: d/{pk}/, add/, m/
        *(405, 200, 200, 200, 301),  # DELETE, OPTIONS d/ and m/, HEAD, no trailing slash
        *(401, 401, 403, 403),  # an unknown key, the Token scheme, another organization, another project
    ]
    for i, (want, got) in enumerate(zip(observed, served, strict=True)):
        assert got == want, f"answer {i}: the sandbox's differs from the real server's"


async def test_the_throttle_answers_like_the_sandbox(real: RealBitcaster) -> None:
    flush_throttle(real.throttle_redis)
    with real.client() as client:
        answers = [client.head(real.root) for _ in range(30)]
        over = client.get(real.root)
        denied = client.get(real.root.replace("/p/", "/p/x"))  # a 403 is not throttled (nor counted)
    assert {a.status_code for a in answers} == {200} and denied.status_code == 403
    sandbox = BitcasterSandbox(keys={real.token: (real.org, real.project)})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox),
        base_url="http://127.0.0.1/api/",
        headers={"Authorization": f"Key {real.token}"},
    ) as client:
        for _ in range(30):
            await client.head(real.root)
        fake = await client.get(real.root)
    for answer in (over, fake):
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "2"
        assert answer.json() == {"detail": "Request was throttled. Expected available in 2 seconds."}
        assert not [h for h in answer.headers if h.lower().startswith(("x-ratelimit", "ratelimit"))]
    flush_throttle(real.throttle_redis)
