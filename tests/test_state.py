"""The state DB on real databases: a SQLite file per test, and PostgreSQL when SYNCD_TEST_POSTGRES_URL is set.

Nothing is mocked: every test opens a `Store` (which runs the Alembic migrations) and checks what comes back.
For PostgreSQL each test gets a fresh schema (through the connection's search_path) that is dropped after it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url

from connectors.base import MemoryRecipientCache, RecipientCache
from syncd.errors import StateError
from syncd.model import (
    KnownReject,
    LedgerOutcome,
    OpKind,
    PairResult,
    PairStatus,
    Reject,
    RemovalPolicy,
    Strategy,
)
from syncd.state import (
    Binding,
    LedgerEntry,
    RunOutcome,
    Store,
    StoredReject,
    head_revision,
    mask_url,
)
from syncd.state.budget import RateRule, RateSignals
from syncd.state.migrate import alembic_config, ours
from syncd.state.store import BULK_ROWS
from syncd.state.tables import ledger, metadata, recipient_ids
from tests.postgres import pg_schema

TABLES = {
    "runs",
    "pair_results",
    "ledger",
    "bindings",
    "owned_members",
    "recipient_ids",
    "rejects",
    "rate_buckets",
    "quarantine",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state.db"
        return
    reason = "set SYNCD_TEST_POSTGRES_URL=postgresql+psycopg://… to run the store tests on PostgreSQL"
    with pg_schema("syncd_test", skip_reason=reason) as url:
        yield url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store.open(db_url)
    try:
        yield opened
    finally:
        opened.close()


def _engine(db_url: str) -> sa.Engine:
    url = make_url(db_url)
    return sa.create_engine(url.set(drivername="postgresql+psycopg") if url.drivername == "postgresql" else url)


def _aware_utc(value: datetime | None) -> bool:
    return value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def _result(group: str = "US Sales", provider: str = "c8", **changes: object) -> PairResult:
    values: dict[str, object] = {
        "group": group,
        "provider": provider,
        "strategy": Strategy.INCREMENTAL,
        "status": PairStatus.APPLIED,
        "desired": 120,
        "actual_before": 118,
        "add": 4,
        "remove": 2,
        "unsupported_remove": 1,
        "rejected": (Reject("bad@", "invalid email"), Reject("x@y.z", "suppressed")),
        "requests": {"read": 3, "write": 2},
        "held_back": 0,
    }
    values.update(changes)
    return PairResult(**values)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- schema


def test_migrations_create_every_table_and_reach_head(store: Store, db_url: str) -> None:
    assert store.schema_revision() == head_revision() == "0005"
    engine = _engine(db_url)
    try:
        names = set(sa.inspect(engine).get_table_names())
        assert names >= TABLES | {"alembic_version"}
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head_revision()
            # tables.py describes exactly the schema the migrations built
            context = MigrationContext.configure(conn, opts={"include_name": ours})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_opening_twice_is_idempotent(db_url: str) -> None:
    first = Store.open(db_url)
    run_id = first.start_run(dry_run=False, trigger="cli")
    second = Store.open(db_url)  # while the first is still open
    try:
        assert second.schema_revision() == head_revision()
        assert [r.id for r in second.runs()] == [run_id]
    finally:
        first.close()
        second.close()
    third = Store.open(db_url)
    try:
        assert [r.id for r in third.runs()] == [run_id]
    finally:
        third.close()


def test_replicas_opening_a_fresh_database_together_migrate_it_once(db_url: str) -> None:
    barrier = threading.Barrier(4)
    opened: list[Store] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            barrier.wait()
            opened.append(Store.open(db_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in opened:
        s.close()
    assert errors == []
    assert len(opened) == 4
    with Store.open(db_url) as again:
        assert again.schema_revision() == head_revision()


def test_downgrade_to_base_and_upgrade_again(store: Store, db_url: str) -> None:
    engine = _engine(db_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert not TABLES & set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    reopened = Store.open(db_url)
    try:
        assert reopened.schema_revision() == head_revision()
        assert reopened.runs() == []
    finally:
        reopened.close()


def test_a_schema_from_a_newer_syncd_is_refused(store: Store, db_url: str) -> None:
    engine = _engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    with pytest.raises(StateError, match=r"9999.*newer syncd"):
        Store.open(db_url)


def test_sqlite_uses_wal_and_a_busy_timeout(tmp_path: object) -> None:
    with Store.open(f"sqlite:///{tmp_path}/state.db") as opened, opened._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_in_memory_sqlite_works_across_threads() -> None:
    with Store.open("sqlite://") as opened:
        run_id = opened.start_run(dry_run=True, trigger="cli")
        seen: list[str] = []
        worker = threading.Thread(target=lambda: seen.extend(r.id for r in opened.runs()))
        worker.start()
        worker.join()
        assert seen == [run_id]


# ------------------------------------------------------------------------------------------------- runs


def test_runs_round_trip(store: Store) -> None:
    first = store.start_run(dry_run=True, trigger="cli", selection={"groups": ["US Sales"], "providers": []})
    second = store.start_run(dry_run=False, trigger="serve")
    row = store.run(first)
    assert row is not None
    assert (row.dry_run, row.trigger, row.outcome, row.finished_at) == (True, "cli", RunOutcome.RUNNING, None)
    assert row.selection == {"groups": ["US Sales"], "providers": []}
    assert _aware_utc(row.started_at)

    store.finish_run(first, outcome="failure", errors=["source hubspot: timed out", "another"])
    store.finish_run(second, outcome=RunOutcome.SUCCESS)
    done = store.run(first)
    assert done is not None
    assert done.outcome is RunOutcome.FAILURE
    assert done.errors == ("source hubspot: timed out", "another")
    assert _aware_utc(done.finished_at) and done.finished_at >= done.started_at  # type: ignore[operator]

    assert [r.id for r in store.runs()] == [second, first]  # newest first
    assert [r.id for r in store.runs(limit=1)] == [second]
    assert store.run("nope") is None


def test_finish_run_rejects_unknown_runs_and_outcomes(store: Store) -> None:
    with pytest.raises(StateError, match="no run"):
        store.finish_run("0" * 32, outcome="success")
    run_id = store.start_run(dry_run=False, trigger="cli")
    with pytest.raises(ValueError):
        store.finish_run(run_id, outcome="great")


def test_pair_results_round_trip_and_replace(store: Store) -> None:
    run_id = store.start_run(dry_run=False, trigger="cli")
    store.record_pair(run_id, _result(), remote_group_id="g-17")
    store.record_pair(
        run_id,
        _result("Newsletter", "cr", status=PairStatus.BLOCKED, guard="would remove 600 members", held_back=600),
        remote_group_id=None,
    )
    pairs = store.pairs(run_id)
    assert [(p.group, p.provider) for p in pairs] == [("US Sales", "c8"), ("Newsletter", "cr")]
    p = pairs[0]
    assert (p.strategy, p.status, p.remote_group_id) == (Strategy.INCREMENTAL, PairStatus.APPLIED, "g-17")
    assert (p.desired, p.actual_before, p.added, p.removed) == (120, 118, 4, 2)
    assert (p.unsupported_remove, p.held_back, p.rejected) == (1, 0, 2)
    assert (p.read_requests, p.write_requests, p.error, p.blocked_reason) == (3, 2, None, None)
    assert _aware_utc(p.recorded_at)
    blocked = pairs[1]
    assert (blocked.status, blocked.blocked_reason, blocked.held_back) == (
        PairStatus.BLOCKED,
        "would remove 600 members",
        600,
    )

    # one row per pair per run: recording it again replaces it
    store.record_pair(run_id, _result(status=PairStatus.FAILED, error="auth failed"), remote_group_id="g-17")
    again = [p for p in store.pairs(run_id) if p.group == "US Sales"]
    assert len(again) == 1 and again[0].status is PairStatus.FAILED and again[0].error == "auth failed"


def test_last_success_counts_real_reconciled_passes_only(store: Store) -> None:
    assert store.last_success("US Sales", "c8") is None
    dry = store.start_run(dry_run=True, trigger="cli")
    store.record_pair(dry, _result(status=PairStatus.IN_SYNC), remote_group_id="1")
    failed = store.start_run(dry_run=False, trigger="serve")
    store.record_pair(failed, _result(status=PairStatus.FAILED), remote_group_id="1")
    assert store.last_success("US Sales", "c8") is None

    real = store.start_run(dry_run=False, trigger="serve")
    store.record_pair(real, _result(status=PairStatus.APPLIED), remote_group_id="1")
    first = store.last_success("US Sales", "c8")
    assert _aware_utc(first)
    later = store.start_run(dry_run=False, trigger="serve")
    store.record_pair(later, _result(status=PairStatus.IN_SYNC), remote_group_id="1")
    store.record_pair(later, _result(status=PairStatus.BLOCKED), remote_group_id="1")  # replaces: not a success
    assert store.last_success("US Sales", "c8") == first
    assert store.last_success("US Sales", "other") is None


# ----------------------------------------------------------------------------------------------- ledger


def _entry(email: str, *, group: str = "US Sales", provider: str = "c8", **changes: object) -> LedgerEntry:
    values: dict[str, object] = {
        "group": group,
        "provider": provider,
        "email": email,
        "op": OpKind.REMOVE,
        "outcome": LedgerOutcome.APPLIED,
        "reason": "not in source (mirror policy)",
    }
    values.update(changes)
    return LedgerEntry(**values)  # type: ignore[arg-type]


def test_history_filters_and_orders_newest_first(store: Store) -> None:
    run1 = store.start_run(dry_run=False, trigger="cli")
    store.record_ledger(
        run1,
        [
            _entry("Alice@Example.com", op=OpKind.ADD, reason="in source"),
            _entry("bob@example.com", provider="cr"),
            _entry("carol@example.com", group="Newsletter"),
        ],
    )
    run2 = store.start_run(dry_run=True, trigger="cli")
    store.record_ledger(
        run2,
        [
            _entry(
                "ALICE@example.com",
                outcome=LedgerOutcome.BLOCKED,
                reason="held back: would remove 600 members, more than max_removals=500",
            ),
            _entry("dave@example.com", outcome=LedgerOutcome.WOULD),
        ],
    )
    store.record_ledger(run2, [])  # nothing to do

    everything = store.history()
    assert [r.email for r in everything] == [
        "dave@example.com",
        "ALICE@example.com",
        "carol@example.com",
        "bob@example.com",
        "Alice@Example.com",
    ]
    assert all(_aware_utc(r.at) for r in everything)
    assert [r.at for r in everything] == sorted((r.at for r in everything), reverse=True)

    alice = store.history(member="  alice@EXAMPLE.com ")
    assert [(r.email, r.op, r.outcome, r.run_id) for r in alice] == [
        ("ALICE@example.com", OpKind.REMOVE, LedgerOutcome.BLOCKED, run2),
        ("Alice@Example.com", OpKind.ADD, LedgerOutcome.APPLIED, run1),
    ]
    assert alice[0].reason == "held back: would remove 600 members, more than max_removals=500"
    assert alice[0].group == "US Sales" and alice[0].provider == "c8"

    assert {r.email for r in store.history(group="Newsletter")} == {"carol@example.com"}
    assert {r.email for r in store.history(provider="cr")} == {"bob@example.com"}
    assert [r.email for r in store.history(group="US Sales", provider="c8", limit=2)] == [
        "dave@example.com",
        "ALICE@example.com",
    ]
    assert store.history(group="US Sales", provider="cr", member="carol@example.com") == []
    assert {r.run_id for r in store.history(run_id=run1)} == {run1}


def test_ledger_takes_add_and_remove_only(store: Store) -> None:
    run_id = store.start_run(dry_run=False, trigger="cli")
    with pytest.raises(ValueError):
        store.record_ledger(run_id, [_entry("a@b.c", op=OpKind.RESET)])
    assert store.history() == []


def test_ledger_rows_need_a_recorded_run(store: Store) -> None:
    with pytest.raises(StateError):
        store.record_ledger("f" * 32, [_entry("a@b.c")])


def test_50000_ledger_rows_in_one_bulk_insert(store: Store) -> None:
    run_id = store.start_run(dry_run=False, trigger="cli")
    entries = [
        _entry(f"Member{i}@Example.com", group=f"G{i % 7}", op=OpKind.ADD if i % 2 else OpKind.REMOVE)
        for i in range(50_000)
    ]
    store.record_ledger(run_id, entries)
    rows = store.history(run_id=run_id)
    assert len(rows) == 50_000
    assert {r.email for r in rows} == {e.email for e in entries}
    hit = store.history(member="member49999@example.com")
    assert [(r.email, r.group, r.op) for r in hit] == [("Member49999@Example.com", "G5", OpKind.ADD)]


def _age_run(db_url: str, run_id: str, days: float) -> None:
    """Move a run's ledger entries `days` into the past (record_ledger stamps them with the time of the call)."""
    engine = _engine(db_url)
    try:
        with engine.begin() as conn:
            at = datetime.now(UTC) - timedelta(days=days)
            conn.execute(ledger.update().where(ledger.c.run_id == run_id).values(at=at))
    finally:
        engine.dispose()


