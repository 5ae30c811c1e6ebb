"""When and where `syncd serve` works each pair with several replicas: Procrastinate, a PostgreSQL task queue.

On a PostgreSQL state DB every replica is a Procrastinate worker, and each (group, provider) pair is a periodic
job of its own:

* **Once per period, across all replicas.** Every replica runs Procrastinate's periodic deferrer; the queue
  keeps one defer per (pair, scheduled time) whoever asks (its `procrastinate_periodic_defers` table), so a
  pair is deferred once per schedule period. The schedule is `schedule.cron`, or `schedule.every` as the cron
  expression it divides an hour or a day into (`queue_cron`). `schedule.jitter` does not apply here.
* **Never twice at once, never queued twice.** A pair's jobs share a `lock` (no two run at the same time) and a
  `queueing_lock` (at most one waits): a pass that outlasts its period delays the next, it does not pile up.
* **A dead replica's pairs are taken over.** Workers send heartbeats; a replica whose heartbeat is older than
  `server.stalled_after` is taken for dead by the others: each replica sweeps now and then (`sweep_stalled`),
  marks such a job failed and defers the pair again at once, under a new job id.
* **Fencing.** The takeover gives the pair a new job: the old one is failed. Should the old replica come back
  (it was frozen, cut off), its writes check the job they run under (`syncd.state.fence.Fence`): every state DB
  write checks it in its own transaction, and the applier before each provider write. It writes nothing more.
* Groups that only a SQL query names (known when it runs, not at start) share one job (`REST_ID`): it works
  every group not otherwise scheduled.
* **Passes the daemon's API starts** (`claim`) take the locks of the pairs they chose in the queue itself: one job
  per pair, inserted as `doing` on this replica's API worker (a worker row of its own, with heartbeats) in one
  statement. The queue's unique index on the lock of `doing` jobs makes that all or nothing, and refused when a
  job (another API pass, a periodic job on any replica) already works one of those pairs: `PairsBusy`. While held,
  no queued job of those pairs starts (the queue does not start a job whose lock a `doing` job holds), and the
  pass writes under a fence over all its claim jobs (`ClaimFence`). Should this replica die mid-pass, its claims
  go stale like any job and are taken over. (Deferring jobs through the queue and waiting for them would also
  respect the locks, but it splits an API pass into one run per pair, maybe on other replicas, and queues behind
  a running pair instead of answering that it runs.)
* **Reloading the config** (`set_pairs`): the periodic jobs are registered again for the pairs added and removed,
  and for a new schedule. The periodic deferrer is syncd's own task over its own registry (not the worker's), so
  it can be restarted with the new set; a queued job of a pair the config no longer has is skipped.

The queue's schema is installed by the state DB's migrations (revision 0003); `syncd validate --online` checks
it is there (`check_schema`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from procrastinate import App, JobContext, PsycopgConnector
from procrastinate import exceptions as queue_errors
from procrastinate.jobs import Status
from procrastinate.periodic import PeriodicDeferrer, PeriodicRegistry
from sqlalchemy.engine import make_url

from syncd.config import ScheduleSettings
from syncd.errors import ConfigError
from syncd.scheduling.claims import REST_LOCK, SEP, Claim, PairsBusy, pair_lock
from syncd.state.fence import Fence, FencedOut

__all__ = [
    "QUEUE",
    "REST_ID",
    "TASK",
    "ClaimFence",
    "PairJob",
    "QueueScheduler",
    "check_schema",
    "conninfo",
    "queue_cron",
]

log = logging.getLogger("syncd.scheduling")

QUEUE = "syncd"  # the Procrastinate queue syncd's jobs go to
TASK = "syncd.sync_pair"  # the task that works one pair (or, for REST_ID, the groups only a query names)
REST_ID = REST_LOCK  # the lock / periodic id of that job (no group name can hold a NUL)
DEFERRER_RETRY = 5.0  # seconds before the periodic deferrer starts again after an error (the DB gone a moment)

# The API's claims: one `doing` job per pair on the API worker, all or none (the unique index on the lock of
# `doing` jobs refuses the whole statement if any pair is taken).
_CLAIM = """
INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, status, worker_id)
SELECT %(queue)s, %(task)s, wanted.lock, jsonb_build_object('lock', wanted.lock, 'api', true), 'doing', %(worker)s
  FROM unnest(%(locks)s::text[]) AS wanted(lock)
