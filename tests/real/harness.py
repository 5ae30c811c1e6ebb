"""The shared contract suite's view of a REAL Bitcaster server (3.1.2, `tools/real-bitcaster`), and the tools the
real-server tests share.

The server is described by the environment `real-bitcaster start` exports: `REAL_BITCASTER_URL`, `_TOKEN`,
`_ORG`, `_PROJECT`, `_ADDRESSES` (the people who can join lists: the harness's `people`), `_UNKNOWN` (an
address Bitcaster has no record of: the bad contact) and `_THROTTLE_REDIS` (the throttle's Redis: a FLUSHDB
there resets the key's 30-requests-per-60-s budget, done before every test with a few lines of RESP over a
socket, so no Redis client is needed).

Groups are seeded through the API (`POST d/`, then `add/`), and read back through it (`GET d/{pk}/m/`) with a
client of the harness's own, never the connector under test. The database outlives a test run, so every
group name carries a tag unique to the test (`group_name`). What the suite asks of the server object
(`Server`: the requests the connector sent, faults to inject) is kept client-side by `RealServer`, a transport
that records each request the connector sends and can answer one with an injected fault instead of sending it
(or send it and lose the answer), as the sandboxes do server-side.

The connector runs with its default pacing except the window (`throttle_requests: null`): a budget of 30 is
plenty for any contract test, and an injected 429 would otherwise be waited out for a whole minute. Window
pacing against the real throttle has its own test (tests/real/test_bitcaster_real.py).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from connectors.base import Contact
from connectors.bitcaster import BitcasterSettings
from sandboxes._core import Fault, Recorded
from tests.contract.harness import Harness

ENV = {
    "url": "REAL_BITCASTER_URL",
    "token": "REAL_BITCASTER_TOKEN",
    "org": "REAL_BITCASTER_ORG",
    "project": "REAL_BITCASTER_PROJECT",
    "addresses": "REAL_BITCASTER_ADDRESSES",
    "unknown": "REAL_BITCASTER_UNKNOWN",
    "throttle_redis": "REAL_BITCASTER_THROTTLE_REDIS",
}
REQUIRE = "SYNCD_REQUIRE_REAL_BITCASTER"


@dataclass(frozen=True)
class RealBitcaster:
    url: str  # http://127.0.0.1:PORT/api
    token: str
    org: str
    project: str
    addresses: tuple[str, ...]
    unknown: str
    throttle_redis: str

    def __repr__(self) -> str:  # never the key
        return f"RealBitcaster(url={self.url!r}, org={self.org!r}, project={self.project!r})"

    @property
    def root(self) -> str:
        """The distribution lists' path, relative to `url`."""
        return f"o/{self.org}/p/{self.project}/d/"

    def client(self, token: str | None = None) -> httpx.Client:
        """A plain client of the API (not the connector under test)."""
        return httpx.Client(
            base_url=self.url.rstrip("/") + "/",
            headers={"Authorization": f"Key {token or self.token}", "Accept": "application/json"},
            timeout=30,
        )


def from_environment() -> RealBitcaster | str:
    """The real server the environment describes, or why there is none."""
    values = {field: os.environ.get(name, "").strip() for field, name in ENV.items()}
    missing = [ENV[field] for field, value in values.items() if not value]
    if missing:
        return f"{', '.join(missing)} not set"
    addresses = tuple(a.strip() for a in values.pop("addresses").split(",") if a.strip())
    return RealBitcaster(addresses=addresses, **values)


def flush_throttle(redis_url: str) -> None:
    """FLUSHDB on the throttle's Redis (RESP over a socket): the key's 30-per-60 s budget starts afresh."""
    url = urlsplit(redis_url)
    db = int(url.path.strip("/") or 0)

    def command(sock: socket.socket, *args: str) -> bytes:
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(1024)
            if not chunk:
                raise ConnectionError(f"redis at {url.hostname}:{url.port} closed the connection")
            reply += chunk
        if reply.startswith(b"-"):
            raise RuntimeError(f"redis refused {args[0]}: {reply.decode(errors='replace').strip()}")
        return reply

    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), timeout=5) as sock:
        if url.password:
            command(sock, "AUTH", *([url.username] if url.username else []), url.password)
        if db:
            command(sock, "SELECT", str(db))
        command(sock, "FLUSHDB")


# ------------------------------------------------------------------------------ the server, client-side


