"""HubSpot lists as a source of desired groups: each configured group is one list's contacts.

How the API is used (PROVIDERS.md: "Source CRMs", "Wire shapes assumed", and "What the real services do", which
wins; the shapes are those of HubSpot's public CRM Lists v3 and Contacts v3 OpenAPI specs):

- Auth: a private app's access token as `Authorization: Bearer` (scopes crm.lists.read,
  crm.objects.contacts.read). Nothing is ever written.
- The list first, every pass: `GET /crm/v3/lists/{listId}` → `{list: {listId, name, objectTypeId,
  processingStatus, processingType, size, ...}}`. A list whose `objectTypeId` is not `0-1` (a list of companies,
  deals, ...) is not a list of contacts, and a list whose `processingStatus` is not `COMPLETE` (PROCESSING,
  REFRESHING, ...: an open string) has partial memberships: either way that group fails closed and its
  memberships are not read. So does a list answered with a `deletedAt` (deleted lists stay restorable for 90
  days; whether HubSpot still serves them is unknown). A 404 means the list is gone: that group fails.
- Members: `GET /crm/v3/lists/{listId}/memberships?limit=250&after=…`, 250 (the cap) per page, in ascending
  recordId order (the spec says so), following `paging.next.after` until it is absent. A cursor seen twice is
  a server bug and fails the read rather than looping.
- Contacts: `POST /crm/v3/objects/contacts/batch/read {inputs: [{id}], properties: [...], propertiesWithHistory:
  []}` (the spec requires the last), 100 ids (the cap)
  per call, sent while later membership pages are still being read. So a list of N members costs 1 list read,
  ceil(N / 250) membership pages (at least 1) and ceil(N / 100) batch reads: 1,000 members = 1 + 4 + 10 = 15
  requests. Ids are chunked across page boundaries, so no batch is short except the last.
- A batch read naming ids HubSpot no longer has (deleted or archived between the two calls) answers 207 with
  the found contacts in `results` and `errors[{category: OBJECT_NOT_FOUND, context: {ids}}]`: those members
  are reported as rejects of the group, the rest go ahead. Any other error entry, or a requested id that
  comes back neither found nor not-found, fails the read (fail closed: a contact silently missing would be
  removed from every provider).
- A contact without an email becomes a reject of its group, with the contact id in the reason; invalid and
  duplicate emails are rejected by `admit` as for any source.
- Errors: `{"status": "error", "message", "category", "correlationId"}`; a 429's body is `{status, message,
  errorType: "RATE_LIMIT", correlationId, policyName, requestId}` (every field read as optional). The message
  shown carries the category (or errorType), the message, the policyName and the correlationId (what HubSpot
  support asks for), never the token.

Limits (HubSpot's usage guidelines):

- Burst: per app, 100 requests per 10 s on free and starter, 190 on professional and enterprise, 250 with the
  API limit increase. `tier` (default free) sets the pace: the shared `ApiClient` token bucket at a tenth of the
  limit per second with bursts of 1 (10/s: never more than 100 requests in any 10 s); `rate_limit` overrides it.
  A 429 with any other `policyName` (TEN_SECONDLY_ROLLING, SECONDLY, none) is waited out (honouring Retry-After,
  which HubSpot does not document, else with backoff); 5xx and timeouts are retried with backoff. When
  `X-HubSpot-RateLimit-Remaining` reaches 0 (someone else using the same app's budget) the next request waits
  for one slot of the rolling window (`X-HubSpot-RateLimit-Interval-Milliseconds` / `X-HubSpot-RateLimit-Max`),
  counting the wait the pace imposes anyway.
- Daily: per account (shared with its other apps; `X-HubSpot-RateLimit-Daily`, `-Daily-Remaining`), reset at
  midnight in the account's time zone. A 429 with `policyName: DAILY` will not clear for hours: it is
  `QuotaExhausted`, never retried nor waited for; no further request goes to HubSpot from this source this pass
  (the source's other requests are cancelled; the first list is read alone before the others start, so a pass
  that starts with the limit used up costs exactly 1 request), and every group of the source fails closed.

Assumptions to check against a real account: the 207's error entry (`category: OBJECT_NOT_FOUND` with
`context.ids`; PROVIDERS.md, "Wire shapes assumed"); the batch read cap of 100 (not in the spec); that a list
being re-evaluated reports a processingStatus other than COMPLETE for as long as its memberships are partial
(the spec has no enum for it: its examples show COMPLETE and PROCESSING, and one COMPLETED, which is taken
for COMPLETE too); that
`X-HubSpot-RateLimit-Remaining` counts the request it answers. When the rate-limit headers are absent (HubSpot
leaves them out when it cannot gather them, and on search endpoints), pacing alone keeps the rate.

Failure is per group: a list that cannot be read (404, not contacts, still processing, a 5xx that outlasts its
retries, a fault mid-pagination) leaves that group untouched and is reported; the source's other lists still
apply. A refused token (401/403) or the daily limit fails the whole source (a `SourceError`, not a
`PartialRead`), and nothing more is sent to HubSpot that pass.

The keys of a `type: hubspot` entry of `sources:` are `HubSpotSourceSettings`, defined here and registered
with `build` in `syncd.sources.registry`; the config loader knows them only through that registry.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Literal, TypeVar

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import (
    AuthError,
    ConnectorError,
    Contact,
    FatalError,
    NotFound,
    Pacing,
    PostalAddress,
    ProtocolError,
    QuotaExhausted,
)
from connectors.http import (
    ApiClient,
    BearerAuth,
    Quota,
    RequestHooks,
    RequestKind,
    TokenBucket,
    body_or_none,
    error_for_status,
    json_body,
    make_client,
)
from connectors.settings import RetrySettings, check_api_url
from syncd.config.models import (
    EXCLUDE_TEXT,
    KEY_TEXT,
    MODEL_CONFIG,
    PROTECTED_TEXT,
    REMOVAL_POLICY_TEXT,
    SOURCE_NAME_PATTERN,
    TARGETS_TEXT,
    Config,
    DeclaredGroup,
    GroupKeyChecks,
    SourceSettings,
    TargetSpec,
    check_group_name,
    check_targets_once,
)
from syncd.config.problems import ProblemList
from syncd.errors import SourceError
from syncd.model import DesiredGroup, Reject, RejectCode, RemovalPolicy, Target
from syncd.planning import admit
from syncd.sources.base import CheckLine, PartialRead, SourceContext

log = logging.getLogger("syncd.sources.hubspot")

T = TypeVar("T")

MEMBERSHIP_PAGE = 250  # documented cap of `limit`
BATCH_READ = 100  # documented cap of batch read inputs
CONTACTS = "0-1"  # objectTypeId of contacts
COMPLETE = "COMPLETE"  # processingStatus of a list whose memberships are final
DONE = frozenset({COMPLETE, "COMPLETED"})  # the spec's examples spell it both ways
DAILY = "DAILY"  # policyName of the daily limit's 429


# ------------------------------------------------------------------------------------------ settings

# The member fields a CRM property can fill, as `properties:` keys name them.
MEMBER_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "address.line1",
    "address.line2",
    "address.city",
    "address.postcode",
    "address.country",
)
# HubSpot contact properties read for every member; `properties:` adds to (or replaces) these.
HUBSPOT_DEFAULT_PROPERTIES = {"email": "email", "first_name": "firstname", "last_name": "lastname"}
HUBSPOT_BASE_URL = "https://api.hubapi.com"
# HubSpot's burst limit, per app, in requests per 10 seconds, by the account's subscription tier (HubSpot's
# usage-guidelines page): free and starter 100, professional and enterprise 190, 250 with the API limit increase.
HubSpotTier = Literal["free", "starter", "professional", "enterprise", "api_limit_increase"]
HUBSPOT_BURST_LIMITS: dict[str, int] = {
    "free": 100,
    "starter": 100,
    "professional": 190,
    "enterprise": 190,
    "api_limit_increase": 250,
}
HUBSPOT_BURST_WINDOW = 10.0  # seconds
_HUBSPOT_PROPERTY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


class HubSpotGroupSpec(GroupKeyChecks):
    """A desired group whose members are the contacts of one HubSpot list."""

    model_config = MODEL_CONFIG

    name: str = Field(
        description="The group's name; also its name at the providers when syncd creates it. Unique across "
        "the whole config (inline groups and every source), compared case-insensitively."
    )
    list_id: str = Field(
        description="The HubSpot list's id (the number in the list's URL; the v3 lists API's listId). Its "
        "current contacts are the group's members."
    )
    key: str | None = Field(default=None, description=KEY_TEXT)
    targets: list[TargetSpec] | None = Field(default=None, description=TARGETS_TEXT)
    protected: list[str] = Field(default_factory=list, description=PROTECTED_TEXT)
    exclude: list[str] = Field(default_factory=list, description=EXCLUDE_TEXT)
    removal_policy: RemovalPolicy | None = Field(default=None, description=REMOVAL_POLICY_TEXT)
    max_removals: int | None = Field(default=None, ge=0, description="Overrides safety.max_removals for this group.")
    max_removal_ratio: float | None = Field(
        default=None, ge=0, le=1, description="Overrides safety.max_removal_ratio for this group."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_group_name(value)

    @field_validator("list_id", mode="before")
    @classmethod
    def _list_id(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            value = value.strip()
            if not value.isdigit():
                raise ValueError(f"a HubSpot list id is a number (the listId in the list's URL), got {value!r}")
        return value

    @model_validator(mode="after")
    def _targets_once(self) -> HubSpotGroupSpec:
        check_targets_once(self.targets)
        return self


class HubSpotSourceSettings(SourceSettings):
    """Desired groups read from HubSpot lists: each group is one list's contacts (CRM v3 lists API)."""

    type: Literal["hubspot"] = Field(description="HubSpot CRM: groups are HubSpot lists of contacts.")
    name: str | None = Field(
        default=None,
        pattern=SOURCE_NAME_PATTERN,
        description="What reports, logs and metrics call this source. Default: hubspot (hubspot#2, … when "
        "there are several).",
    )
    token: SecretStr = Field(
        description="A HubSpot private app's access token (sent as a Bearer header). It needs the scopes "
        "crm.lists.read and crm.objects.contacts.read; syncd only reads."
    )
    base_url: str = Field(
        default=HUBSPOT_BASE_URL,
        description="HubSpot's API root. https, except on a loopback host (the bundled sandbox).",
    )
    groups: list[HubSpotGroupSpec] = Field(
        description="The groups this source defines: {name, list_id} each, with optional targets."
    )
    properties: dict[str, str] = Field(
        default_factory=dict,
        description="Which HubSpot contact property fills which member field: keys are member fields (email, "
        "first_name, last_name, address.line1, address.line2, address.city, address.postcode, "
        "address.country), values HubSpot property names, e.g. {address.line1: address, address.postcode: "
        "zip, address.country: country}. Defaults: email: email, first_name: firstname, last_name: lastname.",
    )
    allow_empty: bool = Field(
        default=False,
        description="Accept a list that comes back empty although its group had members on the last pass. "
        "By default that pass leaves the group untouched and reports an error (an empty answer is more often "
        "a broken list or filter than the truth). The removal guard still applies.",
    )
    tier: HubSpotTier = Field(
        default="free",
        description="The HubSpot account's subscription tier, which sets HubSpot's burst limit per app and so "
        "syncd's default pace: free and starter 100 requests per 10 seconds, professional and enterprise 190, "
        "api_limit_increase (the API limit increase add-on, on any tier) 250. Default free: the lowest limit, "
        "safe on every account. An explicit rate_limit overrides it.",
    )
    rate_limit: float | None = Field(
        default=None,
        gt=0,
        description="Requests per second to HubSpot. Default: the tier's burst limit spread over its 10 seconds "
        "(10 for free and starter, 19 for professional and enterprise, 25 with the API limit increase), so that "
        "no 10 seconds ever see more than the limit. The burst limit is per app (requests with the same "
        "private app token elsewhere count too); syncd also pauses when HubSpot's X-HubSpot-RateLimit-Remaining "
        "reaches 0, and waits out a 429. HubSpot's daily limit (per account) is not waited for: when it is used "
        "up, the source's groups are left untouched until the next pass.",
    )
    burst: int = Field(
        default=1, ge=1, description="Requests that may go at once after a quiet spell. Default 1 (never above rate)."
    )
    max_concurrency: int = Field(default=4, ge=1, description="Requests in flight at once. Default 4.")
    timeout: float = Field(
        default=30.0, gt=0, description="Seconds before a request times out (it is then retried, see retry)."
    )
    retry: RetrySettings = Field(default_factory=RetrySettings, description="Retry behaviour (as for providers).")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_api_url(value)

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[HubSpotGroupSpec]) -> list[HubSpotGroupSpec]:
        if not value:
            raise ValueError("give at least one group ({name, list_id})")
        return value

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, str]) -> dict[str, str]:
        problems = ProblemList()
        for field, prop in value.items():
            if field not in MEMBER_FIELDS:
                close = difflib.get_close_matches(field, MEMBER_FIELDS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "expected one of: " + ", ".join(MEMBER_FIELDS)
                problems.add((field,), f"not a member field ({hint})")
            elif not isinstance(prop, str) or not _HUBSPOT_PROPERTY.match(prop.strip()):
                problems.add((field,), f"not a HubSpot property name: {prop!r}")
        problems.check()
        return {field: prop.strip() for field, prop in value.items()}

    def declared_groups(self) -> Iterator[DeclaredGroup]:
        for gi, spec in enumerate(self.groups):
            yield DeclaredGroup(("groups", gi, "name"), spec.name, spec, spec.key, tuple(spec.exclude))

    @property
    def property_map(self) -> dict[str, str]:
        """Member field -> HubSpot property, defaults included."""
        return {**HUBSPOT_DEFAULT_PROPERTIES, **self.properties}

    @property
    def burst_limit(self) -> int:
        """HubSpot's burst limit for this tier: requests per app per 10 seconds."""
        return HUBSPOT_BURST_LIMITS[self.tier]

    @property
    def pacing_rate(self) -> float:
        """Requests per second: `rate_limit` when set, else the tier's burst limit spread over its window."""
        if self.rate_limit is not None:
            return self.rate_limit
        return self.burst_limit / HUBSPOT_BURST_WINDOW


# ------------------------------------------------------------------------------------------- errors


def _field(body: Any, key: str) -> str | None:
    """A text field of an error body, or None (every field of HubSpot's error bodies is optional here)."""
    value = body.get(key) if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text or None


def error_message(response: httpx.Response) -> str:
    """`category: message (policyName …; correlationId …)` from HubSpot's error body (a 429's names errorType
    instead of category); the reason phrase when there is none."""
    body = body_or_none(response)
    message = _field(body, "message")
    if message is None:
        return response.reason_phrase
    kind = _field(body, "category") or _field(body, "errorType")
    text = f"{kind}: {message}" if kind else message
    notes = [f"{key} {value}" for key in ("policyName", "correlationId") if (value := _field(body, key))]
    if notes:
        text += f" ({'; '.join(notes)})"
    return text[:400]


def daily_limit_message(response: httpx.Response) -> str:
    """What a 429 with policyName DAILY says, with the daily headers when HubSpot sent them."""
    notes = [f"{response.status_code} policyName {DAILY}"]
    for header in ("X-HubSpot-RateLimit-Daily", "X-HubSpot-RateLimit-Daily-Remaining"):
        value = response.headers.get(header)
        if value is not None and value.strip().isdigit():
            notes.append(f"{header} {value.strip()}")
    correlation = _field(body_or_none(response), "correlationId")
    if correlation:
        notes.append(f"correlationId {correlation[:64]}")
    return f"HubSpot's daily API limit for this account is used up ({'; '.join(notes)})"


def classify(response: httpx.Response) -> ConnectorError | None:
    """Ordinary HTTP statuses, except a 429 whose body says `policyName: DAILY`: that limit will not clear for
    hours, so it is `QuotaExhausted` (no retry, no wait) instead of `RateLimited`. 207 (a batch read that found
    only some ids) is a success handled by the caller."""
    if response.status_code < 400:
        return None
    if response.status_code == 429 and _field(body_or_none(response), "policyName") == DAILY:
        return QuotaExhausted(daily_limit_message(response), status=429)
    return error_for_status(response, error_message(response))


def quota(response: httpx.Response, *, pace: float = 0.0) -> Quota | None:
    """At `X-HubSpot-RateLimit-Remaining: 0`, make the next request wait for one slot of the rolling window
    (interval / max): the app's budget can be spent by others using the same app, so it can run out below our
    own pace. `pace` (requests per second) already spaces requests by 1 / pace, so only the rest of the slot is
    added, and nothing when the pace alone spaces requests a slot apart: a client at the limit's own pace (the
    default) sees Remaining 0 on every request once its window is full, and must keep its pace rather than halve
    it. Above 0 the pacing alone sets the rate (spreading what remains over the interval would halve a client
    that uses the whole budget itself, as the default pace does)."""
    headers = response.headers
    try:
        remaining = int(headers["X-HubSpot-RateLimit-Remaining"])
        interval = float(headers["X-HubSpot-RateLimit-Interval-Milliseconds"]) / 1000
        maximum = int(headers.get("X-HubSpot-RateLimit-Max") or 0)
    except (KeyError, ValueError):
        return None
    if remaining > 0 or interval <= 0:
        return None
    slot = interval / maximum if maximum > 0 else min(interval, 1.0)
    wait = slot - (1 / pace if pace > 0 else 0.0)
    return Quota(remaining=0, reset_in=wait) if wait > 1e-9 else None


class _Pass:
    """One read (or check) of the source: the tasks it runs, and what stopped it. A refused token or the daily
    limit stops the pass: every other task of it is cancelled at once (before any of them can send another
    request: nothing awaits between the answer and the cancel), and no request is sent after that."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stopped: AuthError | QuotaExhausted | None = None

    def spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def stop(self, error: AuthError | QuotaExhausted) -> None:
        if self.stopped is None:
            self.stopped = error
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()

    async def send(self, api: ApiClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self.stopped is not None:
            raise type(self.stopped)(self.stopped.message, status=self.stopped.status)
        try:
            return await api.request(method, url, **kwargs)
        except (AuthError, QuotaExhausted) as exc:
            self.stop(exc)
            raise


# ------------------------------------------------------------------------------------------- source


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class HubSpotSource:
    """One HubSpot account's lists, as `groups:` of a `type: hubspot` source configure them.

    `clock` and `sleep` (tests: a virtual clock) replace the pacing bucket's time; everything else is real."""

    def __init__(
        self,
        settings: HubSpotSourceSettings,
        config: Config,
        *,
        name: str = "hubspot",
        transport: httpx.AsyncBaseTransport | None = None,
        hooks: RequestHooks | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.name = name
        self.guard_empty = not settings.allow_empty
        self._transport = transport
        self._hooks = hooks
        self._clock = clock
        self._sleep = sleep
        self._fields = settings.property_map
        self._properties = list(dict.fromkeys(self._fields.values()))

    @property
    def group_names(self) -> tuple[str, ...]:
        """The groups this source yields: one per configured list."""
        return tuple(spec.name for spec in self.settings.groups)

    def __repr__(self) -> str:
        return f"HubSpotSource(name={self.name!r}, base_url={self.settings.base_url!r}, token=**********)"

    def _client(self) -> ApiClient:
        s = self.settings
        rate = s.pacing_rate
        client = make_client(s.base_url, auth=BearerAuth(s.token), timeout=s.timeout, transport=self._transport)
        api = ApiClient(
            client,
            provider=self.name,
            classify=classify,
            pacing=Pacing(rate=rate, burst=s.burst, max_concurrency=s.max_concurrency),
            retry=s.retry.policy(),
            hooks=self._hooks,
            # bursts above 1 may send back to back: then the pace guarantees no spacing at all
            quota=functools.partial(quota, pace=rate if s.burst <= 1 else 0.0),
        )
        if self._clock is not None or self._sleep is not None:
            api.bucket = TokenBucket(
                rate, s.burst, clock=self._clock or time.monotonic, sleep=self._sleep or asyncio.sleep
            )
        return api

    def _refused(self, error: AuthError) -> SourceError:
        return SourceError(
            self.name,
            f"HubSpot refused the token ({error}): check the private app's access token and that it has the "
            "scopes crm.lists.read and crm.objects.contacts.read",
        )

    def _daily(self, error: QuotaExhausted) -> SourceError:
        names = ", ".join(repr(spec.name) for spec in self.settings.groups)
        return SourceError(
            self.name,
            f"{error}: no further request goes to HubSpot from this source this pass, and its groups ({names}) "
            "are left untouched; the limit resets at midnight in the account's time zone",
        )

    async def read(self) -> list[DesiredGroup]:
        api = self._client()
        run = _Pass()
        first_answered = asyncio.Event()  # the other lists start once the first list's read is answered
        try:
            tasks = [
                run.spawn(self._group(run, api, spec, first=index == 0, started=first_answered))
                for index, spec in enumerate(self.settings.groups)
            ]
            answers = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await api.aclose()
        if isinstance(run.stopped, QuotaExhausted):
            raise self._daily(run.stopped)
        if isinstance(run.stopped, AuthError):
            raise self._refused(run.stopped)
        groups: list[DesiredGroup] = []
        failures: list[str] = []
        for spec, answer in zip(self.settings.groups, answers, strict=True):
            if isinstance(answer, AuthError):
                raise self._refused(answer)
            if isinstance(answer, ConnectorError):
                failures.append(f"list {spec.list_id} (group {spec.name!r}): {answer}")
            elif isinstance(answer, BaseException):
                raise answer  # a bug, or cancellation: not a HubSpot answer to report
            else:
                groups.append(answer)
        if failures:
            message = "; ".join(failures) + (" (left untouched this pass)" if groups else "")
            if groups:
                raise PartialRead(self.name, message, groups)
            raise SourceError(self.name, message)
        return groups

    async def check(self) -> list[CheckLine]:
        """For `syncd validate --online`: does the token work, and is every list there, a list of contacts, and
        done processing? One `GET /crm/v3/lists/{listId}` per list; reads nothing else."""
        api = self._client()
        run = _Pass()
        lines: list[CheckLine] = []
        try:
            for spec in self.settings.groups:
                try:
                    found = await self._list(run, api, spec.list_id)
                except AuthError as exc:
                    return [CheckLine(False, f"HubSpot refused the token ({exc})")]
                except QuotaExhausted as exc:
                    return [*lines, CheckLine(False, f"{exc}: the remaining lists were not checked")]
                except ConnectorError as exc:
                    lines.append(CheckLine(False, f"group {spec.name!r}: list {spec.list_id}: {exc}"))
                    continue
                problem = _unusable(found)
                text = (
                    f"group {spec.name!r}: list {spec.list_id} {found.get('name')!r}, {found.get('size', '?')} members"
                )
                lines.append(CheckLine(problem is None, text if problem is None else f"{text}: {problem}"))
        finally:
            await api.aclose()
        return lines

    # -- one list -----------------------------------------------------------------------------------
    async def _list(self, run: _Pass, api: ApiClient, list_id: str) -> dict[str, Any]:
        """The list's definition (`PublicObjectList`); NotFound when HubSpot has no such list."""
        try:
            response = await run.send(api, "GET", f"crm/v3/lists/{list_id}")
        except NotFound as exc:
            raise NotFound(f"the list does not exist (deleted?): {exc}", status=exc.status) from exc
        body = json_body(response)
        found = body.get("list") if isinstance(body, dict) else None
        if not isinstance(found, dict):
            raise ProtocolError(f"HubSpot list {list_id}: expected {{list: {{...}}}}")
        for key in ("objectTypeId", "processingStatus"):
            if _field(found, key) is None:
                raise ProtocolError(f"HubSpot list {list_id}: the answer has no {key} (refusing to guess)")
        return found

    async def _group(
        self, run: _Pass, api: ApiClient, spec: HubSpotGroupSpec, *, first: bool, started: asyncio.Event
    ) -> DesiredGroup:
        if not first:
            await started.wait()
        try:
            found = await self._list(run, api, spec.list_id)
        finally:
            if first:
                started.set()
        problem = _unusable(found)
        if problem is not None:
            raise FatalError(problem)
        contacts, missing = await self._contacts(run, api, spec.list_id)
        candidates: list[Contact] = []
        rejects: list[Reject] = []
        for record_id in missing:
            rejects.append(
                Reject(
                    "",
                    f"HubSpot contact {record_id} is in list {spec.list_id} but could not be read (deleted?)",
                    "not_found",
                )
            )
        for record_id, properties in contacts:
            contact = self._contact(properties)
            if contact is None:
                rejects.append(
                    Reject("", f"HubSpot contact {record_id} has no email address", RejectCode.MISSING_FIELDS)
                )
            else:
                candidates.append(contact)
        members, invalid = admit(candidates)
        log.debug("%s: list %s: %d members, %d rejected", self.name, spec.list_id, len(members), len(rejects))
        return DesiredGroup(
            name=spec.name,
            members=members,
            rejected=tuple(rejects) + invalid,
            targets=tuple(Target(t.provider, t.group_id) for t in self.config.targets_of(spec)),
            source=self.name,
            removal_policy=spec.removal_policy,
            max_removals=spec.max_removals,
            max_removal_ratio=spec.max_removal_ratio,
            key=spec.key or spec.name,
            protected=frozenset(spec.protected),
            exclude=tuple(spec.exclude),
        )

    def _contact(self, properties: dict[str, Any]) -> Contact | None:
        def get(field: str) -> str | None:
            prop = self._fields.get(field)
            return _text(properties.get(prop)) if prop else None

        email = get("email")
        if email is None:
            return None
        parts = [get(f"address.{p}") for p in ("line1", "line2", "city", "postcode", "country")]
        address = PostalAddress(*parts) if any(parts) else None
        return Contact(email=email, first_name=get("first_name"), last_name=get("last_name"), address=address)

    async def _contacts(
        self, run: _Pass, api: ApiClient, list_id: str
    ) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
        """The list's contacts (id, properties) in membership order, and the ids HubSpot could not find.
        Batch reads start as soon as 100 ids are known, while later membership pages are still read."""
        ids: list[str] = []
        seen: set[str] = set()
        pending: list[str] = []
        batches: list[asyncio.Task[tuple[dict[str, dict[str, Any]], set[str]]]] = []
        cursors: set[str] = set()
        after: str | None = None
        try:
            while True:
                page, after = await self._memberships(run, api, list_id, after)
                for record_id in page:
                    if record_id not in seen:
                        seen.add(record_id)
                        ids.append(record_id)
                        pending.append(record_id)
                while len(pending) >= BATCH_READ:
                    batches.append(run.spawn(self._batch_read(run, api, pending[:BATCH_READ])))
                    pending = pending[BATCH_READ:]
                for task in batches:  # a failed batch read fails the list now, not after the last page
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        await task
                if after is None:
                    break
                if after in cursors:
                    raise ProtocolError(f"HubSpot list {list_id}: pagination loop (cursor {after!r} came back twice)")
                cursors.add(after)
            if pending:
                batches.append(run.spawn(self._batch_read(run, api, pending)))
            answers = await asyncio.gather(*batches)
        except BaseException:
            for task in batches:
                task.cancel()
            await asyncio.gather(*batches, return_exceptions=True)
            raise
        found: dict[str, dict[str, Any]] = {}
        missing: set[str] = set()
        for got, lost in answers:
            found.update(got)
            missing |= lost
        contacts = [(i, found[i]) for i in ids if i in found]
        return contacts, [i for i in ids if i in missing and i not in found]

    async def _memberships(
        self, run: _Pass, api: ApiClient, list_id: str, after: str | None
    ) -> tuple[list[str], str | None]:
        params = {"limit": str(MEMBERSHIP_PAGE)}
        if after is not None:
            params["after"] = after
        response = await run.send(api, "GET", f"crm/v3/lists/{list_id}/memberships", params=params)
        body = json_body(response)
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise ProtocolError(f"HubSpot list {list_id} memberships: expected {{results: [...]}}")
        ids: list[str] = []
        for item in body["results"]:
            record = item.get("recordId") if isinstance(item, dict) else item
            if isinstance(record, bool) or not isinstance(record, str | int) or not str(record).strip().isdigit():
                raise ProtocolError(f"HubSpot list {list_id} memberships: a result without a numeric recordId")
            ids.append(str(record).strip())
        paging = body.get("paging")
        following = paging.get("next") if isinstance(paging, dict) else None
        cursor = following.get("after") if isinstance(following, dict) else None
        if cursor is not None and (not isinstance(cursor, str | int) or str(cursor) == ""):
            raise ProtocolError(f"HubSpot list {list_id} memberships: paging.next.after is not a cursor")
        return ids, None if cursor is None else str(cursor)

    async def _batch_read(
        self, run: _Pass, api: ApiClient, ids: Sequence[str]
    ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Contacts found (id -> properties) and ids HubSpot reported as not found."""
        # propertiesWithHistory: required by the spec's BatchReadInputSimplePublicObjectId; none wanted
        payload = {"inputs": [{"id": i} for i in ids], "properties": self._properties, "propertiesWithHistory": []}
        response = await run.send(
            api, "POST", "crm/v3/objects/contacts/batch/read", kind=RequestKind.READ, idempotent=True, json=payload
        )
        body = json_body(response)
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise ProtocolError("HubSpot contacts batch read: expected {results: [...]}")
        found: dict[str, dict[str, Any]] = {}
        for item in body["results"]:
            if not isinstance(item, dict) or item.get("id") is None:
                raise ProtocolError("HubSpot contacts batch read: a result without an id")
            properties = item.get("properties")
            found[str(item["id"])] = properties if isinstance(properties, dict) else {}
        missing: set[str] = set()
        for error in body.get("errors") or ():
            if not isinstance(error, dict) or error.get("category") != "OBJECT_NOT_FOUND":
                detail = error.get("message") if isinstance(error, dict) else error
                raise ProtocolError(f"HubSpot contacts batch read answered HTTP {response.status_code}: {detail}")
            context = error.get("context")
            lost = context.get("ids") if isinstance(context, dict) else None
            if not isinstance(lost, list):
                raise ProtocolError("HubSpot contacts batch read: a not-found error without context.ids")
            missing.update(str(i) for i in lost)
        unaccounted = [i for i in ids if i not in found and i not in missing]
        if unaccounted:
            raise ProtocolError(
                f"HubSpot contacts batch read: {len(unaccounted)} requested ids came back neither found nor "
                "not found (refusing to treat them as gone)"
            )
        return found, missing


def _unusable(found: dict[str, Any]) -> str | None:
    """Why a list's memberships must not be used this pass, or None: not a list of contacts, or not done
    processing (its memberships are then partial)."""
    object_type = _field(found, "objectTypeId")
    if object_type != CONTACTS:
        return f"a list of {object_type}, not contacts (objectTypeId {CONTACTS}): syncd reads contact lists only"
    status = _field(found, "processingStatus")
    if status not in DONE:
        return f"still processing (processingStatus {status}, not {COMPLETE}): its memberships are partial"
    deleted = _field(found, "deletedAt")
    if deleted is not None:  # the spec's list has a deletedAt: a deleted list stays restorable for 90 days
        return f"the list was deleted (deletedAt {deleted[:40]}): restore it in HubSpot, or remove the group"
    return None


def build(settings: HubSpotSourceSettings, config: Config, ctx: SourceContext) -> HubSpotSource:
    """The registry's factory (`syncd.sources.registry`)."""
    return HubSpotSource(settings, config, name=ctx.name, transport=ctx.transport, hooks=ctx.hooks)


__all__ = [
    "HubSpotGroupSpec",
    "HubSpotSource",
    "HubSpotSourceSettings",
    "build",
    "classify",
    "daily_limit_message",
    "error_message",
    "quota",
]
