"""The contract between syncd and a mailing provider.

syncd's engine talks to every provider through the `Connector` protocol below and plans from the
`Capabilities` a connector declares, so nothing outside `connectors/` ever asks which provider it is
talking to. This package imports nothing from `syncd`: connectors are usable (and tested) on their own.

Error tree (what the caller does next decides the class)::

    ConnectorError                      anything a connector raises on purpose
    ├── RetriableError                  try the same request again after `delay`
    │   ├── RateLimited                 429 / quota headers; waiting does not spend the retry budget
    │   └── TransientError              5xx, timeouts, dropped connections
    └── FatalError                      retrying the same request cannot help
        ├── AuthError                   401/403 after a token refresh: credentials are wrong
        ├── NotFound                    the group (or recipient) does not exist
        ├── BatchRejected               the provider refused a whole batch because of some members: isolate them
        ├── BatchTooLarge               the request was too large (HTTP 413): send the batch in smaller parts
        ├── QuotaExhausted              a limit that will not clear soon (a daily quota): stop this API for the pass
        ├── UnsupportedOperation        the API has no endpoint for this (e.g. Bitcaster remove)
        └── ProtocolError               the answer does not have the documented shape

Consent comes first: a person a provider holds as unsubscribed, bounced or blacklisted is never subscribed
again by syncd. Connectors that can see such a state implement `ConsentReader` and refuse (as a `MemberReject`
with the state as its code) any add that would lift it, unless the state is syncd's own removal.
"""

from __future__ import annotations

import contextlib
import enum
import gc
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import FrozenInstanceError, dataclass, field, replace
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

# --------------------------------------------------------------------------------------------- values


@contextlib.contextmanager
def in_bulk(*, freeze: bool = False) -> Iterator[None]:
    """Make many values at once (a million members, from a source or a provider) without the cyclic garbage
    collector running meanwhile: they hold no reference cycles, and each of its collections would walk every
    object made so far again (a third of the time it takes to make them). It runs again afterwards, unless it
    was off already; nested or overlapping uses (the SQL source's worker thread, a connector on the event loop)
    leave it on once the first that found it on has ended. Never around an await: garbage in reference cycles
    (an HTTP answer and its body, say) would wait meanwhile.

    With `freeze`, for a collection built once (a source's members, a group's members), the objects made are
    frozen afterwards (`gc.freeze`: left out of every later collection). A collection that walks two million
    members stops every thread, the event loop included, for 0.1 to 0.4 s; frozen, they are still freed as soon
    as nothing refers to them (they hold no cycles). Everything else the process holds is frozen too, cyclic
    garbage included, so never where HTTP answers come and go page after page (it would pile up); the pass
    unfreezes everything when it ends (`syncd.reconciler`), so that garbage is collected then."""
    was_enabled = gc.isenabled()
    if freeze and was_enabled:
        gc.collect(1)  # the young garbage (an HTTP answer just read, in a cycle) must not be frozen with the rest
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if freeze:
                gc.freeze()
            gc.enable()


def email_key(email: str) -> str:
    """The comparison key of an email: trimmed and case-folded (providers treat emails case-insensitively). An
    email that is its own key is returned as it is, so the two share one string in memory."""
    key = email.strip().lower()
    return email if key == email else key


@dataclass(frozen=True, slots=True)
class PostalAddress:
    """A postal address; only Stannp (printed mail) needs one."""

    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    postcode: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True)
class _ContactFields:
    email: str
    first_name: str | None = None
    last_name: str | None = None
    address: PostalAddress | None = None


class Contact(_ContactFields):
    """A person as syncd wants them in a group. `email` keeps the source's spelling (trimmed).

    `key` (the email's `email_key`) is computed once, when the contact is made: planning compares millions of
    them. It is no dataclass field, so equality, hashing, `asdict` and `replace` see the four fields only."""

    __slots__ = ("key",)
    key: str

    def __init__(
        self,
        email: str,
        first_name: str | None = None,
        last_name: str | None = None,
        address: PostalAddress | None = None,
    ) -> None:
        # The slots' own setters: a frozen dataclass's __setattr__ refuses, and object.__setattr__ is slower.
        _set_email(self, email)
        _set_first_name(self, first_name)
        _set_last_name(self, last_name)
        _set_address(self, address)
        _set_contact_key(self, email_key(email))

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __getstate__(self) -> tuple[str, str | None, str | None, PostalAddress | None]:
        return (self.email, self.first_name, self.last_name, self.address)

    def __setstate__(self, state: tuple[str, str | None, str | None, PostalAddress | None]) -> None:
        Contact.__init__(self, *state)