RETURNING id
"""
_HOLDERS = "SELECT DISTINCT lock FROM procrastinate_jobs WHERE status = 'doing' AND lock = ANY(%(locks)s::text[])"


class PairJob(Protocol):
    """Works one pair under a fence (`group` None: every group no other job schedules, `skip` lists those)."""

    def __call__(self, group: str | None, provider: str | None, fence: Fence) -> Awaitable[None]: ...


def queue_cron(schedule: ScheduleSettings) -> str:
    """`schedule` as a cron expression Procrastinate's periodic deferrer reads: `cron` as given, `every` as the
    steps it divides a minute, an hour or a day into (a 6th field is seconds)."""
    if schedule.cron:
        return schedule.cron
    assert schedule.every is not None
    seconds = int(schedule.every.total_seconds())
    if seconds < 60 and 60 % seconds == 0:
        return f"* * * * * */{seconds}"
    minutes, rest = divmod(seconds, 60)
    if not rest and minutes < 60 and 60 % minutes == 0:
        return f"*/{minutes} * * * *"
    hours, rest = divmod(minutes, 60)
    if not rest and hours <= 24 and 24 % hours == 0:
        return "0 0 * * *" if hours == 24 else f"0 */{hours} * * *"
    raise ConfigError(
        f"schedule.every {schedule.describe()} cannot be shared by replicas: with a PostgreSQL state DB passes run on "
        "a cron schedule, so give an interval that divides a minute, an hour or a day (e.g. 15m, 2h), or a cron",
        key="schedule.every",
    )


def conninfo(url: str) -> str:
    """The libpq connection string of a `postgresql+psycopg://…` state URL, for Procrastinate's connector."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


async def check_schema(url: str) -> str | None:
    """Why the queue cannot be used on this state DB (its schema missing, the DB unreachable), or None."""
    connector = PsycopgConnector(conninfo=conninfo(url))
    app = App(connector=connector)
    try:
        async with app.open_async():
            if not await app.check_connection_async():
                return (
                    "the queue's tables are missing: syncd installs them when it opens the state DB (run any command)"
                )
    except Exception as exc:
        return f"cannot reach the queue: {type(exc).__name__}"
    return None


