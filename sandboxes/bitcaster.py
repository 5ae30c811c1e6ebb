"""A fake Bitcaster server: the distribution-list API under `/api/o/{org}/p/{prj}/d/`, answering like a real
Bitcaster 3.1.2 server does (checked against one, run on loopback by `tools/real-bitcaster`, and its source).

Releases (`release=`): `"3.1.2"` (the default) creates lists on `POST d/`; `"legacy"` stands for the older
releases PROVIDERS.md describes, where `POST d/` answers 405 `{"detail": "Method \\"POST\\" not allowed."}`
and the `Allow` header of `d/` reads `GET, HEAD, OPTIONS` (a list object then has no `application`).

What it serves:

* `GET d/` (every list of the project, `[{name, id, members: <absolute url>, application: null}]`, no
  pagination), `POST d/ {"name"}` (3.1.2: 201 with the new list; a name taken in any case → 400 `{"name":
  ["Name already exists!"]}`, a missing or blank one → DRF's field errors), `GET d/{pk}/`, `POST d/{pk}/add/`
  (a JSON array of addresses), `GET d/{pk}/m/` (members `[{id, address, user, channel, active}]`, no
  pagination). As upstream's view class inherits them, 3.1.2 also creates a list on `POST d/{pk}/` and lists
  the lists on `GET d/{pk}/add/`. HEAD works where GET is mapped, OPTIONS everywhere (DRF's metadata, with
  `actions.POST` where POST creates). Other methods answer 405 with `Allow`; other paths (a remove route, a
  non-integer pk, a non-slug org) Django's HTML 404 page.
* A path without its trailing slash answers 301 to the slashed path (an absolute path, as Django's
  APPEND_SLASH does) when that one exists, for every method, before authentication.
* Then DRF's order: authentication, the key's scope and grants (permission), the throttle, the method. Every
  answer of a view carries `Allow` (DRF's), the route's methods for this release.
  - `Authorization: Key <token>` is the only scheme: none or another one → 401 "Authentication credentials
    were not provided.", an unknown key → 401 "Invalid token." (both with `WWW-Authenticate: Key`).
  - A wrong organization or project in the URL → 403 "Invalid organization for <key name>" / "Invalid
    project for <key name>" (never 404, whether or not it exists), a key without a project → 403 "Key not
    enabled for project scope", a key without the DISTRIBUTION_LIST (or FULL_ACCESS) grant → 403 "You do not
    have permission to perform this action. [Grant.DISTRIBUTION_LIST]". None of these counts against the
    throttle.
  - Throttle: a sliding window of 30 requests per 60 s **per key**, over every endpoint, on by default
    (`rate_limit`; None turns it off; windows run on the sandbox's `clock`). Every request that passes
    authentication and permission counts (400s too), throttled ones do not. Over it: 429 `{"detail": "Request
    was throttled. Expected available in 2 seconds."}` with `Retry-After: 2` (upstream's `window / rate`)
    whatever the real wait (up to the whole window). No rate-limit headers.
* `add/` is all-or-nothing against the **address records** of the project's organization, matched exactly as
  spelled (case-sensitive, like upstream's `address__value__in`): `expected` is the number of addresses sent,
  `found` the number of records matched; unless they are equal (an unknown address, another spelling of a
  known one, one address sent twice, an address with two records) it answers 400 `{"error":
  "[ErrorDetail(string='Invalid addresses', code='invalid')]"}` (upstream's `str()` of a ValidationError) and
  adds nothing. Otherwise it adds the records not yet in the list (re-adding is a 200 that changes nothing, an
  empty array a 200 too) and answers `{message: <the array sent>, expected, found, added}`. A body that is not
  JSON → 400 `{"error": <the JSON error>}`.
* A list that does not exist: HTTP 500 with an HTML page on `d/{pk}/` and `d/{pk}/add/` (upstream's
  `.get()` outside any handler, no `Allow`), but 200 `[]` on `d/{pk}/m/` (a filter that matches nothing).

Model: an address record stands for Bitcaster's Assignment (a user's address on a channel); member ids are
record ids. Records and lists belong to a project; ids are global, like database primary keys.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sandboxes._core import HttpError, RateLimit, Receive, Request, Response, Route, SandboxApp, Scope, Send

API = "/api"
DEFAULT_ORG = "acme"
DEFAULT_PROJECT = "newsletters"
DEFAULT_KEY = "bc-sandbox-key"
RATE_LIMIT = 30  # requests per key...
RATE_WINDOW = 60.0  # ...per this many seconds, sliding
RELEASE = "3.1.2"  # creates lists on POST d/
LEGACY = "legacy"  # an older release: POST d/ answers 405
RELEASES = (RELEASE, LEGACY)
GRANT = "DISTRIBUTION_LIST"
FULL_ACCESS = "FULL_ACCESS"
INVALID_ADDRESSES = "[ErrorDetail(string='Invalid addresses', code='invalid')]"  # str(ValidationError(...))
NAME_TAKEN = "Name already exists!"
NOT_ALLOWED = 'Method "{}" not allowed.'
NO_PERMISSION = "You do not have permission to perform this action. [Grant.DISTRIBUTION_LIST]"
DJANGO_404 = (
    "<!doctype html>\n<title>Not Found</title>\n<h1>Not Found</h1>\n<p>The requested resource was not found.</p>"
)
DJANGO_500 = (  # what the real server's 500 page holds (DEBUG off)
    '<!DOCTYPE html PUBLIC "-//W3C//DTD HTML 4.01 Transitional//EN" "http://www.w3.org/TR/html4/loose.dtd">\n'
    "<html>\n  <head>\n    <title></title>\n  </head>\n  <body></body>\n</html>\n"
)
RENDERS = ["application/json", "text/html"]
PARSES = ["application/json", "application/x-www-form-urlencoded", "multipart/form-data"]

_SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")
# scheme://host[root_path] of the request being served, for absolute URLs in answers (`members`)
_origin: ContextVar[str] = ContextVar("bitcaster_sandbox_origin", default="http://testserver")
_root_path: ContextVar[str] = ContextVar("bitcaster_sandbox_root_path", default="")


class HtmlResponse(Response):
    """A Django HTML page (404, 500, a redirect's empty body)."""

    def encode(self) -> tuple[bytes, str]:
        text = self.body if isinstance(self.body, str) else ""
        return text.encode(), "text/html; charset=utf-8"


class HeadResponse(Response):
    """A HEAD answer: the headers of the GET, no body."""

    def encode(self) -> tuple[bytes, str]:
        return b"", "application/json"


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


@dataclass
class ApiKey:
    """An API key: its organization, its project (None: an organization-wide key) and its grants."""

    name: str
    org: str
    project: str | None
    grants: frozenset[str]


@dataclass(frozen=True)
class _Endpoint:
    methods: tuple[str, ...]  # what DRF's Allow header names, in its order
    view: str  # DRF's metadata `name`
    description: str
    creates: bool  # POST creates a list (metadata `actions.POST`)


_DL, _DL_DOC = "Distribution", "List Project's DistributionList."
# The routes each release serves: the Allow header of each (from the real 3.1.2 server; the legacy ones are
# PROVIDERS.md's "POST d/ answers 405").
_ENDPOINTS: dict[str, dict[str, _Endpoint]] = {
    RELEASE: {
        "lists": _Endpoint(("GET", "POST", "HEAD", "OPTIONS"), _DL, _DL_DOC, True),
        "list": _Endpoint(("GET", "POST", "HEAD", "OPTIONS"), _DL, _DL_DOC, True),
        "add": _Endpoint(("GET", "POST", "OPTIONS"), _DL, _DL_DOC, True),
        "members": _Endpoint(("GET", "HEAD", "OPTIONS"), "Distribution Members", "Distribution list.", False),
    },
    LEGACY: {
        "lists": _Endpoint(("GET", "HEAD", "OPTIONS"), _DL, _DL_DOC, False),
        "list": _Endpoint(("GET", "HEAD", "OPTIONS"), _DL, _DL_DOC, False),
        "add": _Endpoint(("POST", "OPTIONS"), _DL, _DL_DOC, False),
        "members": _Endpoint(("GET", "HEAD", "OPTIONS"), "Distribution Members", "Distribution list.", False),
    },
}
_ROOT = API + "/o/{org}/p/{prj}/d/"
_TEMPLATES = {
    _ROOT: "lists",
    _ROOT + "{pk}/": "list",
    _ROOT + "{pk}/add/": "add",
    _ROOT + "{pk}/m/": "members",
}
_PATTERNS = {t: re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", t) + "$") for t in _TEMPLATES}
_POST_FIELDS = {  # DRF's metadata for DistributionListSerializer
    "name": {
        "type": "string",
        "required": True,
        "read_only": False,
        "label": "Name",
        "help_text": "name of this distribuition list",
        "max_length": 255,
    },
    "id": {"type": "integer", "required": False, "read_only": True, "label": "ID"},
    "members": {"type": "field", "required": False, "read_only": True, "label": "Members"},
    "application": {
        "type": "field",
        "required": False,
        "read_only": False,
        "label": "Application",
        "help_text": "when set, the distribution list is pinned to this application",
    },
}


class BitcasterSandbox(SandboxApp):
    name = "bitcaster"

    def __init__(
        self,
        *,
        keys: dict[str, tuple[str, str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        invalid_answer: Any = None,
        release: str = RELEASE,
    ) -> None:
        super().__init__()
        if release not in RELEASES:
            raise ValueError(f"unknown Bitcaster release {release!r}: one of {', '.join(RELEASES)}")
        self.release = release
        # The body of add/'s 400 refusal: upstream's (see INVALID_ADDRESSES) unless a test asks for another shape
        # a server could send (the docs' `{"error": "Invalid addresses"}`, a DRF list, `detail`, plain text).
        self.invalid_answer: Any = {"error": INVALID_ADDRESSES} if invalid_answer is None else invalid_answer
        self.clock = clock
        self.projects: dict[tuple[str, str], Project] = {}
        self.keys: dict[str, ApiKey] = {}  # API key value -> what it may do
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
        creates = release == RELEASE
        for method, path, handler, mutating in (
            ("GET", _ROOT, self._get_lists, False),
            ("POST", _ROOT, self._create, True),
            ("GET", _ROOT + "{pk}/", self._get_list, False),
            ("POST", _ROOT + "{pk}/", self._create, True),
            ("GET", _ROOT + "{pk}/add/", self._get_lists, False),
            ("POST", _ROOT + "{pk}/add/", self._add, True),
            ("GET", _ROOT + "{pk}/m/", self._get_members, False),
        ):
            if method in self._endpoint_of(path).methods and (creates or handler != self._create):
                self.add_route(method, path, handler, mutating=mutating)

    # -- test helpers (plain methods, not HTTP) -------------------------------------------------------
    def add_project(self, org: str = DEFAULT_ORG, project: str = DEFAULT_PROJECT) -> Project:
        with self.lock:
            return self.projects.setdefault((org, project), Project(org, project))

    def add_key(
        self,
        token: str,
        org: str = DEFAULT_ORG,
        project: str | None = DEFAULT_PROJECT,
        *,
        name: str | None = None,
        grants: Iterable[str] = (GRANT,),
    ) -> str:
        """Register an API key of this organization and project (created if need be; project None: a key of
        the whole organization), with these grants. Its name is what 403 answers print."""
        with self.lock:
            if project is not None:
                self.add_project(org, project)
            self.keys[token] = ApiKey(name or f"API key of {org}/{project}", org, project, frozenset(grants))
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
        """Create a distribution list holding these addresses (records are created for unknown ones). Names
        are unique in a project whatever their case, as in Bitcaster's database."""
        with self.lock:
            prj = self.add_project(org, project)
            if _taken(prj, name):
                raise ValueError(f"a list named {name!r} (in any case) exists in {org}/{project}")
            dl = DistributionList(next(self._list_ids), name)
            prj.lists[dl.id] = dl
            for email in emails:
                dl.members[self.add_address(email, org=org, project=project)] = None
            return dl.id

    def attach(self, list_id: int | str, record_id: int) -> None:
        """Put an existing address record into a list (an SMS number, an inactive record...)."""
        with self.lock:
            self._find_list(list_id).members[record_id] = None

    def delete_list(self, list_id: int | str) -> None:
        """Delete a list, as someone could in Bitcaster's admin (the API cannot)."""
        with self.lock:
            del self._project_of(list_id).lists[int(list_id)]

    def list_emails(self, list_id: int | str) -> list[str]:
        """The addresses of a list's members, in the order they joined."""
        with self.lock:
            prj = self._project_of(list_id)
            return [self._address_record(rid).address for rid in prj.lists[int(list_id)].members]

    def list_names(self, org: str = DEFAULT_ORG, project: str = DEFAULT_PROJECT) -> list[str]:
        with self.lock:
            return [dl.name for dl in self.projects[(org, project)].lists.values()]

    # -- SandboxApp hooks ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"testserver").decode("latin-1")
        root_path = str(scope.get("root_path", ""))
        token = _origin.set(f"{scope.get('scheme', 'http')}://{host}{root_path}")
        prefix = _root_path.set(root_path)
        try:
            await super().__call__(scope, receive, send)
        finally:
            _origin.reset(token)
            _root_path.reset(prefix)

    def not_found(self, request: Request) -> Response:
        return HtmlResponse(404, DJANGO_404)

    def rate_limited(self, retry_after: float) -> Response:
        # Upstream's SlidingWindowThrottle.wait() is window / rate (2 s), whatever the real wait; DRF rounds it up.
        limit = self.rate_limit
        wait = max(1, math.ceil(limit.window / limit.limit)) if limit is not None else 2
        detail = f"Request was throttled. Expected available in {wait} second{'' if wait == 1 else 's'}."
        return Response(429, {"detail": detail}, {"Retry-After": str(wait)})

    def _dispatch(self, request: Request, route: Route | None, params: dict[str, str], allowed: list[str]) -> Response:
        # Django first: the URL resolver (with its slug/int converters) and APPEND_SLASH, before any view.
        params, template = self._resolve(request.path)
        if template is None:
            if not request.path.endswith("/") and self._resolve(request.path + "/")[1] is not None:
                target = _root_path.get() + request.path + "/"
                if request.query_string:
                    target += "?" + request.query_string
                return HtmlResponse(301, "", {"Location": target})
            return self.not_found(request)
        endpoint = self._endpoint_of(template)
        response = self._view(request, params, template, endpoint)
        if not isinstance(response, HtmlResponse):  # DRF's answers name the view's methods; Django's 500 page not
            response.headers.setdefault("Allow", ", ".join(endpoint.methods))
        return response

    def _view(self, request: Request, params: dict[str, str], template: str, endpoint: _Endpoint) -> Response:
        """DRF's APIView.dispatch: authentication, permission (the key's scope and grants), throttle, method."""
        key, denied = self._authenticate(request)
        if denied is not None:
            return denied
        denied = self._permission(self.keys[key], params)
        if denied is not None:
            return denied
        throttled = self._throttle(key)
        if throttled is not None:
            return throttled
        method = request.method
        if method == "OPTIONS":
            return Response(200, self._metadata(endpoint))
        wanted = "GET" if method == "HEAD" else method
        routed = next((r for r in self.routes if r.template == template and r.method == wanted), None)
        if method not in endpoint.methods or routed is None:
            return Response(405, {"detail": NOT_ALLOWED.format(method)})
        request.params = params
        try:
            result = routed.handler(request)
        except HttpError as exc:
            return exc.response
        response = result if isinstance(result, Response) else Response(200, result)
        if method == "HEAD":
            return HeadResponse(response.status, None, response.headers)
        return response

    # -- routes -------------------------------------------------------------------------------------
    def _get_lists(self, request: Request) -> list[dict[str, Any]]:
        prj = self._project(request)
        return [self._list_obj(prj, dl) for dl in prj.lists.values()]

    def _get_list(self, request: Request) -> Response | dict[str, Any]:
        prj = self._project(request)
        dl = self._list(prj, request)
        if dl is None:
            return HtmlResponse(500, DJANGO_500)
        return self._list_obj(prj, dl)

    def _create(self, request: Request) -> Response:
        prj = self._project(request)
        data = request.json() if "json" in request.headers.get("content-type", "") else request.form()
        name = data.get("name") if isinstance(data, dict) else None
        if name is None:
            return Response(400, {"name": ["This field is required."]})
        name = str(name).strip()  # DRF's CharField trims whitespace
        if not name:
            return Response(400, {"name": ["This field may not be blank."]})
        if len(name) > 255:
            return Response(400, {"name": ["Ensure this field has no more than 255 characters."]})
        if _taken(prj, name):  # the column's collation ignores case
            return Response(400, {"name": [NAME_TAKEN]})
        dl = DistributionList(next(self._list_ids), name)
        prj.lists[dl.id] = dl
        return Response(201, self._list_obj(prj, dl))

    def _get_members(self, request: Request) -> list[dict[str, Any]]:
        prj = self._project(request)
        dl = self._list(prj, request)  # unknown: an empty queryset, not an error
        return [] if dl is None else [self._address_record(rid).as_member() for rid in dl.members]

    def _add(self, request: Request) -> Response | dict[str, Any]:
        prj = self._project(request)
        dl = self._list(prj, request)
        if dl is None:  # upstream's get_object() runs outside its try: a 500
            return HtmlResponse(500, DJANGO_500)
        try:
            data = json.loads(request.body)
        except ValueError as exc:
            return Response(400, {"error": str(exc)})
        if isinstance(data, dict):
            data = list(data)  # an `__in` filter iterates a dict's keys
        if not isinstance(data, list):
            return Response(400, {"error": f"object of type '{type(data).__name__}' has no len()"})
        wanted = {a for a in data if isinstance(a, str)}
        matched = sorted(
            (self._address_record(rid) for address in wanted for rid in self._records_of(prj.org, address)),
            key=lambda r: r.id,
        )
        expected, found = len(data), len(matched)
        if found != expected:
            return Response(400, self.invalid_answer)  # all or nothing: nothing was added
        for record in matched:
            dl.members.setdefault(record.id, None)
        return {"message": data, "expected": expected, "found": found, "added": [r.address for r in matched]}

    # -- internals ----------------------------------------------------------------------------------
    def _endpoint_of(self, template: str) -> _Endpoint:
        return _ENDPOINTS[self.release][_TEMPLATES[template]]

    @staticmethod
    def _resolve(path: str) -> tuple[dict[str, str], str | None]:
        """The route template this path resolves to (any method) and its parameters, with Django's converters:
        `<slug:org>`, `<slug:prj>`, `<int:pk>`."""
        for template, regex in _PATTERNS.items():
            m = regex.match(path)
            if m is None:
                continue
            values = m.groupdict()
            if not all(_SLUG.match(values[k]) for k in ("org", "prj")):
                continue
            if "pk" in values and not values["pk"].isdigit():
                continue
            return values, template
        return {}, None

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

    @staticmethod
    def _permission(key: ApiKey, params: dict[str, str]) -> Response | None:
        """Upstream's ApiBasePermission._check_valid_scope, in its order."""
        if params["org"] != key.org:
            return Response(403, {"detail": f"Invalid organization for {key.name}"})
        if key.project is None:
            return Response(403, {"detail": "Key not enabled for project scope"})
        if params["prj"] != key.project:
            return Response(403, {"detail": f"Invalid project for {key.name}"})
        if FULL_ACCESS not in key.grants and GRANT not in key.grants:
            return Response(403, {"detail": NO_PERMISSION})
        return None

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
        ok, _, reset = window.hit()  # a throttled request is not counted
        return None if ok else self.rate_limited(reset)

    def _metadata(self, endpoint: _Endpoint) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": endpoint.view,
            "description": endpoint.description,
            "renders": RENDERS,
            "parses": PARSES,
        }
        if endpoint.creates:
            body["actions"] = {"POST": _POST_FIELDS}
        return body

    def _project(self, request: Request) -> Project:
        return self.add_project(request.params["org"], request.params["prj"])

    @staticmethod
    def _list(prj: Project, request: Request) -> DistributionList | None:
        return prj.lists.get(int(request.params["pk"]))

    def _list_obj(self, prj: Project, dl: DistributionList) -> dict[str, Any]:
        members = f"{_origin.get()}{API}/o/{prj.org}/p/{prj.slug}/d/{dl.id}/m/"
        obj: dict[str, Any] = {"name": dl.name, "id": dl.id, "members": members}
        if self.release == RELEASE:
            obj["application"] = None
        return obj

    def _records_of(self, org: str, address: str) -> Sequence[int]:
        """Every record of this exact address in the organization (upstream matches across its projects)."""
        return [rid for prj in self.projects.values() if prj.org == org for rid in prj.by_address.get(address, [])]

    def _address_record(self, record_id: int) -> AddressRecord:
        for prj in self.projects.values():
            if record_id in prj.records:
                return prj.records[record_id]
        raise KeyError(f"no address record {record_id}")

    def _project_of(self, list_id: int | str) -> Project:
        for prj in self.projects.values():
            if int(list_id) in prj.lists:
                return prj
        raise KeyError(f"no distribution list {list_id}")

    def _find_list(self, list_id: int | str) -> DistributionList:
        return self._project_of(list_id).lists[int(list_id)]


def _taken(prj: Project, name: str) -> bool:
    """Whether a list of this name exists, compared as Bitcaster's case-insensitive collation does."""
    folded = name.casefold()
    return any(dl.name.casefold() == folded for dl in prj.lists.values())
