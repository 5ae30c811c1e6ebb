"""Fencing: a replica whose queue job was taken over writes nothing more for that pair.

On PostgreSQL, `syncd serve` works each (group, provider) pair as a Procrastinate job. If a replica stops
sending heartbeats (killed, frozen, cut off), another one takes its stalled job over after
`server.stalled_after`. Should the first replica come back, it must not go on writing: the job it started is
no longer its own. So every state DB write made for a job checks, in the same transaction and with the job's
row locked against the takeover, that the job is still `doing` on this worker (`Fence.holds`); the store does
that for every write while `current_fence` is set (a context variable: it follows the job's asyncio tasks and
the threads they hand DB calls to). Before each write to a provider the applier checks the fence too (the
provider's API cannot join the transaction: that check is as close as it gets).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

import sqlalchemy as sa

from syncd.errors import SyncdError

__all__ = ["Fence", "FencedOut", "current_fence"]


class FencedOut(SyncdError):
    """This replica's job for the pair was taken over by another replica: stop working on it, write nothing."""


@dataclass(frozen=True)
class Fence:
    """The queue job a pair is being worked under, on this worker."""

    job_id: int
    worker_id: int | None

    def holds(self, conn: sa.Connection, *, lock: bool = False) -> bool:
        """Whether the job is still `doing` on this worker. `lock`: hold its row (FOR SHARE) until the end of
        the caller's transaction, so a takeover cannot happen between this check and the caller's writes."""
        query = "SELECT 1 FROM procrastinate_jobs WHERE id = :job AND status = 'doing'"
        params: dict[str, int] = {"job": self.job_id}
        if self.worker_id is not None:
            query += " AND worker_id = :worker"
            params["worker"] = self.worker_id
        if lock:
            query += " FOR SHARE"
        return conn.execute(sa.text(query), params).first() is not None

    def describe(self) -> str:
        return (
            f"queue job {self.job_id} is no longer this replica's (another replica took it over after this one "
            "missed its heartbeats): nothing more is written for it here"
        )


# The fence of the job whose pass is running in this task (None outside queue jobs: nothing to check).
current_fence: ContextVar[Fence | None] = ContextVar("syncd_fence", default=None)