class QueueScheduler:
    """Runs each configured pair as a Procrastinate periodic job on this replica's worker (see the module
    docstring). Same life cycle as `PassScheduler`: start, pause, wait_idle, shutdown."""

    def __init__(
        self,
        url: str,
        schedule: ScheduleSettings,
        pairs: Sequence[tuple[str, str]],
        run_pair: PairJob,
        *,
        workers: int,
        stalled_after: timedelta,
        name: str,
        query_groups: bool = False,
    ) -> None:
        self.schedule = schedule
        self.cron = queue_cron(schedule)
        self.run_pair = run_pair
        self.workers = workers
        self.stalled_after = stalled_after.total_seconds()
        self.name = name
        self.app = App(connector=PsycopgConnector(conninfo=conninfo(url)))
        self.task = self.app.task(name=TASK, queue=QUEUE, pass_context=True)(self._job)
        # The periodic jobs: syncd's own registry and deferrer (the worker's stays empty), restarted on a reload.
        self.registry = PeriodicRegistry()  # type: ignore[no-untyped-call]
        self.locks: list[str] = []
        self._register(self._locks_of(pairs, query_groups))
        self.passes_started = 0
        self.api_worker_id: int | None = None  # the worker row the API's claims are `doing` on
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._paused = False
        self._opened: Any = None
        self._worker: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._deferrer: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    @staticmethod
    def _locks_of(pairs: Sequence[tuple[str, str]], query_groups: bool) -> list[str]:
        locks = [pair_lock(group, provider) for group, provider in pairs]
        return [*locks, REST_ID] if query_groups else locks

    def _register(self, locks: Sequence[str]) -> None:
        for lock in locks:
            self.registry.register_task(
                task=self.task,  # type: ignore[arg-type]  # the deferrer adds `timestamp`; _job takes it
                cron=self.cron,
                periodic_id=lock,
                configure_kwargs={"lock": lock, "queueing_lock": lock, "task_kwargs": {"lock": lock}},
            )
        self.locks += locks

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._opened = self.app.open_async()
        await self._opened.__aenter__()
        self.api_worker_id = await self.app.job_manager.register_worker()
        self._heartbeat = asyncio.create_task(self._beat_forever(self.api_worker_id), name="syncd-api-heartbeat")
        self._deferrer = asyncio.create_task(self._defer_forever(), name="syncd-periodic-deferrer")
        self._worker = asyncio.create_task(
            self.app.run_worker_async(
                queues=[QUEUE],
                name=self.name,
                concurrency=self.workers,
                wait=True,
                install_signal_handlers=False,
                update_heartbeat_interval=max(1.0, self.stalled_after / 4),
                stalled_worker_timeout=self.stalled_after,
            ),
            name="syncd-queue-worker",
        )
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="syncd-stalled-sweeper")
        log.info(
            "queue worker %s: %d pairs on the shared schedule %r, %d at a time; a replica silent for %gs is taken over",
            self.name,
            len(self.locks),
            self.cron,
            self.workers,
            self.stalled_after,
            extra={"pairs": len(self.locks), "cron": self.cron},
        )
        if self.schedule.jitter.total_seconds():
            log.warning("schedule.jitter does not apply with a PostgreSQL state DB: replicas share one schedule")

    def pause(self) -> None:
        """Take no new job (the running ones go on)."""
        self._paused = True

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def shutdown(self) -> None:
        """Stop the worker (jobs still running are cancelled), the deferrer, the sweeper and the API worker's
        heartbeats (its row goes: claims still held are then taken over); close the queue's connections."""
        tasks = (self._sweeper, self._deferrer, self._heartbeat, self._worker)
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.api_worker_id is not None and self._opened is not None:
            with contextlib.suppress(Exception):
                await self.app.job_manager.unregister_worker(self.api_worker_id)
            self.api_worker_id = None
        if self._opened is not None:
            with contextlib.suppress(Exception):
                await self._opened.__aexit__(None, None, None)
            self._opened = None

    # -- state ----------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._worker is not None and not self._worker.done()

    @property
    def pass_running(self) -> bool:
        return self._running > 0

    @property
    def next_pass_at(self) -> datetime | None:
        return None  # per pair, in the queue (procrastinate_jobs.scheduled_at)

    # -- a new config ---------------------------------------------------------------------------------
    def set_pairs(self, pairs: Sequence[tuple[str, str]], schedule: ScheduleSettings, *, query_groups: bool) -> str:
        """Register the periodic jobs again for a reloaded config: pairs added and removed, a new schedule (a
        ConfigError if it cannot be shared). A new registry and deferrer replace the old ones (the queue keeps one
        defer per pair and time, so nothing is deferred twice); an added pair is deferred at once for the period
        under way. Says what changed ("" when nothing did)."""
        cron = queue_cron(schedule)
        wanted = self._locks_of(pairs, query_groups)
        added = [lock for lock in wanted if lock not in self.locks]
        removed = [lock for lock in self.locks if lock not in wanted]
        if cron == self.cron and not added and not removed:
            return ""
        changes = [f"schedule {self.cron!r} → {cron!r}"] if cron != self.cron else []
        changes += [f"{len(added)} pairs added"] if added else []
        changes += [f"{len(removed)} pairs removed"] if removed else []
        if self._deferrer is not None:
            self._deferrer.cancel()
        self.schedule, self.cron, self.locks, self.registry = schedule, cron, [], PeriodicRegistry()  # type: ignore[no-untyped-call]
        self._register(wanted)
        if self._deferrer is not None:  # started: begin again with the new set
            self._deferrer = asyncio.create_task(self._defer_forever(), name="syncd-periodic-deferrer")
        return ", ".join(changes)

    # -- the API's passes -------------------------------------------------------------------------------
    async def claim(self, locks: Sequence[str], by: str) -> Claim:
        """Hold `locks` for a pass the API started, or raise PairsBusy (nothing held then)."""
        worker = self.api_worker_id
        if worker is None:
            raise PairsBusy(locks, "the queue is not running yet")
        wanted = list(dict.fromkeys(locks))
        if not wanted:
            return _QueueClaim(self, [], None)
        connector = self.app.connector
        try:
            rows = await connector.execute_query_all_async(_CLAIM, queue=QUEUE, task=TASK, worker=worker, locks=wanted)
        except queue_errors.UniqueViolation:
            held = await connector.execute_query_all_async(_HOLDERS, locks=wanted)
            raise PairsBusy([row["lock"] for row in held] or wanted, "a queue job or another API pass") from None
        ids = tuple(int(row["id"]) for row in rows)
        return _QueueClaim(self, list(ids), ClaimFence(ids[0], worker, ids))

    async def _finish(self, job_ids: Sequence[int]) -> None:
        for job_id in job_ids:
            try:
                await self.app.job_manager.finish_job_by_id_async(job_id, Status.SUCCEEDED, delete_job=False)
            except Exception as exc:  # taken over meanwhile (this replica missed its heartbeats), or the DB gone
                log.warning("could not release the API's claim (job %s): %s", job_id, type(exc).__name__)

    # -- jobs -----------------------------------------------------------------------------------------
    async def _job(self, context: JobContext, *, lock: str, timestamp: int | None = None) -> None:
        if self._paused:
            return  # stopping: the next period's job (or another replica) does it
        if lock not in self.locks:
            log.info("skipped a queued job of a pair the config no longer has: %s", lock.replace(SEP, " → "))
            return
        job = context.job
        assert job.id is not None
        fence = Fence(job.id, job.worker_id)
        group, provider = (None, None) if lock == REST_ID else tuple(lock.split(SEP, 1))
        self._running += 1
        self._idle.clear()
        self.passes_started += 1
        try:
            await self.run_pair(group, provider, fence)
        except FencedOut as exc:
            log.warning("%s", exc)
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def _defer_forever(self) -> None:
        while True:
            try:
                await PeriodicDeferrer(self.registry).worker()
                return  # no periodic job at all: a reload that adds some starts it again
            except Exception as exc:
                log.warning("the periodic deferrer stopped: %s: %s", type(exc).__name__, str(exc).strip()[:200])
            await asyncio.sleep(DEFERRER_RETRY)

    async def _beat_forever(self, worker_id: int) -> None:
        interval = max(1.0, self.stalled_after / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.app.job_manager.update_heartbeat(worker_id)
            except Exception as exc:
                log.warning("could not send the API worker's heartbeat: %s", type(exc).__name__)

    async def _sweep_forever(self) -> None:
        interval = max(1.0, min(15.0, self.stalled_after / 4))
        while True:
            try:
                await sweep_stalled(self.app, self.task, self.stalled_after)
            except Exception as exc:  # the DB gone for a moment: the next sweep tries again
                log.warning("could not look for stalled jobs: %s: %s", type(exc).__name__, str(exc).strip()[:200])
            await asyncio.sleep(interval)


async def sweep_stalled(app: App, task: Any, stalled_after: float) -> int:
    """Take over the jobs of replicas silent for longer than `stalled_after` seconds: each is marked failed (its
    replica, should it come back, is fenced out) and its pair deferred again at once, under a new job. Returns how
    many were taken over. Replicas sweeping at the same time take each job over once."""
    manager = app.job_manager
    taken = 0
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after, task_name=TASK):
        assert job.id is not None
        try:
            await manager.finish_job_by_id_async(job.id, Status.FAILED, delete_job=False)
        except Exception:  # another replica took it over first
            continue
        lock = str(job.task_kwargs.get("lock", ""))
        with contextlib.suppress(queue_errors.AlreadyEnqueued):  # the pair's next job already waits
            await task.configure(lock=lock, queueing_lock=lock, task_kwargs={"lock": lock}).defer_async()
        taken += 1
        log.warning(
            "took over the pair %s of a replica silent for over %gs (job %s)",
            lock.replace(SEP, " → ") if lock != REST_ID else "(groups a query names)",
            stalled_after,
            job.id,
        )
    return taken


