"""Quarantine: a pair the removal guard blocked stays blocked, pass after pass, until a person decides.

DESIGN.md §Semantics: adds still go; the held removals go only when a plan is back under the limits, a run with
`--allow-mass-removal`, or after `syncd approve GROUP --reason TEXT`, and then once: the approved pass removes,
its ledger rows carry the approval's reason, and the pair leaves quarantine. The state lives in the state DB's
`quarantine` table (so every replica and every later `syncd run` sees it); the metrics say a pair entered it
once (`syncd_removals_blocked_total`) and whether it is in it now (`syncd_pair_blocked`), so an alert fires once
per blocked pair, not once per pass. Dry runs read the quarantine and change nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from syncd.state import Quarantined, Store

__all__ = ["Change", "Standing", "settle", "standing"]


class Change(enum.StrEnum):
    """What a real pass did to the pair's quarantine."""

    NONE = "none"  # not held before, not held now
    BLOCKED = "blocked"  # newly held back
    STILL_BLOCKED = "still_blocked"  # held back again (no new alert)
    RELEASED = "released"  # approved removals went, a run allowed them, or the plan is back under the limits
    UNCHANGED = "unchanged"  # the pass failed: the quarantine (and an approval) stays as it was


@dataclass(frozen=True, slots=True)
class Standing:
    """The pair's quarantine when its pass starts."""

    held: Quarantined | None = None

    @property
    def approved(self) -> bool:
        return self.held is not None and self.held.approved

    def remove_reason(self, reason: str) -> str:
        """The ledger's reason for a removal: with the approval's, when the removals go because of one."""
        if self.held is None or self.held.approved_at is None:
            return reason
        when = self.held.approved_at.strftime("%Y-%m-%d %H:%M UTC")
        return f"{reason}; mass removal approved {when}: {self.held.approval}"


def standing(store: Store, group: str, provider: str) -> Standing:
    """The pair's quarantine, as the state DB has it (`group`: its key, as the state files it)."""
    held = store.quarantined(group, provider)
    return Standing(next((q for q in held if q.group == group), None))


def settle(
    store: Store,
    group: str,
    provider: str,
    before: Standing,
    *,
    name: str,
    run_id: str,
    guard: str | None,
    held_back: int,
    failed: bool,
) -> Change:
    """After a real pass of the pair: hold it (the guard blocked it), release it (it was held and its removals
    are no longer held back), or leave it (a failed pass decides nothing)."""
    if failed:
        return Change.UNCHANGED
    if guard is not None:
        new = store.hold(group, provider, name=name, run_id=run_id, reason=guard, held_back=held_back)
        return Change.BLOCKED if new else Change.STILL_BLOCKED
    if before.held is not None:
        store.release(group, provider)
        return Change.RELEASED
    return Change.NONE
