"""A fake Bitcaster server: the distribution-list API under `/api/o/{org}/p/{prj}/d/`, quirks included.

What it serves (PROVIDERS.md "Bitcaster", the API excerpt, and the upstream DRF source where they are silent):

* Routed: `GET d/` (every list of the project, `[{name, id, members: <absolute url>}]`, no pagination),
  `GET d/{pk}/`, `POST d/{pk}/add/` (a JSON array of addresses), `GET d/{pk}/m/` (members
  `[{id, address, user, channel, active}]`, no pagination). Nothing else: `POST d/` and any other method on
  these paths answer 405 `{"detail": "Method \\"POST\\" not allowed."}`; other paths (a remove or delete
  route, a non-integer pk, a non-slug org) answer Django's 404 page.
* A path without its trailing slash answers 301 to the slashed path when that one exists (Django's
  APPEND_SLASH), for every method, before authentication. `Location` is relative (`d/`), so it stays right
  under any mount prefix.
* Requests then go through DRF's order: authentication, the key's scope, the throttle, the method.
  `Authorization: Key <token>`; a missing key or another scheme answers 401 "Authentication credentials
  were not provided.", an unknown key 401 "Invalid token." (both with `WWW-Authenticate: Key`). An unknown
  organization/project answers 404 `{"detail": "Not found."}` (as the docs say); a key of another
  organization or project answers 403 "Invalid organization for <key>" / "Invalid project for <key>" (the
  upstream permission class's words).
* `add/` is all-or-nothing against the project's **address records** (a known address, as spelled: matching
  is exact, like upstream's `address__value__in`). `expected` is the number of addresses sent and `found`
  the number of records matched; unless they are equal (an unknown address, or one address sent twice) it
  answers 400 `{"error": "Invalid addresses"}` and adds nothing. Otherwise it adds the records not yet in the
  list and answers `{message: <the array sent>, expected, found, added: <the matched addresses>}` (upstream's
  shapes). An unknown list answers 404 `{"detail": "Not found."}` on every route (the docs' word; upstream
  code would answer 500 on `d/{pk}/` and `add/`, and an empty array on `m/`).
* Throttle: a sliding window of 30 requests per 60 s **per key**, on by default. Over it: 429 with
  `Retry-After: N` (whole seconds until a slot frees, DRF's default estimate) and
  `{"detail": "Request was throttled. Expected available in N seconds."}`. `rate_limit` holds the limit each
  key gets (its limit/window/sliding; the windows run on the sandbox's `clock`); set it to None to turn
  throttling off. (Bitcaster's own SlidingWindowThrottle estimates `window / rate` = 2 s instead.)

Model: an address record stands for Bitcaster's Assignment (a user's address on a channel); member ids are
record ids. Records and lists belong to a project; ids are global, like database primary keys.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from connectors.sandbox._core import HttpError, RateLimit, Receive, Request, Response, Route, SandboxApp, Scope, Send

API = "/api"
DEFAULT_ORG = "acme"
DEFAULT_PROJECT = "newsletters"
DEFAULT_KEY = "bc-sandbox-key"
RATE_LIMIT = 30  # requests per key...
RATE_WINDOW = 60.0  # ...per this many seconds, sliding
INVALID_ADDRESSES = "Invalid addresses"
NOT_FOUND = {"detail": "Not found."}
DJANGO_404 = (
    "<!doctype html>\n<title>Not Found</title>\n<h1>Not Found</h1>\n<p>The requested resource was not found.</p>"
)

_SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")
# scheme://host[root_path] of the request being served, for absolute URLs in answers (`members`)
_origin: ContextVar[str] = ContextVar("bitcaster_sandbox_origin", default="http://testserver")


@dataclass
class AddressRecord:
    """A user's address on a channel (Bitcaster's Assignment): what `add/` matches and a list's members are."""

    id: int
    address: str
    user: str
    channel: str = "email"
    active: bool = True

    def as_member(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "user": self.user,
            "channel": self.channel,
            "active": self.active,
        }


@dataclass
class DistributionList:
    id: int
    name: str
    members: dict[int, None] = field(default_factory=dict)  # record ids, an ordered set


@dataclass
class Project:
    org: str
    slug: str
    records: dict[int, AddressRecord] = field(default_factory=dict)
    by_address: dict[str, list[int]] = field(default_factory=dict)  # exact spelling -> record ids
    lists: dict[int, DistributionList] = field(default_factory=dict)


