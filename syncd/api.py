"""The daemon's API, under /api/v1/ of `syncd serve`'s HTTP server (syncd.server), for operators and their tools.

Every call carries ``Authorization: Bearer <server.api_token>``; a missing or wrong token answers 401 (with
``WWW-Authenticate: Bearer``), compared in constant time. Without a token in the config the API is off: every
/api/v1 path answers 404. The token is read from the config in force, so a reload can set, change or remove it;
it is never logged (nothing logs requests or headers) and never shown (`SecretStr`).

* ``POST /api/v1/runs`` ``{"groups": [...], "providers": [...], "dry_run": false, "wait": true}``, every key
  optional: a pass over those groups and providers (all when not given) now. With ``wait`` (the default) it
  answers 200 with the run report when the pass ends, exactly the JSON of ``syncd run --output json``
  (`RunReport.as_dict`); without, 202 ``{"run_id"}`` as soon as the run is recorded, the pass going on. A daemon
  started with ``--dry-run`` changes nothing whatever the body says. A body of another shape, or naming groups or
  providers the config does not have, is 400 (the names in the answer); a chosen pair that a pass already works,
  scheduled or started here, 409 (`syncd.scheduling.claims`: the daemon claims the pairs before it starts).
* ``GET /api/v1/runs/{run_id}``: ``{"run_id", "state": "running"}`` while it runs, then its report; 404 for a run
  the state DB does not know. The pair rows the state DB keeps cannot give the report back exactly (they hold
  how many members were rejected, not who and why, nor the unchecked adds of a dry run), so the finished reports
  of the passes started through this API are kept in memory (the last `KEEP_REPORTS`, for `KEEP_FOR` seconds) and
  answered exactly as `POST` would have. Any other run (a scheduled pass, another replica's, an older one) is
  rebuilt from the state DB: the same keys, plus ``"reconstructed": true``, each pair's ``rejected`` null and
  ``rejected_count`` the number instead, its pairs in the order they were recorded.
* ``GET /api/v1/pairs``: per configured pair, its state from its latest pass in the state DB, the JSON of
  ``syncd status -o json`` (`pair_status`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from syncd.config import Config
from syncd.errors import SyncdError
from syncd.model import RunReport
from syncd.report import STATUS_KEYS, status_entry_as_dict
from syncd.scheduling.claims import PairsBusy, describe_lock
from syncd.server import API_PREFIX, ASGIApp, Receive, Scope, Send, respond_json
from syncd.state import PairRow, RunOutcome, Store
from syncd.state.records import PairState

__all__ = [
    "KEEP_FOR",
    "KEEP_REPORTS",
    "ApiBackend",
    "ApiRuns",
    "RunRequest",
    "StartedPass",
    "Unavailable",
    "make_api_app",
    "pair_status",
    "report_from_db",
]

log = logging.getLogger("syncd.api")

MAX_BODY = 64 * 1024  # bytes of a request body
KEEP_REPORTS = 200  # finished reports of API passes kept in memory, the newest
KEEP_FOR = 3600.0  # seconds a finished report is kept
_RUN_ID = re.compile(r"[0-9a-f]{32}")


class RunRequest(BaseModel):
    """The body of ``POST /api/v1/runs``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    groups: list[str] = Field(default_factory=list)
    providers: list[str] = Field(default_factory=list)
    dry_run: bool = False
    wait: bool = True


@dataclass(frozen=True)
class StartedPass:
    run_id: str
    task: asyncio.Task[RunReport]


class Unavailable(SyncdError):
    """The daemon cannot start a pass now (stopping, the state DB gone): 503."""


class ApiBackend(Protocol):
    """What the API needs of the daemon (syncd.serve.Daemon)."""

    @property
    def config(self) -> Config: ...

    async def start_api_pass(self, request: RunRequest) -> StartedPass:
        """Claim the chosen pairs and start the pass; return once the run is recorded. PairsBusy, Unavailable."""
        ...

    async def get_store(self) -> Store | None: ...