@dataclass(frozen=True, slots=True)
class _RemoteMemberFields:
    email: str | None
    id: str | None = None


class RemoteMember(_RemoteMemberFields):
    """A member as the provider reports it. `id` is the provider's recipient id where it has one.

    `key` is computed once, when the member is made (as `Contact.key`). A member without an email (possible on
    Stannp) can never match a desired member; it still has a stable key (`id:<id>`) so that it can be listed,
    counted and removed."""

    __slots__ = ("key",)
    key: str

    def __init__(self, email: str | None, id: str | None = None) -> None:
        _set_remote_email(self, email)
        _set_remote_id(self, id)
        _set_remote_key(self, email_key(email) if email else f"id:{id}")

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __getstate__(self) -> tuple[str | None, str | None]:
        return (self.email, self.id)

    def __setstate__(self, state: tuple[str | None, str | None]) -> None:
        RemoteMember.__init__(self, *state)


def _setter(cls: type, name: str) -> Callable[[object, object], None]:
    """The setter of a slot (its member descriptor's __set__)."""
    setter: Callable[[object, object], None] = cls.__dict__[name].__set__
    return setter


_set_email = _setter(_ContactFields, "email")
_set_first_name = _setter(_ContactFields, "first_name")
_set_last_name = _setter(_ContactFields, "last_name")
_set_address = _setter(_ContactFields, "address")
_set_contact_key = _setter(Contact, "key")
_set_remote_email = _setter(_RemoteMemberFields, "email")
_set_remote_id = _setter(_RemoteMemberFields, "id")
_set_remote_key = _setter(RemoteMember, "key")


@dataclass(frozen=True, slots=True)
class RemoteGroup:
    id: str
    name: str
    member_count: int | None = None


@dataclass(frozen=True, slots=True)
class MemberReject:
    """A member the provider refused. `permanent` rejects are remembered by syncd and not sent again until
    the member's source data changes; the others are re-checked every pass (when that costs nothing)."""

    email: str
    reason: str
    permanent: bool = True
    code: str = "provider_rejected"  # a short, fixed category: metric label, never PII (a ConsentState's value
    # when the person unsubscribed, bounced or is blacklisted)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one add/remove/reset call achieved: keys of the members it changed or confirmed, and rejects."""

    done: tuple[str, ...] = ()
    rejected: tuple[MemberReject, ...] = ()


class ConsentState(enum.StrEnum):
    """Why a provider must not get a person back: their own choice, or the mail system's verdict. The values are
    the reject codes syncd reports (JSON, ledger, `syncd_members_rejected_total{reason}`)."""

    UNSUBSCRIBED = "unsubscribed"  # the person left the list (CleverReach: the receiver is `deactivated`)
    BOUNCED = "bounced"  # mail to the address bounces
    BLACKLISTED = "blacklisted"  # on the account's blacklist / suppression list


@dataclass(frozen=True, slots=True)
class Suppression:
    """A person the provider holds as unsubscribed, bounced or blacklisted. `reason` never names the person."""

    state: ConsentState
    reason: str
    since: float | None = None  # Unix time the provider gives for it, when it gives one


# ---------------------------------------------------------------------------------------- capabilities


class MemberKeyKind(enum.StrEnum):
    """How the API names a member in add/remove calls."""

    EMAIL = "email"
    ID = "id"


class ResetKind(enum.StrEnum):
    """How (and whether) a group's membership can be replaced wholesale."""

    NONE = "none"
    ATOMIC = "atomic"  # one call replaces every member (Communic8 `reset: true`)
    NON_ATOMIC = "non_atomic"  # empty the group, then add: members are missing in between


