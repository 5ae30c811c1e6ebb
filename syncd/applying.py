"""Executes a Plan through a connector and writes down what happened to every member.

A dry run walks exactly this path and skips only the sending: the same ops are described (as "would …"),
the same ledger entries are produced (outcome `would`).

Ops run in phases of one kind, in plan order (create, reset, adds, removes). Within a phase the ops are
independent, so they run concurrently; the connector's pacing decides how fast requests really go (a
provider that takes one member per request, like Giftronaut, is then limited by its rate, not by latency).
Each op's outcome is handed to a sink as soon as it is known, so a pass killed halfway has still recorded
what it did. One failing op does not stop the others, except when the failure says nothing else can work
either (bad credentials, the group is gone).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from connectors.base import (
    AddPreparer,
    AuthError,
    Connector,
    ConnectorError,
    NotFound,
    RemoteGroup,
    email_key,
)
from syncd.model import (
    CONSENT_CODES,
    LedgerOutcome,
    Member,
    MemberReject,
    Op,
    OpKind,
    Plan,
    Reject,
    RemoteMember,
    describe_change,
)
from syncd.state import LedgerEntry

log = logging.getLogger("syncd.apply")


@dataclass
class OpOutcome:
    """What one op achieved (or, in a dry run, would have)."""

    added: list[Member] = field(default_factory=list)
    removed: list[RemoteMember] = field(default_factory=list)
    rejected: list[Reject] = field(default_factory=list)  # refused by the provider
    permanent: list[tuple[Member, MemberReject]] = field(default_factory=list)  # rejects to remember
    failure: str | None = None
    ledger: list[LedgerEntry] = field(default_factory=list)


@dataclass
class Applied:
    """What applying one plan achieved: the sum of its ops' outcomes."""

    group: RemoteGroup | None
    added: list[Member] = field(default_factory=list)
    removed: list[RemoteMember] = field(default_factory=list)
    rejected: list[Reject] = field(default_factory=list)
    permanent: list[tuple[Member, MemberReject]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one line per failed op

    def absorb(self, outcome: OpOutcome) -> None:
        self.added += outcome.added
        self.removed += outcome.removed
        self.rejected += outcome.rejected
        self.permanent += outcome.permanent
        if outcome.failure:
            self.failures.append(outcome.failure)


class ApplySink(Protocol):
    """Receives results as they happen (the reconciler writes them to the state DB at once)."""

    async def group_created(self, group: RemoteGroup) -> None: ...

    async def recorded(self, outcome: OpOutcome) -> None: ...


class NullSink:
    async def group_created(self, group: RemoteGroup) -> None:
        return None

    async def recorded(self, outcome: OpOutcome) -> None:
        return None


def _label(m: RemoteMember) -> str:
    return m.email or f"id:{m.id}"


def _phases(ops: Sequence[Op]) -> Iterator[list[Op]]:
    for _, run in itertools.groupby(ops, key=lambda op: op.kind):
        yield list(run)


class Applier:
    """Applies plans for one connector. `remove_reason` says in the ledger why members were removed."""

    def __init__(
        self,
        connector: Connector,
        *,
        dry_run: bool,
        sink: ApplySink | None = None,
        workers: int | None = None,
        stop: asyncio.Event | None = None,
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.connector = connector
        # Awaited before every op that writes to the provider: it raises to stop the pair (a replica whose queue
        # job was taken over: syncd.state.fence).
        self.before_write = before_write
        self.dry_run = dry_run
        self.sink: ApplySink = sink or NullSink()
        # Ops in flight per pair: as many as the provider takes requests at once, so the rest wait here, where
        # a stop can still keep them from starting, rather than inside the connector's queue.
        self.workers = workers or max(1, connector.capabilities.pacing.max_concurrency)
        self.stop = stop  # once set, ops not yet started are left alone (requests in flight finish)

    async def apply(
        self,
        plan: Plan,
        group: RemoteGroup | None,
        *,
        remove_reason: str,
        noted: Mapping[str, LedgerOutcome] | None = None,
    ) -> Applied:
        """Apply the plan. `noted`: members whose removal the ledger already records as held back or unsupported
        (by key): the same state is not written down again every pass, only when it starts."""
        out = Applied(group=group)
        notes = await asyncio.to_thread(_unsent, plan, noted or {})  # a row per member: off the event loop
        if notes.ledger:
            await self.sink.recorded(notes)

        ops = await self._prepare(plan)
        aborted: list[str] = []  # set once: the reason nothing else is attempted
        for phase in _phases(ops):
            self._announce(phase)
            pending = iter(phase)

            async def worker(pending: Iterator[Op] = pending) -> None:
                for op in pending:  # a shared iterator: each op is taken by exactly one worker
                    outcome = await self._one(op, plan, out, remove_reason, aborted)
                    out.absorb(outcome)
                    await self.sink.recorded(outcome)

            await asyncio.gather(*(worker() for _ in range(min(self.workers, len(phase)))))
        return out

    async def _prepare(self, plan: Plan) -> list[Op]:
        """Let the connector resolve the pass's adds in bulk; if it prefers another order, re-batch the adds
        in that order (same batch size, same number of add ops). A million adds are walked in worker threads."""
        ops = list(plan.ops)
        if not isinstance(self.connector, AddPreparer):
            return ops
        adds = await asyncio.to_thread(_adds_of, ops)
        # A dry run prepares too: it only reads, and the real run reads the same (its report counts them).
        order = await self._preferred_order(plan, adds) if adds else None
        return ops if order is None else await asyncio.to_thread(_rebatched, plan, ops, order)

    async def _preferred_order(self, plan: Plan, adds: Sequence[Member]) -> Sequence[Member] | None:
        """The order in which the connector prefers the adds (the same members), once it prepared them; None
        when it has no preference, or cannot prepare."""
        if not isinstance(self.connector, AddPreparer):
            return None
        try:
            order = await self.connector.prepare_adds(adds)
        except ConnectorError as exc:  # the adds will find out for themselves, one by one
            log.warning("%s: could not prepare adds to %r: %s", plan.provider, plan.group, exc.message)
            return None
        if order is None or not await asyncio.to_thread(_same_members, order, adds):
            return None
        return order

    def _announce(self, phase: list[Op]) -> None:
        first, prefix = phase[0], "would " if self.dry_run else ""
        if len(phase) == 1:
            log.info("%s%s", prefix, first.describe())
        else:
            total = sum(op.size for op in phase)
            log.info(
                "%s%s in %d requests",
                prefix,
                describe_change(first.kind, first.group, first.provider, total),
                len(phase),
            )
        for op in phase:
            log.debug("%s%s", prefix, op.describe(verbose=True))

    async def _one(self, op: Op, plan: Plan, out: Applied, remove_reason: str, aborted: list[str]) -> OpOutcome:
        outcome = OpOutcome()
        if self.stop is not None and self.stop.is_set():
            outcome.failure = f"{op.describe()}: not attempted, syncd is stopping"
            return outcome
        if aborted:
            return self._failed(op, plan, f"not attempted after: {aborted[0]}", outcome)
        if self.dry_run:
            self._would(op, plan, outcome, remove_reason)
            return outcome
        if self.before_write is not None:
            await self.before_write()
        try:
            await self._send(op, plan, out, outcome, remove_reason)
        except (AuthError, NotFound) as exc:
            if not aborted:
                aborted.append(exc.message)
            return self._failed(op, plan, exc.message, outcome)
        except ConnectorError as exc:
            return self._failed(op, plan, exc.message, outcome)
        return outcome

    async def _send(self, op: Op, plan: Plan, out: Applied, outcome: OpOutcome, remove_reason: str) -> None:
        if op.kind is OpKind.CREATE_GROUP:
            out.group = await self.connector.create_group(op.group)
            await self.sink.group_created(out.group)
            return
        if out.group is None:
            raise NotFound(f"group {op.group!r} does not exist on {op.provider}")
        if op.kind is OpKind.ADD:
            await self._add(out.group, op, plan, outcome)
        elif op.kind is OpKind.REMOVE:
            await self._remove(out.group, op, plan, outcome, remove_reason)
        else:
            await self._reset(out.group, op, plan, outcome, remove_reason)

    async def _add(self, group: RemoteGroup, op: Op, plan: Plan, outcome: OpOutcome) -> None:
        result = await self.connector.add_members(group, op.contacts)
        done = set(result.done)
        _note_adds(outcome, plan, [m for m in op.contacts if m.key in done], LedgerOutcome.APPLIED, "in source")
        _note_rejects(outcome, plan, op.contacts, result.rejected)

    async def _remove(self, group: RemoteGroup, op: Op, plan: Plan, outcome: OpOutcome, remove_reason: str) -> None:
        result = await self.connector.remove_members(group, op.members)
        done = set(result.done)
        removed = [m for m in op.members if m.key in done]
        outcome.removed += removed
        _note_removes(outcome, plan, removed, LedgerOutcome.APPLIED, remove_reason)
        # A member the provider refused to remove stays in the group: the ledger says so and why (it stays
        # pending removal, so the next pass tries again).
        for r in result.rejected:
            outcome.ledger.append(
                LedgerEntry(plan.group, plan.provider, r.email, OpKind.REMOVE, LedgerOutcome.REJECTED, r.reason)
            )

    async def _reset(self, group: RemoteGroup, op: Op, plan: Plan, outcome: OpOutcome, remove_reason: str) -> None:
        result = await self.connector.reset_members(group, op.contacts)
        done, new = set(result.done), {m.key for m in plan.to_add}
        added = [m for m in op.contacts if m.key in done and m.key in new]
        _note_adds(outcome, plan, added, LedgerOutcome.APPLIED, "in source")
        _note_rejects(outcome, plan, op.contacts, result.rejected)
        outcome.removed += plan.to_remove
        _note_removes(outcome, plan, plan.to_remove, LedgerOutcome.APPLIED, f"{remove_reason} (group reset)")

    def _would(self, op: Op, plan: Plan, outcome: OpOutcome, remove_reason: str) -> None:
        if op.kind is OpKind.ADD:
            _note_adds(outcome, plan, op.contacts, LedgerOutcome.WOULD, "in source")
        elif op.kind is OpKind.REMOVE:
            _note_removes(outcome, plan, op.members, LedgerOutcome.WOULD, remove_reason)
        elif op.kind is OpKind.RESET:
            new = {m.key for m in plan.to_add}
            _note_adds(outcome, plan, [m for m in op.contacts if m.key in new], LedgerOutcome.WOULD, "in source")
            _note_removes(outcome, plan, plan.to_remove, LedgerOutcome.WOULD, f"{remove_reason} (group reset)")

    def _failed(self, op: Op, plan: Plan, message: str, outcome: OpOutcome) -> OpOutcome:
        log.warning("could not %s: %s", op.describe(), message)
        outcome.failure = f"{op.describe()}: {message}"
        if op.kind is OpKind.REMOVE:
            _note_removes(outcome, plan, op.members, LedgerOutcome.FAILED, message)
        else:
            _note_adds(outcome, plan, op.contacts, LedgerOutcome.FAILED, message)
        return outcome


def _rebatched(plan: Plan, ops: list[Op], order: Sequence[Member]) -> list[Op]:
    """`ops` with its adds cut again from `order`, in batches of the largest add op's size, where the first add was."""
    size = max(op.size for op in ops if op.kind is OpKind.ADD)
    first = next(i for i, op in enumerate(ops) if op.kind is OpKind.ADD)
    rebatched = [
        Op(OpKind.ADD, plan.group, plan.provider, contacts=tuple(order[i : i + size]))
        for i in range(0, len(order), size)
    ]
    return ops[:first] + rebatched + [op for op in ops[first:] if op.kind is not OpKind.ADD]


def _unsent(plan: Plan, noted: Mapping[str, LedgerOutcome]) -> OpOutcome:
    """The ledger rows of what the plan will not send: removals held back by the guard or that the API cannot
    make (each written once: not again when `noted` has it), and the provider's refusals."""
    notes = OpOutcome()
    held = [m for m in plan.held_back if noted.get(m.key) is not LedgerOutcome.BLOCKED]
    _note_removes(notes, plan, held, LedgerOutcome.BLOCKED, f"held back: {plan.guard}")
    unsupported = f"not in source, but {plan.provider}'s API cannot remove members"
    cannot = [m for m in plan.unsupported if noted.get(m.key) is not LedgerOutcome.UNSUPPORTED]
    _note_removes(notes, plan, cannot, LedgerOutcome.UNSUPPORTED, unsupported)
    _note_refusals(notes, plan)
    return notes


def _adds_of(ops: Sequence[Op]) -> list[Member]:
    return [c for op in ops if op.kind is OpKind.ADD for c in op.contacts]


def _same_members(order: Sequence[Member], adds: Sequence[Member]) -> bool:
    return sorted(c.key for c in order) == sorted(c.key for c in adds)


def _note_adds(outcome: OpOutcome, plan: Plan, members: Iterable[Member], result: LedgerOutcome, why: str) -> None:
    members = list(members)
    if result is LedgerOutcome.APPLIED:
        outcome.added += members
    outcome.ledger += [LedgerEntry(plan.group, plan.provider, m.email, OpKind.ADD, result, why) for m in members]


def _note_removes(
    outcome: OpOutcome, plan: Plan, members: Iterable[RemoteMember], result: LedgerOutcome, why: str
) -> None:
    outcome.ledger += [LedgerEntry(plan.group, plan.provider, _label(m), OpKind.REMOVE, result, why) for m in members]


def _note_refusals(outcome: OpOutcome, plan: Plan) -> None:
    """The planner's rejects that came from the provider (consent states, an add pre-check): one ledger row each,
    and remembered when permanent. Remembered ones carry no member and are not noted again."""
    for r in plan.rejected:
        if r.member is None:
            continue
        why = r.detail or r.reason
        outcome.ledger.append(LedgerEntry(plan.group, plan.provider, r.email, OpKind.ADD, LedgerOutcome.REJECTED, why))
        if r.permanent:
            outcome.permanent.append((r.member, MemberReject(r.email, why, permanent=True, code=str(r.code))))


def _note_rejects(outcome: OpOutcome, plan: Plan, contacts: Iterable[Member], rejects: Iterable[MemberReject]) -> None:
    by_key = {m.key: m for m in contacts}
    for r in rejects:
        if r.code in CONSENT_CODES:  # the state is the reason, as when the planner finds it
            why = r.reason if r.reason.startswith(r.code) else f"{r.code}: {r.reason}"
            outcome.rejected.append(Reject(r.email, r.code, r.code, detail=why))
            r = MemberReject(r.email, why, r.permanent, r.code)
        else:
            outcome.rejected.append(Reject(r.email, r.reason, r.code))
        outcome.ledger.append(
            LedgerEntry(plan.group, plan.provider, r.email, OpKind.ADD, LedgerOutcome.REJECTED, r.reason)
        )
        member = by_key.get(email_key(r.email))
        if r.permanent and member is not None:
            outcome.permanent.append((member, r))
