"""HubSpot lists as a source of desired groups: each configured group is one list's contacts.

How the API is used (PROVIDERS.md, "Source CRMs" and "Wire shapes assumed"):

- Auth: a private app's access token as `Authorization: Bearer` (scopes crm.lists.read,
  crm.objects.contacts.read). Nothing is ever written.
- Members: `GET /crm/v3/lists/{listId}/memberships?limit=250&after=…`, 250 (the cap) per page, in ascending
  recordId order, following `paging.next.after` until it is absent. A cursor seen twice is a server bug and
  fails the read rather than looping.
- Contacts: `POST /crm/v3/objects/contacts/batch/read {inputs: [{id}], properties: [...]}`, 100 ids (the cap)
  per call, sent while later membership pages are still being read. So a list of N members costs
  ceil(N / 250) membership pages (at least 1) and ceil(N / 100) batch reads: 1,000 members = 4 + 10 requests.
  Ids are chunked across page boundaries, so no batch is short except the last.
- A batch read naming ids HubSpot no longer has (deleted or archived between the two calls) answers 207 with
  the found contacts in `results` and `errors[{category: OBJECT_NOT_FOUND, context: {ids}}]`: those members
  are reported as rejects of the group, the rest go ahead. Any other error entry, or a requested id that
  comes back neither found nor not-found, fails the read (fail closed: a contact silently missing would be
  removed from every provider).
- A contact without an email becomes a reject of its group, with the contact id in the reason; invalid and
  duplicate emails are rejected by `admit` as for any source.
- Errors: `{"status": "error", "message", "category", "correlationId"}`; the message shown carries the
  category, the message and the correlationId (what HubSpot support asks for), never the token.
- Pacing: the shared `ApiClient` token bucket at `rate_limit` (default 19/s with bursts of 1: never more than
  190 requests in any 10 s, HubSpot's paid-tier limit), 429 waited out (honouring Retry-After), 5xx and
  timeouts retried with backoff. HubSpot's limit is per account, shared with every other app using it:
  when `X-HubSpot-RateLimit-Remaining` reaches 0 the client waits for one slot of the rolling window
  (`X-HubSpot-RateLimit-Interval-Milliseconds` / `X-HubSpot-RateLimit-Max`) before its next request.

Assumptions to check against a real account: the 207 body shape and the ordering of memberships (PROVIDERS.md,
"Wire shapes assumed"); `X-HubSpot-RateLimit-Max` / `-Remaining` / `-Interval-Milliseconds` are the names
HubSpot's usage guidelines give (PROVIDERS.md says only `X-HubSpot-RateLimit-*`); when they are absent, pacing
alone keeps the rate.

Failure is per group: a list that cannot be read (404, a 5xx that outlasts its retries, a fault mid-pagination)
leaves that group untouched and is reported; the source's other lists still apply. A refused token (401/403)
fails the whole source.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from connectors.base import (
    AuthError,
    ConnectorError,
    Contact,
    Pacing,
    PostalAddress,
    ProtocolError,
)
from connectors.http import (
    ApiClient,
    BearerAuth,
    Quota,
    RequestHooks,
    RequestKind,
    error_for_status,
    json_body,
    make_client,
)
from syncd.config import Config, HubSpotGroupSpec, HubSpotSourceSettings
from syncd.errors import SourceError
from syncd.model import DesiredGroup, Reject, RejectCode, Target
from syncd.planning import admit
from syncd.sources.base import CheckLine, PartialRead

log = logging.getLogger("syncd.sources.hubspot")

MEMBERSHIP_PAGE = 250  # documented cap of `limit`
BATCH_READ = 100  # documented cap of batch read inputs
CONTACTS = "0-1"  # objectTypeId of contacts


# ------------------------------------------------------------------------------------------- errors


def error_message(response: httpx.Response) -> str:
    """`category: message (correlationId …)` from HubSpot's error body; the reason phrase when there is none."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        text = str(body["message"])
        if body.get("category"):
            text = f"{body['category']}: {text}"
        if body.get("correlationId"):
            text += f" (correlationId {body['correlationId']})"
        return text[:400]
    return response.reason_phrase


def classify(response: httpx.Response) -> ConnectorError | None:
    """Ordinary HTTP statuses; 207 (a batch read that found only some ids) is a success handled by the caller."""
    if response.status_code < 400:
        return None
    return error_for_status(response, error_message(response))


