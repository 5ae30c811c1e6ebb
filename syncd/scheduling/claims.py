"""Which pairs a pass may work, so that two passes never work one (group, provider) pair at once.

A pair is named by its *lock*, ``group<US>provider`` (the group as the config spells it), and the groups only a
SQL query names (known when it runs) by one lock of their own, `REST_LOCK`. The same names are the Procrastinate
locks of the queue (`syncd.scheduling.queue`), so on PostgreSQL a pass started by the daemon's API and the
queue's jobs exclude each other through the database (`QueueScheduler.claim`), across replicas.

On SQLite one daemon runs every pass, so a registry in the process is enough (`LocalClaims`): a scheduled pass
claims every pair (it waits for the API's passes to end first, and while it waits no new one may start), a pass
started by the API claims the pairs it chose, and a claim that overlaps one held fails at once (`PairsBusy`:
409 in the API).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from syncd.config import Config
from syncd.errors import SyncdError
from syncd.state.fence import Fence

__all__ = [
    "REST_LOCK",
    "SEP",
    "Claim",
    "LocalClaims",
    "PairsBusy",
    "describe_lock",
    "pair_lock",
    "selection_locks",
]

SEP = "\x1f"  # between group and provider in a pair's lock (a unit separator: in no name)
REST_LOCK = "\x00groups named by a query"  # the groups only a SQL query names (no group name can hold a NUL)


def pair_lock(group: str, provider: str) -> str:
    return f"{group}{SEP}{provider}"


def describe_lock(lock: str) -> str:
    """A lock as people read it: ``Team → cr``, or the groups a query names."""
    return "the groups a SQL query names" if lock == REST_LOCK else lock.replace(SEP, " → ")


def selection_locks(config: Config, groups: Iterable[str] = (), providers: Iterable[str] = ()) -> list[str]:
    """The locks of the pairs a pass over `groups` and `providers` (empty: all) may work under `config`: the pairs
    of the groups the file names, and `REST_LOCK` when the pass may meet groups only a query names (no group
    chosen, or a chosen name the file does not define). The names are assumed checked against the config."""
    wanted = {g.casefold() for g in groups}
    chosen = set(providers)
    locks: list[str] = []
    named: set[str] = set()
    for group, targets in config.group_targets():
        named.add(group.casefold())
        if wanted and group.casefold() not in wanted:
            continue
        locks += [pair_lock(group, t.provider) for t in targets if not chosen or t.provider in chosen]
    if config.has_query_named_groups and (not wanted or wanted - named):
        locks.append(REST_LOCK)
    return locks


class PairsBusy(SyncdError):
    """A pass already works (or is about to work) some of the pairs asked for."""

    def __init__(self, locks: Sequence[str], by: str) -> None:
        self.locks = list(locks)
        self.by = by
        super().__init__(f"already running ({by}): {', '.join(describe_lock(lock) for lock in self.locks)}")


class Claim(Protocol):
    """Pairs held for one pass until `release`. `fence`: what the pass's writes check (PostgreSQL), or None."""

    @property
    def fence(self) -> Fence | None: ...

    async def release(self) -> None: ...


class _LocalClaim:
    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    @property
    def fence(self) -> Fence | None:
        return None

    async def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


class LocalClaims:
    """The pairs the passes of this process work (SQLite: one daemon, one asyncio loop, so no lock is needed).

    `claim` (the API's passes) takes some pairs at once or raises `PairsBusy`; `claim_everything` (the scheduled
    pass) waits until no pair is held, refusing new claims meanwhile so it is not starved, then holds them all.
    """

    def __init__(self) -> None:
        self._held: dict[str, str] = {}  # lock -> who holds it
        self._everything: str | None = None  # who holds every pair (the scheduled pass)
        self._waiting = 0  # passes waiting to hold every pair
        self._changed = asyncio.Event()

    @property
    def held(self) -> dict[str, str]:
        return dict(self._held)

    async def claim(self, locks: Sequence[str], by: str) -> Claim:
        if self._everything is not None:
            raise PairsBusy(locks, self._everything)
        if self._waiting:
            raise PairsBusy(locks, "the scheduled pass, about to start")
        taken = [lock for lock in locks if lock in self._held]
        if taken:
            raise PairsBusy(taken, self._held[taken[0]])
        mine = list(dict.fromkeys(locks))
        self._held.update(dict.fromkeys(mine, by))
        return _LocalClaim(lambda: self._drop(mine))

    async def claim_everything(self, by: str, stop: asyncio.Event) -> Claim | None:
        """Every pair, once no other pass holds one; None if `stop` is set first."""
        self._waiting += 1
        try:
            while self._held or self._everything is not None:
                if stop.is_set():
                    return None
                self._changed.clear()
                await _first(self._changed.wait(), stop.wait())
        finally:
            self._waiting -= 1
        self._everything = by
        return _LocalClaim(self._drop_everything)

    @property
    def waiting(self) -> bool:
        return bool(self._waiting) and bool(self._held)

    def _drop(self, locks: Sequence[str]) -> None:
        for lock in locks:
            self._held.pop(lock, None)
        self._changed.set()

    def _drop_everything(self) -> None:
        self._everything = None
        self._changed.set()


async def _first(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