class _Answer(Exception):
    """An answer other than 200: raised anywhere in a handler."""

    def __init__(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, dict(body), dict(headers or {})


# ------------------------------------------------------------------------------------------- the runs


@dataclass
class _Entry:
    task: asyncio.Task[RunReport]
    finished_at: float | None = None


class ApiRuns:
    """The passes started through the API, and their reports once finished (see the module docstring)."""

    def __init__(self, keep: int = KEEP_REPORTS, keep_for: float = KEEP_FOR) -> None:
        self.keep, self.keep_for = keep, keep_for
        self._entries: dict[str, _Entry] = {}

    def add(self, started: StartedPass) -> None:
        entry = _Entry(started.task)
        self._entries[started.run_id] = entry

        def finished(task: asyncio.Task[RunReport]) -> None:
            entry.finished_at = time.monotonic()
            if not task.cancelled():
                task.exception()  # retrieved: the daemon logged it, a GET reads the run from the state DB
            self._prune()

        started.task.add_done_callback(finished)

    def answer(self, run_id: str) -> dict[str, Any] | None:
        """The run's JSON from memory: running, or its exact report; None if not here (or the pass crashed:
        its run is in the state DB then)."""
        self._prune()
        entry = self._entries.get(run_id)
        if entry is None:
            return None
        if not entry.task.done():
            return {"run_id": run_id, "state": "running"}
        if entry.task.cancelled() or entry.task.exception() is not None:
            return None
        return entry.task.result().as_dict()

    def _prune(self) -> None:
        now = time.monotonic()
        finished = sorted(
            ((e.finished_at, run_id) for run_id, e in self._entries.items() if e.finished_at is not None),
            reverse=True,
        )
        for n, (at, run_id) in enumerate(finished):
            if n >= self.keep or now - at > self.keep_for:
                del self._entries[run_id]


def report_from_db(store: Store, run_id: str) -> dict[str, Any] | None:
    """A run rebuilt from the state DB (see the module docstring for what differs from the report); running
    ``{"run_id", "state": "running"}``; None for a run it does not know."""
    run = store.run(run_id)
    if run is None:
        return None
    if run.outcome == RunOutcome.RUNNING:
        return {"run_id": run.id, "state": "running"}
    out: dict[str, Any] = {
        "dry_run": run.dry_run,
        "run_id": run.id,
        "pairs": [_pair_json(p) for p in store.pairs(run_id)],
        "reconstructed": True,
    }
    if run.errors:
        out["errors"] = list(run.errors)
    return out


def _pair_json(p: PairRow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "group": p.group,
        "provider": p.provider,
        "strategy": str(p.strategy),
        "status": str(p.status),
        "desired": p.desired,
        "actual_before": p.actual_before,
        "add": p.added,
        "remove": p.removed,
        "unsupported_remove": p.unsupported_remove,
        "rejected": None,  # who and why is not kept per run: see rejected_count
        "rejected_count": p.rejected,
        "requests": {"read": p.read_requests, "write": p.write_requests},
    }
    if p.error:
        out["error"] = p.error
    if p.blocked_reason:
        out["blocked_reason"] = p.blocked_reason
    return out


# ------------------------------------------------------------------------------------------ the pairs


def pair_status(store: Store, config: Config) -> dict[str, Any]:
    """``{"pairs": [...]}``: each configured pair (config order; then, when a SQL query names groups, the other
    pairs the state DB has of configured providers) with what its latest pass, dry or real, recorded.

    Each pair is what `syncd status -o json --include-dry-runs` says of it (`Store.pair_states`); a configured pair
    that never had a pass has every value null.
    """
    latest = {(s.group.casefold(), s.provider): s for s in store.pair_states(include_dry_runs=True)}
    providers = {p.name for p in config.providers}
    out: list[dict[str, Any]] = []
    for group, targets in config.group_targets():
        for target in targets:
            found = latest.pop((group.casefold(), target.provider), None)
            out.append(_status_json(group, target.provider, found))
    if config.has_query_named_groups:
        for (_, provider), found in sorted(latest.items()):
            if provider in providers:
                out.append(_status_json(found.group, provider, found))
    return {"pairs": out}


def _status_json(group: str, provider: str, found: PairState | None) -> dict[str, Any]:
    """The pair as `syncd status -o json --include-dry-runs` gives it (`syncd.report`), under the config's spelling
    of the group; every value null for a pair that never had a pass."""
    if found is None:
        return {**dict.fromkeys(STATUS_KEYS), "group": group, "provider": provider}
    return {**status_entry_as_dict(found), "group": group}


# ---------------------------------------------------------------------------------------- the requests


def parse_run_request(body: bytes, config: Config) -> RunRequest:
    """The body of ``POST /api/v1/runs``, checked against the documented shape and the config (400 if not)."""
    try:
        data = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Answer(400, {"error": f"the body is not JSON: {exc}"}) from None
    if not isinstance(data, dict):
        raise _Answer(400, {"error": "the body must be a JSON object"})
    try:
        request = RunRequest.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(e) for e in exc.errors()]
        raise _Answer(400, {"error": "; ".join(problems), "problems": problems}) from None
    _check_names(request, config)
    return request


def _problem(error: Mapping[str, Any]) -> str:
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (allowed: groups, providers, dry_run, wait)"
    return f"{key}: {error['msg']}"


