"""Giftronaut recipient groups (gift-card rewards platform).

Why this module exists: Giftronaut groups are org-scoped lists of recipients that gift orders can target, and
syncd keeps them equal to the source of truth. The API shapes everything below:

* **One member per call.** `POST /recipient-groups/{id}/members {"recipientId"}` adds one recipient and
  `DELETE /recipient-groups/{id}/members/{recipientId}` removes one; there is no bulk call. So the batch
  limits are 1, the engine sends one op per member, and it runs a pair's ops concurrently (bounded by the
  `ApiClient` semaphore): every call here is cheap and safe to run alongside others for the same group.
* **Members are recipients, named by id** (`RE-...`). Adding a person means: email -> recipient id (syncd's
  persisted `RecipientCache` first, so a steady-state pass resolves nothing), else create the recipient
  (`POST /recipients`), then add it. n new members therefore cost n creates + n adds, plus the reads that
  resolve the emails nobody knew, done **once per pass for everything** (`prepare_adds`), and by cost:
  one `GET /recipients?searchKeyword=<email>` per unknown email, or paging the whole directory
  (`GET /recipients?page=N&pageSize=100`, ceil(total/100) requests), whichever is fewer. The directory's
  size comes from what the connector already knows (cache size, group sizes read) or from its first page.
* **Creates are idempotent.** Recipient and group creates carry `X-Idempotency-Key` (vendor docs: at most
  128 characters, remembered 24 h; ours are at most 81): a retried create (after a 5xx, a timeout, a dropped
  connection, an answer lost after the server acted) gets the original answer back instead of a duplicate.
  A key is stable for one connector instance (one pass) and one email / group name (a per-instance random
  nonce + a hash: no email in headers), not forever, so a deliberate re-create in a later pass is never
  answered with a stale replay. Across passes, syncd looks a group up by name before creating it; and both
  keys are unique in the org anyway (vendor docs: `groupName`; PROVIDERS.md: a recipient's email), so a
  create that conflicts (409) looks the existing one up by name / email and uses it.
* **`groupId` is an integer** (vendor docs). It is read as a JSON number (a numeric or other string is
  tolerated) and handled as its decimal string everywhere else: `RemoteGroup.id`, syncd's binding, paths.
* OAuth2 client credentials at `POST https://api.giftronaut.com/oauth2/token` (form-encoded, scopes
  `recipients.read recipients.write`); the token is cached until shortly before `expires_in` (3600 s in
  production, 24 h on sandbox accounts) and refreshed once on a 401.
* Every request carries a fresh `X-Request-Id` (a UUID v4, as the docs recommend; Giftronaut echoes it);
  error messages quote it, for support.

Wire shapes assumed where the docs are silent (PROVIDERS.md, "Wire shapes assumed"); check them against a
real account:

* errors are `{"error": CODE, "message": text}` with VALIDATION_ERROR 400, GROUP_NOT_FOUND /
  RECIPIENT_NOT_FOUND / MEMBER_NOT_FOUND 404, RECIPIENT_EXISTS / GROUP_EXISTS (a taken group name) /
  DUPLICATE_IDEMPOTENCY_KEY 409, RATE_LIMITED 429. Other shapes are tolerated (`{"error": {"code",
  "message"}}`, `{"message"}`, plain text, HTML): the status then decides (`classify`), an uncoded 400/422
  on a create is a (non-permanent) reject, an uncoded 409 on a create is treated as "exists", an uncoded
  404 on a member add as a possibly stale id;
* listings are `{"data": [...], "page", "pageSize", "total"}` with pages from 1 (a bare list, or a total
  under `pagination`/`meta`, is accepted too; without a total, a short page is the last, unless it is a
  first page whose length a server's own cap could explain: then pages are read on while that full);
* group `{groupId: 1234, groupName, memberCount}` (the integer id is documented, the rest assumed);
  recipient `{recipientId: "RE-...", email, firstName, lastName, company, department}`; member item
  `{recipientId, email, firstName, lastName}`; single objects bare (a `{"data": {...}}` wrapper is accepted);
* POST member answers 201 (already a member: 200, no change); DELETE member/group answer 204;
* `firstName`/`lastName` are optional on `POST /recipients` (they are sent only when the source has them).
  If a real account requires them, members without a name come back as VALIDATION_ERROR rejects;
* token answer `{access_token, token_type, expires_in, scope}`.

UNVERIFIED defaults (the docs give no details; override them in the config):

* Rate limit: 60 requests/min on sandbox accounts, 300 requests/min in production. The default pacing is the
  production one, 5 requests/s. **For a Giftronaut sandbox account set `rate_limit: 1`.** The over-limit
  answer is assumed to be 429 `{"error": "RATE_LIMITED"}`, maybe with `Retry-After`; without one, syncd backs
  off exponentially. Waiting out a 429 does not spend the retry budget.
* Whether the token endpoint counts against the API rate limit (a token is fetched about once an hour).
* Whether group names are unique ignoring case (the docs say unique, not how they compare). A create whose
  name is taken by a group spelled otherwise fails, naming the conflict, rather than binding to it. A name
  lookup that finds two groups with exactly the name (which uniqueness rules out) still fails and asks
  for `group_id` instead of guessing.

Logging is DEBUG only and never carries emails or credentials; errors name paths, never query strings
(a search keyword is an email), and emails echoed in server messages are masked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, field_validator

from connectors.base import (
    BatchResult,
    Capabilities,
    Closing,
    ConnectorError,
    Contact,
    FatalError,
    MemberKeyKind,
    MemberReject,
    NotFound,
    NullRecipientCache,
    Pacing,
    ProtocolError,
    RateLimited,
    RecipientCache,
    RemoteGroup,
    RemoteMember,
    ResetKind,
    TransientError,
    UnsupportedOperation,
    email_key,
)
from connectors.batching import create_or_find
from connectors.http import (
    ApiClient,
    ClientCredentialsAuth,
    PageEnd,
    RequestHooks,
    RetryPolicy,
    derive_url,
    error_for_status,
    make_client,
    off_loop,
    retry_after,
)
from connectors.settings import BuildContext, ProviderSettings, check_token_url

log = logging.getLogger("syncd.connectors.giftronaut")

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.giftronaut.com/api/v1"
API_ROOT = "/api/v1"
TOKEN_PATH = "/oauth2/token"  # on the API host, outside the versioned root
DEFAULT_SCOPE = "recipients.read recipients.write"
PAGE_SIZE = 100  # the documented pageSize cap
DEFAULT_PAGE_SIZE = 20  # the documented default pageSize: what a server that ignores ours sends
MAX_PAGES = 100_000  # a listing that does not end is a server bug, not a reason to loop forever
IDEMPOTENCY_HEADER = "X-Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 128  # vendor docs (keys are remembered 24 h)
REQUEST_ID_HEADER = "X-Request-Id"

# The documented production limit is 300 requests/min = 5/s (UNVERIFIED beyond the number; sandbox accounts
# get 60/min: set rate_limit: 1 there).
# - burst 1: the bucket starts with a single token, so in any 60 s window at most 1 + 5*60 requests start,
#   i.e. never more than the 300/min the server counts (a burst of b would start b-1 requests too many in
#   the first minute and earn a 429). Nothing here profits from a burst: the work is thousands of small
#   calls, and throughput is set by the sustained rate alone.
# - max_concurrency 8: to keep 5 requests/s flowing, 5 x latency requests must be in flight (Little's law),
#   so 8 slots sustain the full rate for answers taking up to 1.6 s. More slots buy nothing at a fixed rate;
#   fewer would let a slow API (or the applier's one-member ops) fall below the rate.
PACING = Pacing(rate=5.0, burst=1, max_concurrency=8)

CAPABILITIES = Capabilities(
    member_key=MemberKeyKind.ID,
    max_add_batch=1,  # one member per call: the API has no bulk add
    max_remove_batch=1,  # ... nor bulk remove
    can_create_group=True,
    can_remove=True,
    reset=ResetKind.NONE,
    pacing=PACING,
    extra_requests_per_add=1,  # a recipient create per person Giftronaut does not know yet
)

# Error codes of the assumed wire shape.
VALIDATION_ERROR = "VALIDATION_ERROR"
GROUP_NOT_FOUND = "GROUP_NOT_FOUND"
RECIPIENT_NOT_FOUND = "RECIPIENT_NOT_FOUND"
MEMBER_NOT_FOUND = "MEMBER_NOT_FOUND"
RECIPIENT_EXISTS = "RECIPIENT_EXISTS"
GROUP_EXISTS = "GROUP_EXISTS"
DUPLICATE_IDEMPOTENCY_KEY = "DUPLICATE_IDEMPOTENCY_KEY"
RATE_LIMITED = "RATE_LIMITED"

REJECT_CODE = "invalid_recipient"


# -------------------------------------------------------------------------------------------- settings


class GiftronautSettings(ProviderSettings):
    """A Giftronaut organisation, reached through an OAuth2 API client (client credentials)."""

    type: Literal["giftronaut"] = Field(default="giftronaut", description="Giftronaut recipient groups.")
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="API root with its version path. Sandbox and production accounts share it (the "
        "credentials pick the environment). https, except on a loopback host.",
    )
    client_id: str = Field(description="OAuth2 client id of the API client (client-credentials grant).")
    client_secret: SecretStr = Field(description="OAuth2 client secret belonging to client_id.")
    token_url: str | None = Field(
        default=None,
        description="OAuth2 token endpoint. Default: /oauth2/token on the API host "
        "(https://api.giftronaut.com/oauth2/token).",
    )
    scope: str = Field(
        default=DEFAULT_SCOPE,
        description="Space-separated scopes requested with the token; syncd reads and writes recipients and "
        "groups, so it needs both. Empty: request none (the client's defaults).",
    )

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str | None) -> str | None:
        return check_token_url(value)

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("client_secret")
    @classmethod
    def _client_secret(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        return " ".join(value.split())

    @property
    def resolved_token_url(self) -> str:
        return self.token_url or derive_url(self.base_url, API_ROOT, TOKEN_PATH)


# ---------------------------------------------------------------------------------------------- errors


class GroupNotFound(NotFound):
    """404 GROUP_NOT_FOUND: the group is gone (nothing else for it can work)."""


class RecipientNotFound(NotFound):
    """404 RECIPIENT_NOT_FOUND: a recipient id that does not (or no longer) exist."""


class MemberNotFound(NotFound):
    """404 MEMBER_NOT_FOUND: the recipient is not in the group (a remove is then already done)."""


class RecipientExists(FatalError):
    """409 RECIPIENT_EXISTS: a recipient with this email exists already (emails are unique in the org)."""


class GroupExists(FatalError):
    """409 GROUP_EXISTS: a group with this name exists already (group names are unique in the org)."""


class IdempotencyConflict(FatalError):
    """409 DUPLICATE_IDEMPOTENCY_KEY: the key was used before with a different request body."""


class InvalidRequest(FatalError):
    """400 VALIDATION_ERROR (or an uncoded 400/422): the request's data was refused."""

    def __init__(self, message: str, *, status: int | None = None, detail: str = "", coded: bool = True) -> None:
        super().__init__(message, status=status)
        self.detail = detail  # the server's reason, without status and path (for a member reject)
        self.coded = coded  # the answer said VALIDATION_ERROR (else only the status said "bad request")


