"""A fake Communic8 instance (`/int/v1`), faithful to PROVIDERS.md and the API excerpt, quirks included.

* Errors are HTTP 200 `{"success": false, "message": ...}`, except: a missing/wrong bearer token is
  HTTP 401 "Unauthorized", an unknown group on `GET /recipientGroup/:id` is HTTP 404 "Not Found" (plain
  text), and so is any unknown route (there is no recipient-create endpoint: `POST /recipient` is 404).
* Member calls are all-or-nothing about unknown recipients: one unknown email or id answers "Not all emails
  founded as recipient in system" and changes nothing. `recipientIds` and `recipientEmails` are mutually
  exclusive; emails match case-insensitively. `reset: true` replaces the group's members.
* An accepted member call can still refuse single recipients (the vendor docs: `data.successCount`,
  `data.errorCount`, `data.errorLog`): recipients marked with `refuse(email, message)` are left out of an
  add / remove / reset while the rest of the call is applied (over HTTP: `POST /_sandbox/refusals
  {"email", "message"}`, `DELETE /_sandbox/refusals`); each counts in `errorCount` and gets an
  `errorLog` entry. The entry's shape is undocumented ("Object[]"), so the `error_log` knob picks one:
  `"email"` (default, `{"email", "message"}`), `"id"` (`{"recipientId", "error"}`), `"text"` (a plain string
  `"<email>: <message>"`) or `"anonymous"` (`{"message"}` only: the entry does not say whom it is about).
* Recipients carry `active` (default true) and `suppressed` (default false), as `GET /recipient` shows
  them (`add_recipient(..., active=, suppressed=)`, `set_flags(email, ...)`). The flags change nothing
  else here: what the real service does with a suppressed recipient in a group call is undocumented.
* Listings page with `limit` (default 20, capped at 100) and `skip` and answer `total`; the group listing's
  `name` filter matches partially and ignores case.

Assumptions where the docs are silent (the "Wire shapes assumed" of PROVIDERS.md, plus): `leads` of a new
group must name existing recipients; a malformed id is treated like an unknown one; deleting a recipient
(a test helper: the API has no such call either) removes it from every group.

Knobs for the other answers an independent server could give within the docs (all off by default):
`page_cap` (the most a listing page holds; 100 by default), `omit_total` (listings without `total`),
`int_ids` (numeric ids, sent as JSON numbers) and `lean_groups` (group listings and the create answer carry
no `leads`; `GET /recipientGroup/:id` still does), `unknown_message` (the words of the all-or-nothing
refusal, the documented "Not all emails founded as recipient in system" by default), `error_log` (above).

Every request is recorded (`requests`, `count`), refused ones included.

Credentials: Communic8 access keys have an id and a value. The value works as a static Bearer token; the
pair works as OAuth client credentials (`client_id` = id, `client_secret` = value) at `POST /oauth/token`,
presented as the vendor's authentication page documents: `Authorization: Bearer base64(id:value)` and a JSON
body `{"grant_type": "client_credentials"}` (`token_auth="form"` takes form fields instead, `"any"` both).
"""

from __future__ import annotations

import base64
import itertools
import os
import secrets
import time
from datetime import UTC, datetime
from typing import Any, Literal

from sandboxes._core import Request, Response, SandboxApp

ErrorLogStyle = Literal["email", "id", "text", "anonymous"]

ROOT = "/int/v1"
DEFAULT_KEYS = {"c8-sandbox-key-id": "c8-sandbox-access-key"}
NO_OBJECT = "Object does not exist"
UNKNOWN_RECIPIENTS = "Not all emails founded as recipient in system"
REFUSED = "Recipient is unsubscribed"  # the default message of a refused recipient (the real words are unknown)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _page(request: Request, cap: int = 100) -> tuple[int, int]:
    """limit (default 20, at most `cap`) and skip of a listing; garbage reads as the default."""
    query = request.query
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 20
    try:
        skip = max(0, int(query.get("skip", "0")))
    except ValueError:
        skip = 0
    return (min(limit, cap) if limit > 0 else min(20, cap)), skip


