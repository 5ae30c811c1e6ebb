"""Several `syncd serve` replicas on one PostgreSQL state DB, for real: subprocesses, the sandboxes on a loopback
port, Procrastinate's queue in the database. A pair runs once per period on one replica at a time, a replica
killed with SIGKILL has its pairs taken over, a replica whose job was taken over writes nothing more (fencing),
and all replicas together keep a provider's rate limit. These tests need PostgreSQL (`SYNCD_TEST_POSTGRES_URL`;
CI starts one and requires them)."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from sandboxes._core import Fault, RateLimit
from sandboxes.server import ServerThread, free_port
from syncd.config import load_config
from syncd.errors import StateError
from syncd.metrics import Metrics
from syncd.model import LedgerOutcome, OpKind
from syncd.reconciler import PassOptions, Reconciler
from syncd.state import LedgerEntry, Store
from syncd.state.fence import Fence, FencedOut, current_fence
from tests.e2e import World, emails, provider_entries
from tests.postgres import pg_schema
from tests.test_serve import Daemon


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema of the test PostgreSQL, as a state URL."""
    reason = "replicas share a PostgreSQL state DB: set SYNCD_TEST_POSTGRES_URL=postgresql+psycopg://…"
    with pg_schema("replicas", skip_reason=reason) as url:
        yield url


