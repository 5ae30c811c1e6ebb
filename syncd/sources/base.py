"""The source protocol, and how one pass reads every source: concurrently, each failing closed on its own.

A pass must never mistake a broken read for "these people left". So, for every source:

* an error (HTTP, database, timeout, a bug) leaves every group of that source untouched this pass;
* a CRM group that comes back empty although its last real pass had members is left untouched, unless the
  source says `allow_empty` (sources opt in with a truthy `guard_empty` attribute: the inline YAML groups are
  what the user wrote, so an empty one there is deliberate);
* a group defined by two sources (only possible at run time, for groups named by a SQL query's rows), or two
  groups with one key, is applied from neither.

Each of these is one line in `ReadResult.errors`: the pass reports it and exits 1, and since the group is not
among the desired groups at all, no request for it reaches any provider.

Then, with every source read, each group's `exclude` is applied (`apply_exclusions`): the members of the groups
it names (by name or key, from any source) are subtracted. A group whose excluded group was not read this pass
(its source failed, or nothing yields it) fails closed: it is in `ReadResult.closed`, with why, and the pass
records each of its pairs as failed without contacting any provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import httpx

from connectors.http import RequestHooks
from syncd.errors import SourceError
from syncd.model import DesiredGroup, Reject, RejectCode

log = logging.getLogger("syncd.sources")


@dataclass(frozen=True)
class CheckLine:
    """One line of `syncd validate --online` about a source: what was found, and whether it is a problem."""

    ok: bool
    text: str


class Source(Protocol):
    """Where desired groups come from. A source may also have a `group_names` attribute: the names of every
    group it can yield, when they are known before reading (None: only the read tells). A pass restricted
    to some groups (`--group`) does not read a source that cannot yield any of them."""

    name: str  # shown in reports and logs: "yaml:syncd.yaml", "hubspot", "sql", or the configured name

    async def read(self) -> Sequence[DesiredGroup]: ...

    async def check(self) -> list[CheckLine]:
        """For `syncd validate --online`: can the source be read (credentials, lists, the query)?"""
        ...


class LastPass(Protocol):
    """What the state DB remembers of earlier passes (`syncd.state.Store` is one)."""

    def last_desired(self, groups: Sequence[str]) -> dict[str, int]: ...


class PartialRead(SourceError):
    """Some groups of a source could not be read (the message says which and why); `groups` are the ones
    that could. Those still apply; the failed ones are left untouched."""

    def __init__(self, source: str, message: str, groups: Sequence[DesiredGroup]) -> None:
        super().__init__(source, message)
        self.groups = tuple(groups)


@dataclass(frozen=True)
class SourceContext:
    """What `build_sources` hands a source factory (`syncd.sources.registry`) besides its settings and the
    config."""

    name: str  # what reports, logs and metrics call the source ("hubspot", "sql#2", or the configured name)
    transport: httpx.AsyncBaseTransport | None = None  # tests: an ASGI transport bound to a sandbox
    hooks: RequestHooks | None = None  # syncd's metrics, for sources that speak HTTP


@dataclass
class ReadResult:
    groups: list[DesiredGroup] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # groups that fail closed this pass (an excluded group was not read), each with why: nothing is sent for them
    closed: list[tuple[DesiredGroup, str]] = field(default_factory=list)


async def read_sources(sources: Sequence[Source], last_pass: LastPass | None = None) -> ReadResult:
    """Read every source concurrently; see the module docstring for what fails closed."""
    answers = await asyncio.gather(*(_read_one(source) for source in sources))
    result = ReadResult()
    read = _keep_answers(sources, answers, result.errors)
    kept = _without_conflicts(read, result.errors)
    result.groups, result.closed = apply_exclusions(_without_suspect_empties(kept, last_pass, result.errors))
    return result


def apply_exclusions(
    groups: Sequence[DesiredGroup],
) -> tuple[list[DesiredGroup], list[tuple[DesiredGroup, str]]]:
    """Every group less the members of the groups its `exclude` names (by key, else by name; case-insensitive),
    with those members recorded in its `excluded`; and, apart, the groups that name a group not among `groups`
    (its source failed, or nothing yields it), each with why: they fail closed. What a group subtracts is its
    excluded groups' members as their sources give them (their own `exclude` does not change it). Pure."""
    by_ref = _by_reference(groups)
    kept: list[DesiredGroup] = []
    closed: list[tuple[DesiredGroup, str]] = []
    for group in groups:
        missing = [ref for ref in group.exclude if ref.casefold() not in by_ref]
        if missing:
            closed.append((group, _not_read(group, missing)))
        elif group.exclude:
            kept.append(_subtract(group, [by_ref[ref.casefold()] for ref in group.exclude]))
        else:
            kept.append(group)
    return kept, closed


def _by_reference(groups: Sequence[DesiredGroup]) -> dict[str, DesiredGroup]:
    """The groups by casefolded key, and by casefolded name where no key takes it (keys win)."""
    out = {g.name.casefold(): g for g in groups}
    out.update({g.key.casefold(): g for g in groups})
    return out


