"""Bitcaster distribution lists (open-source, self-hosted notification platform on Django REST Framework).

Why this module exists: a Bitcaster project's distribution lists are one of the targets syncd keeps equal to
the source of truth. What follows was checked against a real Bitcaster 3.1.2 server (PyPI `bitcaster==3.1.2`,
run on loopback by `tools/real-bitcaster`; `tests/real/` runs the contract suite against it) and its source;
what is still an assumption says so.

* **Routes**, all under `{base_url}/o/{org}/p/{prj}/d/`: `GET d/` (every list of the project, unpaginated),
  `POST d/ {"name"}` (create a list, 3.1.2: 201 `{name, id, members, application}`), `GET d/{pk}/`,
  `POST d/{pk}/add/` (a JSON array of addresses) and `GET d/{pk}/m/` (the members, unpaginated). No route
  removes a member, renames or deletes a list: `can_remove` is False, `reset` is NONE, and `remove_members` /
  `reset_members` raise `UnsupportedOperation` without sending anything; members that should leave a list are
  reported by syncd as drift (`unsupported_remove`) for someone to remove in Bitcaster.
* **Creating lists depends on the release.** 3.1.2 creates one on `POST d/`; an older release answers 405
  (PROVIDERS.md). The connector finds out once per instance, writing nothing (`can_create_groups`, syncd's
  `GroupCreationProbe`): DRF's `Allow` header on the `GET d/` answer it reads anyway (`GET, POST, HEAD,
  OPTIONS` on 3.1.2), or, when no such answer carried one, one `OPTIONS d/`. `can_create_group` is True; on an
  older server syncd fails the pair saying to create the list in Bitcaster and the pass goes on. A 405 on
  `POST d/` is the same `UnsupportedOperation`. Names are unique per project **case-insensitively** (a
  duplicate → 400 `{"name": ["Name already exists!"]}`): that answer means the list exists, so it is looked
  up by name and returned. A create whose answer was lost (a dropped connection, a 5xx) is looked up by name
  (a fresh `GET d/`) before it is sent again (`connectors.batching.create_or_find`, within the retry
  budget), so a retry never makes a second list. `find_group(name=)`
  takes the exact name, else the one list whose name differs only in case (Bitcaster allows no other).
* **A list that no longer exists** answers HTTP 500 (an HTML page) on `d/{pk}/` and `d/{pk}/add/`, but 200
  `[]` on `d/{pk}/m/`. So an empty member read is believed only once `GET d/` lists the list this pass (one
  read, only when the member read is empty, shared by every pair); a 500 on `d/{pk}/...` is checked once
  against a fresh `GET d/` before any retry. Not listed → `NotFound("Bitcaster list N no longer exists ...")`
  (syncd then looks the group up by name again); listed → a real server error, retried as usual.
* **`add/` is all-or-nothing and case-sensitive**: unless every address matches an address record exactly
  as spelled (`ALICE@…` does not match `alice@…`), it answers 400 `{"error": "[ErrorDetail(string='Invalid
  addresses', code='invalid')]"}` and adds nothing; so does one address twice in a request (the connector
  sends each address once). Bitcaster has no API to create or look up addresses, so the connector sends the
  batch whole (one request when all are known) and, when refused, halves it recursively (`isolate_rejects`:
  `connectors.batching.isolate`, which splits a half that must be refused without sending it whole) so the
  good addresses still go in: with k unknown addresses among n, at most 1 + 2·k·⌈log2 n⌉ requests
  (100 addresses with 2 unknown: at most 29). **Spelling:** syncd compares members case-insensitively, but
  Bitcaster does not, so the connector sends the source's spelling first; an address refused alone whose
  lower-case form differs is tried once more in lower case (in one batch with the others of its chunk, halved
  the same way when refused) before it is rejected. The rest come back as permanent rejects
  (`code="unknown_address"`, the reason saying Bitcaster matches addresses case-sensitively): syncd records
  them once and does not send them again until the member's source data changes. An address assigned to two
  channels or owned by two users can never be added (upstream counts one record per assignment) and is
  rejected the same way.
* **Throttle: 30 requests per 60 s per key, a sliding window** over every endpoint; 400s count, 401/403 and
  throttled requests do not; no rate-limit headers; a 429 says `Retry-After: 2` (window ÷ rate) whatever the
  real wait. So the connector paces to the window itself (`Pacing.window = (30, 60.0)`): up to 30 requests
  go at once, the next one when the oldest leaves the window; on a 429 (another client on the same key) it
  waits until its own oldest request leaves the window (at least Retry-After), a wait that spends no retry.
* Auth is `Authorization: Key <token>` (another scheme → 401). A wrong organization or project in the URL
  answers 403 "Invalid organization/project for <key name>", a key without the distribution-list grant 403
  "You do not have permission to perform this action. ...": each becomes an AuthError that says what to fix.
* Every path ends with `/`: Django answers 301 to a path without its trailing slash, and the client does
  not follow redirects (a redirected POST would lose its body), so a 301 is a ProtocolError that says so.

Wire shapes (seen on 3.1.2): a list is `{name, id (int), members: <url of its members>, application}`; a
member is `{id (assignment id), address, user, channel, active}`; both listings are plain JSON arrays (a DRF
paginated `{results, next}` object is followed too, in case a server enables pagination); errors are DRF
`{"detail": ...}` (401/403/405/429), `{"error": ...}` from `add/` (400) and `{"name": [...]}` from a create;
a 400 saying "invalid ... address(es)" in any shape is the all-or-nothing refusal. `add/` answers 200
`{message, expected, found, added}`; nothing here depends on those fields, any 2xx means "added" (re-adding a
member changes nothing and is a 200; an empty array too).

How members count: a member is an address in the list **whatever its `active` flag says** (syncd can change
that flag neither way, and the address is in the list), so an inactive member is never "added" again. An
address that is not an email (a member through an SMS or chat channel) is kept, keyed by its member id: it
can never match a desired member, so under `mirror` it shows up as drift; under `owned` it is left alone.
One address listed through several channels counts once.

Defaults (override in the provider's config):

* `max_add_batch` 500 (`batch_size`), UNVERIFIED: there is no documented cap. 500 addresses are ~15 KB of
  JSON, far below Django's 2.5 MB body limit, and take 10 requests for 5,000 new members; each unknown
  address costs up to 2·⌈log2 500⌉ = 18 requests, where 1,000 would cost 20 and save 5 requests per 5,000.
* pacing: the window `throttle_requests` 30 per `throttle_seconds` 60 (Bitcaster's SlidingWindowThrottle
  defaults; an installation can change them), plus a token bucket of `rate_limit` 0.5/s and `burst` 30 inside
  it, and 2 requests in flight (`max_concurrency`). The window is the hard limit: whatever `rate_limit` and
  `burst` say, no more than `throttle_requests` go in any `throttle_seconds`. At their defaults the bucket
  never holds a request the window would let go; lower them to spread requests out (`burst: 1` sends one
  every 1/`rate_limit` s). `throttle_requests: null` turns the window off (only the bucket paces then).

A connector instance lives for one pass: the list of lists (`GET d/`) is read at most once per instance
(again only to settle a create or a 500) and shared by every pair that looks a list up by name.

Logging is DEBUG only and never carries emails or the key; errors name paths, never headers.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, field_validator

from connectors.base import (
    AuthError,
    BatchRejected,
    BatchResult,
    Capabilities,
    Closing,
    ConnectorError,
    Contact,
    FatalError,
    MemberKeyKind,
    MemberReject,
    NotFound,
    Pacing,
    ProtocolError,
    RemoteGroup,
    RemoteMember,
    ResetKind,
    UnsupportedOperation,
)
from connectors.batching import chunks, create_or_find, isolate
from connectors.http import (
    ApiClient,
    BearerAuth,
    RequestHooks,
    RetryPolicy,
    body_or_none,
    error_for_status,
    json_body,
    make_client,
)
from connectors.settings import BuildContext, ProviderSettings

log = logging.getLogger("syncd.connectors.bitcaster")

T = TypeVar("T")

MAX_ADD = 500  # UNVERIFIED: addresses per add/ request (no documented cap)
THROTTLE = (30, 60.0)  # Bitcaster's SlidingWindowThrottle: 30 requests per key in any 60 s (seen on 3.1.2)
# The window is the limit; the token bucket inside it (0.5/s, bursts of 30) never holds back a request the window
# would let go, and gives `rate_limit` / `burst` something to tune.
PACING = Pacing(rate=THROTTLE[0] / THROTTLE[1], burst=THROTTLE[0], max_concurrency=2, window=THROTTLE)
SLUG = r"^[-a-zA-Z0-9_]+$"  # Django's <slug:...> path converter
MAX_PAGES = 1000  # a paginated listing (not documented, tolerated) longer than this is a server bug

UNKNOWN_ADDRESS = (
    "Bitcaster has no address record spelled exactly like this email (it matches addresses case-sensitively): "
    "create the user/address in Bitcaster"
)
UNKNOWN_SPELLING = (
    "Bitcaster has no address record spelled like this email, nor in lower case (it matches addresses "
    "case-sensitively): spell it in the source as Bitcaster has it, or create the address in Bitcaster"
)
MSG_INVALID_ADDRESSES = "Invalid addresses"

CAPABILITIES = Capabilities(
    member_key=MemberKeyKind.EMAIL,
    max_add_batch=MAX_ADD,
    max_remove_batch=1,  # irrelevant: there is no remove endpoint
    can_create_group=True,  # 3.1.2 creates on POST d/; older releases answer 405 (`can_create_groups` asks)
    can_remove=False,  # no remove route
    reset=ResetKind.NONE,
    pacing=PACING,
    adds_verifiable=False,  # add/ is the only way to learn that an address has no record
)


# -------------------------------------------------------------------------------------------- settings


class BitcasterSettings(ProviderSettings):
    """A Bitcaster project, reached with one of its API keys."""

    type: Literal["bitcaster"] = Field(default="bitcaster", description="Bitcaster distribution lists.")
    base_url: str = Field(
        description="API root of your own Bitcaster server, `https://<host>/api` (self-hosted: no default). "
        "https, except on a loopback host.",
    )
    token: SecretStr = Field(
        description="A Bitcaster API key of this organization and project, with the distribution-list grant; "
        "sent as `Authorization: Key <token>`.",
    )
    organization: str = Field(
        pattern=SLUG,
        description="Slug of the organization the lists belong to (the `o/<org>` of URLs); must be the key's.",
    )
    project: str = Field(
        pattern=SLUG,
        description="Slug of the project the lists belong to (the `p/<prj>` of URLs); must be the key's.",
    )
    throttle_requests: int | None = Field(
        THROTTLE[0],
        ge=1,
        description="The server's throttle: requests per key in any `throttle_seconds` (Bitcaster's default 30). "
        "syncd never sends more in any such span, whatever `rate_limit` and `burst` say; null turns this "
        "window off (then only `rate_limit` / `burst` pace).",
    )
    throttle_seconds: float = Field(
        THROTTLE[1], gt=0, description="The throttle's sliding window in seconds (Bitcaster's default 60)."
    )

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("token must not be empty")
        return value

    @property
    def window(self) -> tuple[int, float] | None:
        return None if self.throttle_requests is None else (self.throttle_requests, self.throttle_seconds)

    def pacing(self, default: Pacing) -> Pacing:
        """`rate_limit` / `burst` / `max_concurrency` shape the token bucket; the window comes from the throttle
        keys."""
        return replace(super().pacing(default), window=self.window)


# ------------------------------------------------------------------------------------- wire handling

_SCOPE = re.compile(r"/o/(?P<org>[^/]+)/p/(?P<prj>[^/]+)/")
_LIST_PATH = re.compile(r"/d/(?P<pk>\d+)/(?:add/)?$")  # the paths that answer 500 for a list that is gone
_INVALID_ADDRESSES = re.compile(r"\binvalid\b[^.\n]{0,40}?\baddress", re.IGNORECASE)
_NAME_TAKEN = re.compile(r"already exists", re.IGNORECASE)

# Set while a list-scoped request is resent after `GET d/` showed its list still exists: a 500 is then the
# server's trouble, retried like any other (see BitcasterConnector._list_scoped).
_list_confirmed: ContextVar[bool] = ContextVar("bitcaster_list_confirmed", default=False)


class ListUnavailable(FatalError):
    """HTTP 500 on `d/{pk}/` or `d/{pk}/add/`: how Bitcaster answers for a list that does not exist (or a real
    server error). The connector checks `GET d/` before anything is retried."""

    def __init__(self, message: str, *, status: int | None = None, list_id: str = "") -> None:
        super().__init__(message, status=status)
        self.list_id = list_id


class NameTaken(FatalError):
    """400 `{"name": ["Name already exists!"]}` on a create: a list of that name (in any case) exists."""


def error_message(response: httpx.Response) -> str:
    """The server's message: DRF `detail`, add/'s `error`, or the start of a non-JSON body."""
    body = body_or_none(response)
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("detail", "error", "message") if body.get(k) not in (None, "")]
        if parts:
            return ": ".join(parts)[:300]
        return str(body)[:300]
    if isinstance(body, list | str):
        return str(body)[:300]
    text = response.text.strip()
    if text.startswith("<"):  # a Django HTML error page says nothing more than its status
        return response.reason_phrase
    return text[:300] or response.reason_phrase


def auth_hint(status: int, detail: str, org: str, prj: str) -> str:
    """What to fix for a 401/403, from Bitcaster's own words (its permission class, DRF's authentication)."""
    if status == 401:
        return (
            "check the token: Bitcaster knows no active API key with this value (it is sent as "
            "`Authorization: Key <token>`, the only scheme Bitcaster accepts)"
        )
    words = detail.lower()
    if words.startswith("invalid organization"):
        return (
            f"the API key belongs to another organization than {org!r}: set the provider's `organization` to "
            f"the key's organization slug, or use a key of organization {org!r}"
        )
    if words.startswith("invalid project"):
        return (
            f"the API key belongs to another project than {prj!r}: set the provider's `project` to the key's "
            f"project slug, or use a key of project {prj!r} (organization {org!r})"
        )
    if "not enabled for project scope" in words:
        return f"the API key is not bound to a project: use a key made for project {prj!r} of organization {org!r}"
    if "do not have permission" in words:
        return (
            "the API key lacks the distribution-list grant: give it the DISTRIBUTION_LIST grant (or FULL_ACCESS) "
            "in Bitcaster, or use a key that has it"
        )
    if "origin" in words:
        return "the API key is a web key, tied to browser origins: use a server API key"
    return (
        f"the API key must belong to organization {org!r} and project {prj!r} (the provider's `organization` "
        "and `project`) and carry the distribution-list grant"
    )


def classify(response: httpx.Response) -> ConnectorError | None:
    """Errors of the Bitcaster API: DRF `{"detail": ...}`, `{"error": ...}` from add/, `{"name": [...]}` from a
    create, HTML 500 pages for a missing list, redirects, anything else by status."""
    status = response.status_code
    if status < 300:
        return None
    request = response.request
    where = f"{request.method} {request.url.path}"
    if status < 400:
        # Django's APPEND_SLASH answers 301 to a path without its trailing slash. Every path syncd sends ends
        # with one, so a redirect means a base_url pointing elsewhere (a proxy, http -> https...).
        location = httpx.URL(response.headers.get("Location", "")).path or "?"
        return ProtocolError(
            f"{where}: HTTP {status} redirect to {location}: Bitcaster redirects a URL that lacks its trailing "
            "slash, and syncd does not follow redirects (a POST would lose its body): check base_url "
            "(https://<host>/api)",
            status=status,
        )
    message = error_message(response)
    if status == 400 and _INVALID_ADDRESSES.search(response.text):
        # Upstream sends str(ValidationError) in `error` ("[ErrorDetail(string='Invalid addresses', ...)]"); the
        # docs say `{"error": "Invalid addresses"}`, and DRF's own shapes are a list or `detail`. So the words are
        # looked for in the whole body, whatever its shape (and "Invalid email addresses" too).
        return BatchRejected(
            f"{where}: {MSG_INVALID_ADDRESSES} (some address has no address record spelled exactly so)", status=400
        )
    if status == 400:
        body = body_or_none(response)
        if isinstance(body, dict) and _NAME_TAKEN.search(str(body.get("name", ""))):
            return NameTaken(f"{where}: HTTP 400: a list of that name exists already", status=400)
    if status == 405:
        return UnsupportedOperation(
            f"{where}: HTTP 405: {message}: this Bitcaster server has no such operation", status=405
        )
    if status in (401, 403):
        scope = _SCOPE.search(request.url.path)
        org, prj = (scope["org"], scope["prj"]) if scope else ("?", "?")
        return AuthError(f"{where}: HTTP {status}: {message}: {auth_hint(status, message, org, prj)}", status=status)
    listed = _LIST_PATH.search(request.url.path)
    if status == 500 and listed and not _list_confirmed.get():
        return ListUnavailable(
            f"{where}: HTTP 500 (how Bitcaster answers for a list that does not exist)",
            status=500,
            list_id=listed["pk"],
        )
    return error_for_status(response, f"{where}: {message}")


def allowed_methods(response: httpx.Response) -> set[str] | None:
    """The methods DRF's `Allow` header names, or None when the answer has none."""
    value = response.headers.get("Allow")
    if value is None:
        return None
    return {m.strip().upper() for m in value.split(",") if m.strip()}


