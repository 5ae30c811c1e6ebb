"""When `syncd serve` runs a pass on a SQLite state DB (one process): APScheduler 3's AsyncIOScheduler inside
the daemon's one asyncio loop.

* `schedule.every` becomes an IntervalTrigger, `schedule.cron` a CronTrigger that means what cron means (see
  `cron_trigger`), both with `schedule.jitter` (a random delay of up to that much, added to each pass).
  Cron expressions are read in the process's local time zone (``TZ``; UTC in the container image).
* One job, ``max_instances=1``: passes never overlap. A fire time that comes while a pass is still running is
  skipped, not queued (logged at INFO); fire times missed while the process could not run (suspended,
  loop busy) are coalesced into one pass (``coalesce=True``), however late (``misfire_grace_time=None``).
* The first pass runs as soon as the scheduler starts: after a (re)start the metrics and the groups are
  brought up to date at once instead of one interval later. Later passes follow the schedule.
* Stopping: `pause()` stops new passes, `wait_idle()` waits for the running one, `shutdown()` cancels
  whatever is left. The daemon (syncd.serve) sets the pass's stop event in between.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, tzinfo
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncd.config import ScheduleSettings

__all__ = ["JOB_ID", "PassScheduler", "build_trigger", "cron_day_of_week", "cron_trigger"]

log = logging.getLogger("syncd.scheduling")

JOB_ID = "reconciliation-pass"
# cron's day numbers: 0 (and 7) is Sunday. APScheduler 3 numbers Monday 0, so days are handed to it by name.
_CRON_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_APS_ORDER = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _cron_day(text: str) -> int:
    text = text.strip().lower()
    if text in _CRON_DAYS:
        return _CRON_DAYS.index(text)
    n = int(text)
    if not 0 <= n <= 7:
        raise ValueError(f"cron day of week {n} is out of range 0-7")
    return n


def cron_day_of_week(field: str) -> str:
    """A cron day-of-week field in APScheduler 3's terms, with cron's meaning.

    APScheduler 3 reads ``0`` as Monday where cron reads Sunday (``CronTrigger.from_crontab`` keeps that
    mismatch), so the days are expanded as cron means them (0 and 7 are Sunday, ranges and steps included) and
    given to APScheduler by name: ``1-5`` and ``mon-fri`` → ``mon,tue,wed,thu,fri``; ``0-6`` → ``*``.
    """
    days: set[int] = set()
    for item in field.split(","):
        rng, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if rng == "*":
            first, last = 0, 6
        elif "-" in rng:
            a, b = rng.split("-", 1)
            first, last = _cron_day(a), _cron_day(b)
        else:
            first = _cron_day(rng)
            last = 7 if step_text else first  # "1/2" in cron: from 1 to the end, every 2nd
        days.update(d % 7 for d in range(first, last + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(name for name in _APS_ORDER if _CRON_DAYS.index(name) in days)


def cron_trigger(expr: str, *, jitter: float | None = None, timezone: tzinfo | None = None) -> BaseTrigger:
    """A trigger that fires when cron would fire for `expr` (5 fields, already checked by the config).

    Two of cron's rules APScheduler 3 does not share are applied here: day-of-week numbering (see
    `cron_day_of_week`), and that when both day-of-month and day-of-week are restricted (neither starts with
    ``*``), a day matching *either* one fires (``0 0 1 * mon``: the 1st of the month and every Monday).
    """
    minute, hour, day, month, day_of_week = expr.split()
    common: dict[str, Any] = {"minute": minute, "hour": hour, "month": month, "timezone": timezone}
    dow = cron_day_of_week(day_of_week)
    if not day.startswith("*") and not day_of_week.startswith("*"):
        return OrTrigger(
            [CronTrigger(day=day, **common), CronTrigger(day_of_week=dow, **common)],
            jitter=jitter,
        )
    return CronTrigger(day=day, day_of_week=dow, jitter=jitter, **common)


def build_trigger(schedule: ScheduleSettings, timezone: tzinfo | None = None) -> BaseTrigger:
    jitter = schedule.jitter.total_seconds() or None
    if schedule.cron:
        return cron_trigger(schedule.cron, jitter=jitter, timezone=timezone)
    assert schedule.every is not None  # the config's default: every 15m when neither is given
    return IntervalTrigger(seconds=schedule.every.total_seconds(), jitter=jitter, timezone=timezone)


class PassScheduler:
    """Runs `run_pass` on `schedule`, never two at once, first at start. Use inside a running asyncio loop."""

    def __init__(
        self,
        schedule: ScheduleSettings,
        run_pass: Callable[[], Awaitable[None]],
        *,
        first_pass_at_start: bool = True,
        timezone: tzinfo | None = None,
    ) -> None:
        self.schedule = schedule
        self.run_pass = run_pass
        self.first_pass_at_start = first_pass_at_start
        self.timezone = timezone
        self.scheduler: Any = None  # AsyncIOScheduler, created in start() on the running loop
        self.passes_started = 0
        self.skipped_while_running = 0
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        options: dict[str, Any] = {"event_loop": asyncio.get_running_loop()}
        if self.timezone is not None:
            options["timezone"] = self.timezone
        scheduler = AsyncIOScheduler(**options)
        trigger = build_trigger(self.schedule, timezone=self.timezone)
        job_options: dict[str, Any] = {}
        if self.first_pass_at_start:
            job_options["next_run_time"] = datetime.now(scheduler.timezone)
        scheduler.add_job(
            self._job,
            trigger,
            id=JOB_ID,
            name="reconciliation pass",
            max_instances=1,  # passes never overlap
            coalesce=True,  # fire times missed meanwhile make one pass, not a burst
            misfire_grace_time=None,  # a late pass still runs (once), however late
            replace_existing=True,
            **job_options,
        )
        scheduler.add_listener(self._on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED | EVENT_JOB_ERROR)
        scheduler.start()
        self.scheduler = scheduler
        log.info(
            "passes scheduled %s%s",
            self.schedule.describe(),
            ", the first one now" if self.first_pass_at_start else "",
            extra={"schedule": self.schedule.describe()},
        )

    def reschedule(self, schedule: ScheduleSettings) -> str:
        """Follow a reloaded config's schedule from now on (the running pass, if any, goes on). Says what changed
        ("" when nothing did)."""
        if schedule == self.schedule:
            return ""
        before, self.schedule = self.schedule.describe(), schedule
        if self.scheduler is not None and self.scheduler.get_job(JOB_ID) is not None:
            self.scheduler.reschedule_job(JOB_ID, trigger=build_trigger(schedule, timezone=self.timezone))
        return f"schedule {before} → {schedule.describe()}"

    def pause(self) -> None:
        """Start no new pass (the one running, if any, goes on)."""
        if self.scheduler is not None and self.scheduler.state == STATE_RUNNING:
            self.scheduler.pause()

    async def wait_idle(self) -> None:
        """Wait until no pass is running."""
        await self._idle.wait()

    def shutdown(self) -> None:
        """Stop the scheduler; a pass still running is cancelled."""
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    # -- state ----------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """The scheduler runs (or was paused by a shutdown in progress) and still holds the pass job."""
        s = self.scheduler
        return s is not None and s.state in (STATE_RUNNING, STATE_PAUSED) and s.get_job(JOB_ID) is not None

    @property
    def pass_running(self) -> bool:
        return self._running > 0

    @property
    def next_pass_at(self) -> datetime | None:
        job = self.scheduler.get_job(JOB_ID) if self.scheduler is not None else None
        when = getattr(job, "next_run_time", None)
        return when if isinstance(when, datetime) else None

    # -- the job --------------------------------------------------------------------------------------
    async def _job(self) -> None:
        self._running += 1
        self._idle.clear()
        self.passes_started += 1
        try:
            await self.run_pass()
        except asyncio.CancelledError:
            # shutdown() cancelled a pass that outran the stop bound: the daemon reports and records it; this
            # task is APScheduler's own and nobody awaits it, so it ends normally instead of as an error.
            log.info("the running pass was cancelled")
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    def _on_event(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            self.skipped_while_running += 1
            log.info("the previous pass is still running: this scheduled pass is skipped")
        elif event.code == EVENT_JOB_MISSED:  # pragma: no cover - misfire_grace_time=None never misses
            log.warning("a scheduled pass was missed")
        elif event.code == EVENT_JOB_ERROR:  # pragma: no cover - the daemon's pass catches everything
            log.error("a pass ended with an unexpected error: %r", getattr(event, "exception", None))
