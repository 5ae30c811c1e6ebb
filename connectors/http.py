"""The one request loop every connector goes through.

Pacing (a token bucket, an optional sliding window and a concurrency cap per provider, tuned by rate-limit
headers), retries (exponential backoff with jitter on 429/5xx/timeouts, honouring Retry-After, or for a
provider paced by a sliding window the time its window really needs; waiting out a rate limit does not spend
the retry budget), pagination with a loop guard, per-request metric hooks and per-pair request
counting all live here, so a provider module is mostly request builders and response parsers.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import email.utils
import enum
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

import httpx
import ijson  # type: ignore[import-untyped]
from pydantic import SecretStr

from connectors.base import (
    AuthError,
    BatchTooLarge,
    ConnectorError,
    FatalError,
    NotFound,
    Pacing,
    ProtocolError,
    RateLimited,
    RetriableError,
    TransientError,
)

log = logging.getLogger("syncd.http")

T = TypeVar("T")
C = TypeVar("C")

# ----------------------------------------------------------------------------------- request counting


class RequestKind(enum.StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass
class RequestTally:
    """HTTP requests sent on behalf of one (group, provider) pair. Token requests are not counted."""

    read: int = 0
    write: int = 0

    def add(self, kind: RequestKind) -> None:
        if kind is RequestKind.READ:
            self.read += 1
        else:
            self.write += 1

    def as_dict(self) -> dict[str, int]:
        return {"read": self.read, "write": self.write}


# The tally of the pair whose task is running. asyncio tasks copy the context, so every request a pair's
# task makes (including a shared directory read it happens to trigger first) lands on that pair's tally.
_current_tally: ContextVar[RequestTally | None] = ContextVar("syncd_request_tally", default=None)


@contextlib.contextmanager
def count_requests(tally: RequestTally | None = None) -> Iterator[RequestTally]:
    tally = tally if tally is not None else RequestTally()
    token = _current_tally.set(tally)
    try:
        yield tally
    finally:
        _current_tally.reset(token)


class RequestHooks(Protocol):
    """Where syncd's metrics plug in; connectors know nothing about Prometheus."""

    def on_request(self, provider: str, method: str, status: str, seconds: float) -> None: ...

    def on_retry(self, provider: str, reason: str) -> None: ...


class NoHooks:
    def on_request(self, provider: str, method: str, status: str, seconds: float) -> None:
        return None

    def on_retry(self, provider: str, reason: str) -> None:
        return None


# -------------------------------------------------------------------------------------------- pacing