def test_stream_history_leaves_out_every_entry_of_a_dry_run_by_its_run_not_its_outcome(store: Store) -> None:
    real = store.start_run(dry_run=False, trigger="cli")
    store.record_ledger(real, [_entry("a@example.com", op=OpKind.ADD, reason="in source")])
    dry = store.start_run(dry_run=True, trigger="cli")
    store.record_ledger(
        dry,
        [
            _entry("b@example.com", op=OpKind.ADD, outcome=LedgerOutcome.WOULD, reason="in source"),
            _entry("c@example.com", op=OpKind.ADD, outcome=LedgerOutcome.REJECTED, reason="unsubscribed"),
            _entry("d@example.com", outcome=LedgerOutcome.UNSUPPORTED, reason="the API cannot remove members"),
            _entry("e@example.com", outcome=LedgerOutcome.BLOCKED, reason="held back"),
        ],
    )

    real_only = list(store.stream_history(include_dry_runs=False))
    assert [(r.email, r.outcome, r.dry_run) for r in real_only] == [("a@example.com", LedgerOutcome.APPLIED, False)]
    everything = list(store.stream_history(include_dry_runs=True))
    assert [(r.email, r.dry_run) for r in everything] == [
        ("e@example.com", True),
        ("d@example.com", True),
        ("c@example.com", True),
        ("b@example.com", True),
        ("a@example.com", False),
    ]
    assert store.history() == everything  # history(): the same rows, dry runs' included, as a list


