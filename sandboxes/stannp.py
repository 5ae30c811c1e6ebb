"""A fake Stannp API (`/v1`), faithful to the groups excerpt (seeds/stannp-groups.txt), PROVIDERS.md (its
"What the real services do" section first) and its "Wire shapes assumed" entry.

* Region (`region`): "eu" (the default) is the UK API: `POST /recipients/create` (firstname, lastname,
  address1, city, postcode and country required, else 400 naming them) and `POST /groups/create`. "us" is the
  US API: `POST /recipients/new` (the reference marks nothing required; the sandbox asks for address1, postcode
  or zipcode, and country) and `POST /groups/new`. The other region's create paths answer 404.
  `legacy_paths=True` also serves `recipients/new` and `groups/new` on "eu", as older UK pages documented them
  (off by default: nothing confirms the UK API still serves them, and a stricter sandbox is the safer one).
  Bodies are read as JSON or as form fields, whichever the Content-Type says, on both.
* `country` must be an ISO 3166-1 alpha-2 code (as the docs describe it; that the API refuses anything else
  is assumed): else 400 "country must be an ISO 3166-1 alpha-2 code (GB, US, FR...)".
* `on_duplicate`: `duplicate` (the default) creates a second recipient; `ignore` answers the existing
  recipient's id unchanged and joins it to `group_id` (`ignore_joins_group=False` models a server that does
  not); `replace` overwrites the existing recipient with the fields given and joins it; any other value,
  `update` included, is the default (a second recipient): `ignore` is the only value every source lists, so
  anything else is punished rather than guessed. What a duplicate is follows `test_level`: `email` (case-
  insensitive), `ref_id`, `fullname` (first and last name, address1, postcode; the default, as the third-party
  copy of the US page says: `default_test_level` changes it) or `initial` (as fullname, first initial only).
* Idempotency (`X-Idempotency-Key`, POST only): an identical request (method, path and body) with a key seen
  in the last 24 h (`key_ttl`, on the sandbox clock) is answered **HTTP 409 with the first answer's body** and
  changes nothing (`replays` counts them). A key shorter than 10 or longer than 1024 characters → 400. Only
  successful answers are remembered: a request that failed is performed again when resent. The same key on a
  request that is not identical is performed as a new request, as the docs' "only identical requests will be
  treated as idempotent" reads, and the key keeps its first answer (`key_reuses` counts them); the docs do
  not say what the real API answers then. The old `Idempotency-Key` header means nothing, as to the real API;
  a key on a GET neither. `idempotency=False` models an endpoint that ignores the key altogether (the docs'
  examples are all `letters/create`).
* Auth: HTTP Basic with the API key as username (any password), or `Authorization: Bearer KEY`. Anything else
  answers 401 `{"success": false, "error": "You need an API key or token to access this service"}`.
* Every answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds until
  the window resets) of a fixed window: the plan limit, default 300 per 60 s, configurable. Over it: 429
  `{"success": false, "error": ...}` with those headers (and no Retry-After: the docs do not promise one).
  Every request counts, including one whose answer a `Fault(lost=True)` drops after serving it.
* Errors are `{"success": false, "error": ...}`. An unknown group id answers 404 (assumed) on every route.
* Groups: `GET /groups/list` (offset, limit; all groups when no limit is given) answers the documented
  objects (every value a string); creating one answers `{"data": "39"}`; `POST /groups/add/:id` and
  `/groups/remove/:id` (POST as the SDKs send it, or DELETE as the newest UK page shows; `remove_methods`
  narrows that, e.g. to a server that answers POST with 405) take `recipients` as comma-separated ids, at most
  1000, and fail as a whole (400) on an unknown id; they answer the number added/removed.
  `POST /groups/purge {id, delete_recipients}` empties a group and `DELETE /groups/delete {id,
  delete_recipients}` deletes it; with `delete_recipients` true both DELETE THE RECIPIENTS account-wide
  (from every group), as documented. `POST /groups/calculate/:id` answers true (counts are always current).
* Recipients: `GET /recipients/list` (group_id optional, offset, limit default 100, silently capped at 1000)
  answers `{id, email, firstname, lastname, company, address1, address2, city, postcode, country, ref_id}`;
  a create answers `{"success": true, "data": {"id": "…", "valid": true}}`.
* Ids are numeric strings; `int_ids=True` answers them as numbers instead, so a client can be checked for
  tolerance. `page_cap` caps both listings' pages lower than assumed (1000), silently, as a server whose real
  cap differs would; `schemes` limits how the key is accepted (`("bearer",)`: as the excerpt's examples send
  it, only).
"""