def _not_read(group: DesiredGroup, missing: Sequence[str]) -> str:
    names = ", ".join(repr(ref) for ref in missing)
    return (
        f"group {group.name!r} excludes {names}, which could not be read this pass (its source failed, or no "
        f"source yields it): nothing is changed for {group.name!r} until it can be (fail closed)"
    )


def _subtract(group: DesiredGroup, excluded: Sequence[DesiredGroup]) -> DesiredGroup:
    """The group less the members of `excluded`; each member taken out is recorded, naming the group it is in."""
    source_of: dict[str, str] = {}
    for other in excluded:
        for member in other.members:
            source_of.setdefault(member.key, other.name)
    if not source_of:
        return group
    members = tuple(m for m in group.members if m.key not in source_of)
    out = tuple(
        Reject(m.email, f"excluded: a member of {source_of[m.key]!r}", RejectCode.EXCLUDED)
        for m in group.members
        if m.key in source_of
    )
    return replace(group, members=members, excluded=group.excluded + out)


def _keep_answers(
    sources: Sequence[Source], answers: Sequence[tuple[list[DesiredGroup], str | None]], errors: list[str]
) -> list[tuple[Source, list[DesiredGroup]]]:
    """Each source with the groups it yielded; its error, if any, goes to `errors`."""
    by_source: list[tuple[Source, list[DesiredGroup]]] = []
    for source, (groups, error) in zip(sources, answers, strict=True):
        if error is not None:
            # A partial read names the groups it left untouched; otherwise that is every group of the source.
            log.error("%s", error if groups else f"{error}; its groups are left untouched this pass")
            errors.append(error)
        by_source.append((source, groups))
    return by_source


def _without_conflicts(
    by_source: Sequence[tuple[Source, list[DesiredGroup]]], errors: list[str]
) -> list[tuple[Source, DesiredGroup]]:
    """Every group with its source, except those whose name two sources yield (neither definition wins), and
    those whose key two groups give (a key is one group's identity)."""
    owners: dict[str, list[str]] = {}
    keyed: dict[str, list[str]] = {}  # casefolded key -> the names of the groups that give it
    for source, groups in by_source:
        for group in groups:
            names = owners.setdefault(group.name.casefold(), [])
            if source.name not in names:
                names.append(source.name)
            holders = keyed.setdefault(group.key.casefold(), [])
            if group.name.casefold() not in {h.casefold() for h in holders}:
                holders.append(group.name)
    conflicts = {key for key, names in owners.items() if len(names) > 1}
    for key in sorted(conflicts):
        name = next(g.name for _, gs in by_source for g in gs if g.name.casefold() == key)
        _error(
            errors,
            f"group {name!r} is defined by more than one source ({', '.join(owners[key])}): neither definition "
            "is applied this pass; give each group one source",
        )
    shared = {key for key, names in keyed.items() if len(names) > 1}
    for key in sorted(shared):
        _error(
            errors,
            f"groups {', '.join(repr(n) for n in keyed[key])} share the key {key!r}: none of them is applied this "
            "pass; a key identifies one group",
        )
    return [
        (s, g)
        for s, groups in by_source
        for g in groups
        if g.name.casefold() not in conflicts and g.key.casefold() not in shared
    ]


def _error(errors: list[str], message: str) -> None:
    log.error("%s", message)
    errors.append(message)


def _without_suspect_empties(
    kept: Sequence[tuple[Source, DesiredGroup]], last_pass: LastPass | None, errors: list[str]
) -> list[DesiredGroup]:
    """The groups, except a CRM group that had members on the last real pass and now has none: suspect, it is
    left untouched."""
    empty = [group for source, group in kept if _guards_empty(source) and not group.members]
    before = last_pass.last_desired([g.name for g in empty]) if empty and last_pass is not None else {}
    groups: list[DesiredGroup] = []
    for source, group in kept:
        had = before.get(group.name, 0) if not group.members else 0
        if had > 0 and _guards_empty(source):
            message = str(
                SourceError(
                    source.name,
                    f"group {group.name!r} came back empty although it had {had} member{'s' if had != 1 else ''} "
                    "on the last pass: left untouched (a CRM answering empty is more often broken than right; "
                    "set allow_empty: true on the source if the group really is empty now)",
                )
            )
            log.error("%s", message)
            errors.append(message)
            continue
        groups.append(group)
    return groups


def _guards_empty(source: Source) -> bool:
    return bool(getattr(source, "guard_empty", False))


async def _read_one(source: Source) -> tuple[list[DesiredGroup], str | None]:
    started = time.monotonic()
    try:
        groups = list(await source.read())
    except PartialRead as exc:
        return list(exc.groups), str(exc)
    except SourceError as exc:
        return [], str(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug in a source fails that source closed, not the pass
        log.exception("source %s crashed", source.name)
        return [], str(SourceError(source.name, f"internal error: {type(exc).__name__}: {exc}"))
    if groups or getattr(source, "guard_empty", None) is not None:  # the inline groups need no line when none
        log.info(
            "source %s: %d group%s, %d members, %d rejected, read in %.1fs",
            source.name,
            len(groups),
            "" if len(groups) == 1 else "s",
            sum(len(g.members) for g in groups),
            sum(len(g.rejected) for g in groups),
            time.monotonic() - started,
        )
    return groups, None