def test_stream_history_since_and_limit(store: Store, db_url: str) -> None:
    old = store.start_run(dry_run=False, trigger="cli")
    store.record_ledger(old, [_entry(f"old{i}@example.com") for i in range(3)])
    _age_run(db_url, old, days=10)
    new = store.start_run(dry_run=False, trigger="serve")
    store.record_ledger(new, [_entry(f"new{i}@example.com") for i in range(3)])

    week_ago = datetime.now(UTC) - timedelta(days=7)
    assert {r.run_id for r in store.stream_history(since=week_ago)} == {new}
    assert len(list(store.stream_history(since=week_ago - timedelta(days=7)))) == 6
    # since is a point in time, whatever its zone
    in_tokyo = (week_ago - timedelta(days=7)).astimezone(timezone(timedelta(hours=9)))
    assert len(list(store.stream_history(since=in_tokyo))) == 6
    assert [r.email for r in store.stream_history(limit=4)] == [
        "new2@example.com",
        "new1@example.com",
        "new0@example.com",
        "old2@example.com",
    ]
    assert [r.email for r in store.stream_history(since=week_ago, member="NEW1@example.com ", limit=10)] == [
        "new1@example.com"
    ]


def test_stream_history_reads_as_it_is_consumed_and_can_stop_early(store: Store) -> None:
    run_id = store.start_run(dry_run=False, trigger="cli")
    store.record_ledger(run_id, [_entry(f"m{i:05d}@example.com") for i in range(5_000)])  # > several batches
    rows = store.stream_history()
    assert isinstance(rows, Generator)
    with closing(rows):
        first = [next(rows) for _ in range(3)]
    assert [r.email for r in first] == ["m04999@example.com", "m04998@example.com", "m04997@example.com"]
    # the read transaction is over: the store writes and reads on
    store.record_ledger(run_id, [_entry("late@example.com")])
    assert next(store.stream_history()).email == "late@example.com"
    assert sum(1 for _ in store.stream_history()) == 5_001