from __future__ import annotations

import base64
import itertools
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandboxes._core import HttpError, RateLimit, Request, Response, SandboxApp

ROOT = "/v1"
DEFAULT_KEY = "stannp-sandbox-key"
AUTH_ERROR = "You need an API key or token to access this service"
MAX_IDS = 1000
PAGE_DEFAULT = 100
PAGE_MAX = 1000
TRUE = {"true", "1", "yes", "on"}
REGIONS = ("eu", "us")
KEY_HEADER = "x-idempotency-key"  # the documented header; `Idempotency-Key` is nothing to Stannp
KEY_MIN, KEY_MAX = 10, 1024  # documented key lengths
KEY_TTL = 24 * 3600.0  # keys are remembered 24 hours
KEY_LENGTH_ERROR = "Idempotency keys must be between 10 and 1024 characters in length"
# recipients/create (the UK reference) marks these required.
CREATE_REQUIRED = ("firstname", "lastname", "address1", "city", "postcode", "country")
# recipients/new (the US reference, older UK pages) marks nothing; the sandbox asks for an address it can print.
NEW_REQUIRED = ("address1", "postcode", "country")
ON_DUPLICATE = ("duplicate", "ignore", "replace")  # anything else (`update`, a typo) is the default, duplicate
TEST_LEVELS = ("email", "fullname", "initial", "ref_id")
COUNTRY = re.compile(r"[A-Za-z]{2}")


def _fail(status: int, message: str) -> HttpError:
    return HttpError(status, {"success": False, "error": message})


def _int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise _fail(400, f"{name} must be an integer") from None


@dataclass
class Recipient:
    id: int
    email: str = ""
    firstname: str = ""
    lastname: str = ""
    company: str = ""
    address1: str = ""
    address2: str = ""
    city: str = ""
    postcode: str = ""
    country: str = ""
    ref_id: str = ""

    FIELDS = ("email", "firstname", "lastname", "company", "address1", "address2", "city", "postcode", "country")

    @property
    def valid(self) -> bool:
        return bool(self.address1 and self.postcode and len(self.country) == 2)

    def as_json(self, int_ids: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id if int_ids else str(self.id)}
        out.update({name: getattr(self, name) for name in self.FIELDS})
        out["ref_id"] = self.ref_id
        return out


@dataclass
class Group:
    id: int
    name: str
    created: str
    members: dict[int, None] = field(default_factory=dict)  # an ordered set of recipient ids


@dataclass(frozen=True)
class Answered:
    """The first answer to a POST with an idempotency key, and the request it answered."""

    method: str
    path: str
    body: bytes
    response: Response
    at: float  # sandbox clock


