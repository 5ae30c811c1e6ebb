"""Desired groups from CRMs, end to end: HubSpot lists and SQL queries → reconciler → provider sandboxes.

Fail closed is checked where it matters: on the provider sandboxes' request logs (zero mutating requests) and
on the exit code of `syncd run` as a user runs it. SQL sources run against SQLite files and, when
SYNCD_TEST_POSTGRES_URL is set (CI sets it and SYNCD_REQUIRE_POSTGRES), a real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import make_url

from sandboxes._core import Fault, Mount
from sandboxes.hubspot import DEFAULT_TOKEN, HubSpotSandbox
from sandboxes.server import ServerThread
from syncd.config import Config, DeclaredGroup, SourceSettings, TargetSpec, load_config
from syncd.errors import ConfigError, SourceError
from syncd.model import Contact, DesiredGroup, PairResult, PairStatus, RunReport, Target
from syncd.planning import admit
from syncd.reconciler import PassOptions, Reconciler
from syncd.sources import (
    SOURCES,
    CheckLine,
    SourceContext,
    SourceSpec,
    SqlSource,
    YamlSource,
    build_sources,
    read_sources,
)
from syncd.state import Store
from tests.e2e import SERVER, World, emails, provider_entries
from tests.test_cli import syncd

PG_URL = os.environ.get("SYNCD_TEST_POSTGRES_URL")


@dataclass
class CrmWorld(World):
    """The e2e world plus a HubSpot sandbox mounted at /hubspot."""

    hs: HubSpotSandbox = field(default_factory=HubSpotSandbox)

    @property
    def app(self) -> Mount:
        return Mount({"communic8": self.c8, "cleverreach": self.cr, "hubspot": self.hs})

    def hubspot(self, groups: list[dict[str, Any]], server: str = SERVER, **extra: Any) -> dict[str, Any]:
        entry = {"type": "hubspot", "token": DEFAULT_TOKEN, "base_url": f"{server}/hubspot", "groups": groups}
        return {**entry, "rate_limit": 1e6, "retry": {"backoff_base": 0, "max_retries": 2}, **extra}

    def seed(self, name: str, people: Sequence[str]) -> str:
        """A HubSpot list of these people, who are also in Communic8's directory."""
        self.people(people)
        return self.hs.add_list(name, self.hs.add_contacts(people))


@pytest.fixture
def world(tmp_path: Path) -> CrmWorld:
    return CrmWorld(tmp_path)


def pair(report: RunReport, group: str, provider: str) -> PairResult:
    (found,) = [p for p in report.pairs if p.group == group and p.provider == provider]
    return found


# --------------------------------------------------------------------------------------------- HubSpot


async def test_a_hubspot_list_is_synced_to_every_provider_then_goes_quiet(world: CrmWorld) -> None:
    people = emails(1000)
    list_id = world.seed("Customers", people)
    config = world.config([], sources=[world.hubspot([{"name": "Customers", "list_id": list_id}])])

    report = await world.run(config)
    assert report.ok, report.errors
    for provider in ("c8", "cr"):
        assert (pair(report, "Customers", provider).status, pair(report, "Customers", provider).add) == (
            PairStatus.APPLIED,
            1000,
        )
    (c8_id,) = world.c8.groups
    assert world.c8.group_emails(c8_id) == set(people)
    assert (world.hs.count(path="memberships"), world.hs.count(path="batch/read")) == (4, 10)

    world.clear_logs()
    world.hs.clear_log()
    again = await world.run(config)
    assert again.ok and not again.changed and world.mutating() == 0
    # the source is read once per pass, whatever the number of providers: 1 list read + 4 pages + 10 batch reads
    assert world.hs.count() == 15


