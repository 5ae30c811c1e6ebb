"""One request budget per provider, shared by every replica through the state DB.

Each replica paces its own requests with `connectors.http.TokenBucket`, so three replicas could send three times a
provider's rate limit. On a shared state DB the bucket's state lives in one `rate_buckets` row per provider
instead: `SharedBucket` (a `connectors.http.Limiter`) asks the database for each request's token, and the row is
locked for the decision, so replicas never hand out the same token twice. The rule is the provider's pacing (a
token bucket of `rate_limit` per second with bursts of `burst`, and a sliding window where the server counts one,
Bitcaster's 30 per 60 s); what the provider's answers say (a 429's wait, Stannp's X-RateLimit-* headers) is
written to the row too, so it slows every replica down, not only the one that heard it. Times are the database's
clock (Unix seconds), so replicas with skewed clocks agree. It costs one short transaction per request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from connectors.base import Pacing
from syncd.state.tables import rate_buckets

__all__ = ["Grant", "RateRule", "RateSignals", "SharedBucket", "note_signals", "take_token"]

MAX_WAIT_STEP = 1.0  # a request waiting for its token asks again at least this often (others may pause everyone)


@dataclass(frozen=True)
class RateRule:
    rate: float  # requests per second, sustained (0: no bucket)
    burst: int
    window: tuple[int, float] | None  # at most n requests in any span of seconds


@dataclass
class RateSignals:
    """What answers said about the provider's limit since the last token was taken."""

    pause_for: float = 0.0  # everyone waits this long (a 429's Retry-After, or the window it needs)
    quota: tuple[int, float] | None = None  # (requests remaining, seconds until the quota resets)
    forget: list[float] = field(default_factory=list)  # requests the server did not count (it throttled them)

    def __bool__(self) -> bool:
        return bool(self.pause_for or self.quota or self.forget)


@dataclass(frozen=True)
class Grant:
    wait: float  # 0: the request may go now; else ask again after this many seconds
    sent_at: float = 0.0  # its time in the window (the database's clock), when it may go
    frees_in: float | None = None  # with a window: seconds until its oldest request leaves it