def quota(response: httpx.Response) -> Quota | None:
    """At `X-HubSpot-RateLimit-Remaining: 0`, wait for one slot of the rolling window to free (interval / max):
    the account's budget is shared with its other apps, so it can run out below our own pace. Above 0 the pacing
    alone sets the rate (spreading what remains over the interval would halve a client that uses the whole
    budget itself, as the default pace does)."""
    headers = response.headers
    try:
        remaining = int(headers["X-HubSpot-RateLimit-Remaining"])
        interval = float(headers["X-HubSpot-RateLimit-Interval-Milliseconds"]) / 1000
        maximum = int(headers.get("X-HubSpot-RateLimit-Max") or 0)
    except (KeyError, ValueError):
        return None
    if remaining > 0 or interval <= 0:
        return None
    return Quota(remaining=0, reset_in=interval / maximum if maximum > 0 else min(interval, 1.0))


# ------------------------------------------------------------------------------------------- source


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class HubSpotSource:
    """One HubSpot account's lists, as `groups:` of a `type: hubspot` source configure them."""

    def __init__(
        self,
        settings: HubSpotSourceSettings,
        config: Config,
        *,
        name: str = "hubspot",
        transport: httpx.AsyncBaseTransport | None = None,
        hooks: RequestHooks | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.name = name
        self.guard_empty = not settings.allow_empty
        self._transport = transport
        self._hooks = hooks
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
        client = make_client(s.base_url, auth=BearerAuth(s.token), timeout=s.timeout, transport=self._transport)
        return ApiClient(
            client,
            provider=self.name,
            classify=classify,
            pacing=Pacing(rate=s.rate_limit, burst=s.burst, max_concurrency=s.max_concurrency),
            retry=s.retry.policy(),
            hooks=self._hooks,
            quota=quota,
        )

    async def read(self) -> list[DesiredGroup]:
        api = self._client()
        try:
            answers = await asyncio.gather(
                *(self._group(api, spec) for spec in self.settings.groups), return_exceptions=True
            )
        finally:
            await api.aclose()
        groups: list[DesiredGroup] = []
        failures: list[str] = []
        for spec, answer in zip(self.settings.groups, answers, strict=True):
            if isinstance(answer, AuthError):
                raise SourceError(
                    self.name,
                    f"HubSpot refused the token ({answer}): check the private app's access token and that it "
                    "has the scopes crm.lists.read and crm.objects.contacts.read",
                )
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
        """For `syncd validate --online`: does the token work, and does every list exist? One
        `GET /crm/v3/lists/{listId}` per list; reads nothing else."""
        api = self._client()
        lines: list[CheckLine] = []
        try:
            for spec in self.settings.groups:
                try:
                    body = await api.json("GET", f"crm/v3/lists/{spec.list_id}")
                except AuthError as exc:
                    return [CheckLine(False, f"HubSpot refused the token ({exc})")]
                except ConnectorError as exc:
                    lines.append(CheckLine(False, f"group {spec.name!r}: list {spec.list_id}: {exc}"))
                    continue
                found = body.get("list") if isinstance(body, dict) else None
                if not isinstance(found, dict):
                    lines.append(CheckLine(False, f"group {spec.name!r}: list {spec.list_id}: unexpected answer"))
                    continue
                kind = "" if found.get("objectTypeId") in (None, CONTACTS) else " (not a list of contacts!)"
                lines.append(
                    CheckLine(
                        not kind,
                        f"group {spec.name!r}: list {spec.list_id} {found.get('name')!r}, "
                        f"{found.get('size', '?')} members{kind}",
                    )
                )
        finally:
            await api.aclose()
        return lines

    # -- one list -----------------------------------------------------------------------------------
    async def _group(self, api: ApiClient, spec: HubSpotGroupSpec) -> DesiredGroup:
        contacts, missing = await self._contacts(api, spec.list_id)
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

    async def _contacts(self, api: ApiClient, list_id: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
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
                page, after = await self._memberships(api, list_id, after)
                for record_id in page:
                    if record_id not in seen:
                        seen.add(record_id)
                        ids.append(record_id)
                        pending.append(record_id)
                while len(pending) >= BATCH_READ:
                    batches.append(asyncio.create_task(self._batch_read(api, pending[:BATCH_READ])))
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
                batches.append(asyncio.create_task(self._batch_read(api, pending)))
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

    async def _memberships(self, api: ApiClient, list_id: str, after: str | None) -> tuple[list[str], str | None]:
        params = {"limit": str(MEMBERSHIP_PAGE)}
        if after is not None:
            params["after"] = after
        response = await api.request("GET", f"crm/v3/lists/{list_id}/memberships", params=params)
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

    async def _batch_read(self, api: ApiClient, ids: Sequence[str]) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Contacts found (id -> properties) and ids HubSpot reported as not found."""
        payload = {"inputs": [{"id": i} for i in ids], "properties": self._properties}
        response = await api.request(
            "POST", "crm/v3/objects/contacts/batch/read", kind=RequestKind.READ, idempotent=True, json=payload
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


__all__ = ["HubSpotSource", "classify", "error_message", "quota"]