def _recipient_form(request: Request, required: Iterable[str], *, zipcode: bool) -> dict[str, str]:
    """A recipient's form, trimmed and checked: the required fields, an ISO country code. With `zipcode`, a
    `zipcode` stands in for a missing `postcode`."""
    form = {k: v.strip() for k, v in request.form().items()}
    if zipcode and not form.get("postcode") and form.get("zipcode"):
        form["postcode"] = form["zipcode"]
    missing = [name for name in required if not form.get(name)]
    if missing:
        raise _fail(400, f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    if form.get("country") and not COUNTRY.fullmatch(form["country"]):
        raise _fail(400, "country must be an ISO 3166-1 alpha-2 code (GB, US, FR...)")
    return form


class StannpSandbox(SandboxApp):
    name = "stannp"

    def __init__(
        self,
        *,
        keys: Iterable[str] = (DEFAULT_KEY,),
        limit: int | None = 300,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        int_ids: bool = False,
        page_cap: int = PAGE_MAX,
        schemes: Iterable[str] = ("basic", "bearer"),
        region: str = "eu",
        legacy_paths: bool = False,
        remove_methods: Iterable[str] = ("POST", "DELETE"),
        idempotency: bool = True,
        key_ttl: float = KEY_TTL,
        default_test_level: str = "fullname",
        ignore_joins_group: bool = True,
    ) -> None:
        super().__init__()
        if region not in REGIONS:
            raise ValueError(f"region must be one of {', '.join(REGIONS)}")
        if default_test_level not in TEST_LEVELS:
            raise ValueError(f"default_test_level must be one of {', '.join(TEST_LEVELS)}")
        self.region = region
        self.idempotency = idempotency  # False: an endpoint that ignores the key, as an undocumented one may
        self.key_ttl = key_ttl
        self.default_test_level = default_test_level
        self.ignore_joins_group = ignore_joins_group  # False: on_duplicate=ignore leaves group_id unapplied
        self.schemes = {s.lower() for s in schemes}  # how the key may come: a server may take only one way
        self.page_cap = page_cap  # the most a listing page holds (groups and recipients); 1000 as assumed
        self.keys = set(keys)
        self.clock = clock
        self.plan = RateLimit(limit, window, sliding=False, clock=clock) if limit else None
        self.int_ids = int_ids
        self.recipients: dict[int, Recipient] = {}
        self.groups: dict[int, Group] = {}
        self.recipients_deleted = 0  # recipients deleted account-wide through the API (delete_recipients)
        self.replays = 0  # POSTs answered 409 with the first answer to their X-Idempotency-Key
        self.key_reuses = 0  # POSTs whose key was known but whose request was not identical: served anew
        self.timeline: list[tuple[float, str, str, int]] = []  # (sandbox clock, method, path, status)
        self._quota: tuple[int, float] | None = None
        self._answered: dict[str, Answered] = {}
        self._by_email: dict[str, set[int]] = {}  # lower-cased email -> recipient ids, so creates stay O(1)
        self._next_recipient = itertools.count(1943)
        self._next_group = itertools.count(39)
        routes: list[tuple[str, str, Callable[[Request], Any], bool]] = [
            ("GET", "/groups/list", self._list_groups, False),
            ("POST", "/groups/add/{id}", self._add, True),
            *((m.upper(), "/groups/remove/{id}", self._remove, True) for m in remove_methods),
            ("POST", "/groups/purge", self._purge, True),
            ("POST", "/groups/calculate/{id}", self._calculate, True),
            ("DELETE", "/groups/delete", self._delete_group, True),
            ("GET", "/recipients/list", self._list_recipients, False),
        ]
        if region == "eu":  # the UK reference
            routes += [
                ("POST", "/groups/create", self._create_group, True),
                ("POST", "/recipients/create", self._create_recipient, True),
            ]
        if region == "us" or legacy_paths:  # the US reference; older UK pages
            routes += [
                ("POST", "/groups/new", self._create_group, True),
                ("POST", "/recipients/new", self._new_recipient, True),
            ]
        for method, path, handler, mutating in routes:
            self.add_route(
                method, ROOT + path, self._idempotent(handler) if method == "POST" else handler, mutating=mutating
            )

    # -- test helpers (plain methods, not HTTP) -----------------------------------------------------
    def add_recipient(
        self,
        email: str | None = None,
        *,
        firstname: str = "Test",
        lastname: str = "Person",
        address1: str = "1 Test Street",
        address2: str = "",
        city: str = "Leeds",
        postcode: str = "LS1 1AA",
        country: str = "GB",
        ref_id: str = "",
        group_ids: Iterable[str | int] = (),
    ) -> str:
        """Create a recipient (always a new one: Stannp allows duplicates) and return its id."""
        with self.lock:
            r = Recipient(
                next(self._next_recipient),
                (email or "").strip(),
                firstname,
                lastname,
                "",
                address1,
                address2,
                city,
                postcode,
                country,
                ref_id,
            )
            self._store(r)
            for gid in group_ids:
                self.groups[int(gid)].members[r.id] = None
            return str(r.id)

    def add_group(self, name: str, emails: Iterable[str] = ()) -> str:
        """Create a group holding these people: the existing recipient with that email, else a new one."""
        with self.lock:
            group = self._new_group(name)
            for email in emails:
                found = self.recipients_with_email(email)
                rid = int(found[0]) if found else int(self.add_recipient(email))
                group.members[rid] = None
            return str(group.id)

    def group_emails(self, group_id: str | int) -> set[str]:
        """The emails of a group's members, as spelled (members without an email are left out)."""
        with self.lock:
            group = self.groups[int(group_id)]
            return {self.recipients[rid].email for rid in group.members if self.recipients[rid].email}

    def group_ids(self, group_id: str | int) -> list[str]:
        with self.lock:
            return [str(rid) for rid in self.groups[int(group_id)].members]

    def recipient_count(self) -> int:
        with self.lock:
            return len(self.recipients)

    def recipients_with_email(self, email: str) -> list[str]:
        """Ids of every recipient with this email (compared case-insensitively), oldest first."""
        with self.lock:
            return [str(rid) for rid in sorted(self._by_email.get(email.strip().lower(), ()))]

    def delete_recipient(self, recipient_id: str | int) -> None:
        """Delete a recipient account-wide, as someone would in the dashboard."""
        with self.lock:
            self._delete_recipients([int(recipient_id)])

    def consume(self, requests: int) -> None:
        """Use up part of the current rate-limit window, as another client of the same account would."""
        with self.lock:
            if self.plan is not None:
                for _ in range(requests):
                    self.plan.hit()

    # -- SandboxApp hooks ---------------------------------------------------------------------------
    def authenticate(self, request: Request) -> Response | None:
        # Every request counts against the plan's window, authorised or not; the headers report it.
        if self.plan is not None:
            allowed, remaining, reset = self.plan.hit()
            self._quota = (remaining, reset)
            if not allowed:
                message = f"Too many requests: the limit is {self.plan.limit} per {self.plan.window:g} seconds"
                return Response(429, {"success": False, "error": message})
        header = request.headers.get("authorization", "")
        if header.partition(" ")[0].lower() in self.schemes and self._key(header) in self.keys:
            return None
        return Response(401, {"success": False, "error": AUTH_ERROR})

    def not_found(self, request: Request) -> Response:
        return Response(404, {"success": False, "error": "Not found"})

    def decorate(self, request: Request, response: Response) -> None:
        if self.plan is not None and self._quota is not None:
            remaining, reset = self._quota
            response.headers["X-RateLimit-Limit"] = str(self.plan.limit)
            response.headers["X-RateLimit-Remaining"] = str(remaining)
            response.headers["X-RateLimit-Reset"] = str(max(1, math.ceil(reset - 1e-9)))
        self._quota = None
        self.timeline.append((self.clock(), request.method, request.path, response.status))

    @staticmethod
    def _key(header: str) -> str | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip() or None
        if scheme.lower() == "basic":
            try:
                user, _, _ = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return user or None
        return None

    def _idempotent(self, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        """`X-Idempotency-Key` on a POST, as the idempotency-keys page says: the same key on an identical request
        (method, path and body) within 24 h is answered HTTP 409 with the first answer's body, and nothing is
        done again. A key of the wrong length is refused (400). Only successful answers are remembered, so a
        request that failed (validation, a vanished group) is performed again when resent. The same key on a
        request that is not identical is served as a new request ("only identical requests will be treated as
        idempotent") and the key keeps its first answer. Any other header (`Idempotency-Key`) means nothing."""

        def wrapped(request: Request) -> Any:
            key = request.headers.get(KEY_HEADER) if self.idempotency else None
            if key is None:
                return handler(request)
            if not KEY_MIN <= len(key) <= KEY_MAX:
                raise _fail(400, KEY_LENGTH_ERROR)
            first = self._answered.get(key)
            if first is not None and self.clock() - first.at >= self.key_ttl:
                del self._answered[key]  # forgotten after 24 h: a new request
                first = None
            if first is not None:
                if (first.method, first.path, first.body) == (request.method, request.path, request.body):
                    self.replays += 1
                    return Response(409, first.response.body)
                self.key_reuses += 1
                return handler(request)
            result = handler(request)  # an HttpError goes past: failures are not remembered
            response = result if isinstance(result, Response) else Response(200, result)
            failed = isinstance(response.body, dict) and response.body.get("success") is False
            if response.status < 300 and not failed:
                self._answered[key] = Answered(request.method, request.path, request.body, response, self.clock())
            return response

        return wrapped

    # -- groups -------------------------------------------------------------------------------------
    def _group_json(self, group: Group) -> dict[str, Any]:
        members = [self.recipients[rid] for rid in group.members]
        return {
            "id": group.id if self.int_ids else str(group.id),
            "account_id": "1",
            "name": group.name,
            "created": group.created,
            "recipients": str(len(members)),
            "valid": str(sum(1 for r in members if r.valid)),
            "international": str(sum(1 for r in members if r.country.upper() not in ("GB", ""))),
            "skipped": "0",
            "status": "ready",
            "import_progress": "0",
            "is_seeds": "0",
        }

    def _group(self, value: str | None) -> Group:
        try:
            group = self.groups.get(int(value or ""))
        except ValueError:
            group = None
        if group is None:
            raise _fail(404, "Group not found")
        return group

    def _list_groups(self, request: Request) -> dict[str, Any]:
        offset = max(0, _int(request.query.get("offset"), "offset", 0))
        groups = list(self.groups.values())
        limit = min(_int(request.query.get("limit"), "limit", len(groups)), self.page_cap)
        page = groups[offset : offset + max(0, limit)]
        return {"success": True, "data": [self._group_json(g) for g in page]}

    def _create_group(self, request: Request) -> dict[str, Any]:
        name = request.form().get("name", "").strip()
        if not name:
            raise _fail(400, "name is required")
        group = self._new_group(name)
        return {"success": True, "data": group.id if self.int_ids else str(group.id)}

    def _recipient_ids(self, request: Request) -> list[int]:
        raw = request.form().get("recipients", "")
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        if not parts:
            raise _fail(400, "recipients is required: comma-separated recipient ids")
        if len(parts) > MAX_IDS:
            raise _fail(400, f"too many recipients: at most {MAX_IDS} ids per request")
        ids: list[int] = []
        for part in parts:
            if not part.isdigit() or int(part) not in self.recipients:
                raise _fail(400, f"recipient {part} does not exist")  # all or nothing
            ids.append(int(part))
        return list(dict.fromkeys(ids))

    def _add(self, request: Request) -> dict[str, Any]:
        group = self._group(request.params["id"])
        ids = self._recipient_ids(request)
        new = [rid for rid in ids if rid not in group.members]
        for rid in new:
            group.members[rid] = None
        return {"success": True, "data": len(new)}

    def _remove(self, request: Request) -> dict[str, Any]:
        group = self._group(request.params["id"])
        gone = [rid for rid in self._recipient_ids(request) if rid in group.members]
        for rid in gone:
            del group.members[rid]
        return {"success": True, "data": len(gone)}

    def _purge(self, request: Request) -> dict[str, Any]:
        form = request.form()
        group = self._group(form.get("id"))
        members = list(group.members)
        group.members.clear()
        if form.get("delete_recipients", "").lower() in TRUE:
            self._delete_recipients(members)
        return {"success": True, "data": True}

    def _calculate(self, request: Request) -> dict[str, Any]:
        self._group(request.params["id"])
        return {"success": True, "data": True}

    def _delete_group(self, request: Request) -> dict[str, Any]:
        form = request.form()
        group = self._group(form.get("id"))
        del self.groups[group.id]
        if form.get("delete_recipients", "").lower() in TRUE:
            self._delete_recipients(list(group.members))
        return {"success": True, "data": True}

    # -- recipients ---------------------------------------------------------------------------------
    def _list_recipients(self, request: Request) -> dict[str, Any]:
        query = request.query
        offset = max(0, _int(query.get("offset"), "offset", 0))
        limit = _int(query.get("limit"), "limit", PAGE_DEFAULT)
        limit = min(limit, self.page_cap) if limit > 0 else min(PAGE_DEFAULT, self.page_cap)
        if query.get("group_id"):
            ids: Iterable[int] = self._group(query["group_id"]).members
        else:
            ids = self.recipients
        page = itertools.islice(ids, offset, offset + limit)
        return {"success": True, "data": [self.recipients[rid].as_json(self.int_ids) for rid in page]}

    def _create_recipient(self, request: Request) -> dict[str, Any]:
        """`POST /recipients/create` (UK): firstname, lastname, address1, city, postcode and country required."""
        return self._recipient(request, CREATE_REQUIRED)

    def _new_recipient(self, request: Request) -> dict[str, Any]:
        """`POST /recipients/new` (US, older UK pages): an address; `zipcode` stands in for `postcode`."""
        return self._recipient(request, NEW_REQUIRED, zipcode=True)

    def _recipient(self, request: Request, required: Iterable[str], *, zipcode: bool = False) -> dict[str, Any]:
        form = _recipient_form(request, required, zipcode=zipcode)
        group = self._group(form["group_id"]) if form.get("group_id") else None
        mode = form.get("on_duplicate", "").lower()
        if mode not in ON_DUPLICATE:
            mode = "duplicate"  # the default, for an undocumented value (`update`) too
        found = self._duplicate_of(form) if mode != "duplicate" else None
        recipient = self._write_recipient(form, found, replace=mode == "replace")
        if group is not None and (found is None or mode == "replace" or self.ignore_joins_group):
            group.members[recipient.id] = None
        rid: int | str = recipient.id if self.int_ids else str(recipient.id)
        return {"success": True, "data": {"id": rid, "valid": recipient.valid}}

    def _write_recipient(self, form: dict[str, str], found: Recipient | None, *, replace: bool) -> Recipient:
        """A new recipient from the form; or the duplicate found, its fields replaced by the form's (`replace`)
        or left as they are."""
        if found is None:
            fields = {name: form.get(name, "") for name in (*Recipient.FIELDS, "ref_id")}
            recipient = Recipient(next(self._next_recipient), **fields)
            self._store(recipient)
            return recipient
        if replace:
            self._unindex(found)
            for name in (*Recipient.FIELDS, "ref_id"):
                if name in form:
                    setattr(found, name, form[name])
            self._store(found)
        return found

    def _duplicate_of(self, form: dict[str, str]) -> Recipient | None:
        """The oldest recipient that `test_level` calls a duplicate: `email`; `ref_id`; `fullname` (first and
        last name, address line 1 and postcode; the default); `initial` (as fullname, first initial only)."""
        level = form.get("test_level", "").lower()
        if level not in TEST_LEVELS:
            level = self.default_test_level

        def norm(value: str) -> str:
            return " ".join(value.split()).lower()

        wanted = {name: norm(form.get(name, "")) for name in ("email", "ref_id", *Recipient.FIELDS)}
        if level == "initial":
            wanted["firstname"] = wanted["firstname"][:1]
        if level == "email":
            ids = self._by_email.get(wanted["email"], ())
            return self.recipients[min(ids)] if ids else None
        for r in self.recipients.values():
            if level == "ref_id":
                if wanted[level] and norm(r.ref_id) == wanted[level]:
                    return r
                continue
            first = norm(r.firstname)[:1] if level == "initial" else norm(r.firstname)
            if first == wanted["firstname"] and all(
                norm(getattr(r, name)) == wanted[name] for name in ("lastname", "address1", "postcode")
            ):
                return r
        return None

    # -- state --------------------------------------------------------------------------------------
    def _store(self, recipient: Recipient) -> None:
        self.recipients[recipient.id] = recipient
        key = recipient.email.strip().lower()
        if key:
            self._by_email.setdefault(key, set()).add(recipient.id)

    def _unindex(self, recipient: Recipient) -> None:
        ids = self._by_email.get(recipient.email.strip().lower())
        if ids is not None:
            ids.discard(recipient.id)

    def _new_group(self, name: str) -> Group:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        group = Group(next(self._next_group), name, stamp)
        self.groups[group.id] = group
        return group

    def _delete_recipients(self, ids: Iterable[int]) -> None:
        for rid in list(ids):
            recipient = self.recipients.pop(rid, None)
            if recipient is None:
                continue
            self._unindex(recipient)
            self.recipients_deleted += 1
            for group in self.groups.values():
                group.members.pop(rid, None)