def _items(body: Any, where: str) -> tuple[list[Any], str | None]:
    """A listing's items and the next page's URL: a plain JSON array (documented), or DRF's paginated object."""
    if isinstance(body, list):
        return body, None
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        nxt = body.get("next")
        return body["results"], nxt if isinstance(nxt, str) and nxt else None
    raise ProtocolError(f"{where}: expected a JSON array")


def _group(obj: Any, where: str) -> RemoteGroup:
    if not isinstance(obj, dict) or obj.get("id") is None or isinstance(obj.get("id"), bool):
        raise ProtocolError(f"{where}: expected a distribution list object with an id")
    return RemoteGroup(id=str(obj["id"]).strip(), name=str(obj.get("name") or ""))


def _by_name(lists: Sequence[RemoteGroup], name: str) -> RemoteGroup | None:
    """The list of exactly this name, else the one whose name differs only in case: Bitcaster compares list
    names case-insensitively (a second list named alike cannot exist)."""
    exact = [g for g in lists if g.name == name]
    if exact:
        if len(exact) > 1:
            log.debug("%d lists are named alike; taking the first", len(exact))
        return exact[0]
    folded = [g for g in lists if g.name.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


def _looks_like_email(address: str) -> bool:
    """`local@domain`: an SMS number or a chat handle (`@user`) is not one."""
    local, at, domain = address.strip().rpartition("@")
    return bool(at and local and domain and not any(ch.isspace() for ch in local + domain))


def _members(items: list[Any], where: str) -> list[RemoteMember]:
    members: dict[str, RemoteMember] = {}
    inactive = other = 0
    for item in items:
        if not isinstance(item, dict):
            raise ProtocolError(f"{where}: expected member objects")
        mid = item.get("id")
        member_id = None if mid is None or isinstance(mid, bool) else str(mid)
        address = item.get("address")
        if isinstance(address, str) and _looks_like_email(address):
            member = RemoteMember(email=address.strip(), id=member_id)
        elif member_id is not None:
            other += 1  # an SMS number, a chat handle...: in the list, but never one of ours
            member = RemoteMember(email=None, id=member_id)
        else:
            raise ProtocolError(f"{where}: a member without an id or an email address")
        if item.get("active") is False:
            inactive += 1  # still in the list: syncd cannot change `active` either way
        members.setdefault(member.key, member)  # one address through several channels counts once
    if inactive or other:
        log.debug("%s: %d inactive members, %d non-email members (counted as members)", where, inactive, other)
    return list(members.values())


async def isolate_rejects(
    send: Callable[[Sequence[T]], Awaitable[None]], items: Sequence[T]
) -> tuple[list[T], list[T]]:
    """`connectors.batching.isolate` as add/ needs it: add/ is all-or-nothing and refuses a batch for its
    unknown addresses alone, so a refused batch whose first half went through is split without being sent
    whole (`infer_refused`). With k refused addresses among n, at most 1 + 2·k·⌈log2 n⌉ requests; returns
    (sent, refused), each in the original order."""
    return await isolate(send, items, infer_refused=True)


# ------------------------------------------------------------------------------------------ connector


class BitcasterConnector(Closing):
    """One Bitcaster project's distribution lists, through `connectors.http.ApiClient`."""

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        *,
        organization: str,
        project: str,
        capabilities: Capabilities = CAPABILITIES,
        pacing: Pacing | None = None,
        retry: RetryPolicy | None = None,
        hooks: RequestHooks | None = None,
    ) -> None:
        self.name = name
        self.capabilities = capabilities
        self.organization = organization
        self.project = project
        self.api = ApiClient(
            client,
            provider=name,
            classify=classify,
            pacing=pacing or capabilities.pacing,
            retry=retry,
            hooks=hooks,
        )
        # Relative to the client's base URL (`.../api/`); slugs are quoted although the settings allow only
        # slug characters, and every path ends with "/" (Django redirects the others).
        self._root = f"o/{quote(organization, safe='')}/p/{quote(project, safe='')}/d/"
        self._lists: list[RemoteGroup] | None = None  # GET d/, read at most once per instance (unless settling)
        self._lists_lock = asyncio.Lock()
        self._exists: set[str] = set()  # ids seen to exist this pass (listed, read by id, created)
        self._allow_post: bool | None = None  # what the Allow header of a `d/` answer said about POST
        self._can_create: bool | None = None  # the probe's answer, kept for the connector's life
        self._probe_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"BitcasterConnector(name={self.name!r}, organization={self.organization!r}, project={self.project!r})"

    @property
    def _scope(self) -> str:
        return f"organization {self.organization!r}, project {self.project!r}"

    def _list_path(self, group_id: str) -> str:
        return f"{self._root}{quote(group_id.strip(), safe='')}/"

    # -- groups ------------------------------------------------------------------------------------
    async def find_group(self, *, group_id: str | None = None, name: str | None = None) -> RemoteGroup | None:
        if group_id is not None:
            found = await self._find_by_id(group_id.strip())
            if found is not None:
                return found
        if name is None:
            return None
        return _by_name(await self._all_lists(), name)

    async def _find_by_id(self, group_id: str) -> RemoteGroup | None:
        if not group_id.isdigit():
            log.debug("%s: list ids are integers; %r cannot name one", self.name, group_id)
            return None
        if self._lists is not None:  # already read this pass: no request
            return next((g for g in self._lists if g.id == group_id), None)
        try:
            group = _group(await self.api.json("GET", self._list_path(group_id)), "GET d/{pk}/")
        except (ListUnavailable, NotFound):
            # Bitcaster answers 500 for a list that does not exist (a server following its docs would say 404):
            # the list of lists says whether it does, and serves any name lookup of this pass too.
            return next((g for g in await self._all_lists() if g.id == group_id), None)
        self._exists.add(group.id)
        return group

    async def _all_lists(self, *, fresh: bool = False) -> list[RemoteGroup]:
        """Every list of the project: read once per instance and shared (concurrent pairs wait for one read);
        `fresh` reads again, to settle a create or a 500."""
        async with self._lists_lock:
            if self._lists is None or fresh:
                try:
                    response = await self.api.request("GET", self._root)
                except NotFound as exc:
                    raise NotFound(
                        f"Bitcaster answered HTTP 404 for the list of distribution lists of {self._scope}: "
                        "check base_url (`https://<host>/api`); a wrong organization or project would be a 403",
                        status=exc.status,
                    ) from exc
                self._note_allow(response)
                items = await self._follow(json_body(response), "GET d/")
                self._lists = [_group(obj, "GET d/") for obj in items]
                self._exists = {g.id for g in self._lists}
                log.debug("%s: %d distribution lists", self.name, len(self._lists))
            return self._lists

    def _note_allow(self, response: httpx.Response) -> None:
        methods = allowed_methods(response)
        if methods is not None:
            self._allow_post = "POST" in methods

    def _remember(self, group: RemoteGroup) -> None:
        self._exists.add(group.id)
        if self._lists is not None and all(g.id != group.id for g in self._lists):
            self._lists.append(group)

    async def can_create_groups(self) -> bool:
        """Whether this server creates lists (3.1.2) or answers 405 (older releases), found out once, writing
        nothing: the `Allow` header of a `GET d/` answer already read, else one `OPTIONS d/`."""
        async with self._probe_lock:
            if self._can_create is None:
                self._can_create = await self._probe()
                log.debug("%s: the server %s create lists", self.name, "can" if self._can_create else "cannot")
            return self._can_create

    async def _probe(self) -> bool:
        if self._allow_post is not None:
            return self._allow_post
        try:
            response = await self.api.request("OPTIONS", self._root)
        except UnsupportedOperation:  # a server that does not even answer OPTIONS: assume the older API
            return False
        methods = allowed_methods(response)
        if methods is not None:
            return "POST" in methods
        body = body_or_none(response)  # DRF's metadata names the write methods under `actions`
        return isinstance(body, dict) and isinstance(body.get("actions"), dict) and "POST" in body["actions"]

    def _cannot_create(self, name: str) -> str:
        return (
            f"this Bitcaster server cannot create distribution lists through its API (POST d/ answers 405; "
            f"Bitcaster 3.1.2 can): create the list {name!r} in Bitcaster ({self._scope}), then run again, "
            "or set group_id in the group's target"
        )

    async def create_group(self, name: str) -> RemoteGroup:
        if self._can_create is False:
            raise UnsupportedOperation(self._cannot_create(name))

        async def create() -> RemoteGroup:
            response = await self.api.request("POST", self._root, json={"name": name}, idempotent=False)
            group = _group(json_body(response), "POST d/")
            self._remember(group)
            log.debug("%s: created list %s", self.name, group.id)
            return group

        async def find() -> RemoteGroup | None:
            found = _by_name(await self._all_lists(fresh=True), name)
            log.debug("%s: a create was taken or lost; by name: %s", self.name, found.id if found else "no list")
            return found

        try:
            # A lost answer (a dropped connection, a 5xx) may hide a list that now exists: a fresh GET d/ looks
            # before the create goes again, so a retry never makes a second list. A name taken (in any case) is
            # the list itself: made by someone else, or by an earlier attempt of ours whose answer was lost.
            group = await create_or_find(
                create,
                find,
                attempts=self.api.retry.max_retries + 1,
                pause=self.api.pause,
                taken=lambda error: isinstance(error, NameTaken),
            )
        except NameTaken as exc:
            raise ProtocolError(
                f"{exc.message}, but GET d/ lists no list named {name!r} (in any case)", status=400
            ) from exc
        except UnsupportedOperation as exc:
            self._can_create = self._allow_post = False
            raise UnsupportedOperation(self._cannot_create(name), status=exc.status) from exc
        self._can_create = True
        return group

    # -- members -----------------------------------------------------------------------------------
    async def read_members(self, group: RemoteGroup) -> list[RemoteMember]:
        where = "GET d/{pk}/m/"
        items = await self._follow(await self.api.json("GET", self._list_path(group.id) + "m/"), where)
        if not items and not await self._exists_now(group.id):
            # m/ answers 200 [] for any unknown list id: an empty read proves nothing until d/ lists the list.
            raise NotFound(
                f"Bitcaster list {group.id} ({group.name!r}) no longer exists: GET d/ does not list it (its member "
                "read was empty, as Bitcaster answers for any unknown list)"
            )
        return _members(items, where)

    async def _exists_now(self, group_id: str) -> bool:
        """Whether `d/` lists this list: known this pass (listed, read by id, created), else one `GET d/`."""
        if group_id in self._exists:
            return True
        return any(g.id == group_id for g in await self._all_lists())

    async def _list_scoped(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request on `d/{pk}/...`. Bitcaster answers 500 there for a list that does not exist: before anything
        is retried, one fresh `GET d/` says whether the list is gone (NotFound) or the server is in trouble
        (the request is then sent again, 500s retried as usual)."""
        try:
            return await self.api.request(method, path, **kwargs)
        except ListUnavailable as exc:
            if all(g.id != exc.list_id for g in await self._all_lists(fresh=True)):
                raise NotFound(
                    f"Bitcaster list {exc.list_id} no longer exists ({exc.message}, and GET d/ no longer lists it): "
                    "syncd looks the group up by name on its next pass",
                    status=500,
                ) from exc
            log.debug("%s: list %s still exists: retrying a server error", self.name, exc.list_id)
            token = _list_confirmed.set(True)
            try:
                return await self.api.request(method, path, **kwargs)
            finally:
                _list_confirmed.reset(token)

    async def add_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        # One address twice in a batch makes add/ refuse it (expected != found): send each key once.
        first: dict[str, Contact] = {}
        for c in contacts:
            first.setdefault(c.key, c)
        unique = list(first.values())
        path = self._list_path(group.id) + "add/"

        async def post(addresses: list[str]) -> None:
            # Adding an address already in the list changes nothing, so the request is safe to resend.
            response = await self._list_scoped("POST", path, json=addresses, idempotent=True)
            body = body_or_none(response)
            if isinstance(body, dict):
                log.debug(
                    "%s: add/ of %d: expected %s, found %s",
                    self.name,
                    len(addresses),
                    body.get("expected"),
                    body.get("found"),
                )

        async def as_spelled(part: Sequence[Contact]) -> None:
            await post([c.email for c in part])

        async def lower_cased(part: Sequence[Contact]) -> None:
            await post([c.email.lower() for c in part])

        done: list[str] = []
        rejected: list[MemberReject] = []
        for chunk in chunks(unique, self.capabilities.max_add_batch):
            ok, bad = await isolate_rejects(as_spelled, chunk)
            # Bitcaster matches addresses as spelled; syncd does not. An address refused as the source spells it
            # may be known in lower case (the usual spelling of address records): try that once.
            respell = [c for c in bad if c.email != c.email.lower()]
            ok_lower, _ = await isolate_rejects(lower_cased, respell)
            done += [c.key for c in ok] + [c.key for c in ok_lower]
            went_in = {c.key for c in ok_lower}
            for c in bad:
                if c.key not in went_in:
                    reason = UNKNOWN_ADDRESS if c.email == c.email.lower() else UNKNOWN_SPELLING
                    rejected.append(MemberReject(c.email, reason, permanent=True, code="unknown_address"))
            if ok_lower:
                log.debug("%s: %d addresses went in spelled in lower case", self.name, len(ok_lower))
        if rejected:
            log.debug("%s: %d addresses without an address record", self.name, len(rejected))
        return BatchResult(tuple(done), tuple(rejected))

    async def remove_members(self, group: RemoteGroup, members: Sequence[RemoteMember]) -> BatchResult:
        raise UnsupportedOperation(
            f"Bitcaster's API has no endpoint to remove members from a distribution list: remove the "
            f"{len(members)} member(s) from list {group.name or group.id!r} in Bitcaster "
            "(syncd reports them as drift)"
        )

    async def reset_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        raise UnsupportedOperation(
            "Bitcaster's API cannot replace a distribution list's members (it can only add): syncd adds the "
            f"missing members of list {group.name or group.id!r}; remove the others in Bitcaster"
        )

    async def aclose(self) -> None:
        await self.api.aclose()

    # -- requests ----------------------------------------------------------------------------------
    async def _follow(self, body: Any, where: str) -> list[Any]:
        """A listing's items (documented: no pagination). A DRF-paginated answer's `next` links are followed,
        on the API's own host only (the key goes wherever the request goes)."""
        items, nxt = _items(body, where)
        base = self.api.client.base_url
        seen: set[str] = set()
        while nxt is not None:
            url = httpx.URL(nxt)
            if url.host != base.host or url.scheme != base.scheme or nxt in seen or len(seen) >= MAX_PAGES:
                raise ProtocolError(f"{where}: refusing to follow the next-page link ({url.host}{url.path})")
            seen.add(nxt)
            page, nxt = _items(await self.api.json("GET", nxt), where)
            items += page
        return items


# ---------------------------------------------------------------------------------------------- build


def build(settings: BitcasterSettings, ctx: BuildContext) -> BitcasterConnector:
    client = make_client(
        settings.base_url,
        auth=BearerAuth(settings.token, scheme="Key"),
        timeout=settings.timeout,
        transport=ctx.transport,
    )
    return BitcasterConnector(
        settings.name,
        client,
        organization=settings.organization,
        project=settings.project,
        capabilities=settings.capabilities(CAPABILITIES),
        retry=settings.retry.policy(),
        hooks=ctx.hooks,
    )