async def test_an_error_mid_pagination_leaves_every_provider_untouched(world: CrmWorld) -> None:
    people = emails(1000)
    list_id = world.seed("Customers", people)
    config = world.config([], sources=[world.hubspot([{"name": "Customers", "list_id": list_id}])])
    assert (await world.run(config)).ok

    # HubSpot now answers differently (half the list gone, newcomers) and fails on the 3rd membership page
    with world.hs.lock:
        members = sorted(world.hs.lists[int(list_id)]["members"])
    world.hs.remove_from_list(list_id, [str(i) for i in members[:500]])
    world.people(emails(10, "new"))
    world.hs.add_to_list(list_id, world.hs.add_contacts(emails(10, "new")))
    world.clear_logs()
    world.hs.clear_log()
    world.hs.inject(Fault(status=502, path="memberships", skip=2, times=0))

    report = await world.run(config)
    assert not report.ok and report.pairs == ()
    (error,) = report.errors
    assert error.startswith(f"source hubspot: list {list_id} (group 'Customers'): HTTP 502")
    assert world.mutating() == 0
    assert world.c8.count() == world.cr.count() == 0  # the group is not even read at the providers
    assert world.hs.count(path="memberships") == 2 + 3
    (c8_id,) = world.c8.groups
    assert world.c8.group_emails(c8_id) == set(people)

    store = world.store(config)
    try:
        (run,) = store.runs(limit=1)
        assert run.outcome == "failure" and run.errors == (error,)
    finally:
        store.close()


def test_cli_run_exits_1_naming_the_source_and_sends_no_mutating_request(tmp_path: Path) -> None:
    world = CrmWorld(tmp_path)
    people = emails(600)
    list_id = world.seed("Customers", people)
    inline = ["inline@example.com"]
    world.people(inline)
    world.hs.inject(Fault(status=503, path="memberships", skip=2, times=0))
    with ServerThread(world.app) as server:
        path = world.write_config(
            [{"name": "Inline", "members": inline, "targets": ["c8"]}],
            providers=provider_entries(server.url),
            sources=[world.hubspot([{"name": "Customers", "list_id": list_id}], server=server.url)],
        )
        result = syncd("run", "--config", str(path), "-o", "json")
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    (error,) = out["errors"]
    assert error.startswith(f"source hubspot: list {list_id} (group 'Customers'): HTTP 503")
    assert [(p["group"], p["provider"], p["status"]) for p in out["pairs"]] == [("Inline", "c8", "applied")]
    # the failing source's group got nothing; the inline group went ahead
    assert world.cr.count() == 0
    assert all("Customers" not in r.body.decode() for r in world.c8.requests if r.mutating)
    assert "source hubspot" in result.stderr  # logged too
    assert DEFAULT_TOKEN not in result.stdout + result.stderr


def test_cli_run_on_a_broken_source_alone_sends_nothing_to_any_provider(tmp_path: Path) -> None:
    world = CrmWorld(tmp_path)
    list_id = world.seed("Customers", emails(600))
    world.hs.inject(Fault(status=500, path="memberships", skip=2, times=0))
    with ServerThread(world.app) as server:
        path = world.write_config(
            [],
            providers=provider_entries(server.url),
            sources=[world.hubspot([{"name": "Customers", "list_id": list_id}], server=server.url)],
        )
        result = syncd("run", "--config", str(path))
    assert result.returncode == 1
    assert f"error     source hubspot: list {list_id} (group 'Customers'): HTTP 500" in result.stdout
    assert world.c8.count() == world.cr.count() == 0


# --------------------------------------------------------------------------------- implausibly empty


async def test_a_list_that_comes_back_empty_after_having_members_is_left_untouched(world: CrmWorld) -> None:
    people = emails(30)
    list_id = world.seed("Customers", people)
    source = world.hubspot([{"name": "Customers", "list_id": list_id}])
    config = world.config([], sources=[source])
    assert (await world.run(config)).ok

    with world.hs.lock:
        everyone = [str(i) for i in world.hs.lists[int(list_id)]["members"]]
    world.hs.remove_from_list(list_id, everyone)
    assert world.hs.list_emails(list_id) == set()
    world.clear_logs()
    report = await world.run(config)
    assert report.pairs == () and world.mutating() == 0
    assert report.errors == (
        "source hubspot: group 'Customers' came back empty although it had 30 members on the last pass: left "
        "untouched (a CRM answering empty is more often broken than right; set allow_empty: true on the source "
        "if the group really is empty now)",
    )

    # A dry run does not count as "the last pass", and does not reset the memory either.
    assert (await world.run(config, dry_run=True)).errors == report.errors

    # allow_empty lets the empty group through to planning, where the removal guard still holds it back
    config = world.config([], sources=[{**source, "allow_empty": True}])
    report = await world.run(config)
    assert not report.errors and world.mutating() == 0
    assert {p.status for p in report.pairs} == {PairStatus.BLOCKED}
    assert all("would remove all 30 members" in (p.guard or "") for p in report.pairs)