def test_open_read_only_creates_nothing(db_url: str, tmp_path: Path) -> None:
    # no SQLite file / an empty PostgreSQL schema: there is no state DB, and opening it read-only makes none
    assert Store.open_read_only(db_url) is None
    if db_url.startswith("sqlite"):
        assert list(tmp_path.iterdir()) == []
    else:
        engine = _engine(db_url)
        try:
            with engine.connect() as conn:
                assert sa.inspect(conn).get_table_names() == []
        finally:
            engine.dispose()


def test_open_read_only_reads_and_refuses_to_write(db_url: str, tmp_path: Path) -> None:
    writer = Store.open(db_url)
    try:
        run_id = writer.start_run(dry_run=False, trigger="cli")
        writer.record_ledger(run_id, [_entry("a@example.com")])
        writer.save_binding(Binding("US Sales", "c8", "g-1", "US Sales", True))
    finally:
        writer.close()
    before = (tmp_path / "state.db").read_bytes() if db_url.startswith("sqlite") else b""

    reader = Store.open_read_only(db_url)
    assert reader is not None
    try:
        assert [r.email for r in reader.stream_history()] == ["a@example.com"]
        binding = reader.binding("us sales", "c8")
        assert binding is not None and binding.remote_id == "g-1"
        with pytest.raises(StateError, match=r"read-?only"):
            reader.start_run(dry_run=False, trigger="cli")
        with pytest.raises(StateError, match=r"read-?only"):
            reader.save_binding(Binding("Other", "c8", "g-2", "Other", False))
    finally:
        reader.close()
    if db_url.startswith("sqlite"):
        assert (tmp_path / "state.db").read_bytes() == before


def test_open_read_only_does_not_upgrade_an_old_schema(db_url: str) -> None:
    engine = _engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
    finally:
        engine.dispose()
    reader = Store.open_read_only(db_url)
    assert reader is not None
    try:
        assert reader.schema_revision() == "0001"
        assert list(reader.stream_history()) == []
    finally:
        reader.close()


# ----------------------------------------------------------------------------------- bindings and owned


def test_bindings_round_trip(store: Store) -> None:
    assert store.binding("US Sales", "c8") is None
    store.save_binding(Binding("US Sales", "c8", "g-17", "US Sales Team", created_by_syncd=True))
    got = store.binding("US Sales", "c8")
    assert got is not None
    assert (got.remote_id, got.remote_name, got.created_by_syncd) == ("g-17", "US Sales Team", True)
    assert got.default_policy is RemovalPolicy.MIRROR
    assert _aware_utc(got.bound_at) and _aware_utc(got.updated_at)

    # renamed on the provider side: same remote group, bound_at kept
    store.mark_owned("US Sales", "c8", ["a@x.com"])
    store.save_binding(Binding("US Sales", "c8", "g-17", "US Sales (renamed)", created_by_syncd=True))
    renamed = store.binding("US Sales", "c8")
    assert renamed is not None and renamed.remote_name == "US Sales (renamed)"
    assert renamed.bound_at == got.bound_at and renamed.updated_at >= got.updated_at  # type: ignore[operator]
    assert store.owned("US Sales", "c8") == {"a@x.com"}

    # bound to another remote group: a new binding, and the old group's owned members are forgotten
    store.save_binding(Binding("US Sales", "c8", "g-99", "Adopted", created_by_syncd=False))
    moved = store.binding("US Sales", "c8")
    assert moved is not None and moved.remote_id == "g-99" and moved.default_policy is RemovalPolicy.OWNED
    assert moved.bound_at > got.bound_at  # type: ignore[operator]
    assert store.owned("US Sales", "c8") == frozenset()

    store.save_binding(Binding("US Sales", "cr", "7", "US Sales", created_by_syncd=False))
    store.mark_owned("US Sales", "c8", ["b@x.com"])
    store.forget_binding("US Sales", "c8")
    assert store.binding("US Sales", "c8") is None
    assert store.owned("US Sales", "c8") == frozenset()
    assert store.binding("US Sales", "cr") is not None


