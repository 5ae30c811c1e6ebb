"""The HTTP side of `syncd serve`: /metrics, /healthz, /readyz and the API, served by uvicorn inside the daemon's
loop.

* ``/metrics``: the daemon's registry in Prometheus text format (OpenMetrics when asked for; gzip when
  accepted): prometheus-client's own ASGI app.
* ``/healthz``: liveness. 200 while the process and its scheduler are alive; 503 once the scheduler is gone.
* ``/readyz``: readiness. 200 when the config is loaded and the state DB answers (`Store.ping()`); otherwise
  503 with the reasons in the body. A stopping daemon is not ready.

* ``/api/v1/…``: the daemon's API (`syncd.api`), behind a bearer token; 404 when the daemon has none.

Both health endpoints answer JSON (``{"status": "ok"|"unavailable", "reasons": [...], ...}``). No web
framework: a few routes are a few lines. uvicorn's own signal handling is switched off (`_Server`): the
daemon owns SIGTERM/SIGINT and stops the server itself, after the pass. Nothing here logs a request or its
headers (uvicorn's access log is off): the API's token never reaches a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import uvicorn
from prometheus_client import CollectorRegistry, make_asgi_app

__all__ = ["API_PREFIX", "ASGIApp", "Check", "HealthSource", "HttpServer", "make_app", "respond", "respond_json"]

log = logging.getLogger("syncd.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Check:
    """The answer of a health check: ok or not, why not, and details worth showing."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> bytes:
        out: dict[str, Any] = {"status": "ok" if self.ok else "unavailable"}
        if self.reasons:
            out["reasons"] = self.reasons
        out.update(self.details)
        return json.dumps(out, default=str).encode() + b"\n"


class HealthSource(Protocol):
    def health(self) -> Check: ...

    async def readiness(self) -> Check: ...


INDEX = b"syncd: see /metrics, /healthz, /readyz (and /api/v1/ with a token)\n"
API_PREFIX = "/api/v1"


def make_app(registry: CollectorRegistry, source: HealthSource, api: ASGIApp | None = None) -> ASGIApp:
    """The daemon's routes; `api` serves every path under `API_PREFIX` (404 without one)."""
    metrics_app = make_asgi_app(registry=registry)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # pragma: no cover - served with lifespan="off"
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            if api is None:
                await respond_json(send, 404, {"error": "not found"})
            else:
                await api(scope, receive, send)
            return
        if method not in ("GET", "HEAD"):
            await respond(send, 405, b"method not allowed\n", "text/plain", {"allow": "GET, HEAD"})
            return
        if path == "/metrics":
            await metrics_app(scope, receive, send)
            return
        if path == "/healthz":
            check = source.health()
        elif path == "/readyz":
            check = await source.readiness()
        elif path == "/":
            await respond(send, 200, INDEX, "text/plain")
            return
        else:
            await respond(send, 404, b"not found\n", "text/plain")
            return
        await respond(send, 200 if check.ok else 503, check.body(), "application/json", head=method == "HEAD")

    return app


async def respond_json(send: Send, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    """`body` as one JSON document."""
    await respond(send, status, json.dumps(body, default=str).encode() + b"\n", "application/json", headers)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
    *,
    head: bool = False,
) -> None:
    raw = [(b"content-type", f"{content_type}; charset=utf-8".encode()), (b"cache-control", b"no-store")]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else body})


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the daemon handles SIGTERM/SIGINT and stops the server last."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """An ASGI app on host:port, served from the current asyncio loop.

    `bind()` opens the listening socket first, so a taken port is reported (OSError) before anything else
    starts; `start()` serves; `stop()` closes it, giving open connections a moment to finish.
    """

    SHUTDOWN_GRACE = 3  # seconds for open connections (a scrape in progress) when stopping
    STARTUP_TIMEOUT = 10.0

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self.app, self.host, self.port = app, host, port
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def bind(self) -> None:
        family, _, _, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(address)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._socket = sock

    async def start(self) -> None:
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        config = uvicorn.Config(
            self.app,
            log_config=None,  # keep syncd's logging setup
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=self.SHUTDOWN_GRACE,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="syncd-http")
        deadline = asyncio.get_running_loop().time() + self.STARTUP_TIMEOUT
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the HTTP server stopped while starting")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"the HTTP server did not start on {self.url}")
            await asyncio.sleep(0.01)

    @property
    def task(self) -> asyncio.Task[None]:
        """The serving task (done when the server has stopped)."""
        assert self._task is not None, "start() first"
        return self._task

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.SHUTDOWN_GRACE + 2)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        finally:
            if self._socket is not None:
                self._socket.close()