def _now(conn: sa.Connection, dialect: str) -> float:
    if dialect == "postgresql":
        return float(conn.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
    return time.time()  # SQLite: one file, one machine


def _row(conn: sa.Connection, provider: str, now: float, dialect: str, rule: RateRule | None) -> dict[str, Any]:
    """The provider's row, locked for this transaction (created full the first time)."""
    query = sa.select(rate_buckets).where(rate_buckets.c.provider == provider)
    if dialect == "postgresql":
        query = query.with_for_update()
    found = conn.execute(query).mappings().first()
    if found is not None:
        return dict(found)
    row: dict[str, Any] = {
        "provider": provider,
        "tokens": float(rule.burst if rule else 1),
        "updated": now,
        "paused_until": 0.0,
        "quota_rate": None,
        "quota_until": 0.0,
        "sent": [],
    }
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    conn.execute(insert(rate_buckets).values(**row).on_conflict_do_nothing(index_elements=["provider"]))
    again = conn.execute(query).mappings().first()  # a replica that inserted it first wins
    return dict(again) if again is not None else row


def _save(conn: sa.Connection, row: dict[str, Any]) -> None:
    values = {k: v for k, v in row.items() if k != "provider"}
    conn.execute(rate_buckets.update().where(rate_buckets.c.provider == row["provider"]).values(**values))


def _effective_rate(row: dict[str, Any], rule: RateRule, now: float) -> float:
    """The rule's rate, lowered while a quota the provider announced is running."""
    if row["quota_rate"] is None or now >= row["quota_until"]:
        return rule.rate
    return min(rule.rate, row["quota_rate"]) if rule.rate > 0 else float(row["quota_rate"])


def _wait_for(row: dict[str, Any], rule: RateRule, rate: float, sent: list[float], now: float) -> float:
    """Seconds until both the sliding window and the token bucket allow one more request."""
    wait = 0.0
    if rule.window is not None and len(sent) >= rule.window[0]:
        wait = sent[-rule.window[0]] + rule.window[1] - now
    if rate > 0 and row["tokens"] < 1 - 1e-9:
        wait = max(wait, (1 - row["tokens"]) / rate)
    return wait


def take_token(conn: sa.Connection, provider: str, rule: RateRule, dialect: str) -> Grant:
    """Within a transaction: the token for one request now, or how long to wait for it."""
    now = _now(conn, dialect)
    row = _row(conn, provider, now, dialect, rule)
    if row["paused_until"] > now:
        return Grant(wait=row["paused_until"] - now)
    rate = _effective_rate(row, rule, now)
    if rate > 0:
        row["tokens"] = min(float(rule.burst), row["tokens"] + (now - row["updated"]) * rate)
    row["updated"] = now
    window = rule.window
    sent = [t for t in row["sent"] if window is None or t > now - window[1]]
    wait = _wait_for(row, rule, rate, sent, now)
    if wait <= 0:
        row["tokens"] = max(0.0, row["tokens"] - 1) if rate > 0 else row["tokens"]
        sent.append(now)
    row["sent"] = sent[-window[0] :] if window is not None else []
    _save(conn, row)
    if wait > 0:
        return Grant(wait=wait)
    frees_in = sent[0] + window[1] - now if window is not None else None
    return Grant(wait=0.0, sent_at=now, frees_in=frees_in)


def note_signals(conn: sa.Connection, provider: str, signals: RateSignals, dialect: str) -> None:
    """Within a transaction: a pause, a quota or throttled requests the provider's answers told of."""
    now = _now(conn, dialect)
    row = _row(conn, provider, now, dialect, None)
    if signals.pause_for > 0:
        row["paused_until"] = max(row["paused_until"], now + signals.pause_for)
        row["tokens"] = 0.0
    if signals.quota is not None:
        remaining, reset_in = signals.quota
        if remaining <= 0:
            row["paused_until"] = max(row["paused_until"], now + max(reset_in, 0.0))
        elif reset_in > 0:
            row["quota_rate"], row["quota_until"] = remaining / reset_in, now + reset_in
    if signals.forget:
        gone = set(signals.forget)
        row["sent"] = [t for t in row["sent"] if t not in gone]
    _save(conn, row)


class SharedBucket:
    """A `connectors.http.Limiter` backed by the provider's `rate_buckets` row (see the module docstring). Its DB
    calls run in a worker thread: the event loop never waits on the database."""

    def __init__(self, store: Any, provider: str, pacing: Pacing) -> None:
        self.store = store  # syncd.state.Store (typed loosely: the store imports this module)
        self.provider = provider
        self.window = pacing.window
        self.rule = RateRule(pacing.rate, pacing.burst, pacing.window)
        self._signals = RateSignals()
        self._frees_in: float | None = None

    def __repr__(self) -> str:
        return f"SharedBucket(provider={self.provider!r}, rule={self.rule})"

    async def acquire(self) -> float:
        while True:
            signals, self._signals = self._signals, RateSignals()
            if signals:
                await asyncio.to_thread(self.store.note_rate_signals, self.provider, signals)
            grant: Grant = await asyncio.to_thread(self.store.take_rate_token, self.provider, self.rule)
            if grant.wait <= 0:
                self._frees_in = grant.frees_in
                return grant.sent_at
            await asyncio.sleep(min(grant.wait, MAX_WAIT_STEP))

    def settle(self, sent_at: float) -> float:
        return sent_at  # the server counted it at its arrival; the shared window keeps when it went

    def forget(self, sent_at: float) -> None:
        self._signals.forget.append(sent_at)

    def window_frees_in(self) -> float | None:
        if self.window is None:
            return None
        return self._frees_in if self._frees_in is not None else self.window[1]

    def pause_for(self, seconds: float) -> None:
        self._signals.pause_for = max(self._signals.pause_for, seconds)

    def observe_quota(self, remaining: int, reset_in: float) -> None:
        self._signals.quota = (remaining, reset_in)