def test_a_binding_is_found_whatever_the_case_of_the_group_name_and_can_be_renamed(store: Store) -> None:
    store.save_binding(Binding("Équipe Zürich", "c8", "g-1", "Équipe Zürich", created_by_syncd=True))
    store.save_binding(Binding("Team", "c8", "g-2", "Team", created_by_syncd=False))
    store.save_binding(Binding("TEAM", "c8", "g-3", "TEAM", created_by_syncd=False))
    store.mark_owned("Équipe Zürich", "c8", ["a@x.com"])
    found = store.binding("ÉQUIPE ZÜRICH", "c8")  # beyond ASCII too
    assert found is not None and (found.group, found.remote_id) == ("Équipe Zürich", "g-1")
    exact = store.binding("TEAM", "c8")
    assert exact is not None and exact.remote_id == "g-3"  # an exact spelling wins
    assert store.binding("équipe zürich", "cr") is None

    store.rename_group("Équipe Zürich", "ÉQUIPE ZÜRICH", "c8")
    moved = store.binding("ÉQUIPE ZÜRICH", "c8")
    assert moved is not None and (moved.group, moved.remote_id, moved.created_by_syncd) == (
        "ÉQUIPE ZÜRICH",
        "g-1",
        True,
    )
    assert store.owned("ÉQUIPE ZÜRICH", "c8") == {"a@x.com"} and store.owned("Équipe Zürich", "c8") == frozenset()
    store.rename_group("Team", "TEAM", "c8")  # TEAM has its own binding: nothing moves
    kept = store.binding("Team", "c8")
    assert kept is not None and kept.remote_id == "g-2"