async def test_a_group_that_was_always_empty_is_no_error(world: CrmWorld) -> None:
    list_id = world.hs.add_list("Empty", [])
    config = world.config([], sources=[world.hubspot([{"name": "Empty", "list_id": list_id, "targets": ["cr"]}])])
    for _ in range(2):
        report = await world.run(config)
        assert report.ok and [p.desired for p in report.pairs] == [0]


# -------------------------------------------------------------------------------- conflicts at run time


async def test_a_group_also_named_by_a_query_is_applied_from_neither(world: CrmWorld, tmp_path: Path) -> None:
    db = sqlite_db(tmp_path / "crm.db", [("Inline", "x@example.com"), ("Segment", "y@example.com")])
    world.people(["inline@example.com", "x@example.com", "y@example.com"])
    config = world.config(
        [{"name": "Inline", "members": ["inline@example.com"]}],
        sources=[{"type": "sql", "url": f"sqlite:///{db}", "query": QUERY, "name": "crm"}],
    )
    report = await world.run(config)
    assert report.errors == (
        "group 'Inline' is defined by more than one source (yaml:syncd.yaml, crm): neither definition is applied "
        "this pass; give each group one source",
    )
    assert {p.group for p in report.pairs} == {"Segment"}  # the query's other group goes ahead
    assert all("Inline" not in r.body.decode() for r in world.c8.requests + world.cr.requests)


# ------------------------------------------------------------------------------------------------- SQL

QUERY = 'SELECT segment AS "group", email FROM members ORDER BY id'

# One row per (group, member); the same groups written as inline YAML below.
ROWS: list[tuple[Any, ...]] = [
    # segment, email, first_name, last_name, line1, line2, city, postcode, country
    ("Sales", "alice@example.com", "Alice", "Moreau", "1 Main St", None, "Leeds", "LS1 1AA", "GB"),
    ("Sales", "bob@example.com", None, None, None, None, None, None, None),
    ("Sales", "ALICE@example.com", "Again", None, None, None, None, None, None),  # duplicate
    ("Sales", "not-an-email", None, None, None, None, None, None, None),  # invalid
    ("Newsletter DE", "erin@example.de", "Erin", "Vogel", "Hauptstr. 5", "Hinterhaus", "Berlin", "01067", "DE"),
    ("newsletter de", "felix@example.de", "Felix", None, None, None, None, None, None),  # same group
    ("Sales", "  carol@example.com ", "Carol", None, None, None, None, None, None),
]
FULL_QUERY = (
    'SELECT segment AS "group", email, first_name, last_name, line1, line2, city, postcode, country '
    "FROM members WHERE email LIKE '%@%' OR email = 'not-an-email' ORDER BY id"
)
YAML_GROUPS: list[dict[str, Any]] = [
    {
        "name": "Sales",
        "targets": ["c8"],
        "removal_policy": "owned",
        "members": [
            {
                "email": "alice@example.com",
                "first_name": "Alice",
                "last_name": "Moreau",
                "address": {"line1": "1 Main St", "city": "Leeds", "postcode": "LS1 1AA", "country": "GB"},
            },
            "bob@example.com",
            {"email": "ALICE@example.com", "first_name": "Again"},
            "not-an-email",
            {"email": "  carol@example.com ", "first_name": "Carol"},
        ],
    },
    {
        "name": "Newsletter DE",
        "targets": ["c8"],
        "removal_policy": "owned",
        "members": [
            {
                "email": "erin@example.de",
                "first_name": "Erin",
                "last_name": "Vogel",
                "address": {
                    "line1": "Hauptstr. 5",
                    "line2": "Hinterhaus",
                    "city": "Berlin",
                    "postcode": "01067",
                    "country": "DE",
                },
            },
            {"email": "felix@example.de", "first_name": "Felix"},
        ],
    },
]

CREATE = (
    "CREATE TABLE members (id INTEGER PRIMARY KEY, segment TEXT, email TEXT, first_name TEXT, last_name TEXT, "
    "line1 TEXT, line2 TEXT, city TEXT, postcode TEXT, country TEXT)"
)


def sqlite_db(path: Path, rows: Sequence[tuple[Any, ...]]) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute(CREATE)
        padded = [tuple(r) + (None,) * (9 - len(r)) for r in rows]
        conn.executemany(
            "INSERT INTO members (segment, email, first_name, last_name, line1, line2, city, postcode, country) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            padded,
        )
    return path


