"""One reconciliation pass: read sources → bind and read provider groups → plan → apply → record.

Pairs run concurrently; each provider's pacing (inside its connector) keeps them within its rate limit.
A pair's trouble stays that pair's: a failing provider, a missing group or a bug fails the pair, records
why, and lets the others finish. A source that cannot be read changes nothing for its groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import httpx

from connectors.base import (
    AddChecker,
    Connector,
    ConnectorError,
    ConsentReader,
    GroupCreationProbe,
    MemberReject,
    NotFound,
    RemoteGroup,
    RemoteMember,
    Suppression,
    email_key,
)
from connectors.http import RequestTally, count_requests, let_go
from connectors.registry import build_connector
from connectors.settings import BuildContext, ProviderSettings
from syncd import quarantine
from syncd.applying import Applied, Applier, OpOutcome
from syncd.config import Config
from syncd.errors import SyncdError
from syncd.logs import bind_field
from syncd.metrics import Metrics
from syncd.model import (
    DesiredGroup,
    KnownReject,
    Member,
    PairResult,
    PairStatus,
    Plan,
    RemovalPolicy,
    RunReport,
    Strategy,
    Target,
    fingerprint,
)
from syncd.planning import Guard, key_set, missing_fields, plan
from syncd.quarantine import Standing
from syncd.sources import Source, build_sources, read_sources
from syncd.state import Binding, Store, StoredReject
from syncd.state.budget import SharedBucket
from syncd.state.fence import Fence, FencedOut, current_fence

log = logging.getLogger("syncd.reconciler")

REMOVE_REASONS = {
    RemovalPolicy.MIRROR: "not in source (removal_policy mirror)",
    RemovalPolicy.OWNED: "added by syncd, no longer in source (removal_policy owned)",
    RemovalPolicy.ADD_ONLY: "not in source",
}


async def _can_create_groups(connector: Connector) -> bool:
    """Whether a missing group can be created: the API's capability, found out from the server itself where it
    depends on the server's release (`GroupCreationProbe`)."""
    if not connector.capabilities.can_create_group:
        return False
    return not isinstance(connector, GroupCreationProbe) or await connector.can_create_groups()


class BindError(SyncdError):
    """The pair's provider group cannot be found (or created): the pair fails, the message says what to do."""


@dataclass(frozen=True)
class PassOptions:
    dry_run: bool = False
    groups: frozenset[str] = frozenset()  # only these groups (case-insensitive); empty = all
    providers: frozenset[str] = frozenset()  # only these providers; empty = all
    pairs: frozenset[tuple[str, str]] | None = None  # only these (casefolded group, provider) pairs
    skip_groups: frozenset[str] = frozenset()  # not these groups (casefolded): other queue jobs work them
    # A member pass (`syncd run --member`): only these members (email keys, `email_key`), each pair's desired and
    # current members narrowed to them before planning. Empty = every member. See `_narrow`.
    members: frozenset[str] = frozenset()
    allow_mass_removal: bool = False
    trigger: str = "cli"
    # Several replicas on one PostgreSQL state DB: the queue job this pass works its pair under. Every state
    # write checks it is still this replica's, and so does the applier before each provider write.
    fence: Fence | None = None


class PlanHook(Protocol):
    """Sees every plan before it is applied and may replace it (`syncd plan` saves plans; `syncd apply`
    swaps in the saved plan after checking nothing changed since). Raising a SyncdError fails the pair."""

    async def __call__(self, group: DesiredGroup, plan: Plan, actual: Sequence[RemoteMember] | None) -> Plan: ...


class ProgressHook(Protocol):
    """Told, after every op, how many of a pair's planned member changes are done (for a terminal display)."""

    def __call__(self, group: str, provider: str, done: int, total: int) -> None: ...


@dataclass
class _Pair:
    group: DesiredGroup
    target: Target
    connector: Connector
    known_rejects: dict[str, KnownReject]
    tally: RequestTally = field(default_factory=RequestTally)


def _candidates(pair: _Pair, actual: Sequence[RemoteMember] | None) -> list[Member]:
    """The desired members an add would bring in: not in the group, nor remembered as a reject (unchanged)."""
    present = key_set([m.key for m in actual or ()])
    return [m for m in pair.group.members if m.key not in present and not _remembered(pair, m)]


def _addable(
    candidates: Sequence[Member], suppressed: Mapping[str, Suppression], required: frozenset[str]
) -> list[Member]:
    """The candidates an add may send: not held as unsubscribed or bounced, with every field the API requires."""
    return [m for m in candidates if m.key not in suppressed and not missing_fields(m, required)]


