"""`syncd explain EMAIL`: is this person on the list, and why, per (group, provider) pair.

"Why is she (not) on the newsletter?" is the question the people who run the lists ask most, and its answer is
spread over the sources (which groups list her), the group's settings (`exclude`, `protected`, the removal
policy), the provider (is she a member now; has she unsubscribed, bounced, is she blacklisted), and the state DB
(a remembered permanent reject, the removal guard's quarantine, the ledger of what syncd did to her). This module
gathers it for one person and says, per pair, what the next pass will do about her.

It only reads. The sources are read as a pass reads them (exclusions applied); the state DB is opened read-only,
and not created when there is none; each pair's provider group is found as a pass finds it (its binding, the
target's group_id, else its name) and its members are read, to say whether she is on it, and where she is not and
is wanted, the provider is asked for her consent state where its connector can tell by reading
(`ConsentReader`). Nothing is written to any provider nor to the state DB (recipient ids the connector learns are
not kept). With `offline`, no provider is contacted at all: membership and consent are "not checked", and the
verdict says what syncd wants rather than what the next pass will do.

Emails are compared trimmed and case-insensitively (`email_key`).

`--output json` prints one object, `Explanation.as_dict`:

    {"email": "<as asked: trimmed; lower-cased by the CLI>", "checked_at_provider": true,      # false with --offline
     "listed_in": [{"group": "...", "source": "..."}],                 # the groups (any target) that want them
     "errors": ["..."],                                                # sources that failed, groups failing closed
     "pairs": [{
       "group": "...", "provider": "...",
       "verdict": "on_list|will_add|will_remove|held|kept|not_on_list|wanted|not_wanted",
       "summary": "one line: the verdict and why",
       "desired": true,                          # the group's source(s) want them, after exclusions
       "source": "yaml:syncd.yaml",              # the source of the group
       "source_reject": null | {"reason", "code"},   # the source lists them, but not usably (invalid, duplicate)
       "excluded": null | "reason (names the excluding group)",
       "protected": false,                       # never removed by syncd from this group
       "removal_policy": "mirror|owned|add_only",    # in force for the pair
       "added_by_syncd": false,                  # syncd added them (what the owned policy may remove)
       "member": true | false | null,            # at the provider now; null: not checked (offline, or the read failed)
       "consent": null | {"state", "reason"},    # the provider holds them as unsubscribed, bounced or blacklisted
       "refused": null | {"reason", "code"},     # an add would be refused (the provider's pre-check, missing fields)
       "remembered_reject": null | {"reason", "code", "first_seen", "last_seen", "holds"},   # holds: still applies
       "quarantined": null | {"reason", "since", "approved"},  # the removal guard holds the pair's removals back
       "last_pass": null | {"status", "at", "blocked_reason"},  # the pair's last real pass (`syncd status`)
       "ledger": [{"at", "run_id", "op", "outcome", "reason"}],  # the newest real-run entries, newest first
       "error": null | "why the provider could not be read"}]}

Times are ISO 8601 (UTC). Keys are only ever added to this shape, never renamed or removed.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Collection, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, TextIO

import httpx

from connectors.base import (
    AddChecker,
    Connector,
    ConnectorError,
    ConsentReader,
    MemberReject,
    NotFound,
    NullRecipientCache,
    RemoteGroup,
    RemoteMember,
    Suppression,
    email_key,
)
from connectors.registry import build_connector
from connectors.settings import BuildContext
from syncd.config import Config
from syncd.model import DesiredGroup, Member, RemovalPolicy, Target, fingerprint
from syncd.planning import missing_fields
from syncd.quarantine import Standing, standing
from syncd.sources import Source, build_sources, read_sources
from syncd.state import Binding, RejectRow, StateRecipientCache, Store

LEDGER_ROWS = 5  # the newest ledger entries shown per pair


class Verdict(enum.StrEnum):
    """What the next pass does about the person on one pair (checked at the provider), or, offline, what syncd
    wants."""

    ON_LIST = "on_list"  # a member, and wanted
    WILL_ADD = "will_add"  # wanted, not a member: the next pass adds them
    WILL_REMOVE = "will_remove"  # a member, not wanted: the next pass removes them
    HELD = "held"  # a member, not wanted, but the removal guard holds the pair's removals back
    KEPT = "kept"  # a member, not wanted, and staying (protected, the removal policy, the API cannot remove)
    NOT_ON_LIST = "not_on_list"  # not a member, and the next pass does not add them (the summary says why)
    WANTED = "wanted"  # offline: syncd wants them on the list (membership not checked)
    NOT_WANTED = "not_wanted"  # offline: syncd does not want them on the list (membership not checked)


@dataclass(frozen=True, slots=True)
class Listing:
    """A group whose source wants the person (after exclusions), whatever its targets."""

    group: str
    source: str


@dataclass(frozen=True, slots=True)
class RememberedReject:
    """A permanent reject the state DB remembers for the person in the pair. `holds`: it still applies (the
    source record is unchanged since), so the next pass does not try them."""

    reason: str
    code: str
    first_seen: datetime
    last_seen: datetime
    holds: bool


@dataclass(frozen=True, slots=True)
class LedgerLine:
    at: datetime
    run_id: str
    op: str
    outcome: str
    reason: str


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the source side says about the person in one group: listed (the member), or why not."""

    member: Member | None = None
    source_reject: tuple[str, str] | None = None  # (reason, code): listed, but not usable (invalid, duplicate)
    excluded: str | None = None  # why an `exclude` took them out
    protected: bool = False


