"""The diff: pure functions from frozen values to a Plan. No I/O, no clock, no randomness.

`admit` turns a source's raw members into valid, unique ones (rejecting the rest with a reason);
`plan` compares them with a provider group's current members and picks the cheapest sequence of API calls
that makes the group equal, within the removal policy and the removal guard. It does so in named steps, each a
small pure function of frozen values: who is missing from the group and who is undesired in it (`difference`,
each email compared once); which of the missing the provider takes (`_admission`); what becomes of the
undesired: the removal policy, what the API cannot remove, the guard (`_removals`); the cheapest strategy,
incremental or a reset, and its ops (`_cheapest`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, islice
from operator import not_
from typing import Any, TypeVar

from connectors.base import Capabilities, MemberReject, ResetKind, Suppression
from connectors.batching import chunks
from syncd.model import (
    CONSENT_CODES,
    KnownReject,
    Member,
    Op,
    OpKind,
    Plan,
    Reject,
    RejectCode,
    RemoteMember,
    RemovalPolicy,
    Strategy,
    fingerprint,
)

_T = TypeVar("_T")

# ------------------------------------------------------------------------------------------ admission

_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Everything `email_problem` accepts, in one match: a local part of 1 to 64 characters, one '@', two or more
# domain labels, the last not all digits. ASCII classes only, so whitespace and non-ASCII never match. An
# email it does not match goes through the checks one by one, which say what is wrong.
_VALID = re.compile(
    r"(?=[^@]{1,64}@)"
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?![0-9]+\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
_MAX_EMAIL = 254


def email_problem(email: str) -> str | None:
    """Why `email` (already trimmed) is not a deliverable address, or None. Deliberately conservative:
    what it accepts, every provider here accepts. A valid address costs one regular-expression match."""
    if len(email) <= _MAX_EMAIL and _VALID.fullmatch(email) is not None:
        return None
    if not email:
        return "empty email"
    if len(email) > _MAX_EMAIL:
        return "email longer than 254 characters"
    if any(ch.isspace() for ch in email):
        return "email contains whitespace"
    if not email.isascii():
        return "email has non-ASCII characters (internationalised addresses are not supported)"
    if email.count("@") != 1:
        return "not an email address: needs exactly one '@'"
    local, domain = email.split("@")
    if not local or len(local) > 64 or not _LOCAL.match(local):
        return "not an email address: invalid part before '@'"
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        return "not an email address: invalid domain"
    return None


def normalise(member: Member) -> Member:
    """Trim the email (the spelling is otherwise kept: it is what gets written)."""
    email = member.email.strip()
    if email == member.email:
        return member
    return Member(email=email, first_name=member.first_name, last_name=member.last_name, address=member.address)


def admit(members: Iterable[Member]) -> tuple[tuple[Member, ...], tuple[Reject, ...]]:
    """Valid, unique members in source order, and rejects for the rest. A duplicate (same email compared
    case-insensitively) keeps its first occurrence."""
    admitted: list[Member] = []
    rejects: list[Reject] = []
    first: dict[str, str] = {}
    for raw in members:
        member = normalise(raw)
        email, key = member.email, member.key
        problem = email_problem(email)
        if problem:
            rejects.append(Reject(email, problem, RejectCode.INVALID_EMAIL))
            continue
        if key in first:
            rejects.append(Reject(email, f"duplicate of {first[key]} in the same group", RejectCode.DUPLICATE))
            continue
        first[key] = email
        admitted.append(member)
    return tuple(admitted), tuple(rejects)


# ------------------------------------------------------------------------------------------- the guard


@dataclass(frozen=True, slots=True)
class Guard:
    """Holds back removals that look like an accident: too many, too large a share, or everyone."""

    max_removals: int = 500
    max_removal_ratio: float = 0.25
    min_group_for_ratio: int = 20  # the ratio says nothing about tiny groups
    allow_mass_removal: bool = False

    def check(self, removals: int, current: int) -> str | None:
        """Why removing `removals` of `current` members is held back, or None when it may go."""
        if removals <= 0 or self.allow_mass_removal:
            return None
        if removals >= current:
            return f"would remove all {current} members"
        if removals > self.max_removals:
            return f"would remove {removals} members, more than max_removals={self.max_removals}"
        if current >= self.min_group_for_ratio and removals / current > self.max_removal_ratio:
            return (
                f"would remove {removals} of {current} members ({removals / current:.0%}), "
                f"more than max_removal_ratio={self.max_removal_ratio:g}"
            )
        return None


# ------------------------------------------------------------------------------------------ the plan


def missing_fields(member: Member, required: frozenset[str]) -> list[str]:
    """The required fields (`address.city`, `first_name`, ...) the member lacks, sorted."""
    if not required:
        return []
    missing = []
    for name in sorted(required):
        obj: object = member
        for part in name.split("."):
            obj = getattr(obj, part, None) if obj is not None else None
        if obj is None or (isinstance(obj, str) and not obj.strip()):
            missing.append(name)
    return missing


@dataclass(frozen=True, slots=True)
class _Known:
    """What is known, before anything is sent, about the desired members an add would bring in: the pair's
    remembered rejects, the provider's consent states, the fields it requires and what its read-only
    pre-check says it would refuse."""

    provider: str
    capabilities: Capabilities
    known_rejects: Mapping[str, KnownReject]
    suppressed: Mapping[str, Suppression]
    refused: Mapping[str, MemberReject]

    @property
    def nothing(self) -> bool:
        """Nothing is known that could refuse anyone: every add goes (the usual case; no member is checked)."""
        return not (self.known_rejects or self.suppressed or self.refused or self.capabilities.required_fields)

    def refusal(self, member: Member) -> Reject | None:
        """Why a desired member that is not in the group will not be added, or None. Consent comes first: a
        remembered consent reject and a suppression both report the state itself ("unsubscribed") as the reason.
        A reject that carries its member is one to write to the ledger and, when permanent, to remember."""
        return (
            self._remembered(member)
            or self._suppression(member)
            or self._missing(member)
            or self._provider_refusal(member)
        )

    def _remembered(self, member: Member) -> Reject | None:
        known = self.known_rejects.get(member.key)
        if known is None or known.fingerprint != fingerprint(member):
            return None
        if known.code in CONSENT_CODES:
            return Reject(member.email, known.code, known.code, detail=f"{known.reason} (remembered)")
        reason = f"{known.reason} (remembered; retried when the source record changes)"
        return Reject(member.email, reason, RejectCode.REMEMBERED)

    def _suppression(self, member: Member) -> Reject | None:
        suppression = self.suppressed.get(member.key)
        if suppression is None:
            return None
        state = str(suppression.state)
        return Reject(
            member.email, state, state, member=member, permanent=True, detail=f"{state}: {suppression.reason}"
        )

    def _missing(self, member: Member) -> Reject | None:
        missing = missing_fields(member, self.capabilities.required_fields)
        if not missing:
            return None
        reason = f"missing fields {self.provider} requires: {', '.join(missing)}"
        return Reject(member.email, reason, RejectCode.MISSING_FIELDS)

    def _provider_refusal(self, member: Member) -> Reject | None:
        found = self.refused.get(member.key)
        if found is None:
            return None
        code = found.code
        if code in CONSENT_CODES:
            detail = found.reason if found.reason.startswith(code) else f"{code}: {found.reason}"
            return Reject(member.email, code, code, member=member, permanent=found.permanent, detail=detail)
        return Reject(member.email, found.reason, code, member=member, permanent=found.permanent)


@dataclass(frozen=True, slots=True)
class _Admission:
    """The desired members the provider can take (in source order), the ones of them not yet in the group, and
    the ones it cannot take, with why."""

    writable: tuple[Member, ...]
    to_add: tuple[Member, ...]
    rejected: tuple[Reject, ...]


@dataclass(frozen=True, slots=True)
class Difference:
    """Who is where: the desired members not in the group (`absent`, in source order) and the group's members
    the source does not want (`undesired`, in the group's order)."""

    absent: tuple[Member, ...]
    undesired: tuple[RemoteMember, ...]


STEP = 65_536  # keys per set operation: a plan runs in a worker thread, and between two steps the event loop may run


def key_set(keys: Iterable[str]) -> set[str]:
    """A set of many keys, made a step (`STEP`) at a time, so that a worker thread making it lets the event loop
    run in between (a comprehension over a million keys holds the interpreter for 60 ms and more at a time)."""
    keys = keys if isinstance(keys, Sequence) else list(keys)
    out: set[str] = set()
    for start in range(0, len(keys), STEP):
        out.update(keys[start : start + STEP])
    return out


def difference(desired: Sequence[Member], actual: Sequence[RemoteMember]) -> Difference:
    """The two set differences of desired and actual members by key, each key read once: one set of the desired
    keys, the actual keys it lacks picked out by C iterators, then the same set emptied of the actual keys (what
    is left is missing), and the members that differ picked out only when there are some. A million members
    each way cost about 1.2 to 2 times the bare `set(a) - set(b)`, `set(b) - set(a)` of their emails
    (bench/large_group.py), with one set of them in memory at a time."""
    if not actual:
        return Difference(tuple(desired), ())
    if not desired:
        return Difference((), tuple(actual))
    desired_keys = [m.key for m in desired]
    actual_keys = [m.key for m in actual]
    # A step at a time (`STEP`): one C call over a million keys would hold the interpreter (and the event loop
    # waiting for it) for a tenth of a second.
    missing = key_set(desired_keys)
    wanted = len(missing)
    wanted_here: list[bool] = []  # per actual member, whether it is desired: its key is not read again
    for start in range(0, len(actual_keys), STEP):
        wanted_here.extend(map(missing.__contains__, actual_keys[start : start + STEP]))
    for start in range(0, len(actual_keys), STEP):
        missing.difference_update(actual_keys[start : start + STEP])
    if len(missing) == wanted:
        absent: tuple[Member, ...] = tuple(desired)
    else:
        absent = _picked(desired, map(missing.__contains__, desired_keys)) if missing else ()
    extra = len(wanted_here) - wanted_here.count(True)
    undesired = _picked(actual, map(not_, wanted_here)) if extra else ()
    return Difference(absent, undesired)


def _picked(items: Sequence[_T], chosen: Iterator[Any]) -> tuple[_T, ...]:
    """The items `chosen` (one truth value per item, in order) picks, by C iterators a step at a time (walked, not
    sliced: a slice would touch every item once more)."""
    out: list[_T] = []
    each = iter(items)
    for _ in range(0, len(items), STEP):
        out.extend(compress(islice(each, STEP), islice(chosen, STEP)))
    return tuple(out)


def _admission(desired: Sequence[Member], absent: Sequence[Member], known: _Known) -> _Admission:
    """A member already in the group is writable whatever it lacks (it is not ours to reject); any other
    (`absent`) is writable, and to add, unless something known refuses it."""
    if not absent or known.nothing:
        return _Admission(tuple(desired), tuple(absent), ())
    to_add: list[Member] = []
    rejected: list[Reject] = []
    refused: set[int] = set()  # the refused members, by identity (the others keep their place in source order)
    for member in absent:
        reject = known.refusal(member)
        if reject is None:
            to_add.append(member)
        else:
            rejected.append(reject)
            refused.add(id(member))
    writable = tuple(m for m in desired if id(m) not in refused) if refused else tuple(desired)
    return _Admission(writable, tuple(to_add), tuple(rejected))


def _unprotected(undesired: Sequence[RemoteMember], protected: frozenset[str]) -> tuple[tuple[RemoteMember, ...], int]:
    """The undesired members syncd may remove at all, and how many the group's `protected` list keeps."""
    if not protected or not undesired:
        return tuple(undesired), 0
    removable = tuple(r for r in undesired if r.key not in protected)
    return removable, len(undesired) - len(removable)


def _by_policy(
    undesired: Sequence[RemoteMember], policy: RemovalPolicy, owned: frozenset[str]
) -> tuple[RemoteMember, ...]:
    """The undesired members the removal policy lets go: all (mirror), those syncd added (owned), none."""
    if policy is RemovalPolicy.MIRROR:
        return tuple(undesired)
    if policy is RemovalPolicy.OWNED:
        return tuple(r for r in undesired if r.key in owned)
    return ()


@dataclass(frozen=True, slots=True)
class _Removals:
    """Where the undesired members end up: removed, unsupported (the API cannot remove), held back by the guard,
    or kept by the removal policy (a count)."""

    to_remove: tuple[RemoteMember, ...] = ()
    unsupported: tuple[RemoteMember, ...] = ()
    held_back: tuple[RemoteMember, ...] = ()
    kept: int = 0
    guard: str | None = None


def _removals(
    undesired: Sequence[RemoteMember],
    policy: RemovalPolicy,
    owned: frozenset[str],
    capabilities: Capabilities,
    guard: Guard,
    current: int,
) -> _Removals:
    """The removal policy, then what the API cannot do, then the guard (of `current` members)."""
    removable = _by_policy(undesired, policy, owned)
    kept = len(undesired) - len(removable)
    if removable and not capabilities.can_remove:
        return _Removals(unsupported=removable, kept=kept)
    reason = guard.check(len(removable), current)
    if reason:
        return _Removals(held_back=removable, kept=kept, guard=reason)
    return _Removals(to_remove=removable, kept=kept)


@dataclass(frozen=True, slots=True)
class _Change:
    """The change a pair needs, before it is cut into API calls."""

    group: str
    provider: str
    writable: tuple[Member, ...]  # every member the group ends with (a reset writes them all)
    to_add: tuple[Member, ...]
    to_remove: tuple[RemoteMember, ...]
    create: bool  # the group does not exist yet
    exact: bool  # every undesired member goes: a reset (replace-all) reaches the same end state

    @classmethod
    def of(
        cls,
        group: str,
        provider: str,
        admission: _Admission,
        removals: _Removals,
        undesired: int,
        *,
        create: bool,
        whole: bool = True,
    ) -> _Change:
        """`whole` False: the members planned are only a part of the group, so a reset (which would write only
        them) never reaches the same end state."""
        to_remove = removals.to_remove
        exact = whole and not create and bool(to_remove) and len(to_remove) == undesired
        return cls(group, provider, admission.writable, admission.to_add, to_remove, create, exact)


@dataclass(frozen=True, slots=True)
class _Choice:
    """A strategy, its ops and what they cost (write requests)."""

    strategy: Strategy
    ops: tuple[Op, ...]
    cost: int


def _batches(n: int, size: int) -> int:
    return math.ceil(n / size) if n else 0


def _chunks(items: Sequence[_T], size: int) -> list[tuple[_T, ...]]:
    return [tuple(chunk) for chunk in chunks(items, size)]


def _incremental(change: _Change, capabilities: Capabilities) -> _Choice:
    """Create the group if need be, then adds before removes: nobody who should stay is ever missing in between."""
    add_batch, remove_batch = capabilities.max_add_batch, capabilities.max_remove_batch
    g, p = change.group, change.provider
    ops = [Op(OpKind.CREATE_GROUP, g, p)] if change.create else []
    ops += [Op(OpKind.ADD, g, p, contacts=chunk) for chunk in _chunks(change.to_add, add_batch)]
    ops += [Op(OpKind.REMOVE, g, p, members=chunk) for chunk in _chunks(change.to_remove, remove_batch)]
    cost = int(change.create) + _batches(len(change.to_add), add_batch) + _batches(len(change.to_remove), remove_batch)
    return _Choice(Strategy.INCREMENTAL, tuple(ops), cost)


def _atomic_reset(change: _Change, capabilities: Capabilities) -> _Choice | None:
    """One call that replaces the membership, when the API has one and the members fit in it."""
    if capabilities.reset is not ResetKind.ATOMIC or len(change.writable) > capabilities.reset_batch:
        return None
    op = Op(OpKind.RESET, change.group, change.provider, contacts=change.writable)
    return _Choice(Strategy.RESET, (op,), 1)


def _non_atomic_reset(change: _Change, capabilities: Capabilities) -> _Choice | None:
    """Empty the group with the first batch (two requests), then add the rest batch by batch: only where the
    API has such a reset (there is a moment the group is not whole)."""
    if capabilities.reset is not ResetKind.NON_ATOMIC:
        return None
    add_batch = capabilities.max_add_batch
    chunks = _chunks(change.writable, add_batch) or [()]
    ops = [Op(OpKind.RESET, change.group, change.provider, contacts=chunks[0])]
    ops += [Op(OpKind.ADD, change.group, change.provider, contacts=chunk) for chunk in chunks[1:]]
    return _Choice(Strategy.RESET, tuple(ops), 1 + max(1, _batches(len(change.writable), add_batch)))


def _cheapest(change: _Change, capabilities: Capabilities, allow_non_atomic_reset: bool) -> _Choice:
    """Incremental, unless a reset reaches the same end state in fewer requests. A non-atomic reset is a
    candidate only when the provider's settings allow it."""
    incremental = _incremental(change, capabilities)
    if not change.exact:
        return incremental
    reset = _atomic_reset(change, capabilities)
    if reset is None and allow_non_atomic_reset:
        reset = _non_atomic_reset(change, capabilities)
    return reset if reset is not None and reset.cost < incremental.cost else incremental


def plan(
    *,
    group: str,
    provider: str,
    desired: Sequence[Member],
    actual: Sequence[RemoteMember] | None,
    capabilities: Capabilities,
    policy: RemovalPolicy,
    guard: Guard,
    owned: frozenset[str] = frozenset(),
    known_rejects: Mapping[str, KnownReject] | None = None,
    suppressed: Mapping[str, Suppression] | None = None,
    refused: Mapping[str, MemberReject] | None = None,
    allow_non_atomic_reset: bool = False,
    group_size: int | None = None,
    protected: frozenset[str] = frozenset(),
) -> Plan:
    """The fewest API calls that make `actual` equal `desired`.

    `desired` are admitted members; `actual` is None when the group does not exist yet (it is created
    first). `owned` holds the keys of members syncd added itself (the `owned` policy removes only those);
    `known_rejects` are this pair's remembered permanent rejects, skipped while the member is unchanged;
    `suppressed` are the people the provider holds as unsubscribed, bounced or blacklisted (consent first: they
    are rejected with that state as their reason, and remembered); `refused` the ones the connector found, by
    reading, that an add would refuse (rejected with the provider's reason; remembered when permanent).
    `group_size` is the group's real member count when `actual` is only a part of it (a pass over some members,
    `syncd run --member`): the guard weighs the removals against it, so one removal is never "all members", and
    no reset is chosen (it would leave the group with only those members).
    `protected` holds email keys never removed, whatever the source says: they stay (counted in `Plan.protected`),
    and the plan is then never a reset (it would drop them).
    """
    current: Sequence[RemoteMember] = actual or ()
    known = _Known(provider, capabilities, known_rejects or {}, suppressed or {}, refused or {})
    diff = difference(desired, current)
    admission = _admission(desired, diff.absent, known)
    undesired, kept_protected = _unprotected(diff.undesired, protected)
    removals = _removals(
        undesired, policy, owned, capabilities, guard, len(current) if group_size is None else group_size
    )
    change = _Change.of(
        group, provider, admission, removals, len(diff.undesired), create=actual is None, whole=group_size is None
    )
    choice = _cheapest(change, capabilities, allow_non_atomic_reset)
    return Plan(
        group=group,
        provider=provider,
        strategy=choice.strategy,
        ops=choice.ops,
        desired=len(desired),
        actual=None if actual is None else len(current),
        to_add=admission.to_add,
        to_remove=removals.to_remove,
        rejected=admission.rejected,
        held_back=removals.held_back,
        unsupported=removals.unsupported,
        kept=removals.kept,
        protected=kept_protected,
        guard=removals.guard,
        cost=choice.cost,
    )
