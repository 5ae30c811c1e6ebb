"""Bitcaster distribution lists (open-source, self-hosted notification platform on Django REST Framework).

Why this module exists: a Bitcaster project's distribution lists are one of the targets syncd keeps equal to
the source of truth. Bitcaster's API is small, and what it lacks shapes everything below:

* **Only four endpoints are routed**, all under `{base_url}/o/{org}/p/{prj}/d/`: `GET d/` (every list of
  the project, unpaginated), `GET d/{pk}/`, `POST d/{pk}/add/` (a JSON array of addresses) and
  `GET d/{pk}/m/` (the members, unpaginated).
* **Impossible through this API:** creating a list (`POST d/` answers 405), removing a member, renaming or
  deleting a list (no such routes). So `can_create_group` and `can_remove` are False, `reset` is NONE, and
  `create_group`, `remove_members` and `reset_members` raise `UnsupportedOperation` without sending
  anything. A list must be created in Bitcaster before syncd can fill it (syncd fails the pair and says
  what to create); members that should leave a list are reported by syncd as drift (`unsupported_remove`),
  for someone to remove in Bitcaster.
* **`add/` is all-or-nothing**: unless every address matches an existing address record, it answers 400
  `{"error": "Invalid addresses"}` and adds nothing. Bitcaster has no API here to create users/addresses,
  and none to look an address up, so the connector cannot know beforehand which addresses will pass. It
  sends the batch whole (one request when all are known) and, when refused, halves it recursively
  (`isolate_rejects`) so the good addresses still go in: with k unknown addresses among n, at most
  1 + 2·k·⌈log2 n⌉ requests (100 addresses with 2 unknown: at most 29). The unknown ones come back as
  permanent rejects (`code="unknown_address"`): syncd records them once and does not send them again
  until the member's source data changes. Bisection cost grows with log2 of the batch, which is why the
  default batch is 500 and not larger (see below).
* **Rate limit: 30 requests per 60 s per key, sliding window.** A token bucket with burst b and rate r lets
  b + 60·r requests into any 60 s window, so the default pacing is burst 1 and rate 29/60 requests/s: at
  most 1 + 29 = 30 in any window, never more. A 429 is still waited out (honouring `Retry-After`, DRF's
  header) without spending the retry budget, e.g. when another client uses the same key.
* Auth is `Authorization: Key <token>`; the key's organization and project must match the URL, otherwise
  403 `{"detail": ...}` (turned into an AuthError that says so).
* Every path ends with `/`: Django answers 301 to a path without its trailing slash, and the client does
  not follow redirects (a redirected POST would lose its body), so a 301 is a ProtocolError that says so.

Wire shapes assumed where the docs are silent (PROVIDERS.md, "Wire shapes assumed"); check them against a
real server:

* a list is `{name, id (int), members: <url of its members>}`; a member is
  `{id, address, user, channel, active}`; both listings are plain JSON arrays (a DRF paginated
  `{results, next}` object is followed too, in case a server enables pagination);
* errors are DRF `{"detail": ...}` (401/403/404/405/429) and `{"error": ...}` from `add/` (400); a 400 saying
  "invalid ... address(es)" in any shape (`error`, `detail`, a list, plain text) is the all-or-nothing refusal;
* a path without its trailing slash answers 301; over the rate limit, 429 with `Retry-After`;
* `add/` answers `{message, expected, found, added}`. Upstream source (bitcaster-io/bitcaster,
  `src/bitcaster/api/distribution_list.py`) shows `message` is the posted array, `expected`/`found` counts
  and `added` the matched addresses; nothing here depends on those fields, any 2xx means "added";
* addresses match exactly as spelled (upstream filters `address__value__in`, case-sensitive on
  PostgreSQL): the source's spelling is sent, and an address Bitcaster spells differently is rejected as
  unknown. Upstream also counts one record per (address, channel) assignment, so an address assigned to
  two channels may be refused as well; the reject reason then still points at the address in Bitcaster.

How members count: a member is an address in the list **whatever its `active` flag says** (syncd can change
that flag neither way, and the address is in the list), so an inactive member is never "added" again. An
address that is not an email (a member through an SMS or chat channel) is kept, keyed by its member id: it
can never match a desired member, so under `mirror` it shows up as drift; under `owned` (the default for a
list syncd did not create, i.e. every Bitcaster list) it is left alone. One address listed through several
channels counts once.

Unverified defaults (override in the provider's config once the real limits are known):

* `max_add_batch` 500 (`batch_size`): the docs give no cap. 500 addresses are ~15 KB of JSON, far below
  Django's 2.5 MB body limit, and take 10 requests for 5,000 new members; each unknown address costs up to
  2·⌈log2 500⌉ = 18 requests (~37 s at 29/min), where 1,000 would cost 20 and save only 5 requests per
  5,000 members.
* pacing: rate 29/60 requests/s, burst 1, 2 in flight (`rate_limit`, `burst`, `max_concurrency`). The
  throttle is configurable per Bitcaster installation; keep `burst + 60·rate_limit` at or below its limit.

A connector instance lives for one pass: the list of lists (`GET d/`) is read at most once per instance
and shared by every pair that looks a list up by name.

Logging is DEBUG only and never carries emails or the key; errors name paths, never headers.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, field_validator

from connectors.base import (
    AuthError,
    BatchRejected,
    BatchResult,
    Capabilities,
    ConnectorError,
    Contact,
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
from connectors.http import (
    ApiClient,
    BearerAuth,
    RequestHooks,
    RetryPolicy,
    body_or_none,
    error_for_status,
    make_client,
)
from connectors.settings import BuildContext, ProviderSettings

log = logging.getLogger("syncd.connectors.bitcaster")

T = TypeVar("T")

MAX_ADD = 500  # UNVERIFIED: addresses per add/ request (no documented cap)
PACING = Pacing(rate=29 / 60, burst=1, max_concurrency=2)  # 1 + 29 = 30 requests in any 60 s window at most
SLUG = r"^[-a-zA-Z0-9_]+$"  # Django's <slug:...> path converter
MAX_PAGES = 1000  # a paginated listing (not documented, tolerated) longer than this is a server bug

UNKNOWN_ADDRESS = "Bitcaster has no address record for this email: create the user/address in Bitcaster"
MSG_INVALID_ADDRESSES = "Invalid addresses"

CAPABILITIES = Capabilities(
    member_key=MemberKeyKind.EMAIL,
    max_add_batch=MAX_ADD,
    max_remove_batch=1,  # irrelevant: there is no remove endpoint
    can_create_group=False,  # POST d/ answers 405
    can_remove=False,  # no remove route
    reset=ResetKind.NONE,
    pacing=PACING,
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

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("token must not be empty")
        return value


# ------------------------------------------------------------------------------------- wire handling

_SCOPE = re.compile(r"/o/(?P<org>[^/]+)/p/(?P<prj>[^/]+)/")
_INVALID_ADDRESSES = re.compile(r"\binvalid\b[^.\n]{0,40}?\baddress", re.IGNORECASE)


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


def classify(response: httpx.Response) -> ConnectorError | None:
    """Errors of the Bitcaster API: DRF `{"detail": ...}`, `{"error": ...}` from add/, redirects, anything else
    by status."""
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
        # The docs give `{"error": "Invalid addresses"}`; upstream sends str(ValidationError) in `error`
        # ("[ErrorDetail(string='Invalid addresses', ...)]"), and DRF's own shapes are a list or `detail`. So the
        # words are looked for in the whole body, whatever its shape (and "Invalid email addresses" too).
        return BatchRejected(f"{where}: {MSG_INVALID_ADDRESSES} (some address has no address record)", status=400)
    if status == 405:
        return UnsupportedOperation(
            f"{where}: HTTP 405: {message}: the Bitcaster API has no such operation", status=405
        )
    if status in (401, 403):
        scope = _SCOPE.search(request.url.path)
        org, prj = (scope["org"], scope["prj"]) if scope else ("?", "?")
        hint = (
            "check the token (a Bitcaster API key, sent as `Authorization: Key <token>`)"
            if status == 401
            else f"the API key must belong to organization {org!r} and project {prj!r} (the provider's "
            "`organization` and `project`) and carry the distribution-list grant"
        )
        return AuthError(f"{where}: HTTP {status}: {message}: {hint}", status=status)
    return error_for_status(response, f"{where}: {message}")


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


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


async def isolate_rejects(
    send: Callable[[Sequence[T]], Awaitable[None]], items: Sequence[T]
) -> tuple[list[T], list[T]]:
    """Send `items` as one batch; when the batch is refused as a whole (`BatchRejected`), halve it recursively
    until every refused item stands alone, so the others still go through. Returns (sent, refused), each in
    the original order.

    One request when nothing is refused. A refused batch is split in two; when its first half goes through,
    the second half must hold a culprit, so it is split straight away instead of being sent whole (it would be
    refused for certain). With k refused items among n that is at most 1 + 2·k·⌈log2 n⌉ requests: at most k
    refused batches of more than one item per halving level, ⌈log2 n⌉ levels, two halves each."""
    if not items:
        return [], []
    return await _isolate(send, items, refused=False)


async def _isolate(
    send: Callable[[Sequence[T]], Awaitable[None]], items: Sequence[T], *, refused: bool
) -> tuple[list[T], list[T]]:
    if not refused:
        try:
            await send(items)
            return list(items), []
        except BatchRejected:
            pass
    if len(items) == 1:
        return [], list(items)
    mid = len(items) // 2
    ok_a, bad_a = await _isolate(send, items[:mid], refused=False)
    ok_b, bad_b = await _isolate(send, items[mid:], refused=not bad_a)
    return ok_a + ok_b, bad_a + bad_b


# ------------------------------------------------------------------------------------------ connector


class BitcasterConnector:
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
        self._lists: list[RemoteGroup] | None = None  # GET d/, read at most once per instance
        self._lists_lock = asyncio.Lock()

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
        matches = [g for g in await self._all_lists() if g.name == name]  # exact: case and all
        if len(matches) > 1:
            log.debug("%s: %d lists are named alike; taking the first", self.name, len(matches))
        return matches[0] if matches else None

    async def _find_by_id(self, group_id: str) -> RemoteGroup | None:
        if not group_id.isdigit():
            log.debug("%s: list ids are integers; %r cannot name one", self.name, group_id)
            return None
        if self._lists is not None:  # already read this pass: no request
            return next((g for g in self._lists if g.id == group_id), None)
        where = "GET d/{pk}/"
        try:
            return _group(await self.api.json("GET", self._list_path(group_id)), where)
        except NotFound:
            pass
        # 404 means "no such list" or "no such organization/project": the list of lists tells the two apart
        # (a NotFound that names the settings to check), and is shared by any name lookup of this pass.
        return next((g for g in await self._all_lists() if g.id == group_id), None)

    async def _all_lists(self) -> list[RemoteGroup]:
        async with self._lists_lock:  # concurrent pairs share one read
            if self._lists is None:
                try:
                    items = await self._read_all(self._root, "GET d/")
                except NotFound as exc:
                    raise NotFound(
                        f"Bitcaster has no {self._scope} (HTTP 404 on the list of distribution lists): "
                        "check the provider's `organization` and `project` slugs",
                        status=exc.status,
                    ) from exc
                self._lists = [_group(obj, "GET d/") for obj in items]
                log.debug("%s: %d distribution lists", self.name, len(self._lists))
            return self._lists

    async def create_group(self, name: str) -> RemoteGroup:
        raise UnsupportedOperation(
            f"Bitcaster's API cannot create distribution lists (POST d/ answers 405): create the list {name!r} "
            f"in Bitcaster ({self._scope}), then run again, or set group_id in the group's target"
        )

    # -- members -----------------------------------------------------------------------------------
    async def read_members(self, group: RemoteGroup) -> list[RemoteMember]:
        where = "GET d/{pk}/m/"
        return _members(await self._read_all(self._list_path(group.id) + "m/", where), where)

    async def add_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        # One address twice in a batch makes add/ refuse it (expected != found): send each key once.
        first: dict[str, Contact] = {}
        for c in contacts:
            first.setdefault(c.key, c)
        unique = list(first.values())
        path = self._list_path(group.id) + "add/"

        async def send(part: Sequence[Contact]) -> None:
            # Adding an address already in the list changes nothing, so the request is safe to resend.
            response = await self.api.request("POST", path, json=[c.email for c in part], idempotent=True)
            body = body_or_none(response)
            if isinstance(body, dict):
                log.debug(
                    "%s: add/ of %d: expected %s, found %s",
                    self.name,
                    len(part),
                    body.get("expected"),
                    body.get("found"),
                )

        done: list[str] = []
        rejected: list[MemberReject] = []
        for chunk in _chunks(unique, self.capabilities.max_add_batch):
            ok, bad = await isolate_rejects(send, chunk)
            done += [c.key for c in ok]
            rejected += [MemberReject(c.email, UNKNOWN_ADDRESS, permanent=True, code="unknown_address") for c in bad]
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
    async def _read_all(self, path: str, where: str) -> list[Any]:
        """A listing: one GET (documented: no pagination). A DRF-paginated answer's `next` links are followed,
        on the API's own host only (the key goes wherever the request goes)."""
        items, nxt = _items(await self.api.json("GET", path), where)
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
        capabilities=CAPABILITIES.with_batch_size(settings.batch_size),
        pacing=settings.pacing(CAPABILITIES.pacing),
        retry=settings.retry.policy(),
        hooks=ctx.hooks,
    )