def test_a_locked_sqlite_database_says_what_to_do(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    Store.open(url).close()
    holder = sqlite3.connect(f"{tmp_path}/state.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for longer than syncd waits
    # The store's own code on an engine that waits 50 ms instead of 30 s for the lock
    engine = sa.create_engine(url, connect_args={"timeout": 0.05})
    store = Store(engine, make_url(url))
    try:
        with pytest.raises(StateError, match="database is locked") as raised:
            store.start_run(dry_run=False, trigger="cli")
        assert "another syncd" in str(raised.value) and "PostgreSQL" in str(raised.value)
    finally:
        store.close()
        holder.rollback()
        holder.close()


def test_owned_members(store: Store) -> None:
    assert store.owned("G", "c8") == frozenset()
    keys = [f"m{i}@x.com" for i in range(1_200)]  # more than one IN chunk
    store.mark_owned("G", "c8", keys)
    store.mark_owned("G", "c8", keys[:10] + keys[:10])  # idempotent, duplicates fine
    store.mark_owned("G", "cr", ["other@x.com"])
    assert store.owned("G", "c8") == frozenset(keys)
    store.unmark_owned("G", "c8", [*keys[:1_100], "never@x.com"])
    assert store.owned("G", "c8") == frozenset(keys[1_100:])
    assert store.owned("G", "cr") == {"other@x.com"}
    store.unmark_owned("G", "c8", [])
    store.mark_owned("G", "c8", [])


# ---------------------------------------------------------------------------------------------- rejects


def test_rejects_upsert_keeps_first_seen(store: Store) -> None:
    assert store.known_rejects("c8", "G") == {}
    store.save_rejects(
        "c8",
        "G",
        [
            StoredReject("Bad@Example.com", "fp1", "suppressed"),
            StoredReject("gone@example.com", "fp2", "unknown", "unknown_recipient"),
        ],
    )
    store.save_rejects("cr", "G", [StoredReject("bad@example.com", "fp9", "bounced", "bounced")])
    assert store.known_rejects("c8", "G") == {
        "bad@example.com": KnownReject("fp1", "suppressed"),
        "gone@example.com": KnownReject("fp2", "unknown", "unknown_recipient"),
    }
    (first,) = [r for r in store.reject_rows("c8") if r.email == "Bad@Example.com"]
    assert first.first_seen == first.last_seen and _aware_utc(first.first_seen)
    assert (first.group, first.code) == ("G", "provider_rejected")

    time.sleep(0.01)
    store.save_rejects("c8", "G", [StoredReject("BAD@example.com", "fp3", "suppressed (again)", "blacklisted")])
    (again,) = [r for r in store.reject_rows("c8") if r.email == "BAD@example.com"]
    assert again.first_seen == first.first_seen
    assert again.last_seen > first.last_seen
    assert (again.fingerprint, again.reason, again.code) == ("fp3", "suppressed (again)", "blacklisted")
    assert len(store.reject_rows()) == 3

    store.clear_rejects("c8", ["bad@example.com", "nobody@example.com"], group="G")
    assert set(store.known_rejects("c8", "G")) == {"gone@example.com"}
    assert set(store.known_rejects("cr", "G")) == {"bad@example.com"}


def test_rejects_are_remembered_per_group(store: Store) -> None:
    # Consent is per group at some providers: unsubscribing from one list is no reason to skip another.
    store.save_rejects("cr", "News", [StoredReject("a@x.com", "fp", "unsubscribed: deactivated", "unsubscribed")])
    assert set(store.known_rejects("cr", "News")) == {"a@x.com"}
    assert store.known_rejects("cr", "Offers") == {}
    assert [r.group for r in store.reject_rows(group="News")] == ["News"]
    assert store.reject_rows(group="Offers") == []
    store.clear_rejects("cr", ["a@x.com"])  # every group
    assert store.known_rejects("cr", "News") == {}


def test_rejects_from_before_0002_still_apply_to_every_group(db_url: str) -> None:
    # A row remembered per provider (schema 0001) keeps meaning "every group of that provider" after the upgrade.
    engine = _engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
            conn.execute(
                sa.text(
                    "INSERT INTO rejects (provider, email_key, email, fingerprint, reason, first_seen, last_seen) "
                    "VALUES ('c8', 'old@x.com', 'Old@x.com', 'fp', 'not a recipient', :t, :t)"
                ),
                {"t": "2026-01-01 00:00:00"},
            )
    finally:
        engine.dispose()
    with Store.open(db_url) as store:
        assert store.known_rejects("c8", "Any Group") == {"old@x.com": KnownReject("fp", "not a recipient")}
        (row,) = store.reject_rows("c8")
        assert (row.group, row.code) == ("", "provider_rejected")
        # the group's own row wins over the provider-wide one
        store.save_rejects("c8", "G", [StoredReject("old@x.com", "fp2", "unsubscribed", "unsubscribed")])
        assert store.known_rejects("c8", "G")["old@x.com"].code == "unsubscribed"
        assert store.known_rejects("c8", "H")["old@x.com"].code == "provider_rejected"


def test_removals_by_syncd_are_the_last_applied_entry(store: Store) -> None:
    run = store.start_run(dry_run=False, trigger="cli")
    dry = store.start_run(dry_run=True, trigger="cli")

    def entry(email: str, op: OpKind, outcome: LedgerOutcome = LedgerOutcome.APPLIED) -> LedgerEntry:
        return LedgerEntry("G", "cr", email, op, outcome, "test")

    store.record_ledger(run, [entry("a@x.com", OpKind.ADD), entry("b@x.com", OpKind.ADD)])
    time.sleep(0.01)
    store.record_ledger(run, [entry("A@x.com", OpKind.REMOVE), entry("b@x.com", OpKind.REMOVE)])
    time.sleep(0.01)
    store.record_ledger(run, [entry("b@x.com", OpKind.ADD)])  # b came back: the removal is undone already
    store.record_ledger(dry, [entry("c@x.com", OpKind.REMOVE, LedgerOutcome.WOULD)])  # a dry run removes nobody
    store.record_ledger(run, [entry("d@x.com", OpKind.REMOVE, LedgerOutcome.FAILED)])
    found = store.removals_by_syncd("G", "cr", ["a@x.com", "b@x.com", "c@x.com", "d@x.com", "e@x.com"])
    assert set(found) == {"a@x.com"}
    assert _aware_utc(found["a@x.com"])
    assert store.removals_by_syncd("Other", "cr", ["a@x.com"]) == {}


# ------------------------------------------------------------------------------------- recipient cache


def test_recipient_cache_behaves_like_the_memory_cache(store: Store) -> None:
    cache: RecipientCache = store.recipient_cache("c8")
    reference: RecipientCache = MemoryRecipientCache()
    for method in ("get_many", "all", "put_many", "forget"):
        assert callable(getattr(cache, method))

    def both(name: str, *args: object) -> object:
        ours, theirs = getattr(cache, name)(*args), getattr(reference, name)(*args)
        assert ours == theirs, name
        return ours

    both("get_many", ["a@x.com"])
    both("put_many", {"a@x.com": "1", "b@x.com": "2", "c@x.com": "3"})
    both("put_many", {"b@x.com": "22"})  # upsert
    assert both("get_many", ["a@x.com", "b@x.com", "zz@x.com", "a@x.com"]) == {
        "a@x.com": "1",
        "b@x.com": "22",
    }
    both("forget", ["a@x.com", "nobody@x.com"])
    assert both("all") == {"b@x.com": "22", "c@x.com": "3"}
    both("put_many", {})
    both("forget", [])
    assert store.recipient_cache("cr").all() == {}  # per provider


def test_50000_recipient_ids_in_bulk(store: Store) -> None:
    cache = store.recipient_cache("gt")
    ids = {f"member{i}@example.com": f"rcp-{i}" for i in range(50_000)}
    cache.put_many(ids)
    assert cache.all() == ids
    got = cache.get_many(list(ids))  # chunked IN lists
    assert got == ids
    cache.put_many({k: v + "-new" for k, v in list(ids.items())[:25_000]})
    assert cache.get_many(["member0@example.com", "member49999@example.com"]) == {
        "member0@example.com": "rcp-0-new",
        "member49999@example.com": "rcp-49999",
    }
    cache.forget(list(ids)[:40_000])
    assert len(cache.all()) == 10_000


# --------------------------------------------------------------------- large groups: look-ups and bulk writes


def _updated_at(db_url: str, provider: str) -> dict[str, datetime]:
    engine = _engine(db_url)
    try:
        with engine.connect() as conn:
            query = sa.select(recipient_ids.c.email_key, recipient_ids.c.updated_at).where(
                recipient_ids.c.provider == provider
            )
            return {key: at for key, at in conn.execute(query)}
    finally:
        engine.dispose()


def test_recipient_cache_looks_up_by_id(store: Store) -> None:
    cache: RecipientCache = store.recipient_cache("c8")
    reference: RecipientCache = MemoryRecipientCache()
    ids = {f"m{i}@x.com": f"r{i}" for i in range(1_200)}
    for c in (cache, reference):
        c.put_many(ids)
    store.recipient_cache("cr").put_many({"m1@x.com": "cr-1", "m2@x.com": "r2"})

    few = ["r5", "r7", "nope", "cr-1"]  # a few ids: asked for in the query itself
    assert cache.keys_by_id(few) == reference.keys_by_id(few) == {"r5": "m5@x.com", "r7": "m7@x.com"}
    many = [f"r{i}" for i in range(0, 1_200, 2)] + ["nope"]  # many: the provider's rows are read, streamed
    assert cache.keys_by_id(many) == reference.keys_by_id(many) == {f"r{i}": f"m{i}@x.com" for i in range(0, 1_200, 2)}
    every = list(ids.values())
    assert cache.keys_by_id(every) == {rid: key for key, rid in ids.items()}
    assert store.recipient_cache("cr").keys_by_id(["cr-1", "r2", "r3"]) == {"cr-1": "m1@x.com", "r2": "m2@x.com"}
    assert cache.keys_by_id([]) == {} == cache.keys_by_id(set())
    # the answer is keyed by the caller's own strings (a million ids are not held twice)
    for asked in (["".join(["r", "9"])], ["".join(["r", "9"]), *every]):
        found = cache.keys_by_id(asked)
        assert next(k for k in found if k == "r9") is asked[0]


def test_replace_all_writes_only_what_changed(store: Store, db_url: str) -> None:
    cache: RecipientCache = store.recipient_cache("c8")
    cache.put_many({"a@x.com": "1", "b@x.com": "2", "c@x.com": "3"})
    store.recipient_cache("cr").put_many({"a@x.com": "cr"})
    before = _updated_at(db_url, "c8")
    time.sleep(0.01)
    cache.replace_all({"a@x.com": "1", "b@x.com": "22", "d@x.com": "4"})  # c is gone, b changed, d is new
    assert cache.all() == {"a@x.com": "1", "b@x.com": "22", "d@x.com": "4"}
    after = _updated_at(db_url, "c8")
    assert after["a@x.com"] == before["a@x.com"]  # unchanged: not written
    assert after["b@x.com"] > before["b@x.com"]
    assert store.recipient_cache("cr").all() == {"a@x.com": "cr"}  # per provider
    reference = MemoryRecipientCache()
    reference.put_many({"z@x.com": "0"})
    reference.replace_all({"a@x.com": "1"})
    assert reference.all() == {"a@x.com": "1"}

    big = {f"m{i}@x.com": f"r{i}" for i in range(BULK_ROWS + 10)}  # more than one statement (COPY on PostgreSQL)
    cache.replace_all(big)
    assert cache.all() == big
    stamped = _updated_at(db_url, "c8")
    time.sleep(0.01)
    cache.replace_all({**big, "m0@x.com": "new"})
    changed = {k for k, at in _updated_at(db_url, "c8").items() if at != stamped[k]}
    assert changed == {"m0@x.com"}
    cache.replace_all({})
    assert cache.all() == {}


def test_owned_members_rejects_and_ids_in_bulk_above_one_statement(store: Store) -> None:
    # More rows than one statement takes: executemany on SQLite, COPY into a staging table on PostgreSQL.
    keys = [f"m{i}@x.com" for i in range(BULK_ROWS + 5)]
    store.mark_owned("G", "c8", keys)
    store.mark_owned("G", "c8", keys[:3] + ["new@x.com"])  # already owned: kept as they are
    assert store.owned("G", "c8") == frozenset([*keys, "new@x.com"])
    store.unmark_owned("G", "c8", keys[: BULK_ROWS + 1])
    assert store.owned("G", "c8") == frozenset([*keys[BULK_ROWS + 1 :], "new@x.com"])

    store.save_rejects("c8", "G", [StoredReject(k.upper(), "fp", "no recipient", "unknown_recipient") for k in keys])
    store.save_rejects("c8", "G", [StoredReject("M0@X.COM", "fp2", "unsubscribed", "unsubscribed")])
    known = store.known_rejects("c8", "G")
    assert len(known) == len(keys)
    assert known["m1@x.com"] == KnownReject("fp", "no recipient", "unknown_recipient")
    assert known["m0@x.com"] == KnownReject("fp2", "unsubscribed", "unsubscribed")

    cache = store.recipient_cache("gt")
    ids = {k: str(i) for i, k in enumerate(keys)}
    cache.put_many(ids)
    cache.put_many({k: v + "-2" for k, v in ids.items()})  # an upsert of every row
    assert cache.get_many(keys) == {k: v + "-2" for k, v in ids.items()}


def test_ledger_entries_may_name_op_and_outcome_by_value(store: Store) -> None:
    run = store.start_run(dry_run=False, trigger="cli")
    entry = LedgerEntry("G", "c8", "A@x.com", "add", "applied", "in source")  # type: ignore[arg-type]
    store.record_ledger(run, [entry, LedgerEntry("G", "c8", "b@x.com", OpKind.REMOVE, LedgerOutcome.WOULD, "x")])
    rows = store.history(run_id=run)
    assert {(r.email, r.op, r.outcome) for r in rows} == {
        ("A@x.com", OpKind.ADD, LedgerOutcome.APPLIED),
        ("b@x.com", OpKind.REMOVE, LedgerOutcome.WOULD),
    }


# ------------------------------------------------------------------------------------- shared rate budget


def test_the_shared_budget_hands_out_a_burst_then_paces(store: Store) -> None:
    rule = RateRule(rate=2.0, burst=3, window=None)
    grants = [store.take_rate_token("sp", rule) for _ in range(4)]
    assert [g.wait == 0 for g in grants] == [True, True, True, False]  # the burst, then a wait
    assert 0.3 < grants[3].wait <= 0.5  # one token at 2/s
    assert store.take_rate_token("other", rule).wait == 0  # a budget per provider


def test_the_shared_budget_keeps_a_sliding_window(store: Store) -> None:
    rule = RateRule(rate=0, burst=1, window=(3, 60.0))
    assert [store.take_rate_token("bc", rule).wait for _ in range(3)] == [0, 0, 0]
    refused = store.take_rate_token("bc", rule)
    assert 59 < refused.wait <= 60  # until the oldest of the three leaves the window
    first = store.take_rate_token  # a throttled request the server did not count is given back
    store.note_rate_signals("bc", RateSignals(forget=[]))
    assert first("bc", rule).wait > 59


def test_a_pause_or_a_spent_quota_stops_every_replica(db_url: str) -> None:
    rule = RateRule(rate=100.0, burst=10, window=None)
    with Store.open(db_url) as a, Store.open(db_url) as b:
        assert a.take_rate_token("sp", rule).wait == 0
        a.note_rate_signals("sp", RateSignals(pause_for=30))  # a 429 that replica a heard
        assert 29 < b.take_rate_token("sp", rule).wait <= 30  # replica b waits too
        a.note_rate_signals("gt", RateSignals(quota=(0, 12.0)))  # X-RateLimit-Remaining: 0, reset in 12 s
        assert 11 < b.take_rate_token("gt", rule).wait <= 12
        a.note_rate_signals("cr", RateSignals(quota=(5, 10.0)))  # 5 left for 10 s: 0.5/s for everyone
        waits = [b.take_rate_token("cr", RateRule(rate=100.0, burst=1, window=None)).wait for _ in range(2)]
        assert waits[0] == 0 and 1.5 < waits[1] <= 2.0


def test_racing_replicas_never_share_a_token(db_url: str) -> None:
    stores = [Store.open(db_url) for _ in range(4)]
    rule = RateRule(rate=0, burst=1, window=(25, 60.0))
    barrier = threading.Barrier(len(stores))
    granted: list[float] = []
    errors: list[BaseException] = []

    def contend(replica: Store) -> None:
        try:
            barrier.wait()
            for _ in range(10):
                grant = replica.take_rate_token("bc", rule)
                if grant.wait == 0:
                    granted.append(grant.sent_at)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == []
    assert len(granted) == 25  # 40 asked, the window's 25 given, each once


# ------------------------------------------------------------------------------------ errors and secrets


def _chain(exc: BaseException) -> str:
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(f"{seen!s} {seen!r}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def test_unreachable_postgres_raises_state_error_with_the_password_masked() -> None:
    url = "postgresql+psycopg://syncd:s3cr3t-Pa55@127.0.0.1:1/syncd?connect_timeout=2"
    with pytest.raises(StateError) as caught:
        Store.open(url)
    message = str(caught.value)
    assert "s3cr3t-Pa55" not in _chain(caught.value)
    assert "syncd:***@127.0.0.1:1/syncd" in message
    assert "cannot open" in message


def test_ping_raises_state_error_when_unreachable() -> None:
    url = make_url("postgresql+psycopg://syncd:s3cr3t-Pa55@127.0.0.1:1/syncd?connect_timeout=2")
    unreachable = Store(sa.create_engine(url), url)
    assert "s3cr3t-Pa55" not in repr(unreachable) and "***" in repr(unreachable)
    with pytest.raises(StateError, match="not reachable") as caught:
        unreachable.ping()
    assert "s3cr3t-Pa55" not in _chain(caught.value)
    unreachable.close()


def test_ping(store: Store) -> None:
    store.ping()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u:s3cr3t-Pa55@host:notaport/db",
        "nonsense://u:s3cr3t-Pa55@host/db",
        "::s3cr3t-Pa55",
    ],
)
def test_bad_urls_never_echo_the_password(url: str) -> None:
    with pytest.raises(StateError) as caught:
        Store.open(url)
    assert "s3cr3t-Pa55" not in _chain(caught.value)


def test_mask_url() -> None:
    assert mask_url("postgresql+psycopg://syncd:hunter2@db/syncd") == "postgresql+psycopg://syncd:***@db/syncd"
    assert mask_url("sqlite:///syncd.db") == "sqlite:///syncd.db"


def test_timestamps_must_be_aware() -> None:
    from syncd.state.tables import UTCDateTime

    with pytest.raises(ValueError):
        UTCDateTime().process_bind_param(datetime(2024, 1, 1), sa.create_engine("sqlite://").dialect)
    assert UTCDateTime().process_result_value(datetime(2024, 1, 1), sa.create_engine("sqlite://").dialect) == (
        datetime(2024, 1, 1, tzinfo=UTC)
    )
