"""Group keys: `key` (a group's identity across renames), `protected`, `exclude` and `targets: []`.

Whole passes against the Communic8 and CleverReach sandboxes with a real state DB file (SQLite, and PostgreSQL
when SYNCD_TEST_POSTGRES_URL is set), SQL sources on real SQLite files, and the config checks with their
file:line: key. The exclusion step itself is a pure function, tested with a table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.config import load_config
from syncd.errors import ConfigError
from syncd.model import DesiredGroup, Member, PairStatus, RejectCode, Target
from syncd.sources.base import apply_exclusions
from syncd.state import Store
from tests.e2e import World
from tests.test_status import state_db

A, B, C, CEO = "a@example.com", "b@example.com", "c@example.com", "ceo@example.com"


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = World(tmp_path)
    world.people([A, B, C, CEO])  # Communic8 cannot create recipients
    return world


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    with state_db(request.param, tmp_path) as url:
        yield {"url": url}


def pairs(report: Any, group: str) -> dict[str, Any]:
    return {p.provider: p for p in report.pairs if p.group == group}


def suppression_db(tmp_path: Path, emails: list[str]) -> Path:
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE suppress (email TEXT)")
        conn.executemany("INSERT INTO suppress VALUES (?)", [(e,) for e in emails])
    return path


# ----------------------------------------------------------------------------------------------- key


async def test_a_rename_that_keeps_the_key_keeps_the_provider_groups(world: World, state: dict[str, str]) -> None:
    first = world.config([{"name": "US Sales", "key": "us-sales", "members": [A, B]}], state=state)
    report = await world.run(first)
    assert report.ok and world.mutating() > 0
    c8_groups, cr_groups = dict(world.c8.groups), dict(world.cr.groups)
    assert len(c8_groups) == len(cr_groups) == 1

    world.clear_logs()
    renamed = world.config([{"name": "Sales (US)", "key": "us-sales", "members": [A, B]}], state=state)
    second = await world.run(renamed)
    assert world.mutating() == 0  # nothing created, renamed, added or removed
    assert second.ok and set(pairs(second, "Sales (US)")) == {"c8", "cr"}  # reports show the name
    assert all(p.status is PairStatus.IN_SYNC and p.remove == 0 for p in second.pairs)
    assert world.c8.groups.keys() == c8_groups.keys() and world.cr.groups.keys() == cr_groups.keys()
    with Store.open(state["url"]) as store:  # the state is filed under the key
        for provider in ("c8", "cr"):
            binding = store.binding("us-sales", provider)
            assert binding is not None and binding.group == "us-sales"
            assert store.owned("us-sales", provider) == {A, B}
        assert {row.group for row in store.history()} == {"us-sales"}

    # a member the renamed group drops is removed from the same provider groups (mirror: syncd created them)
    third = await world.run(world.config([{"name": "Sales (US)", "key": "us-sales", "members": [A]}], state=state))
    assert {p: r.remove for p, r in pairs(third, "Sales (US)").items()} == {"c8": 1, "cr": 1}
    (c8_id,) = world.c8.groups
    assert world.c8.group_emails(c8_id) == {A}


async def test_adding_a_key_to_an_existing_group_keeps_its_binding(world: World, state: dict[str, str]) -> None:
    await world.run(world.config([{"name": "Team", "members": [A, B]}], state=state))
    c8_groups = set(world.c8.groups)
    world.clear_logs()

    keyed = world.config([{"name": "Team", "key": "team", "members": [A, B]}], state=state)
    dry = await world.run(keyed, dry_run=True)  # a dry run finds the binding too, and moves nothing
    assert all(p.status is PairStatus.IN_SYNC for p in dry.pairs)
    with Store.open(state["url"]) as store:
        assert store.binding("Team", "c8") is not None
    report = await world.run(keyed)
    assert world.mutating() == 0 and all(p.status is PairStatus.IN_SYNC for p in report.pairs)
    with Store.open(state["url"]) as store:
        binding = store.binding("team", "c8")
        assert binding is not None and binding.group == "team"  # carried over to the key
        assert store.owned("team", "c8") == {A, B}

    # now the group can be renamed: still the same provider group, nothing sent
    renamed = await world.run(world.config([{"name": "The Team", "key": "team", "members": [A, B]}], state=state))
    assert world.mutating() == 0 and renamed.ok
    assert set(world.c8.groups) == c8_groups and len(world.cr.groups) == 1


async def test_a_key_that_is_another_groups_old_name_does_not_take_its_binding(world: World) -> None:
    await world.run(world.config([{"name": "Old", "members": [A]}]))
    (old_c8,) = world.c8.groups
    # "Old" is renamed keeping its identity (key Old); a new group takes the name "Old" with a key of its own
    groups = [{"name": "Renamed", "key": "Old", "members": [A]}, {"name": "Old", "key": "fresh", "members": [B]}]
    report = await world.run(world.config(groups))
    assert pairs(report, "Renamed")["c8"].status is PairStatus.IN_SYNC
    with Store.open(world.config(groups).state.url) as store:  # the binding stayed with the key "Old"
        binding = store.binding("Old", "c8")
        assert binding is not None and binding.group == "Old" and binding.remote_id == old_c8


# ----------------------------------------------------------------------------------------- protected


async def test_a_protected_member_the_source_drops_is_not_removed(world: World) -> None:
    await world.run(world.config([{"name": "Board", "members": [A, CEO]}]))
    world.clear_logs()
    config = world.config([{"name": "Board", "members": [B], "protected": ["CEO@Example.com"]}])
    report = await world.run(config)
    assert report.ok
    for provider, result in pairs(report, "Board").items():
        assert (result.add, result.remove) == (1, 1), provider  # b in, a out; the CEO stays
    (c8_id,) = world.c8.groups
    assert world.c8.group_emails(c8_id) == {B, CEO}
    (cr_id,) = world.cr.groups
    assert world.cr.active_emails(cr_id) == {B, CEO}
    with Store.open(config.state.url) as store:
        assert not [r for r in store.history(member=CEO) if r.op == "remove"]


# ------------------------------------------------------------------------------------------- exclude


async def test_exclude_subtracts_a_group_of_another_source(world: World, tmp_path: Path) -> None:
    db = suppression_db(tmp_path, ["B@example.com"])
    sql = {
        "type": "sql",
        "url": f"sqlite:///{db}",
        "query": "SELECT email FROM suppress",
        "group": "Do Not Mail",
        "key": "dnm",
        "targets": [],
    }
    config = world.config([{"name": "News", "members": [A, B, C], "exclude": ["dnm"]}], sources=[sql])
    report = await world.run(config)
    assert report.ok
    assert {p.group for p in report.pairs} == {"News"}  # targets: [] syncs the suppression list nowhere
    assert {p: r.desired for p, r in pairs(report, "News").items()} == {"c8": 2, "cr": 2}
    assert len(world.c8.groups) == 1
    (c8_id,) = world.c8.groups
    assert world.c8.group_emails(c8_id) == {A, C}


async def test_an_exclusion_list_that_fails_to_load_fails_the_excluding_group_closed(
    world: World, tmp_path: Path
) -> None:
    await world.run(world.config([{"name": "News", "members": [A, B]}, {"name": "Other", "members": [A]}]))
    world.clear_logs()
    missing = {
        "type": "sql",
        "url": f"sqlite:///{tmp_path}/gone.db",  # the file does not exist: the source fails
        "query": "SELECT email FROM suppress",
        "group": "Do Not Mail",
        "targets": [],
    }
    groups = [{"name": "News", "members": [C], "exclude": ["Do Not Mail"]}, {"name": "Other", "members": [A, B]}]
    report = await world.run(world.config(groups, sources=[missing]))
    news = pairs(report, "News")
    assert set(news) == {"c8", "cr"}
    for result in news.values():
        assert result.status is PairStatus.FAILED
        assert result.error is not None and "'Do Not Mail'" in result.error
    assert report.errors and "gone.db" in report.errors[0]
    # nothing was sent for News; Other went on
    assert world.c8.count(mutating=True) == 1 and world.cr.count(mutating=True) == 1
    assert {p.status for p in pairs(report, "Other").values()} == {PairStatus.APPLIED}
    assert not report.ok


@pytest.mark.parametrize(
    ("groups", "closed", "members", "excluded"),
    [
        # by name and by key, case-insensitively; the excluded group's own exclusions do not matter
        (
            [("N", "n", [A, B, C], ["dnm"]), ("Do Not Mail", "DNM", ["b@EXAMPLE.com"], [])],
            [],
            {"N": [A, C], "Do Not Mail": ["b@EXAMPLE.com"]},
            {"N": [(B, "excluded: a member of 'Do Not Mail'")], "Do Not Mail": []},
        ),
        (
            [("N", "n", [A, B], ["do not mail"]), ("Do Not Mail", "dnm", [A], ["N"])],
            [],
            {"N": [B], "Do Not Mail": []},
            {"N": [(A, "excluded: a member of 'Do Not Mail'")], "Do Not Mail": [(A, "excluded: a member of 'N'")]},
        ),
        # an excluded group that was not read: the excluding group fails closed, the others go on
        ([("N", "n", [A], ["gone"]), ("M", "m", [A], [])], ["N"], {"M": [A]}, {"M": []}),
        # a group excluding nothing is left as it is
        ([("N", "n", [A], [])], [], {"N": [A]}, {"N": []}),
    ],
)
def test_apply_exclusions(
    groups: list[tuple[str, str, list[str], list[str]]],
    closed: list[str],
    members: dict[str, list[str]],
    excluded: dict[str, list[tuple[str, str]]],
) -> None:
    desired = [
        DesiredGroup(name, tuple(Member(e) for e in emails), (Target("c8"),), key=key, exclude=tuple(exclude))
        for name, key, emails, exclude in groups
    ]
    kept, failed = apply_exclusions(desired)
    assert [g.name for g, _ in failed] == closed
    assert all("fail closed" in why and "'gone'" in why for _, why in failed)
    assert {g.name: [m.email for m in g.members] for g in kept} == members
    assert {g.name: [(r.email, r.reason) for r in g.excluded] for g in kept} == excluded
    assert all(r.code is RejectCode.EXCLUDED for g in kept for r in g.excluded)


# ------------------------------------------------------------------------------------------- targets


async def test_targets_empty_syncs_nowhere(world: World) -> None:
    config = world.config([{"name": "Nowhere", "members": [A], "targets": []}, {"name": "Everywhere", "members": [B]}])
    report = await world.run(config)
    assert report.ok and {(p.group, p.provider) for p in report.pairs} == {("Everywhere", "c8"), ("Everywhere", "cr")}
    assert len(world.c8.groups) == len(world.cr.groups) == 1
    assert any("'Nowhere'" in w for w in config.warnings())  # referenced by nobody: probably not meant
    used = world.config([{"name": "Nowhere", "members": [A], "targets": []}, {"name": "E", "exclude": ["Nowhere"]}])
    assert not used.warnings()


def test_desired_group_key_defaults_to_the_name() -> None:
    group = DesiredGroup("Sales", (), (), protected=frozenset({" CEO@Example.com"}))
    assert group.key == "Sales" and group.protected == {"ceo@example.com"}
    assert DesiredGroup("Sales", (), (), key="s").key == "s"


# -------------------------------------------------------------------------------------------- config

PROVIDER = "providers:\n  - {name: c8, type: communic8, base_url: 'https://c8.example/int/v1', token: t}\n"


def error_of(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "syncd.yaml"
    path.write_text(PROVIDER + text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        (  # two keys, in another case
            "groups:\n  - name: A\n    key: sales\n  - name: B\n    key: SALES\n",
            7,
            "groups[1].key",
            "group key 'SALES' is already used by groups[0].key ({file}:5)",
        ),
        (  # a key equal to another group's name (a group without key has its name as its key)
            "groups:\n  - name: Sales\n  - name: B\n    key: sales\n",
            6,
            "groups[1].key",
            "group key 'sales' is already used by groups[0] ({file}:4)",
        ),
        (  # across sources: a HubSpot list's key
            "groups:\n  - {name: A, key: k}\nsources:\n  - type: hubspot\n    token: t\n    groups:\n"
            "      - {name: B, list_id: 1, key: K}\n",
            9,
            "sources[0].groups[0].key",
            "group key 'K' is already used by groups[0].key ({file}:4)",
        ),
        ("groups:\n  - {name: A, exclude: [Nope]}\n", 4, "groups[0].exclude[0]", "no group named (or keyed) 'Nope'"),
        ("groups:\n  - {name: A, exclude: [a]}\n", 4, "groups[0].exclude[0]", "excludes itself"),
        (
            "groups:\n  - {name: A, exclude: [kb]}\n  - {name: B, key: kb, exclude: [A]}\n",
            4,
            "groups[0].exclude[0]",
            "exclusion cycle",
        ),
        ("groups:\n  - {name: A, protected: [nobody]}\n", 4, "groups[0].protected[0]", "not an email address"),
        (
            "sources:\n  - {type: sql, url: 'sqlite:///x.db', query: SELECT 1, key: k}\n",
            4,
            "sources[0].key",
            "fixed `group`",
        ),
    ],
)
def test_config_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int, key: str, message: str) -> None:
    err = error_of(tmp_path, text)
    file = str(tmp_path / "syncd.yaml")
    assert (err.file, err.line, err.key) == (file, line, key), str(err)
    assert message.format(file=file) in err.message, str(err)


def test_exclude_of_a_group_a_query_may_name_is_no_config_error(tmp_path: Path) -> None:
    path = tmp_path / "syncd.yaml"
    path.write_text(
        PROVIDER + "sources:\n  - {type: sql, url: 'sqlite:///x.db', query: SELECT 1}\n"
        "groups:\n  - {name: A, exclude: [From The Query]}\n"
    )
    assert load_config(path).groups[0].exclude == ["From The Query"]


async def test_a_sql_key_column_keys_the_groups_and_rows_must_agree(world: World, tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE seg ("group" TEXT, key TEXT, email TEXT)')
        conn.executemany("INSERT INTO seg VALUES (?, ?, ?)", [("VIP", "vip", A), ("VIP", "vip", B)])
    sql = {"type": "sql", "url": f"sqlite:///{path}", "query": 'SELECT "group", key, email FROM seg', "targets": ["c8"]}
    config = world.config([], sources=[sql])
    assert (await world.run(config)).ok
    with Store.open(config.state.url) as store:
        assert store.binding("vip", "c8") is not None
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO seg VALUES ('VIP', 'other', 'c@example.com')")
    report = await world.run(config)
    assert not report.ok and "every row of a group must give the same key" in report.errors[0]
