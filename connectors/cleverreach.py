"""CleverReach (REST v3) connector.

Why it exists: CleverReach is an email newsletter platform whose groups hold their own receivers; syncd keeps
a CleverReach group's *active* receivers equal to a desired group. v1/v2 are deprecated, so only v3 is spoken.

**Consent first.** A receiver whose `deactivated` is set unsubscribed, bounced or was switched off by an admin;
an address on the account's blacklist or bounce list must not get mail. CleverReach's API does what it is
told: an upsert carrying `deactivated: 0` or a new `activated` subscribes such a person again, skipping double
opt-in. So this connector never sends `deactivated: 0` except to undo a deactivation syncd itself made, and
never sends `activated` for a receiver that is inactive in the group, unless that inactivity is syncd's own
removal (the engine says so through `suppressed(..., undo=...)`, from its ledger). Everyone else is refused
before anything is sent, as a `MemberReject` whose code is the state: `unsubscribed`, `bounced` or
`blacklisted`. `suppressed` (the `ConsentReader` protocol) tells the engine the same before it plans, so a dry
run reports them too.

How the API is used (PROVIDERS.md, "CleverReach", its "Wire shapes assumed" entry and "What the real services
do"; CleverReach's own integration code, the core behind its shop plugins):

- Auth: a static v3 token as `Authorization: Bearer`, or OAuth2 client credentials against
  `<host>/oauth/token.php` (seen in community code, not in the official reference; the client authenticates
  with HTTP Basic, as that code does, and with form fields, as most servers also accept). The token is cached
  until shortly before `expires_in`; a 401 before that refreshes it once (`ClientCredentialsAuth`).
  CleverReach also accepts `?token=` in the query string: never used here, because query strings end up in
  proxy and server logs.
- Groups: `GET /groups/{id}` (404 = no such group), `GET /groups` (a plain JSON list, matched on the exact
  name), `POST /groups {name}` to create. The create has no idempotency key, so a create whose answer was lost
  is looked up by name before it is sent again.
- Members are the group's *active* receivers (`deactivated == 0` and `activated > 0`), read with
  `GET /groups/{id}/receivers?page=N&pagesize=5000&type=active` from page 0. 5000 is the documented page
  cap and the answer carries no total, so a page shorter than 5000 is the last one (a group of exactly 5000
  costs a second, empty page), unless it is the first page and its length could be a server's own cap (50,
  the documented default, or another round number: `PageEnd`); then pages are read on while that full.
- Consent, read only when some desired member is not in the group (a steady pass reads none of it), once per
  connector instance (= per pass): the account blacklist (`GET /blacklist`, one unpaginated list, as the
  vendor's code reads it), the bounces (`GET /receivers/bounced`, paged), and per group its inactive receivers
  (`type=inactive`: `deactivated`, `bounced`, `activated` say why).
- Adds: `POST /groups/{id}/receivers/upsert` with a JSON array. A new receiver is `{email, registered,
  activated, global_attributes: {firstname, lastname}}` (what the vendor's shop sync sends); a receiver syncd
  itself switched off gets `{email, activated}` back (plus `deactivated: 0` only where syncd deactivated it that
  way, as older syncd versions did). 250 receivers per request by default (the vendor's own batch); HTTP 413
  (the request is too large for the server) halves the batch and sends it again, down to single receivers; a
  receiver that is refused with 413 alone is a reject. The size that worked is kept for the connector's life.
- Removes, by `remove_mode`: `deactivate` (default) sends `{email, activated: 0}` entries in upsertplus
  batches (what the vendor's integration code sends: it switches the receiver off without setting
  `deactivated`, which stays the mark of the person's own choice); `delete` sends one
  `DELETE /groups/{id}/receivers/{pool_id}` each.
- No reset: emptying a group (`DELETE /groups/{id}/clear`) would delete the records of who unsubscribed, after
  which nothing could tell them from new people. `ResetKind.NONE`, whatever `allow_non_atomic_reset` says.
- Errors are ordinary HTTP statuses, but the code in the error body (`{"error": {"code", "message"}}`) takes
  precedence over the HTTP status, as in the vendor's code; the message is in `error` (a string, or
  `{code, message}`), `message` or `error_description`.

Assumptions to check against a real account (the docs are silent; the sandbox implements the same ones):

- Receiver `{id (int), email, activated, deactivated, registered, bounced, global_attributes}`; group
  `{id (int), name, ...}`; DELETE and clear answer `true`; blacklist entries `{email, comment, stamp}`, bounce
  entries `{email, category, last_update, ...}` (from the vendor's data classes and third-party clients).
- UNVERIFIED: at most 1000 receivers per upsert/upsertplus call (the commonly quoted figure): `batch_size` may
  go up to it; 413 answers split anything too large anyway.
- UNVERIFIED: pacing. CleverReach publishes no rate limit; 5 requests/s, bursts of 5, 4 in flight is a
  conservative guess. 429 answers are waited out (honouring Retry-After) without spending the retry budget.
- UNVERIFIED: an upsert answer that leaves a receiver out (some accounts may silently drop suppressed
  addresses) means it was not taken: a permanent reject. An answered receiver that is still inactive is a
  (non-permanent) reject rather than an add.
- UNVERIFIED: `DELETE .../receivers/{pool_id}` answering 404 means the receiver is already gone (success).
  It cannot tell this apart from a vanished group; the next pass's read would.
- CleverReach allows several groups with one name; a name lookup that finds more than one fails and asks for
  `group_id` instead of guessing.

Logging is DEBUG only and never carries emails or credentials; errors name paths, never query strings or
headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import (
    BatchResult,
    BatchTooLarge,
    Capabilities,
    Closing,
    ConnectorError,
    ConsentState,
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
    Suppression,
    UnsupportedOperation,
    email_key,
    in_bulk,
)
from connectors.batching import SizeLimit, create_or_find, send_shrinking
from connectors.http import (
    ApiClient,
    BearerAuth,
    ClientAuth,
    ClientCredentialsAuth,
    PageEnd,
    RequestHooks,
    RetryPolicy,
    body_or_none,
    derive_url,
    error_for_status,
    make_client,
    paginate,
)
from connectors.settings import BuildContext, ProviderSettings, check_token_url

log = logging.getLogger("syncd.connectors.cleverreach")

DEFAULT_BASE_URL = "https://rest.cleverreach.com/v3"
PAGE_SIZE = 5000  # documented cap of `pagesize`
DEFAULT_PAGE_SIZE = 50  # documented default of `pagesize`: what a server that ignores ours sends
MAX_UPSERT = 1000  # UNVERIFIED: receivers per upsert/upsertplus call (the commonly quoted figure)
DEFAULT_BATCH = 250  # what CleverReach's own integration code sends per upsert
PACING = Pacing(rate=5.0, burst=5, max_concurrency=4)  # UNVERIFIED: no published limit
REJECT_REASON = "not accepted by CleverReach (the upsert answer left the receiver out)"
TOO_LARGE = "CleverReach answered 413 (request too large) even for this receiver alone"
# A deactivation syncd made (older syncd versions set `deactivated` to their own clock when sending) is
# recognised by its stamp: no later than syncd's ledger entry of the removal, written just after the answer.
STAMP_SLACK = 5.0

Answer = dict[str, dict[str, Any]]  # receivers of an upsert answer, by email key


class RemoveMode(enum.StrEnum):
    """How a member leaves a CleverReach group."""

    DEACTIVATE = "deactivate"
    DELETE = "delete"


def capabilities_for(remove_mode: RemoveMode) -> Capabilities:
    return Capabilities(
        member_key=MemberKeyKind.EMAIL,
        max_add_batch=MAX_UPSERT,
        # deactivation is one upsertplus for a whole batch; deletion is one DELETE per receiver
        max_remove_batch=MAX_UPSERT if remove_mode is RemoveMode.DEACTIVATE else 1,
        can_create_group=True,
        can_remove=True,
        # Never a reset: clearing the group would delete the records of who unsubscribed (consent first).
        reset=ResetKind.NONE,
        pacing=PACING,
        default_batch=DEFAULT_BATCH,
    )


CAPABILITIES = capabilities_for(RemoveMode.DEACTIVATE)

# ------------------------------------------------------------------------------------------- settings


class CleverReachSettings(ProviderSettings):
    """A CleverReach account: a static v3 token, or an OAuth client (client_id + client_secret)."""

    type: Literal["cleverreach"] = Field(default="cleverreach", description="CleverReach REST v3.")
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="API root with its version path. https, except on a loopback host (the sandbox).",
    )
    token: SecretStr | None = Field(
        default=None,
        description="A REST v3 access token, sent as a Bearer header. Use this or client_id + client_secret.",
    )
    client_id: str | None = Field(
        default=None,
        description="OAuth client id (client-credentials grant). Needs client_secret; excludes token.",
    )
    client_secret: SecretStr | None = Field(default=None, description="OAuth client secret belonging to client_id.")
    token_url: str | None = Field(
        default=None,
        description="OAuth token endpoint. Default: /oauth/token.php on the API host "
        "(https://rest.cleverreach.com/oauth/token.php).",
    )
    remove_mode: RemoveMode = Field(
        default=RemoveMode.DEACTIVATE,
        description="How members are removed. `deactivate` (default) keeps the receiver in the group as "
        "inactive (switched off with `activated: 0`, as CleverReach's own integration code does): its history "
        "(opens, clicks, registration date) stays, syncd may switch it on again when the member comes back to "
        "the source, and 250 removals (batch_size) go in one upsertplus request. `delete` removes "
        "the receiver from the group for good, with one DELETE request per member. Deactivate is the "
        "default because it is batchable and reversible; choose delete when inactive receivers must not "
        "stay in the group.",
    )

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str | None) -> str | None:
        return check_token_url(value)

    @model_validator(mode="after")
    def _one_auth_style(self) -> CleverReachSettings:
        oauth = self.client_id is not None or self.client_secret is not None
        if self.token is not None and oauth:
            raise ValueError("give either token or client_id + client_secret, not both")
        if self.token is None and not oauth:
            raise ValueError("missing credentials: give token, or client_id + client_secret")
        if oauth and (not self.client_id or self.client_secret is None):
            raise ValueError("client_id and client_secret go together")
        if self.token is not None and self.token_url is not None:
            raise ValueError("token_url applies only to client_id + client_secret")
        return self

    @property
    def resolved_token_url(self) -> str:
        return self.token_url or derive_url(self.base_url, "/v3", "/oauth/token.php")


# ------------------------------------------------------------------------------------------- errors


def error_message(response: httpx.Response) -> str:
    """The server's message from any of the three error shapes; the reason phrase when there is none."""
    body = body_or_none(response)
    parts: list[str] = []
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            error = error.get("message") or error.get("code")
        for value in (error, body.get("message"), body.get("error_description")):
            if value not in (None, "") and str(value) not in parts:
                parts.append(str(value))
    elif isinstance(body, str):
        parts.append(body)
    message = ": ".join(parts) or response.reason_phrase
    return message[:300]  # an error page must not flood logs


