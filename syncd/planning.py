"""The diff: pure functions from frozen values to a Plan. No I/O, no clock, no randomness.

`admit` turns a source's raw members into valid, unique ones (rejecting the rest with a reason);
`plan` compares them with a provider group's current members and picks the cheapest sequence of API calls
that makes the group equal, within the removal policy and the removal guard.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from connectors.base import Capabilities, MemberReject, ResetKind, Suppression
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


def email_problem(email: str) -> str | None:
    """Why `email` (already trimmed) is not a deliverable address, or None. Deliberately conservative:
    what it accepts, every provider here accepts."""
    if not email:
        return "empty email"
    if len(email) > 254:
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
        problem = email_problem(member.email)
        if problem:
            rejects.append(Reject(member.email, problem, RejectCode.INVALID_EMAIL))
            continue
        if member.key in first:
            rejects.append(
                Reject(member.email, f"duplicate of {first[member.key]} in the same group", RejectCode.DUPLICATE)
            )
            continue
        first[member.key] = member.email
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
    missing = []
    for name in sorted(required):
        obj: object = member
        for part in name.split("."):
            obj = getattr(obj, part, None) if obj is not None else None
        if obj is None or (isinstance(obj, str) and not obj.strip()):
            missing.append(name)
    return missing


def _refusal(
    member: Member,
    provider: str,
    capabilities: Capabilities,
    known_rejects: Mapping[str, KnownReject],
    suppressed: Mapping[str, Suppression],
    refused: Mapping[str, MemberReject],
) -> Reject | None:
    """Why a desired member that is not in the group will not be added, or None. Consent comes first: a
    remembered consent reject and a suppression both report the state itself ("unsubscribed") as the reason.
    A reject that carries its member is one to write to the ledger and, when permanent, to remember."""
    known = known_rejects.get(member.key)
    if known is not None and known.fingerprint == fingerprint(member):
        if known.code in CONSENT_CODES:
            return Reject(member.email, known.code, known.code, detail=f"{known.reason} (remembered)")
        reason = f"{known.reason} (remembered; retried when the source record changes)"
        return Reject(member.email, reason, RejectCode.REMEMBERED)
    suppression = suppressed.get(member.key)
    if suppression is not None:
        state = str(suppression.state)
        return Reject(
            member.email, state, state, member=member, permanent=True, detail=f"{state}: {suppression.reason}"
        )
    missing = missing_fields(member, capabilities.required_fields)
    if missing:
        reason = f"missing fields {provider} requires: {', '.join(missing)}"
        return Reject(member.email, reason, RejectCode.MISSING_FIELDS)
    found = refused.get(member.key)
    if found is not None:
        code = found.code
        if code in CONSENT_CODES:
            detail = found.reason if found.reason.startswith(code) else f"{code}: {found.reason}"
            return Reject(member.email, code, code, member=member, permanent=found.permanent, detail=detail)
        return Reject(member.email, found.reason, code, member=member, permanent=found.permanent)
    return None


def _batches(n: int, size: int) -> int:
    return math.ceil(n / size) if n else 0


def _chunks(items: Sequence[_T], size: int) -> list[tuple[_T, ...]]:
    return [tuple(items[i : i + size]) for i in range(0, len(items), size)]


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
) -> Plan:
    """The fewest API calls that make `actual` equal `desired`.

    `desired` are admitted members; `actual` is None when the group does not exist yet (it is created
    first). `owned` holds the keys of members syncd added itself (the `owned` policy removes only those);
    `known_rejects` are this pair's remembered permanent rejects, skipped while the member is unchanged;
    `suppressed` are the people the provider holds as unsubscribed, bounced or blacklisted (consent first: they
    are rejected with that state as their reason, and remembered); `refused` the ones the connector found, by
    reading, that an add would refuse (rejected with the provider's reason; remembered when permanent).
    """
    known_rejects = known_rejects or {}
    suppressed = suppressed or {}
    refused = refused or {}
    rejected: list[Reject] = []
    writable: list[Member] = []  # desired members the provider can take
    present = {m.key for m in actual or ()}
    for member in desired:
        if member.key in present:
            writable.append(member)  # already there: whatever it lacks, it is not ours to reject
            continue
        reject = _refusal(member, provider, capabilities, known_rejects, suppressed, refused)
        if reject is not None:
            rejected.append(reject)
            continue
        writable.append(member)

    desired_keys = {m.key for m in desired}
    to_add = tuple(m for m in writable if m.key not in present)
    undesired = [r for r in actual or () if r.key not in desired_keys]
    if policy is RemovalPolicy.MIRROR:
        removable = undesired
    elif policy is RemovalPolicy.OWNED:
        removable = [r for r in undesired if r.key in owned]
    else:
        removable = []
    kept = len(undesired) - len(removable)

    unsupported: tuple[RemoteMember, ...] = ()
    if removable and not capabilities.can_remove:
        unsupported, removable = tuple(removable), []

    held_back: tuple[RemoteMember, ...] = ()
    guard_reason = guard.check(len(removable), len(actual or ()))
    if guard_reason:
        held_back, removable = tuple(removable), []
    to_remove = tuple(removable)

    add_batch, remove_batch = capabilities.max_add_batch, capabilities.max_remove_batch
    incremental_cost = _batches(len(to_add), add_batch) + _batches(len(to_remove), remove_batch)
    ops: list[Op] = []
    strategy = Strategy.INCREMENTAL
    cost = incremental_cost
    # A reset replaces everything: it is only the same end state when every undesired member goes.
    exact = actual is not None and bool(to_remove) and len(to_remove) == len(undesired)
    if exact and capabilities.reset is ResetKind.ATOMIC and len(writable) <= capabilities.reset_batch:
        if incremental_cost > 1:
            strategy, cost = Strategy.RESET, 1
            ops.append(Op(OpKind.RESET, group, provider, contacts=tuple(writable)))
    elif exact and capabilities.reset is ResetKind.NON_ATOMIC and allow_non_atomic_reset:
        # Empty the group with the first batch (two requests), then add the rest batch by batch.
        reset_cost = 1 + max(1, _batches(len(writable), add_batch))
        if reset_cost < incremental_cost:
            strategy, cost = Strategy.RESET, reset_cost
            chunks = _chunks(writable, add_batch) or [()]
            ops.append(Op(OpKind.RESET, group, provider, contacts=chunks[0]))
            ops += [Op(OpKind.ADD, group, provider, contacts=chunk) for chunk in chunks[1:]]

    if strategy is Strategy.INCREMENTAL:
        cost += 1 if actual is None else 0
        if actual is None:
            ops.append(Op(OpKind.CREATE_GROUP, group, provider))
        # Adds before removes: nobody who should stay is ever missing in between.
        ops += [Op(OpKind.ADD, group, provider, contacts=chunk) for chunk in _chunks(to_add, add_batch)]
        ops += [Op(OpKind.REMOVE, group, provider, members=chunk) for chunk in _chunks(to_remove, remove_batch)]

    return Plan(
        group=group,
        provider=provider,
        strategy=strategy,
        ops=tuple(ops),
        desired=len(desired),
        actual=None if actual is None else len(actual),
        to_add=to_add,
        to_remove=to_remove,
        rejected=tuple(rejected),
        held_back=held_back,
        unsupported=unsupported,
        kept=kept,
        guard=guard_reason,
        cost=cost,
    )
