"""The shared request loop: retries, rate-limit waits, pacing, counting, pagination and auth flows.

A tiny sandbox (our own SandboxApp, served over httpx's ASGI transport) stands in for a provider; time is
virtual where pacing is measured, so nothing here sleeps for real or asserts on wall-clock time.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connectors.base import (
    AuthError,
    FatalError,
    NotFound,
    Pacing,
    ProtocolError,
    RateLimited,
    TransientError,
)
from connectors.http import (
    ApiClient,
    BearerAuth,
    ClientCredentialsAuth,
    PageEnd,
    RequestKind,
    RetryPolicy,
    TokenBucket,
    count_requests,
    derive_url,
    error_for_status,
    make_client,
    paginate,
    quota_from_headers,
    retry_after,
)
from sandboxes._core import Fault, Request, Response, SandboxApp

FAST = RetryPolicy(max_retries=3, backoff_base=0, jitter=0)
UNPACED = Pacing(rate=0, burst=1, max_concurrency=8)


class Echo(SandboxApp):
    def __init__(self) -> None:
        super().__init__()
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()
        self.add_route("GET", "/thing", lambda r: {"ok": True})
        self.add_route("POST", "/thing", lambda r: {"ok": True}, mutating=True)
        self.add_route("POST", "/oauth/token", self.token)
        self.add_route("GET", "/private", self.private)

    def token(self, request: Request) -> Response:
        form = request.form()
        if form.get("client_secret") != "s3cret":
            return Response(401, {"error": "invalid_client"})
        self.tokens_issued += 1
        value = f"tok-{self.tokens_issued}"
        self.valid_tokens.add(value)
        return Response(200, {"access_token": value, "token_type": "bearer", "expires_in": 3600})

    def private(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if auth.removeprefix("Bearer ") not in self.valid_tokens:
            return Response(401, {"error": "expired"})
        return Response(200, {"ok": True})


class Hooks:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        self.retries: list[tuple[str, str]] = []

    def on_request(self, provider: str, method: str, status: str, seconds: float) -> None:
        self.requests.append((provider, method, status))

    def on_retry(self, provider: str, reason: str) -> None:
        self.retries.append((provider, reason))


def client_for(
    app: SandboxApp, *, retry: RetryPolicy = FAST, hooks: Hooks | None = None, auth: httpx.Auth | None = None
) -> ApiClient:
    http = make_client("http://127.0.0.1", transport=httpx.ASGITransport(app=app), auth=auth)
    return ApiClient(
        http,
        provider="echo",
        classify=lambda r: error_for_status(r, ""),
        pacing=UNPACED,
        retry=retry,
        hooks=hooks,
    )


# ------------------------------------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried(status: int) -> None:
    app, hooks = Echo(), Hooks()
    app.inject(Fault(status=status, times=2))
    api = client_for(app, hooks=hooks)
    response = await api.request("GET", "/thing")
    assert response.json() == {"ok": True}
    assert app.count() == 3
    assert hooks.retries == [("echo", "5xx"), ("echo", "5xx")]
    assert [s for _, _, s in hooks.requests] == [str(status), str(status), "200"]


async def test_retries_give_up_after_the_budget() -> None:
    app = Echo()
    app.inject(Fault(status=503, times=0))  # every request from now on
    api = client_for(app)
    with pytest.raises(TransientError):
        await api.request("GET", "/thing")
    assert app.count() == 1 + FAST.max_retries


async def test_rate_limit_waits_do_not_spend_the_retry_budget() -> None:
    app, hooks = Echo(), Hooks()
    app.inject(Fault(status=429, retry_after=0, times=FAST.max_retries + 3))
    app.inject(Fault(status=503, times=FAST.max_retries))  # the whole retry budget is still there
    api = client_for(app, hooks=hooks)
    await api.request("GET", "/thing")
    assert app.count() == (FAST.max_retries + 3) + FAST.max_retries + 1
    assert hooks.retries.count(("echo", "rate_limited")) == FAST.max_retries + 3


async def test_endless_rate_limiting_fails_eventually() -> None:
    app = Echo()
    app.inject(Fault(status=429, retry_after=0, times=0))
    api = client_for(app, retry=RetryPolicy(backoff_base=0, jitter=0, max_rate_limit_waits=4))
    with pytest.raises(RateLimited):
        await api.request("GET", "/thing")
    assert app.count() == 5


async def test_retry_after_pauses_the_whole_provider() -> None:
    app = Echo()
    app.inject(Fault(status=429, retry_after=0.05, times=1))
    api = client_for(app)
    await api.request("GET", "/thing")
    # The bucket is paused until the Retry-After passed: a request now may not go earlier than that.
    assert api.bucket._paused_until > 0


async def test_too_long_retry_after_is_a_failure() -> None:
    app = Echo()
    app.inject(Fault(status=429, retry_after=3600, times=1))
    api = client_for(app, retry=RetryPolicy(backoff_base=0, max_retry_after=60))
    with pytest.raises(RateLimited):
        await api.request("GET", "/thing")
    assert app.count() == 1


async def test_non_idempotent_request_is_not_resent_after_a_server_error() -> None:
    app = Echo()
    app.inject(Fault(status=503, times=1))
    api = client_for(app)
    with pytest.raises(TransientError):
        await api.request("POST", "/thing")
    assert app.count() == 1
    # ...but a 429 means it was not processed: that is safe to resend.
    app.inject(Fault(status=429, retry_after=0, times=1))
    await api.request("POST", "/thing")
    assert app.count() == 3


async def test_dropped_connection_is_retried_for_idempotent_requests() -> None:
    app = Echo()
    app.inject(Fault(drop=True, times=1))
    api = client_for(app)
    assert (await api.request("GET", "/thing")).status_code == 200
    assert app.count() == 2


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, FatalError),
        (401, AuthError),
        (403, AuthError),
        (404, NotFound),
        (408, TransientError),
        (429, RateLimited),
        (500, TransientError),
        (503, TransientError),
    ],
)
def test_error_for_status(status: int, error: type[Exception]) -> None:
    response = httpx.Response(status, request=httpx.Request("GET", "http://x/"))
    found = error_for_status(response, "msg")
    assert type(found) is error
    assert error_for_status(httpx.Response(204, request=response.request), "") is None


def test_retry_after_parsing() -> None:
    req = httpx.Request("GET", "http://x/")
    assert retry_after(httpx.Response(429, headers={"Retry-After": "7"}, request=req)) == 7
    assert retry_after(httpx.Response(429, request=req)) is None
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    parsed = retry_after(httpx.Response(429, headers={"Retry-After": when}, request=req))
    assert parsed is not None and 25 <= parsed <= 31
    assert retry_after(httpx.Response(429, headers={"Retry-After": "soon"}, request=req)) is None


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_base=1, backoff_max=5, jitter=0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]
    jittered = RetryPolicy(backoff_base=1, jitter=0.5)
    assert all(0.5 <= jittered.backoff(1) <= 1 for _ in range(50))


# ------------------------------------------------------------------------------------------- counting


async def test_requests_counted_per_pair_and_kind() -> None:
    app = Echo()
    api = client_for(app)

    async def pair(reads: int, writes: int) -> dict[str, int]:
        with count_requests() as tally:
            for _ in range(reads):
                await api.request("GET", "/thing")
            for _ in range(writes):
                await api.request("POST", "/thing")
            await api.request("POST", "/thing", kind=RequestKind.READ)  # a read sent as POST
        return tally.as_dict()

    a, b = await asyncio.gather(pair(2, 1), pair(0, 3))
    assert a == {"read": 3, "write": 1}
    assert b == {"read": 1, "write": 3}


# -------------------------------------------------------------------------------------------- pacing


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@pytest.mark.parametrize(("rate", "burst", "n"), [(5.0, 1, 11), (300 / 60, 5, 25), (0.5, 1, 4)])
async def test_token_bucket_holds_the_rate(rate: float, burst: int, n: int) -> None:
    vt = VirtualTime()
    bucket = TokenBucket(rate, burst, clock=vt.clock, sleep=vt.sleep)
    await asyncio.gather(*(bucket.acquire() for _ in range(n)))
    assert vt.now == pytest.approx((n - burst) / rate)


async def test_quota_headers_slow_down_and_wait_at_zero() -> None:
    vt = VirtualTime()
    bucket = TokenBucket(100, 1, clock=vt.clock, sleep=vt.sleep)
    bucket.observe_quota(remaining=0, reset_in=30)
    await bucket.acquire()
    assert vt.now == pytest.approx(30, abs=0.011)  # after the pause the bucket starts empty
    start = vt.now
    bucket.observe_quota(remaining=10, reset_in=20)  # 10 left for 20 s: 0.5 requests/s
    for _ in range(5):
        await bucket.acquire()
    assert vt.now - start == pytest.approx(5 / 0.5)


def test_quota_header_parsing() -> None:
    req = httpx.Request("GET", "http://x/")
    r = httpx.Response(200, headers={"X-RateLimit-Remaining": "12", "X-RateLimit-Reset": "40"}, request=req)
    q = quota_from_headers(r)
    assert q is not None and (q.remaining, q.reset_in) == (12, 40)
    assert quota_from_headers(httpx.Response(200, request=req)) is None


# ---------------------------------------------------------------------------------------- pagination


async def test_paginate_follows_cursors() -> None:
    pages = {0: ([1, 2], 2), 2: ([3, 4], 4), 4: ([5], None)}

    async def fetch(cursor: int) -> tuple[list[int], int | None]:
        return pages[cursor]

    assert await paginate(fetch, 0) == [1, 2, 3, 4, 5]


async def test_paginate_refuses_a_loop() -> None:
    async def fetch(cursor: str) -> tuple[list[int], str | None]:
        return [1], "same"

    with pytest.raises(ProtocolError, match="loop"):
        await paginate(fetch, "first")


@pytest.mark.parametrize(
    ("asked", "default", "expected", "pages", "totals", "more"),
    [
        # the total decides when there is one
        (100, 20, None, [100, 100, 50], [250, 250, 250], [True, True, False]),
        (100, 20, None, [100], [100], [False]),
        # no total: a full first page means the size is honoured; a short page ends
        (100, 20, None, [100, 99], [None, None], [True, False]),
        (100, 20, None, [0], [None], [False]),
        # a short first page ends the listing, unless it may be a server's cap
        (100, 20, None, [37], [None], [False]),
        (100, 20, None, [20, 20, 3], [None, None, None], [True, True, False]),  # the documented default
        (1000, 20, None, [50, 0], [None, None], [True, False]),  # a round number servers cap at
        (1000, None, 130, [40, 40, 40, 10], [None] * 4, [True, True, True, False]),  # a known member count
    ],
)
def test_page_end(
    asked: int, default: int | None, expected: int | None, pages: list[int], totals: list[int | None], more: list[bool]
) -> None:
    end = PageEnd(asked, default=default, expected=expected)
    assert [end.more(got, total) for got, total in zip(pages, totals, strict=True)] == more


# --------------------------------------------------------------------------------------------- auth


async def test_client_credentials_token_is_cached_and_refreshed_once_on_401() -> None:
    app = Echo()
    auth = ClientCredentialsAuth("http://127.0.0.1/oauth/token", "id", SecretStr("s3cret"))
    api = client_for(app, auth=auth)
    with count_requests() as tally:
        await asyncio.gather(*(api.request("GET", "/private") for _ in range(5)))
        assert app.tokens_issued == 1  # concurrent requests shared one token request
        app.valid_tokens.clear()  # revoked before it expired
        await api.request("GET", "/private")
    assert app.tokens_issued == 2
    assert tally.read == 6  # token requests are not the pair's requests


async def test_client_credentials_bad_secret_is_an_auth_error() -> None:
    app = Echo()
    auth = ClientCredentialsAuth("http://127.0.0.1/oauth/token", "id", SecretStr("wrong"))
    api = client_for(app, auth=auth)
    with pytest.raises(AuthError, match="client_id / client_secret"):
        await api.request("GET", "/private")


def test_auth_reprs_hide_secrets() -> None:
    assert "hunter2" not in repr(BearerAuth(SecretStr("hunter2")))
    assert "hunter2" not in repr(ClientCredentialsAuth("https://x/t", "id", SecretStr("hunter2")))


@pytest.mark.parametrize(
    ("base", "suffix", "path", "expected"),
    [
        (
            "https://rest.cleverreach.com/v3",
            "/v3",
            "/oauth/token.php",
            "https://rest.cleverreach.com/oauth/token.php",
        ),
        (
            "http://127.0.0.1:9/cleverreach/v3/",
            "/v3",
            "/oauth/token.php",
            "http://127.0.0.1:9/cleverreach/oauth/token.php",
        ),
        (
            "https://api.giftronaut.com/api/v1",
            "/api/v1",
            "/oauth2/token",
            "https://api.giftronaut.com/oauth2/token",
        ),
    ],
)
def test_derive_url(base: str, suffix: str, path: str, expected: str) -> None:
    assert derive_url(base, suffix, path) == expected


def _unused(*_: Any) -> None:
    return None
