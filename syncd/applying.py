"""Executes a Plan through a connector, op by op, and writes down what happened to every member.

A dry run walks exactly this path and skips only the sending: the same ops are described (as "would …"),
the same ledger entries are produced (outcome `would`). One failing op does not stop the others, except
when the failure says nothing else can work either (bad credentials, the group is gone).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from connectors.base import AuthError, Connector, ConnectorError, NotFound, RemoteGroup, email_key
from syncd.model import LedgerOutcome, Member, MemberReject, Op, OpKind, Plan, Reject, RemoteMember
from syncd.state import LedgerEntry

log = logging.getLogger("syncd.apply")


@dataclass
class Applied:
    """What applying one plan achieved."""

    group: RemoteGroup | None
    added: list[Member] = field(default_factory=list)
    removed: list[RemoteMember] = field(default_factory=list)
    rejected: list[Reject] = field(default_factory=list)  # refused by the provider
    permanent: list[tuple[Member, MemberReject]] = field(default_factory=list)  # rejects to remember
    failures: list[str] = field(default_factory=list)  # one line per failed op
    ledger: list[LedgerEntry] = field(default_factory=list)


def _label(m: RemoteMember) -> str:
    return m.email or f"id:{m.id}"


class Applier:
    """Applies plans for one connector. `remove_reason` says in the ledger why members were removed."""

    def __init__(self, connector: Connector, *, dry_run: bool) -> None:
        self.connector = connector
        self.dry_run = dry_run

    async def apply(self, plan: Plan, group: RemoteGroup | None, *, remove_reason: str) -> Applied:
        out = Applied(group=group)
        note = _Ledger(plan, out)
        note.removes(plan.held_back, LedgerOutcome.BLOCKED, f"held back: {plan.guard}")
        note.removes(
            plan.unsupported,
            LedgerOutcome.UNSUPPORTED,
            f"not in source, but {plan.provider}'s API cannot remove members",
        )
        aborted: str | None = None
        for op in plan.ops:
            if aborted is not None:
                self._failed(op, aborted, note)
                continue
            prefix = "would " if self.dry_run else ""
            log.info("%s%s", prefix, op.describe())
            log.debug("%s%s", prefix, op.describe(verbose=True))
            if self.dry_run:
                self._would(op, plan, note, remove_reason)
                continue
            try:
                await self._send(op, plan, note, remove_reason)
            except (AuthError, NotFound) as exc:
                aborted = f"not attempted after: {exc.message}"
                self._failed(op, exc.message, note)
            except ConnectorError as exc:
                self._failed(op, exc.message, note)
        return out

    async def _send(self, op: Op, plan: Plan, note: _Ledger, remove_reason: str) -> None:
        out = note.out
        if op.kind is OpKind.CREATE_GROUP:
            out.group = await self.connector.create_group(op.group)
            return
        if out.group is None:
            raise NotFound(f"group {op.group!r} does not exist on {op.provider}")
        if op.kind is OpKind.ADD:
            result = await self.connector.add_members(out.group, op.contacts)
            done = set(result.done)
            note.adds([m for m in op.contacts if m.key in done], LedgerOutcome.APPLIED, "in source")
            note.rejects(op.contacts, result.rejected)
        elif op.kind is OpKind.REMOVE:
            result = await self.connector.remove_members(out.group, op.members)
            done = set(result.done)
            removed = [m for m in op.members if m.key in done]
            out.removed += removed
            note.removes(removed, LedgerOutcome.APPLIED, remove_reason)
        else:
            result = await self.connector.reset_members(out.group, op.contacts)
            done, new = set(result.done), {m.key for m in plan.to_add}
            note.adds([m for m in op.contacts if m.key in done and m.key in new], LedgerOutcome.APPLIED, "in source")
            note.rejects(op.contacts, result.rejected)
            out.removed += plan.to_remove
            note.removes(plan.to_remove, LedgerOutcome.APPLIED, f"{remove_reason} (group reset)")

    def _would(self, op: Op, plan: Plan, note: _Ledger, remove_reason: str) -> None:
        if op.kind is OpKind.ADD:
            note.adds(op.contacts, LedgerOutcome.WOULD, "in source")
        elif op.kind is OpKind.REMOVE:
            note.removes(op.members, LedgerOutcome.WOULD, remove_reason)
        elif op.kind is OpKind.RESET:
            new = {m.key for m in plan.to_add}
            note.adds([m for m in op.contacts if m.key in new], LedgerOutcome.WOULD, "in source")
            note.removes(plan.to_remove, LedgerOutcome.WOULD, f"{remove_reason} (group reset)")

    def _failed(self, op: Op, message: str, note: _Ledger) -> None:
        log.warning("could not %s: %s", op.describe(), message)
        note.out.failures.append(f"{op.describe()}: {message}")
        if op.kind is OpKind.REMOVE:
            note.removes(op.members, LedgerOutcome.FAILED, message)
        else:
            note.adds(op.contacts, LedgerOutcome.FAILED, message, count=False)


@dataclass
class _Ledger:
    """Collects one plan's ledger entries (and the added list, for applied adds)."""

    plan: Plan
    out: Applied

    def adds(self, members: Iterable[Member], outcome: LedgerOutcome, reason: str, *, count: bool = True) -> None:
        members = list(members)
        if count and outcome is LedgerOutcome.APPLIED:
            self.out.added += members
        self.out.ledger += [
            LedgerEntry(self.plan.group, self.plan.provider, m.email, OpKind.ADD, outcome, reason) for m in members
        ]

    def removes(self, members: Iterable[RemoteMember], outcome: LedgerOutcome, reason: str) -> None:
        self.out.ledger += [
            LedgerEntry(self.plan.group, self.plan.provider, _label(m), OpKind.REMOVE, outcome, reason) for m in members
        ]

    def rejects(self, contacts: Iterable[Member], rejects: Iterable[MemberReject]) -> None:
        by_key = {m.key: m for m in contacts}
        for r in rejects:
            self.out.rejected.append(Reject(r.email, r.reason, r.code))
            self.out.ledger.append(
                LedgerEntry(self.plan.group, self.plan.provider, r.email, OpKind.ADD, LedgerOutcome.REJECTED, r.reason)
            )
            member = by_key.get(email_key(r.email))
            if r.permanent and member is not None:
                self.out.permanent.append((member, r))
