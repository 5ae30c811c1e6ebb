"""Communic8 recipient groups (internal-communications platform, one API host per customer instance).

Why this module exists: Communic8 groups are one of the targets syncd keeps equal to the source of truth.
Its API has three quirks that shape everything below:

* Errors come back as **HTTP 200 with `{"success": false, "message": ...}`**, so every answer is checked
  for `success` (`classify`), not just its status.
* A member add names recipients by email, but **one unknown email fails the whole batch** ("Not all emails
  founded as recipient in system") and there is **no API to create recipients**. So before sending, the
  connector checks each email against what it knows exists (syncd's persisted recipient cache, else one
  read of the recipient directory per connector instance), never sends an unknown email, and reports it as
  a permanent reject (DESIGN: "unknown recipient"): syncd remembers it and does not pay for a directory read
  to re-check it every pass, only when the member's source record changes. A recipient deleted after that
  check is isolated by splitting the batch.
* A group object carries **all its member ids inline** (`leads`): one GET reads a whole group. Ids are
  mapped back to emails through the recipient cache, so a steady-state pass costs one request per group;
  the directory is read only when a lead id is unknown.
* **An accepted add, remove or reset can still refuse single recipients** (vendor docs): the answer is
  `{success: true, data: {successCount, errorCount, errorLog: Object[]}}` and the rest of the call is
  applied. Those recipients are per-member rejects (permanent, the provider's message as the reason), never
  a failed batch, and never reported done. The shape of an `errorLog` entry is undocumented, so it is read
  defensively (`_entry`): an object naming the member by `email` / `recipientEmail` / `recipientId` / `_id` /
  `id` with a message in `message` / `error` / `reason` / `msg`, or a plain string mentioning the email (or
  id); names are matched case-insensitively against what was sent. Where the log names fewer members than
  `errorCount`, the group is read again once (`GET /recipientGroup/:id`, its `leads`) and the members that
  did not end up in it (add, reset) or out of it (remove) are the rejects, with the log's message(s) as the
  reason. A message that says unsubscribe / bounce / blacklist (blocklist, suppress) gives the reject code
  `unsubscribed` / `bounced` / `blacklisted` (`ConsentState`), anything else `provider_rejected`.
* **Recipients carry `active` and `suppressed` flags** (`GET /recipient`). A recipient the directory lists
  with `suppressed: true` is never sent in an add or reset: it is a permanent reject with code
  `blacklisted` ("suppressed in Communic8: not added"). The connector knows this only from a directory read,
  which it makes when its cache lacks an email (a steady-state pass reads no directory, so it cannot see a
  suppression that happened since: the provider's own refusal, via `errorLog`, is then what catches it).
  `active` is not acted on (what an inactive recipient means for group membership is undocumented).

A connector instance is meant to live for one pass: it reads the recipient directory at most once.

Wire shapes assumed where the docs are silent (PROVIDERS.md, "Wire shapes assumed"); check them against a
real account:

* recipient items are `{_id, email, firstName, lastName}`;
* `GET /recipient` and `GET /recipientGroup` page with `limit` (capped at 100) and `skip`, and answer `total`;
  `name` filters groups (possibly by partial match, so exact names are compared here);
* member calls on an unknown group answer 200 `success:false "Object does not exist"`;
* `successCount` is the number of members actually added/removed (with `reset`: the number given); it is
  not relied on: `errorCount` and `errorLog` say what was refused;
* a missing or wrong bearer token answers HTTP 401;
* the OAuth token endpoint is `<base_url>/oauth/token`, asked as the vendor's authentication page documents
  (`Authorization: Bearer base64(client_id:client_secret)`, a JSON `{"grant_type": "client_credentials"}`),
  and with form fields `client_id`, `client_secret` when it refuses that; it answers
  `{access_token, token_type, expires_in}` (the answer's shape is assumed).

Tolerated where an independent server could differ within the docs: ids as JSON numbers as well as strings;
`total` absent (or a numeric string), or pages capped below the `limit` asked (`connectors.http.PageEnd`);
group listings and the create answer without `leads` (then the group is read by id); the batch refusal in
mended words ("Not all emails found ...").

Unverified defaults (the docs say nothing): at most 1000 members per add/remove/reset request, and pacing
of 10 requests/s with bursts of 5 and 4 requests in flight. Override them with `batch_size`, `rate_limit`,
`burst` and `max_concurrency` once the real limits are known.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import (
    BatchRejected,
    BatchResult,
    Capabilities,
    Closing,
    ConnectorError,
    ConsentState,
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
    in_bulk,
)
from connectors.batching import chunks, create_or_find, isolate
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
    json_body,
    make_client,
    off_loop,
    paginate,
)
from connectors.settings import BuildContext, ProviderSettings, check_token_url

log = logging.getLogger("syncd.connectors.communic8")

API_ROOT = "/int/v1"
PAGE_SIZE = 100  # the largest page `limit` is assumed to allow (unverified)
LOOKUP_CHUNK = 5000  # email keys per recipient-cache look-up; a key the cache lacks ends the look-ups
DEFAULT_LIMIT = 20  # the documented default `limit`: what a server that ignores ours would send
CREATE_ATTEMPTS = 3  # a group create that may or may not have landed is looked up by name, then re-sent

NOT_A_RECIPIENT = "no Communic8 recipient with this email (Communic8 has no API to create recipients)"
SUPPRESSED = "suppressed in Communic8: not added"
NO_REASON = "Communic8 refused this recipient without giving a reason"
REJECT_CODE = "provider_rejected"
MSG_NO_OBJECT = "Object does not exist"
MSG_UNKNOWN_EMAILS = "Not all emails founded as recipient in system"  # sic: the API's own spelling
# The refusal of a batch naming an unknown recipient: the documented words, and the same with the grammar
# mended ("found") or about ids, as a server that does not copy the typo may say it.
_UNKNOWN_RECIPIENTS = re.compile(r"\s*not all \w+ (?:were )?found", re.IGNORECASE)

CAPABILITIES = Capabilities(
    member_key=MemberKeyKind.EMAIL,
    max_add_batch=1000,  # unverified: the docs give no limit
    max_remove_batch=1000,  # unverified
    can_create_group=True,
    can_remove=True,
    reset=ResetKind.ATOMIC,  # `reset: true` on the add call replaces the members in one request
    pacing=Pacing(rate=10.0, burst=5, max_concurrency=4),  # unverified: a conservative guess
)


# -------------------------------------------------------------------------------------------- settings


class Communic8Settings(ProviderSettings):
    """A Communic8 instance. Authenticate with a static access key (`token`) or with OAuth client
    credentials (`client_id` = the access key's id, `client_secret` = its value)."""

    type: Literal["communic8"] = Field(description="Communic8 recipient groups.")
    base_url: str = Field(
        description="API root of your instance, `https://<instance>/int/v1`; https except on a loopback host."
    )
    token: SecretStr | None = Field(
        None,
        description="Access key from the Admin Console, sent as a Bearer token. Or use client_id + secret.",
    )
    client_id: str | None = Field(
        None,
        description="OAuth client credentials: the access key's id (with client_secret, instead of token).",
    )
    client_secret: SecretStr | None = Field(
        None,
        description="OAuth client credentials: the access key's value (with client_id, instead of token).",
    )
    token_url: str | None = Field(
        None,
        description="OAuth token endpoint. Default: `<base_url>/oauth/token`. Only with client_id/secret.",
    )

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str | None) -> str | None:
        return check_token_url(value)

    @model_validator(mode="after")
    def _one_auth_style(self) -> Self:
        has_token = self.token is not None
        has_id, has_secret = self.client_id is not None, self.client_secret is not None
        if has_id != has_secret:
            raise ValueError("client_id and client_secret go together")
        if has_token == has_id:
            raise ValueError("set either token, or client_id and client_secret (exactly one of the two)")
        if has_token and self.token_url is not None:
            raise ValueError("token_url applies only to client_id/client_secret authentication")
        for key, secret in (("token", self.token), ("client_secret", self.client_secret)):
            if secret is not None and not secret.get_secret_value().strip():
                raise ValueError(f"{key} must not be empty")
        if has_id and not (self.client_id or "").strip():
            raise ValueError("client_id must not be empty")
        return self

    @property
    def oauth_token_url(self) -> str:
        return self.token_url or derive_url(self.base_url, API_ROOT, API_ROOT + "/oauth/token")