_BY_CODE: dict[str, type[FatalError]] = {
    GROUP_NOT_FOUND: GroupNotFound,
    RECIPIENT_NOT_FOUND: RecipientNotFound,
    MEMBER_NOT_FOUND: MemberNotFound,
    RECIPIENT_EXISTS: RecipientExists,
    GROUP_EXISTS: GroupExists,
    DUPLICATE_IDEMPOTENCY_KEY: IdempotencyConflict,
}

_CODE = re.compile(r"^[A-Z][A-Z0-9_]{2,63}$")
_EMAIL = re.compile(r"[^\s@<>()\[\]\"',;:]+@[^\s@<>()\[\]\"',;:]+")


def _mask(text: str) -> str:
    """Server messages may echo an email; errors end up in logs, which never carry one."""
    return _EMAIL.sub("<email>", text)


def error_details(response: httpx.Response) -> tuple[str | None, str]:
    """(code, message) of an error answer: the assumed `{"error": CODE, "message": text}`, or whatever else
    came (`{"error": {"code", "message"}}`, `{"code"}`, `{"message"}`, OAuth's `error_description`, text)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text.strip()
    code: str | None = None
    parts: list[str] = []

    def take_code(value: Any) -> bool:
        nonlocal code
        if code is None and isinstance(value, str) and _CODE.match(value):
            code = value
            return True
        return False

    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            take_code(error.get("code"))
            error = error.get("message")
        if not take_code(error) and error not in (None, ""):
            parts.append(str(error))
        take_code(body.get("code"))
        for key in ("message", "error_description", "detail"):
            value = body.get(key)
            if value not in (None, "") and str(value) not in parts:
                parts.append(str(value))
    elif isinstance(body, str) and body:
        parts.append(body)
    message = " ".join(_mask("; ".join(parts)).split())
    return code, message[:300]  # an error page must not flood the logs


def _where(response: httpx.Response) -> str:
    try:
        request = response.request
    except RuntimeError:
        return ""
    return f"{request.method} {request.url.path}"  # never the query: a search keyword is an email


def classify(response: httpx.Response) -> ConnectorError | None:
    """Errors of the Giftronaut API family; any status below 400 is a success."""
    status = response.status_code
    if status < 400:
        return None
    code, message = error_details(response)
    text = ": ".join(p for p in (code, message) if p) or response.reason_phrase or "error"
    context = [_where(response)]
    if request_id := response.headers.get(REQUEST_ID_HEADER):
        context.append(f"request id {request_id[:64]}")
    detail = f"{text} ({', '.join(c for c in context if c)})" if any(context) else text
    full = f"HTTP {status}: {detail}"
    if status == 429 or code == RATE_LIMITED:
        return RateLimited(full, status=status, delay=retry_after(response))
    if status in (408, 425) or status >= 500:
        return TransientError(full, status=status, delay=retry_after(response))
    if code == VALIDATION_ERROR or (code is None and status in (400, 422)):
        return InvalidRequest(full, status=status, detail=message or text, coded=code == VALIDATION_ERROR)
    cls = _BY_CODE.get(code or "")
    if cls is not None:
        return cls(full, status=status)
    return error_for_status(response, detail)


# ------------------------------------------------------------------------------------------ wire shapes


def _unwrap(body: Any) -> Any:
    """A single object, bare (assumed) or wrapped in `{"data": {...}}`."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        return body["data"]
    return body