@dataclass(frozen=True, slots=True)
class Remembered:
    """What the state DB says about the person in one pair."""

    binding: Binding | None = None
    owned: bool = False  # syncd added them
    removed_by_syncd: datetime | None = None  # syncd's own removal of them, the newest applied entry: undoable
    reject: RememberedReject | None = None
    held: Standing = field(default_factory=Standing)
    last_status: str | None = None
    last_at: datetime | None = None
    blocked_reason: str | None = None
    ledger: tuple[LedgerLine, ...] = ()


@dataclass(frozen=True, slots=True)
class AtProvider:
    """What the provider says (read-only): a member now (None: not checked), their consent state, and whether
    syncd can remove members there and whether the group exists yet."""

    member: bool | None = None
    consent: Suppression | None = None
    refused: MemberReject | None = None  # an add of them would be refused (a pre-check, or fields they lack)
    can_remove: bool = True
    exists: bool = True
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PairExplanation:
    group: str
    provider: str
    source: str
    verdict: Verdict
    summary: str
    wanted: Wanted
    remembered: Remembered
    provider_says: AtProvider
    policy: RemovalPolicy

    def as_dict(self) -> dict[str, Any]:
        w, r, p = self.wanted, self.remembered, self.provider_says
        reject = r.reject
        return {
            "group": self.group,
            "provider": self.provider,
            "verdict": str(self.verdict),
            "summary": self.summary,
            "desired": w.member is not None,
            "source": self.source,
            "source_reject": None
            if w.source_reject is None
            else {"reason": w.source_reject[0], "code": w.source_reject[1]},
            "excluded": w.excluded,
            "protected": w.protected,
            "removal_policy": str(self.policy),
            "added_by_syncd": r.owned,
            "member": p.member,
            "consent": None if p.consent is None else {"state": str(p.consent.state), "reason": p.consent.reason},
            "refused": None if p.refused is None else {"reason": p.refused.reason, "code": p.refused.code},
            "remembered_reject": None
            if reject is None
            else {
                "reason": reject.reason,
                "code": reject.code,
                "first_seen": reject.first_seen.isoformat(),
                "last_seen": reject.last_seen.isoformat(),
                "holds": reject.holds,
            },
            "quarantined": _quarantine_dict(r.held),
            "last_pass": None
            if r.last_status is None or r.last_at is None
            else {"status": r.last_status, "at": r.last_at.isoformat(), "blocked_reason": r.blocked_reason},
            "ledger": [
                {"at": e.at.isoformat(), "run_id": e.run_id, "op": e.op, "outcome": e.outcome, "reason": e.reason}
                for e in r.ledger
            ],
            "error": p.error,
        }


def _quarantine_dict(held: Standing) -> dict[str, Any] | None:
    q = held.held
    if q is None:
        return None
    return {"reason": q.reason, "since": q.blocked_at.isoformat(), "approved": q.approved}