# ------------------------------------------------------------------------------------- wire handling


def _message(response: httpx.Response) -> str:
    """The API's message for an answer, for error texts (bodies never echo credentials)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200]
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:200]
    return ""


_UNPARSED = object()
_NOT_JSON = object()
_BODY = "_syncd_json"  # where an answer keeps its parsed body: every answer is parsed once, however large


def _parsed(response: httpx.Response) -> Any:
    """The answer's JSON body, parsed on the first call and kept on the response (`_NOT_JSON` when it is not
    JSON): classifying an answer and reading it cost one parse (a group's answer holds all its member ids)."""
    body = getattr(response, _BODY, _UNPARSED)
    if body is _UNPARSED:
        body = body_or_none(response) if response.content else None
        if body is None and response.content.strip() != b"null":
            body = _NOT_JSON
        setattr(response, _BODY, body)
    return body


def _answer(response: httpx.Response) -> Any:
    """The JSON body of an accepted answer, or the ProtocolError `connectors.http.json_body` raises for one that
    is not JSON."""
    body = _parsed(response)
    return json_body(response) if body is _NOT_JSON else body


def classify(response: httpx.Response) -> ConnectorError | None:
    """Errors of the Communic8 API family: HTTP errors, and HTTP 200 answers with `success: false`."""
    if response.status_code >= 400:
        return error_for_status(response, _message(response))
    body = _parsed(response)  # not JSON: the parser raises ProtocolError where it expected JSON
    if not isinstance(body, dict) or body.get("success") is not False:
        return None
    message = str(body.get("message") or "success: false without a message")
    where = f"{response.request.method} {response.request.url.path}"
    if message == MSG_NO_OBJECT:
        return NotFound(f"{where}: {message}", status=response.status_code)
    if _UNKNOWN_RECIPIENTS.match(message):
        return BatchRejected(f"{where}: {message}", status=response.status_code)
    return FatalError(f"{where}: {message}", status=response.status_code)


def _data(body: Any, where: str) -> Any:
    if not isinstance(body, dict) or body.get("success") is not True:
        raise ProtocolError(f"{where}: expected an object with success: true")
    return body.get("data")


def _oid(value: Any) -> str | None:
    """An object id: a string as documented (Mongo ObjectIds), or a number (a server with integer ids)."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _count(value: Any) -> int | None:
    """A count (`total`, `leadsTotal`): a JSON number, or a numeric string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _group(obj: Any, where: str) -> RemoteGroup:
    gid = _oid(obj.get("_id")) if isinstance(obj, dict) else None
    if gid is None:
        raise ProtocolError(f"{where}: expected a recipient group object with an _id")
    return RemoteGroup(id=gid, name=str(obj.get("name") or ""), member_count=_count(obj.get("leadsTotal")))


def _leads(obj: Any, where: str, *, required: bool = True) -> list[str] | None:
    """A group's member ids (`leads`: ids, or objects carrying an `_id` where a server populates them), or
    None when the object has no leads list and `required` is false."""
    leads = obj.get("leads") if isinstance(obj, dict) else None
    if not isinstance(leads, list):
        if required:
            raise ProtocolError(f"{where}: recipient group without a leads list")
        return None
    ids: list[str] = []
    for lead in leads:
        rid = _oid(lead.get("_id") if isinstance(lead, dict) else lead)
        if rid is None:
            raise ProtocolError(f"{where}: a lead that is not a recipient id")
        ids.append(rid)
    seen: set[str] = set()
    for start in range(0, len(ids), 65_536):  # a step at a time: one C call over a million ids holds the interpreter
        seen.update(ids[start : start + 65_536])
    return ids if len(seen) == len(ids) else list(dict.fromkeys(ids))  # de-duplicated, order kept


# ------------------------------------------------------------------------------------- errorLog entries

# Where an errorLog entry may name the member and say why (its shape is undocumented: only "Object[]").
NAME_FIELDS = ("email", "recipientEmail", "recipientId", "_id", "id")
MESSAGE_FIELDS = ("message", "error", "reason", "msg")
MIN_ID_IN_TEXT = 12  # shorter ids (a numeric id server's "42") are not looked for in free text
_MASK = re.compile(r"[^\s@<>()\[\]\"',;:]+@[^\s@<>()\[\]\"',;:]+")


@dataclass(frozen=True, slots=True)
class _Entry:
    """One errorLog entry, read defensively."""

    names: frozenset[str]  # case-folded emails and ids the entry names in fields of their own
    text: str  # case-folded free text that may mention the member (a plain string, an object's message)
    message: str


@dataclass(frozen=True, slots=True)
class _Target:
    """A member as sent in one call: its result key, the email a reject names, what names it on the wire."""

    key: str  # the key of BatchResult.done
    email: str  # the email a reject names (a member's key when it has none)
    email_key: str | None
    rid: str | None  # its recipient id, when known

    @property
    def names(self) -> frozenset[str]:
        return frozenset(n for n in (self.email_key, self.rid.lower() if self.rid else None) if n)


def _entry(raw: Any) -> _Entry:
    if isinstance(raw, str):
        return _Entry(frozenset(), raw.lower(), raw.strip())
    if not isinstance(raw, dict):
        return _Entry(frozenset(), "", "")
    names: set[str] = set()
    for holder in (raw, raw.get("recipient"), raw.get("lead")):  # maybe populated, as `leads` can be
        if not isinstance(holder, dict):
            continue
        for field in NAME_FIELDS:
            value = _oid(holder.get(field))
            if value is not None:
                names.add(value.lower())
    message = ""
    for field in MESSAGE_FIELDS:
        value = raw.get(field)
        if isinstance(value, dict):
            value = value.get("message")
        if isinstance(value, str) and value.strip():
            message = value.strip()
            break
    return _Entry(frozenset(names), message.lower(), message)


def _mentions(text: str, name: str) -> bool:
    """Whether free text names this email or id as a whole word (not inside a longer address or id)."""
    return re.search(rf"(?<![\w.@+-]){re.escape(name)}(?![\w@+-]|\.\w)", text) is not None


def _matches(entry: _Entry, target: _Target) -> bool:
    names = target.names
    if entry.names & names:
        return True
    # In free text only what cannot be a word or number of the message: an email, a long id (an ObjectId).
    wordy = [name for name in names if "@" in name or len(name) >= MIN_ID_IN_TEXT]
    return bool(entry.text) and any(_mentions(entry.text, name) for name in wordy)


def _reason(message: str) -> str:
    """A reject's reason: the provider's message. An email it echoes is cut where it leads or ends the message
    ("a@b.c: Recipient unsubscribed") and masked elsewhere: reasons end up in logs, which carry no email."""
    text = _MASK.sub("<email>", message)
    text = re.sub(r"^\W*<email>[\s:;,.\-]*", "", text)
    text = re.sub(r"[\s:;,\-(\[]*<email>\W*$", "", text)
    return " ".join(text.split())[:200] or NO_REASON


def _reject_code(message: str) -> str:
    """The reject code a provider message implies: a consent state where it names one."""
    text = message.lower()
    if "unsubscri" in text:
        return ConsentState.UNSUBSCRIBED.value
    if "bounce" in text:
        return ConsentState.BOUNCED.value
    if any(word in text for word in ("blacklist", "black list", "blocklist", "block list", "suppress")):
        return ConsentState.BLACKLISTED.value
    return REJECT_CODE


def _refusal(target: _Target, message: str) -> MemberReject:
    reason = _reason(message)
    return MemberReject(target.email, reason, permanent=True, code=_reject_code(reason))


def _error_log(data: Any) -> tuple[list[_Entry], int]:
    """An accepted call's errorLog entries, and how many members it refused (`errorCount`, else the number
    of entries); none for an answer without a `data` object."""
    if not isinstance(data, dict):
        return [], 0
    raw_log = data.get("errorLog")
    entries = [_entry(raw) for raw in raw_log] if isinstance(raw_log, list) else []
    errors = _count(data.get("errorCount"))
    return entries, len(entries) if errors is None else errors


def _named(entries: Sequence[_Entry], targets: Sequence[_Target]) -> tuple[dict[str, str], list[str]]:
    """Target key -> the message of the first entry naming it, and the messages of entries naming none."""
    named: dict[str, str] = {}
    unnamed: list[str] = []
    for entry in entries:
        hits = [t for t in targets if _matches(entry, t)]
        for target in hits:
            named.setdefault(target.key, entry.message)
        if not hits and entry.message:
            unnamed.append(entry.message)
    return named, unnamed


# ------------------------------------------------------------------------------------------ connector


class Communic8Connector(Closing):
    """One Communic8 instance, speaking its `/int/v1` API through `connectors.http.ApiClient`."""

    lookup_chunk = LOOKUP_CHUNK  # an instance may look up in smaller steps (a test's small directory)

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
    ) -> None:
        self.name = name
        self.capabilities = capabilities
        self.api = ApiClient(
            client,
            provider=name,
            classify=classify,
            pacing=pacing or capabilities.pacing,
            retry=retry,
            hooks=hooks,
        )
        self.cache: RecipientCache = cache if cache is not None else NullRecipientCache()
        # email-key -> recipient id of the recipients known to exist: those looked up in the cache this pass
        # (the keys an add needed), until a directory read replaces it with the whole, authoritative list.
        self._ids: dict[str, str] = {}
        self._by_id: dict[str, str] | None = None  # after a directory read: recipient id -> email (its inverse)
        self._spelling: dict[str, str] = {}  # recipient id -> email as the directory spells it, where not its key
        self._suppressed: set[str] = set()  # email keys the directory lists with `suppressed: true`
        self._directory_read = False
        self._directory_lock = asyncio.Lock()  # concurrent pairs share one directory read
        # Leads seen by find_group, handed to the next read_members of that group (once), so binding a
        # group and reading it costs one request. Any write to the group drops them.
        self._handoff: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"Communic8Connector(name={self.name!r})"

    # -- groups ------------------------------------------------------------------------------------
    async def find_group(self, *, group_id: str | None = None, name: str | None = None) -> RemoteGroup | None:
        if group_id is not None:
            where = "GET /recipientGroup/{id}"
            try:
                obj = _data(await self._call("GET", _group_path(group_id)), where)
            except NotFound:  # HTTP 404 "Not Found", or success:false "Object does not exist"
                obj = None
            if obj is not None:
                group = _group(obj, where)
                self._handoff[group.id] = _required(_leads(obj, where))
                return group
        if name is None:
            return None
        return await self._find_by_name(name)

    async def _find_by_name(self, name: str) -> RemoteGroup | None:
        found: list[tuple[RemoteGroup, list[str] | None]] = []
        where = "GET /recipientGroup"
        end = PageEnd(PAGE_SIZE, default=DEFAULT_LIMIT)

        async def fetch(skip: int) -> tuple[list[Any], int | None]:
            params = {"name": name, "limit": PAGE_SIZE, "skip": skip}
            body = await self._call("GET", "recipientGroup", params=params)
            page = _data(body, where)
            if not isinstance(page, list):
                raise ProtocolError(f"{where}: data is not a list")
            # The name filter may match partially (and ignore case), or not at all: only the exact name counts.
            exact = [o for o in page if isinstance(o, dict) and o.get("name") == name]
            found.extend((_group(o, where), _leads(o, where, required=False)) for o in exact)
            more = end.more(len(page), _count(body.get("total")))
            return page, None if found or not more else skip + len(page)

        await paginate(fetch, 0)
        if not found:
            return None
        if len(found) > 1:
            log.debug("%s: %d groups are named alike; taking the first", self.name, len(found))
        group, leads = found[0]
        if leads is not None:  # a listing without leads: read_members asks for the group itself
            self._handoff[group.id] = leads
        return group

    async def create_group(self, name: str) -> RemoteGroup:
        # POST /recipientGroup is not idempotent (names need not be unique). When an attempt may have
        # landed but failed in transit, look the group up by name before sending it again.
        where = "POST /recipientGroup"

        async def create() -> RemoteGroup:
            obj = _data(await self._call("POST", "recipientGroup", json={"name": name}, idempotent=False), where)
            group = _group(obj, where)
            # Created with a name only, so it has no members, whether or not the answer lists its leads.
            self._handoff[group.id] = _leads(obj, where, required=False) or []
            return group

        async def find() -> RemoteGroup | None:
            log.debug("%s: a group create failed in transit; looking it up before sending it again", self.name)
            return await self.find_group(name=name)

        return await create_or_find(create, find, attempts=CREATE_ATTEMPTS, pause=self.api.pause)

    # -- members -----------------------------------------------------------------------------------
    async def read_members(self, group: RemoteGroup) -> list[RemoteMember]:
        leads = self._handoff.pop(group.id, None)
        if leads is None:
            leads = await self._group_lead_list(group)
        emails = await self._emails_of(leads)
        # A lead still unknown after a directory read has no email we can see: keep it, keyed by id.
        return await asyncio.to_thread(_members, leads, emails)  # a million objects: off the event loop

    async def _emails_of(self, leads: Sequence[str]) -> Mapping[str, str]:
        """Recipient id -> email for these leads: the ids looked up in the cache (a steady-state pass reads
        nothing else), the directory (read once) when one of them is not cached."""
        if not leads:
            return {}
        if not self._directory_read:
            found = await off_loop(self.cache.keys_by_id, leads)
            if len(found) >= len(leads):
                return found
            del found
            await self._read_directory()
        return self._emails_by_id()

    async def check_adds(self, group: RemoteGroup | None, contacts: Sequence[Contact]) -> list[MemberReject]:
        """`AddChecker`: the contacts an add would refuse (no recipient, or suppressed), decided as `add_members`
        decides it: from the cache, or the directory when the cache does not vouch for everyone (read once)."""
        _, rejected = await self._existing(contacts)
        return rejected

    async def add_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        self._handoff.pop(group.id, None)
        done: list[str] = []
        rejected: list[MemberReject] = []
        refusals: dict[str, MemberReject] = {}  # refused inside accepted calls (errorLog), by key

        async def post(part: Sequence[Contact]) -> None:
            refusals.update(await self._post(group, part))

        for chunk in chunks(contacts, self.capabilities.max_add_batch):
            send, refused = await self._existing(chunk)
            rejected += refused
            if not send:
                continue
            try:
                await post(send)
                ok = list(send)
            except BatchRejected:
                refused_as_is = True
                if not self._directory_read:  # our knowledge came from the cache: refresh it once
                    await self._read_directory()
                    send, refused = self._partition(send)
                    rejected += refused
                    refused_as_is = not refused  # the same batch again would be refused again
                # Someone deleted a recipient since we looked: halve the batch until the culprits stand alone.
                ok, bad = await isolate(post, send, refused=refused_as_is)
                await self._forget([c.key for c in bad])
                rejected += [MemberReject(c.email, NOT_A_RECIPIENT, code="unknown_recipient") for c in bad]
            done += [c.key for c in ok if c.key not in refusals]
        return BatchResult(tuple(done), (*rejected, *refusals.values()))

    async def remove_members(self, group: RemoteGroup, members: Sequence[RemoteMember]) -> BatchResult:
        self._handoff.pop(group.id, None)
        size = self.capabilities.max_remove_batch
        # Members read from the group carry their id; one known only by email is removed by email, in
        # calls of its own (the two fields are mutually exclusive).
        by_id = [m for m in members if m.id]
        by_email = [m for m in members if not m.id and m.email]
        if by_email and not self._directory_read:  # their ids, where cached, name them in an errorLog too
            self._ids.update(await off_loop(self.cache.get_many, [m.key for m in by_email if m.key not in self._ids]))
        refusals: dict[str, MemberReject] = {}
        for field, group_members in (("recipientIds", by_id), ("recipientEmails", by_email)):
            for chunk in chunks(group_members, size):
                refusals.update(await self._remove(group, field, chunk))
        done = tuple(m.key for m in [*by_id, *by_email] if m.key not in refusals)
        return BatchResult(done, tuple(refusals.values()))

    async def _remove(self, group: RemoteGroup, field: str, members: Sequence[RemoteMember]) -> dict[str, MemberReject]:
        refusals: dict[str, MemberReject] = {}

        async def delete(part: Sequence[RemoteMember]) -> None:
            values = [(m.id if field == "recipientIds" else m.email) for m in part]
            data = await self._send(group, "DELETE", {field: values})
            refusals.update(await self._refused(group, data, [self._member_target(m) for m in part], present=False))

        # An id or email Communic8 no longer knows fails the whole call: isolate it. A recipient that no
        # longer exists is in no group, so it counts as removed.
        _, vanished = await isolate(delete, members)
        if vanished:
            log.debug("%s: %d members to remove no longer exist as recipients", self.name, len(vanished))
        return refusals

    async def reset_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        self._handoff.pop(group.id, None)
        send, rejected = await self._existing(contacts)
        if contacts and not send:
            # None of the wanted people can go in: replacing the members with nobody is never what was meant.
            return BatchResult(rejected=tuple(rejected))
        try:
            refusals = await self._post(group, send, reset=True)
        except BatchRejected:
            if self._directory_read:
                raise BatchRejected(
                    f"reset of group {group.id} refused: a recipient was deleted during this pass; "
                    "the group is unchanged"
                ) from None
            await self._read_directory()
            send, refused = self._partition(send)
            rejected += refused
            if not send:
                return BatchResult(rejected=tuple(rejected))
            refusals = await self._post(group, send, reset=True)  # a reset cannot be split: a 2nd refusal is final
        done = tuple(c.key for c in send if c.key not in refusals)
        return BatchResult(done, (*rejected, *refusals.values()))

    async def aclose(self) -> None:
        await self.api.aclose()

    # -- requests ----------------------------------------------------------------------------------
    async def _post(
        self, group: RemoteGroup, contacts: Sequence[Contact], *, reset: bool = False
    ) -> dict[str, MemberReject]:
        """Add (or with `reset`, set) these members; returns the ones Communic8 refused inside the call."""
        payload: dict[str, Any] = {"recipientEmails": [c.email for c in contacts]}
        if reset:
            payload["reset"] = True
        data = await self._send(group, "POST", payload)
        if not _error_log(data)[1]:
            return {}
        targets = [_Target(c.key, c.email, c.key, self._ids.get(c.key)) for c in contacts]
        return await self._refused(group, data, targets, present=True)

    async def _send(self, group: RemoteGroup, method: str, payload: dict[str, Any]) -> Any:
        """One member call; returns its `data` (successCount, errorCount, errorLog)."""
        # Adding a member twice or removing an absent one is a no-op, so these calls are safe to retry.
        path = _group_path(group.id) + "/recipients"
        where = f"{method} /recipientGroup/{{id}}/recipients"
        return _data(await self._call(method, path, json=payload, idempotent=True), where)

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        """One request through `ApiClient`; its JSON body, parsed once (`_answer`)."""
        return _answer(await self.api.request(method, url, **kwargs))

    def _member_target(self, member: RemoteMember) -> _Target:
        key = email_key(member.email) if member.email else None
        rid = member.id or (self._ids.get(key) if key else None)
        return _Target(member.key, member.email or member.key, key, rid)

    async def _refused(
        self, group: RemoteGroup, data: Any, targets: Sequence[_Target], *, present: bool
    ) -> dict[str, MemberReject]:
        """The members an accepted call refused (`errorCount` > 0), by result key. `present`: whether the call
        meant them to end up in the group (add, reset) or out of it (remove).

        The errorLog names them where it can; where it names fewer than `errorCount`, the group is read again
        and its `leads` say who did not end up where they were meant to be. No member is reported done that
        the answer does not vouch for."""
        entries, errors = _error_log(data)
        if errors == 0:
            return {}
        named, unnamed = _named(entries, targets)
        if len(named) >= errors:
            out = {t.key: _refusal(t, named[t.key]) for t in targets if t.key in named}
        else:
            # One message for all (the usual case) or those of entries naming nobody: that is why they failed.
            fallback = "; ".join(dict.fromkeys(unnamed or [e.message for e in entries if e.message])) or NO_REASON
            out = await self._misplaced(group, targets, named, fallback, present=present)
        log.debug(
            "%s: an accepted call to group %s refused %d of %d members (errorCount %d, %d log entries)",
            self.name,
            group.id,
            len(out),
            len(targets),
            errors,
            len(entries),
        )
        return out

    async def _misplaced(
        self, group: RemoteGroup, targets: Sequence[_Target], named: dict[str, str], fallback: str, *, present: bool
    ) -> dict[str, MemberReject]:
        """The targets that are not where the call meant them to be (in the group's `leads` or not), read again
        once, as rejects with the message naming them (else `fallback`)."""
        leads = await self._group_leads(group)
        if any(t.rid is None for t in targets) and not self._directory_read:
            await self._read_directory()  # only a remove by email can lack an id
            targets = self._with_ids(targets)
        return {
            t.key: _refusal(t, named.get(t.key) or fallback)
            for t in targets
            if ((t.rid is not None and t.rid in leads) != present)
        }

    def _with_ids(self, targets: Sequence[_Target]) -> list[_Target]:
        """The targets, each with its recipient id where it lacked one and the known recipients have it."""
        known = self._ids
        return [
            t if t.rid or not t.email_key else _Target(t.key, t.email, t.email_key, known.get(t.email_key))
            for t in targets
        ]

    async def _group_lead_list(self, group: RemoteGroup) -> list[str]:
        where = "GET /recipientGroup/{id}"
        body = await self._call("GET", _group_path(group.id))
        # a million ids to check one by one: in a worker thread, so the event loop goes on meanwhile
        return await asyncio.to_thread(lambda: _required(_leads(_data(body, where), where)))

    async def _group_leads(self, group: RemoteGroup) -> set[str]:
        return set(await self._group_lead_list(group))

    # -- which recipients exist ---------------------------------------------------------------------
    def _emails_by_id(self) -> dict[str, str]:
        """After a directory read: recipient id -> email, as the directory spells it (built once)."""
        if self._by_id is None:
            self._by_id = {rid: key for key, rid in self._ids.items()}
            self._by_id.update(self._spelling)
        return self._by_id

    def _partition(self, contacts: Sequence[Contact]) -> tuple[list[Contact], list[MemberReject]]:
        """Sendable contacts, and rejects: people who are no recipient, and recipients the directory (as far as
        it was read this pass) lists as suppressed."""
        known = self._ids
        send: list[Contact] = []
        rejected: list[MemberReject] = []
        for c in contacts:
            if c.key not in known:
                rejected.append(MemberReject(c.email, NOT_A_RECIPIENT, code="unknown_recipient"))
            elif c.key in self._suppressed:
                rejected.append(MemberReject(c.email, SUPPRESSED, code=ConsentState.BLACKLISTED.value))
            else:
                send.append(c)
        return send, rejected

    async def _existing(self, contacts: Sequence[Contact]) -> tuple[list[Contact], list[MemberReject]]:
        """Split contacts into those known to exist (sendable) and rejects, reading the directory (once)
        when the cache does not vouch for all of them."""
        if not self._directory_read and not await self._looked_up(c.key for c in contacts if c.key not in self._ids):
            await self._read_directory()
        return await asyncio.to_thread(self._partition, contacts)  # a million look-ups: off the event loop

    async def _looked_up(self, keys: Iterable[str]) -> bool:
        """Whether the cache knows every one of these keys; those it knows are learnt. The keys are looked up a
        chunk at a time, and no further than the first chunk with one the cache lacks: the directory read that
        follows tells about all of them."""
        it = iter(keys)
        while chunk := set(itertools.islice(it, self.lookup_chunk)):
            found = await off_loop(self.cache.get_many, list(chunk))
            self._ids.update(found)
            if len(found) < len(chunk):
                return False
        return True

    async def _forget(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        for key in keys:
            self._ids.pop(key, None)
        self._by_id = None
        await off_loop(self.cache.forget, keys)

    async def _read_directory(self) -> None:
        """Read every recipient (`GET /recipient`, paged) once per connector instance; it replaces what the
        cache said (entries of deleted recipients are forgotten, only new and changed ones are written back).
        Each page is taken in as it comes: nothing but the email -> id map is kept."""
        async with self._directory_lock:
            if self._directory_read:
                return
            where = "GET /recipient"
            end = PageEnd(PAGE_SIZE, default=DEFAULT_LIMIT)
            ids: dict[str, str] = {}
            spelling: dict[str, str] = {}
            suppressed: set[str] = set()

            async def fetch(skip: int) -> tuple[list[Any], int | None]:
                body = await self._call("GET", "recipient", params={"limit": PAGE_SIZE, "skip": skip})
                page = _data(body, where)
                if not isinstance(page, list):
                    raise ProtocolError(f"{where}: data is not a list")
                for item in page:
                    _take_recipient(item, where, ids, spelling, suppressed)
                return [], skip + len(page) if end.more(len(page), _count(body.get("total"))) else None

            await paginate(fetch, 0)
            await off_loop(self.cache.replace_all, ids)
            self._ids, self._spelling, self._by_id, self._suppressed = ids, spelling, None, suppressed
            self._directory_read = True
            log.debug(
                "%s: recipient directory read: %d recipients (%d suppressed)", self.name, len(ids), len(suppressed)
            )


def _members(leads: Sequence[str], emails: Mapping[str, str]) -> list[RemoteMember]:
    with in_bulk(freeze=True):
        return [RemoteMember(emails.get(lead), lead) for lead in leads]


def _take_recipient(item: Any, where: str, ids: dict[str, str], spelling: dict[str, str], suppressed: set[str]) -> None:
    """One recipient of a directory page into the maps being built."""
    rid = _oid(item.get("_id")) if isinstance(item, dict) else None
    if rid is None:
        raise ProtocolError(f"{where}: recipient without an _id")
    email = item.get("email")
    if isinstance(email, str) and email.strip():
        spelled = email.strip()
        key = email_key(spelled)
        ids[key] = rid
        if spelled != key:
            spelling[rid] = spelled
        if item.get("suppressed") is True:
            suppressed.add(key)


def _required(leads: list[str] | None) -> list[str]:
    assert leads is not None  # _leads(required=True) raises instead of answering None
    return leads


def _group_path(group_id: str) -> str:
    return "recipientGroup/" + quote(group_id, safe="")


# ---------------------------------------------------------------------------------------------- build


def build(settings: Communic8Settings, ctx: BuildContext) -> Communic8Connector:
    auth: httpx.Auth
    if settings.token is not None:
        auth = BearerAuth(settings.token)
    else:
        assert settings.client_id is not None and settings.client_secret is not None  # the validator says so
        # The documented token request (Bearer base64(id:secret) and a JSON body) first; form fields, the common
        # reading of RFC 6749, if the endpoint refuses it. The way that worked is kept.
        auth = ClientCredentialsAuth(
            settings.oauth_token_url,
            settings.client_id,
            settings.client_secret,
            client_auth=(ClientAuth.BEARER_JSON, ClientAuth.FORM),
        )
    client = make_client(settings.base_url, auth=auth, timeout=settings.timeout, transport=ctx.transport)
    return Communic8Connector(
        settings.name,
        client,
        capabilities=settings.capabilities(CAPABILITIES),
        retry=settings.retry.policy(),
        hooks=ctx.hooks,
        cache=ctx.cache,
    )
