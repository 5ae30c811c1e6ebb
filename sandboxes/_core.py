"""A small ASGI toolkit the bundled fake providers are built on.

Every sandbox must record each request it serves (so tests can assert exact request counts and that a dry
run sent no mutating request), inject faults on demand (429 with Retry-After, 5xx, slow answers, dropped
connections) and optionally enforce a rate limit. That machinery is the same for all of them, so it lives
here; a sandbox module holds only its API's routes, state and quirks. No web framework: routing a handful of
paths is a few lines, and owning it lets a sandbox reproduce exact wire behaviour (status codes, trailing
slashes, bodies).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl

import httpx

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def _lifespan(receive: Receive, send: Send) -> None:
    """Sandboxes hold no resources: acknowledge startup and shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class HttpError(Exception):
    """Raise from a handler to answer with this status and body."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.response = Response(status, body, headers or {})


@dataclass
class Request:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # from the path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def query_list(self, name: str) -> list[str]:
        return parse_qs(self.query_string, keep_blank_values=True).get(name, [])

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HttpError(400, {"error": "malformed JSON body"}) from exc

    def form(self) -> dict[str, str]:
        """Form fields from a urlencoded body, or the top level of a JSON object body."""
        ctype = self.headers.get("content-type", "")
        if "json" in ctype:
            data = self.json()
            return {k: _form_value(v) for k, v in data.items()} if isinstance(data, dict) else {}
        return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes/str
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        if self.body is None and self.status in (204, 304):
            return b"", ""
        return json.dumps(self.body).encode(), "application/json"


Handler = Callable[[Request], Response | Any]


@dataclass
class Route:
    method: str
    template: str
    regex: re.Pattern[str]
    handler: Handler
    mutating: bool


@dataclass(frozen=True)
class Recorded:
    """One request a sandbox served."""

    method: str
    path: str
    query: str
    status: int
    mutating: bool  # it hit a write endpoint (whether or not anything changed)
    body: bytes
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "mutating": self.mutating,
            "at": self.at,
        }


@dataclass
class Fault:
    """Answer matching requests with something other than the API's normal answer.

    Matches on method and a regex searched in the path. `skip` lets that many matching requests through
    first; `times` is how many to spoil (0 = all of them from then on).
    """

    status: int = 503
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    delay: float = 0.0  # seconds before answering (or before the normal answer when status == 0)
    drop: bool = False  # close without an answer (the request never reached the API)
    lost: bool = False  # serve the request as usual, then close without the answer (a lost answer)
    method: str | None = None
    path: str | None = None
    skip: int = 0
    times: int = 1

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return not (self.path and not re.search(self.path, path))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        allowed = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in allowed})


class RateLimit:
    """A sliding window of `limit` requests per `window` seconds (Bitcaster, DRF style) or a fixed window
    (Stannp: X-RateLimit-* headers describe the current window)."""

    def __init__(self, limit: int, window: float, *, sliding: bool = True, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.sliding = sliding
        self._clock = clock
        self._hits: deque[float] = deque()
        self._window_start = clock()
        self._count = 0

    def hit(self) -> tuple[bool, int, float]:
        """Count a request; returns (allowed, remaining, seconds until a slot frees / the window resets)."""
        now = self._clock()
        if self.sliding:
            while self._hits and self._hits[0] <= now - self.window:
                self._hits.popleft()
            if len(self._hits) >= self.limit:
                return False, 0, self._hits[0] + self.window - now
            self._hits.append(now)
            reset = self._hits[0] + self.window - now
            return True, self.limit - len(self._hits), reset
        if now - self._window_start >= self.window:
            self._window_start, self._count = now, 0
        reset = self._window_start + self.window - now
        if self._count >= self.limit:
            return False, 0, reset
        self._count += 1
        return True, self.limit - self._count, reset


class SandboxApp:
    """Base of every sandbox: routing, recording, faults, rate limiting. Subclasses add routes and state.

    Control endpoints (not recorded, not faulted, no auth) under `/_sandbox/`: `GET requests`,
    `POST faults` (a Fault as JSON), `DELETE faults`, `DELETE requests`.
    """

    name = "sandbox"

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.rate_limit: RateLimit | None = None
        # Bumped by every request to a write endpoint (and by helpers that change what a listing holds): a
        # sandbox may keep a listing between the pages of one read while it is unchanged (no quadratic paging).
        self.generation = 0
        # A real server serves requests concurrently from threads in `syncd sandbox`; tests read the log
        # from another thread. Handlers are synchronous and short, so one lock keeps state consistent.
        self.lock = threading.RLock()

    # -- building -----------------------------------------------------------------------------------
    def add_route(self, method: str, template: str, handler: Handler, *, mutating: bool = False) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self.routes.append(Route(method.upper(), template, re.compile(f"^{pattern}$"), handler, mutating))

    # -- test helpers -------------------------------------------------------------------------------
    def inject(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_log(self) -> None:
        with self.lock:
            self.requests.clear()

    def count(self, *, method: str | None = None, path: str | None = None, mutating: bool | None = None) -> int:
        """How many served requests match (path is a regex searched in the path)."""
        with self.lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method.upper())
                and (path is None or re.search(path, r.path))
                and (mutating is None or r.mutating is mutating)
            )

    @property
    def mutating_count(self) -> int:
        return self.count(mutating=True)

    # -- hooks for subclasses -----------------------------------------------------------------------
    def authenticate(self, request: Request) -> Response | None:
        """Return an error response when the request is not authorised; None to let it through."""
        return None

    def rate_limited(self, retry_after: float) -> Response:
        return Response(429, {"error": "rate limited"}, {"Retry-After": str(max(1, round(retry_after + 0.49)))})

    def not_found(self, request: Request) -> Response:
        return Response(404, {"error": "not found"})

    def decorate(self, request: Request, response: Response) -> None:
        """Add headers every answer carries (rate-limit headers, request-id echo)."""

    # -- ASGI ---------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        parts: list[bytes] = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(parts)
        request = Request(
            method=scope["method"].upper(),
            path=scope["path"],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])},
            body=body,
        )
        response = await self.handle(request)
        payload, ctype = response.encode()
        headers = [(b"content-length", str(len(payload)).encode())]
        if ctype:
            headers.append((b"content-type", ctype.encode()))
        headers += [(k.lower().encode(), str(v).encode()) for k, v in response.headers.items()]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def handle(self, request: Request) -> Response:
        if request.path.startswith("/_sandbox/"):
            return self._control(request)
        route, params, allowed = self._match(request)
        mutating = bool(route and route.mutating)
        fault = self._take_fault(request)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.drop:
                self._record(request, 0, mutating)
                raise httpx.RemoteProtocolError("sandbox dropped the connection")
            if fault.lost:
                with self.lock:
                    served = self._dispatch(request, route, params, allowed)
                    self.generation += int(mutating)
                    self._record(request, served.status, mutating)
                raise httpx.RemoteProtocolError("sandbox lost the answer after serving the request")
            if fault.status:
                headers = dict(fault.headers)
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                body = fault.body if fault.body is not None else {"error": f"injected fault {fault.status}"}
                response = Response(fault.status, body, headers)
                self._record(request, response.status, mutating)
                return response
        with self.lock:
            response = self._dispatch(request, route, params, allowed)
            if mutating:
                self.generation += 1
            self.decorate(request, response)
            self._record(request, response.status, mutating)
        return response

    def _dispatch(self, request: Request, route: Route | None, params: dict[str, str], allowed: list[str]) -> Response:
        if self.rate_limit is not None:
            ok, _, reset = self.rate_limit.hit()
            if not ok:
                return self.rate_limited(reset)
        denied = self.authenticate(request)
        if denied is not None:
            return denied
        if route is None:
            if allowed:
                return Response(
                    405, {"detail": f'Method "{request.method}" not allowed.'}, {"Allow": ", ".join(allowed)}
                )
            return self.not_found(request)
        request.params = params
        try:
            result = route.handler(request)
        except HttpError as exc:
            return exc.response
        return result if isinstance(result, Response) else Response(200, result)

    def _match(self, request: Request) -> tuple[Route | None, dict[str, str], list[str]]:
        allowed: list[str] = []
        for route in self.routes:
            m = route.regex.match(request.path)
            if m is None:
                continue
            if route.method == request.method:
                return route, m.groupdict(), allowed
            allowed.append(route.method)
        return None, {}, allowed

    def _take_fault(self, request: Request) -> Fault | None:
        return self.take_fault(self.faults, request)

    def take_fault(self, faults: list[Fault], request: Request) -> Fault | None:
        """The first fault of `faults` this request triggers, counting down its `skip` and `times`."""
        with self.lock:
            for fault in faults:
                if not fault.matches(request.method, request.path):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        faults.remove(fault)
                return fault
        return None

    def _record(self, request: Request, status: int, mutating: bool) -> None:
        with self.lock:
            self.requests.append(
                Recorded(
                    request.method,
                    request.path,
                    request.query_string,
                    status,
                    mutating,
                    request.body,
                    time.time(),
                )
            )

    def _control(self, request: Request) -> Response:
        what = request.path.removeprefix("/_sandbox/")
        with self.lock:
            if what == "requests" and request.method == "GET":
                return Response(200, [r.as_dict() for r in self.requests])
            if what == "requests" and request.method == "DELETE":
                self.requests.clear()
                return Response(204)
            if what == "faults" and request.method == "POST":
                self.faults.append(Fault.from_dict(request.json() or {}))
                return Response(201, {"ok": True})
            if what == "faults" and request.method == "DELETE":
                self.faults.clear()
                return Response(204)
        return Response(404, {"error": f"no control endpoint {request.method} {what}"})


class Mount:
    """Serve several sandboxes from one port, each under its own path prefix (`/communic8/int/v1/...`)."""

    def __init__(self, apps: dict[str, SandboxApp]) -> None:
        self.apps = {"/" + prefix.strip("/"): app for prefix, app in apps.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path: str = scope.get("path", "/")
        for prefix, app in self.apps.items():
            if path == prefix or path.startswith(prefix + "/"):
                inner = dict(scope, path=path[len(prefix) :] or "/", root_path=scope.get("root_path", "") + prefix)
                await app(inner, receive, send)
                return
        body = json.dumps({"sandboxes": sorted(self.apps)}).encode()
        status = 200 if path == "/" else 404
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
