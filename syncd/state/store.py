"""The state DB behind one small API: runs, pair results, the member ledger, bindings, caches and leases.

Everything syncd remembers between passes goes through `Store`, so the rest of the code never writes SQL and
the answer to "who was removed from which list, when, and why" is always one `history()` call away.

Sync SQLAlchemy 2 Core on one Engine; every method is one short transaction. SQLite (the default: a file,
WAL, a busy timeout, write transactions that take the write lock up front) and PostgreSQL through psycopg 3
(several replicas may share it: pairs are leased). Database errors come out as `StateError`; the URL in any
message is masked, and SQL parameters (member emails) are never put in exception messages.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
import uuid
from collections.abc import Collection, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from connectors.base import email_key
from syncd.errors import StateError
from syncd.model import KnownReject, LedgerOutcome, OpKind, PairResult, PairStatus, Strategy
from syncd.state import migrate
from syncd.state.budget import Grant, RateRule, RateSignals, note_signals, take_token
from syncd.state.fence import Fence, FencedOut, current_fence
from syncd.state.records import (
    Binding,
    LedgerEntry,
    LedgerRow,
    PairRow,
    PairState,
    Quarantined,
    RejectRow,
    RunOutcome,
    RunRow,
    StoredReject,
)
from syncd.state.tables import (
    bindings,
    ledger,
    owned_members,
    pair_results,
    quarantine,
    recipient_ids,
    rejects,
    runs,
)

__all__ = ["HistoryRow", "StateRecipientCache", "Store", "mask_url"]

# Keys per IN (...) list / per statement: far below SQLite's and PostgreSQL's parameter limits.
IN_CHUNK = 500
HISTORY_BATCH = 500  # ledger rows fetched at a time by stream_history
BULK_ROWS = 10_000  # rows per bulk statement (SQLite executemany, PostgreSQL COPY or unnest arrays)
BULK_TX_ROWS = 100_000  # rows per transaction when a cache write is larger: the write lock is never held long
SCAN_BATCH = 10_000  # rows fetched at a time when a provider's whole cache is scanned
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10

_T = TypeVar("_T")
_ABSENT: Any = object()
_Insert = sqlite.Insert | postgresql.Insert


def utcnow() -> datetime:
    return datetime.now(UTC)


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ***; what may appear in messages, logs and reprs."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except Exception:
        return "<unparsable database URL>"
    return parsed.render_as_string(hide_password=True)


def _chunks(items: Sequence[_T], size: int = IN_CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _unique(keys: Iterable[str]) -> list[str]:
    """The keys once each, in order: a comprehension, which lets other threads run, where `dict.fromkeys` over a
    million keys is one C call that holds the interpreter (and the event loop) for ~0.2 s."""
    return list({key: None for key in keys})


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except Exception:
        # The parser's message repeats the whole string, password included: say nothing of it.
        raise StateError(
            "state.url is not a valid database URL (expected sqlite:///path/to/syncd.db or "
            "postgresql+psycopg://user:password@host/db)"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # the driver syncd ships with
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StateError(f"state DB {mask_url(parsed)}: unsupported database (use sqlite or postgresql+psycopg)")
    return parsed


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook emit BEGIN itself (pysqlite's implicit transactions skip DDL and reads).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode, much faster
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """WAL journal: readers never block the writer (and vice versa). Switching a fresh file needs it to itself,
    and SQLite answers "database is locked" at once, without its busy timeout, when replicas starting together
    open it at the same moment: try again for a while (a file switched once stays switched)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_on_begin(conn: sa.Connection) -> None:
    # Write transactions take the write lock up front (waiting up to busy_timeout for it) instead of
    # failing with SQLITE_BUSY when a deferred read would have to be upgraded to a write.
    mode = conn.get_execution_options().get("syncd_sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _create_engine(url: URL) -> sa.Engine:
    kwargs: dict[str, Any] = {"hide_parameters": True}
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
            # One shared connection, or every pooled connection would see its own empty database.
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        engine = sa.create_engine(url, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)


def _sqlite_read_only_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # as in _sqlite_on_connect: SQLAlchemy's "begin" hook emits BEGIN
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _create_read_only_sqlite_engine(url: URL, path: Path) -> sa.Engine:
    """An engine on an existing SQLite file that cannot write to it (nor create it): opened as a mode=ro URI."""
    uri = f"{path.absolute().as_uri()}?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    engine = sa.create_engine(url, creator=connect, hide_parameters=True)
    sa.event.listen(engine, "connect", _sqlite_read_only_on_connect)
    sa.event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _pg_read_only_on_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("SET TRANSACTION READ ONLY")


class Store:
    """syncd's state DB. Open with `Store.open(url)`, which also upgrades the schema; close when done."""

    def __init__(self, engine: sa.Engine, url: URL) -> None:
        self._engine = engine
        self._url = url
        self._dialect = engine.dialect.name

    # ------------------------------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect, upgrade the schema to head; StateError (URL masked) if unreachable or not upgradable."""
        parsed = _parse_url(url)
        try:
            engine = _create_engine(parsed)
        except ImportError as exc:
            raise StateError(
                f"state DB {mask_url(parsed)}: the database driver is not installed ({exc.name}); "
                "for PostgreSQL install syncd[postgres]"
            ) from None
        store = cls(engine, parsed)
        try:
            with store._tx("cannot open it", write=True) as conn:
                migrate.upgrade(conn)
        except StateError:
            engine.dispose()
            raise
        except Exception as exc:  # alembic's own errors
            engine.dispose()
            raise StateError(store._describe(exc, "cannot upgrade the schema")) from None
        return store

    @classmethod
    def open_read_only(cls, url: str) -> Store | None:
        """The state DB as it is, for commands that only read it (`history`, `validate --online`); None when there
        is none yet: no SQLite file, or a database syncd never set up. Creates nothing and upgrades nothing, and
        every transaction is read-only (SQLite opened with mode=ro, PostgreSQL transactions READ ONLY), so it
        writes nothing. StateError (URL masked) if the database is unreachable or unreadable."""
        parsed = _parse_url(url)
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database in ("", ":memory:") or parsed.query.get("mode") == "memory" or not Path(database).is_file():
                return None
            engine = _create_read_only_sqlite_engine(parsed, Path(database))
        else:
            try:
                engine = _create_engine(parsed)
            except ImportError as exc:
                raise StateError(
                    f"state DB {mask_url(parsed)}: the database driver is not installed ({exc.name}); "
                    "for PostgreSQL install syncd[postgres]"
                ) from None
            sa.event.listen(engine, "begin", _pg_read_only_on_begin)
        store = cls(engine, parsed)
        try:
            with store._tx("cannot open it") as conn:
                revision = migrate.current_revision(conn)
        except BaseException:
            engine.dispose()
            raise
        if revision is None:  # nothing syncd made: as if there were no database
            engine.dispose()
            return None
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def url(self) -> str:
        """The database URL with the password masked."""
        return mask_url(self._url)

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._dialect

    def ping(self) -> None:
        """Raise StateError unless the database answers (for /readyz)."""
        with self._tx("not reachable") as conn:
            conn.execute(sa.select(sa.literal(1)))

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (equal to `migrate.head_revision()` once opened)."""
        with self._tx("schema_revision") as conn:
            return migrate.current_revision(conn)

    # ------------------------------------------------------------------------------------------- runs

    def start_run(self, *, dry_run: bool, trigger: str, selection: dict[str, Any] | None = None) -> str:
        """Record a run as `running`; returns its id (uuid4 hex)."""
        if not trigger or len(trigger) > 32:
            raise ValueError(f"run trigger must be a short name, got {trigger!r}")
        run_id = uuid.uuid4().hex
        with self._tx("start_run", write=True) as conn:
            conn.execute(
                runs.insert().values(
                    id=run_id,
                    started_at=utcnow(),
                    dry_run=dry_run,
                    trigger=str(trigger),
                    outcome=str(RunOutcome.RUNNING),
                    errors=[],
                    selection=selection,
                )
            )
        return run_id

    def finish_run(self, run_id: str, *, outcome: str, errors: Sequence[str] = ()) -> None:
        """Close a run with its outcome (a `RunOutcome` value) and the errors outside any pair."""
        final = RunOutcome(outcome)
        with self._tx("finish_run", write=True) as conn:
            done = conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(finished_at=utcnow(), outcome=str(final), errors=[str(e) for e in errors])
            )
            if done.rowcount != 1:
                raise StateError(f"finish_run: no run {run_id!r} in the state DB")

    def run(self, run_id: str) -> RunRow | None:
        with self._tx("run") as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        return _run_row(row) if row is not None else None

    def runs(self, limit: int | None = 20) -> list[RunRow]:
        """The latest runs, newest first."""
        query = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._tx("runs") as conn:
            return [_run_row(row) for row in conn.execute(query)]

    def record_pair(
        self,
        run_id: str,
        result: PairResult,
        *,
        remote_group_id: str | None,
        pending_add: int | None = None,
        pending_remove: int | None = None,
    ) -> None:
        """Record one pair's outcome in a run (recording the same pair again replaces it), with what it left to
        add and remove (None: not known)."""
        values = {
            "run_id": run_id,
            "recorded_at": utcnow(),
            "group_name": result.group,
            "provider": result.provider,
            "remote_group_id": remote_group_id,
            "strategy": str(result.strategy),
            "status": str(result.status),
            "desired": result.desired,
            "actual_before": result.actual_before,
            "added": result.add,
            "removed": result.remove,
            "unsupported_remove": result.unsupported_remove,
            "held_back": result.held_back,
            "rejected": len(result.rejected),
            "read_requests": int(result.requests.get("read", 0)),
            "write_requests": int(result.requests.get("write", 0)),
            "error": result.error,
            "blocked_reason": result.guard,
            "pending_add": pending_add,
            "pending_remove": pending_remove,
        }
        with self._tx("record_pair", write=True) as conn:
            conn.execute(
                pair_results.delete().where(
                    pair_results.c.run_id == run_id,
                    pair_results.c.group_name == result.group,
                    pair_results.c.provider == result.provider,
                )
            )
            conn.execute(pair_results.insert().values(**values))

    def pairs(self, run_id: str) -> list[PairRow]:
        """The pair results of a run, in the order they were recorded."""
        query = sa.select(pair_results).where(pair_results.c.run_id == run_id).order_by(pair_results.c.id)
        with self._tx("pairs") as conn:
            return [_pair_row(row) for row in conn.execute(query)]

    def last_success(self, group: str, provider: str) -> datetime | None:
        """When the pair was last reconciled by a real (not dry) run: status in_sync or applied."""
        query = (
            sa.select(sa.func.max(pair_results.c.recorded_at))
            .join(runs, runs.c.id == pair_results.c.run_id)
            .where(
                pair_results.c.group_name == group,
                pair_results.c.provider == provider,
                pair_results.c.status.in_([str(PairStatus.IN_SYNC), str(PairStatus.APPLIED)]),
                runs.c.dry_run.is_(False),
            )
        )
        with self._tx("last_success") as conn:
            value = conn.execute(query).scalar()
        assert value is None or isinstance(value, datetime)
        return value

    def last_desired(self, groups: Sequence[str]) -> dict[str, int]:
        """Per group name (exact spelling), the desired member count its latest pair result of a real (not
        dry) run recorded; groups never recorded by a real run are absent. Sources use it to tell a group that
        suddenly comes back empty (suspect: fail closed) from one that was always empty."""
        names = _unique(groups)
        found: dict[str, int] = {}
        for chunk in _chunks(names):
            latest = (
                sa.select(sa.func.max(pair_results.c.id))
                .join(runs, runs.c.id == pair_results.c.run_id)
                .where(self._one_of(pair_results.c.group_name, chunk), runs.c.dry_run.is_(False))
                .group_by(pair_results.c.group_name)
            )
            query = sa.select(pair_results.c.group_name, pair_results.c.desired).where(pair_results.c.id.in_(latest))
            with self._tx("last_desired") as conn:
                found.update({row.group_name: int(row.desired) for row in conn.execute(query)})
        return found

    # ----------------------------------------------------------------------------------------- ledger

    def record_ledger(self, run_id: str, entries: Sequence[LedgerEntry]) -> None:
        """Append member entries to the ledger in one bulk insert; they share one timestamp."""
        if not entries:
            return
        rows = []
        for entry in entries:
            op, outcome = entry.op, entry.outcome
            if op is not OpKind.ADD and op is not OpKind.REMOVE:  # the enum members themselves skip the look-ups
                op = OpKind(op)
                if op not in (OpKind.ADD, OpKind.REMOVE):
                    raise ValueError(f"ledger op must be add or remove, got {op!s}")
            if not isinstance(outcome, LedgerOutcome):
                outcome = LedgerOutcome(outcome)
            rows.append(
                (
                    entry.group,
                    entry.provider,
                    entry.email,
                    email_key(entry.email),
                    op.value,
                    outcome.value,
                    entry.reason,
                )
            )
        with self._tx("record_ledger", write=True) as conn:
            # One timestamp for the batch, converted once; no per-row SQLAlchemy work (50,000 rows: < 1 s).
            process = ledger.c.at.type.bind_processor(conn.dialect)
            at = utcnow()
            head = (run_id, process(at) if process else at)
            _bulk_insert(conn, ledger, _LEDGER_COLUMNS, [head + row for row in rows])

    def history(
        self,
        *,
        group: str | None = None,
        provider: str | None = None,
        member: str | None = None,
        run_id: str | None = None,
        limit: int | None = None,
    ) -> list[LedgerRow]:
        """Ledger entries, newest first, dry runs' included. `member` is matched trimmed and case-insensitively."""
        return list(self.stream_history(group=group, provider=provider, member=member, run_id=run_id, limit=limit))

    def stream_history(
        self,
        *,
        group: str | None = None,
        provider: str | None = None,
        member: str | None = None,
        run_id: str | None = None,
        since: datetime | None = None,
        include_dry_runs: bool = True,
        limit: int | None = None,
    ) -> Generator[HistoryRow, None, None]:
        """Ledger entries, newest first, read as they are consumed: one query (with LIMIT), fetched in batches
        through a server-side cursor on PostgreSQL, so the whole ledger is never in memory.

        `member` is matched trimmed and case-insensitively; `since` (aware) keeps entries at or after it;
        without `include_dry_runs` every entry of a dry run is left out, whatever its outcome (the run's
        `dry_run` flag decides). The read transaction stays open until the iterator is exhausted or closed:
        close it (``contextlib.closing``) when stopping early.
        """
        query = (
            sa.select(
                ledger.c.at,
                ledger.c.run_id,
                ledger.c.group_name,
                ledger.c.provider,
                ledger.c.email,
                ledger.c.op,
                ledger.c.outcome,
                ledger.c.reason,
                runs.c.dry_run,
            )
            .join(runs, runs.c.id == ledger.c.run_id)
            .order_by(ledger.c.at.desc(), ledger.c.id.desc())
        )
        if group is not None:
            query = query.where(ledger.c.group_name == group)
        if provider is not None:
            query = query.where(ledger.c.provider == provider)
        if member is not None:
            query = query.where(ledger.c.email_key == email_key(member))
        if run_id is not None:
            query = query.where(ledger.c.run_id == run_id)
        if since is not None:
            query = query.where(ledger.c.at >= since)
        if not include_dry_runs:
            query = query.where(runs.c.dry_run.is_(False))
        if limit is not None:
            query = query.limit(limit)
        with self._tx("history") as conn:
            for row in conn.execution_options(yield_per=HISTORY_BATCH).execute(query):
                yield HistoryRow(
                    at=row.at,
                    run_id=row.run_id,
                    group=row.group_name,
                    provider=row.provider,
                    email=row.email,
                    op=OpKind(row.op),
                    outcome=LedgerOutcome(row.outcome),
                    reason=row.reason,
                    dry_run=bool(row.dry_run),
                )

    # --------------------------------------------------------------------------------------- bindings

    def binding(self, group: str, provider: str) -> Binding | None:
        """The pair's binding. Group names are compared case-insensitively (as the config compares them), so a
        group whose name changed only in case is still bound: its `group` then has the stored spelling (see
        `rename_group`). An exact match wins over a case-insensitive one."""
        query = sa.select(bindings).where(bindings.c.provider == provider)
        with self._tx("binding") as conn:
            rows = list(conn.execute(query.where(bindings.c.group_name == group)))
            if not rows:  # Python's casefold: SQLite's lower() knows only ASCII
                key = group.casefold()
                rows = [r for r in conn.execute(query) if r.group_name.casefold() == key]
        if not rows:
            return None
        row = rows[0]
        return Binding(
            group=row.group_name,
            provider=row.provider,
            remote_id=row.remote_id,
            remote_name=row.remote_name,
            created_by_syncd=row.created_by_syncd,
            bound_at=row.bound_at,
            updated_at=row.updated_at,
        )

    def save_binding(self, binding: Binding) -> None:
        """Create or update a binding. Binding the pair to a different remote group forgets the members
        syncd had added to the old one (they say nothing about the new group)."""
        now = utcnow()
        with self._tx("save_binding", write=True) as conn:
            where = (bindings.c.group_name == binding.group, bindings.c.provider == binding.provider)
            old = conn.execute(sa.select(bindings.c.remote_id, bindings.c.bound_at).where(*where)).first()
            bound_at = now
            if old is not None:
                if old.remote_id == binding.remote_id:
                    bound_at = old.bound_at
                else:
                    conn.execute(
                        owned_members.delete().where(
                            owned_members.c.group_name == binding.group,
                            owned_members.c.provider == binding.provider,
                        )
                    )
            stmt = self._insert(bindings).values(
                group_name=binding.group,
                provider=binding.provider,
                remote_id=binding.remote_id,
                remote_name=binding.remote_name,
                created_by_syncd=binding.created_by_syncd,
                bound_at=bound_at,
                updated_at=now,
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["group_name", "provider"],
                    set_={
                        name: stmt.excluded[name]
                        for name in ("remote_id", "remote_name", "created_by_syncd", "bound_at", "updated_at")
                    },
                )
            )

    def rename_group(self, old: str, new: str, provider: str) -> None:
        """Move the pair's binding and the record of the members syncd added from the group name `old` to `new`
        (a group renamed in its source, e.g. only in case, or given a `key`), with its remembered rejects. Nothing
        happens when `new` already has a binding."""
        if old == new:
            return
        with self._tx("rename_group", write=True) as conn:
            taken = conn.execute(
                sa.select(bindings.c.group_name).where(bindings.c.group_name == new, bindings.c.provider == provider)
            ).first()
            if taken is not None:
                return
            conn.execute(  # members recorded under `new` without a binding say nothing about the bound group
                owned_members.delete().where(owned_members.c.group_name == new, owned_members.c.provider == provider)
            )
            conn.execute(
                bindings.update()
                .where(bindings.c.group_name == old, bindings.c.provider == provider)
                .values(group_name=new, updated_at=utcnow())
            )
            conn.execute(
                owned_members.update()
                .where(owned_members.c.group_name == old, owned_members.c.provider == provider)
                .values(group_name=new)
            )
            # the pair's remembered rejects follow it too (a key added to a group: its state moves to the key)
            conn.execute(rejects.delete().where(rejects.c.group_name == new, rejects.c.provider == provider))
            conn.execute(
                rejects.update()
                .where(rejects.c.group_name == old, rejects.c.provider == provider)
                .values(group_name=new)
            )
            conn.execute(  # a quarantine (and its approval) follows the pair
                quarantine.update()
                .where(quarantine.c.group_name == old, quarantine.c.provider == provider)
                .values(group_name=new)
            )

    def forget_binding(self, group: str, provider: str) -> None:
        """Drop a binding, and with it the record of which members syncd added to that group."""
        with self._tx("forget_binding", write=True) as conn:
            conn.execute(bindings.delete().where(bindings.c.group_name == group, bindings.c.provider == provider))
            conn.execute(
                owned_members.delete().where(owned_members.c.group_name == group, owned_members.c.provider == provider)
            )

    # ---------------------------------------------------------------------------------- owned members

    def owned(self, group: str, provider: str) -> frozenset[str]:
        """Email keys of the members syncd itself added to the pair's group (what `owned` may remove)."""
        query = sa.select(owned_members.c.email_key).where(
            owned_members.c.group_name == group, owned_members.c.provider == provider
        )
        with self._tx("owned") as conn:
            return frozenset(conn.execute(query).scalars())

    def mark_owned(self, group: str, provider: str, keys: Iterable[str]) -> None:
        """Remember that syncd added these members (email keys); already-owned keys keep their added_at."""
        unique = _unique(keys)
        if not unique:
            return
        with self._tx("mark_owned", write=True) as conn:
            fixed = {"group_name": group, "provider": provider, "added_at": _db_now(conn, owned_members.c.added_at)}
            _bulk_upsert(
                conn,
                owned_members,
                fixed,
                ("email_key",),
                ((key,) for key in sorted(unique)),  # in key order: the primary key's own, fewer pages touched
                conflict=("group_name", "provider", "email_key"),
            )

    def unmark_owned(self, group: str, provider: str, keys: Iterable[str]) -> None:
        unique = _unique(keys)
        if not unique:
            return
        with self._tx("unmark_owned", write=True) as conn:
            for chunk in _chunks(unique, self._key_chunk):
                conn.execute(
                    owned_members.delete().where(
                        owned_members.c.group_name == group,
                        owned_members.c.provider == provider,
                        self._one_of(owned_members.c.email_key, chunk),
                    )
                )

    # ---------------------------------------------------------------------------------------- rejects

    def known_rejects(self, provider: str, group: str) -> dict[str, KnownReject]:
        """Permanent rejects of a provider for one group (and those remembered for all its groups), by email key."""
        query = sa.select(
            rejects.c.email_key, rejects.c.fingerprint, rejects.c.reason, rejects.c.code, rejects.c.group_name
        ).where(rejects.c.provider == provider, rejects.c.group_name.in_([group, ""]))
        found: dict[str, KnownReject] = {}
        with self._tx("known_rejects") as conn:
            # the group's own row wins over a provider-wide one from before rejects were kept per group
            for row in sorted(conn.execute(query), key=lambda r: r.group_name != ""):
                found[row.email_key] = KnownReject(row.fingerprint, row.reason, row.code)
        return found

    def reject_rows(self, provider: str | None = None, group: str | None = None) -> list[RejectRow]:
        """Known rejects with when they were first and last seen, oldest first."""
        query = sa.select(rejects).order_by(
            rejects.c.first_seen, rejects.c.provider, rejects.c.group_name, rejects.c.email_key
        )
        if provider is not None:
            query = query.where(rejects.c.provider == provider)
        if group is not None:
            query = query.where(rejects.c.group_name.in_([group, ""]))
        with self._tx("reject_rows") as conn:
            return [
                RejectRow(
                    provider=row.provider,
                    email=row.email,
                    fingerprint=row.fingerprint,
                    reason=row.reason,
                    first_seen=row.first_seen,
                    last_seen=row.last_seen,
                    group=row.group_name,
                    code=row.code,
                )
                for row in conn.execute(query)
            ]

    def save_rejects(self, provider: str, group: str, rejected: Sequence[StoredReject]) -> None:
        """Upsert permanent rejects of one group: a member seen again keeps first_seen, gets the new
        fingerprint/reason/code."""
        if not rejected:
            return
        by_key = {email_key(r.email): r for r in rejected}  # the last word on a member wins
        with self._tx("save_rejects", write=True) as conn:
            now = _db_now(conn, rejects.c.first_seen)
            fixed = {"provider": provider, "group_name": group, "first_seen": now, "last_seen": now}
            _bulk_upsert(
                conn,
                rejects,
                fixed,
                ("email_key", "email", "fingerprint", "reason", "code"),
                ((key, r.email, r.fingerprint, r.reason, r.code) for key, r in sorted(by_key.items())),
                conflict=("email_key", "provider", "group_name"),
                update=("email", "fingerprint", "reason", "code", "last_seen"),
            )

    def clear_rejects(self, provider: str, keys: Iterable[str], group: str | None = None) -> None:
        """Forget rejects (by email key), e.g. once the member went through: those of `group` (and the ones
        remembered for every group), or of every group when `group` is None."""
        unique = _unique(keys)
        scope = [] if group is None else [rejects.c.group_name.in_([group, ""])]
        with self._tx("clear_rejects", write=True) as conn:
            for chunk in _chunks(unique):
                conn.execute(
                    rejects.delete().where(
                        rejects.c.provider == provider, self._one_of(rejects.c.email_key, chunk), *scope
                    )
                )

    # ------------------------------------------------------------------------------------- quarantine

    def quarantined(self, group: str | None = None, provider: str | None = None) -> list[Quarantined]:
        """The pairs the removal guard holds back (of `group`, its key or its name, compared case-insensitively,
        and `provider`), oldest first."""
        query = sa.select(quarantine).order_by(quarantine.c.blocked_at, quarantine.c.group_name, quarantine.c.provider)
        if group is not None:
            query = query.where(_named(group))
        if provider is not None:
            query = query.where(quarantine.c.provider == provider)
        with self._tx("quarantined") as conn:
            return [_quarantined(row) for row in conn.execute(query)]

    def hold(self, group: str, provider: str, *, name: str, run_id: str, reason: str, held_back: int) -> bool:
        """Keep the pair (`group`: its key; `name`: the group's name now) in quarantine with the latest guard's
        reason; True when it was not there before (the pair is newly blocked). An approval given meanwhile stays."""
        with self._tx("hold", write=True) as conn:
            updated = conn.execute(
                quarantine.update()
                .where(quarantine.c.group_name == group, quarantine.c.provider == provider)
                .values(reason=reason, held_back=held_back, display_name=name)
            ).rowcount
            if updated:
                return False
            conn.execute(
                self._insert(quarantine)
                .values(
                    group_name=group,
                    provider=provider,
                    display_name=name,
                    blocked_at=utcnow(),
                    run_id=run_id,
                    reason=reason,
                    held_back=held_back,
                )
                .on_conflict_do_nothing(index_elements=["group_name", "provider"])
            )
            return True

    def release(self, group: str, provider: str) -> Quarantined | None:
        """Take the pair out of quarantine; the row it had (None: it was not held)."""
        where = (quarantine.c.group_name == group, quarantine.c.provider == provider)
        with self._tx("release", write=True) as conn:
            row = conn.execute(sa.select(quarantine).where(*where)).first()
            if row is None:
                return None
            conn.execute(quarantine.delete().where(*where))
            return _quarantined(row)

    def approve(self, group: str, providers: Sequence[str], reason: str) -> list[Quarantined]:
        """Approve the held removals of the group's quarantined pairs (those of `providers`; all when empty): the
        next real pass of each lets them go once. The pairs approved, as they are now."""
        with self._tx("approve", write=True) as conn:
            where = [_named(group)]
            if providers:
                where.append(quarantine.c.provider.in_(list(providers)))
            conn.execute(quarantine.update().where(*where).values(approved_at=utcnow(), approval=reason))
            query = sa.select(quarantine).where(*where).order_by(quarantine.c.provider)
            return [_quarantined(row) for row in conn.execute(query)]

    def noted_removals(self, group: str, provider: str, keys: Sequence[str]) -> dict[str, LedgerOutcome]:
        """Of these email keys, those whose last ledger entry in the pair, in a real run, is a removal not made
        (held back, unsupported), with that outcome: a state a later pass need not write down again."""
        last: dict[str, tuple[datetime, int, str, str]] = {}
        with self._tx("noted_removals") as conn:
            for chunk in _chunks(_unique(keys)):
                query = (
                    sa.select(ledger.c.email_key, ledger.c.at, ledger.c.id, ledger.c.op, ledger.c.outcome)
                    .join(runs, runs.c.id == ledger.c.run_id)
                    .where(
                        ledger.c.group_name == group,
                        ledger.c.provider == provider,
                        runs.c.dry_run.is_(False),
                        self._one_of(ledger.c.email_key, chunk),
                    )
                )
                for row in conn.execute(query):
                    seen = last.get(row.email_key)
                    if seen is None or (row.at, row.id) > seen[:2]:
                        last[row.email_key] = (row.at, row.id, row.op, row.outcome)
        quiet = {str(LedgerOutcome.BLOCKED), str(LedgerOutcome.UNSUPPORTED)}
        return {
            key: LedgerOutcome(outcome)
            for key, (_, _, op, outcome) in last.items()
            if op == str(OpKind.REMOVE) and outcome in quiet
        }

    def removals_by_syncd(self, group: str, provider: str, keys: Sequence[str]) -> dict[str, datetime]:
        """Of these email keys, those whose last applied ledger entry in the pair is a removal syncd made, with
        when: the only suppressions (a receiver switched off) syncd may lift again (consent first)."""
        last: dict[str, tuple[datetime, int, str]] = {}
        with self._tx("removals_by_syncd") as conn:
            for chunk in _chunks(_unique(keys)):
                query = sa.select(ledger.c.email_key, ledger.c.at, ledger.c.id, ledger.c.op).where(
                    ledger.c.group_name == group,
                    ledger.c.provider == provider,
                    ledger.c.outcome == str(LedgerOutcome.APPLIED),
                    self._one_of(ledger.c.email_key, chunk),
                )
                for row in conn.execute(query):
                    seen = last.get(row.email_key)
                    if seen is None or (row.at, row.id) > seen[:2]:
                        last[row.email_key] = (row.at, row.id, row.op)
        return {key: at for key, (at, _, op) in last.items() if op == str(OpKind.REMOVE)}

    # ------------------------------------------------------------------------------ recipient ids

    def recipient_cache(self, provider: str) -> StateRecipientCache:
        """The provider's email-key -> recipient-id cache, as a `connectors.base.RecipientCache`."""
        return StateRecipientCache(self, provider)

    # ------------------------------------------------------------------------------------------ fencing

    def fence_holds(self, fence: Fence) -> bool:
        """Whether the queue job behind `fence` is still this worker's (a read, outside any write)."""
        with self._tx("fence_holds") as conn:
            return fence.holds(conn)

    # ------------------------------------------------------------------------------- shared rate budget

    def take_rate_token(self, provider: str, rule: RateRule) -> Grant:
        """One request to `provider` under the budget every replica shares (the `rate_buckets` row): the
        request may go now (`Grant.wait` 0, its time in the window recorded) or after `Grant.wait` seconds (ask
        again then). The row is locked for the decision, so replicas never hand out the same token twice."""
        with self._tx("take_rate_token", write=True) as conn:
            return take_token(conn, provider, rule, self._dialect)

    def note_rate_signals(self, provider: str, signals: RateSignals) -> None:
        """What a provider's answers said about its limit (a 429's wait, quota headers), for every replica."""
        with self._tx("note_rate_signals", write=True) as conn:
            note_signals(conn, provider, signals, self._dialect)

    # ------------------------------------------------------------ the operator's view (status, rejects)

    def pair_states(
        self, *, group: str | None = None, provider: str | None = None, include_dry_runs: bool = False
    ) -> list[PairState]:
        """Where each (group, provider) pair stands after its last pass (`syncd status`): the pair's latest recorded
        result of a real run, or of any run with `include_dry_runs`, ordered by group, then provider. Pairs that
        never had such a pass are absent. `group` and `provider` are matched exactly."""
        latest = sa.select(sa.func.max(pair_results.c.id)).join(runs, runs.c.id == pair_results.c.run_id)
        if not include_dry_runs:
            latest = latest.where(runs.c.dry_run.is_(False))
        if group is not None:
            latest = latest.where(pair_results.c.group_name == group)
        if provider is not None:
            latest = latest.where(pair_results.c.provider == provider)
        query = (
            sa.select(pair_results, runs.c.dry_run)
            .join(runs, runs.c.id == pair_results.c.run_id)
            .where(pair_results.c.id.in_(latest.group_by(pair_results.c.group_name, pair_results.c.provider)))
        )
        with self._tx("pair_states") as conn:
            found = [_pair_state(row) for row in conn.execute(query)]
        # in Python: the same order on SQLite and PostgreSQL (whose collation depends on the server's locale)
        return sorted(found, key=lambda s: (s.group.casefold(), s.group, s.provider.casefold(), s.provider))

    def forget_rejects(
        self, *, provider: str | None = None, group: str | None = None, member: str | None = None
    ) -> int:
        """Forget remembered permanent rejects, so the next pass tries those members again (`syncd rejects clear`);
        how many were forgotten. Those of `provider`, of `member` (matched trimmed and case-insensitively), and of
        `group`, with those remembered for every group of a provider (group ''), which hold `group` back too.
        Every remembered reject when no filter is given."""
        query = rejects.delete()
        if provider is not None:
            query = query.where(rejects.c.provider == provider)
        if group is not None:
            query = query.where(rejects.c.group_name.in_([group, ""]))
        if member is not None:
            query = query.where(rejects.c.email_key == email_key(member))
        with self._tx("forget_rejects", write=True) as conn:
            return int(conn.execute(query).rowcount)

    # -------------------------------------------------------------------------------------- internals

    @property
    def _key_chunk(self) -> int:
        """Keys per statement of the bulk look-ups and deletes: an IN list on SQLite, one array parameter on
        PostgreSQL (of any length: one statement per `BULK_ROWS`)."""
        return BULK_ROWS if self._dialect == "postgresql" else IN_CHUNK

    def _insert(self, table: sa.Table) -> _Insert:
        """INSERT with the dialect's ON CONFLICT support (same API on SQLite and PostgreSQL)."""
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def _one_of(self, column: sa.ColumnElement[str], values: Sequence[str]) -> sa.ColumnElement[bool]:
        """`column IN (values)`; on PostgreSQL `= ANY(array)`: one parameter, parsed and planned once."""
        if self._dialect == "postgresql":
            return column == sa.any_(sa.literal(list(values), postgresql.ARRAY(sa.String())))
        return column.in_(values)

    @contextmanager
    def _tx(self, what: str, *, write: bool = False) -> Iterator[sa.Connection]:
        """One short transaction; database errors become StateError. A write made under a fence (the queue job
        a replica works a pair under, `current_fence`) first checks, in the same transaction, that the job is
        still that replica's: a replica whose job was taken over writes nothing (FencedOut)."""
        fence = current_fence.get() if write else None
        try:
            with self._engine.connect() as conn:
                if write and self._dialect == "sqlite":
                    conn.execution_options(syncd_sqlite_begin="IMMEDIATE")
                with conn.begin():
                    if fence is not None and not fence.holds(conn, lock=True):
                        raise FencedOut(fence.describe())
                    yield conn
        except (sa.exc.SQLAlchemyError, self._engine.dialect.loaded_dbapi.Error) as exc:
            raise StateError(self._describe(exc, what)) from exc

    def _describe(self, exc: BaseException, what: str) -> str:
        original = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
        lines = str(original).strip().splitlines()
        # The first line only: PostgreSQL's DETAIL lines can quote row values (member emails).
        reason = lines[0] if lines else type(original).__name__
        password = self._url.password
        if password:
            reason = reason.replace(str(password), "***")
        if self._dialect == "sqlite" and "database is locked" in reason:
            reason += (
                f" (another process kept it busy for over {SQLITE_BUSY_TIMEOUT_MS // 1000}s: is another syncd using "
                "this file? Several instances need PostgreSQL; try again once it is done)"
            )
        return f"state DB {self.url}: {what}: {reason}"