@dataclass(frozen=True, slots=True)
class Explanation:
    email: str
    checked: bool  # the providers were asked (not --offline)
    listed_in: tuple[Listing, ...]
    pairs: tuple[PairExplanation, ...]
    errors: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "checked_at_provider": self.checked,
            "listed_in": [{"group": g.group, "source": g.source} for g in self.listed_in],
            "errors": list(self.errors),
            "pairs": [p.as_dict() for p in self.pairs],
        }


# ------------------------------------------------------------------------------------------- gathering


async def explain(
    config: Config,
    email: str,
    *,
    group: str | None = None,
    offline: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Explanation:
    """The explanation for `email` on every pair (of `group`, matched by name or key, case-insensitively)."""
    key = email_key(email)
    store = Store.open_read_only(config.state.url)  # None: no state DB yet (and none is created)
    try:
        groups, errors = await _read_groups(config, store, group, transport)
        listed = tuple(Listing(g.name, g.source) for g in groups if any(m.key == key for m in g.members))
        chosen = [(g, t) for g in groups if _is(g, group) for t in g.targets]
        remembered = [_remembered(store, g, t, key) for g, t in chosen]
        found = await _ask_providers(config, chosen, remembered, key, store, offline=offline, transport=transport)
    finally:
        if store is not None:
            store.close()
    pairs = tuple(
        _explain_pair(g, t, _wanted(g, key), r, p) for (g, t), r, p in zip(chosen, remembered, found, strict=True)
    )
    return Explanation(email.strip(), not offline, listed, pairs, tuple(errors))


def _is(group: DesiredGroup, chosen: str | None) -> bool:
    if chosen is None:
        return True
    wanted = chosen.casefold()
    return wanted in (group.name.casefold(), _state_name(group).casefold())


def _state_name(group: DesiredGroup) -> str:
    """The name the state DB files the group's pairs under: its `key` (default: its name)."""
    return group.key


async def _read_groups(
    config: Config, store: Store | None, group: str | None, transport: httpx.AsyncBaseTransport | None
) -> tuple[list[DesiredGroup], list[str]]:
    """Every desired group, as a pass reads them (exclusions applied), and what failed. Every source is read, even
    with a group chosen: any group may list the person, or be excluded from the chosen one."""
    sources: Sequence[Source] = build_sources(config, transport=transport)
    read = await read_sources(sources, store)
    errors = list(read.errors)
    for closed, why in read.closed:
        if _is(closed, group):
            errors.append(why)
    return list(read.groups), errors


def _wanted(group: DesiredGroup, key: str) -> Wanted:
    member = next((m for m in group.members if m.key == key), None)
    rejected = next((r for r in group.rejected if email_key(r.email) == key), None)
    excluded = next((r for r in group.excluded if email_key(r.email) == key), None)
    return Wanted(
        member=member,
        source_reject=None if rejected is None else (rejected.reason, str(rejected.code)),
        excluded=None if excluded is None else excluded.reason,
        protected=key in group.protected,
    )


def _remembered(store: Store | None, group: DesiredGroup, target: Target, key: str) -> Remembered:
    """What the state DB remembers of the pair and the person (nothing, when there is no state DB yet)."""
    if store is None:
        return Remembered()
    name, provider = _state_name(group), target.provider
    member = next((m for m in group.members if m.key == key), None)
    states = store.pair_states(group=name, provider=provider)
    last = states[0] if states else None
    with closing(store.stream_history(group=name, provider=provider, member=key, include_dry_runs=False)) as rows:
        ledger = tuple(
            LedgerLine(row.at, row.run_id, str(row.op), str(row.outcome), row.reason)
            for row in islice(rows, LEDGER_ROWS)
        )
    return Remembered(
        # a key just given to a group bound under its name: the pass finds (and carries over) that binding too
        binding=store.binding(name, provider) or (store.binding(group.name, provider) if name != group.name else None),
        owned=key in store.owned(name, provider),
        removed_by_syncd=store.removals_by_syncd(name, provider, [key]).get(key),
        reject=_reject(store.reject_rows(provider=provider, group=name), key, member),
        held=standing(store, name, provider),
        last_status=None if last is None else str(last.status),
        last_at=None if last is None else last.last_run,
        blocked_reason=None if last is None else last.blocked_reason,
        ledger=ledger,
    )


def _reject(rows: Sequence[RejectRow], key: str, member: Member | None) -> RememberedReject | None:
    """The person's remembered reject in the pair: the group's own row over one remembered for every group."""
    mine = sorted((r for r in rows if email_key(r.email) == key), key=lambda r: r.group == "")
    if not mine:
        return None
    row = mine[0]
    holds = member is not None and row.fingerprint == fingerprint(member)
    return RememberedReject(row.reason, row.code, row.first_seen, row.last_seen, holds)


async def _ask_providers(
    config: Config,
    chosen: Sequence[tuple[DesiredGroup, Target]],
    remembered: Sequence[Remembered],
    key: str,
    store: Store | None,
    *,
    offline: bool,
    transport: httpx.AsyncBaseTransport | None,
) -> list[AtProvider]:
    """What each pair's provider says, one connector per provider, pairs one after another (a handful of reads)."""
    if offline:
        return [AtProvider() for _ in chosen]
    answers: list[AtProvider] = []
    async with contextlib.AsyncExitStack() as stack:
        connectors: dict[str, Connector | str] = {}
        for (group, target), state in zip(chosen, remembered, strict=True):
            connector = connectors.get(target.provider)
            if connector is None:
                connector = await _connector(stack, config, target.provider, store, transport)
                connectors[target.provider] = connector
            if isinstance(connector, str):
                answers.append(AtProvider(error=connector))
                continue
            answers.append(await _ask(connector, group, target, state, key))
    return answers


async def _connector(
    stack: contextlib.AsyncExitStack,
    config: Config,
    provider: str,
    store: Store | None,
    transport: httpx.AsyncBaseTransport | None,
) -> Connector | str:
    """The provider's connector (closed with `stack`), or why it cannot be used. It reads the recipient ids the
    state DB caches, and keeps none it learns."""
    cache = _ReadOnlyCache(store.recipient_cache(provider)) if store is not None else None
    context = BuildContext(transport=transport) if cache is None else BuildContext(transport=transport, cache=cache)
    try:
        connector = build_connector(config.provider(provider), context)
    except Exception as exc:  # e.g. a missing credential: that provider's pairs say so, the others go on
        return f"provider {provider} cannot be used: {type(exc).__name__}: {exc}"
    entered: Connector = await stack.enter_async_context(connector)
    return entered


async def _ask(connector: Connector, group: DesiredGroup, target: Target, state: Remembered, key: str) -> AtProvider:
    """Find the pair's group as a pass would (without creating or binding it), read its members, and where the
    person is wanted but not a member, whether an add would go (`_would_refuse`)."""
    can_remove = connector.capabilities.can_remove
    try:
        remote, members = await _read(connector, group, target, state.binding)
        member = any(m.key == key for m in members)
        wanted = next((m for m in group.members if m.key == key), None)
        consent, refused = (None, None)
        if wanted is not None and not member:
            consent, refused = await _would_refuse(connector, remote, wanted, state)
    except ConnectorError as exc:
        return AtProvider(can_remove=can_remove, error=f"{target.provider}: {exc}")
    return AtProvider(member=member, consent=consent, refused=refused, can_remove=can_remove, exists=remote is not None)


async def _would_refuse(
    connector: Connector, remote: RemoteGroup | None, wanted: Member, state: Remembered
) -> tuple[Suppression | None, MemberReject | None]:
    """What the provider says, by reading only, of adding the person, as a pass asks it: their consent state
    (`ConsentReader`; a removal syncd itself made is not held against them), then, unless a remembered reject holds
    them back anyway, the fields it requires that they lack and what its pre-check says (`AddChecker`)."""
    key = wanted.key
    if isinstance(connector, ConsentReader):
        removed = state.removed_by_syncd
        undo = {} if removed is None else {key: removed.timestamp()}
        consent = (await connector.suppressed(remote, [key], undo=undo)).get(key)
        if consent is not None:
            return consent, None
    if state.reject is not None and state.reject.holds:
        return None, None
    missing = missing_fields(wanted, connector.capabilities.required_fields)
    if missing:
        return None, MemberReject(
            wanted.email, f"it requires fields they lack: {', '.join(missing)}", False, "missing_fields"
        )
    if isinstance(connector, AddChecker):
        found = await connector.check_adds(remote, [wanted])
        return None, found[0] if found else None
    return None, None


async def _read(
    connector: Connector, group: DesiredGroup, target: Target, binding: Binding | None
) -> tuple[RemoteGroup | None, Sequence[RemoteMember]]:
    """The pair's provider group and its members, found as a pass finds it: the target's group_id, else the
    stored binding (a bound group that is gone is looked up by name, as the pass does), else by name. None (and no
    members) when it does not exist yet."""
    if target.group_id:
        remote = await connector.find_group(group_id=target.group_id)
    elif binding is not None:
        with contextlib.suppress(NotFound):
            bound = RemoteGroup(binding.remote_id, binding.remote_name)
            return bound, await connector.read_members(bound)
        remote = await connector.find_group(name=group.name)
    else:
        remote = await connector.find_group(name=group.name)
    return remote, (await connector.read_members(remote) if remote is not None else ())


class _ReadOnlyCache(NullRecipientCache):
    """The state DB's recipient-id cache for reading only (`connectors.base.RecipientCache`): what the connector
    learns is dropped (the writes of `NullRecipientCache`), since explain writes nothing."""

    def __init__(self, cache: StateRecipientCache) -> None:
        self._cache = cache

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        return self._cache.get_many(keys)

    def keys_by_id(self, ids: Collection[str]) -> dict[str, str]:
        return self._cache.keys_by_id(ids)

    def all(self) -> dict[str, str]:
        return self._cache.all()


# -------------------------------------------------------------------------------------------- verdicts


def _explain_pair(
    group: DesiredGroup, target: Target, wanted: Wanted, state: Remembered, says: AtProvider
) -> PairExplanation:
    binding = state.binding
    policy = group.removal_policy or (
        binding.default_policy
        if binding is not None
        else (RemovalPolicy.MIRROR if not says.exists else RemovalPolicy.OWNED)
    )
    facts = _Facts(group, target.provider, wanted, state, says, policy)
    verdict, summary = facts.verdict()
    return PairExplanation(group.name, target.provider, group.source, verdict, summary, wanted, state, says, policy)


@dataclass(frozen=True, slots=True)
class _Facts:
    group: DesiredGroup
    provider: str
    wanted: Wanted
    state: Remembered
    says: AtProvider
    policy: RemovalPolicy

    def verdict(self) -> tuple[Verdict, str]:
        if self.says.member is None:
            return self._unchecked()
        if self.wanted.member is not None:
            return self._wanted()
        return self._unwanted()

    def _unchecked(self) -> tuple[Verdict, str]:
        why = self.says.error or "--offline"
        if self.wanted.member is None:
            return (
                Verdict.NOT_WANTED,
                f"not wanted on the list because {self._why_unwanted()} (membership not checked: {why})",
            )
        refusal = self._refusal()
        if refusal:
            return Verdict.NOT_WANTED, f"not added because {refusal} (membership not checked: {why})"
        return Verdict.WANTED, f"wanted on the list (membership at {self.provider} not checked: {why})"

    def _wanted(self) -> tuple[Verdict, str]:
        if self.says.member:
            return Verdict.ON_LIST, "on the list"
        refusal = self._refusal()
        if refusal:
            return Verdict.NOT_ON_LIST, f"not on the list because {refusal}"
        return Verdict.WILL_ADD, "will be added at the next pass"

    def _refusal(self) -> str | None:
        """Why the next pass will not add the wanted person, or None."""
        consent = self.says.consent
        if consent is not None:
            return f"they are {consent.state} at {self.provider} ({consent.reason}): syncd never subscribes them again"
        reject = self.state.reject
        refused = self.says.refused
        if refused is not None:
            return f"{self.provider} would refuse them: {refused.reason}"
        if reject is not None and reject.holds:
            return (
                f"{self.provider} refused them for good: {reject.reason} (remembered since "
                f"{reject.first_seen:%Y-%m-%d %H:%M} UTC; tried again when their source record changes, or after "
                f"`syncd rejects clear --member …`)"
            )
        return None

    def _unwanted(self) -> tuple[Verdict, str]:
        why = self._why_unwanted()
        if not self.says.member:
            return Verdict.NOT_ON_LIST, f"not on the list because {why}"
        kept = self._kept()
        if kept:
            return Verdict.KEPT, f"on the list, although {why}: it stays, because {kept}"
        held = self.state.held.held
        if held is not None and not held.approved:
            return Verdict.HELD, (
                f"will be removed ({why}) once the removal guard lets the pair's removals go: {held.reason} "
                f"(`syncd approve {self.group.name}` lets them go once)"
            )
        return Verdict.WILL_REMOVE, f"will be removed at the next pass: {why}"

    def _kept(self) -> str | None:
        if self.wanted.protected:
            return "the group protects them (`protected`: never removed by syncd)"
        if self.policy is RemovalPolicy.ADD_ONLY:
            return "the group's removal_policy is add_only"
        if self.policy is RemovalPolicy.OWNED and not self.state.owned:
            return "syncd did not add them and the group's removal_policy is owned (it removes only its own adds)"
        if not self.says.can_remove:
            return f"{self.provider}'s API cannot remove members (remove them there by hand)"
        return None

    def _why_unwanted(self) -> str:
        w = self.wanted
        if w.excluded:
            return f"they are {w.excluded}"
        if w.source_reject:
            return f"the source's entry for them is not usable: {w.source_reject[0]}"
        return f"no source lists them in {self.group.name!r}"


# ------------------------------------------------------------------------------------------- rendering


def render_explanation(explanation: Explanation, out: TextIO) -> None:
    """A short block per pair, ending with its verdict."""
    e = explanation
    listed = ", ".join(f"{g.group!r} ({g.source})" for g in e.listed_in) or "no group"
    out.write(f"{e.email}\n  listed in: {listed}\n")
    for error in e.errors:
        out.write(f"  warning: {error}\n")
    if not e.pairs:
        out.write("  no (group, provider) pair matches\n")
    for pair in e.pairs:
        out.write(f"\n{pair.group} → {pair.provider}\n")
        for label, text in _lines(pair):
            out.write(f"  {label + ':':<10} {text}\n")
        out.write(f"  {'verdict:':<10} {pair.summary}\n")


def _lines(pair: PairExplanation) -> list[tuple[str, str]]:
    w, r, p = pair.wanted, pair.remembered, pair.provider_says
    lines = [("source", _source_line(pair))]
    if w.protected:
        lines.append(("protected", "yes: syncd never removes them from this group"))
    lines.append(("at " + pair.provider, _member_line(p)))
    if p.consent is not None:
        lines.append(("consent", f"{p.consent.state}: {p.consent.reason}"))
    if p.refused is not None:
        lines.append(("refused", f"an add would be refused: {p.refused.reason} ({p.refused.code})"))
    if r.reject is not None:
        still = (
            "applies" if r.reject.holds else "no longer applies (their source record changed, or they are not wanted)"
        )
        lines.append(
            (
                "reject",
                f"remembered: {r.reject.reason} ({r.reject.code}, since {r.reject.first_seen:%Y-%m-%d %H:%M}); {still}",
            )
        )
    if r.held.held is not None:
        q = r.held.held
        approved = "; approved: " + (q.approval or "") if q.approved else ""
        lines.append(("guard", f"quarantined since {q.blocked_at:%Y-%m-%d %H:%M}: {q.reason}{approved}"))
    if r.last_status is not None and r.last_at is not None:
        blocked = f" ({r.blocked_reason})" if r.blocked_reason else ""
        lines.append(("last pass", f"{r.last_status} at {r.last_at:%Y-%m-%d %H:%M:%S}{blocked}"))
    for entry in r.ledger:
        lines.append(("ledger", f"{entry.at:%Y-%m-%d %H:%M:%S}  {entry.op} {entry.outcome} ({entry.reason})"))
    return lines


def _source_line(pair: PairExplanation) -> str:
    w = pair.wanted
    if w.member is not None:
        return f"listed ({pair.source})"
    if w.excluded:
        return f"{w.excluded} ({pair.source})"
    if w.source_reject:
        return f"listed, but rejected: {w.source_reject[0]} ({pair.source})"
    return f"not listed ({pair.source})"


def _member_line(p: AtProvider) -> str:
    if p.member is None:
        return f"not checked ({p.error})" if p.error else "not checked (--offline)"
    if not p.exists:
        return "not a member (the group does not exist there yet)"
    return "a member" if p.member else "not a member"