class RealServer:
    """A `Server` for the suite: what the connector sent (recorded by its transport) and faults to inject."""

    def __init__(self, env: RealBitcaster) -> None:
        self.env = env
        self.tag = uuid.uuid4().hex[:8]
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.times: list[float] = []  # time.monotonic() at which each recorded request was answered

    @property
    def mutating_count(self) -> int:
        return self.count(mutating=True)

    def count(self, *, method: str | None = None, path: str | None = None, mutating: bool | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path is None or re.search(path, r.path))
            and (mutating is None or r.mutating is mutating)
        )

    def clear_log(self) -> None:
        self.requests.clear()
        self.times.clear()

    def inject(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def transport(self) -> httpx.AsyncBaseTransport:
        return RecordingTransport(self)

    def take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if not fault.matches(method, path):
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
            return fault
        return None

    def record(self, request: httpx.Request, status: int, body: bytes) -> None:
        # The distribution-list API writes on POST only (a create, an add).
        self.requests.append(
            Recorded(
                request.method,
                request.url.path,
                request.url.query.decode(),
                status,
                request.method == "POST",
                body,
                time.time(),
            )
        )
        self.times.append(time.monotonic())


class RecordingTransport(httpx.AsyncBaseTransport):
    """Sends the connector's requests to the real server over HTTP, recording each; an injected fault answers
    instead (status), drops the request unsent (drop), or sends it and loses the answer (lost)."""

    def __init__(self, server: RealServer) -> None:
        self.server = server
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        fault = self.server.take_fault(request.method, request.url.path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.drop:
                self.server.record(request, 0, body)
                raise httpx.RemoteProtocolError("fault: dropped before it was sent", request=request)
            if fault.lost:
                served = await self.inner.handle_async_request(request)
                await served.aread()
                await served.aclose()
                self.server.record(request, served.status_code, body)
                raise httpx.RemoteProtocolError("fault: the answer was lost", request=request)
            if fault.status:
                headers = dict(fault.headers)
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                payload = fault.body if fault.body is not None else {"error": f"injected fault {fault.status}"}
                self.server.record(request, fault.status, body)
                return httpx.Response(fault.status, json=payload, headers=headers, request=request)
        answer = await self.inner.handle_async_request(request)
        content = await answer.aread()
        await answer.aclose()
        self.server.record(request, answer.status_code, body)
        return httpx.Response(answer.status_code, headers=answer.headers, content=content, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


# ----------------------------------------------------------------------------------------------- harness


class RealBitcasterHarness(Harness):
    type = "bitcaster"
    page_cap = None  # GET d/{pk}/m/ answers every member at once
    name = "bc-real"
    bad_credential = {"token": "not-a-bitcaster-key"}

    def __init__(self, env: RealBitcaster) -> None:
        self.env = env

    def credentials(self) -> dict[str, Any]:
        return {"token": self.env.token, "organization": self.env.org, "project": self.env.project}

    def settings(self, **overrides: Any) -> BitcasterSettings:
        values: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "base_url": self.env.url,
            **self.credentials(),
            "throttle_requests": None,  # see the module docstring; FLUSHDB gives every test a fresh budget
            "retry": {"backoff_base": 0},
            **overrides,
        }
        return BitcasterSettings.model_validate(values)

    def sandbox(self) -> RealServer:
        return RealServer(self.env)

    def transport(self, sandbox: Any) -> httpx.AsyncBaseTransport:
        assert isinstance(sandbox, RealServer)
        return sandbox.transport()

    def people(self, n: int, prefix: str = "member", domain: str = "example.com") -> list[str]:
        return list(self.env.addresses[:n])  # what the server has, spelled as it has them

    def group_name(self, sandbox: Any, name: str) -> str:
        assert isinstance(sandbox, RealServer)
        return f"{name} {sandbox.tag}"

    def seed_group(self, sandbox: Any, name: str, emails: Sequence[str] = ()) -> str:
        with self.env.client() as client:
            created = client.post(self.env.root, json={"name": name})
            assert created.status_code == 201, f"POST d/: HTTP {created.status_code}: {created.text[:200]}"
            gid = str(created.json()["id"])
            if emails:
                added = client.post(f"{self.env.root}{gid}/add/", json=list(emails))
                assert added.status_code == 200, f"add/: HTTP {added.status_code}: {added.text[:200]}"
        return gid

    def seed_people(self, sandbox: Any, emails: Sequence[str]) -> None:
        unknown = set(emails) - set(self.env.addresses)
        assert not unknown, f"the real server knows only {len(self.env.addresses)} people (harness.people)"

    def members(self, sandbox: Any, group_id: str) -> set[str]:
        with self.env.client() as client:
            answer = client.get(f"{self.env.root}{group_id}/m/")
            assert answer.status_code == 200, f"m/: HTTP {answer.status_code}"
            return {str(m["address"]).lower() for m in answer.json()}

    def bad_contacts(self, sandbox: Any) -> list[Contact]:
        return [self.contact(self.env.unknown)]

    def expire_tokens(self, sandbox: Any) -> bool:
        return False  # a static API key

    def read_requests(self, members: int) -> int | None:
        return 1 if members else 2
