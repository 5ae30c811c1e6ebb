"""The values syncd passes around: members, desired groups, ops, plans and results.

All frozen, so the planner can be a pure function of them and a plan can be saved, compared and replayed.
Kinds, statuses and policies are string enums so config, logs, database rows and JSON read the same.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from connectors.base import ConsentState, Contact, MemberReject, PostalAddress, RemoteMember, email_key

# A desired member is exactly what a connector is handed to write: one type, no conversions.
Member = Contact
Address = PostalAddress

__all__ = [
    "CONSENT_CODES",
    "Address",
    "ConsentState",
    "DesiredGroup",
    "KnownReject",
    "Member",
    "MemberReject",
    "Op",
    "OpKind",
    "PairResult",
    "PairStatus",
    "Plan",
    "Reject",
    "RejectCode",
    "RemoteMember",
    "RemovalPolicy",
    "RunReport",
    "Strategy",
    "Target",
    "email_key",
    "fingerprint",
]


class RemovalPolicy(enum.StrEnum):
    MIRROR = "mirror"  # remove every member not desired
    OWNED = "owned"  # remove only members syncd itself added
    ADD_ONLY = "add_only"  # never remove


class Strategy(enum.StrEnum):
    INCREMENTAL = "incremental"
    RESET = "reset"


class PairStatus(enum.StrEnum):
    """What happened to one (group, provider) pair in a pass. One meaning each, written down once in the README
    ("Statuses and exit codes"): rejects and drift the API cannot remove are counted beside the status (a pair
    that did all its API allows is `in_sync` or `applied`), never a status of their own."""

    IN_SYNC = "in_sync"  # nothing was (or, in a dry run, would be) sent: as close to the source as the API allows
    APPLIED = "applied"  # changes were sent, and every one of them was done (rejects aside)
    PENDING = "pending"  # dry run: changes would be sent
    BLOCKED = "blocked"  # the removal guard held removals back (adds still went)
    FAILED = "failed"  # nothing could be done (binding, auth, every op failed, or its provider is unusable)
    PARTIAL = "partial"  # some changes were made, and some ops failed

    @property
    def is_error(self) -> bool:
        """Whether this status makes a run exit 1 and count as a failed pass (blocked counts as blocked)."""
        return self in (PairStatus.FAILED, PairStatus.PARTIAL)


class OpKind(enum.StrEnum):
    CREATE_GROUP = "create_group"
    ADD = "add"
    REMOVE = "remove"
    RESET = "reset"


class RejectCode(enum.StrEnum):
    """Why a member was not written, as a category (the reason text may name the member)."""

    INVALID_EMAIL = "invalid_email"
    DUPLICATE = "duplicate"
    MISSING_FIELDS = "missing_fields"
    REMEMBERED = "remembered"  # a permanent reject from an earlier pass, member unchanged since
    PROVIDER = "provider_rejected"
    EXCLUDED = "excluded"  # a member of a group the desired group excludes (`exclude`): not desired, no error


# Reject codes that say a person must not be subscribed again (they unsubscribed, bounced, are blacklisted).
CONSENT_CODES = frozenset(str(state) for state in ConsentState)


class LedgerOutcome(enum.StrEnum):
    APPLIED = "applied"
    WOULD = "would"  # dry run
    REJECTED = "rejected"
    BLOCKED = "blocked"  # removal held back by the guard
    UNSUPPORTED = "unsupported"  # the API cannot remove
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Reject:
    """A desired member that is not (or could not be) written, and why."""

    email: str
    reason: str
    code: RejectCode | str = "rejected"  # the category: a metric label, so never PII
    # When the planner refused a member because of what the provider said (consent, a pre-check): the member
    # itself (its ledger row is written then), whether to remember the reject (`permanent`), and a longer account
    # of why for the ledger (since when, by whom). None of them is part of equality.
    member: Member | None = field(default=None, compare=False)
    permanent: bool = field(default=False, compare=False)
    detail: str | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, str]:
        return {"email": self.email, "reason": self.reason, "code": str(self.code)}


@dataclass(frozen=True, slots=True)
class KnownReject:
    """A permanent reject remembered in the state DB: skipped until the member's source data changes."""

    fingerprint: str
    reason: str
    code: str = "provider_rejected"


def fingerprint(member: Member) -> str:
    """A digest of everything syncd would send for a member; a changed source record changes it."""
    data = json.dumps(asdict(member), sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Target:
    """A provider a group goes to, optionally pinned to a provider group id."""

    provider: str
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class DesiredGroup:
    """A group as the source of truth wants it. `members` are admitted (valid, unique); `rejected` are not.

    `key` is the group's identity (default: its name): the state DB files the pair's binding, owned members,
    ledger and remembered rejects under it, so a group renamed in its source but keeping its key keeps its
    provider group. Reports show the `name`. `protected` holds email keys (trimmed, lower-cased) syncd never
    removes from the group's provider groups. `exclude` names (or keys) the groups whose members are subtracted
    from this one after every source is read; `excluded` records the members that subtraction took out, each as a
    `Reject` with code `excluded` whose reason names the excluded group it came from (they are not errors)."""

    name: str
    members: tuple[Member, ...]
    targets: tuple[Target, ...]
    source: str = "yaml"
    rejected: tuple[Reject, ...] = ()
    removal_policy: RemovalPolicy | None = None  # None: mirror for groups syncd created, owned for adopted
    max_removals: int | None = None  # None: the global safety settings
    max_removal_ratio: float | None = None
    key: str = ""  # "" when built: the name
    protected: frozenset[str] = frozenset()  # email keys never removed by syncd
    exclude: tuple[str, ...] = ()  # names or keys of the groups whose members are subtracted
    excluded: tuple[Reject, ...] = ()  # members the exclusion took out (code `excluded`)

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.name)
        if self.protected and not all(k == email_key(k) for k in self.protected):
            object.__setattr__(self, "protected", frozenset(email_key(k) for k in self.protected))