def error_code(response: httpx.Response) -> int:
    """The status that counts for an error answer: the code of its `{"error": {"code"}}` body when it has a
    plausible one (CleverReach's own integration code reads it first), else the HTTP status."""
    body = body_or_none(response)
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
        return code
    return response.status_code


def classify(response: httpx.Response) -> ConnectorError | None:
    """CleverReach uses ordinary HTTP statuses: anything below 400 is a success. For an error, the code in the
    body takes precedence over the HTTP status (a 400 whose body says 413 means "too large": split)."""
    if response.status_code < 400:
        return None
    return error_for_status(response, error_message(response), status=error_code(response))


# ------------------------------------------------------------------------------------------ connector


def _seg(value: str) -> str:
    """One path segment: ids come from config or answers, so they are quoted, never trusted."""
    return quote(value.strip(), safe="")


def _group(body: Any, fallback_name: str | None = None) -> RemoteGroup:
    """A group object. A create's answer may be leaner than a read's (the docs do not show it): a name it
    leaves out is the one sent, and a bare id (a number, or `{"id": ...}`) is accepted there."""
    if fallback_name is not None and isinstance(body, int | str) and not isinstance(body, bool):
        body = {"id": body}
    if not isinstance(body, dict) or body.get("id") in (None, "") or isinstance(body.get("id"), bool):
        raise ProtocolError("CleverReach group without an id")
    name = body.get("name", fallback_name)
    if name is None:
        raise ProtocolError("CleverReach group without a name")
    return RemoteGroup(id=str(body["id"]).strip(), name=str(name))