def _int(value: Any) -> int | None:
    """A count or size: a JSON number, or a numeric string (the docs do not show the listing's types)."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _listing(body: Any, where: str) -> tuple[list[dict[str, Any]], int | None, int | None]:
    """Items, total and page size of a page-numbered listing `{"data": [...], "page", "pageSize", "total"}`."""
    total = size = None
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        items = body["data"]
        for holder in (body, body.get("pagination"), body.get("meta")):
            if isinstance(holder, dict):
                total = total if total is not None else _int(holder.get("total"))
                size = size if size is not None else _int(holder.get("pageSize"))
    elif isinstance(body, list):
        items = body
    else:
        raise ProtocolError(f"{where}: expected a listing {{data: [...], total}}")
    if not all(isinstance(item, dict) for item in items):
        raise ProtocolError(f"{where}: listing items must be objects")
    return items, total, size or None


def _page_size(items: list[dict[str, Any]], total: int | None, size: int | None) -> int:
    """The page size the server really used, from a first page: a first page shorter than both the total and
    the page size (the one the answer says, else the one asked) was capped, so its length is the page size
    (an answer may echo the size asked while capping lower); else the size the answer says, or the one asked."""
    said = size or PAGE_SIZE
    if total is not None and 0 < len(items) < min(total, said):
        return len(items)  # the server capped the page below that, and did not say so
    return said


def _page_end(size: int | None, expected: int | None = None) -> PageEnd:
    """Where a listing ends: its total when it has one; else a short page, judged against the page size the
    server says it used (or the one asked), allowing for a server that caps pages without saying so."""
    return PageEnd(size or PAGE_SIZE, default=DEFAULT_PAGE_SIZE, expected=expected)


def _text(value: Any) -> str | None:
    """An id as the string syncd keeps: a JSON number (Giftronaut's integer groupId) or a non-empty string."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():  # 1234.0 from a server that serialises numbers so
        return str(int(value))
    return None


def _first(obj: dict[str, Any], *fields: str) -> Any:
    """The first of these fields that is present (an id of 0 is an id, not an absent one)."""
    return next((obj[f] for f in fields if obj.get(f) is not None), None)


def _group(obj: Any, where: str, fallback_name: str | None = None) -> RemoteGroup:
    obj = _unwrap(obj)
    gid = _text(_first(obj, "groupId", "id")) if isinstance(obj, dict) else None
    if gid is None:
        raise ProtocolError(f"{where}: expected a recipient group with a groupId")
    name = obj.get("groupName", obj.get("name"))
    return RemoteGroup(
        id=gid,
        name=str(name) if name is not None else (fallback_name or ""),
        member_count=_int(obj.get("memberCount")),
    )


def _recipient(obj: Any) -> tuple[str | None, str | None]:
    """(email, recipientId) of a recipient or member item."""
    if not isinstance(obj, dict):
        return None, None
    email = obj.get("email")
    return (email.strip() if isinstance(email, str) and email.strip() else None), _text(
        _first(obj, "recipientId", "id")
    )


def _ids(items: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Email key -> recipient id of every item that has both."""
    out: dict[str, str] = {}
    for item in items:
        email, rid = _recipient(item)
        if email and rid:
            out[email_key(email)] = rid
    return out


def _seg(value: str) -> str:
    """One path segment: ids come from config or answers, so they are quoted, never trusted."""
    return quote(value.strip(), safe="")


def _group_path(group_id: str) -> str:
    return f"recipient-groups/{_seg(group_id)}"


async def _settle(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently and wait for all (no request left running behind our back); then raise the first
    failure, if any."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    out: list[T] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        out.append(result)
    return out


async def _tag_request(request: httpx.Request) -> None:
    if REQUEST_ID_HEADER not in request.headers:
        request.headers[REQUEST_ID_HEADER] = str(uuid.uuid4())  # the docs recommend a UUID v4


# ------------------------------------------------------------------------------------------- connector


class GiftronautConnector(Closing):
    """One Giftronaut organisation behind the `Connector` protocol. An instance is meant to live for one
    pass: idempotency keys and what it learned about recipients (found, absent, refused) are per instance."""

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        *,
        capabilities: Capabilities | None = None,
        pacing: Pacing | None = None,
        retry: RetryPolicy | None = None,
        hooks: RequestHooks | None = None,
        cache: RecipientCache | None = None,
    ) -> None:
        self.name = name
        self.capabilities = capabilities or CAPABILITIES
        self.cache: RecipientCache = cache if cache is not None else NullRecipientCache()
        client.event_hooks["request"].append(_tag_request)
        self.api = ApiClient(
            client,
            provider=name,
            classify=classify,
            pacing=pacing or self.capabilities.pacing,
            retry=retry,
            hooks=hooks,
        )
        self._nonce = uuid.uuid4().hex  # scopes idempotency keys to this instance (this pass)
        # What this pass knows about recipients: email key -> id (the cache, then everything read),
        # keys known not to exist, and creates Giftronaut refused (not sent twice in a pass).
        self._known_ids: dict[str, str] | None = None
        self._known_lock = asyncio.Lock()  # the cache is loaded once, by the first pair that asks, the others wait
        self._absent: set[str] = set()
        self._refused: dict[str, MemberReject] = {}
        # Resolution is done in bulk, under one lock: callers that arrive while a resolution runs park their
        # emails in `_wanted`, and the next lock holder resolves all of them at once.
        self._wanted: dict[str, Contact] = {}
        self._resolve_lock = asyncio.Lock()
        self._create_locks: dict[str, asyncio.Lock] = {}  # one create per email, however many groups want it
        # The recipient directory, as far as it was read.
        self._directory_total: int | None = None
        self._directory_page_size = PAGE_SIZE
        self._directory_pages: set[int] = set()
        self._directory_complete = False
        self._largest_group = 0  # every member is a recipient: a lower bound of the directory's size

    def __repr__(self) -> str:
        return f"GiftronautConnector(name={self.name!r})"

    # -- groups -------------------------------------------------------------------------------------
    async def find_group(self, *, group_id: str | None = None, name: str | None = None) -> RemoteGroup | None:
        if group_id is not None and group_id.strip():
            group = await self._group_by_id(group_id)
            if group is not None or name is None:
                return group
        if name is not None:
            return await self._group_by_name(name)
        return None

    async def _group_by_id(self, group_id: str) -> RemoteGroup | None:
        try:
            body = await self.api.json("GET", _group_path(group_id))
        except (NotFound, InvalidRequest):  # no such group (a malformed id is no group either)
            return None
        group = _group(body, "GET /recipient-groups/{id}")
        self._note_group_size(group.member_count)
        return group

    async def _group_by_name(self, name: str) -> RemoteGroup | None:
        # `search` matches partially (and maybe ignoring case): only exactly this name is the group.
        where = "GET /recipient-groups?search"
        items = await self._all_pages("recipient-groups", {"search": name}, where)
        found = {g.id: g for g in (_group(item, where) for item in items) if g.name == name}
        if len(found) > 1:  # names are unique (vendor docs): a server that let this happen gets no guess
            ids = ", ".join(sorted(found, key=lambda gid: (len(gid), gid)))
            raise FatalError(f"{len(found)} Giftronaut groups are named {name!r} (ids {ids}): bind one by group_id")
        group = next(iter(found.values()), None)
        if group is not None:
            self._note_group_size(group.member_count)
        return group

    async def create_group(self, name: str) -> RemoteGroup:
        # Idempotent by key: a create retried after a 5xx / timeout / dropped connection is answered with the
        # group the first attempt made, so ApiClient resends it safely and no answer is lost (`lost=()`).
        where = "POST /recipient-groups"

        async def create() -> RemoteGroup:
            body = await self.api.json(
                "POST",
                "recipient-groups",
                json={"groupName": name},
                headers={IDEMPOTENCY_HEADER: self._idempotency_key("group", name)},
                idempotent=True,
            )
            group = _group(body, where, fallback_name=name)
            log.debug("%s: created group %s", self.name, group.id)
            return group

        async def find() -> RemoteGroup | None:
            log.debug("%s: the group name is taken; looking the group up", self.name)
            return await self._group_by_name(name)

        try:
            # GROUP_EXISTS (names are unique in the org): someone made it since syncd looked, or a create of an
            # earlier pass landed although its answer was lost. It is the group: use it.
            return await create_or_find(
                create, find, attempts=1, pause=self.api.pause, lost=(), taken=lambda e: e.status == 409
            )
        except FatalError as exc:
            if exc.status != 409:
                raise
            raise FatalError(
                f"Giftronaut refused to create group {name!r}: {exc.message}. Group names are unique in the "
                "organization, and no group is named exactly so (one may differ in case or blanks): rename "
                "it, or bind it by group_id",
                status=exc.status,
            ) from exc

    # -- members -----------------------------------------------------------------------------------
    async def read_members(self, group: RemoteGroup) -> list[RemoteMember]:
        where = "GET /recipient-groups/{id}/members"
        items = await self._all_pages(_group_path(group.id) + "/members", {}, where, expected=group.member_count)
        members: dict[str, RemoteMember] = {}
        for item in items:
            email, rid = _recipient(item)
            if email is None and rid is None:
                raise ProtocolError(f"{where}: member without recipientId and email")
            member = RemoteMember(email=email, id=rid)
            members.setdefault(member.key, member)  # a member moving between pages can be read twice
        await self._remember(_ids(items))
        self._note_group_size(len(members))
        log.debug("%s: group %s has %d members", self.name, group.id, len(members))
        return list(members.values())

    async def prepare_adds(self, contacts: Sequence[Contact]) -> None:
        """Resolve, in bulk and by cost, the recipient ids of everyone this pass will add (the engine calls
        this before the one-member `add_members` calls). Only reads; people still unknown afterwards are
        created by `add_members`. Optional: `add_members` resolves on demand without it."""
        await self._ensure(list({c.key: c for c in contacts}.values()))

    async def add_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        unique: dict[str, Contact] = {}
        for contact in contacts:
            unique.setdefault(contact.key, contact)
        await self._ensure(list(unique.values()))
        outcomes = await _settle(self._add_one(group, c) for c in unique.values())
        done = tuple(c.key for c, reject in zip(unique.values(), outcomes, strict=True) if reject is None)
        rejected = tuple(r for r in outcomes if r is not None)
        return BatchResult(done, rejected)

    async def remove_members(self, group: RemoteGroup, members: Sequence[RemoteMember]) -> BatchResult:
        unique: dict[str, RemoteMember] = {}
        for member in members:
            unique.setdefault(member.key, member)
        outcomes = await _settle(self._remove_one(group, m) for m in unique.values())
        done = tuple(m.key for m, reject in zip(unique.values(), outcomes, strict=True) if reject is None)
        return BatchResult(done, tuple(r for r in outcomes if r is not None))

    async def reset_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        raise UnsupportedOperation("Giftronaut cannot replace a group's members in one call (no reset)")

    async def aclose(self) -> None:
        await self.api.aclose()

    # -- one member --------------------------------------------------------------------------------
    async def _add_one(self, group: RemoteGroup, contact: Contact) -> MemberReject | None:
        path = _group_path(group.id) + "/members"
        refreshed = False
        while True:
            rid = await self._recipient_id(contact)
            if isinstance(rid, MemberReject):
                return rid
            try:
                # 201 added, 200 already a member: both done. Adding twice changes nothing, so a retry is safe.
                await self.api.request("POST", path, json={"recipientId": rid}, idempotent=True)
                return None
            except GroupNotFound:
                raise
            except (NotFound, InvalidRequest) as exc:
                # The id (from the cache, or read earlier) is stale: the recipient was deleted, or the id
                # is garbage. Forget it and look the email up again, once.
                if refreshed:
                    if isinstance(exc, InvalidRequest):
                        reason = f"Giftronaut refused to add this recipient: {exc.detail}"
                        return MemberReject(contact.email, reason, permanent=exc.coded, code=REJECT_CODE)
                    if isinstance(exc, RecipientNotFound):
                        reason = "the recipient vanished while it was being added; retried next pass"
                        return MemberReject(contact.email, reason, permanent=False, code="unknown_recipient")
                    raise  # an uncoded 404 twice: it is the group that is missing
                refreshed = True
                log.debug("%s: recipient id %s refused on add (%s); resolving again", self.name, rid, exc.status)
                await self._forget(contact.key)
                await self._search(contact.email)

    async def _remove_one(self, group: RemoteGroup, member: RemoteMember) -> MemberReject | None:
        rid = member.id or ((await self._known()).get(member.key) if member.email else None)
        if rid is None and member.email:
            rid = await self._search(member.email)
            if rid is None:
                return None  # not a recipient at all, so in no group
        if rid is None:
            return MemberReject(member.key, "member has neither a recipient id nor an email", permanent=False)
        try:
            await self.api.request("DELETE", f"{_group_path(group.id)}/members/{_seg(rid)}")
        except GroupNotFound:
            raise
        except NotFound:
            pass  # MEMBER_NOT_FOUND / RECIPIENT_NOT_FOUND: already not a member, and removal is idempotent
        return None

    async def _recipient_id(self, contact: Contact) -> str | MemberReject:
        """The contact's recipient id: known, resolved, or created now."""
        rid = (await self._known()).get(contact.key)
        if rid is not None:
            return rid
        if not await self._resolved(contact.key):
            await self._ensure([contact])
            rid = (await self._known()).get(contact.key)
            if rid is not None:
                return rid
        return await self._create_recipient(contact)

    async def _create_recipient(self, contact: Contact) -> str | MemberReject:
        key = contact.key
        lock = self._create_locks.setdefault(key, asyncio.Lock())
        async with lock:  # the same person added to several groups at once is created once
            rid = (await self._known()).get(key)
            if rid is not None:
                return rid
            if key in self._refused:
                return self._refused[key]
            body: dict[str, str] = {"email": contact.email.strip()}
            if contact.first_name:
                body["firstName"] = contact.first_name
            if contact.last_name:
                body["lastName"] = contact.last_name
            try:
                answer = await self.api.json(
                    "POST",
                    "recipients",
                    json=body,
                    headers={IDEMPOTENCY_HEADER: self._idempotency_key("recipient", key)},
                    idempotent=True,  # the key makes a resend return the first answer, not a duplicate
                )
            except InvalidRequest as exc:
                reason = f"Giftronaut refused this recipient: {exc.detail}"
                reject = MemberReject(contact.email, reason, permanent=exc.coded, code=REJECT_CODE)
                self._refused[key] = reject
                return reject
            except FatalError as exc:
                if exc.status != 409:
                    raise
                # RECIPIENT_EXISTS: someone created it since we looked (emails are unique in the org).
                # DUPLICATE_IDEMPOTENCY_KEY cannot happen with our per-email keys, but means the same.
                rid = await self._search(contact.email)
                if rid is None:
                    raise ProtocolError(f"{exc.message}; yet no recipient with this email can be found") from exc
                log.debug("%s: recipient existed already (%s); using it", self.name, rid)
                return rid
            email, rid = _recipient(_unwrap(answer))
            if rid is None:
                raise ProtocolError("POST /recipients: answer without a recipientId")
            if email is not None and email_key(email) != key:
                raise ProtocolError("POST /recipients: answered a recipient with another email")
            await self._remember({key: rid})  # at once: a pass killed after this point does not create it again
            return rid

    # -- resolving emails to recipient ids ----------------------------------------------------------
    async def _known(self) -> dict[str, str]:
        if self._known_ids is None:
            async with self._known_lock:
                if self._known_ids is None:
                    self._known_ids = dict(await off_loop(self.cache.all))
        return self._known_ids

    async def _resolved(self, key: str) -> bool:
        return key in (await self._known()) or key in self._absent or self._directory_complete

    async def _remember(self, ids: dict[str, str]) -> None:
        if not ids:
            return
        known = await self._known()
        fresh = {k: v for k, v in ids.items() if known.get(k) != v}
        known.update(ids)
        self._absent.difference_update(ids)
        if fresh:
            await off_loop(self.cache.put_many, fresh)

    async def _forget(self, key: str) -> None:
        (await self._known()).pop(key, None)
        self._absent.discard(key)
        await off_loop(self.cache.forget, [key])

    def _note_group_size(self, size: int | None) -> None:
        if size is not None:
            self._largest_group = max(self._largest_group, size)

    async def _ensure(self, contacts: Sequence[Contact]) -> None:
        """Make sure every contact's key is resolved (known id, or known absent)."""
        missing = [c for c in contacts if not await self._resolved(c.key)]
        if not missing:
            return
        for contact in missing:
            self._wanted.setdefault(contact.key, contact)
        async with self._resolve_lock:
            batch, self._wanted = self._wanted, {}
            for contact in missing:  # ours may have been taken by a holder that failed
                batch.setdefault(contact.key, contact)
            todo = [c for c in batch.values() if not await self._resolved(c.key)]
            if todo:
                await self._resolve(todo)

    def _directory_pages_total(self) -> int:
        assert self._directory_total is not None
        return math.ceil(self._directory_total / self._directory_page_size)

    async def _resolve(self, contacts: Sequence[Contact]) -> None:
        """Find the ids of these unknown emails by the cheaper way: one search each, or the whole directory."""
        unknown = [c for c in contacts if not await self._resolved(c.key)]
        if not unknown:
            return
        if self._directory_total is None and 1 not in self._directory_pages:
            # What the directory costs is ceil(total/100) pages. Known: at least the recipients we know of.
            floor = max(len(await self._known()), self._largest_group)
            if len(unknown) > max(1, math.ceil(floor / PAGE_SIZE)):
                # It might be cheaper than searching: its first page says its size (and resolves up to 100).
                await self._directory_page(1)
                unknown = [c for c in unknown if not await self._resolved(c.key)]
                if not unknown:
                    return
        if self._directory_total is not None:
            left = [p for p in range(1, self._directory_pages_total() + 1) if p not in self._directory_pages]
            if len(left) <= len(unknown):
                log.debug("%s: resolving %d emails by reading %d directory pages", self.name, len(unknown), len(left))
                await _settle(self._directory_page(p) for p in left)
                self._directory_complete = True  # everyone not read now is not a recipient
                return
        log.debug("%s: resolving %d emails by search", self.name, len(unknown))
        await _settle(self._search(c.email) for c in unknown)

    async def _directory_page(self, page: int) -> None:
        where = "GET /recipients"
        body = await self.api.json("GET", "recipients", params={"page": page, "pageSize": PAGE_SIZE})
        items, total, size = _listing(body, where)
        await self._remember(_ids(items))
        self._directory_pages.add(page)
        if page == 1:
            if total is not None:
                self._directory_total = total
                self._directory_page_size = _page_size(items, total, size)
            elif not _page_end(size, expected=self._largest_group).more(len(items)):
                # No total, but a first page that is short (and not possibly a server's cap) is the whole
                # directory. A page that may be capped leaves the directory's size unknown: search instead.
                self._directory_complete = True

    async def _search(self, email: str) -> str | None:
        """The recipient id of exactly this email (searchKeyword matches names and emails partially)."""
        key = email_key(email)
        where = "GET /recipients?searchKeyword"
        page = 1
        end: PageEnd | None = None
        while True:
            params = {"searchKeyword": email.strip(), "pageSize": PAGE_SIZE, "page": page}
            items, total, size = _listing(await self.api.json("GET", "recipients", params=params), where)
            ids = _ids(items)
            await self._remember(ids)  # every exact email seen is knowledge for later
            if key in ids:
                return ids[key]
            end = end or _page_end(size)
            if not end.more(len(items), total) or page >= MAX_PAGES:
                self._absent.add(key)
                return None
            page += 1

    async def _all_pages(
        self, path: str, params: dict[str, Any], where: str, *, expected: int | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a page-numbered listing: page 1, then (its total known) the rest concurrently; without
        a total, page after page until a short one (`PageEnd`: a first page that may be a server's cap, or that
        holds fewer than `expected` items, is not taken for the whole listing)."""
        items, total, size = _listing(
            await self.api.json("GET", path, params={**params, "page": 1, "pageSize": PAGE_SIZE}), where
        )
        out = list(items)
        if total is not None:
            size = _page_size(items, total, size)
            pages = min(math.ceil(total / size), MAX_PAGES)
            rest = await _settle(
                self.api.json("GET", path, params={**params, "page": p, "pageSize": PAGE_SIZE})
                for p in range(2, pages + 1)
            )
            for body in rest:
                out.extend(_listing(body, where)[0])
            return out
        page = 1
        end = _page_end(size, expected)
        while end.more(len(items)):
            page += 1
            if page > MAX_PAGES:
                raise ProtocolError(f"{where}: the listing did not end after {MAX_PAGES} pages")
            items = _listing(
                await self.api.json("GET", path, params={**params, "page": page, "pageSize": PAGE_SIZE}), where
            )[0]
            out.extend(items)
        return out

    def _idempotency_key(self, kind: str, value: str) -> str:
        digest = hashlib.sha256(value.encode()).hexdigest()[:32]  # no email or group name in headers
        key = f"syncd-{self._nonce}-{kind}-{digest}"
        assert len(key) <= MAX_IDEMPOTENCY_KEY  # 81 characters for "recipient"
        return key


# ---------------------------------------------------------------------------------------------- build


def build(settings: GiftronautSettings, ctx: BuildContext) -> GiftronautConnector:
    auth = ClientCredentialsAuth(
        settings.resolved_token_url,
        settings.client_id,
        settings.client_secret,
        scope=settings.scope or None,
    )
    client = make_client(settings.base_url, auth=auth, timeout=settings.timeout, transport=ctx.transport)
    return GiftronautConnector(
        settings.name,
        client,
        capabilities=settings.capabilities(CAPABILITIES),
        retry=settings.retry.policy(),
        hooks=ctx.hooks,
        cache=ctx.cache,
    )


__all__ = [
    "CAPABILITIES",
    "PACING",
    "GiftronautConnector",
    "GiftronautSettings",
    "GroupExists",
    "GroupNotFound",
    "IdempotencyConflict",
    "InvalidRequest",
    "MemberNotFound",
    "RecipientExists",
    "RecipientNotFound",
    "build",
    "classify",
    "error_details",
]
