"""When `syncd serve` runs passes: `interval` (APScheduler, one process, on a SQLite state DB) and `queue`
(Procrastinate, several replicas sharing a PostgreSQL state DB); `claims`: which pairs a pass may work, so that
a pass the daemon's API starts and a scheduled one never work one pair at once. `queue` is imported only on
PostgreSQL: it needs the `postgres` extra."""

from syncd.scheduling.claims import REST_LOCK, Claim, LocalClaims, PairsBusy, describe_lock, pair_lock, selection_locks
from syncd.scheduling.interval import JOB_ID, PassScheduler, build_trigger, cron_day_of_week, cron_trigger

__all__ = [
    "JOB_ID",
    "REST_LOCK",
    "Claim",
    "LocalClaims",
    "PairsBusy",
    "PassScheduler",
    "build_trigger",
    "cron_day_of_week",
    "cron_trigger",
    "describe_lock",
    "pair_lock",
    "selection_locks",
]