@dataclass(frozen=True, slots=True)
class HistoryRow(LedgerRow):
    """A ledger entry with what `history` also shows: whether its run was a dry run."""

    dry_run: bool


_LEDGER_COLUMNS = ("run_id", "at", "group_name", "provider", "email", "email_key", "op", "outcome", "reason")


def _bulk_insert(conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """INSERT many rows of database-ready values, without SQLAlchemy's per-row work: COPY on PostgreSQL,
    executemany on SQLite. The values must need no type processing (strings, numbers, processed dates)."""
    quote = conn.dialect.identifier_preparer.quote
    target = conn.dialect.identifier_preparer.format_table(table)
    names = ", ".join(quote(column) for column in columns)
    raw = conn.connection.driver_connection
    assert raw is not None
    if conn.dialect.name == "postgresql":
        with raw.cursor() as cursor, cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in columns)
        raw.executemany(f"INSERT INTO {target} ({names}) VALUES ({marks})", rows)


def _bulk_upsert(
    conn: sa.Connection,
    table: sa.Table,
    fixed: dict[str, Any],
    columns: Sequence[str],
    rows: Iterable[tuple[Any, ...]],
    *,
    conflict: Sequence[str],
    update: Sequence[str] = (),
) -> None:
    """INSERT … ON CONFLICT (`conflict`) DO UPDATE SET `update` (DO NOTHING without `update`) for many rows of
    database-ready values, without SQLAlchemy's per-row work. `fixed` holds the values every row shares (sent
    once), `rows` the values of `columns`. SQLite: one executemany, the rows streamed. PostgreSQL (COPY cannot
    resolve conflicts): up to `BULK_ROWS` rows as one INSERT … SELECT FROM unnest(arrays); more are COPied
    into a temporary table first, then inserted from it in one statement. A key must not repeat within `rows`
    (PostgreSQL refuses to update a row twice in one statement)."""
    prep = conn.dialect.identifier_preparer
    names = ", ".join(prep.quote(c) for c in (*fixed, *columns))
    action = (
        "DO UPDATE SET " + ", ".join(f"{prep.quote(c)} = excluded.{prep.quote(c)}" for c in update)
        if update
        else "DO NOTHING"
    )
    insert = f"INSERT INTO {prep.format_table(table)} ({names})"
    on_conflict = f"ON CONFLICT ({', '.join(prep.quote(c) for c in conflict)}) {action}"
    raw = conn.connection.driver_connection
    assert raw is not None
    if conn.dialect.name != "postgresql":
        head = tuple(fixed.values())
        marks = ", ".join("?" for _ in range(len(fixed) + len(columns)))
        raw.executemany(f"{insert} VALUES ({marks}) {on_conflict}", (head + r for r in rows))
        return

    def sql_type(name: str) -> str:
        return str(table.c[name].type.compile(dialect=conn.dialect))

    quoted = [prep.quote(c) for c in columns]
    shared = [f"CAST(%s AS {sql_type(c)})" for c in fixed]

    def insert_from(source: str) -> str:
        return f"{insert} SELECT {', '.join([*shared, *quoted])} FROM {source} {on_conflict}"

    it = iter(rows)
    first = list(itertools.islice(it, BULK_ROWS + 1))
    if not first:
        return
    with raw.cursor() as cursor:
        if len(first) <= BULK_ROWS:
            arrays = ", ".join(f"CAST(%s AS {sql_type(c)}[])" for c in columns)
            source = f"unnest({arrays}) AS u({', '.join(quoted)})"
            cursor.execute(insert_from(source), (*fixed.values(), *map(list, zip(*first, strict=True))))
            return
        staging = prep.quote(f"_syncd_{table.name}_{uuid.uuid4().hex[:12]}")
        definition = ", ".join(f"{q} {sql_type(c)}" for q, c in zip(quoted, columns, strict=True))
        cursor.execute(f"CREATE TEMPORARY TABLE {staging} ({definition}) ON COMMIT DROP")
        with cursor.copy(f"COPY {staging} ({', '.join(quoted)}) FROM STDIN") as copy:
            for row in itertools.chain(first, it):
                copy.write_row(row)
        cursor.execute(insert_from(staging), tuple(fixed.values()))
        cursor.execute(f"DROP TABLE {staging}")


