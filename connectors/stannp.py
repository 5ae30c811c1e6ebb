"""Stannp direct-mail groups (printed mail: a group is a mailing list of postal recipients).

Why this module exists: Stannp groups are one of the targets syncd keeps equal to the source of truth, so a
mailing goes to exactly the people the CRM says. Five properties of the API shape everything below:

* **Two regional APIs** (a key is bound to one): the UK API (`api-eu1`) creates recipients with
  `POST /recipients/create` and groups with `POST /groups/create`, JSON bodies; the US API (`api-us1`) with
  `POST /recipients/new` and `POST /groups/new`, form fields. `region: auto` (the default) reads the base_url
  host: `api-us…` (or the legacy `us.stannp.com`) is US, anything else (api-eu1, a proxy, a sandbox on
  loopback) UK; `eu` / `us` pin one.
* **Members are recipient ids.** `POST /groups/add/:group_id {recipients: "id1,id2"}` and `groups/remove`
  take comma-separated ids, and there is **no look-up by email**. A person who already exists as a recipient
  is added by id (up to 1000 per request); the id comes from syncd's persisted recipient cache, else from ONE
  listing of every recipient of the account (`GET /recipients/list`, no group_id, pages of 1000), read at most
  once per connector instance (= per pass) and only when some email is unknown to the cache.
* **A new person is created and joined in one request** (`group_id`), with `on_duplicate=ignore` and
  `test_level=email`: a recipient with that email that exists after all (created since the listing, or by this
  very request whose answer was lost) is answered, never a second one. A sync of k new and m existing
  recipients costs k + ceil(m/1000) writes. Every POST carries a fresh `X-Idempotency-Key` (uuid4 hex), the
  same one on ApiClient's retries of it; Stannp answers a replay **HTTP 409 with the first answer's body**,
  which is that first answer (`is_replay`; any other 409 is an error). A contact Stannp refuses is a permanent
  `MemberReject` with code `invalid_recipient`. A contact lacking a field the create requires
  (`Capabilities.required_fields`: first_name, last_name, address.line1, address.city, address.postcode,
  address.country) is rejected by the planner before planning and, for any other caller, by this module before
  sending, as "missing fields <provider> requires: ..." (code `missing_fields`).
* **One stale id fails a whole `groups/add` (HTTP 400).** The connector then refreshes (the account listing,
  once per pass), forgets stale cache entries, resends what is still valid and splits the rest so the good
  ids go in; a person whose recipient is gone is created again.
* **Rate limits per plan** (300/600/2000/3000 requests per minute) announced on every answer by
  `X-RateLimit-Limit/Remaining/Reset`: pacing spreads what is left of the window over the time until it
  resets and waits for the reset at 0 (and on a 429).

Errors are `{"success": false, "error": ...}`, possibly on HTTP 200: every answer is checked (`classify`).
`groups/remove` goes as POST, as the SDKs send it; a server answering 405 gets DELETE (the newest UK page's
example) once, and from then on for the connector's life. A reset (used ONLY when the user sets
`allow_non_atomic_reset`) is `POST /groups/purge {id, delete_recipients: false}` then the adds: the group is
empty in between. `delete_recipients: true` deletes the recipients account-wide (from every group), so this
module never sends it, anywhere; in a US form body the field is left out (its documented default is false),
since a form can only say "false" as a string a loose server would read as true.

Known from Stannp's own pages (PROVIDERS.md "What the real services do", /tmp/research notes):

* `X-Idempotency-Key`, 10 to 1024 characters, POST only, remembered 24 h; a replay (identical request) answers
  409 with the original body (the idempotency-keys page, UK and CA versions);
* `recipients/create` (UK) requires firstname, lastname, address1, city, postcode, country (ISO 3166-1
  alpha-2); `recipients/new` (US) takes the same fields, `postcode` included, and marks none required;
* `on_duplicate`: `ignore` is the one value every source lists (the CA guide and the Java SDK: update |
  ignore | duplicate; the PHP SDK's docblock: duplicate | ignore | replace); `duplicate`, the PHP SDK's
  default, makes a second recipient. `test_level` email | fullname | initial | ref_id decides what a duplicate
  is (the docs' example sends `test_level`; its default, name and address, comes from a third-party copy of
  the US page);
* `groups/new` (US, form) vs `groups/create` (UK, JSON) answer `{"success": true, "data": "39"}`;
  `groups/add` answers the count added; `groups/purge {id, delete_recipients}` empties a group.

Wire shapes assumed (check them against a real account):

* that `recipients/create`, `recipients/new` and `groups/*` honour the key at all (the page's examples are
  all `letters/create`). Nothing depends on it: a recipient create resent without it is answered by
  on_duplicate=ignore with test_level=email, a group create whose outcome is unknown is looked up by name
  before it is sent again (under the same key), adds, removes and purges are idempotent anyway;
* that `test_level=email` is honoured. Should Stannp match on name and address instead and answer the id of
  a recipient this pass knows under another email (or none), that person is rejected (code
  `duplicate_match`) instead of putting someone else's record in the group;
* that `group_id` joins an existing recipient that `ignore` answers (the docs: "the group ID to add the
  recipient to"). An existing recipient can only be recognised from this pass's listing, and a listed one
  with this email is never created (it is added by id); a recipient created with this email since the
  listing cannot be told from a new one. Should the join not happen, the next pass reads the person as
  missing and adds the id it learnt with `groups/add`;
* the required fields of `recipients/new` (US): unknown, so the UK set, the safe choice;
* ids are numeric strings (`"1943"`); numbers are accepted too. `data` envelopes are unwrapped when present
  and a bare body is accepted where doc versions disagree (`{"id": "1941", "valid": true}`). `X-RateLimit-Reset`
  is seconds until the window resets (an epoch timestamp is recognised and converted);
* `GET /recipients/list` takes `group_id` (optional), `offset` and `limit` (default 100, at most 1000) and
  answers `{id, email, firstname, lastname, company, address1, address2, city, postcode, country, ref_id}`
  items with no total, so a page shorter than the limit is the last one, unless it is the first page and a
  server cap could explain it (the default 100, a round number, or fewer items than the group listing
  counted: `PageEnd`), in which case pages are read on while that full; an unknown `group_id` may answer
  404 or an empty list (an empty first page is checked against the group listing, so a deleted group is
  reported as gone instead of being read as empty);
* `groups/add` and `groups/remove` take at most 1000 ids; an unknown id fails the request with HTTP 400;
  an unknown group answers HTTP 404; `groups/list` (offset, limit) has no total either.

Unverified defaults (override them once the real limits are known):

* at most 1000 ids per `groups/add` / `groups/remove` request (`batch_size` lowers it);
* pages of 1000 recipients, and of 50 groups (the docs' own example limit); a first page shorter than asked
  whose length could be a silent server cap is not taken for the last one (at most one more request);
* pacing of the lowest plan: 300 requests/min = 5/s, bursts of 5, 4 requests in flight (`rate_limit`,
  `burst`, `max_concurrency`; the quota headers slow it further, never speed it up);
* HTTP Basic auth with the key as username (the documented way), falling back to `Authorization: Bearer`
  (the newer docs, and every example of the groups excerpt) when Basic answers 401 (`auth_scheme: auto`,
  the default; `basic` or `bearer` pin one).

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
from dataclasses import dataclass, replace
from typing import Any, Literal
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
    NullRecipientCache,
    Pacing,
    ProtocolError,
    RecipientCache,
    RemoteGroup,
    RemoteMember,
    ResetKind,
    email_key,
)
from connectors.batching import chunks, create_or_find, isolate
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
    json_body,
    make_client,
    off_loop,
    paginate,
    quota_from_headers,
)
from connectors.settings import BuildContext, ProviderSettings

log = logging.getLogger("syncd.connectors.stannp")

DEFAULT_BASE_URL = "https://api-eu1.stannp.com/v1"
US_BASE_URL = "https://api-us1.stannp.com/v1"
IDEMPOTENCY_HEADER = "X-Idempotency-Key"  # the header of Stannp's idempotency-keys page (not `Idempotency-Key`)
ON_DUPLICATE = "ignore"  # documented in every version; never makes a second recipient
TEST_LEVEL = "email"  # what makes a duplicate: the same email (the docs' default is name and address)
MAX_IDS = 1000  # UNVERIFIED: recipient ids per groups/add and groups/remove request
PAGE_SIZE = 1000  # the assumed cap of `limit` on /recipients/list
PAGE_DEFAULT = 100  # the assumed default `limit` of /recipients/list: what a server ignoring ours sends
GROUP_PAGE_SIZE = 50  # UNVERIFIED: the docs' example limit for /groups/list
CREATE_ATTEMPTS = 3  # a group create whose outcome is unknown is looked up by name, then sent again
PACING = Pacing(rate=300 / 60, burst=5, max_concurrency=4)  # the lowest plan: 300 requests/min
# recipients/create (UK) marks these required. The US reference (recipients/new) marks nothing either way and
# documents the same fields, so the US set is the same one: the safe choice until a US account says otherwise.
REQUIRED_FIELDS = frozenset(
    {"first_name", "last_name", "address.line1", "address.city", "address.postcode", "address.country"}
)
REFUSED = "Stannp refused the recipient"
MATCHED_ANOTHER = "Stannp matched this person to an existing recipient with another email or none"
_MEMBER_CALLS = ("/groups/add/", "/groups/remove/")
_CREATE_CALLS = ("/recipients/create", "/recipients/new")
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


class Region(enum.StrEnum):
    """Which of Stannp's two APIs a key belongs to. They differ in the create endpoints (see `Endpoints`)."""

    AUTO = "auto"
    EU = "eu"  # api-eu1 (UK): recipients/create and groups/create, JSON bodies
    US = "us"  # api-us1: recipients/new and groups/new, form bodies