def _remembered(pair: _Pair, member: Member) -> bool:
    known = pair.known_rejects.get(member.key)
    return known is not None and known.fingerprint == fingerprint(member)


@dataclass(frozen=True)
class _Whole:
    """In a member pass, the pair's whole group: how many members the source wants and the provider group has
    (None: it does not exist yet). The plan covers only the chosen members; the guard and the report use these."""

    desired: int
    actual: int | None


def _narrow(
    pair: _Pair, actual: list[RemoteMember] | None, members: frozenset[str]
) -> tuple[_Pair, list[RemoteMember] | None, _Whole | None]:
    """A member pass (`syncd run --member`): the pair with its desired members (and the source's rejects of them)
    narrowed to the chosen email keys, the group's current members narrowed likewise, and the whole group's sizes;
    the plan is then exactly their adds and removes, so no other member can be touched. A provider group that does
    not exist yet is not created for a member it would not hold. No `members`: everything as it is, and None."""
    if not members:
        return pair, actual, None
    whole = _Whole(len(pair.group.members), None if actual is None else len(actual))
    group = replace(
        pair.group,
        members=tuple(m for m in pair.group.members if m.key in members),
        rejected=tuple(r for r in pair.group.rejected if email_key(r.email) in members),
    )
    chosen = None if actual is None else [m for m in actual if m.key in members]
    if chosen is None and not group.members:
        chosen = []  # nothing to create the group for: planned as an empty group, so nothing is sent
    return replace(pair, group=group), chosen, whole


def _as_whole(p: Plan, whole: _Whole | None) -> Plan:
    """A member pass's plan, counted as the whole group (the report's desired and actual_before)."""
    if whole is None:
        return p
    return replace(p, desired=whole.desired, actual=whole.actual if p.actual is not None else None)


async def _refused(
    connector: Connector, remote: RemoteGroup | None, addable: Sequence[Member]
) -> Mapping[str, MemberReject]:
    """Who an add would refuse, where the connector can tell by reading (`AddChecker`)."""
    if not addable or not isinstance(connector, AddChecker):
        return {}
    return {email_key(r.email): r for r in await connector.check_adds(remote, addable)}


@dataclass
class _Providers:
    """The providers a pass tried: a connector for each usable one, why for each one that is not."""

    connectors: dict[str, Connector] = field(default_factory=dict)
    unusable: dict[str, str] = field(default_factory=dict)
    # groups that fail closed this pass (a group they exclude was not read), by casefolded key, with why: their
    # pairs are recorded as failed and never worked
    closed_groups: dict[str, str] = field(default_factory=dict)

    def tried(self, provider: str) -> bool:
        return provider in self.connectors or provider in self.unusable

    def why_not(self, group: DesiredGroup, provider: str) -> str | None:
        """Why the pair is not worked this pass (its group fails closed, or its provider is unusable), or None."""
        return self.closed_groups.get(group.key.casefold()) or self.unusable.get(provider)


# State DB calls run in a worker thread (the event loop never waits on the database); asyncio.to_thread carries
# the caller's context along, the queue job's fence included (syncd.state.fence).
_db = asyncio.to_thread


class _StoreSink:
    """Writes one pair's results to the state DB as each op completes: a pass killed halfway keeps its ledger,
    the members it added (for the `owned` policy) and the binding of a group it created."""

    def __init__(
        self, store: Store, run_id: str, pair: _Pair, plan: Plan, *, dry_run: bool, progress: ProgressHook | None
    ) -> None:
        self.store, self.run_id, self.pair, self.dry_run = store, run_id, pair, dry_run
        self.progress = progress
        self.total = sum(op.size for op in plan.ops)
        self.done = 0

    async def group_created(self, group: RemoteGroup) -> None:
        binding = Binding(self.pair.group.key, self.pair.target.provider, group.id, group.name, True)
        await _db(self.store.save_binding, binding)

    async def recorded(self, outcome: OpOutcome) -> None:
        key = self.pair.group.key  # the state files the pair under the group's key (its name unless one is given)
        entries = outcome.ledger if key == self.pair.group.name else [replace(e, group=key) for e in outcome.ledger]
        await _db(self.store.record_ledger, self.run_id, entries)
        self._show_progress(outcome)
        if not self.dry_run:
            await _db(self._remember, outcome)

    def _show_progress(self, outcome: OpOutcome) -> None:
        if self.progress is None or not self.total:
            return
        self.done += len(outcome.added) + len(outcome.removed) + len(outcome.rejected)
        self.progress(self.pair.group.name, self.pair.target.provider, min(self.done, self.total), self.total)

    def _remember(self, outcome: OpOutcome) -> None:
        """Who syncd now owns (for the `owned` policy), and the permanent rejects: those it learnt, and those it
        may forget because the member was added after all."""
        store, name, provider = self.store, self.pair.group.key, self.pair.target.provider
        if outcome.added:
            store.mark_owned(name, provider, [m.key for m in outcome.added])
            cleared = [m.key for m in outcome.added if m.key in self.pair.known_rejects]
            if cleared:
                store.clear_rejects(provider, cleared, group=name)
        if outcome.removed:
            store.unmark_owned(name, provider, [m.key for m in outcome.removed])
        if outcome.permanent:
            store.save_rejects(
                provider, name, [StoredReject(m.email, fingerprint(m), r.reason, r.code) for m, r in outcome.permanent]
            )


