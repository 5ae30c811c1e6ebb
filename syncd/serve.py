"""`syncd serve`: the daemon. One asyncio loop runs the scheduler (syncd.scheduling), the passes and the
HTTP server (syncd.server) until SIGTERM or SIGINT.

Lifecycle:

* Start: the config was loaded by the caller (an unreadable config never gets here: one line, exit 1). The
  listening socket is bound first (a taken port: one line, exit 1), then the HTTP server starts and the
  first pass runs at once (it opens the state DB); later passes follow ``schedule``.
* The state DB may be unreachable at start or go away later: the daemon keeps running, `/readyz` answers 503
  saying why, each pass that cannot reach it is counted as a failure, and the DB is opened again as soon as
  it answers. No pass failure of any kind ends the daemon: it is logged and counted in
  ``syncd_runs_total{outcome="failure"}``.
* Stop (SIGTERM/SIGINT): no new pass is scheduled and `/readyz` turns 503; the running pass's stop event is
  set, so its requests in flight finish, nothing new starts and the run is recorded as ``interrupted``. If it
  has not ended within the stop bound (``--stop-timeout``, default `STOP_TIMEOUT`, less `CLEANUP_RESERVE`)
  or a second signal comes, it is cancelled, and the pass closes its run as interrupted. Then the DB is
  closed, the HTTP server stopped, "stopped after …" is logged, and the process exits 0 right away: `serve`
  ends it without the interpreter's teardown (see there).

Two ways to schedule, by the state DB (syncd.scheduling): on SQLite one process runs whole passes with
APScheduler; on PostgreSQL every replica is a Procrastinate worker, each (group, provider) pair a periodic job
run once per period on one replica at a time, a dead replica's pairs taken over after `server.stalled_after`
(`syncd.scheduling.queue`). Each replica has a unique name, ``host:pid:random`` (`replica_name`).

The API (syncd.api, with `server.api_token`) starts passes too (`start_api_pass`), and a pass it starts and a
scheduled one never work one pair at once: on SQLite the daemon keeps the pairs being worked
(`syncd.scheduling.claims.LocalClaims`: a scheduled pass claims them all, waiting for the API's passes to end; an
API pass claims its own, or is refused: 409); on PostgreSQL an API pass takes its pairs' locks in the queue itself
(`QueueScheduler.claim`), which the queue's jobs on every replica respect, and the other way round.

Config reload: on SIGHUP, and when the config file changes (its mtime, size or inode, looked at every
`CONFIG_POLL` seconds: a Kubernetes ConfigMap swaps the file under a symlink), the file is loaded again. A valid
one is used from the next pass on (a new schedule, on PostgreSQL the periodic jobs of the pairs added and
removed); an invalid one is logged, one ``file:line: key: message`` line per problem, and the running config
stays. Either way ``syncd_config_reloads_total{outcome}`` counts it. What cannot change while running (`RESTART_ONLY`:
state.url, server.listen, and on PostgreSQL the queue worker's server.workers and server.stalled_after) is
logged as needing a restart and kept; ``${VAR}``s are expanded from the environment the daemon started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from prometheus_client import Counter, PlatformCollector, ProcessCollector

from syncd.api import ApiRuns, RunRequest, StartedPass, Unavailable, make_api_app
from syncd.config import Config, load_config
from syncd.errors import StateError, SyncdError
from syncd.logs import bind
from syncd.metrics import Metrics
from syncd.model import RunReport
from syncd.progress import ProgressDisplay
from syncd.reconciler import PassOptions, Reconciler
from syncd.scheduling import Claim, LocalClaims, PassScheduler, describe_lock, selection_locks
from syncd.server import Check, HttpServer, make_app
from syncd.state import Store
from syncd.state.fence import Fence, FencedOut

if TYPE_CHECKING:
    from syncd.scheduling.queue import QueueScheduler

__all__ = ["CLEANUP_RESERVE", "CONFIG_POLL", "RESTART_ONLY", "STOP_TIMEOUT", "Daemon", "replica_name", "serve"]

log = logging.getLogger("syncd.serve")

# From SIGTERM to exit, at most this long by default (`syncd serve --stop-timeout`). Kubernetes'
# terminationGracePeriodSeconds (deploy/kubernetes: 45) and `docker stop -t` must be longer.
STOP_TIMEOUT = 30.0
# Of the stop bound, kept for what follows the pass: cancelling it, closing its run, stopping the queue worker
# and the HTTP server (at most HttpServer.SHUTDOWN_GRACE + 2 s).
CLEANUP_RESERVE = 6.0
READY_PING_TIMEOUT = 5.0  # /readyz: a state DB that takes longer to answer a ping is not ready
CONFIG_POLL = 2.0  # seconds between looks at the config file (has it changed?)
# Settings a reload cannot change: what the process bound or opened at start (the queue's on PostgreSQL only).
RESTART_ONLY = ("state.url", "server.listen")
QUEUE_RESTART_ONLY = ("server.workers", "server.stalled_after")


def replica_name() -> str:
    """This replica's name: host:pid:random (unique even for two processes of one host and pid namespace, e.g.
    a restarted container that got the same pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        dry_run: bool = False,
        stop_timeout: float = STOP_TIMEOUT,
        first_pass_at_start: bool = True,
        progress: ProgressDisplay | None = None,
    ) -> None:
        self.config = config
        self.dry_run = dry_run
        self.stop_timeout = stop_timeout
        self.progress = progress
        self.metrics = Metrics()
        ProcessCollector(registry=self.metrics.registry)  # process_* (memory, CPU, open fds, start time)
        PlatformCollector(registry=self.metrics.registry)  # python_info
        self.holder = replica_name()
        self.reloads = Counter(
            "syncd_config_reloads_total",
            "Config reloads (SIGHUP, or the file changed), by outcome: success (in force from the next pass) or "
            "failure (invalid: the running config stays).",
            ["outcome"],
            registry=self.metrics.registry,
        )
        for outcome in ("success", "failure"):
            self.reloads.labels(outcome=outcome)
        self.scheduled_groups: frozenset[str] = frozenset()  # on the queue: the groups that have jobs of their own
        self.scheduler: PassScheduler | QueueScheduler = self._scheduler(first_pass_at_start)
        self.claims = LocalClaims()  # SQLite: the pairs the passes of this process work
        self.api_runs = ApiRuns()
        app = make_app(self.metrics.registry, self, make_api_app(self, self.api_runs))
        self.http = HttpServer(app, config.server.host, config.server.port)
        self.store: Store | None = None
        self.store_error: str | None = None
        self.last_pass: dict[str, Any] | None = None
        self.stopping = asyncio.Event()  # a signal came: schedule nothing more
        self.pass_stop = asyncio.Event()  # the running pass's stop event
        self._force = asyncio.Event()  # a second signal: cancel the pass now
        self._store_lock = asyncio.Lock()
        self._closed = False
        self._api_tasks: set[asyncio.Task[RunReport]] = set()
        self._background: set[asyncio.Future[Any]] = set()  # reloads asked for by SIGHUP
        self._reload_lock = asyncio.Lock()
        self._config_seen = _file_signature(config.path)

    # -- main -----------------------------------------------------------------------------------------
    async def main(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean stop. SyncdError when it cannot start."""
        try:
            self.http.bind()
        except OSError as exc:
            raise SyncdError(
                f"server.listen {self.config.server.listen}: cannot listen there: {exc.strerror or exc}"
            ) from None
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        for sig in handled[:2]:
            loop.add_signal_handler(sig, self.request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        watcher = asyncio.ensure_future(self._watch_config())
        try:
            await self.http.start()
            log.info(
                "syncd serve: /metrics, /healthz, /readyz on %s; replica %s%s",
                self.http.url,
                self.holder,
                " (dry run: nothing is changed)" if self.dry_run else "",
                extra={"listen": self.http.url, "replica": self.holder, "dry_run": self.dry_run},
            )
            if not self.config.providers:
                log.warning(
                    "%s configures no providers: passes will change nothing (mount your config there, or set "
                    "$SYNCD_CONFIG)",
                    self.config.path,
                )
            # The first pass opens the state DB (and so does /readyz): one that is not there yet is reported
            # and retried, not fatal, and /healthz answers meanwhile.
            starting = asyncio.ensure_future(self._start_scheduler())
            stop_wait = asyncio.ensure_future(self.stopping.wait())
            done, _ = await asyncio.wait({self.http.task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if not starting.done():  # still waiting for the state DB: no worker to stop then
                starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            code = 0
            if self.http.task in done and not self.stopping.is_set():
                log.error("the HTTP server stopped unexpectedly; stopping")
                code = 1
            await self.shutdown()
            return code
        finally:
            watcher.cancel()
            for sig in handled:
                loop.remove_signal_handler(sig)
            await self._close()

    def request_stop(self, sig: int | None = None) -> None:
        name = signal.Signals(sig).name if sig is not None else "stop"
        if not self.stopping.is_set():
            log.info(
                "%s: stopping; the running pass (if any) ends after its requests in flight, within %gs",
                name,
                self.stop_timeout,
                extra={"signal": name},
            )
            self.stopping.set()
            self.pass_stop.set()
        elif not self._force.is_set():
            log.warning("%s again: cancelling the running pass now", name, extra={"signal": name})
            self._force.set()

    async def shutdown(self) -> None:
        started = time.monotonic()
        self.stopping.set()
        self.pass_stop.set()
        self.scheduler.pause()
        if self.scheduler.pass_running or self._api_tasks:
            budget = max(1.0, self.stop_timeout - CLEANUP_RESERVE)
            idle = asyncio.ensure_future(self._wait_idle())
            forced = asyncio.ensure_future(self._force.wait())
            await asyncio.wait({idle, forced}, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
            forced.cancel()
            if not idle.done():
                idle.cancel()
                log.warning("the pass did not end within %.0fs of the stop: cancelling it", time.monotonic() - started)
        await self._cancel_api_passes()  # they release their claims in the queue before it stops
        await self._stop_scheduler()  # cancels a pass still running
        try:
            await asyncio.wait_for(self.scheduler.wait_idle(), 3)
        except TimeoutError:
            log.warning("the cancelled pass has not ended yet; exiting anyway")
        await self._close()
        await self.http.stop()
        seconds = time.monotonic() - started
        log.info("stopped after %.1fs", seconds, extra={"stop_seconds": round(seconds, 3)})

    async def _wait_idle(self) -> None:
        await self.scheduler.wait_idle()
        if self._api_tasks:
            await asyncio.wait(set(self._api_tasks))

    async def _cancel_api_passes(self) -> None:
        for task in self._api_tasks:
            task.cancel()
        if self._api_tasks:
            await asyncio.wait(set(self._api_tasks), timeout=3)

    async def _close(self) -> None:
        """Close the DB. Once. (A pass cancelled at the stop bound has recorded its run as interrupted itself.)"""
        if self._closed:
            return
        self._closed = True
        store, self.store = self.store, None
        if store is not None:
            store.close()

    # -- scheduling -----------------------------------------------------------------------------------
    def _scheduler(self, first_pass_at_start: bool) -> PassScheduler | QueueScheduler:
        """On PostgreSQL, a worker of the replicas' queue; on SQLite, whole passes in this one process."""
        url = self.config.state.url
        if not url.startswith("postgresql"):
            return PassScheduler(self.config.schedule, self.run_pass, first_pass_at_start=first_pass_at_start)
        from syncd.scheduling.queue import QueueScheduler  # the `postgres` extra

        pairs = _pairs(self.config)
        self.scheduled_groups = frozenset(group.casefold() for group, _ in pairs)
        return QueueScheduler(
            url,
            self.config.schedule,
            pairs,
            self.run_pair,
            workers=self.config.server.workers,
            stalled_after=self.config.server.stalled_after,
            name=self.holder,
            query_groups=self.config.has_query_named_groups,
        )

    async def _start_scheduler(self) -> None:
        if isinstance(self.scheduler, PassScheduler):
            self.scheduler.start()  # its first pass opens the state DB
            return
        # The queue lives in the state DB: open it (and so migrate it, the queue's schema included) first,
        # retrying while it cannot be reached; /healthz says the worker is not running meanwhile.
        while not self.stopping.is_set():
            if await self.get_store() is not None:
                await self.scheduler.start()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 5)

    async def _stop_scheduler(self) -> None:
        stopped = self.scheduler.shutdown()
        if stopped is not None:
            await stopped

    # -- the state DB ---------------------------------------------------------------------------------
    async def get_store(self) -> Store | None:
        """The open state DB, opening it (again) if needed; None (and `store_error`) when it cannot be."""
        async with self._store_lock:
            if self.store is not None or self._closed:
                return self.store
            try:
                store = await asyncio.to_thread(Store.open, self.config.state.url)
            except StateError as exc:
                if str(exc) != self.store_error:
                    log.error("%s (retried at the next pass or readiness check)", exc)
                self.store_error = str(exc)
                return None
            if self._closed:  # stopped while it was opening
                store.close()
                return None
            self.store, self.store_error = store, None
            log.info("state DB %s is open", store.url)
            try:
                await asyncio.to_thread(self._seed_last_success, store)
            except StateError as exc:  # pragma: no cover - the DB just answered
                log.warning("could not read the last successes: %s", exc)
            return store

    def _seed_last_success(self, store: Store) -> None:
        # Every group the file names (inline, HubSpot lists, fixed-group SQL sources), not only the inline ones.
        for group, targets in self.config.group_targets():
            for target in targets:
                when = store.last_success(group, target.provider)
                if when is not None:
                    self.metrics.seed_last_success(group, target.provider, when.timestamp())

    # -- a pass ---------------------------------------------------------------------------------------
    async def run_pass(self) -> None:
        """One scheduled pass over every pair (SQLite), once no pass the API started works any (meanwhile the
        API starts none). Never raises: a failing pass is logged and counted."""
        held = self.claims.held
        if held:
            log.info(
                "the scheduled pass waits for the API's passes to end (%s)",
                ", ".join(describe_lock(lock) for lock in held),
            )
        claim = await self.claims.claim_everything("the scheduled pass", self.stopping)
        if claim is None:
            return
        try:
            await self._pass(PassOptions(dry_run=self.dry_run, trigger="serve"))
        finally:
            await claim.release()

    async def run_pair(self, group: str | None, provider: str | None, fence: Fence) -> None:
        """One queue job (PostgreSQL): a pass over one pair, or (`group` None) over the groups only a SQL query
        names, under the job's fence. FencedOut goes through: the queue scheduler logs it."""
        if group is None or provider is None:
            options = PassOptions(dry_run=self.dry_run, trigger="serve", skip_groups=self.scheduled_groups, fence=fence)
        else:
            options = PassOptions(
                dry_run=self.dry_run,
                trigger="serve",
                groups=frozenset({group}),
                providers=frozenset({provider}),
                pairs=frozenset({(group.casefold(), provider)}),
                fence=fence,
            )
        await self._pass(options)

    async def _pass(self, options: PassOptions) -> None:
        if self.stopping.is_set():
            return
        started = time.monotonic()
        with bind(trigger="serve"):
            store = await self.get_store()
            if store is None:
                log.error("pass skipped: the state DB is not available: %s", self.store_error)
                self._failed(started, f"state DB not available: {self.store_error}")
                return
            try:
                reconciler = Reconciler(self.config, store, self.metrics, progress=self.progress)
                report = await reconciler.run(options, stop=self.pass_stop)
            except FencedOut:
                raise
            except SyncdError as exc:
                log.error("pass failed: %s", exc)
                self._failed(started, str(exc))
                return
            except Exception as exc:
                log.exception("pass crashed")
                message = f"internal error: {type(exc).__name__}: {exc}"
                self._failed(started, message)
                return
            finally:
                if self.progress is not None:
                    self.progress.close()
            await self._refresh_blocked(store)
            self.last_pass = {
                "run_id": report.run_id,
                "outcome": report.outcome,
                "seconds": round(time.monotonic() - started, 3),
                "finished_at": time.time(),
            }

    async def _refresh_blocked(self, store: Store) -> None:
        """`syncd_pair_blocked` from the quarantine table, for every pair of the file: with several replicas, a
        pair's latest pass may have run on another one, and this replica's gauge must not stay stale."""
        try:
            held = await asyncio.to_thread(store.quarantined)
        except SyncdError as exc:
            log.warning("could not read the quarantined pairs: %s", exc)
            return
        blocked = {(q.name.casefold(), q.provider) for q in held}
        for group, targets in self.config.group_targets():
            for target in targets:
                is_held = (group.casefold(), target.provider) in blocked
                self.metrics.blocked.labels(group, target.provider).set(1 if is_held else 0)

    # -- a pass the API starts (syncd.api.ApiBackend) -------------------------------------------------
    async def start_api_pass(self, request: RunRequest) -> StartedPass:
        """Claim the pairs `request` chose (PairsBusy if a pass works one of them) and start a pass over them;
        return once its run is recorded, the pass going on in its own task. Unavailable when it cannot start."""
        if self.stopping.is_set():
            raise Unavailable("syncd is stopping")
        store = await self.get_store()
        if store is None:
            raise Unavailable(f"the state DB is not available: {self.store_error}")
        config = self.config  # a reload meanwhile does not change this pass
        claim = await self._claim(selection_locks(config, request.groups, request.providers))
        options = PassOptions(
            dry_run=self.dry_run or request.dry_run,
            groups=frozenset(request.groups),
            providers=frozenset(request.providers),
            trigger="api",
            fence=claim.fence,
        )
        run_id: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._api_pass(config, store, options, claim, run_id), name="syncd-api-pass")
        self._api_tasks.add(task)
        task.add_done_callback(self._api_tasks.discard)
        task.add_done_callback(lambda _: _ended_before_its_run(run_id, task))
        return StartedPass(await run_id, task)

    async def _claim(self, locks: list[str]) -> Claim:
        if isinstance(self.scheduler, PassScheduler):
            return await self.claims.claim(locks, "another API pass")
        return await self.scheduler.claim(locks, "an API pass")

    async def _api_pass(
        self, config: Config, store: Store, options: PassOptions, claim: Claim, run_id: asyncio.Future[str]
    ) -> RunReport:
        loop = asyncio.get_running_loop()

        def resolve(value: str) -> None:
            if not run_id.done():
                run_id.set_result(value)

        def started(value: str) -> None:  # in the thread that recorded the run
            loop.call_soon_threadsafe(resolve, value)

        try:
            with bind(trigger="api"):
                tapped = cast(Store, _RunStartTap(store, started))
                return await Reconciler(config, tapped, self.metrics).run(options, stop=self.pass_stop)
        except FencedOut as exc:
            log.warning("%s", exc)
            raise
        except SyncdError as exc:
            log.error("the API's pass failed: %s", exc)
            raise
        except Exception:
            log.exception("the API's pass crashed")
            raise
        finally:
            await claim.release()

    def _failed(self, started: float, error: str) -> None:
        self.metrics.observe_run("failure", time.monotonic() - started)
        self.last_pass = {
            "run_id": None,
            "outcome": "failure",
            "error": error,
            "seconds": round(time.monotonic() - started, 3),
            "finished_at": time.time(),
        }

    # -- health (syncd.server.HealthSource) -----------------------------------------------------------
    def health(self) -> Check:
        alive = self.scheduler.alive
        details: dict[str, Any] = {
            "scheduler": "running" if alive else "stopped",
            "schedule": self.config.schedule.describe(),
            "pass_running": self.scheduler.pass_running,
            "passes_started": self.scheduler.passes_started,
            "next_pass_at": self.scheduler.next_pass_at.isoformat() if self.scheduler.next_pass_at else None,
            "last_pass": self.last_pass,
            "lease_holder": self.holder,
            "stopping": self.stopping.is_set(),
            "api": "on" if self.config.server.api_token is not None else "off",
            "api_passes_running": len(self._api_tasks),
        }
        return Check(alive, [] if alive else ["the scheduler is not running"], details)

    async def readiness(self) -> Check:
        reasons: list[str] = []
        details: dict[str, Any] = {"config": str(self.config.path)}
        if self.stopping.is_set():
            reasons.append("shutting down")
            return Check(False, reasons, details)
        store = await self.get_store()
        if store is None:
            reasons.append(f"state DB not available: {self.store_error}")
        else:
            details["state"] = store.url
            try:
                await asyncio.wait_for(asyncio.to_thread(store.ping), READY_PING_TIMEOUT)
            except StateError as exc:
                reasons.append(str(exc))
            except TimeoutError:
                reasons.append(f"state DB {store.url}: no answer within {READY_PING_TIMEOUT:g}s")
        return Check(not reasons, reasons, details)

    # -- config reload ------------------------------------------------------------------------------
    def request_reload(self) -> None:
        """SIGHUP: load the config file again (in a task of its own)."""
        if self.stopping.is_set():
            return
        task = asyncio.ensure_future(self.reload_config("SIGHUP"))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_config(self) -> None:
        """Reload when the file changes (looked at every CONFIG_POLL seconds)."""
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), CONFIG_POLL)
            if not self.stopping.is_set() and _file_signature(self.config.path) != self._config_seen:
                await self.reload_config("the file changed")

    async def reload_config(self, why: str) -> bool:
        """Load the config file again: a valid one is in force from the next pass, an invalid one is logged and
        the running one stays. Counted in syncd_config_reloads_total. True if it took."""
        async with self._reload_lock:
            path = self.config.path
            self._config_seen = _file_signature(path)  # before reading: a change after it is seen next time
            try:
                new = await asyncio.to_thread(load_config, path)
                changes = self._apply_config(self._keep_restart_settings(new))
            except SyncdError as exc:  # ConfigError: one file:line: key: message line per problem
                self.reloads.labels(outcome="failure").inc()
                for line in str(exc).splitlines():
                    log.error("config not reloaded (%s), the running config stays: %s", why, line)
                return False
            self.reloads.labels(outcome="success").inc()
            log.info(
                "config reloaded (%s) from %s, in force from the next pass: %s",
                why,
                path,
                changes or "nothing the passes see changed",
                extra={"reload": why},
            )
            for warning in self.config.warnings():
                log.warning("%s: %s", path, warning)
            return True

    def _keep_restart_settings(self, new: Config) -> Config:
        """`new` with the running values of what needs a restart to change, each change logged."""
        old = self.config
        keys = RESTART_ONLY + (QUEUE_RESTART_ONLY if not isinstance(self.scheduler, PassScheduler) else ())
        kept: dict[str, Any] = {}
        for key in keys:
            section, name = key.split(".")
            before, after = getattr(getattr(old, section), name), getattr(getattr(new, section), name)
            if before != after:
                shown = old.state.safe_url if key == "state.url" else before
                log.warning("%s changed in the config: that needs a restart; until then it stays %s", key, shown)
                kept.setdefault(section, {})[name] = before
        if not kept:
            return new
        update = {section: getattr(new, section).model_copy(update=values) for section, values in kept.items()}
        return new.model_copy(update=update)

    def _apply_config(self, new: Config) -> str:
        """Put `new` in force (the scheduler's part first: a ConfigError leaves everything as it was). Says what
        changed."""
        old = self.config
        if isinstance(self.scheduler, PassScheduler):
            changes = [self.scheduler.reschedule(new.schedule)]
        else:
            pairs = _pairs(new)
            changes = [self.scheduler.set_pairs(pairs, new.schedule, query_groups=new.has_query_named_groups)]
            self.scheduled_groups = frozenset(group.casefold() for group, _ in pairs)
        self.config = new
        changes += _differences("groups", old.group_names(), new.group_names())
        changes += _differences("providers", [p.name for p in old.providers], [p.name for p in new.providers])
        if old.server.api_token != new.server.api_token:
            changes.append(f"API token {'set' if new.server.api_token else 'removed'}")
        return ", ".join(c for c in changes if c)