def _db_now(conn: sa.Connection, column: sa.Column[Any]) -> Any:
    """Now, as the database takes it for this timestamp column (its bind processing done once, for many rows)."""
    process = column.type.bind_processor(conn.dialect)
    now = utcnow()
    return process(now) if process else now


class StateRecipientCache:
    """`connectors.base.RecipientCache` for one provider, persisted in the `recipient_ids` table.

    Lookups by key use the primary key, in chunks; a lookup by id, the whole cache compared with a directory
    and `all` read the provider's rows as a stream (no index on ids: a scan either way), keeping only what
    they answer. Writes are bulk upserts, in transactions of at most `BULK_TX_ROWS` rows."""

    def __init__(self, store: Store, provider: str) -> None:
        self._store = store
        self.provider = provider

    def __repr__(self) -> str:
        return f"StateRecipientCache({self.provider!r})"

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        unique = _unique(keys)
        if not unique:
            return found
        with self._store._tx("recipient_cache.get_many") as conn:
            for chunk in _chunks(unique, self._store._key_chunk):
                query = sa.select(recipient_ids.c.email_key, recipient_ids.c.remote_id).where(
                    recipient_ids.c.provider == self.provider,
                    self._store._one_of(recipient_ids.c.email_key, chunk),
                )
                found.update((key, rid) for key, rid in conn.execute(query))
        return found

    def keys_by_id(self, ids: Collection[str]) -> dict[str, str]:
        """Recipient id -> email key, for the cached ones of `ids`: one read of the provider's rows (of those
        ids only, when they are few), streamed. The answer's keys are the caller's own id strings, in its order."""
        if not ids:
            return {}
        # filled in place: no second map of a million ids. A comprehension, not `dict.fromkeys` (one C call that
        # holds the interpreter ~0.2 s over a million ids, stalling the event loop though this runs in a thread)
        found: dict[str, str | None] = {rid: None for rid in ids}
        if len(found) <= IN_CHUNK:
            query = sa.select(recipient_ids.c.remote_id, recipient_ids.c.email_key).where(
                recipient_ids.c.provider == self.provider,
                self._store._one_of(recipient_ids.c.remote_id, list(found)),
            )
            with self._store._tx("recipient_cache.keys_by_id") as conn:
                rows: Iterable[tuple[str, str]] = [(rid, key) for rid, key in conn.execute(query)]
        else:
            rows = self._scan("remote_id", "email_key", "recipient_cache.keys_by_id")
        hits = 0
        absent = _ABSENT
        for rid, key in rows:
            was = found.get(rid, absent)
            if was is not absent:
                hits += was is None
                found[rid] = key
        if hits == len(found):
            return found  # type: ignore[return-value]  # every value is set
        return {rid: key for rid, key in found.items() if key is not None}

    def all(self) -> dict[str, str]:
        return dict(self._scan("email_key", "remote_id", "recipient_cache.all"))

    def put_many(self, ids: Mapping[str, str]) -> None:
        if ids:
            self._put(ids.items(), len(ids))

    def replace_all(self, ids: Mapping[str, str]) -> None:
        """Make the provider's cache exactly `ids`: compare it, streamed, with the rows there are; forget the
        rows `ids` lacks and write the new and changed entries only (nothing, when the directory is as
        cached; everything, without a copy of `ids`, into an empty cache)."""
        todo: dict[str, str] | None = None  # what is still to be written (new or changed), once a row is seen
        stale: list[str] = []
        for key, rid in self._scan("email_key", "remote_id", "recipient_cache.replace_all"):
            if todo is None:
                todo = dict(ids)
            wanted = todo.get(key)
            if wanted is None:
                if key not in ids:
                    stale.append(key)
            elif wanted == rid:
                del todo[key]
        if stale:
            self.forget(stale)
        writes = ids if todo is None else todo
        if writes:
            self._put(writes.items(), len(writes))

    def forget(self, keys: Sequence[str]) -> None:
        unique = _unique(keys)
        if not unique:
            return
        with self._store._tx("recipient_cache.forget", write=True) as conn:
            for chunk in _chunks(unique, self._store._key_chunk):
                conn.execute(
                    recipient_ids.delete().where(
                        recipient_ids.c.provider == self.provider,
                        self._store._one_of(recipient_ids.c.email_key, chunk),
                    )
                )

    def _scan(self, first: str, second: str, what: str) -> Iterator[tuple[str, str]]:
        """Two columns of every row of the provider's cache, fetched `SCAN_BATCH` at a time through the driver's
        own cursor (a server-side one on PostgreSQL): a million rows without SQLAlchemy's per-row work."""
        with self._store._tx(what) as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            prep = conn.dialect.identifier_preparer
            postgres = conn.dialect.name == "postgresql"
            sql = (
                f"SELECT {prep.quote(first)}, {prep.quote(second)} FROM {prep.format_table(recipient_ids)} "
                f"WHERE {prep.quote('provider')} = {'%s' if postgres else '?'}"
            )
            cursor = raw.cursor(name=f"syncd_scan_{uuid.uuid4().hex}") if postgres else raw.cursor()
            try:
                cursor.execute(sql, (self.provider,))
                while rows := cursor.fetchmany(SCAN_BATCH):
                    yield from rows
            finally:
                cursor.close()

    def _put(self, items: Iterable[tuple[str, str]], count: int) -> None:
        """Upsert (email key, id) pairs, in transactions of at most `BULK_TX_ROWS`."""
        pairs = ((key, str(rid)) for key, rid in items)
        for _ in range(0, count, BULK_TX_ROWS):
            chunk = sorted(itertools.islice(pairs, BULK_TX_ROWS))  # in key order: the primary key's own
            with self._store._tx("recipient_cache.put_many", write=True) as conn:
                fixed = {"provider": self.provider, "updated_at": _db_now(conn, recipient_ids.c.updated_at)}
                _bulk_upsert(
                    conn,
                    recipient_ids,
                    fixed,
                    ("email_key", "remote_id"),
                    chunk,
                    conflict=("email_key", "provider"),
                    update=("remote_id", "updated_at"),
                )