@dataclass(frozen=True, slots=True)
class Pacing:
    """Default request pacing for a provider: a token bucket, an optional sliding window, a concurrency cap.

    A request goes when both allow it: the token bucket (`rate` per second sustained, `burst` at once after a
    quiet spell; `rate` 0 = no bucket) and, when `window` is set, the sliding window (`window = (n, seconds)`:
    at most n requests in any `seconds`-long span, each counted from the moment its answer came, the latest
    the server can have counted it). The window is what a server's own sliding-window throttle needs
    (Bitcaster: `(30, 60.0)`): it lets a burst of up to n go at once and then waits until the oldest of them
    leaves the window; on a 429 it says how long the server's window really needs (the oldest recent request
    + `seconds`), where a server's Retry-After may say less.
    """

    rate: float  # requests per second, sustained (0: unlimited)
    burst: int = 1  # requests that may go at once after a quiet spell
    max_concurrency: int = 4
    window: tuple[int, float] | None = None  # (requests, seconds): at most that many in any such span


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider's API can do, as data the planner reads."""

    member_key: MemberKeyKind
    max_add_batch: int  # members per add request, the API's own cap
    max_remove_batch: int
    can_create_group: bool
    can_remove: bool
    reset: ResetKind
    pacing: Pacing
    # A reset must fit in this many members to be one call; 0 = as many as the add batch.
    max_reset_batch: int = 0
    # Member fields the provider cannot do without ("address.line1", "first_name", ...); members lacking
    # one are rejected before planning.
    required_fields: frozenset[str] = field(default_factory=frozenset)
    # Requests an add costs beyond the batches themselves, per new member (Giftronaut: a recipient create).
    extra_requests_per_add: int = 0
    # Members per add/remove request when the config sets no `batch_size` (0: the API's cap). Lower than the cap
    # where the vendor's own code uses less (CleverReach: 250, split further when the server answers 413).
    default_batch: int = 0
    # Whether the members an add would refuse can be known by reading (Communic8: its recipient directory). Not
    # for Bitcaster: its all-or-nothing add/ is the only way to learn that an address has no record, so a dry run
    # cannot know which of its adds would be refused, and says so.
    adds_verifiable: bool = True

    @property
    def reset_batch(self) -> int:
        return self.max_reset_batch or self.max_add_batch

    def with_batch_size(self, batch_size: int | None) -> Capabilities:
        """Apply a configured `batch_size` (else the default batch), never above the API's own caps. Called once
        per connector, by `ProviderSettings.capabilities` when it is built: the batches the planner plans and
        the ones a connector cuts (`connectors.batching.chunks`) are then both these."""
        batch_size = batch_size or self.default_batch
        if not batch_size:
            return self
        return replace(
            self,
            max_add_batch=min(batch_size, self.max_add_batch),
            max_remove_batch=min(batch_size, self.max_remove_batch),
            max_reset_batch=min(batch_size, self.reset_batch),
        )


# -------------------------------------------------------------------------------------------- protocol


class RecipientCache(Protocol):
    """Email-key -> provider recipient id, persisted by syncd so a steady-state pass resolves nothing.

    A pass looks up the keys (`get_many`) or the ids (`keys_by_id`) it needs, never the whole cache of a large
    directory; `all` is for connectors whose caches stay small. Its methods are synchronous (syncd's is its state
    database): connectors call them through `connectors.http.off_loop`, in a worker thread."""

    def get_many(self, keys: Sequence[str]) -> dict[str, str]: ...

    def keys_by_id(self, ids: Collection[str]) -> dict[str, str]:
        """Recipient id -> email key, for those of these ids the cache holds (to map a group's member ids back
        to emails without a directory read)."""
        ...

    def all(self) -> dict[str, str]:
        """Every cached email-key -> id of this provider."""
        ...

    def put_many(self, ids: Mapping[str, str]) -> None: ...

    def replace_all(self, ids: Mapping[str, str]) -> None:
        """Make the cache hold exactly `ids` (a full directory read): entries `ids` lacks are forgotten, and only
        the new and changed ones are written."""
        ...

    def forget(self, keys: Sequence[str]) -> None: ...


class NullRecipientCache:
    """A cache that remembers nothing (used when a connector runs without syncd's state DB)."""

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        return {}

    def keys_by_id(self, ids: Collection[str]) -> dict[str, str]:
        return {}

    def all(self) -> dict[str, str]:
        return {}

    def put_many(self, ids: Mapping[str, str]) -> None:
        return None

    def replace_all(self, ids: Mapping[str, str]) -> None:
        return None

    def forget(self, keys: Sequence[str]) -> None:
        return None


