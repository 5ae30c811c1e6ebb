"""`syncd rejects` and `syncd rejects clear`: the remembered permanent rejects, listed from the state DB alone, and
forgotten so that the next pass sends those members again. Real passes against the sandboxes fill the state DB
(SQLite, and PostgreSQL when SYNCD_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import csv
import json
from io import StringIO
from pathlib import Path
from typing import Any

from syncd.state import RejectRow, Store, StoredReject
from tests.e2e import World, emails
from tests.test_status import run, served, state_only_config, state_url, syncd, write

__all__ = ["served", "state_url"]  # fixtures, shared with tests/test_status.py

OLD_REASON = 'not a recipient, said "gone"'
UNKNOWN = "no Communic8 recipient with this email (Communic8 has no API to create recipients)"


def rejects(path: Path, *args: str) -> str:
    result = syncd("rejects", "--config", str(path), *args)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


def clear(path: Path, *args: str) -> str:
    result = syncd("rejects", "clear", "--config", str(path), *args)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


def stored(state_url: str) -> list[RejectRow]:
    with Store.open(state_url) as store:
        return store.reject_rows()


def minute(row: RejectRow) -> tuple[str, str]:
    return f"{row.first_seen:%Y-%m-%d %H:%M}", f"{row.last_seen:%Y-%m-%d %H:%M}"


def c8_members(world: World, state_url: str, group: str) -> set[str]:
    with Store.open(state_url) as store:
        binding = store.binding(group, "c8")
    assert binding is not None
    return world.c8.group_emails(binding.remote_id)


def a_world_with_rejects(world: World, url: str, state_url: str) -> Path:
    """One pass that leaves three remembered rejects: zoe (no Communic8 recipient) in Team and in Other at c8, and
    black (on CleverReach's blacklist) in Team at cr. Then a reject from before they were kept per group."""
    world.people([*emails(2), "black@example.com"])
    world.cr.blacklist("black@example.com")
    path = write(
        world,
        url,
        state_url,
        [
            {"name": "Team", "members": [*emails(2), "zoe@example.com", "black@example.com"], "targets": ["c8", "cr"]},
            {"name": "Other", "members": ["zoe@example.com"], "targets": ["c8"]},
        ],
    )
    report = run(path)
    assert {p["status"] for p in report["pairs"]} == {"applied"}
    with Store.open(state_url) as store:  # group '': every group of the provider (remembered before 0002)
        store.save_rejects("c8", "", [StoredReject("old@example.com", "fp", OLD_REASON, "unknown_recipient")])
    return path


def test_rejects_as_a_table_json_and_csv(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    a_world_with_rejects(world, url, state_url)
    readonly = state_only_config(world.tmp, state_url)  # no provider credential in the environment
    rows = stored(state_url)  # oldest first; the pairs of one pass record theirs in any order
    key = {(r.provider, r.group, r.email): r for r in rows}
    assert set(key) == {
        ("c8", "Team", "zoe@example.com"),
        ("c8", "Other", "zoe@example.com"),
        ("cr", "Team", "black@example.com"),
        ("c8", "", "old@example.com"),
    }
    assert rows[-1].email == "old@example.com"  # remembered last

    lines = {
        (
            "c8",
            "Team",
            "zoe@example.com",
        ): f"c8        Team           zoe@example.com    unknown_recipient  {{}}  {{}}  {UNKNOWN}",
        (
            "c8",
            "Other",
            "zoe@example.com",
        ): f"c8        Other          zoe@example.com    unknown_recipient  {{}}  {{}}  {UNKNOWN}",
        ("cr", "Team", "black@example.com"): (
            "cr        Team           black@example.com  blacklisted        {}  {}  "
            "blacklisted: the address is on the CleverReach account's blacklist"
        ),
        ("c8", "", "old@example.com"): (
            'c8        (every group)  old@example.com    unknown_recipient  {}  {}  not a recipient, said "gone"'
        ),
    }
    assert rejects(readonly) == (
        "PROVIDER  GROUP          EMAIL              CODE               FIRST SEEN        LAST SEEN         REASON\n"
        + "".join(lines[(r.provider, r.group, r.email)].format(*minute(r)) + "\n" for r in rows)
    )

    def entry(r: RejectRow) -> dict[str, Any]:
        return {
            "provider": r.provider,
            "group": r.group,
            "email": r.email,
            "code": r.code,
            "reason": r.reason,
            "first_seen": r.first_seen.isoformat(),
            "last_seen": r.last_seen.isoformat(),
        }

    assert json.loads(rejects(readonly, "-o", "json")) == {"rejects": [entry(r) for r in rows]}
    old = key[("c8", "", "old@example.com")]
    assert entry(old) == {
        "provider": "c8",
        "group": "",
        "email": "old@example.com",
        "code": "unknown_recipient",
        "reason": 'not a recipient, said "gone"',
        "first_seen": old.first_seen.isoformat(),
        "last_seen": old.last_seen.isoformat(),
    }

    csv_lines = {
        ("c8", "Team", "zoe@example.com"): f"c8,Team,zoe@example.com,unknown_recipient,{UNKNOWN},{{}},{{}}",
        ("c8", "Other", "zoe@example.com"): f"c8,Other,zoe@example.com,unknown_recipient,{UNKNOWN},{{}},{{}}",
        ("cr", "Team", "black@example.com"): (
            "cr,Team,black@example.com,blacklisted,blacklisted: the address is on the CleverReach account's "
            "blacklist,{},{}"
        ),
        ("c8", "", "old@example.com"): 'c8,,old@example.com,unknown_recipient,"not a recipient, said ""gone""",{},{}',
    }
    as_csv = rejects(readonly, "-o", "csv")
    assert as_csv == "provider,group,email,code,reason,first_seen,last_seen\n" + "".join(
        csv_lines[(r.provider, r.group, r.email)].format(r.first_seen.isoformat(), r.last_seen.isoformat()) + "\n"
        for r in rows
    )
    assert list(csv.DictReader(StringIO(as_csv))) == [entry(r) for r in rows]

    # filters: a group's own rejects, with those remembered for every group (which hold it back too)
    only_cr = json.loads(rejects(readonly, "--provider", "cr", "-o", "json"))["rejects"]
    assert only_cr == [entry(key[("cr", "Team", "black@example.com")])]
    only_other = json.loads(rejects(readonly, "--group", "Other", "-o", "json"))["rejects"]
    assert only_other == [entry(key[("c8", "Other", "zoe@example.com")]), entry(old)]
    assert rejects(readonly, "--group", "Other", "--provider", "cr") == "no remembered rejects match\n"
    assert rejects(readonly, "--group", "Nobody", "--provider", "cr", "-o", "csv") == (
        "provider,group,email,code,reason,first_seen,last_seen\n"
    )


def test_clear_makes_the_next_pass_send_the_member_again(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    path = a_world_with_rejects(world, url, state_url)
    world.people(["zoe@example.com"])  # zoe is a Communic8 recipient now, but her source data did not change:
    run(path)
    assert "zoe@example.com" not in c8_members(world, state_url, "Team")  # the remembered reject still holds
    readonly = state_only_config(world.tmp, state_url)

    assert clear(readonly, "--group", "Team", "--provider", "c8", "--member", " ZOE@example.com") == (
        "cleared 1 remembered reject: the next pass tries those members again\n"
    )
    left = [(r.provider, r.group, r.email) for r in stored(state_url)]
    assert ("c8", "Team", "zoe@example.com") not in left and ("c8", "Other", "zoe@example.com") in left
    assert ("c8", "", "old@example.com") in left  # another member's

    world.clear_logs()
    report = run(path)
    team = next(p for p in report["pairs"] if (p["group"], p["provider"]) == ("Team", "c8"))
    assert (team["status"], team["add"]) == ("applied", 1)
    assert "zoe@example.com" in c8_members(world, state_url, "Team")
    assert "zoe@example.com" not in c8_members(world, state_url, "Other")  # still remembered there
    history = syncd(
        "history", "--config", str(readonly), "--member", "zoe@example.com", "--group", "Team", "-o", "json"
    )
    newest = json.loads(history.stdout)[0]  # the ledger says she went in
    assert (newest["provider"], newest["op"], newest["outcome"]) == ("c8", "add", "applied")

    assert clear(readonly, "--member", "nobody@example.com") == "no remembered rejects match: nothing cleared\n"
    # a group's rejects go with those remembered for every group of a provider: they hold the group back too
    assert clear(readonly, "--group", "Other") == (
        "cleared 2 remembered rejects: the next pass tries those members again\n"
    )
    assert [(r.provider, r.group, r.email) for r in stored(state_url)] == [("cr", "Team", "black@example.com")]
    assert clear(readonly, "--all") == "cleared 1 remembered reject: the next pass tries those members again\n"
    assert stored(state_url) == []


def test_options_of_rejects_before_clear_still_count(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    a_world_with_rejects(world, url, state_url)
    readonly = state_only_config(world.tmp, state_url)
    result = syncd("rejects", "--config", str(readonly), "--provider", "cr", "clear")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "cleared 1 remembered reject: the next pass tries those members again\n"
    assert {r.provider for r in stored(state_url)} == {"c8"}


def test_clear_without_a_filter_clears_every_reject_but_all_with_a_filter_is_a_mistake(
    served: tuple[World, str], state_url: str
) -> None:
    world, url = served
    a_world_with_rejects(world, url, state_url)
    readonly = state_only_config(world.tmp, state_url)
    assert clear(readonly) == "cleared 4 remembered rejects: the next pass tries those members again\n"
    assert stored(state_url) == []
    assert clear(readonly, "--all") == "no remembered rejects match: nothing cleared\n"


def test_all_and_a_filter_together_are_refused(tmp_path: Path) -> None:
    readonly = state_only_config(tmp_path, f"sqlite:///{tmp_path}/state.db")
    both = syncd("rejects", "clear", "--config", str(readonly), "--all", "--provider", "c8", "--member", "a@b.c")
    assert (both.returncode, both.stdout) == (2, "")
    assert both.stderr == "syncd rejects clear: error: --all clears every reject: leave out --provider, --member\n"
    assert list(tmp_path.iterdir()) == [readonly]


def test_without_a_state_db_nothing_is_created(tmp_path: Path) -> None:
    readonly = state_only_config(tmp_path, f"sqlite:///{tmp_path}/state.db")
    said = f"syncd: no state DB at sqlite:///{tmp_path}/state.db yet: nothing has run with this config\n"
    for args, out in [
        ((), "no remembered rejects\n"),
        (("-o", "json"), '{\n  "rejects": []\n}\n'),
        (("-o", "csv"), "provider,group,email,code,reason,first_seen,last_seen\n"),
        (("clear", "--all"), "no remembered rejects match: nothing cleared\n"),
    ]:
        result = syncd("rejects", *args, "--config", str(readonly))
        assert (result.returncode, result.stdout, result.stderr) == (0, out, said)
    assert list(tmp_path.iterdir()) == [readonly]