# ---------------------------------------------------------------------------------------- row mapping


def _named(group: str) -> sa.ColumnElement[bool]:
    """A quarantined pair's group, by its key or its name, case-insensitively."""
    folded = group.lower()
    return sa.or_(sa.func.lower(quarantine.c.group_name) == folded, sa.func.lower(quarantine.c.display_name) == folded)


def _quarantined(row: sa.Row[Any]) -> Quarantined:
    return Quarantined(
        group=row.group_name,
        provider=row.provider,
        name=row.display_name,
        blocked_at=row.blocked_at,
        run_id=row.run_id,
        reason=row.reason,
        held_back=row.held_back,
        approved_at=row.approved_at,
        approval=row.approval,
    )


def _run_row(row: sa.Row[Any]) -> RunRow:
    return RunRow(
        id=row.id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        dry_run=row.dry_run,
        trigger=row.trigger,
        outcome=RunOutcome(row.outcome),
        errors=tuple(row.errors or ()),
        selection=row.selection,
    )


def _pair_row(row: sa.Row[Any]) -> PairRow:
    return PairRow(
        run_id=row.run_id,
        recorded_at=row.recorded_at,
        group=row.group_name,
        provider=row.provider,
        remote_group_id=row.remote_group_id,
        strategy=Strategy(row.strategy),
        status=PairStatus(row.status),
        desired=row.desired,
        actual_before=row.actual_before,
        added=row.added,
        removed=row.removed,
        unsupported_remove=row.unsupported_remove,
        held_back=row.held_back,
        rejected=row.rejected,
        read_requests=row.read_requests,
        write_requests=row.write_requests,
        error=row.error,
        blocked_reason=row.blocked_reason,
    )


def _pair_state(row: sa.Row[Any]) -> PairState:
    status = PairStatus(row.status)
    # a pass that failed before it found the group (no binding, credentials refused, ...) never read its members
    unread = status is PairStatus.FAILED and row.remote_group_id is None
    actual = row.actual_before if row.dry_run else row.actual_before + row.added - row.removed
    return PairState(
        group=row.group_name,
        provider=row.provider,
        run_id=row.run_id,
        dry_run=bool(row.dry_run),
        last_run=row.recorded_at,
        status=status,
        desired=row.desired,
        actual=None if unread else actual,
        pending_add=None if unread else row.pending_add,
        pending_remove=None if unread else row.pending_remove,
        rejected=row.rejected,
        blocked_reason=row.blocked_reason,
        error=row.error,
    )