@dataclass(frozen=True)
class _Changes:
    """A pair's member changes: made (or, in a dry run, to be made), and still pending after the pass."""

    added: int = 0
    removed: int = 0
    pending_add: int = 0
    pending_remove: int = 0

    @classmethod
    def of(cls, p: Plan, applied: Applied, *, dry_run: bool) -> _Changes:
        unremovable = len(p.held_back) + len(p.unsupported)  # pending whatever was sent
        if dry_run:
            added, removed = len(p.to_add), len(p.to_remove)
            return cls(added, removed, added, removed + unremovable)
        added, removed = len(applied.added), len(applied.removed)
        pending_add = max(0, len(p.to_add) - added - len(applied.rejected))
        return cls(added, removed, pending_add, len(p.to_remove) - removed + unremovable)


def _status(p: Plan, applied: Applied, changes: _Changes, *, dry_run: bool) -> PairStatus:
    """The pair's status, as `PairStatus` defines them. Ops whose members were all refused changed nothing: that
    is as in sync as the group can be."""
    changed = bool(changes.added or changes.removed) or (applied.group is not None and p.actual is None)
    if applied.failures:
        return PairStatus.PARTIAL if changed else PairStatus.FAILED
    if p.guard:
        return PairStatus.BLOCKED
    if dry_run:
        return PairStatus.PENDING if p.has_changes else PairStatus.IN_SYNC
    return PairStatus.APPLIED if changed else PairStatus.IN_SYNC


