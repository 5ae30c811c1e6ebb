"""A fake HubSpot CRM v3 (the parts syncd reads), answering in the shapes of HubSpot's public OpenAPI specs.

Shapes follow the CRM Lists v3 and Contacts v3 specs (HubSpot-public-api-spec-collection) and the usage-guidelines
page, as PROVIDERS.md ("What the real services do") summarises them; tests/test_hubspot.py parses every answer
with the official Python SDK's models (hubspot-api-client, client-side validation on), so a drift fails there.

Routes (every one wants `Authorization: Bearer <private app token>`; else 401):

- `GET /crm/v3/lists/{listId}` → `{"list": PublicObjectList}`: listId, listVersion, name, objectTypeId,
  processingStatus, processingType (all required by the spec), size, createdAt, updatedAt. objectTypeId is `0-1`
  (contacts) and processingStatus `COMPLETE` unless a test says otherwise (`add_list(..., object_type_id=,
  processing_status=)`, `set_list`);
- `GET /crm/v3/lists/{listId}/memberships?limit=…&after=…` → `{"results": [{recordId, membershipTimestamp}],
  "paging": {"next": {"after", "link"}}}` in ascending recordId order; `limit` defaults to 100 and may not
  exceed 250 (400 otherwise); `after` is an opaque cursor (a forged one is a 400); the last page has no
  `paging`. A list still processing answers the members it has so far;
- `POST /crm/v3/objects/contacts/batch/read {inputs: [{id}], properties: [...], propertiesWithHistory?}` → 200
  BatchResponseSimplePublicObject `{status: "COMPLETE", results: [{id, properties, createdAt, updatedAt,
  archived}], startedAt, completedAt}`, or 207 BatchResponseSimplePublicObjectWithErrors: the same plus
  `numErrors` and `errors: [{status: "error", category: "OBJECT_NOT_FOUND", message, context: {ids}, errors: [],
  links: {}}]` when some ids are unknown (deleted). At most 100 inputs (400 otherwise). A contact carries the
  requested properties (null when unset) plus hs_object_id, createdate and lastmodifieddate. It changes nothing,
  so it is not a mutating route.
- `POST /crm/v3/lists/search {query?, offset?, count?}` → `{"lists": [...], "hasMore", "offset", "total"}`
  (without rate-limit headers: HubSpot's search endpoints send none).

Errors: `{"status": "error", "message", "category", "correlationId"}` (404 OBJECT_NOT_FOUND, 400
VALIDATION_ERROR, 401 INVALID_AUTHENTICATION).

Limits, checked after the token (both are per app / per account, so an anonymous request is just a 401):

- `daily_limit` (HubSpot: 250,000 a day on free and starter, more on paid tiers): every answer then carries
  `X-HubSpot-RateLimit-Daily` and `-Daily-Remaining`, every authenticated request counts, and once it is used up
  (or `exhaust_daily()`), every request answers 429 `{status, message: "You have reached your daily limit.",
  errorType: "RATE_LIMIT", correlationId, policyName: "DAILY", requestId}` until `reset_daily()`.
- `rate_limit`, the burst limit (HubSpot: `RateLimit(100, 10.0)` on free and starter, 190 on professional and
  enterprise, 250 with the API limit increase; kept in `quota`): answers carry `X-HubSpot-RateLimit-Max`,
  `-Remaining` and `-Interval-Milliseconds`, and a request over the limit gets 429 with the same body shape and
  `policyName: "TEN_SECONDLY_ROLLING"`. HubSpot documents no Retry-After; `retry_after=True` adds one.

Without them no rate-limit headers are sent. Neither applies to injected faults (`inject`), which answer first.

Test helpers seed contacts (`add_contact`, `add_contacts`) and lists (`add_list`, `seed_list`), change a list's
kind or state (`set_list`), change membership (`add_to_list`, `remove_from_list`) and delete a contact while
leaving it in its lists (`delete_contact(..., keep_in_lists=True)`: what a 207 looks like).
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sandboxes._core import HttpError, RateLimit, Request, Response, SandboxApp

DEFAULT_TOKEN = "pat-na1-00000000-sandbox-token"
MAX_PAGE = 250
DEFAULT_PAGE = 100
MAX_BATCH_READ = 100
CONTACTS = "0-1"  # objectTypeId of contacts
DEFAULT_PROPERTIES = ("hs_object_id", "createdate", "lastmodifieddate")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_body(message: str, category: str, **extra: Any) -> dict[str, Any]:
    return {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category, **extra}


def rate_limit_body(message: str, policy: str) -> dict[str, Any]:
    """A 429's body as HubSpot's usage guidelines show it (no `category`: it is not the generic Error schema)."""
    return {
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": str(uuid.uuid4()),
        "policyName": policy,
        "requestId": str(uuid.uuid4()),
    }


def _fail(status: int, message: str, category: str, **extra: Any) -> HttpError:
    return HttpError(status, error_body(message, category, **extra))


class HubSpotSandbox(SandboxApp):
    name = "hubspot"

    def __init__(
        self,
        *,
        tokens: Iterable[str] = (DEFAULT_TOKEN,),
        rate_limit: RateLimit | None = None,
        daily_limit: int | None = None,
        retry_after: bool = False,
    ) -> None:
        super().__init__()
        self.tokens: set[str] = set(tokens)
        # HubSpot's burst limit, enforced here rather than through SandboxApp.rate_limit so that every answer can
        # say how much of the window is left (X-HubSpot-RateLimit-Remaining).
        self.quota = rate_limit
        self.daily_limit = daily_limit
        self.daily_used = 0
        self.retry_after = retry_after
        self._limit_headers: dict[str, str] = {}  # the rate-limit headers of the answer being built
        self.contacts: dict[int, dict[str, Any]] = {}  # id -> {"properties": {...}, "createdAt", "updatedAt"}
        self.lists: dict[int, dict[str, Any]] = {}  # listId -> {"name", "members": {recordId: timestamp}}
        self._contact_ids = itertools.count(101)
        self._list_ids = itertools.count(11)
        self._cursor_key = secrets.token_hex(4)
        for method, path, handler in (
            ("GET", "/crm/v3/lists/{listId}", self._get_list),
            ("GET", "/crm/v3/lists/{listId}/memberships", self._memberships),
            ("POST", "/crm/v3/lists/search", self._search_lists),
            ("POST", "/crm/v3/objects/contacts/batch/read", self._batch_read),
        ):
            self.add_route(method, path, handler, mutating=False)  # syncd only reads a CRM

    # -- test helpers (plain methods, not HTTP) -------------------------------------------------------
    def add_contact(
        self,
        email: str | None = None,
        firstname: str | None = None,
        lastname: str | None = None,
        **properties: str | None,
    ) -> str:
        """Create a contact; returns its id. Extra keyword arguments are further properties (zip, city, …)."""
        with self.lock:
            contact_id = next(self._contact_ids)
            now = _now()
            props = {"email": email, "firstname": firstname, "lastname": lastname, **properties}
            self.contacts[contact_id] = {
                "properties": {k: v for k, v in props.items() if v is not None},
                "createdAt": now,
                "updatedAt": now,
            }
            return str(contact_id)

    def add_contacts(self, emails: Iterable[str | None]) -> list[str]:
        return [self.add_contact(email) for email in emails]

    def delete_contact(self, contact_id: str, *, keep_in_lists: bool = False) -> None:
        """Delete a contact. HubSpot drops it from its lists too; `keep_in_lists` leaves the stale membership
        (a list read between the two updates: the batch read then answers 207)."""
        with self.lock:
            del self.contacts[int(contact_id)]
            if not keep_in_lists:
                for lst in self.lists.values():
                    lst["members"].pop(int(contact_id), None)

    def add_list(
        self,
        name: str,
        contact_ids: Iterable[str] = (),
        *,
        processing_type: str = "MANUAL",
        object_type_id: str = CONTACTS,
        processing_status: str = "COMPLETE",
    ) -> str:
        """A list of these records. `object_type_id` other than 0-1 makes it a list of another object type (its
        members are then that type's record ids); `processing_status` is an open string (COMPLETE, PROCESSING,
        REFRESHING, ...)."""
        with self.lock:
            list_id = next(self._list_ids)
            now = _now()
            self.lists[list_id] = {
                "name": name,
                "processingType": processing_type,
                "objectTypeId": object_type_id,
                "processingStatus": processing_status,
                "listVersion": 1,
                "members": {},
                "createdAt": now,
                "updatedAt": now,
            }
            self.add_to_list(str(list_id), contact_ids)
            return str(list_id)

    def set_list(
        self,
        list_id: str,
        *,
        processing_status: str | None = None,
        object_type_id: str | None = None,
        name: str | None = None,
    ) -> None:
        """Change what `GET /crm/v3/lists/{listId}` says of a list (e.g. PROCESSING while HubSpot re-evaluates it)."""
        with self.lock:
            lst = self.lists[int(list_id)]
            changes = {"processingStatus": processing_status, "objectTypeId": object_type_id, "name": name}
            lst.update({k: v for k, v in changes.items() if v is not None})
            lst["listVersion"] += 1
            lst["updatedAt"] = _now()

    def seed_list(self, name: str, count: int, *, prefix: str = "contact", domain: str = "example.com") -> str:
        """A list of `count` new contacts named prefix00000@domain, …; returns the list id."""
        ids = [self.add_contact(f"{prefix}{i:05d}@{domain}", f"First{i}", f"Last{i}") for i in range(count)]
        return self.add_list(name, ids)

    def add_to_list(self, list_id: str, contact_ids: Iterable[str]) -> None:
        with self.lock:
            members = self.lists[int(list_id)]["members"]
            for contact_id in contact_ids:
                members.setdefault(int(contact_id), _now())

    def remove_from_list(self, list_id: str, contact_ids: Iterable[str]) -> None:
        with self.lock:
            members = self.lists[int(list_id)]["members"]
            for contact_id in contact_ids:
                members.pop(int(contact_id), None)

    def list_emails(self, list_id: str) -> set[str]:
        with self.lock:
            members = self.lists[int(list_id)]["members"]
            return {
                self.contacts[i]["properties"]["email"]
                for i in members
                if i in self.contacts and self.contacts[i]["properties"].get("email")
            }

    def exhaust_daily(self) -> None:
        """Use up the account's daily limit (250,000 if none was set): every request now answers the DAILY 429."""
        with self.lock:
            if self.daily_limit is None:
                self.daily_limit = 250_000
            self.daily_used = self.daily_limit

    def reset_daily(self) -> None:
        """Midnight in the account's time zone: the daily count starts again."""
        with self.lock:
            self.daily_used = 0

    # -- SandboxApp hooks ---------------------------------------------------------------------------
    def authenticate(self, request: Request) -> Response | None:
        self._limit_headers = {}
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in self.tokens:
            return Response(
                401,
                error_body(
                    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                    "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                    "INVALID_AUTHENTICATION",
                ),
            )
        search = request.path.endswith("/search")  # HubSpot's search endpoints send no rate-limit headers
        if self.daily_limit is not None:
            if self.daily_used >= self.daily_limit:
                headers = {} if search else self._daily_headers()
                return Response(429, rate_limit_body("You have reached your daily limit.", "DAILY"), headers)
            self.daily_used += 1
            if not search:
                self._limit_headers.update(self._daily_headers())
        if self.quota is not None and not search:
            ok, remaining, reset = self.quota.hit()
            self._limit_headers.update(self._quota_headers(remaining))
            if not ok:
                return self.rate_limited(reset)
        return None

    def not_found(self, request: Request) -> Response:
        return Response(404, error_body(f"Unable to route {request.method} {request.path}", "OBJECT_NOT_FOUND"))

    def rate_limited(self, retry_after: float) -> Response:
        body = rate_limit_body("You have reached your ten_secondly_rolling limit.", "TEN_SECONDLY_ROLLING")
        headers = dict(self._limit_headers)
        if self.retry_after:
            headers["Retry-After"] = str(max(1, round(retry_after + 0.49)))
        return Response(429, body, headers)

    def decorate(self, request: Request, response: Response) -> None:
        response.headers.update({k: v for k, v in self._limit_headers.items() if k not in response.headers})

    def _daily_headers(self) -> dict[str, str]:
        assert self.daily_limit is not None
        return {
            "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - self.daily_used)),
        }

    def _quota_headers(self, remaining: int) -> dict[str, str]:
        if self.quota is None:
            return {}
        return {
            "X-HubSpot-RateLimit-Max": str(self.quota.limit),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(round(self.quota.window * 1000)),
        }

    # -- routes -------------------------------------------------------------------------------------
    def _list(self, request: Request) -> tuple[int, dict[str, Any]]:
        raw = request.params["listId"]
        if not raw.isdigit() or int(raw) not in self.lists:
            raise _fail(404, f"List {raw} does not exist.", "OBJECT_NOT_FOUND")
        return int(raw), self.lists[int(raw)]

    def _list_object(self, list_id: int, lst: dict[str, Any]) -> dict[str, Any]:
        """A PublicObjectList (spec: listId, listVersion, name, objectTypeId, processingStatus, processingType
        required; size optional)."""
        return {
            "listId": str(list_id),
            "listVersion": lst["listVersion"],
            "name": lst["name"],
            "objectTypeId": lst["objectTypeId"],
            "processingStatus": lst["processingStatus"],
            "processingType": lst["processingType"],
            "size": len(lst["members"]),
            "createdAt": lst["createdAt"],
            "updatedAt": lst["updatedAt"],
        }

    def _get_list(self, request: Request) -> dict[str, Any]:
        list_id, lst = self._list(request)
        return {"list": self._list_object(list_id, lst)}

    def _search_lists(self, request: Request) -> dict[str, Any]:
        body = request.json() or {}
        if not isinstance(body, dict):
            raise _fail(400, "Invalid input JSON", "VALIDATION_ERROR")
        query = str(body.get("query") or "").lower()
        offset, count = int(body.get("offset") or 0), min(int(body.get("count") or 20), 500)
        found = [self._list_object(i, lst) for i, lst in sorted(self.lists.items()) if query in lst["name"].lower()]
        page = found[offset : offset + count]
        return {
            "lists": page,
            "hasMore": offset + count < len(found),
            "offset": offset + len(page),
            "total": len(found),
        }

    def _cursor(self, record_id: int) -> str:
        return base64.urlsafe_b64encode(json.dumps([self._cursor_key, record_id]).encode()).decode().rstrip("=")

    def _after(self, cursor: str) -> int:
        try:
            key, record_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            if key != self._cursor_key or not isinstance(record_id, int):
                raise ValueError(cursor)
        except (ValueError, TypeError):
            raise _fail(400, f"Invalid paging cursor: {cursor}", "VALIDATION_ERROR") from None
        return record_id

    def _memberships(self, request: Request) -> dict[str, Any]:
        list_id, lst = self._list(request)
        query = request.query
        try:
            limit = int(query.get("limit") or DEFAULT_PAGE)
        except ValueError:
            raise _fail(400, "limit must be a number", "VALIDATION_ERROR") from None
        if not 1 <= limit <= MAX_PAGE:
            raise _fail(400, f"limit must be between 1 and {MAX_PAGE}, got {limit}", "VALIDATION_ERROR")
        after = self._after(query["after"]) if query.get("after") else 0
        ids = sorted(i for i in lst["members"] if i > after)
        page = ids[:limit]
        out: dict[str, Any] = {
            "results": [{"recordId": str(i), "membershipTimestamp": lst["members"][i]} for i in page]
        }
        if len(ids) > limit:
            cursor = self._cursor(page[-1])
            out["paging"] = {
                "next": {
                    "after": cursor,
                    "link": f"/crm/v3/lists/{list_id}/memberships?limit={limit}&after={cursor}",
                }
            }
        return out

    def _batch_read(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise _fail(400, "Invalid input JSON on line 1: expected an object with inputs", "VALIDATION_ERROR")
        inputs = body["inputs"]
        if not 1 <= len(inputs) <= MAX_BATCH_READ:
            raise _fail(
                400, f"inputs: size must be between 1 and {MAX_BATCH_READ}, got {len(inputs)}", "VALIDATION_ERROR"
            )
        wanted = body.get("properties") or ["email", "firstname", "lastname"]
        if not isinstance(wanted, list) or not all(isinstance(p, str) for p in wanted):
            raise _fail(400, "properties must be a list of property names", "VALIDATION_ERROR")
        started = _now()
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        for item in inputs:
            raw = str(item.get("id")) if isinstance(item, dict) else ""
            contact = self.contacts.get(int(raw)) if raw.isdigit() else None
            if contact is None:
                missing.append(raw)
                continue
            props = contact["properties"]
            shown = {p: props.get(p) for p in wanted}
            shown.update(
                {"hs_object_id": raw, "createdate": contact["createdAt"], "lastmodifieddate": contact["updatedAt"]}
            )
            results.append(
                {
                    "id": raw,
                    "properties": shown,
                    "createdAt": contact["createdAt"],
                    "updatedAt": contact["updatedAt"],
                    "archived": False,
                }
            )
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": _now()}
        if not missing:
            return Response(200, answer)
        answer["numErrors"] = 1
        answer["errors"] = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are "
                "valid.",
                "context": {"ids": missing},
                "errors": [],
                "links": {},
            }
        ]
        return Response(207, answer)


__all__ = ["CONTACTS", "DEFAULT_TOKEN", "HubSpotSandbox", "error_body", "rate_limit_body"]