class MemoryRecipientCache:
    """A cache that lives as long as the object (tests, and connectors used without a state DB)."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        return {k: self.ids[k] for k in keys if k in self.ids}

    def keys_by_id(self, ids: Collection[str]) -> dict[str, str]:
        wanted = ids if isinstance(ids, set | frozenset | dict) else set(ids)
        return {rid: key for key, rid in self.ids.items() if rid in wanted}

    def all(self) -> dict[str, str]:
        return dict(self.ids)

    def put_many(self, ids: Mapping[str, str]) -> None:
        self.ids.update(ids)

    def replace_all(self, ids: Mapping[str, str]) -> None:
        self.ids.clear()
        self.ids.update(ids)

    def forget(self, keys: Sequence[str]) -> None:
        for k in keys:
            self.ids.pop(k, None)


@runtime_checkable
class Connector(Protocol):
    """One configured provider account. All methods are async and go through `connectors.http`.

    `add_members`, `remove_members` and `reset_members` take at most one batch (the capability limits; given
    more, a connector cuts it by the same limits); they may send several requests to isolate bad members
    (`connectors.batching`), and report those as rejects instead of failing the batch. They are idempotent:
    adding a member already present or removing one already absent is a success.
    """

    name: str
    capabilities: Capabilities

    async def find_group(self, *, group_id: str | None = None, name: str | None = None) -> RemoteGroup | None:
        """The group with this id, else the one with exactly this name; None if there is none."""
        ...

    async def create_group(self, name: str) -> RemoteGroup: ...

    async def read_members(self, group: RemoteGroup) -> Sequence[RemoteMember]: ...

    async def add_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult: ...

    async def remove_members(self, group: RemoteGroup, members: Sequence[RemoteMember]) -> BatchResult: ...

    async def reset_members(self, group: RemoteGroup, contacts: Sequence[Contact]) -> BatchResult:
        """Replace the group's membership with exactly `contacts` (ResetKind ATOMIC or NON_ATOMIC)."""
        ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Closing:
    """Makes a connector an async context manager: `async with build(...) as connector:` closes its HTTP client
    however the block ends. A connector class lists it first among its bases and defines `aclose`."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@runtime_checkable
class AddPreparer(Protocol):
    """Optional: a connector that resolves recipients in bulk before a pass's adds (Giftronaut, Stannp).

    The applier calls `prepare_adds` once with every contact the pass will add to one group, before the add
    ops; a connector uses it to choose the cheapest resolution (cache, a directory read, one look-up per
    email) and may say in which order they are cheapest to batch. `add_members` must still work when it was
    not called.
    """

    async def prepare_adds(self, contacts: Sequence[Contact]) -> Sequence[Contact] | None:
        """Returns the order in which the contacts are cheapest to add (batched in that order), or None."""
        ...


@runtime_checkable
class ConsentReader(Protocol):
    """Optional: a connector that can see who the provider holds as unsubscribed, bounced or blacklisted.

    The engine calls `suppressed` with the desired members that are not in the group now, before planning (a
    dry run too: it only reads). `undo` maps email keys to the Unix time at which syncd itself removed that
    person from this group (its ledger knows): a suppression that is exactly that removal may be undone and is
    not returned; every other one is, and becomes a reject with the state as its code. Whatever the engine
    did, `add_members` never lifts a suppression that is not syncd's own removal (it refuses that member).
    `group` is None when the group does not exist yet (account-wide states still apply)."""

    async def suppressed(
        self, group: RemoteGroup | None, keys: Sequence[str], *, undo: Mapping[str, float]
    ) -> Mapping[str, Suppression]: ...


@runtime_checkable
class AddChecker(Protocol):
    """Optional: a connector that can tell, by reading only, which of these contacts an add would refuse (a
    Communic8 email with no recipient). The engine calls it before planning, in a dry run as in a real run, so
    both report the same rejects; `add_members` must still refuse them when it is called without it."""

    async def check_adds(self, group: RemoteGroup | None, contacts: Sequence[Contact]) -> Sequence[MemberReject]: ...


@runtime_checkable
class GroupCreationProbe(Protocol):
    """Optional: a connector whose API can create groups in some releases only (Bitcaster: 3.1.2 can, older
    releases answer 405). `can_create_groups` finds out once, without writing anything."""

    async def can_create_groups(self) -> bool: ...


# ---------------------------------------------------------------------------------------------- errors


class ConnectorError(Exception):
    """Base of every error a connector raises on purpose. Messages never contain secrets."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class RetriableError(ConnectorError):
    def __init__(self, message: str, *, status: int | None = None, delay: float | None = None) -> None:
        super().__init__(message, status=status)
        self.delay = delay  # seconds the server asked us to wait (Retry-After), if it said


class RateLimited(RetriableError):
    pass


class TransientError(RetriableError):
    pass


class FatalError(ConnectorError):
    pass


class AuthError(FatalError):
    pass


class NotFound(FatalError):
    pass


class BatchRejected(FatalError):
    """The provider refused the whole batch because of (some of) its members."""


class BatchTooLarge(FatalError):
    """The server found the request too large (HTTP 413): the same members go again in smaller batches."""


class QuotaExhausted(FatalError):
    """A limit that will not clear within the pass (HubSpot's daily quota): no retry, no more requests to that
    API this pass; what depends on it fails closed, naming the limit."""


class UnsupportedOperation(FatalError):
    pass


class ProtocolError(FatalError):
    pass