class TokenBucket:
    """Sustained `rate` requests/s with bursts of `burst` (rate 0: no limit), plus, with `window=(n, seconds)`,
    at most n requests in any `seconds`-long span (a sliding window, as servers such as Bitcaster count them);
    `pause_until` stops everyone (a 429, a quota at 0)."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        window: tuple[int, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self._sleep = sleep
        self.capacity = max(1, burst)
        self._clock = clock
        self._tokens = float(self.capacity)
        self._updated = clock()
        self._paused_until = 0.0
        self._quota_rate: float | None = None  # a slower rate the server's quota headers ask for
        self._quota_until = 0.0
        self._lock = asyncio.Lock()
        if window is not None and (window[0] < 1 or window[1] <= 0):
            raise ValueError(f"a pacing window needs at least 1 request in a positive span, got {window}")
        self.window = window
        # When each request in the window went (sorted): its send time while in flight, then the time its answer
        # came (`settle`), the latest moment the server can have counted it.
        self._sent: list[float] = []

    @property
    def effective_rate(self) -> float:
        if self._quota_rate is not None and self._clock() < self._quota_until:
            return min(self.rate, self._quota_rate) if self.rate > 0 else self._quota_rate
        return self.rate

    def _refill(self, now: float) -> None:
        rate = self.effective_rate
        if rate > 0:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * rate)
        self._updated = now

    async def acquire(self) -> float:
        """Wait until a request may go; returns the time it went (its entry in the window, see `forget`)."""
        # The lock makes waiters queue in order: nobody starves, and the rate holds across tasks.
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                wait = self._window_wait(now)
                rate = self.effective_rate
                if rate > 0:
                    self._refill(now)
                    if self._tokens < 1 - 1e-9:  # tolerance: float steps must not strand a waiter
                        wait = max(wait, (1 - self._tokens) / rate)
                if wait > 0:
                    await self._sleep(wait)
                    continue
                if rate > 0:
                    self._tokens = max(0.0, self._tokens - 1)
                if self.window is not None:
                    bisect.insort(self._sent, now)
                return now

    def _window_wait(self, now: float) -> float:
        """Seconds until the window has room for one more request (0: it has room now)."""
        if self.window is None:
            return 0.0
        limit, span = self.window
        self._expire(now - span)
        if len(self._sent) < limit:
            return 0.0
        return self._sent[-limit] + span - now

    def _expire(self, before: float) -> None:
        drop = bisect.bisect_right(self._sent, before)
        if drop:
            del self._sent[:drop]

    def settle(self, sent_at: float) -> float:
        """The answer to the request that went at `sent_at` has come: the server counted it at some moment in
        between, so it stays in the window from now on (a server stamping requests on arrival then never sees
        more than the window's worth, whatever the network's delays). Returns its new time in the window."""
        if self.window is None:
            return sent_at
        now = self._clock()
        self.forget(sent_at)
        bisect.insort(self._sent, now)
        return now

    def forget(self, sent_at: float) -> None:
        """Take a request out of the window: the server did not count it (it was throttled itself)."""
        i = bisect.bisect_left(self._sent, sent_at)
        if i < len(self._sent) and self._sent[i] == sent_at:
            del self._sent[i]

    def window_frees_in(self) -> float | None:
        """With a window: seconds until its oldest request leaves it, i.e. until the server's own sliding window
        frees a slot of ours (a whole span when nothing of ours is in it: the server's count is then someone
        else's, which may need up to that long). None without a window."""
        if self.window is None:
            return None
        now = self._clock()
        span = self.window[1]
        self._expire(now - span)
        return self._sent[0] + span - now if self._sent else span

    def pause_until(self, when: float) -> None:
        if when > self._paused_until:
            self._paused_until = when
            if self.window is None:
                # Restart at the sustained rate, not in a burst. With a window, the pause lasts until the window
                # frees, and a burst is then exactly what the server allows: the bucket keeps its tokens.
                self._tokens = 0.0
                self._updated = max(self._updated, when)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._clock() + seconds)

    def observe_quota(self, remaining: int, reset_in: float) -> None:
        """Spread what is left of the server's window over the time until it resets; wait at zero."""
        now = self._clock()
        if remaining <= 0:
            self.pause_until(now + max(reset_in, 0.0))
            return
        if reset_in > 0:
            self._quota_rate = remaining / reset_in
            self._quota_until = now + reset_in