def _pg_url() -> sa.URL:
    assert PG_URL
    url = make_url(PG_URL)
    return url.set(drivername="postgresql+psycopg") if url.drivername == "postgresql" else url


@pytest.fixture(params=["sqlite", "postgresql"])
def crm_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A factory: rows -> SQLAlchemy URL of a database holding them in a `members` table."""
    if request.param == "sqlite":
        yield lambda rows: f"sqlite:///{sqlite_db(tmp_path / f'crm-{uuid.uuid4().hex[:6]}.db', rows)}"
        return
    if not PG_URL:
        if os.environ.get("SYNCD_REQUIRE_POSTGRES"):  # CI sets this: a skipped PostgreSQL test would hide a gap
            pytest.fail("SYNCD_REQUIRE_POSTGRES is set but SYNCD_TEST_POSTGRES_URL is not")
        pytest.skip("set SYNCD_TEST_POSTGRES_URL=postgresql+psycopg://… to run the SQL source tests on PostgreSQL")
    admin = sa.create_engine(_pg_url())
    schemas: list[str] = []

    def make(rows: Sequence[tuple[Any, ...]]) -> str:
        schema = f"syncd_crm_{uuid.uuid4().hex[:12]}"
        schemas.append(schema)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            conn.exec_driver_sql(
                CREATE.replace("members", f'"{schema}".members').replace("INTEGER PRIMARY KEY", "SERIAL PRIMARY KEY")
            )
            for row in rows:
                padded = tuple(row) + (None,) * (9 - len(row))
                conn.execute(
                    sa.text(
                        f'INSERT INTO "{schema}".members (segment, email, first_name, last_name, line1, line2, city, '
                        "postcode, country) VALUES (:a, :b, :c, :d, :e, :f, :g, :h, :i)"
                    ),
                    dict(zip("abcdefghi", padded, strict=True)),
                )
        url = _pg_url().update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    try:
        yield make
    finally:
        with admin.begin() as conn:
            for schema in schemas:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def canonical(groups: Sequence[DesiredGroup]) -> dict[str, Any]:
    """What must be equal whatever the source: members and rejects order-insensitively, targets, policies."""
    return {
        g.name: (
            sorted(g.members, key=lambda m: m.key),
            sorted((r.email, r.reason, str(r.code)) for r in g.rejected),
            g.targets,
            g.removal_policy,
            g.max_removals,
            g.max_removal_ratio,
        )
        for g in groups
    }


async def test_sql_yields_the_same_desired_groups_as_the_equivalent_yaml(world: CrmWorld, crm_db: Any) -> None:
    url = crm_db(ROWS)
    sql = {"type": "sql", "url": url, "query": FULL_QUERY, "targets": ["c8"], "removal_policy": "owned"}
    config = world.config(YAML_GROUPS, sources=[sql])
    yaml_source, sql_source = build_sources(config)
    assert isinstance(yaml_source, YamlSource) and isinstance(sql_source, SqlSource)
    from_yaml, from_sql = await yaml_source.read(), await sql_source.read()
    assert [g.name for g in from_sql] == ["Sales", "Newsletter DE"]  # first spelling, first-seen order
    assert canonical(from_sql) == canonical(from_yaml)
    sales = canonical(from_sql)["Sales"]
    assert [m.email for m in sales[0]] == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert [r[2] for r in sales[1]] == ["duplicate", "invalid_email"]
    assert all(g.source == "sql" for g in from_sql)


async def test_sql_groups_are_synced_end_to_end(world: CrmWorld, crm_db: Any) -> None:
    people = emails(1200)
    url = crm_db([("Big", e) for e in people] + [("Small", e) for e in people[:3]])
    world.people(people)
    config = world.config([], sources=[{"type": "sql", "url": url, "query": QUERY, "targets": ["c8", "cr"]}])
    report = await world.run(config)
    assert report.ok, report.errors
    assert {(p.group, p.provider, p.add) for p in report.pairs} == {
        ("Big", "c8", 1200),
        ("Big", "cr", 1200),
        ("Small", "c8", 3),
        ("Small", "cr", 3),
    }
    world.clear_logs()
    assert not (await world.run(config)).changed and world.mutating() == 0


async def test_a_fixed_group_query_and_its_empty_guard(world: CrmWorld, crm_db: Any) -> None:
    world.people(["a@example.com", "b@example.com"])
    url = crm_db([("x", "a@example.com"), ("x", "b@example.com")])
    source = {"type": "sql", "url": url, "query": "SELECT email FROM members", "group": "Customers"}
    config = world.config([], sources=[source])
    report = await world.run(config)
    assert report.ok and {p.desired for p in report.pairs} == {2}

    empty = {**source, "query": "SELECT email FROM members WHERE email LIKE '%@nowhere.example'"}
    world.clear_logs()
    report = await world.run(world.config([], sources=[empty]))
    assert report.pairs == () and world.mutating() == 0
    (error,) = report.errors
    assert error.startswith("source sql: group 'Customers' came back empty although it had 2 members")


async def test_sql_password_never_in_errors_logs_or_repr(world: CrmWorld, caplog: pytest.LogCaptureFixture) -> None:
    password = "pw-SECRET-4711"
    url = f"postgresql://reader:{password}@127.0.0.1:1/crm"  # nothing listens on port 1
    config = world.config([], sources=[{"type": "sql", "url": url, "query": "SELECT email FROM m", "group": "G"}])
    (source,) = build_sources(config)[1:]
    assert password not in repr(source) and password not in repr(config)
    report = await world.run(config)
    (error,) = report.errors
    assert error.startswith("source sql: database postgresql+psycopg://reader:***@127.0.0.1:1/crm: the query failed")
    assert password not in error and password not in caplog.text


@pytest.mark.parametrize(
    ("rows", "query", "extra", "message"),
    [
        ([], QUERY, {}, "the query returned no rows: every group it names is left untouched"),
        ([("G", "a@example.com")], "SELECT email FROM members", {}, "the query returns no `group` column"),
        ([("G", "a@example.com")], 'SELECT segment AS "group" FROM members', {}, "no `email` column"),
        (
            [("G", "a@example.com")],
            "SELECT segment AS grp, email FROM members",
            {},
            "a column 'grp' syncd does not know; expected: group, email, first_name",
        ),
        (
            [("G", "a@example.com")],
            'SELECT segment AS "group", email FROM members',
            {"group": "Fixed"},
            "this source sets a fixed `group`",
        ),
        ([("G", "a@example.com"), (None, "b@example.com")], QUERY, {}, "row 2 has no group"),
        ([("G", "a@example.com")], "SELECT * FROM nowhere", {}, "the query failed"),
    ],
)
async def test_query_shape_errors_fail_the_source(
    crm_db: Any, tmp_path: Path, rows: list[tuple[Any, ...]], query: str, extra: dict[str, Any], message: str
) -> None:
    world = CrmWorld(tmp_path)
    config = world.config([], sources=[{"type": "sql", "url": crm_db(rows), "query": query, **extra}])
    (source,) = build_sources(config)[1:]
    with pytest.raises(SourceError) as info:
        await source.read()
    assert message in str(info.value)


async def test_no_rows_with_allow_empty_yields_no_groups(crm_db: Any, tmp_path: Path) -> None:
    config = CrmWorld(tmp_path).config(
        [], sources=[{"type": "sql", "url": crm_db([]), "query": QUERY, "allow_empty": True}]
    )
    (source,) = build_sources(config)[1:]
    assert await source.read() == []


async def test_rows_without_email_are_rejects(crm_db: Any, tmp_path: Path) -> None:
    config = CrmWorld(tmp_path).config(
        [], sources=[{"type": "sql", "url": crm_db([("G", "a@example.com"), ("G", None)]), "query": QUERY}]
    )
    (source,) = build_sources(config)[1:]
    (group,) = await source.read()
    assert [m.email for m in group.members] == ["a@example.com"]
    assert [(r.email, r.reason) for r in group.rejected] == [("", "row 2 of the query has no email")]


async def test_the_query_runs_read_only(crm_db: Any, tmp_path: Path) -> None:
    url = crm_db([("G", "a@example.com")])
    writes = 'DELETE FROM members RETURNING segment AS "group", email'
    config = CrmWorld(tmp_path).config([], sources=[{"type": "sql", "url": url, "query": writes}])
    (source,) = build_sources(config)[1:]
    with pytest.raises(SourceError, match="the query failed"):
        await source.read()
    reread = CrmWorld(tmp_path).config([], sources=[{"type": "sql", "url": url, "query": QUERY}])
    (group,) = await build_sources(reread)[1].read()
    assert [m.email for m in group.members] == ["a@example.com"]  # nothing was deleted


async def test_a_missing_sqlite_file_is_an_error_not_an_empty_database(tmp_path: Path) -> None:
    config = CrmWorld(tmp_path).config(
        [], sources=[{"type": "sql", "url": f"sqlite:///{tmp_path}/nope.db", "query": QUERY}]
    )
    with pytest.raises(SourceError, match="the file does not exist"):
        await build_sources(config)[1].read()
    assert not (tmp_path / "nope.db").exists()


SLOW_SQLITE = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT 'G' AS \"group\", email "
    "FROM members, n WHERE i > 1000000000000 LIMIT 1"
)
SLOW_POSTGRES = "SELECT 'G' AS \"group\", email FROM members, pg_sleep(30)"


async def test_a_slow_query_times_out_is_cancelled_and_changes_nothing(crm_db: Any, world: CrmWorld) -> None:
    url = crm_db([("G", "a@example.com")])
    slow = SLOW_SQLITE if url.startswith("sqlite") else SLOW_POSTGRES
    config = world.config([], sources=[{"type": "sql", "url": url, "query": slow, "timeout": 0.5}])
    started = time.monotonic()
    report = await world.run(config)
    assert time.monotonic() - started < 5
    assert report.pairs == () and world.mutating() == 0
    assert report.errors == ("source sql: the query did not finish within 0.5s (timeout): cancelled, nothing changes",)
    # the query was cancelled in the database: its worker thread ends instead of running on
    for worker in [t for t in threading.enumerate() if t.name == "syncd-source-sql"]:
        await asyncio.to_thread(worker.join, 10)
        assert not worker.is_alive()


class _Gate:
    """A source whose read finishes only once every gate has started reading: sequential reads would hang."""

    def __init__(self, name: str, started: list[str], everyone: int, all_in: asyncio.Event) -> None:
        self.name, self.started, self.everyone, self.all_in = name, started, everyone, all_in

    async def read(self) -> list[DesiredGroup]:
        self.started.append(self.name)
        if len(self.started) == self.everyone:
            self.all_in.set()
        await self.all_in.wait()
        return []


async def test_sources_are_read_concurrently() -> None:
    started: list[str] = []
    all_in = asyncio.Event()
    gates = [_Gate(f"g{i}", started, 3, all_in) for i in range(3)]
    read = await asyncio.wait_for(read_sources(gates), timeout=5)
    assert sorted(started) == ["g0", "g1", "g2"] and read.errors == []


async def test_a_crashing_source_fails_closed_alone(world: CrmWorld) -> None:
    class Broken:
        name = "broken"

        async def read(self) -> list[DesiredGroup]:
            raise KeyError("bug")

    config = world.config([{"name": "Inline", "members": ["a@example.com"], "targets": ["cr"]}])
    read = await read_sources([*build_sources(config), Broken()])
    assert [g.name for g in read.groups] == ["Inline"]
    assert read.errors == ["source broken: internal error: KeyError: 'bug'"]


async def test_a_pass_over_chosen_groups_reads_no_source_that_cannot_yield_them(
    world: CrmWorld, tmp_path: Path
) -> None:
    list_id = world.seed("Customers", emails(5))
    world.hs.inject(Fault(status=503, path="memberships", times=0))  # HubSpot is down
    world.people(["inline@example.com"])
    segment = {"type": "sql", "url": f"sqlite:///{tmp_path}/missing.db", "query": "SELECT email FROM t", "group": "Seg"}
    config = world.config(
        [{"name": "Inline", "members": ["inline@example.com"], "targets": ["c8"]}],
        sources=[world.hubspot([{"name": "Customers", "list_id": list_id}]), segment],
    )
    chosen = await world.run(config, groups=frozenset({"INLINE"}))
    assert chosen.ok and not chosen.errors, chosen.errors
    assert [(p.group, p.status) for p in chosen.pairs] == [("Inline", PairStatus.APPLIED)]
    assert world.hs.count() == 0  # nothing asked of HubSpot for a group nobody chose

    hubspot_only = await world.run(config, groups=frozenset({"customers"}))
    assert len(hubspot_only.errors) == 1 and "source hubspot" in hubspot_only.errors[0] and not hubspot_only.pairs
    everything = await world.run(config)
    assert len(everything.errors) == 2  # HubSpot and the missing SQLite file


# ---------------------------------------------------------------------------------- the state memory


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state.db"
        return
    if not PG_URL:
        if os.environ.get("SYNCD_REQUIRE_POSTGRES"):
            pytest.fail("SYNCD_REQUIRE_POSTGRES is set but SYNCD_TEST_POSTGRES_URL is not")
        pytest.skip("set SYNCD_TEST_POSTGRES_URL to run the state tests on PostgreSQL")
    schema = f"syncd_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(_pg_url())
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield _pg_url().update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


async def test_last_desired_remembers_real_passes_only(state_url: str, tmp_path: Path) -> None:
    world = CrmWorld(tmp_path)
    world.people(emails(5))
    config = world.config(
        [{"name": "A", "members": emails(5)}, {"name": "B", "members": emails(2), "targets": ["cr"]}],
        state={"url": state_url},
    )
    store = Store.open(config.state.url)
    try:
        transport = httpx.ASGITransport(app=world.app)
        reconciler = Reconciler(config, store, world.metrics, transport=transport)
        await reconciler.run(PassOptions(dry_run=True))
        assert store.last_desired(["A", "B", "C"]) == {}
        await reconciler.run(PassOptions())
        assert store.last_desired(["A", "B", "C"]) == {"A": 5, "B": 2}
        smaller = world.config([{"name": "A", "members": emails(1)}], state={"url": state_url})
        await Reconciler(smaller, store, world.metrics, transport=transport).run(PassOptions(dry_run=True))
        assert store.last_desired(["A"]) == {"A": 5}
        await Reconciler(smaller, store, world.metrics, transport=transport).run(PassOptions(allow_mass_removal=True))
        assert store.last_desired(["A", "B"]) == {"A": 1, "B": 2}
        assert store.last_desired([]) == {}
    finally:
        store.close()


def test_build_sources_follows_the_config(tmp_path: Path) -> None:
    world = CrmWorld(tmp_path)
    config: Config = world.config(
        [{"name": "Inline"}],
        sources=[
            world.hubspot([{"name": "H", "list_id": 1}]),
            {"type": "sql", "url": "sqlite:///x.db", "query": QUERY, "name": "crm"},
            {"type": "sql", "url": "sqlite:///y.db", "query": QUERY, "allow_empty": True},
        ],
    )
    sources = build_sources(config)
    assert [s.name for s in sources] == ["yaml:syncd.yaml", "hubspot", "crm", "sql"]
    assert [getattr(s, "guard_empty", False) for s in sources] == [False, True, True, False]


async def test_sql_check_runs_the_query_and_says_what_it_yields(crm_db: Any, tmp_path: Path) -> None:
    url = crm_db([("A", "a@example.com"), ("B", "b@example.com"), ("B", "c@example.com")])
    good, bad = build_sources(
        CrmWorld(tmp_path).config(
            [],
            sources=[
                {"type": "sql", "url": url, "query": QUERY, "name": "good"},
                {"type": "sql", "url": url, "query": "SELECT nope FROM members", "name": "bad"},
            ],
        )
    )[1:]
    assert isinstance(good, SqlSource) and isinstance(bad, SqlSource)
    assert [(c.ok, c.text) for c in await good.check()] == [(True, "2 groups, 3 members")]
    ((ok, text),) = [(c.ok, c.text) for c in await bad.check()]
    assert not ok and "the query failed" in text


async def test_sql_rows_are_streamed_in_batches_and_repeated_names_are_kept_once(crm_db: Any, tmp_path: Path) -> None:
    rows = [("Big", f"p{i}@example.com", "Anna", f"Name{i % 2}", None, None, "Berlin") for i in range(10)]
    url = crm_db([*rows, ("Big", "  ", "No", "Email")])
    query = 'SELECT segment AS "group", email, first_name, last_name, city FROM members ORDER BY id'
    (source,) = build_sources(CrmWorld(tmp_path).config([], sources=[{"type": "sql", "url": url, "query": query}]))[1:]
    assert isinstance(source, SqlSource)
    source.fetch_rows = 4  # 11 rows: 3 fetches, the contacts made as they come
    (group,) = await source.read()
    assert [m.email for m in group.members] == [f"p{i}@example.com" for i in range(10)]
    assert [r.reason for r in group.rejected] == ["row 11 of the query has no email"]
    first = group.members[0]
    assert first.address is not None and first.address.city == "Berlin"
    assert all(m.first_name is first.first_name for m in group.members)  # one string for a name said 10 times
    assert {id(m.last_name) for m in group.members} == {id(group.members[0].last_name), id(group.members[1].last_name)}


# ------------------------------------------------------------------------------------ a new source type
# Everything a source type is, defined here and nowhere else: its settings, its factory, its `read`.


class ExampleSourceSettings(SourceSettings):
    """A source that exists only in this test: one group whose members are written in the entry."""

    type: Literal["example"] = Field(description="The test's source.")
    group: str = Field(description="The group it defines.")
    members: list[str] = Field(default_factory=list, description="Its members' emails.")
    targets: list[TargetSpec] | None = Field(default=None, description="Providers the group is synced to.")

    def declared_groups(self) -> Iterator[DeclaredGroup]:
        yield DeclaredGroup(("group",), self.group, self)


@dataclass
class ExampleSource:
    settings: ExampleSourceSettings
    config: Config
    name: str

    async def read(self) -> list[DesiredGroup]:
        members, rejected = admit(Contact(email=email) for email in self.settings.members)
        targets = tuple(Target(t.provider, t.group_id) for t in self.config.targets_of(self.settings))
        group = DesiredGroup(self.settings.group, members, targets, source=self.name, rejected=rejected)
        return [group]

    async def check(self) -> list[CheckLine]:
        return []


def build_example(settings: ExampleSourceSettings, config: Config, ctx: SourceContext) -> ExampleSource:
    return ExampleSource(settings, config, ctx.name)


async def test_a_new_source_type_is_its_module_and_one_registry_line(
    world: CrmWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = emails(3)
    world.people(people)
    entry = {"type": "example", "name": "ex", "group": "Example", "members": people, "targets": ["c8"]}
    inline = [{"name": "Inline", "members": ["inline@example.com"], "targets": ["cr"]}]

    with monkeypatch.context() as registered:
        registered.setitem(SOURCES, "example", SourceSpec("example", ExampleSourceSettings, build_example))

        config = world.config(inline, sources=[entry])
        (settings,) = config.sources
        assert isinstance(settings, ExampleSourceSettings) and settings.members == people
        assert config.source_names() == ["ex"] and config.group_names() == ["Inline", "Example"]
        assert config.group_targets()[1] == ("Example", [TargetSpec(provider="c8")])

        # The config's own checks apply to it, with file:line:key messages.
        _, said = _problems(world, [], {**entry, "memebrs": []})
        assert said == ["sources[0].memebrs: unknown key (did you mean 'members'?)"]
        path, said = _problems(world, [{"name": "example"}], {**entry, "targets": ["nope"]})
        assert said == [
            "sources[0].group: group name 'Example' is already used by groups[0] "
            f"({path}:{_line_of(path, '- name: example')}): a group is defined in one place only (group names "
            "are compared case-insensitively)",
            "sources[0].targets[0]: no provider named 'nope' (configured: c8, cr)",
        ]

        # A pass reads it like any other source.
        report = await world.run(config)
        assert report.ok, report.errors
        applied = pair(report, "Example", "c8")
        assert (applied.status, applied.add) == (PairStatus.APPLIED, 3)
        assert not [p for p in report.pairs if p.group == "Example" and p.provider == "cr"]
        example_id = next(g for g, group in world.c8.groups.items() if group["name"] == "Example")
        assert world.c8.group_emails(example_id) == set(people)

    # Unregistered again, the type is unknown: the union is assembled from the registry at each load.
    with pytest.raises(ConfigError) as info:
        world.config(inline, sources=[entry])
    assert str(info.value).endswith("sources[0].type: unknown source type 'example' (expected one of: hubspot, sql)")


def _problems(world: World, groups: list[dict[str, Any]], source: dict[str, Any]) -> tuple[Path, list[str]]:
    """The config file with these inline groups and this one source, and what loading it says (each line
    without its leading file:line)."""
    path = world.write_config(groups, sources=[source])
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return path, [line.split(": ", 1)[1] for line in str(info.value).splitlines()]


def _line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), start=1) if text in line)
