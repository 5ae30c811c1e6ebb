"""Any SQL database as a source of desired groups: one query, one row per (group, member).

Columns are matched by name, case-insensitively: `email` (required), `first_name`, `last_name`, the address
fields `line1`, `line2`, `city`, `postcode`, `country`, `group` (the group's name) unless the source
configures a fixed `group`, and `key` (the group's stable identity; every row of a group must give the same)
unless the source sets `key`. Any other column is an error (a misspelt `firstname` must not silently drop data).
Rows whose group names differ only in case belong to one group (the first spelling names it).

Fail closed:

* The query runs in its own daemon thread (SQLAlchemy is synchronous) under `timeout`. When it runs out the
  query is cancelled in the database (sqlite3 `interrupt()`, psycopg `cancel()`; PostgreSQL also gets a
  `statement_timeout` for the transaction) and the source fails for the pass. A driver that cannot be
  interrupted leaves only a daemon thread behind; the pass goes on without waiting for it.
* The query runs in a read-only transaction where the database has one (PostgreSQL `SET TRANSACTION READ
  ONLY`, SQLite `PRAGMA query_only`), which is rolled back, never committed. A missing SQLite file is an error
  (SQLite would otherwise create an empty database and answer "no such table").
* A query returning no rows at all, when groups come from its `group` column, fails the source unless
  `allow_empty` is set; a fixed group that comes back empty after having members is caught by the generic
  guard (`syncd.sources.base`).
* A row without a group fails the source (a LEFT JOIN gone wrong should not shrink a group); a row without an
  email is a reject of its group.

The URL's password never appears in an error, a log line or a repr: messages name the URL with the password
masked and carry only the first line of the driver's error (PostgreSQL's DETAIL lines can quote row values).

The keys of a `type: sql` entry of `sources:` are `SqlSourceSettings`, defined here and registered with `build`
in `syncd.sources.registry`; the config loader knows them only through that registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import Field, field_validator, model_validator
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import NoSuchModuleError
from sqlalchemy.pool import NullPool

from connectors.base import Contact, PostalAddress, in_bulk
from syncd.config.models import (
    KEY_TEXT,
    REMOVAL_POLICY_TEXT,
    SOURCE_NAME_PATTERN,
    Config,
    DeclaredGroup,
    SourceSettings,
    TargetSpec,
    check_group_name,
    check_targets_once,
    database_url,
)
from syncd.config.problems import ProblemList
from syncd.errors import SourceError
from syncd.model import DesiredGroup, Reject, RejectCode, RemovalPolicy, Target
from syncd.planning import admit
from syncd.sources.base import CheckLine, SourceContext

log = logging.getLogger("syncd.sources.sql")

ADDRESS_COLUMNS = ("line1", "line2", "city", "postcode", "country")
MEMBER_COLUMNS = ("email", "first_name", "last_name", *ADDRESS_COLUMNS)
GROUP_COLUMN = "group"
KEY_COLUMN = "key"

FETCH_ROWS = 5_000  # rows fetched at a time (a server-side cursor where the driver has one)


# ------------------------------------------------------------------------------------------ settings


class SqlSourceSettings(SourceSettings):
    """Desired groups read with one SQL query: one row per (group, member)."""

    type: Literal["sql"] = Field(description="Any database SQLAlchemy can reach (a CRM replica, a warehouse).")
    name: str | None = Field(
        default=None,
        pattern=SOURCE_NAME_PATTERN,
        description="What reports, logs and metrics call this source. Default: sql (sql#2, … when there are several).",
    )
    url: str = Field(
        description="SQLAlchemy URL of the database, e.g. postgresql+psycopg://reader:${CRM_DB_PASSWORD}@"
        "replica/crm or sqlite:///crm.db (postgresql:// means psycopg 3). Its driver must be installed. The "
        "password is never printed; give syncd a read-only account (syncd also runs the query in a read-only "
        "transaction where the database supports it)."
    )
    query: str = Field(
        description="The query. One row per member; columns by name: email (required), first_name, "
        "last_name, line1, line2, city, postcode, country, and `group` (the group's name) unless the source "
        'sets `group`. Quote the column name: SELECT segment AS "group", email FROM …'
    )
    group: str | None = Field(
        default=None,
        description="Put every row in this one group (the query then has no `group` column). Without it the "
        "rows' `group` column names the groups, which are then known only when the query runs.",
    )
    key: str | None = Field(
        default=None,
        description="With a fixed `group`: its key. " + KEY_TEXT + " Without a fixed `group`, the query may return "
        "a `key` column instead (every row of a group giving the same key).",
    )
    targets: list[TargetSpec] | None = Field(
        default=None,
        description="Providers every group of this source is synced to: names, or {provider, group_id} "
        "mappings (group_id only with a fixed `group`). Default: every configured provider.",
    )
    removal_policy: RemovalPolicy | None = Field(default=None, description=REMOVAL_POLICY_TEXT + " For every group.")
    max_removals: int | None = Field(
        default=None, ge=0, description="Overrides safety.max_removals for every group of this source."
    )
    max_removal_ratio: float | None = Field(
        default=None, ge=0, le=1, description="Overrides safety.max_removal_ratio for every group of this source."
    )
    allow_empty: bool = Field(
        default=False,
        description="Accept an empty answer: a query that returns no rows, or a fixed `group` that had members "
        "on the last pass and now has none. By default such a pass leaves the groups untouched and reports "
        "an error. The removal guard still applies.",
    )
    timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds the query (connecting included) may take; then it is cancelled and the source "
        "fails for this pass, changing nothing.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        url = database_url(value)
        try:
            url.get_dialect()
        except NoSuchModuleError:
            raise ValueError(f"unknown database dialect {url.drivername!r}") from None
        return url.render_as_string(hide_password=False)

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        value = value.strip().rstrip(";").strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("group", "key")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        return None if value is None else check_group_name(value)

    @model_validator(mode="after")
    def _targets(self) -> SqlSourceSettings:
        check_targets_once(self.targets)
        if self.key is not None and self.group is None:
            problems = ProblemList()
            problems.add(
                ("key",),
                "`key` names the key of a fixed `group`, and this source sets none: drop `key`, or return a "
                "`key` column from the query",
            )
            problems.check()
        if self.group is None:
            pinned = [i for i, t in enumerate(self.targets or ()) if t.group_id]
            if pinned:
                problems = ProblemList()
                problems.add(
                    ("targets", pinned[0]),
                    "group_id pins one provider group, but this source's groups come from its query's "
                    "`group` column: set `group` (one fixed group) or drop group_id",
                )
                problems.check()
        return self

    def declared_groups(self) -> Iterator[DeclaredGroup]:
        """The fixed `group`; or, without one, the groups the query's rows name (name None), whose targets
        are still checked."""
        yield DeclaredGroup(("group",), self.group, self, self.key)

    @property
    def safe_url(self) -> str:
        """The URL with its password masked (``***``): fit for logs and output."""
        return make_url(self.url).render_as_string(hide_password=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for key, value in super().__repr_args__():
            yield key, (self.safe_url if key == "url" else value)


# ------------------------------------------------------------------------------------------- source


class _Interrupt:
    """Cancels the running query from another thread, once the worker has a connection to cancel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Any = None
        self.fired = False

    def attach(self, connection: Any) -> None:
        with self._lock:
            self._connection = connection
            fired = self.fired
        if fired:
            self._cancel(connection)

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            connection = self._connection
        if connection is not None:
            # psycopg's cancel talks to the server: never on the event loop's thread.
            threading.Thread(target=self._cancel, args=(connection,), daemon=True).start()

    @staticmethod
    def _cancel(connection: Any) -> None:
        for method in ("interrupt", "cancel_safe", "cancel"):  # sqlite3; psycopg >= 3.2; older psycopg
            cancel = getattr(connection, method, None)
            if callable(cancel):
                try:
                    cancel()
                except Exception:  # the query may have finished meanwhile
                    log.debug("cancelling the query with %s() failed", method, exc_info=True)
                return


