"""`syncd plan -o plan.json` and `syncd apply plan.json`: review a plan, then apply exactly that plan.

A saved plan holds, per (group, provider) pair, the ops to send and two fingerprints: one of the desired
members as the sources gave them, one of the provider group's members as read. `apply` re-reads both; if
either changed for any pair, the world has moved since the plan was reviewed and the whole plan is refused
before anything is sent. Otherwise the saved ops are applied as they are, not re-planned.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.config import Config
from syncd.errors import StalePlanError, SyncdError
from syncd.metrics import Metrics
from syncd.model import (
    Address,
    DesiredGroup,
    Member,
    Op,
    OpKind,
    PairStatus,
    Plan,
    Reject,
    RejectCode,
    RemoteMember,
    RunReport,
    Strategy,
    fingerprint,
)
from syncd.reconciler import PassOptions, Reconciler
from syncd.state import Store

FORMAT = "syncd-plan/1"


def desired_fingerprint(group: DesiredGroup) -> str:
    digest = hashlib.sha256()
    for fp in sorted(fingerprint(m) for m in group.members):
        digest.update(fp.encode())
    return digest.hexdigest()[:32]


def actual_fingerprint(actual: Sequence[RemoteMember] | None) -> str | None:
    if actual is None:
        return None  # the group does not exist (yet)
    digest = hashlib.sha256()
    for key, rid in sorted((m.key, m.id or "") for m in actual):
        digest.update(f"{key}\0{rid}\n".encode())
    return digest.hexdigest()[:32]


def _member(data: dict[str, Any]) -> Member:
    address = data.get("address")
    return Member(
        email=data["email"],
        first_name=data.get("first_name"),
        last_name=data.get("last_name"),
        address=Address(**address) if address else None,
    )


def _remote(items: Sequence[dict[str, Any]]) -> tuple[RemoteMember, ...]:
    return tuple(RemoteMember(m.get("email"), m.get("id")) for m in items)


def _reject_code(code: object) -> RejectCode | str:
    text = str(code or "rejected")
    return RejectCode(text) if text in RejectCode._value2member_map_ else text


@dataclass(frozen=True)
class SavedPair:
    group: str
    provider: str
    desired: str
    actual: str | None
    plan: Plan

    def as_dict(self) -> dict[str, Any]:
        p = self.plan
        return {
            "group": self.group,
            "provider": self.provider,
            "desired_fingerprint": self.desired,
            "actual_fingerprint": self.actual,
            "strategy": str(p.strategy),
            "desired": p.desired,
            "actual": p.actual,
            "guard": p.guard,
            "ops": [
                {
                    "kind": str(op.kind),
                    "contacts": [asdict(c) for c in op.contacts],
                    "members": [{"email": m.email, "id": m.id} for m in op.members],
                }
                for op in p.ops
            ],
            "to_add": [asdict(c) for c in p.to_add],
            "to_remove": [{"email": m.email, "id": m.id} for m in p.to_remove],
            # What the plan leaves undone and why, so that applying it reports (and records) what the run would.
            "held_back": [{"email": m.email, "id": m.id} for m in p.held_back],
            "unsupported": [{"email": m.email, "id": m.id} for m in p.unsupported],
            "rejected": [{"email": r.email, "reason": r.reason, "code": str(r.code)} for r in p.rejected],
            "kept": p.kept,
            "protected": p.protected,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SavedPair:
        group, provider = data["group"], data["provider"]
        ops = tuple(
            Op(
                OpKind(op["kind"]),
                group,
                provider,
                contacts=tuple(_member(c) for c in op.get("contacts", [])),
                members=tuple(RemoteMember(m.get("email"), m.get("id")) for m in op.get("members", [])),
            )
            for op in data["ops"]
        )
        plan = Plan(
            group=group,
            provider=provider,
            strategy=Strategy(data["strategy"]),
            ops=ops,
            desired=int(data["desired"]),
            actual=data["actual"],
            to_add=tuple(_member(c) for c in data.get("to_add", [])),
            to_remove=_remote(data.get("to_remove", [])),
            held_back=_remote(data.get("held_back", [])),
            unsupported=_remote(data.get("unsupported", [])),
            rejected=tuple(
                Reject(r["email"], r["reason"], _reject_code(r.get("code"))) for r in data.get("rejected", [])
            ),
            kept=int(data.get("kept", 0)),
            protected=int(data.get("protected", 0)),
            guard=data.get("guard"),
            cost=len(ops),
        )
        return cls(group, provider, data["desired_fingerprint"], data["actual_fingerprint"], plan)


class PlanRecorder:
    """A plan hook for `syncd plan`: keeps every pair's plan and fingerprints, changes nothing."""

    def __init__(self) -> None:
        self.pairs: list[SavedPair] = []

    async def __call__(self, group: DesiredGroup, plan: Plan, actual: Sequence[RemoteMember] | None) -> Plan:
        self.pairs.append(
            SavedPair(group.name, plan.provider, desired_fingerprint(group), actual_fingerprint(actual), plan)
        )
        return plan

    def save(self, path: str | Path, *, config_path: str, allow_mass_removal: bool) -> None:
        doc = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": config_path,
            "allow_mass_removal": allow_mass_removal,
            "pairs": [p.as_dict() for p in sorted(self.pairs, key=lambda p: (p.group.casefold(), p.provider))],
        }
        try:
            Path(path).write_text(json.dumps(doc, indent=2) + "\n")
        except OSError as exc:
            raise SyncdError(f"cannot write the plan to {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class SavedPlan:
    pairs: dict[tuple[str, str], SavedPair]
    allow_mass_removal: bool

    @classmethod
    def load(cls, path: str | Path) -> SavedPlan:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SyncdError(f"cannot read plan {path}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise SyncdError(f"{path} is not a syncd plan (expected format {FORMAT})")
        try:
            pairs = [SavedPair.from_dict(p) for p in doc["pairs"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SyncdError(f"{path}: malformed plan ({type(exc).__name__}: {exc})") from None
        return cls({(p.group.casefold(), p.provider): p for p in pairs}, bool(doc.get("allow_mass_removal")))

    def options(self, *, dry_run: bool) -> PassOptions:
        return PassOptions(
            dry_run=dry_run,
            groups=frozenset(p.group for p in self.pairs.values()),
            providers=frozenset(p.provider for p in self.pairs.values()),
            pairs=frozenset(self.pairs),
            allow_mass_removal=self.allow_mass_removal,
            trigger="apply",
        )


class StalenessCheck:
    """A plan hook for `syncd apply`'s first, read-only pass: notes every pair whose sources or provider
    group changed since the plan was made."""

    def __init__(self, saved: SavedPlan) -> None:
        self.saved = saved
        self.seen: set[tuple[str, str]] = set()
        self.stale: list[str] = []

    async def __call__(self, group: DesiredGroup, plan: Plan, actual: Sequence[RemoteMember] | None) -> Plan:
        key = (group.name.casefold(), plan.provider)
        self.seen.add(key)
        why = _why_stale(self.saved.pairs.get(key), group, actual)
        if why:
            self.stale.append(f"{group.name} → {plan.provider}: {why}")
        return plan

    def missing(self, report: RunReport) -> list[str]:
        """The plan's pairs the check never saw, and why: the check pass's own failures say it better than
        "not found" (a provider or source that could not be read does not mean the group is gone)."""
        failed = {(p.group.casefold(), p.provider): p.error for p in report.pairs if p.status is PairStatus.FAILED}
        out = [
            f"{p.group} → {p.provider}: "
            + (f"could not be checked: {failed[k]}" if k in failed else "not found any more")
            for k, p in self.saved.pairs.items()
            if k not in self.seen
        ]
        if out:
            out += [f"could not be checked: {e}" for e in report.errors]
        return out


def _why_stale(saved: SavedPair | None, group: DesiredGroup, actual: Sequence[RemoteMember] | None) -> str | None:
    if saved is None:
        return "not in the plan"
    if desired_fingerprint(group) != saved.desired:
        return "the source's members changed since the plan was made"
    if actual_fingerprint(actual) != saved.actual:
        return "the provider group changed since the plan was made"
    return None


class SavedPlanApplier:
    """A plan hook for `syncd apply`'s second pass: checks the pair again and swaps in the saved plan."""

    def __init__(self, saved: SavedPlan) -> None:
        self.saved = saved

    async def __call__(self, group: DesiredGroup, plan: Plan, actual: Sequence[RemoteMember] | None) -> Plan:
        saved = self.saved.pairs.get((group.name.casefold(), plan.provider))
        why = _why_stale(saved, group, actual)
        if why or saved is None:
            raise StalePlanError(f"plan is stale: {why}")
        # The rejects as found now (they carry the members, so consent rejects are remembered): the connector
        # refuses at send time anyone the provider holds as unsubscribed since the plan was saved anyway.
        return replace(saved.plan, rejected=plan.rejected)


async def make_plan(
    config: Config, store: Store, metrics: Metrics, options: PassOptions, out: str | Path, **kwargs: Any
) -> RunReport:
    """A dry run whose plans are saved to `out`."""
    folder = Path(out).parent
    if not folder.is_dir():  # said before anything is contacted, not after the whole pass
        raise SyncdError(f"cannot write the plan to {out}: there is no directory {folder}")
    recorder = PlanRecorder()
    reconciler = Reconciler(config, store, metrics, plan_hook=recorder, **kwargs)
    report = await reconciler.run(replace(options, dry_run=True))
    recorder.save(out, config_path=str(config.path), allow_mass_removal=options.allow_mass_removal)
    return report


async def apply_plan(config: Config, store: Store, metrics: Metrics, path: str | Path, **kwargs: Any) -> RunReport:
    """Check every pair of the saved plan against the world (reads only); refuse the whole plan if anything
    moved; else apply the saved ops. Between the check and the apply each pair is checked once more."""
    saved = SavedPlan.load(path)
    check = StalenessCheck(saved)
    checked = await Reconciler(config, store, metrics, plan_hook=check, **kwargs).run(saved.options(dry_run=True))
    problems = check.stale + check.missing(checked)
    if problems:
        raise StalePlanError(
            f"refusing stale plan {path}; nothing was applied. Make a new plan. " + "; ".join(problems)
        )
    return await Reconciler(config, store, metrics, plan_hook=SavedPlanApplier(saved), **kwargs).run(
        saved.options(dry_run=False)
    )
