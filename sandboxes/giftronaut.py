"""A fake Giftronaut API (`/api/v1`), faithful to PROVIDERS.md, its "Wire shapes assumed" and the API excerpt.

Routes (all under `/api/v1`, Bearer token required), plus `POST /oauth2/token` on the host root:

* `GET/POST /recipient-groups` (listing: `page` from 1, `pageSize` default 20 and capped at 100, `search`
  partial and case-insensitive on the name), `GET/PUT/DELETE /recipient-groups/{groupId}` (PUT
  `{"groupName"}` renames; DELETE removes the group and its member associations, not the recipients).
  **`groupId` is an integer** (vendor docs): answers carry a JSON number, paths take its decimal digits (a
  path id that is not a number is no group: 404 GROUP_NOT_FOUND). **`groupName` is unique in the
  organization** (vendor docs): a create or rename to a name another group has answers 409 GROUP_EXISTS
  (names compared ignoring case and surrounding blanks: an assumption, the docs do not say);
* `GET /recipient-groups/{groupId}/members` (paged), `POST .../members {"recipientId"}` (201 added, 200
  already a member), `DELETE .../members/{recipientId}` (204): **one member per call**, no bulk call;
* `GET /recipients` (paged; `searchKeyword` matches first name, last name, full name or email partially,
  case-insensitively), `GET /recipients/{recipientId}`, `POST /recipients {email, firstName, lastName,
  company, department}` (email unique in the org, compared case-insensitively: 409 RECIPIENT_EXISTS).

Cross-cutting behaviour:

* listings answer `{"data": [...], "page", "pageSize", "total"}`; errors `{"error": CODE, "message"}`
  (VALIDATION_ERROR 400, GROUP_NOT_FOUND / RECIPIENT_NOT_FOUND / MEMBER_NOT_FOUND 404, RECIPIENT_EXISTS /
  DUPLICATE_IDEMPOTENCY_KEY 409, RATE_LIMITED 429; also UNAUTHORIZED 401, FORBIDDEN 403, NOT_FOUND 404);
* `X-Request-Id` is echoed back (one is made up when the request has none);
* `X-Idempotency-Key` on POST/PUT/PATCH, **at most 128 characters and remembered 24 h** (vendor docs; a
  longer key answers 400 VALIDATION_ERROR and nothing happens): a replay with the same key and the same
  request (method, path, JSON body) answers 200 with the original body and changes nothing; the same key
  with a different request answers 409 DUPLICATE_IDEMPOTENCY_KEY. Only successful answers are kept (a
  refused request can be fixed and sent again under its key); a key older than 24 h (on `clock`) is
  forgotten;
* the token endpoint takes form-encoded client credentials (or HTTP Basic), grants the requested scopes out
  of `recipients.read recipients.write` (all of them when none is asked) and answers `{access_token,
  token_type, expires_in, scope}` with a JWT-shaped token; a bad client gets 401 `invalid_client`. Reads
  need `recipients.read`, writes `recipients.write` (else 403);
* an optional rate limit (`RateLimit(300, 60)` is production's, `RateLimit(60, 60)` a sandbox account's)
  answers 429 RATE_LIMITED with `Retry-After` (configurable off, as the docs leave it open). The token
  endpoint does not count against it.

Assumptions where the docs are silent (besides the wire shapes): `email` must look like an address and the
text fields are optional strings of at most 100 characters (longer ones get VALIDATION_ERROR; this stands in
for whatever validation the real API does); the duplicate-name answer (409 `{"error": "GROUP_EXISTS",
"message"}`); group ids counting up from 1001; removing a recipient that is not a member answers 404
MEMBER_NOT_FOUND.

Knobs for the other answers an independent server could give within the docs: `page_cap` (where `pageSize`
is silently capped; 100 by default) and `bare_listings` (listings answer `{"data": [...]}` only: no `page`,
`pageSize` or `total`).

Test helpers besides the base class's faults: `inject_after(Fault)` spoils the answer of a request the
server *did* process (a 5xx or a dropped connection after the change landed), which is what idempotency keys
are for (`Fault(lost=True)` through `inject` does the same with a dropped connection). Helpers that take a
group id take it as the int or as its string (`"1001"`, as syncd's binding stores it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from sandboxes._core import Fault, HttpError, RateLimit, Request, Response, Route, SandboxApp

ROOT = "/api/v1"
TOKEN_PATH = "/oauth2/token"
SCOPES = ("recipients.read", "recipients.write")
DEFAULT_CLIENTS = {"gt-sandbox-client": "gt-sandbox-client-secret"}  # test values, not credentials
PAGE_CAP = 100
DEFAULT_PAGE_SIZE = 20
MAX_TEXT = 100  # assumed limit of firstName, lastName, company, department, groupName
MAX_IDEMPOTENCY_KEY = 128  # vendor docs
IDEMPOTENCY_TTL = 24 * 3600.0  # vendor docs: a key is remembered 24 h
FIRST_GROUP_ID = 1001
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
TEXT_FIELDS = ("firstName", "lastName", "company", "department")


def _error(status: int, code: str, message: str) -> HttpError:
    return HttpError(status, {"error": code, "message": message})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def _key(email: str) -> str:
    return email.strip().lower()


def _paging(request: Request) -> tuple[int, int]:
    """page (from 1) and pageSize (default 20) of a listing, before the sandbox's cap."""
    values: dict[str, int] = {}
    for name, default in (("page", 1), ("pageSize", DEFAULT_PAGE_SIZE)):
        raw = request.query.get(name, "")
        try:
            values[name] = int(raw) if raw != "" else default
        except ValueError:
            raise _error(400, "VALIDATION_ERROR", f"{name} must be an integer") from None
        if values[name] < 1:
            raise _error(400, "VALIDATION_ERROR", f"{name} must be at least 1")
    return values["page"], values["pageSize"]