class Reconciler:
    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: Metrics | None = None,
        *,
        sources: Sequence[Source] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        progress: ProgressHook | None = None,
        plan_hook: PlanHook | None = None,
        pair_done: Callable[[PairResult], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics or Metrics()
        self.sources: Sequence[Source] = (
            sources if sources is not None else build_sources(config, transport=transport, hooks=self.metrics)
        )
        self.transport = transport  # tests: one transport serving every sandbox
        self.progress = progress
        self.plan_hook = plan_hook
        self.pair_done = pair_done  # told each pair's result as soon as it is recorded (the demo prints it)
        self._member_runs: set[str] = set()  # the runs under way that are member passes (see `_record_pair`)

    # -- the pass -------------------------------------------------------------------------------------
    async def run(self, options: PassOptions = PassOptions(), stop: asyncio.Event | None = None) -> RunReport:
        """One pass. Setting `stop` ends it early but cleanly: requests in flight finish, nothing new starts,
        and the run is recorded as interrupted."""
        started = time.monotonic()
        selection = {"groups": sorted(options.groups), "providers": sorted(options.providers)}
        if options.members:
            selection["members"] = sorted(options.members)
        token = current_fence.set(options.fence)
        try:
            return await self._run(options, stop, started, selection)
        finally:
            current_fence.reset(token)
            gc.unfreeze()  # what `connectors.base.in_bulk` froze: cyclic garbage among it is collected again

    async def _run(
        self, options: PassOptions, stop: asyncio.Event | None, started: float, selection: dict[str, list[str]]
    ) -> RunReport:
        run_id = await _db(self.store.start_run, dry_run=options.dry_run, trigger=options.trigger, selection=selection)
        bind_field("run_id", run_id)  # every line the pass (and the pair tasks it starts) logs names its run
        if options.members:
            self._member_runs.add(run_id)
        try:
            return await self._pass(run_id, options, stop, started)
        except asyncio.CancelledError:
            # Cancelled (the daemon's stop bound ran out, Ctrl-C): the run is recorded as interrupted, not left
            # "running" forever.
            with contextlib.suppress(SyncdError):  # in this thread: a cancelled task awaits nothing more
                self.store.finish_run(run_id, outcome="interrupted", errors=["syncd was stopped before the pass ended"])
            self.metrics.observe_run("interrupted", time.monotonic() - started)
            log.info("run %s recorded as interrupted", run_id[:8])
            raise
        except Exception as exc:
            # The pass cannot go on (the state DB went away, a bug): it still does not stay "running" forever.
            with contextlib.suppress(SyncdError):
                await _db(self.store.finish_run, run_id, outcome="failure", errors=[f"the pass ended early: {exc}"])
            raise
        finally:
            self._member_runs.discard(run_id)

    async def _pass(self, run_id: str, options: PassOptions, stop: asyncio.Event | None, started: float) -> RunReport:
        groups, errors, closed = await self._read_sources(options)
        async with contextlib.AsyncExitStack() as open_connectors:  # closed however the pairs end
            providers = await self._build_connectors(open_connectors, groups, options)
            providers.closed_groups.update(closed)
            selected = self._select(groups, providers, options)
            ran = await self._run_pairs(selected, providers, options, run_id, stop)
        results = await self._collect(selected, providers, ran, run_id)
        # The desired members go a slice at a time (`let_go`) once nothing but these lists holds them.
        members = [list(g.members) for g in groups]
        del groups, selected, providers, ran
        await let_go(*members)
        return await self._record_run(run_id, options, stop, started, results, errors)

    async def _read_sources(self, options: PassOptions) -> tuple[list[DesiredGroup], list[str], dict[str, str]]:
        """The desired groups (of the chosen ones, if any: by name or key), the sources' errors, and why the
        groups that fail closed do (by key; they are among the groups, and their pairs fail unworked).

        Every source fails closed on its own (errors, timeouts, conflicts, implausibly empty groups): its
        groups are then simply not among the desired ones, so nothing is sent for them. See syncd.sources.
        A group whose `exclude` names a group that was not read fails closed. A pass over some groups only
        leaves out the sources that cannot yield any of them or of the groups they exclude: nothing is asked of
        a CRM for groups nobody chose, and its trouble is not this pass's."""
        wanted = {g.casefold() for g in options.groups}
        needed = self.config.exclusion_closure(wanted) if wanted else wanted
        sources = [s for s in self.sources if self._may_yield(s, needed)]
        read = await read_sources(sources, self.store)
        closed = {g.key.casefold(): why for g, why in read.closed}
        return (
            [
                g
                for g in [*read.groups, *(g for g, _ in read.closed)]
                if (not wanted or g.name.casefold() in wanted or g.key.casefold() in wanted)
                and g.name.casefold() not in options.skip_groups
            ],
            read.errors,
            closed,
        )

    @staticmethod
    def _may_yield(source: Source, wanted: set[str]) -> bool:
        names: Sequence[str] | None = getattr(source, "group_names", None)
        return not wanted or names is None or any(name.casefold() in wanted for name in names)

    async def _build_connectors(
        self, stack: contextlib.AsyncExitStack, groups: Sequence[DesiredGroup], options: PassOptions
    ) -> _Providers:
        """A connector for every chosen provider some group targets, entered into `stack` (which closes them).
        A provider whose connector cannot be built is unusable: its pairs fail, the others go on."""
        providers = _Providers()
        for settings in self.config.providers:
            if options.providers and settings.name not in options.providers:
                continue
            if not any(self._targets(g, settings.name) for g in groups):
                continue
            try:
                connector = self._connector(settings)
            except Exception as exc:  # e.g. an invalid proxy in the environment: that provider's pairs fail
                log.error("provider %s cannot be used: %s: %s", settings.name, type(exc).__name__, exc)
                providers.unusable[settings.name] = (
                    f"provider {settings.name} cannot be used: {type(exc).__name__}: {exc}"
                )
                continue
            providers.connectors[settings.name] = await stack.enter_async_context(connector)
        return providers

    def _connector(self, settings: ProviderSettings) -> Connector:
        # On a shared (PostgreSQL) state DB, every replica, and every `syncd run` next to them, paces its requests
        # to a provider from one budget in the database (syncd.state.budget).
        shared = self.store.dialect == "postgresql"
        ctx = BuildContext(
            transport=self.transport,
            hooks=self.metrics,
            cache=self.store.recipient_cache(settings.name),
            limiter=(lambda provider, pacing: SharedBucket(self.store, provider, pacing)) if shared else None,
        )
        return build_connector(settings, ctx)

    @staticmethod
    def _select(
        groups: Sequence[DesiredGroup], providers: _Providers, options: PassOptions
    ) -> list[tuple[DesiredGroup, Target]]:
        """The (group, target) pairs of this pass, in config order: those of the providers tried, usable or
        not, and of the chosen pairs (if any)."""
        return [
            (g, t)
            for g in groups
            for t in g.targets
            if providers.tried(t.provider)
            and (options.pairs is None or (g.name.casefold(), t.provider) in options.pairs)
        ]

    async def _run_pairs(
        self,
        selected: Sequence[tuple[DesiredGroup, Target]],
        providers: _Providers,
        options: PassOptions,
        run_id: str,
        stop: asyncio.Event | None,
    ) -> list[PairResult | BaseException | None]:
        """Works the pairs of the usable providers concurrently; answers in the order of `selected`, less the
        pairs of unusable providers. Every pair runs to its end, whatever happens to the others: none is left
        running unawaited while the connectors close under it. An exception a pair let out is its answer."""
        pairs = [
            _Pair(g, t, providers.connectors[t.provider], await _db(self.store.known_rejects, t.provider, g.key))
            for g, t in selected
            if t.provider in providers.connectors and providers.why_not(g, t.provider) is None
        ]
        return await asyncio.gather(
            *(self._run_pair(pair, options, run_id, stop) for pair in pairs), return_exceptions=True
        )

    async def _collect(
        self,
        selected: Sequence[tuple[DesiredGroup, Target]],
        providers: _Providers,
        ran: Sequence[PairResult | BaseException | None],
        run_id: str,
    ) -> list[PairResult]:
        """The pass's results in the order of `selected`: the first exception a pair let out (if any) ends the
        pass; a pair of an unusable provider, or of a group that fails closed, is recorded as failed; a pair not
        worked (stopping, or another replica's lease) has none."""
        for answer in ran:
            if isinstance(answer, BaseException):
                raise answer
        answers = iter(ran)
        results: list[PairResult] = []
        for g, t in selected:
            why = providers.why_not(g, t.provider)
            result = next(answers) if why is None else await self._unusable(g, t.provider, run_id, why)
            if isinstance(result, PairResult):
                results.append(result)
        return results

    async def _record_run(
        self,
        run_id: str,
        options: PassOptions,
        stop: asyncio.Event | None,
        started: float,
        results: Sequence[PairResult],
        errors: Sequence[str],
    ) -> RunReport:
        report = RunReport(run_id=run_id, dry_run=options.dry_run, pairs=tuple(results), errors=tuple(errors))
        outcome = "interrupted" if stop is not None and stop.is_set() else self._outcome(report)
        report = replace(report, outcome=outcome)
        await _db(self.store.finish_run, run_id, outcome=outcome, errors=errors)
        self.metrics.observe_run(outcome, time.monotonic() - started)
        log.info(
            "pass %s%s: %d pairs, outcome %s",
            run_id[:8],
            " (dry run)" if options.dry_run else "",
            len(results),
            outcome,
        )
        return report

    @staticmethod
    def _outcome(report: RunReport) -> str:
        if report.ok:
            return "success"
        if not report.errors and all(
            p.status in (PairStatus.IN_SYNC, PairStatus.APPLIED, PairStatus.PENDING, PairStatus.BLOCKED)
            for p in report.pairs
        ):
            return "blocked"
        return "failure"

    @staticmethod
    def _targets(group: DesiredGroup, provider: str) -> list[Target]:
        return [t for t in group.targets if t.provider == provider]

    # -- one pair -------------------------------------------------------------------------------------
    async def _run_pair(
        self, pair: _Pair, options: PassOptions, run_id: str, stop: asyncio.Event | None
    ) -> PairResult | None:
        """The pair's result; None when it was not worked (syncd is stopping)."""
        if stop is not None and stop.is_set():
            return None
        return await self._work_pair(pair, options, run_id, stop)

    async def _work_pair(
        self, pair: _Pair, options: PassOptions, run_id: str, stop: asyncio.Event | None
    ) -> PairResult:
        group, provider = pair.group, pair.target.provider
        with count_requests(pair.tally):
            try:
                remote, actual, created_by_syncd, bound_as = await self._read(pair, options)
                pair, actual, whole = _narrow(pair, actual, options.members)
                group = pair.group
                suppressed, refused = await self._provider_says(pair, remote, actual, bound_as)
                policy = group.removal_policy or (
                    RemovalPolicy.MIRROR if created_by_syncd or remote is None else RemovalPolicy.OWNED
                )
                # a member pass neither uses nor settles an approval: it is not the pass the approval is for
                held = Standing() if whole else await _db(quarantine.standing, self.store, bound_as, provider)
                # pure CPU, a second or more for a million members: in a worker thread, so the loop goes on
                the_plan = await asyncio.to_thread(
                    plan,
                    group=group.name,
                    provider=provider,
                    desired=group.members,
                    actual=actual,
                    capabilities=pair.connector.capabilities,
                    policy=policy,
                    guard=self._guard(group, options, approved=held.approved),
                    owned=await _db(self.store.owned, bound_as, provider)
                    if policy is RemovalPolicy.OWNED
                    else frozenset(),
                    known_rejects=pair.known_rejects,
                    suppressed=suppressed,
                    refused=refused,
                    allow_non_atomic_reset=self.config.provider(provider).allow_non_atomic_reset,
                    group_size=None if whole is None else whole.actual,
                    protected=group.protected,
                )
                the_plan = _as_whole(the_plan, whole)
                if self.plan_hook is not None:
                    the_plan = await self.plan_hook(group, the_plan, actual)
                sink = _StoreSink(self.store, run_id, pair, the_plan, dry_run=options.dry_run, progress=self.progress)
                applier = Applier(
                    pair.connector,
                    dry_run=options.dry_run,
                    sink=sink,
                    stop=stop,
                    before_write=self._fence_check(options),
                )
                quiet = [m.key for m in (*the_plan.held_back, *the_plan.unsupported)]
                noted = await _db(self.store.noted_removals, bound_as, provider, quiet) if quiet else {}
                reason = held.remove_reason(REMOVE_REASONS[policy])
                applied = await applier.apply(the_plan, remote, remove_reason=reason, noted=noted)
                change = await self._settle(pair, bound_as, held, run_id, options, the_plan, applied)
                if actual is not None:
                    await let_go(actual)  # a million members freed a slice at a time, not in one stall of the loop
            except FencedOut:
                raise  # another replica has the pair now: nothing more is written for it here
            except (ConnectorError, SyncdError) as exc:
                return await self._failed(pair, run_id, str(exc))
            except Exception as exc:  # a bug must not take the other pairs down with it
                log.exception("pair %r → %s crashed", group.name, provider)
                return await self._failed(pair, run_id, f"internal error: {type(exc).__name__}: {exc}")
        return await self._finish(pair, run_id, options, the_plan, applied, change)

    async def _settle(
        self, pair: _Pair, bound_as: str, held: Standing, run_id: str, options: PassOptions, p: Plan, applied: Applied
    ) -> quarantine.Change:
        """The pair's quarantine after a real pass (syncd.quarantine); a dry run changes none, nor does a member
        pass (`--member`: it planned a few members, not the pair)."""
        if options.dry_run or options.members:
            return quarantine.Change.UNCHANGED
        change = await _db(
            quarantine.settle,
            self.store,
            bound_as,
            pair.target.provider,
            held,
            name=pair.group.name,
            run_id=run_id,
            guard=p.guard,
            held_back=len(p.held_back),
            failed=bool(applied.failures),
        )
        if change is quarantine.Change.BLOCKED:
            log.warning(
                "group %r → %s: quarantined (%s): its removals wait, pass after pass, for `syncd approve` or a plan "
                "under the limits",
                pair.group.name,
                pair.target.provider,
                p.guard,
            )
        elif change is quarantine.Change.RELEASED:
            log.info("group %r → %s: out of quarantine", pair.group.name, pair.target.provider)
        return change

    async def _provider_says(
        self, pair: _Pair, remote: RemoteGroup | None, actual: Sequence[RemoteMember] | None, bound_as: str
    ) -> tuple[Mapping[str, Suppression], Mapping[str, MemberReject]]:
        """What the provider says, by reading only, about the desired members not in the group (and not already
        remembered as rejects): who it holds as unsubscribed, bounced or blacklisted (consent first; a removal
        syncd itself made, as its ledger says, is not held against the member: it is the one suppression syncd
        may undo), then who an add would refuse. A dry run asks the same, so it reports what the run will do."""
        candidates = await asyncio.to_thread(_candidates, pair, actual)
        suppressed = await self._suppressed(pair, remote, candidates, bound_as)
        required = pair.connector.capabilities.required_fields
        addable = await asyncio.to_thread(_addable, candidates, suppressed, required)
        return suppressed, await _refused(pair.connector, remote, addable)

    async def _suppressed(
        self, pair: _Pair, remote: RemoteGroup | None, candidates: Sequence[Member], bound_as: str
    ) -> Mapping[str, Suppression]:
        connector = pair.connector
        if not candidates or not isinstance(connector, ConsentReader):
            return {}
        keys = await asyncio.to_thread(lambda: [m.key for m in candidates])  # a million: off the event loop
        removed = await _db(self.store.removals_by_syncd, bound_as, pair.target.provider, keys) if remote else {}
        undo = {key: at.timestamp() for key, at in removed.items()}
        return await connector.suppressed(remote, keys, undo=undo)

    def _fence_check(self, options: PassOptions) -> Callable[[], Awaitable[None]] | None:
        """What the applier awaits before each provider write: on a queue job, that the job is still this
        replica's (syncd.state.fence); nothing otherwise."""
        fence, store = options.fence, self.store
        if fence is None:
            return None

        async def check() -> None:
            if not await _db(store.fence_holds, fence):
                raise FencedOut(fence.describe())

        return check

    def _keyed_anew(self, group: DesiredGroup) -> bool:
        """Whether a binding filed under the group's name may be this group's, from before it had its key: it has
        a key other than its name, and no group of the config has that name as its key."""
        name = group.name.casefold()
        return group.key.casefold() != name and name not in self.config.group_keys()

    def _guard(self, group: DesiredGroup, options: PassOptions, *, approved: bool = False) -> Guard:
        """The removal guard of the group; `approved`: a person approved the pair's held removals."""
        safety = self.config.safety
        return Guard(
            max_removals=group.max_removals if group.max_removals is not None else safety.max_removals,
            max_removal_ratio=(
                group.max_removal_ratio if group.max_removal_ratio is not None else safety.max_removal_ratio
            ),
            allow_mass_removal=options.allow_mass_removal or approved,
        )

    async def _read(
        self, pair: _Pair, options: PassOptions
    ) -> tuple[RemoteGroup | None, list[RemoteMember] | None, bool, str]:
        """The bound provider group, its members, whether syncd created it (None, None: it does not exist
        yet and will be created), and the group name the state DB keeps the pair under. A stored binding is
        trusted without a look-up: the member read proves the group is still there, so a steady-state pass
        costs one read. A binding, once made, is followed by id, so a rename on either side creates no
        duplicate; a group renamed in its source only in case keeps its binding (group names are compared
        case-insensitively), which a real run then files under the new spelling.

        The state DB files the pair under the group's `key` (its name unless one is given), so a group renamed
        but keeping its key keeps everything. A key just added to a group bound under its name finds that binding
        (unless another group now has that name as its key), and a real run carries it over to the key."""
        name, provider = pair.group.key, pair.target.provider
        binding = await _db(self.store.binding, name, provider)
        if binding is None and self._keyed_anew(pair.group):
            binding = await _db(self.store.binding, pair.group.name, provider)
        bound_as = name
        if binding is not None and binding.group != name:
            if options.dry_run:
                bound_as = binding.group
            else:
                await _db(self.store.rename_group, binding.group, name, provider)
        if binding is not None and not pair.target.group_id:
            remote = RemoteGroup(binding.remote_id, binding.remote_name)
            try:
                members = list(await pair.connector.read_members(remote))
                return remote, members, binding.created_by_syncd, bound_as
            except NotFound:
                log.warning(
                    "group %r: the %s group %s it was bound to is gone; looking it up by name",
                    pair.group.name,
                    pair.target.provider,
                    binding.remote_id,
                )
        found, created = await self._bind(pair, binding, options)
        if found is None:
            return None, None, created, bound_as
        return found, list(await pair.connector.read_members(found)), created, bound_as

    async def _bind(
        self, pair: _Pair, binding: Binding | None, options: PassOptions
    ) -> tuple[RemoteGroup | None, bool]:
        connector, name, provider = pair.connector, pair.group.name, pair.target.provider
        if pair.target.group_id:
            remote = await connector.find_group(group_id=pair.target.group_id)
            if remote is None:
                raise BindError(f"{provider} has no group with id {pair.target.group_id!r} (from the group's target)")
            created = binding is not None and binding.remote_id == remote.id and binding.created_by_syncd
            await self._save_binding(pair.group.key, provider, remote, created, options)
            return remote, created
        remote = await connector.find_group(name=name)
        if remote is not None:
            await self._save_binding(pair.group.key, provider, remote, False, options)
            return remote, False
        if not await _can_create_groups(connector):
            raise BindError(
                f"{provider} has no group named {name!r} and its API cannot create groups: "
                f"create it in {provider}, then run again (or set group_id in the group's target)"
            )
        return None, True

    async def _save_binding(
        self, group: str, provider: str, remote: RemoteGroup, created: bool, options: PassOptions
    ) -> None:
        if not options.dry_run:
            await _db(self.store.save_binding, Binding(group, provider, remote.id, remote.name, created))

    # -- recording ------------------------------------------------------------------------------------
    async def _failed(self, pair: _Pair, run_id: str, message: str) -> PairResult:
        return await self._record_failure(pair.group, pair.target.provider, run_id, message, pair.tally.as_dict())

    async def _unusable(self, group: DesiredGroup, provider: str, run_id: str, message: str) -> PairResult:
        return await self._record_failure(group, provider, run_id, message, RequestTally().as_dict())

    async def _record_failure(
        self, group: DesiredGroup, provider: str, run_id: str, message: str, requests: dict[str, int]
    ) -> PairResult:
        log.error("group %r → %s failed: %s", group.name, provider, message)
        result = PairResult(
            group=group.name,
            provider=provider,
            strategy=Strategy.INCREMENTAL,
            status=PairStatus.FAILED,
            desired=len(group.members),
            actual_before=0,
            add=0,
            remove=0,
            rejected=group.rejected,
            requests=requests,
            error=message,
        )
        await self._record_pair(run_id, result, None, dry_run=False, pending=None)
        if self.pair_done is not None:
            self.pair_done(result)
        return result

    async def _finish(
        self, pair: _Pair, run_id: str, options: PassOptions, p: Plan, applied: Applied, change: quarantine.Change
    ) -> PairResult:
        dry = options.dry_run
        changes = _Changes.of(p, applied, dry_run=dry)
        result = PairResult(
            group=pair.group.name,
            provider=pair.target.provider,
            strategy=p.strategy,
            status=_status(p, applied, changes, dry_run=dry),
            desired=p.desired,
            actual_before=p.actual or 0,
            add=changes.added,
            remove=changes.removed,
            unsupported_remove=len(p.unsupported),
            rejected=pair.group.rejected + p.rejected + tuple(applied.rejected),
            requests=pair.tally.as_dict(),
            error="; ".join(applied.failures) or None,
            guard=p.guard,
            held_back=len(p.held_back),
            unchecked_add=len(p.to_add) if dry and not pair.connector.capabilities.adds_verifiable else 0,
        )
        await self._record_pair(run_id, result, applied.group, dry_run=dry, pending=changes, held=change)
        self._log(result, p)
        if self.pair_done is not None:
            self.pair_done(result)
        return result

    async def _record_pair(
        self,
        run_id: str,
        result: PairResult,
        remote: RemoteGroup | None,
        *,
        dry_run: bool,
        pending: _Changes | None,
        held: quarantine.Change = quarantine.Change.UNCHANGED,
    ) -> None:
        """Record the pair and its metrics; `pending` None: the pass failed before it read the group.

        A member pass (`PassOptions.members`) records neither: it planned a few members, not the pair, so it must
        not become the pair's last pass (`syncd status`, the sources' empty-group check) nor set its gauges. Its
        ledger rows, rejects and owned members are recorded as in any pass (`_StoreSink`)."""
        if run_id in self._member_runs:
            return
        await _db(
            self.store.record_pair,
            run_id,
            result,
            remote_group_id=remote.id if remote else None,
            pending_add=pending.pending_add if pending else None,
            pending_remove=pending.pending_remove if pending else None,
        )
        known = pending or _Changes()
        self.metrics.observe_pair(
            result,
            dry_run=dry_run,
            now=time.time(),
            pending_add=known.pending_add,
            pending_remove=known.pending_remove,
            quarantine=held,
        )

    @staticmethod
    def _log(r: PairResult, p: Plan) -> None:
        parts = [f"{r.strategy}", f"+{r.add}", f"-{r.remove}"]
        if r.rejected:
            parts.append(f"{len(r.rejected)} rejected")
        if r.unsupported_remove:
            parts.append(f"{r.unsupported_remove} removals unsupported by the API")
        # a warning for what needs someone: an error, held-back removals, or drift the API cannot remove
        attention = r.status.is_error or r.status is PairStatus.BLOCKED or r.unsupported_remove
        level = logging.WARNING if attention else logging.INFO
        log.log(
            level,
            "group %r → %s: %s, %s (%d read, %d write requests)%s",
            r.group,
            r.provider,
            " ".join(parts),
            r.status,
            r.requests["read"],
            r.requests["write"],
            (
                f"; removals held back: {p.guard} (if they are right: syncd approve {shlex.quote(r.group)} "
                f"--provider {r.provider} --reason '…', or raise safety.max_removals / max_removal_ratio)"
                if p.guard
                else ""
            ),
        )