def _receivers(body: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(body, list) or not all(isinstance(r, dict) for r in body):
        raise ProtocolError(f"CleverReach {what}: expected a JSON list of receivers")
    return body


def _stamp(receiver: dict[str, Any], name: str, default: int = 0) -> int:
    value = receiver.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"CleverReach receiver with a non-numeric {name}") from exc


def _active(receiver: dict[str, Any]) -> bool:
    # A field the answer leaves out does not make a receiver inactive: only an explicit value does.
    return _stamp(receiver, "deactivated") == 0 and _stamp(receiver, "activated", 1) > 0


def _active_fast(receiver: dict[str, Any]) -> bool:
    """`_active`, answered at once for the usual receiver (both stamps plain integers)."""
    deactivated, activated = receiver.get("deactivated"), receiver.get("activated")
    if type(deactivated) is int and type(activated) is int:
        return deactivated == 0 and activated > 0
    return _active(receiver)


def _by_key(receivers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {email_key(r["email"]): r for r in receivers if isinstance(r.get("email"), str)}


def _day(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")


def receiver_consent(receiver: dict[str, Any], removed_by_syncd_at: float | None) -> Suppression | None:
    """Why an inactive receiver of a group must not be switched on again by syncd, or None when its inactivity is
    syncd's own removal (`removed_by_syncd_at`: when syncd's ledger recorded it) and may be undone."""
    deactivated = _stamp(receiver, "deactivated")
    if _stamp(receiver, "bounced") > 0:
        return Suppression(ConsentState.BOUNCED, "CleverReach marks the receiver as bounced")
    if deactivated > 0:
        if removed_by_syncd_at is not None and deactivated <= removed_by_syncd_at + STAMP_SLACK:
            return None  # deactivated by syncd (older syncd versions removed that way)
        return Suppression(
            ConsentState.UNSUBSCRIBED,
            f"the receiver was deactivated in CleverReach on {_day(deactivated)} (not by syncd)",
            since=float(deactivated),
        )
    if removed_by_syncd_at is not None:
        return None  # switched off (activated 0) by syncd's own removal
    return Suppression(
        ConsentState.UNSUBSCRIBED,
        "the receiver is inactive in CleverReach (switched off, or its double opt-in is not confirmed), not by syncd",
    )


class CleverReachConnector(Closing):
    """One CleverReach account behind the `Connector` protocol (and `ConsentReader`). Meant to live for one pass:
    the account's blacklist and bounces, and each group's inactive receivers, are read at most once."""

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        *,
        capabilities: Capabilities | None = None,
        pacing: Pacing | None = None,
        retry: RetryPolicy | None = None,
        hooks: RequestHooks | None = None,
        remove_mode: RemoveMode = RemoveMode.DEACTIVATE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.remove_mode = remove_mode
        # Without capabilities (a connector not built from settings): as `build` configures them without batch_size.
        self.capabilities = capabilities or capabilities_for(remove_mode).with_batch_size(None)
        self._clock = clock  # wall clock: activated/deactivated are unix timestamps
        self.api = ApiClient(
            client,
            provider=name,
            classify=classify,
            pacing=pacing or self.capabilities.pacing,
            retry=retry,
            hooks=hooks,
        )
        # Consent knowledge, read once per instance (= per pass) and only when something is to be added.
        self._account: dict[str, Suppression] | None = None  # blacklist and bounces, by email key
        self._account_lock = asyncio.Lock()
        self._inactive: dict[str, dict[str, dict[str, Any]]] = {}  # group id -> email key -> inactive receiver
        self._inactive_lock = asyncio.Lock()
        self._undoable: dict[str, set[str]] = {}  # group id -> keys whose inactivity is syncd's own removal
        # The upsert size 413 answers taught (none while the configured batch was not refused as too large).
        self._size_limit = SizeLimit()

    def __repr__(self) -> str:
        return f"CleverReachConnector(name={self.name!r}, remove_mode={self.remove_mode.value!r})"

    # -- groups -------------------------------------------------------------------------------------
    async def find_group(self, *, group_id: str | None = None, name: str | None = None) -> RemoteGroup | None:
        if group_id is not None:
            group = await self._group_by_id(group_id)
            if group is not None or name is None:
                return group
        if name is not None:
            return await self._group_by_name(name)
        return None

    async def _group_by_id(self, group_id: str) -> RemoteGroup | None:
        if not group_id.strip().isdigit():  # CleverReach group ids are integers
            return None
        try:
            return _group(await self.api.json("GET", f"groups/{_seg(group_id)}"))
        except NotFound:
            return None

    async def _group_by_name(self, name: str) -> RemoteGroup | None:
        body = await self.api.json("GET", "groups")
        if not isinstance(body, list):
            raise ProtocolError("CleverReach GET /groups: expected a JSON list")
        found = [g for g in map(_group, body) if g.name == name]
        if len(found) > 1:
            ids = ", ".join(g.id for g in found)
            message = f"{len(found)} CleverReach groups are named {name!r} (ids {ids}): bind one by group_id"
            raise FatalError(message)
        return found[0] if found else None

    async def create_group(self, name: str) -> RemoteGroup:
        # POST /groups has no idempotency key: when the answer is lost the group may exist anyway, so look it
        # up by name before sending the create again (never create a duplicate).
        async def create() -> RemoteGroup:
            group = _group(await self.api.json("POST", "groups", json={"name": name}, idempotent=False), name)
            self._inactive[group.id] = {}  # a new group holds nobody, inactive or not
            return group

        async def find() -> RemoteGroup | None:
            log.debug("%s: a group create failed in transit; looking it up before sending it again", self.name)
            return await self._group_by_name(name)

        return await create_or_find(create, find, attempts=self.api.retry.max_retries + 1, pause=self.api.pause)

    # -- members ------------------------------------------------------------------------------------
    async def read_members(self, group: RemoteGroup) -> Sequence[RemoteMember]:
        found: dict[str, tuple[str, str | None]] = {}  # key -> (email, id): strings only, which no collection walks
        # Deactivation names receivers by email: only `delete` mode keeps their ids (a million cost some 55 MB).
        keep_ids = self.remove_mode is RemoveMode.DELETE

        def take(page: list[dict[str, Any]]) -> None:
            """A page's active receivers, as the page comes (no page is kept); a receiver moving between pages
            can be read twice."""
            for r in page:
                email = r.get("email")
                if not isinstance(email, str) or not _active_fast(r):  # `type=active`, checked again
                    continue
                rid = r.get("id") if keep_ids else None
                found.setdefault(email_key(email), (email, None if rid is None else str(rid)))

        await self._read_receivers(group, "active", take)
        # The members, made at once after the last page and frozen out of garbage collection (a collection that
        # walked a million of them would stop the event loop), in a worker thread.
        members = await asyncio.to_thread(_members, found)
        log.debug("%s: group %s has %d active receivers", self.name, group.id, len(members))
        return members

    async def suppressed(
        self, group: RemoteGroup | None, keys: Sequence[str], *, undo: Mapping[str, float]
    ) -> Mapping[str, Suppression]:
        """`ConsentReader`: of these keys, the blacklisted and bounced addresses of the account and, in `group`,
        the receivers that are inactive for any reason but syncd's own removal (`undo`: those may be switched
        on again by `add_members`, and only those)."""
        if not keys:
            return {}
        account = await self._account_suppressions()
        found = {k: account[k] for k in keys if k in account}
        if group is not None:
            inactive = await self._inactive_receivers(group)
            undoable = self._undoable.setdefault(group.id, set())
            for key in keys:
                receiver = inactive.get(key)
                if key in found or receiver is None:
                    continue
                suppression = receiver_consent(receiver, undo.get(key))
                if suppression is None:
                    undoable.add(key)
                else:
                    found[key] = suppression
        log.debug("%s: %d of %d people to add may not be subscribed again", self.name, len(found), len(keys))
        return found

    async def add_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        account = await self._account_suppressions()
        inactive = await self._inactive_receivers(group)
        undoable = self._undoable.get(group.id, set())
        rejected: list[MemberReject] = []
        entries: list[dict[str, Any]] = []
        sent: dict[str, Contact] = {}
        now = int(self._clock())
        for contact in contacts:
            if contact.key in sent:
                continue
            receiver = inactive.get(contact.key)
            suppression = account.get(contact.key)
            if suppression is None and receiver is not None and contact.key not in undoable:
                suppression = receiver_consent(receiver, None)
            if suppression is not None:  # consent first: refused here, whatever the caller planned
                rejected.append(MemberReject(contact.email, suppression.reason, True, str(suppression.state)))
                continue
            sent[contact.key] = contact
            entries.append(self._receiver(contact, now, receiver))
        answer, too_large = await self._upsert_all(group, "upsert", entries)
        done: list[str] = []
        for key, contact in sent.items():
            got = answer.get(key)
            if key in too_large:
                rejected.append(MemberReject(contact.email, TOO_LARGE, permanent=True, code="too_large"))
            elif got is None:
                rejected.append(MemberReject(contact.email, REJECT_REASON, permanent=True))
            elif not _active(got):
                reason = "CleverReach kept the receiver inactive"
                rejected.append(MemberReject(contact.email, reason, permanent=False))
            else:
                done.append(key)
                inactive.pop(key, None)
        log.debug("%s: group %s: %d added, %d rejected", self.name, group.id, len(done), len(rejected))
        return BatchResult(tuple(done), tuple(rejected))

    async def remove_members(self, group: RemoteGroup, members: Sequence[RemoteMember]) -> BatchResult:
        if self.remove_mode is RemoveMode.DELETE:
            return await self._delete(group, members)
        return await self._deactivate(group, members)

    async def reset_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        raise UnsupportedOperation(
            "CleverReach groups are never reset: clearing a group deletes the records of who unsubscribed"
        )

    async def aclose(self) -> None:
        await self.api.aclose()

    # -- consent ------------------------------------------------------------------------------------
    async def _account_suppressions(self) -> dict[str, Suppression]:
        """The account's blacklist and bounces, read once per connector instance."""
        async with self._account_lock:
            if self._account is None:
                found: dict[str, Suppression] = {}
                for entry in await self._read_bounces():
                    found[email_key(entry["email"])] = Suppression(
                        ConsentState.BOUNCED, "the address is on CleverReach's bounce list"
                    )
                blacklist = body_or_none(await self.api.request("GET", "blacklist"))
                if not isinstance(blacklist, list):
                    raise ProtocolError("CleverReach GET /blacklist: expected a JSON list")
                for entry in blacklist:
                    email = entry.get("email") if isinstance(entry, dict) else None
                    if isinstance(email, str) and email.strip():
                        found[email_key(email)] = Suppression(
                            ConsentState.BLACKLISTED, "the address is on the CleverReach account's blacklist"
                        )
                self._account = found
                log.debug("%s: %d blacklisted or bounced addresses", self.name, len(found))
            return self._account

    async def _read_bounces(self) -> list[dict[str, Any]]:
        end = PageEnd(PAGE_SIZE, default=DEFAULT_PAGE_SIZE)
        seen: set[str] = set()

        async def fetch(page: int) -> tuple[list[dict[str, Any]], int | None]:
            params = {"page": page, "pagesize": PAGE_SIZE}
            entries = _receivers(await self.api.json("GET", "receivers/bounced", params=params), "bounces read")
            new = [e for e in entries if isinstance(e.get("email"), str) and email_key(e["email"]) not in seen]
            seen.update(email_key(e["email"]) for e in new)
            # a server that ignores paging answers the same list again: nothing new ends the read
            return new, page + 1 if new and end.more(len(entries)) else None

        return await paginate(fetch, 0)

    async def _inactive_receivers(self, group: RemoteGroup) -> dict[str, dict[str, Any]]:
        async with self._inactive_lock:
            if group.id not in self._inactive:
                inactive: dict[str, dict[str, Any]] = {}

                def take(page: list[dict[str, Any]]) -> None:
                    inactive.update((k, r) for k, r in _by_key(page).items() if not _active(r))

                await self._read_receivers(group, "inactive", take)
                self._inactive[group.id] = inactive
            return self._inactive[group.id]

    async def _read_receivers(
        self, group: RemoteGroup, kind: str, take: Callable[[list[dict[str, Any]]], None]
    ) -> None:
        """Read a group's receivers of one `type`, page by page, handing each page to `take` as it comes: a
        million receivers are never all held as the answer's objects."""
        path = f"groups/{_seg(group.id)}/receivers"
        # No total in the answer: a full page may have a successor, a short one is the last, unless the first
        # page is short in a way a server cap (or an ignored `pagesize`: 50 by default) would explain.
        end = PageEnd(PAGE_SIZE, default=DEFAULT_PAGE_SIZE)

        async def fetch(page: int) -> tuple[list[dict[str, Any]], int | None]:
            params = {"page": page, "pagesize": PAGE_SIZE, "type": kind}
            receivers = _receivers(await self.api.json("GET", path, params=params), f"{kind} receivers read")
            take(receivers)
            return [], page + 1 if end.more(len(receivers)) else None

        await paginate(fetch, 0)

    # -- writes -------------------------------------------------------------------------------------
    @staticmethod
    def _receiver(contact: Contact, now: int, inactive: dict[str, Any] | None) -> dict[str, Any]:
        """An upsert entry. `inactive`: the receiver syncd switched off in this group, switched on again here
        (`deactivated: 0` only where syncd deactivated it that way); otherwise a new receiver, active at once.
        Never blanks out a name CleverReach already has."""
        if inactive is not None:
            entry: dict[str, Any] = {"email": contact.email, "activated": now}
            if _stamp(inactive, "deactivated") > 0:
                entry["deactivated"] = 0  # syncd's own deactivation (checked by the caller), undone
        else:
            entry = {"email": contact.email, "registered": now, "activated": now}
        names = {"firstname": contact.first_name, "lastname": contact.last_name}
        attributes = {k: v for k, v in names.items() if v is not None}
        if attributes:
            entry["global_attributes"] = attributes
        return entry

    async def _upsert_all(
        self, group: RemoteGroup, route: str, entries: list[dict[str, Any]]
    ) -> tuple[Answer, set[str]]:
        """Send entries in batches (`connectors.batching.send_shrinking`). A batch answered 413 (too large) is
        halved and both halves sent again, down to single entries; when both halves then go through, the size
        was the trouble (not a member), and that half size is used from then on, for the connector's life.
        Returns the answer's receivers by email key, and the keys refused as too large on their own."""
        configured = self.capabilities.max_add_batch if route == "upsert" else self.capabilities.max_remove_batch
        answer: Answer = {}

        async def send(part: Sequence[dict[str, Any]]) -> None:
            try:
                answer.update(await self._upsert(group, route, part))
            except BatchTooLarge:
                log.debug("%s: %s of %d answered 413 (too large)", self.name, route, len(part))
                raise

        too_large = await send_shrinking(send, entries, configured, self._size_limit)
        return answer, {email_key(entry["email"]) for entry in too_large}

    async def _upsert(self, group: RemoteGroup, route: str, entries: Sequence[dict[str, Any]]) -> Answer:
        """Send one upsert/upsertplus; the answer's receivers by email key. Safe to resend: same end state."""
        path = f"groups/{_seg(group.id)}/receivers/{route}"
        body = await self.api.json("POST", path, json=list(entries), idempotent=True)
        return _by_key(_receivers(body, route))

    async def _deactivate(self, group: RemoteGroup, members: Sequence[RemoteMember]) -> BatchResult:
        done: list[str] = []
        rejected: list[MemberReject] = []
        with_email = [m for m in members if m.email]
        no_email = "receiver has no email to deactivate"
        rejected += [MemberReject(m.key, no_email, permanent=False) for m in members if not m.email]
        # `activated: 0` switches the receiver off, as CleverReach's own integration code does; `deactivated`
        # stays the mark of a person's own unsubscribe.
        entries = [{"email": m.email, "activated": 0} for m in with_email]
        answer, too_large = await self._upsert_all(group, "upsertplus", entries)
        for member in with_email:
            assert member.email is not None
            receiver = answer.get(member.key)
            if receiver is not None and not _active(receiver):
                done.append(member.key)
            else:
                reason = TOO_LARGE if member.key in too_large else "deactivation not confirmed by CleverReach"
                rejected.append(MemberReject(member.email, reason, permanent=False))
        log.debug("%s: group %s: %d switched off", self.name, group.id, len(done))
        return BatchResult(tuple(done), tuple(rejected))

    async def _delete(self, group: RemoteGroup, members: Sequence[RemoteMember]) -> BatchResult:
        done: list[str] = []
        for member in members:
            ref = member.id or member.email  # pool_id; CleverReach also names a receiver by its email
            if ref:
                with contextlib.suppress(NotFound):  # 404: already gone, and removal is idempotent
                    await self.api.request("DELETE", f"groups/{_seg(group.id)}/receivers/{_seg(ref)}")
            done.append(member.key)
        log.debug("%s: group %s: %d deleted", self.name, group.id, len(done))
        return BatchResult(tuple(done))


def _members(found: Mapping[str, tuple[str, str | None]]) -> list[RemoteMember]:
    with in_bulk(freeze=True):
        return [RemoteMember(email, rid) for email, rid in found.values()]


# ---------------------------------------------------------------------------------------------- build


def build(settings: CleverReachSettings, ctx: BuildContext) -> CleverReachConnector:
    auth: httpx.Auth
    if settings.token is not None:
        auth = BearerAuth(settings.token)
    else:
        # the model validator guarantees both are set when token is not
        assert settings.client_id is not None and settings.client_secret is not None
        # The client authenticates both as form fields and with HTTP Basic: the token endpoint is known only from
        # community code, which uses Basic (`curl -u id:secret`), and form fields are the other common reading.
        auth = ClientCredentialsAuth(
            settings.resolved_token_url, settings.client_id, settings.client_secret, client_auth=(ClientAuth.BASIC,)
        )
    client = make_client(settings.base_url, auth=auth, timeout=settings.timeout, transport=ctx.transport)
    return CleverReachConnector(
        settings.name,
        client,
        capabilities=settings.capabilities(capabilities_for(settings.remove_mode)),
        retry=settings.retry.policy(),
        hooks=ctx.hooks,
        remove_mode=settings.remove_mode,
    )


__all__ = [
    "CAPABILITIES",
    "CleverReachConnector",
    "CleverReachSettings",
    "RemoveMode",
    "build",
    "capabilities_for",
    "classify",
    "error_code",
    "error_message",
    "receiver_consent",
]
