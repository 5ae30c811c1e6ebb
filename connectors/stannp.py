"""Stannp direct-mail groups (printed mail: a group is a mailing list of postal recipients).

Why this module exists: Stannp groups are one of the targets syncd keeps equal to the source of truth, so a
mailing goes to exactly the people the CRM says. Four properties of the API shape everything below:

* **Members are recipient ids.** `POST /groups/add/:group_id {recipients: "id1,id2"}` and
  `DELETE /groups/remove/:group_id` take comma-separated ids, and there is **no look-up by email**. A person
  who already exists as a recipient is added by id (up to 1000 per request); the id comes from syncd's
  persisted recipient cache, else from ONE listing of every recipient of the account
  (`GET /recipients/list`, no group_id, pages of 1000), read at most once per connector instance (= per
  pass) and only when some email is unknown to the cache.
* **A new person is created and joined in one request**: `POST /recipients/new` with the postal fields,
  `group_id` and `on_duplicate=update` (an email that exists after all is reused and updated, never
  duplicated), plus an `Idempotency-Key`. So a sync of k new and m existing recipients costs
  k + ceil(m/1000) writes (k + one `groups/add` per add batch holding existing people, when the planner's
  batches mix new and existing people). A contact Stannp refuses there is a permanent `MemberReject` with code
  `invalid_recipient`; the planner already rejects members lacking the postal fields Stannp requires
  (`Capabilities.required_fields`), so they are never sent.
* **One stale id fails a whole `groups/add` (HTTP 400).** The connector then refreshes (the account listing,
  once per pass), forgets stale cache entries, resends what is still valid and splits the rest so the good
  ids go in; a person whose recipient is gone is created again.
* **Rate limits per plan** (300/600/2000/3000 requests per minute) announced on every answer by
  `X-RateLimit-Limit/Remaining/Reset`: pacing spreads what is left of the window over the time until it
  resets and waits for the reset at 0 (and on a 429).

Errors are `{"success": false, "error": ...}`, possibly on HTTP 200: every answer is checked (`classify`).
A reset (used ONLY when the user sets `allow_non_atomic_reset`) is `POST /groups/purge {id,
delete_recipients: false}` then the adds: the group is empty in between. `delete_recipients: true` deletes the
recipients account-wide (from every group), so this module never sends it, anywhere.

Wire shapes assumed (PROVIDERS.md "Wire shapes assumed"; check them against a real account):

* ids are numeric strings (`"1943"`); numbers are accepted too. `data` envelopes are unwrapped when present
  and a bare body is accepted where the docs are ambiguous. `X-RateLimit-Reset` is seconds until the window
  resets (an epoch timestamp is recognised and converted);
* `GET /recipients/list` takes `group_id` (optional), `offset` and `limit` (default 100, at most 1000) and
  answers `{id, email, firstname, lastname, company, address1, address2, city, postcode, country, ref_id}`
  items with no total, so a page shorter than the limit is the last one, unless it is the first page and a
  server cap could explain it (the default 100, a round number, or fewer items than the group listing
  counted: `PageEnd`), in which case pages are read on while that full; an unknown `group_id` may answer
  404 or an empty list (an empty first page is checked against the group listing, so a deleted group is
  reported as gone instead of being read as empty);
* `groups/add` and `groups/remove` take at most 1000 ids; an unknown id fails the request with HTTP 400;
  an unknown group answers HTTP 404;
* `recipients/new` requires address1, postcode (or zipcode) and country; `on_duplicate` defaults to creating
  a duplicate, `update`/`ignore` reuse the recipient with the same email; the answer is
  `{"success": true, "data": {"id", "valid": true}}`;
* `groups/list` (offset, limit) has no total either; `groups/create` answers `{"data": "39"}`.

Unverified defaults (override them once the real limits are known):

* at most 1000 ids per `groups/add` / `groups/remove` request (`batch_size` lowers it);
* pages of 1000 recipients, and of 50 groups (the docs' own example limit); a first page shorter than asked
  whose length could be a silent server cap is not taken for the last one (at most one more request);
* pacing of the lowest plan: 300 requests/min = 5/s, bursts of 5, 4 requests in flight (`rate_limit`,
  `burst`, `max_concurrency`; the quota headers slow it further, never speed it up);
* HTTP Basic auth with the key as username (the documented way), falling back to `Authorization: Bearer`
  (the newer docs, and every example of the groups excerpt) when Basic answers 401 (`auth_scheme: auto`,
  the default; `basic` or `bearer` pin one);
* Stannp honouring `Idempotency-Key` (a fresh one on every logical POST, the same one on its retries):
  nothing depends on it (a group create whose outcome is unknown is looked up by name before it is sent
  again; recipients are created with `on_duplicate=update`; adds, removes and purges are idempotent anyway).

A group holding two recipients with the same email (Stannp allows duplicates) is read as one member keyed
by email plus members keyed by id for the other copies, so `mirror` removes the extra copies: one person,
one letter. Logging is DEBUG only and carries neither emails nor the key.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Sequence
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
    FatalError,
    MemberKeyKind,
    MemberReject,
    NotFound,
    NullRecipientCache,
    Pacing,
    ProtocolError,
    RecipientCache,
    RemoteGroup,
    RemoteMember,
    ResetKind,
    RetriableError,
    email_key,
)
from connectors.http import (
    ApiClient,
    ApiKeyBasicAuth,
    BearerAuth,
    PageEnd,
    Quota,
    RequestHooks,
    RetryPolicy,
    TokenBucket,
    body_or_none,
    error_for_status,
    make_client,
    paginate,
    quota_from_headers,
)
from connectors.settings import BuildContext, ProviderSettings

log = logging.getLogger("syncd.connectors.stannp")

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api-eu1.stannp.com/v1"
US_BASE_URL = "https://api-us1.stannp.com/v1"
MAX_IDS = 1000  # UNVERIFIED: recipient ids per groups/add and groups/remove request
PAGE_SIZE = 1000  # the assumed cap of `limit` on /recipients/list
PAGE_DEFAULT = 100  # the assumed default `limit` of /recipients/list: what a server ignoring ours sends
GROUP_PAGE_SIZE = 50  # UNVERIFIED: the docs' example limit for /groups/list
CREATE_ATTEMPTS = 3  # a group create whose outcome is unknown is looked up by name, then sent again
PACING = Pacing(rate=300 / 60, burst=5, max_concurrency=4)  # the lowest plan: 300 requests/min
REQUIRED_FIELDS = frozenset({"address.line1", "address.postcode", "address.country"})
REFUSED = "Stannp refused the recipient"
_MEMBER_CALLS = ("/groups/add/", "/groups/remove/")
_EPOCH = 1e9  # an X-RateLimit-Reset this large is a timestamp, not seconds

CAPABILITIES = Capabilities(
    member_key=MemberKeyKind.ID,
    max_add_batch=MAX_IDS,  # unverified
    max_remove_batch=MAX_IDS,  # unverified
    can_create_group=True,
    can_remove=True,
    reset=ResetKind.NON_ATOMIC,  # purge, then add: the group is empty in between
    pacing=PACING,
    required_fields=REQUIRED_FIELDS,
)


# -------------------------------------------------------------------------------------------- settings


class AuthScheme(enum.StrEnum):
    AUTO = "auto"
    BASIC = "basic"
    BEARER = "bearer"


class ApiKeyAuth(httpx.Auth):
    """`auth_scheme: auto`: the key as HTTP Basic first (the documented way); when that answers 401, the same
    request once more with `Authorization: Bearer` (the newer docs' way, and the only one their examples show).
    The scheme that worked is kept for the connector's life, so this costs one request at most, and only
    against a server that takes Bearer alone. A key refused both ways is an AuthError as before."""

    requires_request_body = True  # a request may be sent twice

    def __init__(self, key: SecretStr) -> None:
        self._key = key
        self.scheme: AuthScheme | None = None  # the one that worked, once known

    def __repr__(self) -> str:
        return f"ApiKeyAuth(scheme={self.scheme}, key=**********)"

    def _header(self, scheme: AuthScheme) -> str:
        key = self._key.get_secret_value()
        if scheme is AuthScheme.BEARER:
            return f"Bearer {key}"
        return "Basic " + base64.b64encode(f"{key}:".encode()).decode("ascii")

    def _learn(self, scheme: AuthScheme, response: httpx.Response) -> None:
        # A 429 or 5xx can come before the key is even looked at: only other answers prove the scheme works.
        if response.status_code not in (401, 429) and response.status_code < 500:
            self.scheme = scheme

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.scheme is not None:
            request.headers["Authorization"] = self._header(self.scheme)
            yield request
            return
        request.headers["Authorization"] = self._header(AuthScheme.BASIC)
        response = yield request
        if response.status_code != 401:
            self._learn(AuthScheme.BASIC, response)
            return
        request.headers["Authorization"] = self._header(AuthScheme.BEARER)
        response = yield request
        self._learn(AuthScheme.BEARER, response)


class StannpSettings(ProviderSettings):
    """A Stannp account: one API key, bound to the region of its base_url."""

    type: Literal["stannp"] = Field(default="stannp", description="Stannp direct-mail groups.")
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="API root with its version path. Keys are bound to a region: EU "
        f"{DEFAULT_BASE_URL} (the default), US {US_BASE_URL}. https, except on a loopback host.",
    )
    api_key: SecretStr = Field(description="The account's API key (Settings → API in the Stannp dashboard).")
    auth_scheme: AuthScheme = Field(
        default=AuthScheme.AUTO,
        description="How the key is sent: `basic` (as documented: HTTP Basic with the key as username and an "
        "empty password), `bearer` (`Authorization: Bearer <key>`, shown in newer docs), or `auto` (default: "
        "basic, and bearer if the API answers 401 to basic; the one that works is kept).",
    )

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("api_key must not be empty")
        return value


# ------------------------------------------------------------------------------------- wire handling


def error_message(response: httpx.Response) -> str:
    """The API's message (`error` as a string, object or list; or `message`), else the reason phrase."""
    body = body_or_none(response)
    parts: list[str] = []
    if isinstance(body, dict):
        for value in (body.get("error"), body.get("message")):
            if isinstance(value, dict):
                value = value.get("message") or value.get("error") or value.get("code")
            elif isinstance(value, list):
                value = "; ".join(str(v) for v in value)
            if value not in (None, "", False, True) and str(value) not in parts:
                parts.append(str(value))
    elif body is None and response.text.strip() and response.status_code >= 400:
        parts.append(response.text.strip())
    return (": ".join(parts) or response.reason_phrase or "no message")[:300]


class RecipientRefused(FatalError):
    """`recipients/new` refused this one contact (a validation error); `reason` is Stannp's own message."""

    def __init__(self, message: str, *, reason: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.reason = reason


def classify(response: httpx.Response) -> ConnectorError | None:
    """Errors of the Stannp API: HTTP errors, and `{"success": false, "error": ...}` even on HTTP 200."""
    status = response.status_code
    body = body_or_none(response)
    failed = isinstance(body, dict) and body.get("success") is False
    if status < 400 and not failed:
        return None
    path = response.request.url.path
    where = f"{response.request.method} {path}"
    message = error_message(response)
    if status in (401, 403) or (status < 400 and "api key" in message.lower()):
        return AuthError(
            f"{where}: HTTP {status}: {message} (check api_key, and that base_url is the key's region)",
            status=status,
        )
    member_call = any(part in path for part in _MEMBER_CALLS)
    if path.endswith("/recipients/new") and (status < 400 or status in (400, 422)):
        return RecipientRefused(f"{where}: HTTP {status}: {message}", reason=message, status=status)
    if status < 400:
        cls = BatchRejected if member_call else FatalError
        return cls(f"{where}: {message}", status=status)
    if member_call and status in (400, 422):
        # One unknown (stale) recipient id fails the whole request: the caller isolates it.
        return BatchRejected(f"HTTP {status}: {where}: {message}", status=status)
    return error_for_status(response, f"{where}: {message}")


def read_quota(response: httpx.Response) -> Quota | None:
    """`X-RateLimit-Remaining` / `-Reset` through `quota_from_headers`, bounded by `X-RateLimit-Limit`; a Reset
    that is an epoch timestamp rather than seconds is converted."""
    quota = quota_from_headers(response)
    if quota is None:
        return None
    remaining, reset_in = quota.remaining, quota.reset_in
    if reset_in > _EPOCH:
        reset_in = max(0.0, reset_in - time.time())
    try:
        limit = int(float(response.headers.get("X-RateLimit-Limit", "")))
    except ValueError:
        limit = None
    if limit is not None and limit >= 0:
        remaining = min(remaining, limit)
    return Quota(remaining, reset_in)


def _payload(body: Any) -> Any:
    """`data` of a `{success, data}` envelope, or the body itself when it comes bare."""
    if isinstance(body, dict) and "data" in body:
        return body["data"]
    return body


def _id(value: Any, where: str) -> str:
    """An id given as a string or a number (or an object carrying one)."""
    if isinstance(value, dict):
        for key in ("id", "recipient_id", "group_id"):
            if key in value:
                return _id(value[key], where)
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        return str(value)
    elif isinstance(value, float) and value.is_integer():
        return str(int(value))
    elif isinstance(value, str) and value.strip():
        return value.strip()
    raise ProtocolError(f"{where}: expected an id, got {type(value).__name__}")


def _items(body: Any, where: str) -> list[dict[str, Any]]:
    """The objects of a listing: `data` as a list, or a bare list; an empty `data` (null, false, {}) is none."""
    data = _payload(body)
    if data in (None, False, "") or data == {}:
        return []
    if isinstance(data, dict):
        for key in ("recipients", "groups", "items", "results"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ProtocolError(f"{where}: expected a list of objects")
    return data


def _count(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _email(item: dict[str, Any]) -> str | None:
    email = item.get("email")
    return email.strip() if isinstance(email, str) and email.strip() else None


def _group(item: dict[str, Any], where: str) -> RemoteGroup:
    return RemoteGroup(
        id=_id(item.get("id"), where), name=str(item.get("name") or ""), member_count=_count(item.get("recipients"))
    )


def _seg(value: str) -> str:
    return quote(value.strip(), safe="")


def _number(value: str) -> int | str:
    """Ids go into JSON bodies as the integers the docs show (`{"id": 123}`) when they are numeric."""
    return int(value) if value.isdigit() else value


def _key() -> dict[str, str]:
    """A fresh `Idempotency-Key` for one logical POST (ApiClient's retries of it resend the same one)."""
    return {"Idempotency-Key": uuid.uuid4().hex}


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


def _unique(contacts: Sequence[Contact]) -> list[Contact]:
    """One contact per email key: the first spelling wins, order kept."""
    first: dict[str, Contact] = {}
    for contact in contacts:
        first.setdefault(contact.key, contact)
    return list(first.values())


def _recipient_form(contact: Contact, group_id: str) -> dict[str, str]:
    address = contact.address
    fields = {
        "email": contact.email,
        "firstname": contact.first_name,
        "lastname": contact.last_name,
        "address1": address.line1 if address else None,
        "address2": address.line2 if address else None,
        "city": address.city if address else None,
        "postcode": address.postcode if address else None,
        "country": address.country if address else None,
        "group_id": group_id,
        "on_duplicate": "update",  # an email that exists after all is reused, never duplicated
    }
    return {k: v for k, v in fields.items() if v is not None}  # never blank out what Stannp knows


async def _isolate(
    send: Callable[[Sequence[T]], Awaitable[None]], items: Sequence[T], *, refused: bool = False
) -> tuple[list[T], list[T]]:
    """Send `items`; a refused batch is halved until each refused item stands alone. `refused`: this very
    batch was just refused, so start by splitting. Returns (sent, refused); about 2·log2(n) requests per
    refused item."""
    if not items:
        return [], []
    if not refused:
        try:
            await send(items)
            return list(items), []
        except BatchRejected:
            pass
    if len(items) == 1:
        return [], list(items)
    mid = len(items) // 2
    ok_a, bad_a = await _isolate(send, items[:mid])
    ok_b, bad_b = await _isolate(send, items[mid:])
    return ok_a + ok_b, bad_a + bad_b


# ------------------------------------------------------------------------------------------ connector

Pair = tuple[Contact, str]  # a contact and the recipient id it is added by


class StannpConnector:
    """One Stannp account behind the `Connector` protocol (plus `prepare_adds`). Meant to live for one pass:
    it reads the account's recipient listing and its group listing at most once."""

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        *,
        capabilities: Capabilities = CAPABILITIES,
        pacing: Pacing | None = None,
        retry: RetryPolicy | None = None,
        hooks: RequestHooks | None = None,
        cache: RecipientCache | None = None,
        quota: Callable[[httpx.Response], Quota | None] | None = read_quota,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.capabilities = capabilities
        pacing = pacing or capabilities.pacing
        self.api = ApiClient(
            client, provider=name, classify=classify, pacing=pacing, retry=retry, hooks=hooks, quota=quota
        )
        if clock is not None or sleep is not None:  # a virtual clock for tests and benchmarks
            self.api.bucket = TokenBucket(
                pacing.rate, pacing.burst, clock=clock or time.monotonic, sleep=sleep or asyncio.sleep
            )
        self.cache: RecipientCache = cache if cache is not None else NullRecipientCache()
        self._workers = max(1, pacing.max_concurrency)
        self._ids: dict[str, str] = {}  # email key -> recipient id, as learned this pass
        self._listed: set[str] | None = None  # every recipient id of the account, once listed this pass
        self._created: set[str] = set()  # recipient ids created this pass
        self._list_lock = asyncio.Lock()
        self._groups: list[RemoteGroup] | None = None  # the account's groups, read once per pass
        self._groups_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"StannpConnector(name={self.name!r})"

    # -- groups ------------------------------------------------------------------------------------
    async def find_group(self, *, group_id: str | None = None, name: str | None = None) -> RemoteGroup | None:
        groups = await self._group_list()
        if group_id is not None:
            wanted = group_id.strip()
            for group in groups:
                if group.id == wanted:
                    return group
        if name is None:
            return None
        return self._by_name(groups, name)

    def _by_name(self, groups: list[RemoteGroup], name: str) -> RemoteGroup | None:
        found = [g for g in groups if g.name == name]
        if len(found) > 1:
            ids = ", ".join(g.id for g in found)
            raise FatalError(f"{len(found)} Stannp groups are named {name!r} (ids {ids}): bind one by group_id")
        return found[0] if found else None

    async def _group_list(self, *, fresh: bool = False) -> list[RemoteGroup]:
        async with self._groups_lock:
            if self._groups is not None and not fresh:
                return self._groups
            where = "GET /groups/list"

            end = PageEnd(GROUP_PAGE_SIZE)

            async def fetch(offset: int) -> tuple[list[RemoteGroup], int | None]:
                params = {"offset": offset, "limit": GROUP_PAGE_SIZE}
                items = _items(await self.api.json("GET", "groups/list", params=params), where)
                return [_group(i, where) for i in items], offset + len(items) if end.more(len(items)) else None

            self._groups = await paginate(fetch, 0)
            log.debug("%s: %d groups listed", self.name, len(self._groups))
            return self._groups

    async def create_group(self, name: str) -> RemoteGroup:
        # The same Idempotency-Key on every attempt; and as Stannp may not honour it, a create whose outcome
        # is unknown is looked up by name before it is sent again (never a duplicate group).
        key = uuid.uuid4().hex
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                body = await self.api.json(
                    "POST", "groups/create", json={"name": name}, headers={"Idempotency-Key": key}, idempotent=False
                )
            except RetriableError as exc:
                delay = max(exc.delay or 0.0, self.api.retry.backoff(attempt))
                if delay:
                    await asyncio.sleep(delay)
                found = self._by_name(await self._group_list(fresh=True), name)
                if found is not None:
                    return found
                if attempt == CREATE_ATTEMPTS:
                    raise
                log.debug("%s: group create failed in transit and did not land; sending it again", self.name)
                continue
            group = RemoteGroup(id=_id(_payload(body), "POST /groups/create"), name=name, member_count=0)
            if self._groups is not None:
                self._groups.append(group)
            return group
        raise AssertionError("unreachable")

    async def _require_group(self, group: RemoteGroup, *, fresh: bool = False) -> None:
        if all(g.id != group.id for g in await self._group_list(fresh=fresh)):
            raise NotFound(f"Stannp group {group.id} does not exist")

    # -- reading -----------------------------------------------------------------------------------
    async def read_members(self, group: RemoteGroup) -> list[RemoteMember]:
        where = "GET /recipients/list"
        # The group listing's member count (when the group came from it) tells a capped page from the last one.
        end = PageEnd(PAGE_SIZE, default=PAGE_DEFAULT, expected=group.member_count)

        async def fetch(offset: int) -> tuple[list[dict[str, Any]], int | None]:
            params = {"group_id": group.id, "offset": offset, "limit": PAGE_SIZE}
            items = _items(await self.api.json("GET", "recipients/list", params=params), where)
            return items, offset + len(items) if end.more(len(items)) else None

        items = await paginate(fetch, 0)
        if not items:
            await self._require_group(group)  # an unknown group_id may read as an empty list
        ids_by_key: dict[str, list[str]] = {}
        spelling: dict[str, str] = {}
        order: list[tuple[str | None, str]] = []  # (key, id) in listing order, each id once
        seen: set[str] = set()
        for item in items:
            rid = _id(item.get("id"), where)
            if rid in seen:  # a recipient that moved between pages
                continue
            seen.add(rid)
            email = _email(item)
            key = email_key(email) if email else None
            if email and key:
                ids_by_key.setdefault(key, []).append(rid)
                spelling.setdefault(rid, email)
            order.append((key, rid))
        cached = self.cache.get_many(list(ids_by_key))
        known = {**cached, **self._ids}
        # One member per email: the recipient syncd already knows, else the first; other copies by id.
        chosen = {k: (known[k] if known.get(k) in rids else rids[0]) for k, rids in ids_by_key.items()}
        members = [
            RemoteMember(email=spelling[rid] if key and chosen[key] == rid else None, id=rid) for key, rid in order
        ]
        self._learn(chosen, cached)
        extra = len(order) - len(chosen) - sum(1 for key, _ in order if key is None)
        log.debug("%s: group %s has %d recipients (%d duplicate copies)", self.name, group.id, len(order), extra)
        return members

    # -- which recipients exist --------------------------------------------------------------------
    def _learn(self, ids: dict[str, str], cached: dict[str, str] | None = None) -> None:
        """Remember email key -> id for this pass, and write what changed to the persisted cache."""
        self._ids.update(ids)
        if cached is None:
            cached = self.cache.get_many(list(ids))
        changed = {k: v for k, v in ids.items() if cached.get(k) != v}
        if changed:
            self.cache.put_many(changed)

    def _forget(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        for key in keys:
            rid = self._ids.pop(key, None)
            if rid is not None and self._listed is not None:
                self._listed.discard(rid)
        self.cache.forget(keys)

    async def prepare_adds(self, contacts: Sequence[Contact]) -> list[Contact]:
        """Resolve everything this pass will add, once: ids from the cache, and one listing of the account's
        recipients when some email is still unknown. `add_members` calls it too, so it is optional.

        Returns the contacts with the people who exist already first: batched in that order, they fill whole
        `groups/add` requests, so k new and m existing people cost k + ceil(m / batch) writes."""
        missing = [k for k in dict.fromkeys(c.key for c in contacts) if k not in self._ids]
        # after a listing, what it did not name does not exist
        if missing and self._listed is None:
            self._ids.update(self.cache.get_many(missing))
            if any(k not in self._ids for k in missing):
                await self._list_account()
        return sorted(contacts, key=lambda c: c.key not in self._ids)

    async def _list_account(self) -> None:
        """Every recipient of the account (`GET /recipients/list` without group_id, pages of 1000), once per
        connector instance. It is authoritative: cache entries it contradicts are forgotten."""
        async with self._list_lock:
            if self._listed is not None:
                return
            where = "GET /recipients/list"
            end = PageEnd(PAGE_SIZE, default=PAGE_DEFAULT)

            async def fetch(offset: int) -> tuple[list[dict[str, Any]], int | None]:
                params = {"offset": offset, "limit": PAGE_SIZE}
                items = _items(await self.api.json("GET", "recipients/list", params=params), where)
                return items, offset + len(items) if end.more(len(items)) else None

            listed: set[str] = set()
            owner: dict[str, str] = {}  # id -> email key
            ids_by_key: dict[str, list[str]] = {}
            for item in await paginate(fetch, 0):
                rid = _id(item.get("id"), where)
                listed.add(rid)
                email = _email(item)
                if email:
                    owner[rid] = email_key(email)
                    ids_by_key.setdefault(owner[rid], []).append(rid)
            cached = self.cache.all()
            believed = {**cached, **self._ids}
            # An entry is stale when its id is gone or now belongs to another email (ids created this pass
            # are valid even if the listing was read before they existed).
            stale = [k for k, v in believed.items() if owner.get(v) != k and v not in self._created]
            for key in stale:
                self._ids.pop(key, None)
            self.cache.forget([k for k in stale if k in cached])
            chosen = {k: (believed[k] if believed.get(k) in rids else rids[0]) for k, rids in ids_by_key.items()}
            self._listed = listed | self._created
            self._learn(chosen, {k: v for k, v in cached.items() if k not in stale})
            log.debug(
                "%s: account recipients listed: %d recipients, %d stale cache entries",
                self.name,
                len(listed),
                len(stale),
            )

    # -- adding ------------------------------------------------------------------------------------
    async def add_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        contacts = _unique(contacts)
        await self.prepare_adds(contacts)
        existing: list[Pair] = [(c, self._ids[c.key]) for c in contacts if c.key in self._ids]
        new = [c for c in contacts if c.key not in self._ids]
        done: list[str] = []
        for chunk in _chunks(existing, self.capabilities.max_add_batch):
            added, gone = await self._add_existing(group, chunk)
            done += [c.key for c in added]
            new += gone  # their recipient no longer exists: create it again
        created, rejected = await self._create_all(group, new)
        log.debug(
            "%s: group %s: %d added by id, %d created, %d refused",
            self.name,
            group.id,
            len(done),
            len(created),
            len(rejected),
        )
        return BatchResult(tuple(done + created), tuple(rejected))

    async def _members_call(self, method: str, verb: str, group: RemoteGroup, ids: Sequence[str]) -> None:
        # Adding a member twice or removing an absent one changes nothing: safe to resend.
        path = f"groups/{verb}/{_seg(group.id)}"
        headers = _key() if method == "POST" else None
        await self.api.request(method, path, json={"recipients": ",".join(ids)}, headers=headers, idempotent=True)

    async def _add_existing(self, group: RemoteGroup, pairs: Sequence[Pair]) -> tuple[list[Contact], list[Contact]]:
        """Add recipients by id; returns (added, contacts whose recipient turned out not to exist)."""

        async def add(part: Sequence[Pair]) -> None:
            await self._members_call("POST", "add", group, [rid for _, rid in part])

        try:
            await add(pairs)
            return [c for c, _ in pairs], []
        except BatchRejected as exc:
            log.debug("%s: groups/add refused a batch of %d (%s); refreshing", self.name, len(pairs), exc.status)
        await self._list_account()  # no-op when already listed this pass
        send: list[Pair] = []
        gone: list[Contact] = []
        for contact, _ in pairs:
            rid = self._ids.get(contact.key)  # after the listing: authoritative
            if rid is not None and self._listed is not None and rid in self._listed:
                send.append((contact, rid))
            else:
                gone.append(contact)
        self._forget([c.key for c in gone])
        if send and send != list(pairs):
            try:
                await add(send)
                return [c for c, _ in send], gone
            except BatchRejected:
                pass
        if not send:
            return [], gone
        await self._require_group(group, fresh=True)  # a vanished group must not look like vanished people
        ok, bad = await _isolate(add, send, refused=True)
        self._forget([c.key for c, _ in bad])
        return [c for c, _ in ok], gone + [c for c, _ in bad]

    async def _create_all(
        self, group: RemoteGroup, contacts: Sequence[Contact]
    ) -> tuple[list[str], list[MemberReject]]:
        """`POST /recipients/new` for each contact (one request each: there is no bulk create), a few at a time."""
        done: list[str] = []
        rejected: list[MemberReject] = []
        failure: list[ConnectorError] = []
        pending = iter(contacts)

        async def worker() -> None:
            for contact in pending:  # a shared iterator: each contact is taken by one worker
                if failure:
                    return
                try:
                    rid = await self._create(group, contact)
                except RecipientRefused as exc:
                    reason = f"{REFUSED}: {exc.reason}"
                    rejected.append(MemberReject(contact.email, reason, code="invalid_recipient"))
                    continue
                except ConnectorError as exc:  # auth, a vanished group, retries exhausted: stop the batch
                    failure.append(exc)
                    return
                done.append(contact.key)
                if rid is None:
                    continue
                self._created.add(rid)
                if self._listed is not None:
                    self._listed.add(rid)
                self._learn({contact.key: rid})

        await asyncio.gather(*(worker() for _ in range(min(self._workers, len(contacts)))))
        if failure:
            raise failure[0]
        return done, rejected

    async def _create(self, group: RemoteGroup, contact: Contact) -> str | None:
        """Create the recipient in the group; its id (None when a successful answer does not say it)."""
        # Safe to resend: the Idempotency-Key (the same on ApiClient's retries) and on_duplicate=update.
        body = await self.api.json(
            "POST", "recipients/new", data=_recipient_form(contact, group.id), headers=_key(), idempotent=True
        )
        data = _payload(body)
        if isinstance(data, dict) and data.get("valid") is False:
            log.debug("%s: a recipient was created with an address Stannp marks as not valid", self.name)
        try:
            return _id(data, "POST /recipients/new")
        except ProtocolError:
            log.debug("%s: recipients/new succeeded without naming the id; it is learnt on a later read", self.name)
            return None

    # -- removing and resetting --------------------------------------------------------------------
    async def remove_members(self, group: RemoteGroup, members: Sequence[RemoteMember]) -> BatchResult:
        ids = [m.id for m in members if m.id]
        by_email = [m for m in members if not m.id and m.email]
        if by_email:  # members read from the group carry ids; these come from elsewhere
            keys = [m.key for m in by_email]
            self._ids.update(self.cache.get_many([k for k in keys if k not in self._ids]))
            if any(k not in self._ids for k in keys) and self._listed is None:
                await self._list_account()
            # A person who is no recipient at all is in no group: nothing to remove.
            ids += [self._ids[k] for k in keys if k in self._ids]
        for chunk in _chunks(list(dict.fromkeys(ids)), self.capabilities.max_remove_batch):
            await self._remove_ids(group, chunk)
        return BatchResult(tuple(m.key for m in members if m.id or m.email))

    async def _remove_ids(self, group: RemoteGroup, ids: Sequence[str]) -> None:
        async def remove(part: Sequence[str]) -> None:
            await self._members_call("DELETE", "remove", group, part)

        try:
            await remove(ids)
            return
        except BatchRejected:
            pass
        # A recipient deleted since we read the group is in no group any more: leave it out, remove the rest.
        send = [rid for rid in ids if self._listed is None or rid in self._listed]
        if send != list(ids):
            try:
                await remove(send)
                return
            except BatchRejected:
                pass
        if send:
            await self._require_group(group, fresh=True)
            _, vanished = await _isolate(remove, send, refused=True)
            log.debug("%s: %d recipients to remove no longer exist", self.name, len(vanished))

    async def reset_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        # Non-atomic, so planned only when the user sets allow_non_atomic_reset. Resolve first, so the group
        # is empty for as short a time as possible. delete_recipients stays false: true deletes the
        # recipients account-wide, from every group.
        contacts = _unique(contacts)
        await self.prepare_adds(contacts)
        body = {"id": _number(group.id), "delete_recipients": False}
        await self.api.request("POST", "groups/purge", json=body, headers=_key(), idempotent=True)
        log.debug("%s: group %s purged for a reset", self.name, group.id)
        return await self.add_members(group, contacts) if contacts else BatchResult()

    async def aclose(self) -> None:
        await self.api.aclose()


# ---------------------------------------------------------------------------------------------- build


def build(settings: StannpSettings, ctx: BuildContext) -> StannpConnector:
    auth: httpx.Auth
    if settings.auth_scheme is AuthScheme.BEARER:
        auth = BearerAuth(settings.api_key)
    elif settings.auth_scheme is AuthScheme.BASIC:
        auth = ApiKeyBasicAuth(settings.api_key)
    else:
        auth = ApiKeyAuth(settings.api_key)
    client = make_client(settings.base_url, auth=auth, timeout=settings.timeout, transport=ctx.transport)
    capabilities = CAPABILITIES.with_batch_size(settings.batch_size)
    return StannpConnector(
        settings.name,
        client,
        capabilities=capabilities,
        pacing=settings.pacing(CAPABILITIES.pacing),
        retry=settings.retry.policy(),
        hooks=ctx.hooks,
        cache=ctx.cache,
        quota=read_quota,  # quota_from_headers, bounded by X-RateLimit-Limit
    )


__all__ = [
    "CAPABILITIES",
    "ApiKeyAuth",
    "AuthScheme",
    "RecipientRefused",
    "StannpConnector",
    "StannpSettings",
    "build",
    "classify",
    "error_message",
    "read_quota",
]