def sql(url: str, query: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(query), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


class Fleet:
    """Replicas of `syncd serve` on one state DB, against one world of sandboxes."""

    def __init__(self, tmp: Path, url: str, world: World, server_url: str, **server: Any) -> None:
        self.tmp, self.url, self.world, self.server_url = tmp, url, world, server_url
        self.server = server
        self.daemons: list[Daemon] = []

    def config(self, groups: list[dict[str, Any]], port: int, **top: Any) -> Path:
        cfg: dict[str, Any] = {
            "state": {"url": self.url},
            "schedule": {"every": "2s"},
            "server": {"listen": f"127.0.0.1:{port}", "stalled_after": "6s", **self.server},
            "providers": top.pop("providers", None) or provider_entries(self.server_url),
            "groups": groups,
            **top,
        }
        path = self.tmp / f"syncd-{port}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def start(self, n: int, groups: list[dict[str, Any]], **top: Any) -> list[Daemon]:
        Store.open(self.url).close()  # migrate once, before the replicas race for it
        for _ in range(n):
            port = free_port()
            daemon = Daemon(self.config(groups, port, **dict(top)), port, self.tmp / f"log-{port}.txt")
            self.daemons.append(daemon)
        for daemon in self.daemons[-n:]:
            daemon.up()
        return self.daemons[-n:]

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.proc.poll() is None:
                daemon.stop()
            daemon.close()


@pytest.fixture
def fleet(tmp_path: Path, pg_url: str) -> Iterator[Fleet]:
    world = World(tmp_path)
    with ServerThread(world.app) as server:
        f = Fleet(tmp_path, pg_url, world, server.url)
        try:
            yield f
        finally:
            f.close()


def runs_of_pairs(url: str) -> list[tuple[str, str, float, float]]:
    """(group, provider, started, finished) of every finished pair pass, oldest first."""
    rows = sql(
        url,
        "SELECT p.group_name, p.provider, extract(epoch FROM r.started_at), extract(epoch FROM r.finished_at) "
        "FROM pair_results p JOIN runs r ON r.id = p.run_id WHERE r.finished_at IS NOT NULL ORDER BY 3",
    )
    return [(g, p, float(s), float(f)) for g, p, s, f in rows]


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------------------------- sharing


def test_replicas_share_the_pairs_and_run_each_once_per_period_one_at_a_time(fleet: Fleet) -> None:
    people = emails(20)
    fleet.world.people(people)
    groups = [{"name": f"G{i}", "members": people[: i + 3]} for i in range(6)]
    a, b, c = fleet.start(3, groups)
    wait_for(lambda: len(runs_of_pairs(fleet.url)) >= 12 * 3, 30, "three periods of 12 pairs")
    runs = runs_of_pairs(fleet.url)
    by_pair: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for group, provider, started, finished in runs:
        by_pair.setdefault((group, provider), []).append((started, finished))
    assert len(by_pair) == 12
    for spans in by_pair.values():
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end  # never two passes of one pair at once
    # once per period: the queue defers each (pair, tick) once, however many replicas ask
    defers = sql(
        fleet.url,
        "SELECT periodic_id, defer_timestamp, count(*) FROM procrastinate_periodic_defers "
        "GROUP BY 1, 2 HAVING count(*) > 1",
    )
    assert defers == []
    jobs = sql(fleet.url, "SELECT queueing_lock, count(*) FROM procrastinate_jobs WHERE status = 'todo' GROUP BY 1")
    assert all(n == 1 for _, n in jobs)  # never queued twice
    # every replica took a share
    worked = [d.runs_total().get("success", 0) for d in (a, b, c)]
    assert all(n > 0 for n in worked), worked
    for group in groups:
        (c8_id,) = [gid for gid, g in fleet.world.c8.groups.items() if g["name"] == group["name"]]
        assert fleet.world.c8.group_emails(c8_id) == set(group["members"])


def test_a_replica_killed_mid_pass_has_its_pair_taken_over(fleet: Fleet) -> None:
    people = emails(30)
    fleet.world.people(people)
    # The first CleverReach upsert hangs: whoever runs that pair is in the middle of it when killed.
    fleet.world.cr.inject(Fault(status=0, delay=600, path="/receivers/upsert$", times=1))
    groups = [{"name": "Big", "members": people, "targets": ["cr"]}]
    a, b = fleet.start(2, groups)
    # the group is created first, then the upsert goes (and hangs: the sandbox records it when it answers)
    wait_for(lambda: len(fleet.world.cr.groups) == 1, 20, "the group's creation")
    time.sleep(1.0)
    doing = sql(fleet.url, "SELECT id, worker_id FROM procrastinate_jobs WHERE status = 'doing'")
    assert len(doing) == 1
    (job_id, _) = doing[0]
    # the replica working the pair is the one that read its source
    (victim,) = [d for d in (a, b) if '"logger": "syncd.sources"' in d.logs()]
    survivor = b if victim is a else a
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    killed_at = time.monotonic()
    wait_for(
        lambda: sql(fleet.url, "SELECT status FROM procrastinate_jobs WHERE id = :j", j=job_id)[0][0] == "failed",
        30,
        "the takeover",
    )
    wait_for(lambda: fleet.world.cr.active_emails(next(iter(fleet.world.cr.groups))) == set(people), 30, "the sync")
    taken_after = time.monotonic() - killed_at
    assert taken_after < 6 + 15 + 10  # stalled_after, a sweep interval, and a period: not the 300 s of a lease
    assert len(fleet.world.cr.groups) == 1  # one group: the survivor found the one the victim created
    assert "took over the pair Big → cr" in survivor.logs()


# -------------------------------------------------------------------------------------------------- fencing


def _fake_job(url: str, status: str) -> int:
    """A row of the queue, as Procrastinate's worker leaves it while it runs a job."""
    ((job_id,),) = sql(
        url,
        "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, queueing_lock, args, status, scheduled_at) "
        "VALUES ('syncd', 'syncd.sync_pair', 'T', NULL, '{}', CAST(:s AS procrastinate_job_status), now()) "
        "RETURNING id",
        s=status,
    )
    return int(job_id)


def test_a_replica_whose_job_was_taken_over_writes_nothing(tmp_path: Path, pg_url: str) -> None:
    with Store.open(pg_url) as store:
        job = _fake_job(pg_url, "doing")
        fence = Fence(job, None)
        run = store.start_run(dry_run=False, trigger="serve")
        entry = LedgerEntry("T", "cr", "a@example.com", OpKind.ADD, LedgerOutcome.APPLIED, "in source")
        token = current_fence.set(fence)
        try:
            store.record_ledger(run, [entry])  # the job is ours: written
            sql(pg_url, "UPDATE procrastinate_jobs SET status = 'failed' WHERE id = :j", j=job)  # taken over
            with pytest.raises(FencedOut, match="no longer this replica's"):
                store.record_ledger(run, [entry])
            with pytest.raises(FencedOut):
                store.mark_owned("T", "cr", ["a@example.com"])
        finally:
            current_fence.reset(token)
        assert len(store.history(group="T")) == 1
        assert store.owned("T", "cr") == frozenset()


async def test_a_fenced_out_pass_sends_nothing_to_the_provider(tmp_path: Path, pg_url: str) -> None:
    world = World(tmp_path)
    people = emails(5)
    world.people(people)
    path = world.write_config([{"name": "T", "members": people, "targets": ["c8"]}])
    config = load_config(path)
    config = config.model_copy(update={"state": config.state.model_copy(update={"url": pg_url})})
    with Store.open(pg_url) as store:
        job = _fake_job(pg_url, "failed")  # taken over before this replica got to write anything
        reconciler = Reconciler(config, store, Metrics(), transport=httpx.ASGITransport(app=world.app))
        with pytest.raises((FencedOut, StateError)):
            await reconciler.run(PassOptions(fence=Fence(job, None)))
    assert world.c8.mutating_count == 0


# --------------------------------------------------------------------------------------------- one budget


async def test_three_replicas_together_keep_a_providers_rate_limit(tmp_path: Path, pg_url: str) -> None:
    # Communic8 at 10 requests/s, bursts of 1: never more than 11 in any second, whoever sends them. The sandbox
    # throttles above that (429): three replicas pacing on their own would send up to 3 x 10 a second.
    world = World(tmp_path)
    people = emails(30)
    world.people(people)
    world.c8.rate_limit = RateLimit(limit=11, window=1.0, sliding=True)
    providers = provider_entries("http://127.0.0.1", rate_limit=10, burst=1, batch_size=1)[:1]
    groups = [{"name": f"G{i}", "members": people[i * 10 : (i + 1) * 10], "targets": ["c8"]} for i in range(3)]
    path = world.write_config(groups, providers=providers)
    config = load_config(path)
    config = config.model_copy(update={"state": config.state.model_copy(update={"url": pg_url})})
    Store.open(pg_url).close()
    stores = [Store.open(pg_url) for _ in range(3)]
    try:
        replicas = [Reconciler(config, s, Metrics(), transport=httpx.ASGITransport(app=world.app)) for s in stores]
        started = time.monotonic()
        reports = await asyncio.gather(
            *(r.run(PassOptions(groups=frozenset({f"G{i}"}))) for i, r in enumerate(replicas))
        )
        elapsed = time.monotonic() - started
    finally:
        for s in stores:
            s.close()
    assert all(r.ok for r in reports)
    served = [r for r in world.c8.requests if r.path.startswith("/int/v1/")]
    assert not [r for r in served if r.status == 429]  # together they never went over
    times = sorted(r.at for r in served)
    most_in_a_second = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    assert most_in_a_second <= 11
    assert elapsed >= (len(served) - 1) / 10 * 0.9  # they waited for each other: one budget, not three


def test_stalled_after_must_leave_room_for_heartbeats(tmp_path: Path) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump({"server": {"stalled_after": "2s"}, "providers": []}))
    with pytest.raises(Exception, match="at least 5s"):
        load_config(path)
    path.write_text(yaml.safe_dump({"server": {"stalled_after": "90s"}, "providers": []}))
    assert load_config(path).server.stalled_after == timedelta(seconds=90)


async def test_validate_online_checks_the_queue(tmp_path: Path, pg_url: str) -> None:
    import io

    from alembic import command

    from syncd.online import check_online
    from syncd.state.migrate import alembic_config

    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump({"state": {"url": pg_url}, "providers": []}))
    config = load_config(path)
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0002")  # a state DB from before the queue
    finally:
        engine.dispose()
    out = io.StringIO()
    assert await check_online(config, out) == 1
    assert "queue (replicas of syncd serve): the queue's tables are missing" in out.getvalue()
    Store.open(pg_url).close()  # any command upgrades it
    out = io.StringIO()
    assert await check_online(config, out) == 0
    assert "queue (replicas of syncd serve): ok" in out.getvalue()
