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
  or a second signal comes, it is cancelled, and the pass closes its run as interrupted. Then this replica's
  leases are released, the DB closed, the HTTP server stopped, "stopped after …" is logged, and the process
  exits 0 right away: `serve` ends it without the interpreter's teardown (see there).

Each replica works pairs under leases held by a unique id, ``host:pid:random`` (`lease_holder_id`), so
several replicas can share one PostgreSQL state DB.
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
from typing import Any, NoReturn

from prometheus_client import PlatformCollector, ProcessCollector

from syncd.config import Config
from syncd.errors import StateError, SyncdError
from syncd.logs import bind
from syncd.metrics import Metrics
from syncd.progress import ProgressDisplay
from syncd.reconciler import PassOptions, Reconciler
from syncd.scheduling import PassScheduler
from syncd.server import Check, HttpServer, make_app
from syncd.state import Store

__all__ = ["CLEANUP_RESERVE", "STOP_TIMEOUT", "Daemon", "lease_holder_id", "serve"]

log = logging.getLogger("syncd.serve")

# From SIGTERM to exit, at most this long by default (`syncd serve --stop-timeout`). Kubernetes'
# terminationGracePeriodSeconds (deploy/kubernetes: 45) and `docker stop -t` must be longer.
STOP_TIMEOUT = 30.0
# Of the stop bound, kept for what follows the pass: cancelling it, closing its run, releasing leases,
# stopping the HTTP server (at most HttpServer.SHUTDOWN_GRACE + 2 s).
CLEANUP_RESERVE = 6.0
READY_PING_TIMEOUT = 5.0  # /readyz: a state DB that takes longer to answer a ping is not ready


def lease_holder_id() -> str:
    """This replica's lease holder id: host:pid:random (unique even for two processes of one host and pid
    namespace, e.g. a restarted container that got the same pid)."""
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
        self.holder = lease_holder_id()
        self.scheduler = PassScheduler(config.schedule, self.run_pass, first_pass_at_start=first_pass_at_start)
        self.http = HttpServer(make_app(self.metrics.registry, self), config.server.host, config.server.port)
        self.store: Store | None = None
        self.store_error: str | None = None
        self.last_pass: dict[str, Any] | None = None
        self.stopping = asyncio.Event()  # a signal came: schedule nothing more
        self.pass_stop = asyncio.Event()  # the running pass's stop event
        self._force = asyncio.Event()  # a second signal: cancel the pass now
        self._store_lock = asyncio.Lock()
        self._closed = False

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
        handled = (signal.SIGTERM, signal.SIGINT)
        for sig in handled:
            loop.add_signal_handler(sig, self.request_stop, sig)
        try:
            await self.http.start()
            log.info(
                "syncd serve: /metrics, /healthz, /readyz on %s; lease holder %s%s",
                self.http.url,
                self.holder,
                " (dry run: nothing is changed)" if self.dry_run else "",
                extra={"listen": self.http.url, "lease_holder": self.holder, "dry_run": self.dry_run},
            )
            if not self.config.providers:
                log.warning(
                    "%s configures no providers: passes will change nothing (mount your config there, or set "
                    "$SYNCD_CONFIG)",
                    self.config.path,
                )
            # The first pass opens the state DB (and so does /readyz): one that is not there yet is reported
            # and retried, not fatal, and /healthz answers meanwhile.
            if not self.stopping.is_set():
                self.scheduler.start()
            stop_wait = asyncio.ensure_future(self.stopping.wait())
            done, _ = await asyncio.wait({self.http.task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            code = 0
            if self.http.task in done and not self.stopping.is_set():
                log.error("the HTTP server stopped unexpectedly; stopping")
                code = 1
            await self.shutdown()
            return code
        finally:
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
        if self.scheduler.pass_running:
            budget = max(1.0, self.stop_timeout - CLEANUP_RESERVE)
            idle = asyncio.ensure_future(self.scheduler.wait_idle())
            forced = asyncio.ensure_future(self._force.wait())
            await asyncio.wait({idle, forced}, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
            forced.cancel()
            if not idle.done():
                idle.cancel()
                log.warning("the pass did not end within %.0fs of the stop: cancelling it", time.monotonic() - started)
        self.scheduler.shutdown()  # cancels a pass still running
        try:
            await asyncio.wait_for(self.scheduler.wait_idle(), 3)
        except TimeoutError:
            log.warning("the cancelled pass has not ended yet; exiting anyway")
        await self._close()
        await self.http.stop()
        seconds = time.monotonic() - started
        log.info("stopped after %.1fs", seconds, extra={"stop_seconds": round(seconds, 3)})

    async def _close(self) -> None:
        """Release this replica's leases and close the DB. Once."""
        if self._closed:
            return
        self._closed = True
        store = self.store
        if store is None:
            return
        try:  # a pass cancelled at the stop bound has recorded its run as interrupted itself (Reconciler.run)
            released = store.release_leases(self.holder)
            if released:
                log.info("released %d leases", released)
        except StateError as exc:
            log.error("while stopping: %s", exc)
        finally:
            store.close()
            self.store = None

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
        """One scheduled pass. Never raises: a failing pass is logged and counted, and the daemon goes on."""
        if self.stopping.is_set():
            return
        started = time.monotonic()
        with bind(trigger="serve"):
            store = await self.get_store()
            if store is None:
                log.error("pass skipped: the state DB is not available: %s", self.store_error)
                self._failed(started, f"state DB not available: {self.store_error}")
                return
            options = PassOptions(dry_run=self.dry_run, trigger="serve", lease_holder=self.holder)
            try:
                reconciler = Reconciler(self.config, store, self.metrics, progress=self.progress)
                report = await reconciler.run(options, stop=self.pass_stop)
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
            self.last_pass = {
                "run_id": report.run_id,
                "outcome": report.outcome,
                "seconds": round(time.monotonic() - started, 3),
                "finished_at": time.time(),
            }

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