def _ended_before_its_run(run_id: asyncio.Future[str], task: asyncio.Task[RunReport]) -> None:
    """An API pass that ended without recording its run (the state DB went away) could not start."""
    if not run_id.done():
        error = task.exception() if not task.cancelled() else None
        run_id.set_exception(Unavailable(f"the pass could not start: {error or 'cancelled'}"))


def _pairs(config: Config) -> list[tuple[str, str]]:
    return [(group, t.provider) for group, targets in config.group_targets() for t in targets]


def _differences(what: str, before: list[str], after: list[str]) -> list[str]:
    added = [n for n in after if n not in before]
    removed = [n for n in before if n not in after]
    out = [f"{what} added: {', '.join(added)}"] if added else []
    return out + ([f"{what} removed: {', '.join(removed)}"] if removed else [])


def _file_signature(path: Path) -> tuple[int, int, int, int] | None:
    """What tells a changed file: mtime, size, inode, device (None when it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


class _RunStartTap:
    """The state DB as one API pass sees it: the daemon's store, that also tells `started` the run's id as soon
    as the reconciler records the run, so that the API answers 202 with it while the pass goes on. (A hook of the
    reconciler's own, told the run id, would do without standing in for the store.)"""

    def __init__(self, store: Store, started: Callable[[str], None]) -> None:
        self._store, self._started = store, started

    def start_run(self, *, dry_run: bool, trigger: str, selection: dict[str, Any] | None = None) -> str:
        run_id = self._store.start_run(dry_run=dry_run, trigger=trigger, selection=selection)
        self._started(run_id)
        return run_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def serve(
    config: Config,
    *,
    dry_run: bool = False,
    stop_timeout: float = STOP_TIMEOUT,
    progress: ProgressDisplay | None = None,
    exit_process: bool = True,
) -> int:
    """`syncd serve`: run the daemon until it stops, then end the process with its exit code.

    The process ends as soon as the daemon has stopped, its "stopped after …" line being the last thing it
    writes: by then the daemon has closed all it owns (the pass, its leases, the state DB, the HTTP server),
    and what asyncio's and the interpreter's teardown would still do only delays the exit, past the stop
    bound too: collecting the ~100,000 objects of the loaded libraries (0.2 s of CPU, seconds in a container
    with a small CPU share), joining a worker thread still blocked in a DNS lookup or a state DB connect
    (up to the DB's connect or busy timeout), waiting for a cancelled pass that has not ended.

    With ``exit_process=False`` the exit code is returned after the usual teardown instead. A daemon that
    cannot start (SyncdError) raises either way.
    """

    async def main() -> int:
        daemon = Daemon(config, dry_run=dry_run, stop_timeout=stop_timeout, progress=progress)
        return await daemon.main()

    with asyncio.Runner() as runner:  # closed (tasks cancelled, threads joined) only when not exiting here
        code = runner.run(main())
        if exit_process:
            _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """End the process with `code` now, its log lines and output written out first."""
    logging.shutdown()  # flushes every handler
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # closed, or a reader gone
            stream.flush()
    os._exit(code)