def resolve_region(base_url: str | httpx.URL, region: Region = Region.AUTO) -> Region:
    """`region` itself unless it is `auto`; then the base_url's host: `api-us…` (and the legacy `us.stannp.com`
    of the old US docs) is the US API, any other host (api-eu1, a proxy, a sandbox on loopback) the UK one."""
    if region is not Region.AUTO:
        return region
    host = httpx.URL(str(base_url)).host.lower()
    return Region.US if host.startswith(("api-us", "us.")) else Region.EU


@dataclass(frozen=True, slots=True)
class Endpoints:
    """What differs between the two regional APIs."""

    region: Region
    create_recipient: str
    create_group: str
    json_bodies: bool  # UK: JSON bodies, as its reference shows; US: form fields, as its reference shows
    required_fields: frozenset[str] = REQUIRED_FIELDS


ENDPOINTS = {
    Region.EU: Endpoints(Region.EU, "recipients/create", "groups/create", json_bodies=True),
    Region.US: Endpoints(Region.US, "recipients/new", "groups/new", json_bodies=False),
}


def capabilities_for(region: Region) -> Capabilities:
    """CAPABILITIES with the fields the region's recipient create requires."""
    endpoints = ENDPOINTS[Region.EU if region is Region.AUTO else region]
    return replace(CAPABILITIES, required_fields=endpoints.required_fields)


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
    region: Region = Field(
        default=Region.AUTO,
        description="Which Stannp API base_url is: `eu` (api-eu1, the UK API: `recipients/create` and "
        "`groups/create` with JSON bodies; a new recipient needs first and last name, address line 1, city, "
        "postcode and country), `us` (api-us1: `recipients/new` and `groups/new` with form fields), or `auto` "
        "(default: `us` when the base_url host starts with `api-us` (or is the legacy `us.stannp.com`), else "
        "`eu`, which includes sandboxes on loopback).",
    )
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
    """`recipients/create` (`recipients/new`) refused this one contact (a validation error); `reason` is
    Stannp's own message."""

    def __init__(self, message: str, *, reason: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.reason = reason


def success_body(body: Any) -> bool:
    """Whether an answer's body is a success: `"success": true`, or (a bare body, as some doc versions show) no
    `success` and no `error` but the data itself."""
    if not isinstance(body, dict):
        return False
    if "success" in body:
        return body["success"] is True
    return "error" not in body and ("data" in body or "id" in body)


def is_replay(response: httpx.Response) -> bool:
    """A POST sent with an `X-Idempotency-Key` that Stannp had already served: HTTP 409 with the FIRST answer's
    body. That is the first answer, not a conflict. Any other 409 (a real conflict) stays an error."""
    return (
        response.status_code == 409
        and response.request.method == "POST"
        and IDEMPOTENCY_HEADER in response.request.headers
        and success_body(body_or_none(response))
    )


def classify(response: httpx.Response) -> ConnectorError | None:
    """Errors of the Stannp API: HTTP errors, and `{"success": false, "error": ...}` even on HTTP 200. An
    idempotent replay (409 with a success body, `is_replay`) is a success."""
    status = response.status_code
    body = body_or_none(response)
    failed = isinstance(body, dict) and body.get("success") is False
    if (status < 400 and not failed) or is_replay(response):
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
    keyed = IDEMPOTENCY_HEADER in response.request.headers
    # A create's refusal is about that one person; so is the replay of one (409 with the first answer's body).
    if path.endswith(_CREATE_CALLS) and (status < 400 or status in (400, 422) or (status == 409 and keyed)):
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
    """A fresh `X-Idempotency-Key` for one logical POST (ApiClient's retries of it resend the same headers).
    32 hex characters: within the documented 10 to 1024."""
    return {IDEMPOTENCY_HEADER: uuid.uuid4().hex}


def missing_fields(contact: Contact, required: frozenset[str]) -> list[str]:
    """The required fields (`first_name`, `address.city`, ...) a contact lacks or leaves blank, sorted: the
    planner's own rule, so a member it let through is never refused here."""
    missing = []
    for name in sorted(required):
        value: object = contact
        for part in name.split("."):
            value = getattr(value, part, None) if value is not None else None
        if value is None or (isinstance(value, str) and not value.strip()):
            missing.append(name)
    return missing


def _unique(contacts: Sequence[Contact]) -> list[Contact]:
    """One contact per email key: the first spelling wins, order kept."""
    first: dict[str, Contact] = {}
    for contact in contacts:
        first.setdefault(contact.key, contact)
    return list(first.values())


def _recipient_fields(contact: Contact, group_id: str, *, json_body: bool) -> dict[str, str | int]:
    address = contact.address
    fields: dict[str, str | int | None] = {
        "email": contact.email,
        "firstname": contact.first_name,
        "lastname": contact.last_name,
        "address1": address.line1 if address else None,
        "address2": address.line2 if address else None,
        "city": address.city if address else None,
        "postcode": address.postcode if address else None,
        "country": address.country if address else None,
        "group_id": _number(group_id) if json_body else group_id,  # "body int" in the docs
        # A recipient with this email exists after all (someone created it since the listing, or this very
        # request's answer was lost and the key not honoured): answer its id, create nothing.
        "on_duplicate": ON_DUPLICATE,
        "test_level": TEST_LEVEL,
    }
    return {k: v for k, v in fields.items() if v is not None}  # never blank out what Stannp knows


# ------------------------------------------------------------------------------------------ connector

Pair = tuple[Contact, str]  # a contact and the recipient id it is added by


class StannpConnector(Closing):
    """One Stannp account behind the `Connector` protocol (plus `prepare_adds`). Meant to live for one pass:
    it reads the account's recipient listing and its group listing at most once."""

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        *,
        region: Region = Region.AUTO,
        capabilities: Capabilities | None = None,
        pacing: Pacing | None = None,
        retry: RetryPolicy | None = None,
        hooks: RequestHooks | None = None,
        cache: RecipientCache | None = None,
        quota: Callable[[httpx.Response], Quota | None] | None = read_quota,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.endpoints = ENDPOINTS[resolve_region(client.base_url, region)]
        self.capabilities = capabilities or capabilities_for(self.endpoints.region)
        pacing = pacing or self.capabilities.pacing
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
        self._owner: dict[str, str] = {}  # recipient id -> email key, as listed or learnt this pass
        self._remove_method = "POST"  # as the SDKs send groups/remove; DELETE once the API answers 405
        self._list_lock = asyncio.Lock()
        self._groups: list[RemoteGroup] | None = None  # the account's groups, read once per pass
        self._groups_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"StannpConnector(name={self.name!r}, region={self.endpoints.region.value})"

    def _body(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A write's body: JSON on the UK API, form fields on the US one (where a bool would arrive as the
        string "false", which a loose server reads as true: form bodies carry no bools, see reset_members)."""
        if self.endpoints.json_bodies:
            return {"json": fields}
        return {"data": {k: str(v) for k, v in fields.items()}}

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
        # The same X-Idempotency-Key on every attempt (a replay answers 409 with the first answer: `classify`
        # passes it). The docs do not say groups/* honour the key, so a create whose outcome is unknown is
        # also looked up by name before it is sent again: never a duplicate group, whether or not they do.
        path = self.endpoints.create_group
        where = f"POST /{path}"
        headers = _key()

        async def create() -> RemoteGroup:
            body = await self.api.json("POST", path, **self._body({"name": name}), headers=headers, idempotent=False)
            group = RemoteGroup(id=_id(_payload(body), where), name=name, member_count=0)
            if self._groups is not None:
                self._groups.append(group)
            return group

        async def find() -> RemoteGroup | None:
            log.debug("%s: a group create failed in transit; looking it up before sending it again", self.name)
            return self._by_name(await self._group_list(fresh=True), name)

        return await create_or_find(create, find, attempts=CREATE_ATTEMPTS, pause=self.api.pause)

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
        cached = await off_loop(self.cache.get_many, list(ids_by_key))
        known = {**cached, **self._ids}
        # One member per email: the recipient syncd already knows, else the first; other copies by id.
        chosen = {k: (known[k] if known.get(k) in rids else rids[0]) for k, rids in ids_by_key.items()}
        members = [
            RemoteMember(email=spelling[rid] if key and chosen[key] == rid else None, id=rid) for key, rid in order
        ]
        await self._learn(chosen, cached)
        extra = len(order) - len(chosen) - sum(1 for key, _ in order if key is None)
        log.debug("%s: group %s has %d recipients (%d duplicate copies)", self.name, group.id, len(order), extra)
        return members

    # -- which recipients exist --------------------------------------------------------------------
    async def _learn(self, ids: dict[str, str], cached: dict[str, str] | None = None) -> None:
        """Remember email key -> id for this pass, and write what changed to the persisted cache."""
        self._ids.update(ids)
        self._owner.update({rid: key for key, rid in ids.items()})
        if cached is None:
            cached = await off_loop(self.cache.get_many, list(ids))
        changed = {k: v for k, v in ids.items() if cached.get(k) != v}
        if changed:
            await off_loop(self.cache.put_many, changed)

    async def _forget(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        for key in keys:
            rid = self._ids.pop(key, None)
            if rid is not None and self._listed is not None:
                self._listed.discard(rid)
            if rid is not None and self._owner.get(rid) == key:
                del self._owner[rid]
        await off_loop(self.cache.forget, keys)

    async def prepare_adds(self, contacts: Sequence[Contact]) -> list[Contact]:
        """Resolve everything this pass will add, once: ids from the cache, and one listing of the account's
        recipients when some email is still unknown. `add_members` calls it too, so it is optional.

        Returns the contacts with the people who exist already first: batched in that order, they fill whole
        `groups/add` requests, so k new and m existing people cost k + ceil(m / batch) writes."""
        missing = [k for k in dict.fromkeys(c.key for c in contacts) if k not in self._ids]
        # after a listing, what it did not name does not exist
        if missing and self._listed is None:
            self._ids.update(await off_loop(self.cache.get_many, missing))
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
            cached = await off_loop(self.cache.all)
            believed = {**cached, **self._ids}
            # An entry is stale when its id is gone or now belongs to another email (ids created this pass
            # are valid even if the listing was read before they existed).
            stale = [k for k, v in believed.items() if owner.get(v) != k and v not in self._created]
            for key in stale:
                self._ids.pop(key, None)
            await off_loop(self.cache.forget, [k for k in stale if k in cached])
            chosen = {k: (believed[k] if believed.get(k) in rids else rids[0]) for k, rids in ids_by_key.items()}
            self._listed = listed | self._created
            self._owner.update(owner)
            await self._learn(chosen, {k: v for k, v in cached.items() if k not in stale})
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
        for chunk in chunks(existing, self.capabilities.max_add_batch):
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
        # Adding a member twice or removing an absent one changes nothing: safe to resend (a POST also carries
        # its own key, so a resend whose first answer was lost is answered 409 with that answer).
        path = f"groups/{verb}/{_seg(group.id)}"
        headers = _key() if method == "POST" else None
        body = self._body({"recipients": ",".join(ids)})
        await self.api.request(method, path, **body, headers=headers, idempotent=True)

    async def _remove_call(self, group: RemoteGroup, ids: Sequence[str]) -> None:
        """`groups/remove` as the SDKs send it (POST; the newest UK page shows DELETE). A server answering 405
        to POST gets DELETE, once, and for the rest of the connector's life."""
        if self._remove_method == "POST":
            try:
                await self._members_call("POST", "remove", group, ids)
                return
            except FatalError as exc:
                if exc.status != 405:
                    raise
            log.debug("%s: groups/remove answered 405 to POST; sending DELETE from now on", self.name)
            self._remove_method = "DELETE"
        await self._members_call("DELETE", "remove", group, ids)

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
        await self._forget([c.key for c in gone])
        if send and send != list(pairs):
            try:
                await add(send)
                return [c for c, _ in send], gone
            except BatchRejected:
                pass
        if not send:
            return [], gone
        await self._require_group(group, fresh=True)  # a vanished group must not look like vanished people
        ok, bad = await isolate(add, send, refused=True)
        await self._forget([c.key for c, _ in bad])
        return [c for c, _ in ok], gone + [c for c, _ in bad]

    async def _create_all(
        self, group: RemoteGroup, contacts: Sequence[Contact]
    ) -> tuple[list[str], list[MemberReject]]:
        """Create each contact in the group (`recipients/create`, `recipients/new` on the US API: one request
        each, there is no bulk create), a few at a time. A contact lacking a field the create requires is
        rejected without a request (the planner rejects those already; this holds for any other caller)."""
        done: list[str] = []
        rejected: list[MemberReject] = []
        failure: list[ConnectorError] = []
        sendable: list[Contact] = []
        for contact in contacts:
            missing = missing_fields(contact, self.capabilities.required_fields)
            if missing:
                reason = f"missing fields {self.name} requires: {', '.join(missing)}"
                rejected.append(MemberReject(contact.email, reason, code="missing_fields"))
            else:
                sendable.append(contact)
        pending = iter(sendable)

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
                if rid is not None and self._matched_another(rid, contact):
                    # on_duplicate=ignore answered a recipient this pass knows under another email (or none):
                    # Stannp matched on name and address (test_level=email not honoured). Adding it would put
                    # someone else's record in the group and drift every pass; whoever owns the data merges them.
                    reason = f"{MATCHED_ANOTHER} (recipient {rid}); merge or correct them in Stannp"
                    rejected.append(MemberReject(contact.email, reason, code="duplicate_match"))
                    continue
                done.append(contact.key)
                if rid is None:
                    continue
                if rid not in self._owner:  # not listed this pass: created now (or by someone since the listing)
                    self._created.add(rid)
                    if self._listed is not None:
                        self._listed.add(rid)
                await self._learn({contact.key: rid})

        await asyncio.gather(*(worker() for _ in range(min(self._workers, len(sendable)))))
        if failure:
            raise failure[0]
        return done, rejected

    def _matched_another(self, rid: str, contact: Contact) -> bool:
        """Whether a create answered the id of a recipient this pass knows under another email (listed, or
        created this pass for someone else), or listed without an email. An id this pass has not seen is the
        new recipient, or one created with this email since the listing; the create's group_id joined it (the
        docs: "the group ID to add the recipient to"), and should it not have, the next pass reads the person
        as missing and adds the id it has learnt with groups/add."""
        owner = self._owner.get(rid)
        if owner is not None:
            return owner != contact.key
        return self._listed is not None and rid in self._listed and rid not in self._created

    async def _create(self, group: RemoteGroup, contact: Contact) -> str | None:
        """Create the recipient in the group; its id (None when a successful answer does not say it).

        Safe to resend, twice over: ApiClient's retries carry the same X-Idempotency-Key (Stannp answers a
        replay 409 with the first answer, which `classify` passes), and should the endpoint not honour the
        key, on_duplicate=ignore with test_level=email answers the recipient the lost attempt created."""
        path = self.endpoints.create_recipient
        where = f"POST /{path}"
        fields = _recipient_fields(contact, group.id, json_body=self.endpoints.json_bodies)
        response = await self.api.request("POST", path, **self._body(fields), headers=_key(), idempotent=True)
        if is_replay(response):
            log.debug("%s: %s answered from its idempotency key (409 with the first answer)", self.name, where)
        data = _payload(json_body(response))
        if isinstance(data, dict) and data.get("valid") is False:
            log.debug("%s: a recipient was created with an address Stannp marks as not valid", self.name)
        try:
            return _id(data, where)
        except ProtocolError:
            log.debug("%s: %s succeeded without naming the id; it is learnt on a later read", self.name, where)
            return None

    # -- removing and resetting --------------------------------------------------------------------
    async def remove_members(self, group: RemoteGroup, members: Sequence[RemoteMember]) -> BatchResult:
        ids = [m.id for m in members if m.id]
        by_email = [m for m in members if not m.id and m.email]
        if by_email:  # members read from the group carry ids; these come from elsewhere
            keys = [m.key for m in by_email]
            self._ids.update(await off_loop(self.cache.get_many, [k for k in keys if k not in self._ids]))
            if any(k not in self._ids for k in keys) and self._listed is None:
                await self._list_account()
            # A person who is no recipient at all is in no group: nothing to remove.
            ids += [self._ids[k] for k in keys if k in self._ids]
        for chunk in chunks(list(dict.fromkeys(ids)), self.capabilities.max_remove_batch):
            await self._remove_ids(group, chunk)
        return BatchResult(tuple(m.key for m in members if m.id or m.email))

    async def _remove_ids(self, group: RemoteGroup, ids: Sequence[str]) -> None:
        async def remove(part: Sequence[str]) -> None:
            await self._remove_call(group, part)

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
            _, vanished = await isolate(remove, send, refused=True)
            log.debug("%s: %d recipients to remove no longer exist", self.name, len(vanished))

    async def reset_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        # Non-atomic, so planned only when the user sets allow_non_atomic_reset. Resolve first, so the group
        # is empty for as short a time as possible. delete_recipients stays false: true deletes the
        # recipients account-wide, from every group. As form fields (US) it is left out, as the documented
        # default false: a form can only send the string "false", which a loose server reads as true.
        contacts = _unique(contacts)
        await self.prepare_adds(contacts)
        fields: dict[str, Any] = {"id": _number(group.id)}
        if self.endpoints.json_bodies:
            fields["delete_recipients"] = False
        await self.api.request("POST", "groups/purge", **self._body(fields), headers=_key(), idempotent=True)
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
    region = resolve_region(settings.base_url, settings.region)
    return StannpConnector(
        settings.name,
        client,
        region=region,
        capabilities=settings.capabilities(capabilities_for(region)),
        retry=settings.retry.policy(),
        hooks=ctx.hooks,
        cache=ctx.cache,
        quota=read_quota,  # quota_from_headers, bounded by X-RateLimit-Limit
    )


__all__ = [
    "CAPABILITIES",
    "ENDPOINTS",
    "IDEMPOTENCY_HEADER",
    "ApiKeyAuth",
    "AuthScheme",
    "Endpoints",
    "RecipientRefused",
    "Region",
    "StannpConnector",
    "StannpSettings",
    "build",
    "capabilities_for",
    "classify",
    "error_message",
    "is_replay",
    "missing_fields",
    "read_quota",
    "resolve_region",
    "success_body",
]
