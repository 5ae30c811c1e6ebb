"""`syncd explain EMAIL`: per pair, is this person on the list, and why.

End to end: `syncd` subprocesses against the Communic8 and CleverReach sandboxes on a real loopback port, the state
DB filled by real passes (SQLite, and PostgreSQL when SYNCD_TEST_POSTGRES_URL is set). Explain only reads: no
provider write, no state DB created.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e import World, emails
from tests.test_status import run, served, state_url, syncd, write

__all__ = ["served", "state_url"]  # fixtures, shared with tests/test_status.py

M0, M1 = emails(2)
ZOE = "zoe@example.com"  # no Communic8 recipient: refused there, and remembered
STRAY = "stray@example.com"
UNKNOWN = "no Communic8 recipient with this email (Communic8 has no API to create recipients)"

PAIR_KEYS = {
    "group",
    "provider",
    "verdict",
    "summary",
    "desired",
    "source",
    "source_reject",
    "excluded",
    "protected",
    "removal_policy",
    "added_by_syncd",
    "member",
    "consent",
    "refused",
    "remembered_reject",
    "quarantined",
    "last_pass",
    "ledger",
    "error",
}


def explain(path: Path, email: str, *args: str) -> str:
    result = syncd("explain", "--config", str(path), email, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def explain_json(path: Path, email: str, *args: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(explain(path, email, "-o", "json", *args))
    return answer


def by_provider(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["provider"]: p for p in answer["pairs"]}


def a_team(world: World, url: str, state_url: str) -> Path:
    """Team on c8 and cr after one real pass with m0, m1, zoe and the stray; then the stray leaves the source."""
    world.people([M0, M1, STRAY])
    first = write(world, url, state_url, [{"name": "Team", "members": [M0, M1, ZOE, STRAY], "targets": ["c8", "cr"]}])
    assert {p["status"] for p in run(first)["pairs"]} == {"applied"}
    return write(world, url, state_url, [{"name": "Team", "members": [M0, M1, ZOE], "targets": ["c8", "cr"]}])


def test_a_member_on_the_list(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    path = a_team(world, url, state_url)
    world.clear_logs()

    answer = explain_json(path, f"  {M0.upper()} ")  # trimmed, case-insensitive

    assert answer["email"] == M0
    assert answer["checked_at_provider"] is True
    assert answer["listed_in"] == [{"group": "Team", "source": "yaml:syncd.yaml"}]
    assert answer["errors"] == []
    pairs = by_provider(answer)
    assert sorted(pairs) == ["c8", "cr"]
    for pair in pairs.values():
        assert set(pair) == PAIR_KEYS  # the documented shape, no more, no less
        assert (pair["verdict"], pair["summary"], pair["desired"], pair["member"]) == (
            "on_list",
            "on the list",
            True,
            True,
        )
        assert pair["added_by_syncd"] is True
        assert pair["removal_policy"] == "mirror"  # syncd created the groups
        assert pair["last_pass"]["status"] == "applied"
        assert [(e["op"], e["outcome"]) for e in pair["ledger"]] == [("add", "applied")]
    assert world.mutating() == 0  # it only read

    text = explain(path, M0)
    assert "Team → c8" in text and "Team → cr" in text
    assert text.count("verdict:   on the list") == 2
    assert "at c8:     a member" in text


def test_a_person_in_no_source(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    path = a_team(world, url, state_url)

    nobody = by_provider(explain_json(path, "nobody@example.com"))
    stray = explain_json(path, STRAY)  # on both lists still: the next pass removes them

    for pair in nobody.values():
        assert (pair["verdict"], pair["desired"], pair["member"], pair["ledger"]) == ("not_on_list", False, False, [])
        assert pair["summary"] == "not on the list because no source lists them in 'Team'"
    assert stray["listed_in"] == []
    for pair in by_provider(stray).values():
        assert (pair["verdict"], pair["member"]) == ("will_remove", True)
        assert pair["summary"] == "will be removed at the next pass: no source lists them in 'Team'"
    assert "verdict:   not on the list because no source lists them in 'Team'" in explain(path, "nobody@example.com")


def test_a_remembered_reject(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    path = a_team(world, url, state_url)

    pairs = by_provider(explain_json(path, ZOE))

    c8 = pairs["c8"]
    assert (c8["verdict"], c8["desired"], c8["member"]) == ("not_on_list", True, False)
    reject = c8["remembered_reject"]
    assert (reject["reason"], reject["code"], reject["holds"]) == (UNKNOWN, "unknown_recipient", True)
    assert c8["summary"].startswith(f"not on the list because c8 refused them for good: {UNKNOWN} (remembered since ")
    assert [(e["op"], e["outcome"]) for e in c8["ledger"]] == [("add", "rejected")]
    assert (pairs["cr"]["verdict"], pairs["cr"]["remembered_reject"]) == ("on_list", None)  # CleverReach took her

    text = explain(path, ZOE, "--group", "team")
    assert "reject:    remembered: " in text
    assert "verdict:   not on the list because c8 refused them for good" in text


def test_consent_and_offline_read_only_with_no_state_db(served: tuple[World, str], state_url: str) -> None:
    """Before any pass: no state DB is created, nothing is written anywhere; the provider's consent state is read
    (CleverReach's blacklist), and Communic8's pre-check says it would refuse an unknown recipient."""
    world, url = served
    world.cr.blacklist("black@example.com")
    path = write(world, url, state_url, [{"name": "Team", "members": ["black@example.com"], "targets": ["c8", "cr"]}])

    pairs = by_provider(explain_json(path, "Black@Example.com"))
    offline = explain_json(path, "black@example.com", "--offline")

    cr, c8 = pairs["cr"], pairs["c8"]
    assert cr["verdict"] == "not_on_list"
    assert cr["consent"]["state"] == "blacklisted"
    assert "syncd never subscribes them again" in cr["summary"]
    assert (c8["verdict"], c8["refused"]["code"]) == ("not_on_list", "unknown_recipient")
    assert (c8["last_pass"], c8["ledger"], c8["member"]) == (None, [], False)  # the group does not exist yet
    assert offline["checked_at_provider"] is False
    assert {(p["verdict"], p["member"]) for p in offline["pairs"]} == {("wanted", None)}
    assert world.mutating() == 0
    if state_url.startswith("sqlite"):
        assert not Path(state_url.removeprefix("sqlite:///")).exists()


def test_an_exclusion_and_a_protection(served: tuple[World, str], state_url: str) -> None:
    world, url = served
    world.people([M0, M1, STRAY])
    first = write(world, url, state_url, [{"name": "Team", "members": [M0, M1, STRAY], "targets": ["c8"]}])
    assert run(first)["pairs"][0]["status"] == "applied"
    team = {"name": "Team", "members": [M0, M1], "targets": ["c8"], "exclude": ["Do Not Mail"], "protected": [STRAY]}
    path = write(world, url, state_url, [team, {"name": "Do Not Mail", "members": [M1], "targets": []}])

    excluded = explain_json(path, M1)
    protected = by_provider(explain_json(path, STRAY, "--group", "Team"))["c8"]

    assert excluded["listed_in"] == [{"group": "Do Not Mail", "source": "yaml:syncd.yaml"}]
    [pair] = excluded["pairs"]  # Do Not Mail goes nowhere: no pair of its own
    assert (pair["group"], pair["verdict"], pair["desired"], pair["member"]) == ("Team", "will_remove", False, True)
    assert "Do Not Mail" in pair["excluded"]
    assert pair["summary"] == f"will be removed at the next pass: they are {pair['excluded']}"
    assert (protected["verdict"], protected["protected"], protected["member"]) == ("kept", True, True)
    assert protected["summary"].startswith("on the list, although no source lists them in 'Team': it stays")
    assert "protected: yes" in explain(path, STRAY)