class Limiter(Protocol):
    """What paces one provider's requests: `TokenBucket` in one process; syncd's `SharedBucket` when several
    replicas share one budget through their state DB. `acquire` returns the request's time in the window."""

    window: tuple[int, float] | None

    async def acquire(self) -> float: ...

    def settle(self, sent_at: float) -> float: ...

    def forget(self, sent_at: float) -> None: ...

    def window_frees_in(self) -> float | None: ...

    def pause_for(self, seconds: float) -> None: ...

    def observe_quota(self, remaining: int, reset_in: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Quota:
    remaining: int
    reset_in: float  # seconds


def quota_from_headers(response: httpx.Response, prefix: str = "X-RateLimit-") -> Quota | None:
    """Read `<prefix>Remaining` / `<prefix>Reset` (seconds until the window resets), as Stannp sends them."""
    remaining = response.headers.get(prefix + "Remaining")
    reset = response.headers.get(prefix + "Reset")
    if remaining is None or reset is None:
        return None
    try:
        return Quota(int(float(remaining)), float(reset))
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------- retries


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 5  # for 5xx / timeouts / dropped connections
    backoff_base: float = 0.5  # seconds; doubled every attempt
    backoff_max: float = 30.0
    jitter: float = 0.5  # fraction of the delay drawn at random
    max_rate_limit_waits: int = 30  # 429s do not spend retries, but they are not endless either
    max_retry_after: float = 600.0  # a server asking us to wait longer than this is a failure

    def backoff(self, attempt: int) -> float:
        delay: float = min(self.backoff_max, self.backoff_base * (2 ** max(0, attempt - 1)))
        if self.jitter and delay:
            delay *= 1 - self.jitter * random.random()
        return delay

    def wait(self, attempt: int, asked: float | None) -> float:
        """Seconds before retry number `attempt`: what the server `asked` (Retry-After) or the backoff,
        whichever is longer."""
        return max(asked or 0.0, self.backoff(attempt))


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header: either delta-seconds or an HTTP date."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


def error_for_status(response: httpx.Response, message: str, *, status: int | None = None) -> ConnectorError | None:
    """Map an HTTP status to the error class that says what to do next. Providers add their own cases
    (HTTP 200 with `success:false`, batch rejects) before falling back to this; `status` overrides the
    response's own where an API puts the code that counts in its error body (CleverReach's `error.code`)."""
    status = response.status_code if status is None else status
    if status < 400:
        return None
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if status == 429:
        return RateLimited(text, status=status, delay=retry_after(response))
    if status in (408, 425) or status >= 500:
        return TransientError(text, status=status, delay=retry_after(response))
    if status in (401, 403):
        return AuthError(text, status=status)
    if status == 404:
        return NotFound(text, status=status)
    if status == 413:
        return BatchTooLarge(text, status=status)
    return FatalError(text, status=status)


_P = ParamSpec("_P")
_T = TypeVar("_T")


async def off_loop(call: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Await a `RecipientCache` call in a worker thread. syncd's cache is its state database: the event loop
    never waits on it (a million-entry directory written back would stall it for seconds)."""
    return await asyncio.to_thread(call, *args, **kwargs)


LET_GO_STEP = 65_536  # values freed at a time by `let_go`: a few milliseconds of the interpreter's time


async def let_go(*bulks: list[Any]) -> None:
    """Empty lists of many values (a group's million members), a slice at a time, in a worker thread: the values
    that only these lists hold are freed a slice at a time. Dropped at once, a million members are freed in one C
    call that holds the interpreter, and the event loop waiting for it, for a tenth of a second. For lists the
    caller owns; values that something else still refers to stay as they are."""
    if all(len(bulk) <= LET_GO_STEP for bulk in bulks):
        for bulk in bulks:
            bulk.clear()
        return

    def empty() -> None:
        for bulk in bulks:
            while bulk:
                del bulk[-LET_GO_STEP:]

    await asyncio.to_thread(empty)


LARGE_BODY = 256 * 1024  # bytes of a JSON answer above which it is parsed in a worker thread, in slices
PARSE_SLICE = 64 * 1024  # bytes a large body is parsed in at a time (the interpreter may switch between slices)


class _Slices:
    """A body handed to the incremental parser a slice at a time. `read` is Python code on purpose: each call
    is a point where the interpreter may switch threads, so a worker thread parsing 28 MB (a Communic8 group's
    million member ids) lets the event loop run every few milliseconds instead of holding it for ~80 ms, as one
    `json.loads` call does (it is one C call)."""

    def __init__(self, content: bytes) -> None:
        self._view = memoryview(content)
        self._at = 0

    def read(self, size: int = PARSE_SLICE) -> bytes:
        start, self._at = self._at, self._at + size
        return bytes(self._view[start : self._at])


def parse_json(content: bytes) -> Any:
    """A JSON body as `json.loads` reads it (a ValueError when it is not JSON). A large body goes through ijson's
    incremental parser (the yajl C backend: as fast as `json.loads`, without the copy decoded to text) in slices;
    anything it does not take (another encoding, NaN) is left to `json.loads`, which decides, and so is a body that
    may hold an escaped surrogate (`\\udXXX`: yajl reads a lone one as "?" where `json.loads` keeps it)."""
    if len(content) > LARGE_BODY and b"\\ud" not in content and b"\\uD" not in content:
        try:
            values = ijson.items(_Slices(content), "", use_float=True, buf_size=PARSE_SLICE)
            body = next(values)
            for _ in values:  # more than one value: not one JSON document
                raise ValueError("not one JSON value")
            return body
        except (ijson.JSONError, ValueError, StopIteration):
            pass
    return json.loads(content)


def body_or_none(response: httpx.Response) -> Any:
    """The JSON body, or None when there is none (error answers: an HTML page, plain text, nothing)."""
    try:
        return parse_json(response.content)
    except ValueError:
        return None


def json_body(response: httpx.Response) -> Any:
    """The JSON body, or a ProtocolError that names the request (never its headers)."""
    try:
        return parse_json(response.content)
    except ValueError as exc:
        raise ProtocolError(
            f"{response.request.method} {response.request.url.path}: expected JSON, got "
            f"{response.headers.get('content-type', 'no content type')} (HTTP {response.status_code})",
            status=response.status_code,
        ) from exc


# ------------------------------------------------------------------------------------------- client

Classifier = Callable[[httpx.Response], ConnectorError | None]


class ApiClient:
    """An `httpx.AsyncClient` plus pacing, retries, metrics and counting for one provider account."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        provider: str,
        classify: Classifier,
        pacing: Pacing,
        retry: RetryPolicy | None = None,
        hooks: RequestHooks | None = None,
        quota: Callable[[httpx.Response], Quota | None] | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.client = client
        self.provider = provider
        self.classify = classify
        self.retry = retry or RetryPolicy()
        self.hooks: RequestHooks = hooks or NoHooks()
        self.quota = quota
        self.bucket: Limiter = limiter or TokenBucket(pacing.rate, pacing.burst, window=pacing.window)
        self._slots = asyncio.Semaphore(max(1, pacing.max_concurrency))

    async def request(
        self,
        method: str,
        url: str,
        *,
        kind: RequestKind | None = None,
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one logical request: paced, retried while that can help, counted, classified.

        `kind` says whether it reads or writes (default: by method; a POST that only reads passes READ).
        `idempotent` says whether sending it twice is harmless (default: all but POST and PATCH). A
        non-idempotent request is retried only when it surely did not reach the server (connect error, 429).
        """
        method = method.upper()
        kind = kind or (RequestKind.READ if method in ("GET", "HEAD") else RequestKind.WRITE)
        idempotent = method not in ("POST", "PATCH") if idempotent is None else idempotent
        budget = _Budget()
        while True:
            attempt = await self._send_once(method, url, kwargs)
            self._count(attempt, method, kind)
            if attempt.error is None and attempt.response is not None:
                return attempt.response
            await self._before_retry(attempt, budget, resendable=idempotent or not attempt.reached)

    async def _send_once(self, method: str, url: str, kwargs: dict[str, Any]) -> _Attempt:
        """One send: a concurrency slot, then a token, then the exchange and its classification."""
        # A slot first, then a token: a token taken while waiting for a slot would let queued requests
        # start back to back, above the rate, once slots free up.
        async with self._slots:
            sent_at = await self.bucket.acquire()
            started = time.monotonic()
            attempt = await self._exchange(method, url, kwargs)
            attempt.seconds = time.monotonic() - started
            attempt.sent_at = self.bucket.settle(sent_at)
        return attempt

    async def _exchange(self, method: str, url: str, kwargs: dict[str, Any]) -> _Attempt:
        """Send and classify: the answer and the error it means, or the error the transport raised."""
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            timeout = TransientError(f"{method} {_path(url)}: timed out ({type(exc).__name__})")
            return _Attempt(None, timeout, "timeout", not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout))
        except httpx.TransportError as exc:
            dropped = TransientError(f"{method} {_path(url)}: {type(exc).__name__}")
            return _Attempt(None, dropped, "error", not isinstance(exc, httpx.ConnectError))
        except ConnectorError as exc:  # raised by an auth flow (token endpoint trouble)
            return _Attempt(None, exc, str(exc.status or "error"), True)
        # A classifier may parse the body (and keep the parse): a large one in a worker thread, off the loop.
        large = len(response.content) > LARGE_BODY
        error = await asyncio.to_thread(self.classify, response) if large else self.classify(response)
        error = error or _unfollowed_redirect(method, url, response)
        return _Attempt(response, error, str(response.status_code), True)

    def _count(self, attempt: _Attempt, method: str, kind: RequestKind) -> None:
        """Metrics for every send, the pair's tally for every send the server may have seen, and the quota
        the answer announces."""
        self.hooks.on_request(self.provider, method, attempt.status, attempt.seconds)
        if attempt.reached:
            tally = _current_tally.get()
            if tally is not None:
                tally.add(kind)
        if attempt.response is not None and self.quota is not None:
            q = self.quota(attempt.response)
            if q is not None:
                self.bucket.observe_quota(q.remaining, q.reset_in)

    async def _before_retry(self, attempt: _Attempt, budget: _Budget, *, resendable: bool) -> None:
        """Wait before the request goes again, or raise its error when retrying cannot help or the budget is
        spent. A rate limit pauses the bucket (everyone waits) and spends only the rate-limit budget."""
        error = attempt.error
        assert error is not None
        if isinstance(error, RateLimited):
            self._wait_out_rate_limit(attempt, error, budget)
            return
        if not isinstance(error, RetriableError) or not resendable:
            raise error
        budget.failures += 1
        if budget.failures > self.retry.max_retries:
            raise error
        delay = self.retry.wait(budget.failures, error.delay)
        self.hooks.on_retry(self.provider, _retry_reason(attempt.status))
        log.debug("%s: %s, retry %d in %.1fs", self.provider, error.message, budget.failures, delay)
        if delay:
            await asyncio.sleep(delay)

    def _wait_out_rate_limit(self, attempt: _Attempt, error: RateLimited, budget: _Budget) -> None:
        """Pause the bucket for as long as the rate limit says (Retry-After, else a backoff), or raise when
        the rate-limit budget is spent or the wait asked for is longer than the policy accepts."""
        budget.rate_waits += 1
        delay = error.delay if error.delay is not None else self.retry.backoff(budget.rate_waits)
        if self.bucket.window is not None and attempt.response is not None:
            # A sliding-window server (Bitcaster) counts no throttled request, and its Retry-After is a
            # constant (window / rate, 2 s) while a full window frees only when its oldest request leaves
            # it: wait for that, at least Retry-After, rather than spend waits on 2 s guesses.
            self.bucket.forget(attempt.sent_at)
            delay = max(delay, self.bucket.window_frees_in() or 0.0)
        if budget.rate_waits > self.retry.max_rate_limit_waits or delay > self.retry.max_retry_after:
            raise error
        self.hooks.on_retry(self.provider, "rate_limited")
        log.debug("%s: rate limited, waiting %.1fs", self.provider, delay)
        self.bucket.pause_for(delay)

    async def json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.request(method, url, **kwargs)
        if len(response.content) > LARGE_BODY:  # a page of thousands of members: parsed off the event loop
            return await asyncio.to_thread(json_body, response)
        return json_body(response)

    async def pause(self, attempt: int, error: RetriableError) -> None:
        """Wait as before retry number `attempt` of a request that failed with `error`, for a caller that
        resends on its own (a create looked up before it goes again: `connectors.batching.create_or_find`)."""
        delay = self.retry.wait(attempt, error.delay)
        if delay:
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self.client.aclose()


def _retry_reason(status: str) -> str:
    if status.isdigit():
        return "5xx" if status.startswith("5") else status
    return status  # "timeout" / "error"


def _path(url: str) -> str:
    # Errors name the path only: a query string may carry a token (CleverReach accepts ?token=).
    return httpx.URL(url).path


def _unfollowed_redirect(method: str, url: str, response: httpx.Response) -> ConnectorError | None:
    """A 3xx the provider's classifier let through. No connector follows redirects (a redirected POST loses
    its body, and credentials must not travel to another host): a classifier that passes a 3xx as "below 400,
    so fine" would make a write that never happened look done, so it is an error, whatever the provider."""
    if not 300 <= response.status_code < 400:
        return None
    location = httpx.URL(response.headers.get("Location", "")).path or "?"
    return ProtocolError(
        f"{method} {_path(url)}: HTTP {response.status_code} redirect to {location}; syncd does not "
        "follow redirects: check base_url",
        status=response.status_code,
    )


@dataclass(slots=True)
class _Attempt:
    """One send of a request, as the counting and the retry decision need it."""

    response: httpx.Response | None  # None when the transport (or an auth flow) failed
    error: ConnectorError | None  # what the answer means (None: a success)
    status: str  # the metric label: the HTTP status, "timeout" or "error"
    reached: bool  # whether the server may have processed it (False only when it surely did not)
    sent_at: float = 0.0  # its entry in the bucket's window
    seconds: float = 0.0


@dataclass(slots=True)
class _Budget:
    """What one logical request has spent: retries of failures, and waits for rate limits (counted apart)."""

    failures: int = 0
    rate_waits: int = 0


# ---------------------------------------------------------------------------------------- pagination


async def paginate(
    fetch: Callable[[C], Awaitable[tuple[Sequence[T], C | None]]],
    first: C,
    *,
    max_pages: int = 1_000_000,
) -> list[T]:
    """Call `fetch(cursor)` until it returns no next cursor. A cursor seen twice is a server bug that would
    otherwise loop forever (or read the same page into the group twice): raise instead."""
    seen: set[C] = set()
    items: list[T] = []
    cursor: C | None = first
    while cursor is not None:
        if cursor in seen:
            raise ProtocolError(f"pagination loop: cursor {cursor!r} was returned twice")
        if len(seen) >= max_pages:
            raise ProtocolError(f"pagination did not end after {max_pages} pages")
        seen.add(cursor)
        page, cursor = await fetch(cursor)
        items.extend(page)
    return items


# Page sizes servers commonly cap listings at (framework defaults and round maxima).
COMMON_PAGE_CAPS = frozenset({10, 20, 25, 50, 100, 200, 250, 500, 1000})


def plausible_page_cap(size: int) -> bool:
    """Whether a server could be capping its pages at `size`: one of the round numbers page caps are."""
    return size in COMMON_PAGE_CAPS


class PageEnd:
    """Whether a paged listing goes on after the page just read, for APIs that do not always say.

    The total, when an answer carries one, decides. Without it, the end is a page shorter than the server's
    page size, and that is not necessarily the size asked for: a server may cap pages lower than documented,
    or ignore the size parameter and use its default. The first page therefore tells the page size: a full
    first page (as asked) means the server honours the size, and a short page after it is the last one; a
    short first page is the whole listing unless it could be a cap (its length is the endpoint's documented
    default, a round number servers cap at, or less than a count known from elsewhere such as a group's
    member count), in which case the listing goes on while pages are that full. Documented behaviour thus
    costs no request more than before; a possibly capped first page costs at most one more (an empty page)
    when it was the whole listing after all, which is cheaper than silently reading part of a group (and then
    re-adding, or never removing, the rest).
    """

    def __init__(self, asked: int, *, default: int | None = None, expected: int | None = None) -> None:
        self.asked = max(1, asked)
        self.default = default
        self.expected = expected
        self.size: int | None = None  # the page size the server turned out to use
        self.read = 0

    def more(self, got: int, total: int | None = None) -> bool:
        """Call once per page, in order, with the page's item count and its total (None when absent)."""
        self.read += got
        if got <= 0:
            return False  # an empty page ends any listing
        if total is not None:
            return self.read < total
        if self.size is None:
            if got >= self.asked:
                self.size = self.asked
            elif (
                (self.expected is not None and self.read < self.expected)
                or got == self.default
                or plausible_page_cap(got)
            ):
                self.size = got  # maybe capped: read on while pages are this full
            else:
                return False
        return got >= self.size


# ------------------------------------------------------------------------------------------ auth flows


class BearerAuth(httpx.Auth):
    """`Authorization: <scheme> <token>` with a static token (Communic8 access key, Bitcaster `Key`)."""

    def __init__(self, token: SecretStr, scheme: str = "Bearer") -> None:
        self._token = token
        self._scheme = scheme

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"{self._scheme} {self._token.get_secret_value()}"
        yield request

    def __repr__(self) -> str:
        return f"BearerAuth(scheme={self._scheme!r}, token=**********)"


class ApiKeyBasicAuth(httpx.Auth):
    """HTTP Basic with the API key as username and an empty password (Stannp)."""

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raw = f"{self._key.get_secret_value()}:".encode()
        request.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        yield request

    def __repr__(self) -> str:
        return "ApiKeyBasicAuth(key=**********)"


@dataclass
class _Token:
    value: SecretStr
    expires_at: float


class ClientAuth(enum.StrEnum):
    """How a token request presents the client's credentials (RFC 6749 2.3.1 leaves servers a choice)."""

    FORM = "form"  # client_id and client_secret as form fields
    BASIC = "basic"  # the form fields, and HTTP Basic as `curl -u id:secret` sends it (CleverReach's community code)
    BEARER_JSON = "bearer_json"  # `Authorization: Bearer base64(id:secret)` and a JSON body (Communic8's docs)


class ClientCredentialsAuth(httpx.Auth):
    """OAuth2 client credentials: fetch a token, cache it until shortly before `expires_in`, and on a 401
    refresh it once and resend (a token can be revoked before it expires). Token requests go through the
    same transport but not through `ApiClient`, so they are neither paced nor counted as the pair's requests.

    `client_auth` lists the ways of presenting the client to try, in order: when the token endpoint refuses
    one (HTTP 400 or 401), the next is tried at once, and the one that worked is kept for the object's life."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        scope: str | None = None,
        client_auth: Sequence[ClientAuth] = (ClientAuth.FORM,),
        skew: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._styles = tuple(client_auth) or (ClientAuth.FORM,)
        self._style = 0  # index of the style in use
        self._style_known = len(self._styles) == 1
        self._skew = skew
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self.token_requests = 0

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(token_url={self.token_url!r}, client_id={self._client_id!r}, secret=**********)"

    @property
    def client_auth(self) -> ClientAuth:
        """The way of presenting the client in use (the one that worked, once a token was issued)."""
        return self._styles[self._style]

    def _token_request(self) -> httpx.Request:
        headers = {"Accept": "application/json"}
        credentials = f"{self._client_id}:{self._client_secret.get_secret_value()}"
        encoded = base64.b64encode(credentials.encode()).decode("ascii")
        if self.client_auth is ClientAuth.BEARER_JSON:
            body: dict[str, str] = {"grant_type": "client_credentials"}
            if self._scope:
                body["scope"] = self._scope
            headers["Authorization"] = f"Bearer {encoded}"
            return httpx.Request("POST", self.token_url, json=body, headers=headers)
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
        }
        if self._scope:
            form["scope"] = self._scope
        if self.client_auth is ClientAuth.BASIC:
            # As `curl -u` sends it: not form-encoded first (servers that skip RFC 6749's decoding step would
            # then see a different secret whenever it holds a reserved character).
            headers["Authorization"] = f"Basic {encoded}"
        return httpx.Request("POST", self.token_url, data=form, headers=headers)

    def _next_style(self, response: httpx.Response) -> bool:
        """After a refused token request: move on to the next way of presenting the client, if there is one
        and the way in use was never proved to work."""
        if self._style_known or response.status_code not in (400, 401) or self._style + 1 >= len(self._styles):
            return False
        self.token_requests += 1
        self._style += 1
        return True

    def _accept_token(self, response: httpx.Response) -> _Token:
        self.token_requests += 1
        if response.status_code == 429:
            raise RateLimited("token endpoint rate limited", status=429, delay=retry_after(response))
        if response.status_code >= 500:
            raise TransientError(f"token endpoint answered HTTP {response.status_code}", status=response.status_code)
        if response.status_code >= 400:
            raise AuthError(
                f"token request refused (HTTP {response.status_code}): check client_id / client_secret",
                status=response.status_code,
            )
        self._style_known = True  # this way of presenting the client works
        try:
            body = response.json()
            value = str(body["access_token"])
            expires_in = float(body.get("expires_in") or 3600)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError("token endpoint answered without access_token") from exc
        # Refresh `skew` seconds early, but never so early that a short-lived token (an `expires_in` at or below
        # the skew) counts as expired the moment it arrives: it is used for half its life at least.
        margin = min(self._skew, max(0.0, expires_in) / 2)
        self._token = _Token(SecretStr(value), self._clock() + max(0.0, expires_in - margin))
        return self._token

    def _valid(self) -> _Token | None:
        token = self._token
        if token is not None and self._clock() < token.expires_at:
            return token
        return None

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = self._valid()
        if token is None:
            async with self._lock:
                token = self._valid()  # another request may have refreshed it while we waited
                if token is None:
                    while True:
                        answer = yield self._token_request()
                        await answer.aread()  # overriding async_auth_flow means reading bodies ourselves
                        if not self._next_style(answer):
                            break
                    token = self._accept_token(answer)  # this request uses it, however short its life
        request.headers["Authorization"] = f"Bearer {token.value.get_secret_value()}"
        response = yield request
        if response.status_code != 401:
            return
        fresh: _Token | None
        async with self._lock:
            if self._token is token:  # nobody refreshed since we used it
                self._token = None
                answer = yield self._token_request()
                await answer.aread()
                fresh = self._accept_token(answer)
            else:
                fresh = self._token  # another request refreshed it meanwhile: use that one
        if fresh is None or fresh is token:
            return
        request.headers["Authorization"] = f"Bearer {fresh.value.get_secret_value()}"
        yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("ClientCredentialsAuth is async-only; use httpx.AsyncClient")


def derive_url(base_url: str, strip_suffix: str, path: str) -> str:
    """An endpoint documented on the API host but outside the versioned root (an OAuth token URL): take
    `base_url`, drop its version suffix if it has it, append `path`. So `https://rest.cleverreach.com/v3`
    gives `https://rest.cleverreach.com/oauth/token.php`, and a sandbox mounted under a prefix keeps it."""
    root = base_url.rstrip("/")
    if strip_suffix and root.endswith(strip_suffix.rstrip("/")):
        root = root[: -len(strip_suffix.rstrip("/"))]
    return root + path


def make_client(
    base_url: str,
    *,
    auth: httpx.Auth | None = None,
    timeout: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """The AsyncClient a connector gets when syncd builds it; tests pass a transport bound to a sandbox."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        auth=auth,
        timeout=timeout,
        transport=transport,
        headers={"User-Agent": "syncd/0.1", "Accept": "application/json", **(headers or {})},
        follow_redirects=False,
    )


__all__ = [
    "COMMON_PAGE_CAPS",
    "ApiClient",
    "ApiKeyBasicAuth",
    "BearerAuth",
    "ClientAuth",
    "ClientCredentialsAuth",
    "Limiter",
    "NoHooks",
    "PageEnd",
    "Quota",
    "RequestHooks",
    "RequestKind",
    "RequestTally",
    "RetryPolicy",
    "TokenBucket",
    "body_or_none",
    "count_requests",
    "derive_url",
    "error_for_status",
    "json_body",
    "make_client",
    "paginate",
    "plausible_page_cap",
    "quota_from_headers",
    "retry_after",
]