def describe_change(kind: OpKind, group: str, provider: str, n: int) -> str:
    """ "add 3 members to 'US Sales' on c8": the sentence of one op, or of a phase of ops of one kind."""
    where = f"{group!r} on {provider}"
    noun = "member" if n == 1 else "members"
    if kind is OpKind.CREATE_GROUP:
        return f"create group {where}"
    if kind is OpKind.ADD:
        return f"add {n} {noun} to {where}"
    if kind is OpKind.REMOVE:
        return f"remove {n} {noun} from {where}"
    return f"reset {where} to exactly {n} {noun}"


@dataclass(frozen=True, slots=True)
class Op:
    """One API call's worth of change. It can say what it does, so dry run and real run log the same way."""

    kind: OpKind
    group: str
    provider: str
    contacts: tuple[Member, ...] = ()  # add / reset
    members: tuple[RemoteMember, ...] = ()  # remove

    @property
    def size(self) -> int:
        return len(self.members) if self.kind is OpKind.REMOVE else len(self.contacts)

    def describe(self, *, verbose: bool = False) -> str:
        """ "add 3 members to 'US Sales' on c8". Emails only when verbose (never at INFO: they are PII)."""
        n = self.size
        text = describe_change(self.kind, self.group, self.provider, n)
        if verbose and n:
            emails = [c.email for c in self.contacts] or [m.email or f"id:{m.id}" for m in self.members]
            text += ": " + ", ".join(emails)
        return text


@dataclass(frozen=True, slots=True)
class Plan:
    """What it takes to make one provider group equal to one desired group."""

    group: str
    provider: str
    strategy: Strategy
    ops: tuple[Op, ...]
    desired: int  # admitted desired members
    actual: int | None  # members before; None when the group does not exist yet
    to_add: tuple[Member, ...] = ()
    to_remove: tuple[RemoteMember, ...] = ()
    rejected: tuple[Reject, ...] = ()
    held_back: tuple[RemoteMember, ...] = ()  # removals the guard blocked
    unsupported: tuple[RemoteMember, ...] = ()  # removals the API cannot make
    kept: int = 0  # undesired members left alone by the removal policy
    protected: int = 0  # undesired members kept because the group protects them (`protected`)
    guard: str | None = None  # why removals were held back
    cost: int = 0  # write requests the ops take (a connector may need more, e.g. to create recipients)

    @property
    def has_changes(self) -> bool:
        return bool(self.ops)


@dataclass(frozen=True, slots=True)
class PairResult:
    """The outcome of one (group, provider) pair in one pass; its `as_dict` is the `--output json` entry."""

    group: str
    provider: str
    strategy: Strategy
    status: PairStatus
    desired: int
    actual_before: int
    add: int
    remove: int
    unsupported_remove: int = 0
    rejected: tuple[Reject, ...] = ()
    requests: dict[str, int] = field(default_factory=lambda: {"read": 0, "write": 0})
    error: str | None = None
    guard: str | None = None
    held_back: int = 0
    # Dry run, and the provider can only tell by adding whether it takes a member (Bitcaster): the adds whose
    # outcome this dry run cannot know.
    unchecked_add: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "group": self.group,
            "provider": self.provider,
            "strategy": str(self.strategy),
            "status": str(self.status),
            "desired": self.desired,
            "actual_before": self.actual_before,
            "add": self.add,
            "remove": self.remove,
            "unsupported_remove": self.unsupported_remove,
            "rejected": [r.as_dict() for r in self.rejected],
            "requests": dict(self.requests),
        }
        if self.unchecked_add:
            out["unchecked_add"] = self.unchecked_add
        if self.error:
            out["error"] = self.error
        if self.guard:
            out["blocked_reason"] = self.guard
        return out


@dataclass(frozen=True, slots=True)
class RunReport:
    run_id: str
    dry_run: bool
    pairs: tuple[PairResult, ...]
    errors: tuple[str, ...] = ()  # failures outside any pair (a source that could not be read)
    outcome: str = ""  # as recorded for the run: success, failure, blocked or interrupted

    @property
    def ok(self) -> bool:
        return not self.errors and all(
            p.status in (PairStatus.IN_SYNC, PairStatus.APPLIED, PairStatus.PENDING) for p in self.pairs
        )

    @property
    def changed(self) -> bool:
        """Changes were made (or, in a dry run, would be): members added or removed, or a group created
        (a pair `applied` or `pending` with no member change is a group creation)."""
        return any(p.add or p.remove or p.status in (PairStatus.APPLIED, PairStatus.PENDING) for p in self.pairs)

    @property
    def groups_created(self) -> int:
        """Pairs whose only change was creating their (empty) provider group."""
        return sum(
            1 for p in self.pairs if not (p.add or p.remove) and p.status in (PairStatus.APPLIED, PairStatus.PENDING)
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dry_run": self.dry_run,
            "run_id": self.run_id,
            "pairs": [p.as_dict() for p in self.pairs],
        }
        if self.errors:
            out["errors"] = list(self.errors)
        return out