class BitcasterSandbox(SandboxApp):
    name = "bitcaster"

    def __init__(
        self,
        *,
        keys: dict[str, tuple[str, str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        invalid_answer: Any = None,
    ) -> None:
        super().__init__()
        # The body of add/'s 400 refusal: `{"error": "Invalid addresses"}` (the docs') unless a test asks for
        # another shape a server could send (a DRF list, `detail`, plain text).
        self.invalid_answer: Any = {"error": INVALID_ADDRESSES} if invalid_answer is None else invalid_answer
        self.clock = clock
        self.projects: dict[tuple[str, str], Project] = {}
        self.keys: dict[str, tuple[str, str]] = {}  # API key -> (organization, project)
        self._list_ids = itertools.count(1)
        self._record_ids = itertools.count(1)
        # The limit every key gets; each key has its own window (see _throttle).
        self.rate_limit: RateLimit | None = RateLimit(RATE_LIMIT, RATE_WINDOW, clock=clock)
        self._windows: dict[str, RateLimit] = {}
        self._windows_of: RateLimit | None = None
        for token, (org, project) in (
            keys if keys is not None else {DEFAULT_KEY: (DEFAULT_ORG, DEFAULT_PROJECT)}
        ).items():
            self.add_key(token, org, project)
        self.add_project(DEFAULT_ORG, DEFAULT_PROJECT)
        root = API + "/o/{org}/p/{prj}/d/"
        for method, path, handler, mutating in (
            ("GET", root, self._get_lists, False),
            ("GET", root + "{pk}/", self._get_list, False),
            ("POST", root + "{pk}/add/", self._add, True),
            ("GET", root + "{pk}/m/", self._get_members, False),
        ):
            self.add_route(method, path, handler, mutating=mutating)

    # -- test helpers (plain methods, not HTTP) -------------------------------------------------------
    def add_project(self, org: str = DEFAULT_ORG, project: str = DEFAULT_PROJECT) -> Project:
        with self.lock:
            return self.projects.setdefault((org, project), Project(org, project))

    def add_key(self, token: str, org: str = DEFAULT_ORG, project: str = DEFAULT_PROJECT) -> str:
        """Register an API key scoped to this organization and project (created if need be)."""
        with self.lock:
            self.add_project(org, project)
            self.keys[token] = (org, project)
            return token

    def add_address(
        self,
        address: str,
        *,
        user: str | None = None,
        channel: str = "email",
        active: bool = True,
        org: str = DEFAULT_ORG,
        project: str = DEFAULT_PROJECT,
    ) -> int:
        """Create an address record (as spelled) and return its id; the existing one for the same address and
        channel when there is one."""
        with self.lock:
            prj = self.add_project(org, project)
            for rid in prj.by_address.get(address, []):
                if prj.records[rid].channel == channel:
                    return rid
            rid = next(self._record_ids)
            username = user or address.partition("@")[0] or address
            prj.records[rid] = AddressRecord(rid, address, username, channel, active)
            prj.by_address.setdefault(address, []).append(rid)
            return rid

    def add_list(
        self, name: str, emails: Iterable[str] = (), *, org: str = DEFAULT_ORG, project: str = DEFAULT_PROJECT
    ) -> int:
        """Create a distribution list holding these addresses (records are created for unknown ones)."""
        with self.lock:
            prj = self.add_project(org, project)
            dl = DistributionList(next(self._list_ids), name)
            prj.lists[dl.id] = dl
            for email in emails:
                dl.members[self.add_address(email, org=org, project=project)] = None
            return dl.id

    def attach(self, list_id: int | str, record_id: int) -> None:
        """Put an existing address record into a list (an SMS number, an inactive record...)."""
        with self.lock:
            self._find_list(list_id).members[record_id] = None

    def list_emails(self, list_id: int | str) -> list[str]:
        """The addresses of a list's members, in the order they joined."""
        with self.lock:
            prj = self._project_of(list_id)
            return [prj.records[rid].address for rid in prj.lists[int(list_id)].members]

    # -- SandboxApp hooks ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"testserver").decode("latin-1")
        token = _origin.set(f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}")
        try:
            await super().__call__(scope, receive, send)
        finally:
            _origin.reset(token)

    def not_found(self, request: Request) -> Response:
        return Response(404, DJANGO_404)

    def rate_limited(self, retry_after: float) -> Response:
        wait = max(1, math.ceil(retry_after))
        detail = f"Request was throttled. Expected available in {wait} second{'' if wait == 1 else 's'}."
        return Response(429, {"detail": detail}, {"Retry-After": str(wait)})

    def _dispatch(self, request: Request, route: Route | None, params: dict[str, str], allowed: list[str]) -> Response:
        # Django first: the URL resolver (with its slug/int converters) and APPEND_SLASH, before any view.
        params, routes = self._resolve(request.path)
        if not routes:
            if not request.path.endswith("/") and self._resolve(request.path + "/")[1]:
                target = request.path.rsplit("/", 1)[-1] + "/"
                if request.query_string:
                    target += "?" + request.query_string
                return Response(301, "", {"Location": target})
            return self.not_found(request)
        # Then DRF: authentication, the key's scope (permission), the throttle, the method.
        key, denied = self._authenticate(request)
        if denied is not None:
            return denied
        project = self.projects.get((params["org"], params["prj"]))
        if project is None:
            return Response(404, NOT_FOUND)
        key_org, key_project = self.keys[key]
        if key_org != project.org:
            return Response(403, {"detail": f"Invalid organization for {_key_name(key_org, key_project)}"})
        if key_project != project.slug:
            return Response(403, {"detail": f"Invalid project for {_key_name(key_org, key_project)}"})
        throttled = self._throttle(key)
        if throttled is not None:
            return throttled
        chosen = next((r for r in routes if r.method == request.method), None)
        if chosen is None:
            return Response(
                405,
                {"detail": f'Method "{request.method}" not allowed.'},
                {"Allow": ", ".join(r.method for r in routes)},
            )
        request.params = params
        try:
            result = chosen.handler(request)
        except HttpError as exc:
            return exc.response
        return result if isinstance(result, Response) else Response(200, result)

    # -- routes -------------------------------------------------------------------------------------
    def _get_lists(self, request: Request) -> list[dict[str, Any]]:
        prj = self._project(request)
        return [self._list_obj(prj, dl) for dl in prj.lists.values()]

    def _get_list(self, request: Request) -> dict[str, Any]:
        prj = self._project(request)
        return self._list_obj(prj, self._list(prj, request))

    def _get_members(self, request: Request) -> list[dict[str, Any]]:
        prj = self._project(request)
        dl = self._list(prj, request)
        return [prj.records[rid].as_member() for rid in dl.members]

    def _add(self, request: Request) -> Response | dict[str, Any]:
        prj = self._project(request)
        dl = self._list(prj, request)
        try:
            data = json.loads(request.body)
        except ValueError as exc:
            return Response(400, {"error": str(exc)})
        if not isinstance(data, list) or not all(isinstance(a, str) for a in data):
            return Response(400, {"error": INVALID_ADDRESSES})
        wanted = set(data)
        matched = [prj.records[rid] for address in wanted for rid in prj.by_address.get(address, [])]
        matched.sort(key=lambda r: r.id)
        expected, found = len(data), len(matched)
        if found != expected:
            return Response(400, self.invalid_answer)  # all or nothing: nothing was added
        for record in matched:
            dl.members.setdefault(record.id, None)
        return {"message": data, "expected": expected, "found": found, "added": [r.address for r in matched]}

    # -- internals ----------------------------------------------------------------------------------
    def _resolve(self, path: str) -> tuple[dict[str, str], list[Route]]:
        """The routes this path resolves to (any method) and its parameters, with Django's converters:
        `<slug:org>`, `<slug:prj>`, `<int:pk>`."""
        found: list[Route] = []
        params: dict[str, str] = {}
        for route in self.routes:
            m = route.regex.match(path)
            if m is None:
                continue
            values = m.groupdict()
            if not all(_SLUG.match(values[k]) for k in ("org", "prj") if k in values):
                continue
            if "pk" in values and not values["pk"].isdigit():
                continue
            found.append(route)
            params = values
        return params, found

    def _authenticate(self, request: Request) -> tuple[str, Response | None]:
        challenge = {"WWW-Authenticate": "Key"}
        parts = request.headers.get("authorization", "").split()
        if not parts or parts[0].lower() != "key":
            detail = "Authentication credentials were not provided."
            return "", Response(401, {"detail": detail}, challenge)
        if len(parts) == 1:
            return "", Response(401, {"detail": "Invalid token header. No credentials provided."}, challenge)
        if len(parts) > 2:
            detail = "Invalid token header. Token string should not contain spaces."
            return "", Response(401, {"detail": detail}, challenge)
        if parts[1] not in self.keys:
            return "", Response(401, {"detail": "Invalid token."}, challenge)
        return parts[1], None

    def _throttle(self, key: str) -> Response | None:
        limit = self.rate_limit
        if limit is None:
            return None
        if self._windows_of is not limit:  # a new limit was set: every key starts afresh
            self._windows, self._windows_of = {}, limit
        window = self._windows.get(key)
        if window is None:
            window = RateLimit(limit.limit, limit.window, sliding=limit.sliding, clock=self.clock)
            self._windows[key] = window
        ok, _, reset = window.hit()
        return None if ok else self.rate_limited(reset)

    def _project(self, request: Request) -> Project:
        return self.projects[(request.params["org"], request.params["prj"])]

    @staticmethod
    def _list(prj: Project, request: Request) -> DistributionList:
        dl = prj.lists.get(int(request.params["pk"]))
        if dl is None:
            raise HttpError(404, NOT_FOUND)
        return dl

    @staticmethod
    def _list_obj(prj: Project, dl: DistributionList) -> dict[str, Any]:
        members = f"{_origin.get()}{API}/o/{prj.org}/p/{prj.slug}/d/{dl.id}/m/"
        return {"name": dl.name, "id": dl.id, "members": members}

    def _project_of(self, list_id: int | str) -> Project:
        for prj in self.projects.values():
            if int(list_id) in prj.lists:
                return prj
        raise KeyError(f"no distribution list {list_id}")

    def _find_list(self, list_id: int | str) -> DistributionList:
        return self._project_of(list_id).lists[int(list_id)]


def _key_name(org: str, project: str) -> str:
    """How a key is named in 403 messages (upstream prints the key's name, never the secret itself)."""
    return f"API key of {org}/{project}"
