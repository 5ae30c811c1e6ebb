"""A fake CleverReach REST v3 API, faithful to PROVIDERS.md and its "Wire shapes assumed" entry.

Routes live under `/v3/...`, plus `POST /oauth/token.php` on the host root (client credentials, form fields
or HTTP Basic for the client). Every `/v3` route wants a Bearer token (issued by the token endpoint or
registered as a static one); `?token=` is accepted too, as CleverReach does.

Behaviour that matters to syncd (PROVIDERS.md, "What the real services do" included):

- each group holds its own receivers `{id, email, activated, deactivated, registered, bounced,
  global_attributes}`; a receiver is active when `deactivated == 0` and `activated > 0`;
- reads are plain JSON lists, paged from 0, `pagesize` default 50 and silently capped at 5000, `type`
  filters active/inactive; `POST /groups/{id}/get_receivers` is the same read as a POST;
- upsert/upsertplus match receivers by email case-insensitively and answer the resulting receivers. Like the
  real service, **they do what they are told, consent or not**: `deactivated: 0` or a new `activated` on a
  deactivated receiver subscribes it again, and an address on the blacklist or the bounce list is created or
  activated like any other. Every such write is recorded in `violations` (tests assert it stays empty): the
  sandbox does not protect people, it shows when syncd fails to. `activated: 0` switches a receiver off (what
  CleverReach's own integration code sends to remove one); `deactivated > 0` deactivates it. A new receiver
  without `activated` is created active;
- a request with more receivers than `upsert_limit` (1000), or naming an address in `too_large`, answers
  **HTTP 413** (the vendor's integration code shrinks its batch and sends again);
- `GET /blacklist` lists the account blacklist `{email, comment, stamp, isLocked}`; `GET /receivers/bounced`
  (paged) the bounces `{email, category, last_update, bounce_message, ...}`;
- `DELETE /groups/{id}/receivers/{pool_id}` (id or email) and `DELETE /groups/{id}/clear` answer `true`;
- errors are `{"error": {"code", "message"}}`, except the token endpoint's OAuth shape; the body's code is
  what counts (`codes_in_body_only` answers every error as HTTP 400 with the real code in the body only).

Test helpers model the people: `unsubscribe(group, email)` (the person left the group: `deactivated` set),
`blacklist(email)`, `bounce(email)` (also marks their receivers `bounced`).

Knobs for the other answers an independent server could give within the docs: `page_cap` (where `pagesize`
is silently capped; 5000 by default), `token_auth` (`"any"` by default: form fields or HTTP Basic; `"basic"`
or `"form"` accept only that way of authenticating the client), `lean_create` (`POST /groups` answers
`{"id"}` only) and `suppressed_upsert` (`"accept"` by default; `"omit"` leaves blacklisted and bounced
addresses out of an upsert's answer and stores nothing, as some accounts may).
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sandboxes._core import HttpError, Request, Response, SandboxApp

PAGE_CAP = 5000
DEFAULT_PAGE_SIZE = 50
MAX_UPSERT = 1000  # above this an upsert answers 413 (the commonly quoted figure; the real one is unpublished)
TOKEN_PATH = "/oauth/token.php"


def _key(email: str) -> str:
    return email.strip().lower()


def _error(status: int, message: str) -> HttpError:
    return HttpError(status, {"error": {"code": status, "message": message}})


def _int(value: Any, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _error(400, f"Bad Request: {name} must be an integer") from None


@dataclass
class Receiver:
    id: int
    email: str
    activated: int
    deactivated: int
    registered: int
    firstname: str = ""
    lastname: str = ""
    bounced: int = 0

    @property
    def active(self) -> bool:
        return self.deactivated == 0 and self.activated > 0

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "activated": self.activated,
            "deactivated": self.deactivated,
            "registered": self.registered,
            "bounced": self.bounced,
            "active": self.active,
            "global_attributes": {"firstname": self.firstname, "lastname": self.lastname},
        }


@dataclass
class Group:
    id: int
    name: str
    stamp: int
    receivers: dict[str, Receiver] = field(default_factory=dict)  # by email key, in insertion order

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "locked": False,
            "backup": True,
            "receiver_info": "",
            "stamp": self.stamp,
            "last_mailing": 0,
            "last_changed": self.stamp,
        }


def _deactivate(receiver: Receiver, deactivated: int | None, *, plus: bool, now: int) -> None:
    """An upsert's `deactivated`: only upsertplus unsubscribes; `deactivated: 0` subscribes the receiver again."""
    if deactivated is None:
        return
    if deactivated > 0 and plus:
        receiver.deactivated = deactivated
    elif deactivated == 0:
        receiver.deactivated = 0
        receiver.activated = receiver.activated or now