class SqlSource:
    """One `type: sql` source."""

    fetch_rows = FETCH_ROWS  # rows per fetch; an instance may fetch in smaller steps (a test's small table)

    def __init__(self, settings: SqlSourceSettings, config: Config, *, name: str = "sql") -> None:
        self.settings = settings
        self.config = config
        self.name = name
        self.guard_empty = not settings.allow_empty
        self._url: URL = make_url(settings.url)

    @property
    def group_names(self) -> tuple[str, ...] | None:
        """The fixed `group`, if the source sets one; None when the query's rows name the groups."""
        return None if self.settings.group is None else (self.settings.group,)

    def __repr__(self) -> str:
        return f"SqlSource(name={self.name!r}, url={self.safe_url!r})"

    @property
    def safe_url(self) -> str:
        return self._url.render_as_string(hide_password=True)

    async def read(self) -> list[DesiredGroup]:
        rows = await self._fetch()
        return await asyncio.to_thread(self._groups, rows)  # validates every member: CPU, off the event loop

    async def check(self) -> list[CheckLine]:
        """For `syncd validate --online`: run the query (read-only) and say what it yields."""
        try:
            groups = await self.read()
        except SourceError as exc:
            return [CheckLine(False, exc.message)]
        members = sum(len(g.members) for g in groups)
        return [CheckLine(True, f"{len(groups)} group{'s' if len(groups) != 1 else ''}, {members} members")]

    # -- running the query ----------------------------------------------------------------------------
    async def _fetch(self) -> _Rows:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Rows] = loop.create_future()
        interrupt = _Interrupt()

        def deliver(result: _Rows | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                assert result is not None
                future.set_result(result)

        def work() -> None:
            try:
                result: _Rows | None = self._query(interrupt)
                error: BaseException | None = None
            except BaseException as exc:
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
                loop.call_soon_threadsafe(deliver, result, error)

        threading.Thread(target=work, name=f"syncd-source-{self.name}", daemon=True).start()
        timeout = self.settings.timeout
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            interrupt.fire()
            raise SourceError(
                self.name, f"the query did not finish within {timeout:g}s (timeout): cancelled, nothing changes"
            ) from None
        except asyncio.CancelledError:
            interrupt.fire()
            raise

    def _query(self, interrupt: _Interrupt) -> _Rows:
        """Runs in the worker thread: the rows are streamed (fetched `FETCH_ROWS` at a time, through a server-side
        cursor on PostgreSQL) and each becomes a contact as it comes, so the answer is never held as rows."""
        url = self._url
        backend = url.get_backend_name()
        in_memory = url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
        if backend == "sqlite" and not in_memory and not Path(url.database or "").exists():
            raise SourceError(self.name, f"database {self.safe_url}: the file does not exist")
        connect_args: dict[str, Any] = {}
        if backend == "postgresql" and "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = max(1, min(30, round(self.settings.timeout)))
        try:
            engine = sa.create_engine(url, poolclass=NullPool, hide_parameters=True, connect_args=connect_args)
        except ImportError as exc:
            raise SourceError(
                self.name, f"database {self.safe_url}: its driver is not installed ({exc.name})"
            ) from None
        except Exception as exc:
            raise SourceError(self.name, self._describe(exc, "cannot use the database URL")) from None
        try:
            with engine.connect() as conn:
                interrupt.attach(conn.connection.driver_connection)
                with conn.begin() as tx:
                    if backend == "sqlite":
                        conn.exec_driver_sql("PRAGMA query_only = ON")
                    elif backend == "postgresql":
                        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                        millis = max(1, round(self.settings.timeout * 1000))
                        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {millis}")
                    rows = self._stream(conn.connection.driver_connection, backend)
                    tx.rollback()
            return rows
        except SourceError:
            raise
        except Exception as exc:
            if interrupt.fired:
                raise SourceError(self.name, "the query was cancelled (timeout)") from None
            raise SourceError(self.name, self._describe(exc, "the query failed")) from None
        finally:
            engine.dispose()

    def _stream(self, driver: Any, backend: str) -> _Rows:
        """Run the query on the driver's own cursor (a server-side one on PostgreSQL) and turn the rows into
        contacts as they are fetched, `FETCH_ROWS` at a time: no SQLAlchemy row objects, and the answer is never
        all in memory as rows. No parameters: the query goes to the driver as written (a literal % or :name is
        no placeholder)."""
        cursor = driver.cursor(name="syncd_source") if backend == "postgresql" else driver.cursor()
        try:
            cursor.execute(self.settings.query)
            if cursor.description is None:
                raise SourceError(self.name, "the query returns no rows (is it a SELECT?)")
            rows = _Rows(self, self._columns([str(c[0]) for c in cursor.description]))
            with in_bulk(freeze=True):  # a contact per row: a million of them, maybe
                while fetched := cursor.fetchmany(self.fetch_rows):
                    for row in fetched:
                        rows.take(row)
            return rows
        finally:
            cursor.close()

    def _describe(self, exc: BaseException, what: str) -> str:
        original = getattr(exc, "orig", None) or exc
        lines = str(original).strip().splitlines()
        # The first line only: PostgreSQL's DETAIL lines can quote row values (member emails).
        reason = lines[0].strip() if lines else type(original).__name__
        password = self._url.password
        if password:
            reason = reason.replace(str(password), "***")
        return f"database {self.safe_url}: {what}: {reason}"

    # -- rows to groups -------------------------------------------------------------------------------
    def _groups(self, rows: _Rows) -> list[DesiredGroup]:
        fixed = self.settings.group
        if not rows.count and fixed is None:
            if self.settings.allow_empty:
                return []
            raise SourceError(
                self.name,
                "the query returned no rows: every group it names is left untouched (set allow_empty: true "
                "if no group should have members now)",
            )
        targets = tuple(Target(t.provider, t.group_id) for t in self.config.targets_of(self.settings))
        groups = []
        for key in rows.order:
            with in_bulk(freeze=True):
                members, invalid = admit(rows.candidates.pop(key, []))
            groups.append(
                DesiredGroup(
                    name=rows.spelled[key],
                    members=members,
                    rejected=tuple(rows.missing.get(key, [])) + invalid,
                    targets=targets,
                    source=self.name,
                    removal_policy=self.settings.removal_policy,
                    max_removals=self.settings.max_removals,
                    max_removal_ratio=self.settings.max_removal_ratio,
                    key=rows.keys.get(key) or self.settings.key or rows.spelled[key],
                )
            )
        log.debug("%s: %d rows, %d groups", self.name, rows.count, len(groups))
        return groups

    def _columns(self, columns: list[str]) -> dict[str, int]:
        index: dict[str, int] = {}
        for i, column in enumerate(columns):
            key = column.strip().lower()
            allowed = MEMBER_COLUMNS if self.settings.group is not None else (GROUP_COLUMN, *MEMBER_COLUMNS)
            if self.settings.key is None:
                allowed = (*allowed, KEY_COLUMN)
            if key not in allowed:
                hint = (
                    " (this source sets a fixed `group`: drop the group column, or drop `group` from the config)"
                    if key == GROUP_COLUMN
                    else ""
                )
                raise SourceError(
                    self.name,
                    f"the query returns a column {column!r} syncd does not know{hint}; expected: " + ", ".join(allowed),
                )
            if key in index:
                raise SourceError(self.name, f"the query returns the column {key!r} twice")
            index[key] = i
        if "email" not in index:
            raise SourceError(self.name, "the query returns no `email` column")
        if self.settings.group is None and GROUP_COLUMN not in index:
            raise SourceError(
                self.name,
                'the query returns no `group` column (SELECT … AS "group") and the source sets no fixed `group`',
            )
        return index


class _Rows:
    """The query's rows as they are fetched, each turned into a contact of its group at once (in the worker
    thread). Names and address parts repeat across members: each distinct value is kept once."""

    def __init__(self, source: SqlSource, index: dict[str, int]) -> None:
        self.source = source.name
        self.fixed = source.settings.group
        self.index = index
        self.count = 0
        self.order: list[str] = []  # group keys, in the order the rows first name them
        self.spelled: dict[str, str] = {}
        self.candidates: dict[str, list[Contact]] = {}
        self.missing: dict[str, list[Reject]] = {}
        self.keys: dict[str, str | None] = {}  # group -> the key its rows give (None: no key, the name is)
        self._values: dict[str, str] = {}
        if self.fixed is not None:
            self.order.append(self.fixed.casefold())
            self.spelled[self.fixed.casefold()] = self.fixed
        self._email = index["email"]
        self._group = index.get(GROUP_COLUMN)
        self._key = index.get(KEY_COLUMN)
        self._fields = [(index.get(c)) for c in ("first_name", "last_name", *ADDRESS_COLUMNS)]

    def take(self, row: Sequence[Any]) -> None:
        self.count += 1
        name = self.fixed if self._group is None else _text(row[self._group])
        if name is None:
            raise SourceError(
                self.source,
                f"row {self.count} has no group (NULL or empty `group`): filter such rows out in the query",
            )
        key = name.casefold()
        if key not in self.spelled:
            self.spelled[key] = name
            self.order.append(key)
        if self._key is not None:
            self._agree(key, _text(row[self._key]))
        email = _text(row[self._email])
        if email is None:
            self.missing.setdefault(key, []).append(
                Reject("", f"row {self.count} of the query has no email", RejectCode.MISSING_FIELDS)
            )
            return
        self.candidates.setdefault(key, []).append(self._contact(row, email))

    def _agree(self, group: str, key: str | None) -> None:
        """Every row of a group gives the same `key` (or none): a group with two identities fails the source."""
        first = self.keys.setdefault(group, key)
        if first != key:
            raise SourceError(
                self.source,
                f"row {self.count} gives group {self.spelled[group]!r} the key {key!r}, but an earlier row gave it "
                f"{first!r}: every row of a group must give the same key",
            )

    def _contact(self, row: Sequence[Any], email: str) -> Contact:
        values = self._values
        first, last, *parts = (
            None if i is None or (text := _text(row[i])) is None else values.setdefault(text, text)
            for i in self._fields
        )
        address = PostalAddress(*parts) if any(parts) else None
        return Contact(email=email, first_name=first, last_name=last, address=address)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def build(settings: SqlSourceSettings, config: Config, ctx: SourceContext) -> SqlSource:
    """The registry's factory (`syncd.sources.registry`)."""
    return SqlSource(settings, config, name=ctx.name)


__all__ = ["SqlSource", "SqlSourceSettings", "build"]