def _check_names(request: RunRequest, config: Config) -> None:
    known_providers = [p.name for p in config.providers]
    unknown_providers = [name for name in request.providers if name not in known_providers]
    known_groups = {name.casefold() for name in config.group_names()} | config.group_keys()  # a name or a key
    # Groups a SQL query names are known only when it runs: then any name may be one of them.
    unknown_groups = (
        [] if config.has_query_named_groups else [g for g in request.groups if g.casefold() not in known_groups]
    )
    if not unknown_providers and not unknown_groups:
        return
    problems = []
    if unknown_groups:
        problems.append(f"no group named {_names(unknown_groups)} in the config")
    if unknown_providers:
        problems.append(
            f"no provider named {_names(unknown_providers)} (configured: {', '.join(known_providers) or 'none'})"
        )
    raise _Answer(
        400,
        {"error": "; ".join(problems), "unknown_groups": unknown_groups, "unknown_providers": unknown_providers},
    )


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Answer(400, {"error": "the client went away"})
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _Answer(413, {"error": f"the body is larger than {MAX_BODY} bytes"})
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


# -------------------------------------------------------------------------------------------- the app


def make_api_app(backend: ApiBackend, api_runs: ApiRuns | None = None) -> ASGIApp:
    """The ASGI app of every path under /api/v1 (syncd.server routes them here)."""
    memory = api_runs if api_runs is not None else ApiRuns()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body, headers = await _handle(backend, memory, scope, receive)
        except _Answer as answer:
            status, body, headers = answer.status, answer.body, answer.headers
        await respond_json(send, status, body, headers)

    return app


Handled = tuple[int, Any, dict[str, str]]


async def _handle(backend: ApiBackend, memory: ApiRuns, scope: Scope, receive: Receive) -> Handled:
    _authenticate(backend.config, scope)
    path, method = scope["path"][len(API_PREFIX) :].rstrip("/"), scope["method"]
    if path == "/runs":
        _allow(method, "POST")
        return await _post_run(backend, memory, receive)
    if path.startswith("/runs/"):
        _allow(method, "GET")
        return await _get_run(backend, memory, path.removeprefix("/runs/"))
    if path == "/pairs":
        _allow(method, "GET")
        store = await _store(backend)
        return 200, await asyncio.to_thread(pair_status, store, backend.config), {}
    raise _Answer(404, {"error": "not found"})


def _authenticate(config: Config, scope: Scope) -> None:
    token = config.server.api_token
    if token is None:  # the API is off: as if it were not there
        raise _Answer(404, {"error": "not found"})
    given = _bearer(scope)
    if given is None:
        raise _Answer(401, {"error": "this API needs a bearer token"}, {"www-authenticate": 'Bearer realm="syncd"'})
    if not hmac.compare_digest(given, token.get_secret_value().encode()):
        log.info("API: refused a request with a wrong token", extra={"client": _client(scope)})
        raise _Answer(
            401,
            {"error": "wrong token"},
            {"www-authenticate": 'Bearer realm="syncd", error="invalid_token"'},
        )


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            scheme, _, credentials = bytes(value).strip().partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "?"


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise _Answer(405, {"error": f"method {method} not allowed here"}, {"allow": allowed})


async def _store(backend: ApiBackend) -> Store:
    store = await backend.get_store()
    if store is None:
        raise _Answer(503, {"error": "the state DB is not available"})
    return store


async def _post_run(backend: ApiBackend, memory: ApiRuns, receive: Receive) -> Handled:
    request = parse_run_request(await _read_body(receive), backend.config)
    try:
        started = await backend.start_api_pass(request)
    except PairsBusy as exc:
        busy = [describe_lock(lock) for lock in exc.locks]
        error = f"a pass is already running ({exc.by}) for: {', '.join(busy)}"
        raise _Answer(409, {"error": error, "busy": busy}) from None
    except Unavailable as exc:
        raise _Answer(503, {"error": str(exc)}) from None
    memory.add(started)
    location = {"location": f"{API_PREFIX}/runs/{started.run_id}"}
    if not request.wait:
        return 202, {"run_id": started.run_id}, location
    try:
        report = await asyncio.shield(started.task)  # a client that goes away does not stop the pass
    except Exception as exc:
        return 500, {"run_id": started.run_id, "error": f"the pass ended early: {exc}"}, location
    return 200, report.as_dict(), location


async def _get_run(backend: ApiBackend, memory: ApiRuns, run_id: str) -> Handled:
    if not _RUN_ID.fullmatch(run_id):
        raise _Answer(404, {"error": f"no run {run_id!r}"})
    found = memory.answer(run_id)
    if found is None:
        store = await _store(backend)
        found = await asyncio.to_thread(report_from_db, store, run_id)
    if found is None:
        raise _Answer(404, {"error": f"no run {run_id!r}"})
    return 200, found, {}