class CleverReachSandbox(SandboxApp):
    name = "cleverreach"

    def __init__(
        self,
        *,
        clients: dict[str, str] | None = None,
        tokens: Iterable[str] = (),
        token_ttl: int = 3600,
        clock: Callable[[], float] = time.time,
        page_cap: int = PAGE_CAP,
        token_auth: str = "any",
        lean_create: bool = False,
        upsert_limit: int = MAX_UPSERT,
        suppressed_upsert: str = "accept",
        codes_in_body_only: bool = False,
    ) -> None:
        super().__init__()
        self.page_cap = page_cap
        self.token_auth = token_auth
        self.lean_create = lean_create
        self.upsert_limit = upsert_limit
        self.suppressed_upsert = suppressed_upsert
        self.codes_in_body_only = codes_in_body_only
        self.too_large: set[str] = set()  # email keys whose receiver alone makes a request too large (413)
        # Writes that subscribed someone against their will: (group id, email, what happened).
        self.violations: list[tuple[int, str, str]] = []
        self.withdrawn: set[tuple[int, str]] = set()  # (group id, email key): the person left that group
        self.clients: dict[str, str] = dict(clients or {})  # OAuth client id -> secret
        self.static_tokens: set[str] = set(tokens)
        self.issued: dict[str, float] = {}  # access token -> expiry (unix time)
        self.token_ttl = token_ttl
        self.clock = clock
        self.groups: dict[int, Group] = {}
        self.blacklisted: dict[str, int] = {}  # email key -> stamp
        self.bounced: dict[str, int] = {}
        self._next_group = 1001
        self._next_receiver = 50001
        # The receivers of the listing being paged through (group, type, generation, size): later pages of one
        # read slice it instead of sorting and filtering the whole group again (a million receivers, 200 pages).
        self._listing: tuple[tuple[int, str, int, int], list[Receiver]] | None = None

        self.add_route("POST", TOKEN_PATH, self._token)
        self.add_route("GET", "/v3/groups", self._list_groups)
        self.add_route("POST", "/v3/groups", self._create_group, mutating=True)
        self.add_route("GET", "/v3/groups/{gid}", self._get_group)
        self.add_route("DELETE", "/v3/groups/{gid}", self._delete_group, mutating=True)
        self.add_route("GET", "/v3/groups/{gid}/receivers", self._read)
        self.add_route("POST", "/v3/groups/{gid}/get_receivers", self._read)  # a read, sent as POST
        self.add_route("POST", "/v3/groups/{gid}/receivers/upsert", self._upsert, mutating=True)
        self.add_route("POST", "/v3/groups/{gid}/receivers/upsertplus", self._upsertplus, mutating=True)
        self.add_route("DELETE", "/v3/groups/{gid}/receivers/{pool_id}", self._delete_receiver, mutating=True)
        self.add_route("DELETE", "/v3/groups/{gid}/clear", self._clear, mutating=True)
        self.add_route("GET", "/v3/receivers/blacklist", self._list_blacklist)
        self.add_route("GET", "/v3/blacklist", self._list_blacklist)
        self.add_route("GET", "/v3/receivers/bounced", self._list_bounced)

    # -- test helpers -------------------------------------------------------------------------------
    def add_client(self, client_id: str, secret: str) -> None:
        with self.lock:
            self.clients[client_id] = secret

    def add_token(self, token: str) -> None:
        """Register a static v3 token (as one copied from the CleverReach UI)."""
        with self.lock:
            self.static_tokens.add(token)

    def revoke_tokens(self) -> None:
        """Invalidate every issued OAuth token before its expiry (static tokens stay valid)."""
        with self.lock:
            self.issued.clear()

    def add_group(self, name: str, emails: Iterable[str] = ()) -> int:
        with self.lock:
            group = self._new_group(name)
            now = self._now()
            for email in emails:
                self._new_receiver(group, email, activated=now, deactivated=0)
            self.generation += 1
            return group.id

    def blacklist(self, email: str) -> None:
        with self.lock:
            self.blacklisted[_key(email)] = self._now()

    def bounce(self, email: str) -> None:
        """Mail to the address bounces: it joins the account's bounce list and its receivers are marked."""
        with self.lock:
            self.bounced[_key(email)] = self._now()
            for group in self.groups.values():
                receiver = group.receivers.get(_key(email))
                if receiver is not None:
                    receiver.bounced = 1

    def unsubscribe(self, group_id: int | str, email: str, *, at: int | None = None) -> None:
        """The person unsubscribed from the group (a link in a mailing): their receiver is deactivated. Only they
        may subscribe again (double opt-in), so any API write that reactivates it is a violation."""
        with self.lock:
            group = self.groups[int(group_id)]
            key = _key(email)
            receiver = group.receivers.get(key)
            stamp = self._now() if at is None else at
            if receiver is None:
                receiver = self._new_receiver(group, email.strip(), activated=stamp, deactivated=stamp)
            receiver.deactivated = stamp
            self.withdrawn.add((group.id, key))
            self.generation += 1

    def receivers(self, group_id: int | str) -> list[dict[str, Any]]:
        """Every receiver of the group, active or not."""
        with self.lock:
            return [r.as_json() for r in self.groups[int(group_id)].receivers.values()]

    def active_emails(self, group_id: int | str) -> set[str]:
        with self.lock:
            return {key for key, r in self.groups[int(group_id)].receivers.items() if r.active}

    @property
    def token_requests(self) -> int:
        return self.count(path=f"^{TOKEN_PATH}$")

    # -- auth ---------------------------------------------------------------------------------------
    def authenticate(self, request: Request) -> Response | None:
        if request.path == TOKEN_PATH:
            return None  # the token endpoint authenticates the client itself
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else request.query.get("token", "")
        if not token:
            return _error(401, "Unauthorized: no access token").response
        expiry = self.issued.get(token)
        if token in self.static_tokens or (expiry is not None and self._now() < expiry):
            return None
        return _error(401, "Unauthorized: invalid or expired access token").response

    def _token(self, request: Request) -> Response:
        form = request.form()
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if self.token_auth == "basic":
            client_id = secret = ""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic ") and self.token_auth != "form":
            try:
                client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                client_id = secret = ""
        if form.get("grant_type") != "client_credentials":
            body = {
                "error": "unsupported_grant_type",
                "error_description": "only client_credentials is supported",
            }
            return Response(400, body)
        if not client_id or not secrets.compare_digest(self.clients.get(client_id, "\0"), secret):
            return Response(401, {"error": "invalid_client", "error_description": "The client credentials are invalid"})
        token = secrets.token_urlsafe(24)
        self.issued[token] = self._now() + self.token_ttl
        return Response(
            200, {"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl, "scope": "oa"}
        )

    # -- groups -------------------------------------------------------------------------------------
    def _list_groups(self, request: Request) -> list[dict[str, Any]]:
        return [g.as_json() for g in self.groups.values()]

    def _create_group(self, request: Request) -> dict[str, Any]:
        body = request.json()
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise _error(400, "Bad Request: name is required")
        group = self._new_group(name)
        return {"id": group.id} if self.lean_create else group.as_json()

    def _get_group(self, request: Request) -> dict[str, Any]:
        return self._group(request).as_json()

    def _delete_group(self, request: Request) -> bool:
        del self.groups[self._group(request).id]
        return True

    # -- receivers ----------------------------------------------------------------------------------
    def _read(self, request: Request) -> list[dict[str, Any]]:
        group = self._group(request)
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and isinstance(body := request.json(), dict):
            params.update(body)
        page = _int(params.get("page"), "page", 0)
        size = min(_int(params.get("pagesize"), "pagesize", DEFAULT_PAGE_SIZE), self.page_cap)
        kind = params.get("type") or "all"
        if page < 0 or size < 1 or kind not in ("all", "active", "inactive"):
            raise _error(400, "Bad Request: invalid page, pagesize or type")
        rows = self._listed(group, kind, first=page == 0)
        if isinstance(id_list := params.get("id_list"), list):
            ids = {_int(i, "id_list", 0) for i in id_list}
            rows = [r for r in rows if r.id in ids]
        if isinstance(email_list := params.get("email_list"), list):
            keys = {_key(str(e)) for e in email_list}
            rows = [r for r in rows if _key(r.email) in keys]
        return [r.as_json() for r in rows[page * size : (page + 1) * size]]

    def _listed(self, group: Group, kind: str, *, first: bool) -> list[Receiver]:
        """The group's receivers of one type, in id order: made again for a listing's first page or after any
        change, else the list the earlier pages came from."""
        version = (group.id, kind, self.generation, len(group.receivers))
        if first or self._listing is None or self._listing[0] != version:
            rows = sorted(group.receivers.values(), key=lambda r: r.id)
            if kind != "all":
                rows = [r for r in rows if r.active == (kind == "active")]
            self._listing = (version, rows)
        return self._listing[1]

    def _upsert(self, request: Request) -> list[dict[str, Any]]:
        return self._write(request, plus=False)

    def _upsertplus(self, request: Request) -> list[dict[str, Any]]:
        return self._write(request, plus=True)

    def _write(self, request: Request, *, plus: bool) -> list[dict[str, Any]]:
        group = self._group(request)
        body = request.json()
        entries = [body] if isinstance(body, dict) else body
        if not isinstance(entries, list):
            raise _error(400, "Bad Request: expected a receiver or a list of receivers")
        for entry in entries:
            email = entry.get("email") if isinstance(entry, dict) else None
            if not isinstance(email, str) or "@" not in email:
                raise _error(400, "Bad Request: every receiver needs a valid email")
        if len(entries) > self.upsert_limit or any(_key(e["email"]) in self.too_large for e in entries):
            raise _error(413, "Request Entity Too Large")
        now = self._now()
        answer: list[dict[str, Any]] = []
        for entry in entries:
            receiver = self._apply(group, entry, plus=plus, now=now)
            if receiver is not None:
                answer.append(receiver.as_json())
        return answer

    def _apply(self, group: Group, entry: dict[str, Any], *, plus: bool, now: int) -> Receiver | None:
        key = _key(entry["email"])
        existing = group.receivers.get(key)
        was_active = existing is not None and existing.active
        suppressed = key in self.blacklisted or key in self.bounced
        if suppressed and self.suppressed_upsert == "omit":
            return None  # this account leaves suppressed addresses out and stores nothing
        deactivated = _int(entry.get("deactivated"), "deactivated", 0) if "deactivated" in entry else None
        activated = _int(entry.get("activated"), "activated", now) if "activated" in entry else None
        receiver = self._activate(group, existing, entry, activated, now)
        _deactivate(receiver, deactivated, plus=plus, now=now)
        if receiver.active and not was_active:
            self._note_resubscription(group, key, receiver)
        if key in self.bounced:
            receiver.bounced = 1
        attributes = entry.get("global_attributes")
        if isinstance(attributes, dict):
            receiver.firstname = str(attributes.get("firstname", receiver.firstname))
            receiver.lastname = str(attributes.get("lastname", receiver.lastname))
        return receiver

    def _activate(
        self, group: Group, existing: Receiver | None, entry: dict[str, Any], activated: int | None, now: int
    ) -> Receiver:
        """The receiver an upsert writes: a new one (active unless told otherwise), or the existing one with its
        new `activated` (which subscribes it again)."""
        if existing is None:
            return self._new_receiver(
                group,
                entry["email"].strip(),
                activated=now if activated is None else activated,  # a new receiver without it is active
                deactivated=0,
            )
        if activated is not None and activated != existing.activated:
            existing.activated = activated
            if activated > 0:
                existing.deactivated = 0  # a new `activated` subscribes the receiver again
        return existing

    def _note_resubscription(self, group: Group, key: str, receiver: Receiver) -> None:
        """A receiver just became active: a violation when the person had unsubscribed, or is suppressed."""
        if (group.id, key) in self.withdrawn:
            self.violations.append((group.id, receiver.email, "resubscribed after the person unsubscribed"))
            self.withdrawn.discard((group.id, key))  # recorded once; a later unsubscribe marks it again
        if key in self.blacklisted or key in self.bounced:
            what = "blacklisted" if key in self.blacklisted else "bounced"
            self.violations.append((group.id, receiver.email, f"subscribed although {what}"))

    def _delete_receiver(self, request: Request) -> bool:
        group = self._group(request)
        ref = request.params["pool_id"]
        if ref.isdigit():  # a pool_id; CleverReach also accepts the receiver's email here
            key = next((k for k, r in group.receivers.items() if str(r.id) == ref), None)
        else:
            key = _key(ref)
        if key is None or key not in group.receivers:
            raise _error(404, "Not Found: invalid receiver")
        del group.receivers[key]
        return True

    def _clear(self, request: Request) -> bool:
        self._group(request).receivers.clear()
        return True

    def _list_blacklist(self, request: Request) -> list[dict[str, Any]]:
        # unpaginated, as CleverReach's own integration code reads it
        return [{"email": e, "comment": "", "stamp": s, "isLocked": False} for e, s in self.blacklisted.items()]

    def _list_bounced(self, request: Request) -> list[dict[str, Any]]:
        # paginated since 2024/11 (changelog)
        page = _int(request.query.get("page"), "page", 0)
        size = min(_int(request.query.get("pagesize"), "pagesize", DEFAULT_PAGE_SIZE), PAGE_CAP)
        rows = [
            {
                "email": e,
                "category": "hardbounce",
                "occurences": 1,
                "last_update": s,
                "expires_by": s + 3 * 365 * 86400,
                "bounce_message": "smtp; 550 No such user",
                "type": "mailing",
                "type_id": "1",
            }
            for e, s in self.bounced.items()
        ]
        return rows[page * size : (page + 1) * size]

    # -- internals ----------------------------------------------------------------------------------
    def not_found(self, request: Request) -> Response:
        return _error(404, f"Not Found: no route {request.method} {request.path}").response

    def decorate(self, request: Request, response: Response) -> None:
        if self.codes_in_body_only and response.status >= 400 and request.path != TOKEN_PATH:
            response.status = 400  # the real code stays in the body's error.code

    def rate_limited(self, retry_after: float) -> Response:
        response = _error(429, "Too Many Requests").response
        response.headers["Retry-After"] = str(max(1, round(retry_after + 0.49)))
        return response

    def _now(self) -> int:
        return int(self.clock())

    def _group(self, request: Request) -> Group:
        gid = request.params["gid"]
        group = self.groups.get(int(gid)) if gid.isdigit() else None
        if group is None:
            raise _error(404, "Not Found: invalid group")
        return group

    def _new_group(self, name: str) -> Group:
        group = Group(self._next_group, name, self._now())
        self._next_group += 1
        self.groups[group.id] = group
        return group

    def _new_receiver(self, group: Group, email: str, *, activated: int, deactivated: int) -> Receiver:
        receiver = Receiver(self._next_receiver, email, activated, deactivated, registered=self._now())
        self._next_receiver += 1
        group.receivers[_key(email)] = receiver
        return receiver