@dataclass(frozen=True)
class ClaimFence(Fence):
    """The fence of an API pass: every one of its claim jobs must still be `doing` on the API worker."""

    job_ids: tuple[int, ...] = ()

    def holds(self, conn: sa.Connection, *, lock: bool = False) -> bool:
        query = "SELECT id FROM procrastinate_jobs WHERE id = ANY(:jobs) AND status = 'doing' AND worker_id = :worker"
        if lock:
            query += " FOR SHARE"
        rows = conn.execute(sa.text(query), {"jobs": list(self.job_ids), "worker": self.worker_id}).all()
        return len(rows) == len(self.job_ids)

    def describe(self) -> str:
        return (
            f"the API pass's claims (queue jobs {', '.join(map(str, self.job_ids))}) are no longer this replica's "
            "(another replica took them over after this one missed its heartbeats): nothing more is written for them"
        )


class _QueueClaim:
    def __init__(self, scheduler: QueueScheduler, job_ids: list[int], fence: ClaimFence | None) -> None:
        self._scheduler, self._job_ids, self._fence = scheduler, job_ids, fence

    @property
    def fence(self) -> Fence | None:
        return self._fence

    async def release(self) -> None:
        job_ids, self._job_ids = self._job_ids, []
        await self._scheduler._finish(job_ids)