def _fail(message: str) -> dict[str, Any]:
    return {"success": False, "message": message}


class Communic8Sandbox(SandboxApp):
    name = "communic8"

    def __init__(
        self,
        *,
        keys: dict[str, str] | None = None,
        token_ttl: float = 3600.0,
        page_cap: int = 100,
        omit_total: bool = False,
        int_ids: bool = False,
        lean_groups: bool = False,
        unknown_message: str = UNKNOWN_RECIPIENTS,
        error_log: ErrorLogStyle = "email",
        token_auth: str = "docs",
    ) -> None:
        super().__init__()
        # How the token endpoint takes the client: "docs" as the authentication page documents it (Authorization:
        # Bearer base64(id:secret), JSON body), "form" (client_id/client_secret form fields only), or "any".
        self.token_auth = token_auth
        self.unknown_message = unknown_message
        self.error_log: ErrorLogStyle = error_log
        self.refusals: dict[str, str] = {}  # lower-cased email -> message: refused inside accepted member calls
        self.page_cap = page_cap
        self.omit_total = omit_total
        self.int_ids = int_ids
        self.lean_groups = lean_groups
        self.keys: dict[str, str] = dict(DEFAULT_KEYS if keys is None else keys)  # access key id -> value
        self.token_ttl = token_ttl
        self.tokens: dict[str, float] = {}  # OAuth access token -> monotonic expiry
        self.recipients: dict[str, dict[str, Any]] = {}  # _id -> recipient object
        self.groups: dict[str, dict[str, Any]] = {}  # _id -> group object (insertion order = listing order)
        self._by_email: dict[str, str] = {}  # lower-cased email -> recipient _id (email is the unique key)
        # The directory as a list while it is unchanged, so that each page of a listing costs its own length
        # (`itertools.islice` over the dict would walk every skipped recipient: 10,000 pages of a million).
        self._listing: tuple[tuple[int, int], list[dict[str, Any]]] | None = None
        # group id -> (its leads list, the set of it), so that an add does not rebuild a million-member set
        self._lead_sets: dict[str, tuple[list[str], set[str]]] = {}
        # Mongo ObjectId-like: 4 bytes of time, 5 random bytes, a 3-byte counter.
        self._machine = os.urandom(5).hex()
        self._counter = itertools.count(int.from_bytes(os.urandom(2), "big"))
        self.owner_id = self._new_id()
        for method, path, handler, mutating in (
            ("POST", "/oauth/token", self._token, False),  # no data changes: a dry run may fetch a token
            ("GET", "/recipientGroup", self._list_groups, False),
            ("POST", "/recipientGroup", self._create_group, True),
            ("GET", "/recipientGroup/{id}", self._get_group, False),
            ("DELETE", "/recipientGroup/{id}", self._delete_group, True),
            ("POST", "/recipientGroup/{id}/recipients", self._add_members, True),
            ("DELETE", "/recipientGroup/{id}/recipients", self._remove_members, True),
            ("GET", "/recipient", self._list_recipients, False),
        ):
            self.add_route(method, ROOT + path, handler, mutating=mutating)

    # -- test helpers (plain methods, not HTTP) -------------------------------------------------------
    def add_recipient(
        self, email: str, first: str = "", last: str = "", *, active: bool = True, suppressed: bool = False
    ) -> str:
        """Create a recipient (or return the id of the one with this email, matched case-insensitively)."""
        with self.lock:
            existing = self._recipient_id(email)
            if existing is not None:
                return existing
            rid = self._new_id()
            self.recipients[rid] = {
                "_id": rid,
                "email": email.strip(),
                "firstName": first,
                "lastName": last,
                "active": active,
                "suppressed": suppressed,
            }
            self._by_email[email.strip().lower()] = rid
            self.generation += 1
            return rid

    def set_flags(self, email: str, *, active: bool | None = None, suppressed: bool | None = None) -> None:
        """Change a recipient's `active` / `suppressed` flags, as an admin (or a bounce) would."""
        with self.lock:
            rid = self._recipient_id(email)
            if rid is None:
                raise KeyError(email)
            for name, value in (("active", active), ("suppressed", suppressed)):
                if value is not None:
                    self.recipients[rid][name] = value

    def refuse(self, email: str, message: str = REFUSED) -> None:
        """From now on, member calls naming this recipient leave it out and report it in `errorLog`."""
        with self.lock:
            self.refusals[email.strip().lower()] = message

    def accept(self, email: str) -> None:
        with self.lock:
            self.refusals.pop(email.strip().lower(), None)

    def delete_recipient(self, email: str) -> None:
        """Delete a recipient account-wide (from every group too), as an admin would in the console."""
        with self.lock:
            rid = self._recipient_id(email)
            if rid is None:
                return
            del self.recipients[rid]
            del self._by_email[email.strip().lower()]
            self.generation += 1
            for group in self.groups.values():
                if rid in group["leads"]:
                    self._set_leads(group, [lead for lead in group["leads"] if lead != rid])

    def add_group(self, name: str, emails: list[str] | tuple[str, ...] = ()) -> str:
        """Create a group with these members (recipients are created for unknown emails)."""
        with self.lock:
            leads = list(dict.fromkeys(self.add_recipient(e) for e in emails))
            return str(self._new_group(name, leads)["_id"])

    def group_emails(self, group_id: str) -> set[str]:
        with self.lock:
            leads = self.groups[group_id]["leads"]
            return {self.recipients[rid]["email"] for rid in leads if rid in self.recipients}

    def revoke_tokens(self) -> None:
        """Invalidate every OAuth access token issued so far (static access keys keep working)."""
        with self.lock:
            self.tokens.clear()

    # -- SandboxApp hooks ---------------------------------------------------------------------------
    def authenticate(self, request: Request) -> Response | None:
        if request.path == ROOT + "/oauth/token":
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            if token in self.keys.values():
                return None
            expiry = self.tokens.get(token)
            if expiry is not None and time.monotonic() < expiry:
                return None
        return Response(401, "Unauthorized")  # Express-style plain text

    def not_found(self, request: Request) -> Response:
        return Response(404, "Not Found")

    def decorate(self, request: Request, response: Response) -> None:
        if not isinstance(response.body, dict):
            return
        if self.omit_total:
            response.body.pop("total", None)
        if self.int_ids:
            response.body = _numeric_ids(response.body)

    def _group_out(self, group: dict[str, Any], *, lean: bool = False) -> dict[str, Any]:
        out = dict(group)
        if lean and self.lean_groups:
            del out["leads"]
        return out

    def _control(self, request: Request) -> Response:
        # For a sandbox served over HTTP (`syncd sandbox`): POST {"email", "message"?} refuses a recipient,
        # DELETE forgets every refusal.
        if request.path == "/_sandbox/refusals" and request.method == "POST":
            body = request.json()
            if not isinstance(body, dict) or not isinstance(body.get("email"), str):
                return Response(400, {"error": "expected {email, message}"})
            self.refuse(body["email"], str(body.get("message") or REFUSED))
            return Response(201, {"ok": True})
        if request.path == "/_sandbox/refusals" and request.method == "DELETE":
            with self.lock:
                self.refusals.clear()
            return Response(204)
        return super()._control(request)

    def rate_limited(self, retry_after: float) -> Response:
        # express-rate-limit's default answer
        seconds = max(1, round(retry_after + 0.49))
        return Response(429, "Too many requests, please try again later.", {"Retry-After": str(seconds)})

    # -- routes -------------------------------------------------------------------------------------
    def _token(self, request: Request) -> Response:
        body = request.json() if "json" in request.headers.get("content-type", "") else None
        fields = body if isinstance(body, dict) else request.form()
        grant = fields.get("grant_type", "client_credentials")
        if grant != "client_credentials":
            return Response(400, {"error": "unsupported_grant_type"})
        client_id = secret = ""
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if self.token_auth in ("docs", "any") and scheme.lower() == "bearer" and encoded:
            try:
                client_id, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
            except ValueError:
                client_id = secret = ""
        if not client_id and self.token_auth in ("form", "any") and body is None:
            client_id, secret = str(fields.get("client_id", "")), str(fields.get("client_secret", ""))
        if not client_id or self.keys.get(client_id) != secret or not secret:
            return Response(401, {"error": "invalid_client", "error_description": "Client authentication failed"})
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.token_ttl
        return Response(200, {"access_token": token, "token_type": "Bearer", "expires_in": int(self.token_ttl)})

    def _list_groups(self, request: Request) -> dict[str, Any]:
        limit, skip = _page(request, self.page_cap)
        groups = list(self.groups.values())
        name = request.query.get("name")
        if name:
            groups = [g for g in groups if name.lower() in g["name"].lower()]
        if request.query.get("own", "").lower() == "true":
            groups = [g for g in groups if g["ownerId"] == self.owner_id]
        page = [self._group_out(g, lean=True) for g in groups[skip : skip + limit]]
        return {"success": True, "data": page, "total": len(groups)}

    def _create_group(self, request: Request) -> dict[str, Any]:
        body = request.json()
        body = body if isinstance(body, dict) else {}
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return _fail("pb_c_list validation failed: name: Path `name` is required.")
        leads = body.get("leads") or []
        if not isinstance(leads, list) or any(lead not in self.recipients for lead in leads):
            return _fail(self.unknown_message)
        return {"success": True, "data": self._group_out(self._new_group(name, list(dict.fromkeys(leads))), lean=True)}

    def _get_group(self, request: Request) -> Response | dict[str, Any]:
        group = self.groups.get(request.params["id"])
        if group is None:
            return Response(404, "Not Found")
        return {"success": True, "data": dict(group)}

    def _delete_group(self, request: Request) -> dict[str, Any]:
        group = self.groups.pop(request.params["id"], None)
        if group is None:
            return _fail(NO_OBJECT)
        return {"success": True, "data": group}

    def _add_members(self, request: Request) -> dict[str, Any]:
        return self._members(request, add=True)

    def _remove_members(self, request: Request) -> dict[str, Any]:
        return self._members(request, add=False)

    def _members(self, request: Request, *, add: bool) -> dict[str, Any]:
        group = self.groups.get(request.params["id"])
        if group is None:
            return _fail(NO_OBJECT)
        body = request.json()
        body = body if isinstance(body, dict) else {}
        named = self._named(body)
        if isinstance(named, dict):
            return named  # the failure answer
        refused = [rid for rid in named if self.recipients[rid]["email"].lower() in self.refusals]
        wanted = [rid for rid in named if rid not in refused] if refused else named
        changed = self._change_leads(group, wanted, add=add, reset=add and body.get("reset") is True)
        errors = [self._log_entry(rid) for rid in refused]
        return {"success": True, "data": {"successCount": changed, "errorCount": len(errors), "errorLog": errors}}

    def _named(self, body: dict[str, Any]) -> list[str] | dict[str, Any]:
        """The recipient ids a member change names (each once, in order), or the failure answer."""
        ids, emails = body.get("recipientIds"), body.get("recipientEmails")
        if ids is not None and emails is not None:
            return _fail("recipientIds and recipientEmails are mutually exclusive")
        given = ids if ids is not None else emails
        if not isinstance(given, list) or not all(isinstance(v, str) for v in given):
            return _fail("recipientIds or recipientEmails (a string array) is required")
        resolved = self._resolve(given, by_id=ids is not None)
        if any(rid is None for rid in resolved):
            return _fail(self.unknown_message)  # all or nothing: one unknown recipient changes nothing
        return [rid for rid in dict.fromkeys(resolved) if rid is not None]

    def _resolve(self, given: list[str], *, by_id: bool) -> list[str | None]:
        """The recipient id of each id or email given; None for one the directory does not know."""
        if by_id:
            return [v if v in self.recipients else None for v in given]
        return [self._recipient_id(e) for e in given]

    def _change_leads(self, group: dict[str, Any], wanted: list[str], *, add: bool, reset: bool) -> int:
        """Adds `wanted` to the group's leads, replaces them (`reset`), or removes them; how many changed. Costs
        the size of the change, not of the group (an add to a million-member group appends in place)."""
        leads: list[str] = group["leads"]
        if reset:
            self._set_leads(group, wanted)
            return len(wanted)
        present = self._lead_set(group)
        if add:
            new = [rid for rid in wanted if rid not in present]
            if new:
                leads.extend(new)
                present.update(new)
                self._touch(group)
            return len(new)
        gone = present.intersection(wanted)
        if gone:
            self._set_leads(group, [lead for lead in leads if lead not in gone])
        return len(gone)

    def _lead_set(self, group: dict[str, Any]) -> set[str]:
        """The set of the group's leads, kept with the list it was made of while that list is unchanged."""
        leads: list[str] = group["leads"]
        known = self._lead_sets.get(group["_id"])
        if known is None or known[0] is not leads or len(known[1]) != len(leads):
            known = (leads, set(leads))
            self._lead_sets[group["_id"]] = known
        return known[1]

    def _log_entry(self, rid: str) -> Any:
        email = self.recipients[rid]["email"]
        message = self.refusals[email.lower()]
        if self.error_log == "id":
            return {"recipientId": rid, "error": message}
        if self.error_log == "text":
            return f"{email}: {message}"
        if self.error_log == "anonymous":
            return {"message": message}
        return {"email": email, "message": message}

    def _list_recipients(self, request: Request) -> dict[str, Any]:
        limit, skip = _page(request, self.page_cap)
        version = (self.generation, len(self.recipients))
        if skip == 0 or self._listing is None or self._listing[0] != version:
            self._listing = (version, list(self.recipients.values()))  # a listing's first page, or a change
        page = self._listing[1][skip : skip + limit]
        return {"success": True, "data": [dict(r) for r in page], "total": len(self.recipients)}

    # -- state --------------------------------------------------------------------------------------
    def _new_id(self) -> str:
        if self.int_ids:
            return str(next(self._counter) + 1)
        return f"{int(time.time()):08x}{self._machine}{next(self._counter) % 0x1000000:06x}"

    def _recipient_id(self, email: str) -> str | None:
        return self._by_email.get(email.strip().lower())

    def _new_group(self, name: str, leads: list[str]) -> dict[str, Any]:
        gid, stamp = self._new_id(), _now()
        group = {
            "_id": gid,
            "name": name,
            "exclusive": True,
            "leads": leads,
            "leadsTotal": len(leads),
            "ownerId": self.owner_id,
            "mDate": stamp,
            "aDate": stamp,
            "__v": 0,
        }
        self.groups[gid] = group
        return group

    def _set_leads(self, group: dict[str, Any], leads: list[str]) -> None:
        if leads != group["leads"]:
            group["leads"] = leads
            self._touch(group)

    @staticmethod
    def _touch(group: dict[str, Any]) -> None:
        """The group's leads changed (in place or replaced): its count, modification date and version follow."""
        group.update(leadsTotal=len(group["leads"]), mDate=_now(), __v=group["__v"] + 1)


def _numeric_ids(value: Any) -> Any:
    """An answer with its ids as JSON numbers (`_id`, `ownerId`, `leads`), as a server with integer ids sends."""
    if isinstance(value, list):
        return [_numeric_ids(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in ("_id", "ownerId") and isinstance(item, str) and item.isdigit():
            out[key] = int(item)
        elif key == "leads" and isinstance(item, list):
            out[key] = [int(v) if isinstance(v, str) and v.isdigit() else v for v in item]
        else:
            out[key] = _numeric_ids(item)
    return out
