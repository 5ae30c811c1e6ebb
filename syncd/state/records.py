"""The values that go into and come out of the state DB, as frozen dataclasses (no ORM objects leak out).

Kinds and outcomes are the string enums of `syncd.model`; the DB stores their string values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from syncd.model import LedgerOutcome, OpKind, PairStatus, RemovalPolicy, Strategy

__all__ = [
    "Binding",
    "LedgerEntry",
    "LedgerRow",
    "PairRow",
    "PairState",
    "RejectRow",
    "RunOutcome",
    "RunRow",
    "RunTrigger",
    "StoredReject",
]


class RunOutcome(enum.StrEnum):
    RUNNING = "running"  # started, not finished (or the process died: see finished_at)
    SUCCESS = "success"  # every pair reconciled
    FAILURE = "failure"  # some error (config, source, provider)
    BLOCKED = "blocked"  # no error, but the removal guard held a pair back
    INTERRUPTED = "interrupted"  # SIGTERM / Ctrl-C before the end


class RunTrigger(enum.StrEnum):
    """What started a run. Any short string is stored; these are the ones syncd uses."""

    CLI = "cli"  # `syncd run`
    SERVE = "serve"  # the scheduler of `syncd serve`
    APPLY = "apply"  # `syncd apply plan.json`


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One member change (or non-change) to record: who, where, what, what came of it, and why."""

    group: str
    provider: str
    email: str  # as the source (or provider) spells it; matched case-insensitively
    op: OpKind  # ADD or REMOVE
    outcome: LedgerOutcome
    reason: str


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A ledger entry as read back, newest first, for `syncd history`."""

    at: datetime
    run_id: str
    group: str
    provider: str
    email: str
    op: OpKind
    outcome: LedgerOutcome
    reason: str


@dataclass(frozen=True, slots=True)
class Binding:
    """A desired group bound to one provider group. `created_by_syncd` decides the default removal policy."""

    group: str
    provider: str
    remote_id: str
    remote_name: str
    created_by_syncd: bool
    bound_at: datetime | None = None  # set by the store: when bound to this remote_id
    updated_at: datetime | None = None  # set by the store: last saved

    @property
    def default_policy(self) -> RemovalPolicy:
        """mirror for groups syncd created, owned for groups it adopted."""
        return RemovalPolicy.MIRROR if self.created_by_syncd else RemovalPolicy.OWNED


@dataclass(frozen=True, slots=True)
class StoredReject:
    """A permanent reject to remember: skipped until the member's fingerprint (source data) changes."""

    email: str
    fingerprint: str
    reason: str
    code: str = "provider_rejected"  # the reject's category: unsubscribed, unknown_recipient, ...


@dataclass(frozen=True, slots=True)
class RejectRow:
    provider: str
    email: str
    fingerprint: str
    reason: str
    first_seen: datetime
    last_seen: datetime
    group: str = ""  # '' = every group of the provider (remembered before rejects were kept per group)
    code: str = "provider_rejected"


@dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    started_at: datetime
    finished_at: datetime | None
    dry_run: bool
    trigger: str
    outcome: RunOutcome
    errors: tuple[str, ...]
    selection: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class PairRow:
    """A recorded `PairResult` (counts only; the members are in the ledger)."""

    run_id: str
    recorded_at: datetime
    group: str
    provider: str
    remote_group_id: str | None
    strategy: Strategy
    status: PairStatus
    desired: int
    actual_before: int
    added: int
    removed: int
    unsupported_remove: int
    held_back: int
    rejected: int
    read_requests: int
    write_requests: int
    error: str | None
    blocked_reason: str | None


@dataclass(frozen=True, slots=True)
class PairState:
    """Where a pair stands after its last pass, for `syncd status`: that pass's recorded result, seen from after it.

    `actual` is the group's member count after the pass (before it, for a dry run, which changes nothing); None when
    the pass failed before the group was read. `pending_add` / `pending_remove` are what the pass left to do (failed
    changes, removals held back or the API cannot make, a dry run's plan); None when not known (a pass recorded
    before syncd kept them, or one that failed before reading the group)."""

    group: str
    provider: str
    run_id: str
    dry_run: bool  # the pass was a dry run (only when asked for: `include_dry_runs`)
    last_run: datetime  # when the pair's result was recorded
    status: PairStatus
    desired: int
    actual: int | None
    pending_add: int | None
    pending_remove: int | None
    rejected: int  # members rejected in that pass
    blocked_reason: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A pair the removal guard holds back (the `quarantine` table): since when, why (the latest pass's guard), how
    many removals it holds, and the approval that lets them go at the next real pass, if one was given."""

    group: str  # the group's key (its name unless the config gives one)
    provider: str
    name: str  # the group's name, as its latest pass saw it
    blocked_at: datetime
    run_id: str
    reason: str
    held_back: int
    approved_at: datetime | None = None
    approval: str | None = None

    @property
    def approved(self) -> bool:
        return self.approved_at is not None
