"""CleverReach (REST v3) connector.

Why it exists: CleverReach is an email newsletter platform whose groups hold their own receivers; syncd keeps
a CleverReach group's *active* receivers equal to a desired group. v1/v2 are deprecated, so only v3 is spoken.

How the API is used (PROVIDERS.md, "CleverReach", and its "Wire shapes assumed" entry):

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
- Adds: `POST /groups/{id}/receivers/upsert` with a JSON array of `{email, activated, deactivated: 0,
  global_attributes: {firstname, lastname}}`: creates the receiver, or reactivates and updates it.
- Removes, by `remove_mode`: `deactivate` (default) sends `{email, deactivated: <now>}` entries in one
  `POST /groups/{id}/receivers/upsertplus`; `delete` sends one `DELETE /groups/{id}/receivers/{pool_id}` each.
- Reset (non-atomic, used only when the user sets `allow_non_atomic_reset`): `DELETE /groups/{id}/clear`,
  then the upsert.
- Errors are ordinary HTTP statuses; the message is in `error` (a string, or `{code, message}`), `message` or
  `error_description`.

Assumptions to check against a real account (the docs are silent; the sandbox implements the same ones):

- Receiver `{id (int), email, activated, deactivated, registered, global_attributes: {firstname, lastname}}`;
  group `{id (int), name, ...}`; errors `{"error": {"code", "message"}}`; DELETE and clear answer `true`.
- UNVERIFIED: at most 1000 receivers per upsert/upsertplus call (the commonly quoted figure).
- UNVERIFIED: pacing. CleverReach publishes no rate limit; 5 requests/s, bursts of 5, 4 in flight is a
  conservative guess. 429 answers are waited out (honouring Retry-After) without spending the retry budget.
- UNVERIFIED: a blacklisted or bounced address is silently left out of the upsert's answer (and not stored),
  not an error for the whole call. Any email of a batch missing from the answer is therefore reported as a
  permanent reject; a non-list answer is a ProtocolError (never a reason to reject everyone).
- UNVERIFIED: upsert with `deactivated: 0` reactivates a deactivated receiver; an answered receiver that is
  still inactive is reported as a (non-permanent) reject rather than as added.
- UNVERIFIED: upsertplus of an address the group does not hold creates it as an inactive receiver (not a
  member), so deactivating twice is harmless.
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
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import (
    BatchResult,
    Capabilities,
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
    TransientError,
    email_key,
)
from connectors.http import (
    ApiClient,
    BearerAuth,
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
MAX_UPSERT = 1000  # UNVERIFIED: receivers per upsert/upsertplus call
PACING = Pacing(rate=5.0, burst=5, max_concurrency=4)  # UNVERIFIED: no published limit
REJECT_REASON = "not accepted by CleverReach (blacklisted or bounced address)"

T = TypeVar("T")
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
        reset=ResetKind.NON_ATOMIC,  # clear, then upsert: the group is empty in between
        pacing=PACING,
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
        "inactive: its history (opens, clicks, registration date) stays, the change is reversible by "
        "adding the member again, and up to 1000 removals go in one upsertplus request. `delete` removes "
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


def classify(response: httpx.Response) -> ConnectorError | None:
    """CleverReach uses ordinary HTTP statuses: anything below 400 is a success."""
    if response.status_code < 400:
        return None
    return error_for_status(response, error_message(response))


# ------------------------------------------------------------------------------------------ connector


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


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


def _active(receiver: dict[str, Any]) -> bool:
    # A field the answer leaves out does not make a receiver inactive: only an explicit value does.
    try:
        return int(receiver.get("deactivated") or 0) == 0 and int(receiver.get("activated", 1) or 0) > 0
    except (TypeError, ValueError) as exc:
        raise ProtocolError("CleverReach receiver with non-numeric activated/deactivated") from exc


def _by_key(receivers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {email_key(r["email"]): r for r in receivers if isinstance(r.get("email"), str)}


class CleverReachConnector:
    """One CleverReach account behind the `Connector` protocol."""

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
        self.capabilities = capabilities or capabilities_for(remove_mode)
        self._clock = clock  # wall clock: activated/deactivated are unix timestamps
        self.api = ApiClient(
            client,
            provider=name,
            classify=classify,
            pacing=pacing or self.capabilities.pacing,
            retry=retry,
            hooks=hooks,
        )

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
        failures = 0
        while True:
            try:
                body = await self.api.json("POST", "groups", json={"name": name}, idempotent=False)
                return _group(body, fallback_name=name)
            except TransientError as exc:
                failures += 1
                if failures > self.api.retry.max_retries:
                    raise
                log.debug("%s: group create failed (%s); looking it up first", self.name, exc.message)
                delay = max(exc.delay or 0.0, self.api.retry.backoff(failures))
                if delay:
                    await asyncio.sleep(delay)
                found = await self._group_by_name(name)
                if found is not None:
                    return found

    # -- members ------------------------------------------------------------------------------------
    async def read_members(self, group: RemoteGroup) -> Sequence[RemoteMember]:
        path = f"groups/{_seg(group.id)}/receivers"
        # No total in the answer: a full page may have a successor, a short one is the last, unless the first
        # page is short in a way a server cap (or an ignored `pagesize`: 50 by default) would explain.
        end = PageEnd(PAGE_SIZE, default=DEFAULT_PAGE_SIZE)

        async def fetch(page: int) -> tuple[list[RemoteMember], int | None]:
            params = {"page": page, "pagesize": PAGE_SIZE, "type": "active"}
            receivers = _receivers(await self.api.json("GET", path, params=params), "receivers read")
            members = [
                RemoteMember(email=r["email"], id=str(r["id"]) if r.get("id") is not None else None)
                for r in receivers
                if isinstance(r.get("email"), str) and _active(r)  # `type=active`, checked again
            ]
            return members, page + 1 if end.more(len(receivers)) else None

        unique: dict[str, RemoteMember] = {}
        for member in await paginate(fetch, 0):
            unique.setdefault(member.key, member)  # a receiver moving between pages can be read twice
        log.debug("%s: group %s has %d active receivers", self.name, group.id, len(unique))
        return list(unique.values())

    async def add_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        done: list[str] = []
        rejected: list[MemberReject] = []
        now = int(self._clock())
        # The engine sends one batch; chunking here as well keeps a larger call within the API's cap.
        for chunk in _chunks(contacts, self.capabilities.max_add_batch):
            answer = await self._upsert(group, "upsert", [self._receiver(c, now) for c in chunk])
            for contact in chunk:
                receiver = answer.get(contact.key)
                if receiver is None:
                    rejected.append(MemberReject(contact.email, REJECT_REASON, permanent=True))
                elif not _active(receiver):
                    reason = "CleverReach kept the receiver inactive"
                    rejected.append(MemberReject(contact.email, reason, permanent=False))
                else:
                    done.append(contact.key)
        log.debug("%s: group %s: %d added, %d rejected", self.name, group.id, len(done), len(rejected))
        return BatchResult(tuple(done), tuple(rejected))

    async def remove_members(self, group: RemoteGroup, members: Sequence[RemoteMember]) -> BatchResult:
        if self.remove_mode is RemoveMode.DELETE:
            return await self._delete(group, members)
        return await self._deactivate(group, members)

    async def reset_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        # Non-atomic: the group is empty until the upsert lands. Only planned when allow_non_atomic_reset.
        await self.api.request("DELETE", f"groups/{_seg(group.id)}/clear")
        log.debug("%s: group %s cleared for a reset", self.name, group.id)
        return await self.add_members(group, contacts) if contacts else BatchResult()

    async def aclose(self) -> None:
        await self.api.aclose()

    # -- helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _receiver(contact: Contact, now: int) -> dict[str, Any]:
        receiver: dict[str, Any] = {"email": contact.email, "activated": now, "deactivated": 0}
        names = {"firstname": contact.first_name, "lastname": contact.last_name}
        attributes = {k: v for k, v in names.items() if v is not None}  # never blank out a known name
        if attributes:
            receiver["global_attributes"] = attributes
        return receiver

    async def _upsert(self, group: RemoteGroup, route: str, entries: list[dict[str, Any]]) -> Answer:
        """Send one upsert/upsertplus; the answer's receivers by email key. Safe to resend: same end state."""
        path = f"groups/{_seg(group.id)}/receivers/{route}"
        body = await self.api.json("POST", path, json=entries, idempotent=True)
        return _by_key(_receivers(body, route))

    async def _deactivate(self, group: RemoteGroup, members: Sequence[RemoteMember]) -> BatchResult:
        done: list[str] = []
        rejected: list[MemberReject] = []
        with_email = [m for m in members if m.email]
        no_email = "receiver has no email to deactivate"
        rejected += [MemberReject(m.key, no_email, permanent=False) for m in members if not m.email]
        now = int(self._clock())
        for chunk in _chunks(with_email, self.capabilities.max_remove_batch):
            entries = [{"email": m.email, "deactivated": now} for m in chunk]
            answer = await self._upsert(group, "upsertplus", entries)
            for member in chunk:
                assert member.email is not None
                receiver = answer.get(member.key)
                if receiver is not None and not _active(receiver):
                    done.append(member.key)
                else:
                    reason = "deactivation not confirmed by CleverReach"
                    rejected.append(MemberReject(member.email, reason, permanent=False))
        log.debug("%s: group %s: %d deactivated", self.name, group.id, len(done))
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
            settings.resolved_token_url, settings.client_id, settings.client_secret, basic=True
        )
    client = make_client(settings.base_url, auth=auth, timeout=settings.timeout, transport=ctx.transport)
    capabilities = capabilities_for(settings.remove_mode).with_batch_size(settings.batch_size)
    return CleverReachConnector(
        settings.name,
        client,
        capabilities=capabilities,
        pacing=settings.pacing(capabilities.pacing),
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
    "error_message",
]