def _listing(items: Iterable[dict[str, Any]], total: int, page: int, size: int) -> dict[str, Any]:
    start = (page - 1) * size
    data = [dict(item) for item in itertools.islice(items, start, start + size)]
    return {"data": data, "page": page, "pageSize": size, "total": total}


def _object(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise _error(400, "VALIDATION_ERROR", "the request body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or (value == "" and not required):
        if required:
            raise _error(400, "VALIDATION_ERROR", f"{name} is required")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise _error(400, "VALIDATION_ERROR", f"{name} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise _error(400, "VALIDATION_ERROR", f"{name} must be at most {MAX_TEXT} characters")
    return value


@dataclass
class _Kept:
    """A successful answer kept under its idempotency key."""

    fingerprint: str
    body: Any
    expires: float  # on the sandbox's clock


def _group_key(group_id: int | str) -> int | None:
    """A group id as the API stores it (an int), from an int or its decimal string; None if it is neither."""
    if isinstance(group_id, int) and not isinstance(group_id, bool):
        return group_id
    text = str(group_id).strip()
    return int(text) if text.isascii() and text.isdigit() else None


def _name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


class GiftronautSandbox(SandboxApp):
    name = "giftronaut"

    def __init__(
        self,
        *,
        clients: dict[str, str] | None = None,
        token_ttl: float = 3600.0,
        rate_limit: RateLimit | None = None,
        retry_after_header: bool = True,
        clock: Callable[[], float] = time.monotonic,
        page_cap: int = PAGE_CAP,
        bare_listings: bool = False,
    ) -> None:
        super().__init__()
        self.page_cap = page_cap
        self.bare_listings = bare_listings
        self.clients: dict[str, str] = dict(DEFAULT_CLIENTS if clients is None else clients)  # id -> secret
        self.token_ttl = token_ttl
        self.clock = clock
        self.rate_limit = rate_limit
        self.retry_after_header = retry_after_header
        self.tokens: dict[str, tuple[float, frozenset[str]]] = {}  # access token -> (expiry, scopes)
        self.recipients: dict[str, dict[str, Any]] = {}  # recipientId -> recipient (insertion order)
        self.groups: dict[int, dict[str, Any]] = {}  # groupId (an int) -> group (without memberCount)
        self.memberships: dict[int, dict[str, None]] = {}  # groupId -> recipient ids, an ordered set
        self._group_ids = itertools.count(FIRST_GROUP_ID)
        self.idempotency: dict[str, _Kept] = {}
        self.replays = 0  # answers served from the idempotency store
        self.after_faults: list[Fault] = []
        self._by_email: dict[str, str] = {}  # email key -> recipientId
        for method, path, handler, mutating in (
            ("GET", "/recipient-groups", self._list_groups, False),
            ("POST", "/recipient-groups", self._create_group, True),
            ("GET", "/recipient-groups/{gid}", self._get_group, False),
            ("PUT", "/recipient-groups/{gid}", self._rename_group, True),
            ("DELETE", "/recipient-groups/{gid}", self._delete_group, True),
            ("GET", "/recipient-groups/{gid}/members", self._list_members, False),
            ("POST", "/recipient-groups/{gid}/members", self._add_member, True),
            ("DELETE", "/recipient-groups/{gid}/members/{rid}", self._remove_member, True),
            ("GET", "/recipients", self._list_recipients, False),
            ("POST", "/recipients", self._create_recipient, True),
            ("GET", "/recipients/{rid}", self._get_recipient, False),
        ):
            serve: Callable[[Request], Any] = handler
            if method in ("POST", "PUT", "PATCH"):
                serve = self._idempotent(serve)
            self.add_route(method, ROOT + path, serve, mutating=mutating)
        self.add_route("POST", TOKEN_PATH, self._token)  # changes no data: a dry run may fetch a token

    # -- test helpers (plain methods, not HTTP) -------------------------------------------------------
    def add_client(self, client_id: str, secret: str) -> None:
        with self.lock:
            self.clients[client_id] = secret

    def revoke_tokens(self) -> None:
        """Invalidate every access token issued so far, before its expiry."""
        with self.lock:
            self.tokens.clear()

    def add_recipient(self, email: str, first: str = "", last: str = "") -> str:
        """Create a recipient (or return the id of the one with this email, compared case-insensitively)."""
        with self.lock:
            existing = self._by_email.get(_key(email))
            if existing is not None:
                return existing
            return str(self._new_recipient(email.strip(), first, last)["recipientId"])

    def delete_recipient(self, email: str) -> None:
        """Delete a recipient (from every group too), as an admin would in the web app."""
        with self.lock:
            rid = self._by_email.pop(_key(email), None)
            if rid is None:
                return
            del self.recipients[rid]
            for members in self.memberships.values():
                members.pop(rid, None)

    def add_group(self, name: str, emails: Iterable[str] = ()) -> str:
        """Create a group with these members (recipients are created for unknown emails); returns its id as a
        string (as syncd stores it). Names are unique, as through the API (ValueError)."""
        with self.lock:
            if self._named(name) is not None:
                raise ValueError(f"a group named {name!r} exists already (names are unique)")
            group = self._new_group(name)
            for email in emails:
                self.memberships[group["groupId"]][self.add_recipient(email)] = None
            return str(group["groupId"])

    def delete_group(self, group_id: int | str) -> None:
        """Delete a group (its recipients stay), as an admin would in the web app."""
        with self.lock:
            gid = _group_key(group_id)
            if gid is not None:
                self.groups.pop(gid, None)
                self.memberships.pop(gid, None)

    def group_emails(self, group_id: int | str) -> set[str]:
        """The member emails of a group, spelled as stored."""
        with self.lock:
            gid = _group_key(group_id)
            if gid is None or gid not in self.memberships:
                raise KeyError(group_id)
            return {self.recipients[rid]["email"] for rid in self.memberships[gid]}

    def recipient_count(self) -> int:
        with self.lock:
            return len(self.recipients)

    def recipient_id(self, email: str) -> str | None:
        with self.lock:
            return self._by_email.get(_key(email))

    def inject_after(self, fault: Fault) -> Fault:
        """Process a matching request normally, then answer `fault` instead (a status, or a dropped
        connection with `drop=True`): the change landed, the client does not know."""
        with self.lock:
            self.after_faults.append(fault)
        return fault

    @property
    def token_requests(self) -> int:
        return self.count(path=f"^{TOKEN_PATH}$")

    # -- SandboxApp hooks ---------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        response = await super().handle(request)
        if request.path.startswith("/_sandbox/"):
            return response
        fault = self._take_after_fault(request)
        if fault is None:
            return response
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            raise httpx.RemoteProtocolError("sandbox dropped the connection after processing the request")
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        body = fault.body if fault.body is not None else {"error": "INTERNAL_ERROR", "message": "injected fault"}
        return Response(fault.status or 503, body, headers)

    def _dispatch(self, request: Request, route: Route | None, params: dict[str, str], allowed: list[str]) -> Response:
        if request.path != TOKEN_PATH:
            return super()._dispatch(request, route, params, allowed)
        limit, self.rate_limit = self.rate_limit, None  # the token endpoint is not rate limited
        try:
            return super()._dispatch(request, route, params, allowed)
        finally:
            self.rate_limit = limit

    def authenticate(self, request: Request) -> Response | None:
        if request.path == TOKEN_PATH:
            return None  # the token endpoint authenticates the client itself
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        grant = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if grant is None or self.clock() >= grant[0]:
            message = "missing bearer token" if not token else "invalid or expired access token"
            return Response(401, {"error": "UNAUTHORIZED", "message": message}, {"WWW-Authenticate": "Bearer"})
        needed = "recipients.read" if request.method in ("GET", "HEAD") else "recipients.write"
        if needed not in grant[1]:
            return Response(403, {"error": "FORBIDDEN", "message": f"the token lacks the {needed} scope"})
        return None

    def not_found(self, request: Request) -> Response:
        return Response(404, {"error": "NOT_FOUND", "message": f"no route {request.method} {request.path}"})

    def rate_limited(self, retry_after: float) -> Response:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if self.retry_after_header else {}
        return Response(429, {"error": "RATE_LIMITED", "message": "too many requests"}, headers)

    def decorate(self, request: Request, response: Response) -> None:
        response.headers["X-Request-Id"] = request.headers.get("x-request-id") or uuid.uuid4().hex

    def _control(self, request: Request) -> Response:
        if request.path == "/_sandbox/after-faults" and request.method == "POST":
            self.inject_after(Fault.from_dict(request.json() or {}))
            return Response(201, {"ok": True})
        return super()._control(request)

    # -- auth ---------------------------------------------------------------------------------------
    def _token(self, request: Request) -> Response:
        form = request.form()
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                client_id = secret = ""
        if form.get("grant_type") != "client_credentials":
            return Response(
                400, {"error": "unsupported_grant_type", "error_description": "only client_credentials is supported"}
            )
        known = self.clients.get(client_id)
        if not client_id or known is None or not secrets.compare_digest(known, secret):
            return Response(401, {"error": "invalid_client", "error_description": "client authentication failed"})
        asked = form.get("scope", "").split()
        if any(s not in SCOPES for s in asked):
            return Response(400, {"error": "invalid_scope", "error_description": "unknown scope requested"})
        granted = tuple(asked) or SCOPES
        now = int(time.time())
        claims = {"sub": client_id, "scope": " ".join(granted), "iat": now, "exp": now + int(self.token_ttl)}
        token = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.{secrets.token_urlsafe(32)}"
        self.tokens[token] = (self.clock() + self.token_ttl, frozenset(granted))
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(self.token_ttl),
            "scope": " ".join(granted),
        }
        return Response(200, body)

    # -- idempotency --------------------------------------------------------------------------------
    def _idempotent(self, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        def wrapped(request: Request) -> Any:
            key = request.headers.get("x-idempotency-key")
            if not key:
                return handler(request)
            if len(key) > MAX_IDEMPOTENCY_KEY:
                raise _error(
                    400, "VALIDATION_ERROR", f"X-Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters"
                )
            try:
                body: Any = json.dumps(json.loads(request.body), sort_keys=True) if request.body else ""
            except ValueError:
                body = request.body.hex()
            fingerprint = hashlib.sha256(f"{request.method} {request.path} {body}".encode()).hexdigest()
            kept = self.idempotency.get(key)
            if kept is not None and self.clock() >= kept.expires:
                del self.idempotency[key]  # remembered 24 h
                kept = None
            if kept is not None:
                if kept.fingerprint != fingerprint:
                    raise _error(
                        409, "DUPLICATE_IDEMPOTENCY_KEY", "this idempotency key was used with a different request"
                    )
                self.replays += 1
                return Response(200, json.loads(json.dumps(kept.body)))
            result = handler(request)
            response = result if isinstance(result, Response) else Response(200, result)
            if 200 <= response.status < 300:
                body = json.loads(json.dumps(response.body))
                self.idempotency[key] = _Kept(fingerprint, body, self.clock() + IDEMPOTENCY_TTL)
            return response

        return wrapped

    # -- listings -----------------------------------------------------------------------------------
    def _paging(self, request: Request) -> tuple[int, int]:
        page, size = _paging(request)
        return page, min(size, self.page_cap)  # silently capped

    def _listing(self, items: Iterable[dict[str, Any]], total: int, page: int, size: int) -> dict[str, Any]:
        listing = _listing(items, total, page, size)
        return {"data": listing["data"]} if self.bare_listings else listing

    # -- groups -------------------------------------------------------------------------------------
    def _list_groups(self, request: Request) -> dict[str, Any]:
        page, size = self._paging(request)
        search = request.query.get("search", "").strip().lower()
        groups = [g for g in self.groups.values() if search in g["groupName"].lower()]
        return self._listing((self._group_json(g) for g in groups), len(groups), page, size)

    def _create_group(self, request: Request) -> Response:
        name = _text(_object(request), "groupName", required=True)
        assert name is not None
        self._unique(name)
        return Response(201, self._group_json(self._new_group(name)))

    def _get_group(self, request: Request) -> dict[str, Any]:
        return self._group_json(self._group(request))

    def _rename_group(self, request: Request) -> dict[str, Any]:
        group = self._group(request)
        name = _text(_object(request), "groupName", required=True)
        assert name is not None
        self._unique(name, but=group["groupId"])
        group.update(groupName=name, updatedAt=_now())
        return self._group_json(group)

    def _delete_group(self, request: Request) -> Response:
        group = self._group(request)
        del self.groups[group["groupId"]]
        del self.memberships[group["groupId"]]
        return Response(204)

    # -- members ------------------------------------------------------------------------------------
    def _list_members(self, request: Request) -> dict[str, Any]:
        group = self._group(request)
        page, size = self._paging(request)
        members = self.memberships[group["groupId"]]
        return self._listing((self._member_json(rid) for rid in members), len(members), page, size)

    def _add_member(self, request: Request) -> Response:
        group = self._group(request)
        rid = _text(_object(request), "recipientId", required=True)
        if rid not in self.recipients:
            raise _error(404, "RECIPIENT_NOT_FOUND", "no recipient with this id in the organization")
        members = self.memberships[group["groupId"]]
        if rid in members:
            return Response(200, self._member_json(rid))  # already a member: no change
        members[rid] = None
        group["updatedAt"] = _now()
        return Response(201, self._member_json(rid))

    def _remove_member(self, request: Request) -> Response:
        group = self._group(request)
        rid = request.params["rid"]
        members = self.memberships[group["groupId"]]
        if rid not in members:
            raise _error(404, "MEMBER_NOT_FOUND", "the recipient is not a member of this group")
        del members[rid]
        group["updatedAt"] = _now()
        return Response(204)

    # -- recipients ---------------------------------------------------------------------------------
    def _list_recipients(self, request: Request) -> dict[str, Any]:
        page, size = self._paging(request)
        keyword = request.query.get("searchKeyword", "").strip().lower()
        if not keyword:  # no copy of the whole directory per page
            return self._listing(self.recipients.values(), len(self.recipients), page, size)
        found = [r for r in self.recipients.values() if keyword in self._haystack(r)]
        return self._listing(found, len(found), page, size)

    def _get_recipient(self, request: Request) -> dict[str, Any]:
        recipient = self.recipients.get(request.params["rid"])
        if recipient is None:
            raise _error(404, "RECIPIENT_NOT_FOUND", "no recipient with this id in the organization")
        return dict(recipient)

    def _create_recipient(self, request: Request) -> Response:
        body = _object(request)
        email = _text(body, "email", required=True)
        assert email is not None
        if not _EMAIL.match(email.strip()):
            raise _error(400, "VALIDATION_ERROR", "email must be a valid email address")
        fields = {name: _text(body, name) or "" for name in TEXT_FIELDS}
        if _key(email) in self._by_email:
            raise _error(409, "RECIPIENT_EXISTS", "a recipient with this email already exists")
        recipient = self._new_recipient(email.strip(), fields["firstName"], fields["lastName"])
        recipient.update(company=fields["company"], department=fields["department"])
        return Response(201, dict(recipient))

    # -- state --------------------------------------------------------------------------------------
    def _take_after_fault(self, request: Request) -> Fault | None:
        return self.take_fault(self.after_faults, request)

    def _new_id(self, prefix: str, taken: dict[str, Any]) -> str:
        while True:
            candidate = f"{prefix}-{secrets.token_hex(4).upper()}"
            if candidate not in taken:
                return candidate

    def _new_recipient(self, email: str, first: str, last: str) -> dict[str, Any]:
        rid = self._new_id("RE", self.recipients)
        recipient = {
            "recipientId": rid,
            "email": email,
            "firstName": first,
            "lastName": last,
            "company": "",
            "department": "",
        }
        self.recipients[rid] = recipient
        self._by_email[_key(email)] = rid
        return recipient

    def _named(self, name: str) -> dict[str, Any] | None:
        key = _name_key(name)
        return next((g for g in self.groups.values() if _name_key(g["groupName"]) == key), None)

    def _unique(self, name: str, *, but: int | None = None) -> None:
        other = self._named(name)
        if other is not None and other["groupId"] != but:
            raise _error(409, "GROUP_EXISTS", "a recipient group with this name already exists in the organization")

    def _new_group(self, name: str) -> dict[str, Any]:
        gid = next(self._group_ids)
        stamp = _now()
        group = {"groupId": gid, "groupName": name, "createdAt": stamp, "updatedAt": stamp}
        self.groups[gid] = group
        self.memberships[gid] = {}
        return group

    def _group(self, request: Request) -> dict[str, Any]:
        gid = _group_key(request.params["gid"])
        group = self.groups.get(gid) if gid is not None else None
        if group is None:
            raise _error(404, "GROUP_NOT_FOUND", "no recipient group with this id in the organization")
        return group

    def _group_json(self, group: dict[str, Any]) -> dict[str, Any]:
        return {**group, "memberCount": len(self.memberships[group["groupId"]])}

    def _member_json(self, rid: str) -> dict[str, Any]:
        r = self.recipients[rid]
        return {"recipientId": rid, "email": r["email"], "firstName": r["firstName"], "lastName": r["lastName"]}

    @staticmethod
    def _haystack(recipient: dict[str, Any]) -> str:
        first, last = recipient["firstName"], recipient["lastName"]
        return f"{first}\n{last}\n{first} {last}\n{recipient['email']}".lower()
