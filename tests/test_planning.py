"""The planner is pure: tables of inputs and the plan they must give, no fixtures, no I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

from connectors.base import (
    Capabilities,
    ConsentState,
    MemberKeyKind,
    MemberReject,
    Pacing,
    PostalAddress,
    ResetKind,
    Suppression,
)
from syncd.model import KnownReject, Member, OpKind, RejectCode, RemoteMember, RemovalPolicy, Strategy, fingerprint
from syncd.planning import Guard, admit, email_problem, plan

CAPS = Capabilities(
    member_key=MemberKeyKind.EMAIL,
    max_add_batch=10,
    max_remove_batch=10,
    can_create_group=True,
    can_remove=True,
    reset=ResetKind.NONE,
    pacing=Pacing(rate=10),
)
ATOMIC = replace(CAPS, reset=ResetKind.ATOMIC, max_reset_batch=100)
NON_ATOMIC = replace(CAPS, reset=ResetKind.NON_ATOMIC)
NO_REMOVE = replace(CAPS, can_remove=False)
POSTAL = replace(CAPS, required_fields=frozenset({"address.line1", "address.postcode", "address.country"}))
OPEN = Guard(max_removals=10**9, max_removal_ratio=1.0, allow_mass_removal=True)


def members(*emails: str) -> tuple[Member, ...]:
    return tuple(Member(email=e) for e in emails)


def remote(*emails: str) -> tuple[RemoteMember, ...]:
    return tuple(RemoteMember(email=e, id=f"id-{e}") for e in emails)


def many(n: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i}@x.com" for i in range(n)]


def run(desired, actual, caps=CAPS, policy=RemovalPolicy.MIRROR, guard=OPEN, **kw):  # type: ignore[no-untyped-def]
    return plan(
        group="G",
        provider="p",
        desired=members(*desired),
        actual=None if actual is None else remote(*actual),
        capabilities=caps,
        policy=policy,
        guard=guard,
        **kw,
    )


# ------------------------------------------------------------------------------------------ admission


@pytest.mark.parametrize(
    ("email", "problem"),
    [
        ("alice@example.com", None),
        ("a.b+tag@sub.example.co.uk", None),
        ("O'Brien@example.ie", None),
        ("", "empty email"),
        ("alice", "needs exactly one '@'"),
        ("a@@example.com", "needs exactly one '@'"),
        ("@example.com", "invalid part before '@'"),
        ("a..b@example.com", "invalid part before '@'"),
        (".a@example.com", "invalid part before '@'"),
        ("alice@localhost", "invalid domain"),
        ("alice@exa_mple.com", "invalid domain"),
        ("alice@-example.com", "invalid domain"),
        ("alice@1.2.3.4", "invalid domain"),
        ("al ice@example.com", "whitespace"),
        ("jürgen@example.de", "non-ASCII"),
        ("a" * 65 + "@example.com", "invalid part before '@'"),
        ("a@" + "b" * 250 + ".com", "longer than 254"),
    ],
)
def test_email_problem(email: str, problem: str | None) -> None:
    found = email_problem(email)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    ("raw", "admitted", "rejected"),
    [
        (["a@x.com", "b@x.com"], ["a@x.com", "b@x.com"], []),
        (["  Alice@X.com "], ["Alice@X.com"], []),  # trimmed, spelling kept
        (["Alice@X.com", "alice@x.COM"], ["Alice@X.com"], [("alice@x.COM", "duplicate of Alice@X.com")]),
        (["bad", "a@x.com", ""], ["a@x.com"], [("bad", "exactly one '@'"), ("", "empty email")]),
    ],
)
def test_admit(raw: list[str], admitted: list[str], rejected: list[tuple[str, str]]) -> None:
    ok, rejects = admit(members(*raw))
    assert [m.email for m in ok] == admitted
    assert [r.email for r in rejects] == [e for e, _ in rejected]
    for r, (_, reason) in zip(rejects, rejected, strict=True):
        assert reason in r.reason


# ------------------------------------------------------------------------------------------- the diff


@pytest.mark.parametrize(
    ("desired", "actual", "add", "remove", "ops"),
    [
        ([], [], [], [], []),
        (["a@x.com"], ["a@x.com"], [], [], []),
        (["A@X.com"], ["a@x.com"], [], [], []),  # case-insensitive: nothing to do
        (["a@x.com", "b@x.com"], ["a@x.com"], ["b@x.com"], [], [OpKind.ADD]),
        (["a@x.com"], ["a@x.com", "b@x.com"], [], ["b@x.com"], [OpKind.REMOVE]),
        (
            ["a@x.com", "c@x.com"],
            ["a@x.com", "b@x.com"],
            ["c@x.com"],
            ["b@x.com"],
            [OpKind.ADD, OpKind.REMOVE],
        ),
        (many(25), [], many(25), [], [OpKind.ADD] * 3),  # batches of 10
        (many(10), [], many(10), [], [OpKind.ADD]),  # exactly one full batch
        ([], many(11), [], many(11), [OpKind.REMOVE] * 2),
    ],
)
def test_diff_and_batches(
    desired: list[str], actual: list[str], add: list[str], remove: list[str], ops: list[OpKind]
) -> None:
    p = run(desired, actual)
    assert [m.email for m in p.to_add] == add
    assert [m.email for m in p.to_remove] == remove
    assert [op.kind for op in p.ops] == ops
    assert p.strategy is Strategy.INCREMENTAL
    assert sum(op.size for op in p.ops if op.kind is OpKind.ADD) == len(add)
    assert all(op.size <= 10 for op in p.ops)


def test_original_spelling_is_what_gets_written() -> None:
    p = run(["Bob.Stone@Example.COM"], [])
    assert [c.email for op in p.ops for c in op.contacts] == ["Bob.Stone@Example.COM"]


def test_missing_group_is_created_first() -> None:
    p = run(["a@x.com"], None)
    assert [op.kind for op in p.ops] == [OpKind.CREATE_GROUP, OpKind.ADD]
    assert p.actual is None


def test_adds_go_before_removes() -> None:
    p = run(many(3, "new"), many(3, "old"))
    kinds = [op.kind for op in p.ops]
    assert kinds.index(OpKind.ADD) < kinds.index(OpKind.REMOVE)


# ----------------------------------------------------------------------------------------- the reset


@pytest.mark.parametrize(
    ("caps", "desired", "actual", "allow_non_atomic", "strategy", "cost"),
    [
        # 30 removes + 0 adds = 3 requests incrementally; an atomic reset is 1.
        (ATOMIC, many(5), many(5) + many(30, "old"), False, Strategy.RESET, 1),
        # one remove: incremental (1 request) is not beaten by a reset (1): ties stay incremental
        (ATOMIC, many(5), many(5) + ["old@x.com"], False, Strategy.INCREMENTAL, 1),
        # only adds: a reset never helps
        (ATOMIC, many(30), [], False, Strategy.INCREMENTAL, 3),
        # desired larger than one reset call: not atomic any more, so never chosen
        (
            replace(ATOMIC, max_reset_batch=4),
            many(5),
            many(5) + many(30, "old"),
            False,
            Strategy.INCREMENTAL,
            3,
        ),
        # non-atomic reset only when allowed: purge + ceil(5/10) = 2 < 3
        (NON_ATOMIC, many(5), many(5) + many(30, "old"), False, Strategy.INCREMENTAL, 3),
        (NON_ATOMIC, many(5), many(5) + many(30, "old"), True, Strategy.RESET, 2),
        # no reset capability at all
        (CAPS, many(5), many(5) + many(30, "old"), True, Strategy.INCREMENTAL, 3),
    ],
)
def test_reset_chosen_by_cost(
    caps: Capabilities,
    desired: list[str],
    actual: list[str],
    allow_non_atomic: bool,
    strategy: Strategy,
    cost: int,
) -> None:
    p = run(desired, actual, caps=caps, allow_non_atomic_reset=allow_non_atomic)
    assert p.strategy is strategy
    assert p.cost == cost
    if strategy is Strategy.RESET:
        (op,) = p.ops
        assert op.kind is OpKind.RESET
        assert sorted(c.email for c in op.contacts) == sorted(desired)


def test_non_atomic_reset_empties_with_the_first_batch_then_adds_the_rest() -> None:
    # incremental: 20 adds (2 requests) + 30 removes (3) = 5; the reset: purge with the first 10 (2), then 2 adds = 4
    p = run(many(25), many(5) + many(30, "old"), caps=NON_ATOMIC, allow_non_atomic_reset=True)
    assert p.strategy is Strategy.RESET and p.cost == 4
    assert [(op.kind, op.size) for op in p.ops] == [(OpKind.RESET, 10), (OpKind.ADD, 10), (OpKind.ADD, 5)]
    assert [c.email for op in p.ops for c in op.contacts] == many(25)  # every member the group ends with
    assert len(p.to_add) == 20 and len(p.to_remove) == 30


def test_reset_writes_only_the_members_the_provider_takes() -> None:
    known = {"m0@x.com": KnownReject(fingerprint(Member(email="m0@x.com")), "unknown recipient")}
    p = run(many(5), many(30, "old"), caps=ATOMIC, known_rejects=known)
    (op,) = p.ops
    assert op.kind is OpKind.RESET
    assert [c.email for c in op.contacts] == many(5)[1:]
    assert [r.email for r in p.rejected] == ["m0@x.com"]


def test_reset_not_chosen_when_the_guard_holds_removals_back() -> None:
    p = run(many(5), many(5) + many(30, "old"), caps=ATOMIC, guard=Guard())
    assert p.strategy is Strategy.INCREMENTAL and p.ops == ()
    assert len(p.held_back) == 30 and p.guard is not None


def test_reset_not_chosen_when_policy_keeps_members() -> None:
    # `owned`: only 10 of the 30 undesired are ours; a reset would remove the other 20 too.
    actual = many(5) + many(30, "old")
    owned = frozenset(many(10, "old"))
    p = run(many(5), actual, caps=ATOMIC, policy=RemovalPolicy.OWNED, owned=owned)
    assert p.strategy is Strategy.INCREMENTAL
    assert len(p.to_remove) == 10 and p.kept == 20


# ----------------------------------------------------------------------------------- removal policies


@pytest.mark.parametrize(
    ("policy", "owned", "removed", "kept"),
    [
        (RemovalPolicy.MIRROR, frozenset(), ["b@x.com", "c@x.com"], 0),
        (RemovalPolicy.OWNED, frozenset({"c@x.com"}), ["c@x.com"], 1),
        (RemovalPolicy.OWNED, frozenset(), [], 2),
        (RemovalPolicy.ADD_ONLY, frozenset({"b@x.com", "c@x.com"}), [], 2),
    ],
)
def test_removal_policies(policy: RemovalPolicy, owned: frozenset[str], removed: list[str], kept: int) -> None:
    p = run(["a@x.com", "d@x.com"], ["a@x.com", "B@x.com".lower(), "c@x.com"], policy=policy, owned=owned)
    assert [m.email for m in p.to_remove] == removed
    assert p.kept == kept
    assert [m.email for m in p.to_add] == ["d@x.com"]  # adds happen under every policy


def test_provider_without_remove_reports_unsupported() -> None:
    p = run(["a@x.com"], ["a@x.com", "b@x.com"], caps=NO_REMOVE)
    assert p.to_remove == () and [m.email for m in p.unsupported] == ["b@x.com"]
    assert all(op.kind is not OpKind.REMOVE for op in p.ops)


# ------------------------------------------------------------------------------------------ the guard


@pytest.mark.parametrize(
    ("guard", "current", "removals", "blocked"),
    [
        (Guard(max_removals=500), 10_000, 500, False),
        (Guard(max_removals=500), 10_000, 501, True),
        (Guard(max_removal_ratio=0.25), 100, 25, False),
        (Guard(max_removal_ratio=0.25), 100, 26, True),
        (Guard(max_removal_ratio=0.25), 19, 10, False),  # ratio ignored below 20 members
        (Guard(max_removal_ratio=0.25), 20, 6, True),  # ... and applies from 20
        (Guard(), 5, 5, True),  # all members
        (Guard(), 1, 1, True),
        (Guard(), 0, 0, False),
        (Guard(allow_mass_removal=True), 100, 100, False),
        (Guard(max_removals=0), 10, 1, True),
    ],
)
def test_guard_thresholds(guard: Guard, current: int, removals: int, blocked: bool) -> None:
    assert (guard.check(removals, current) is not None) is blocked


def test_blocked_plan_keeps_adds_and_drops_removals() -> None:
    actual = many(100, "old")
    p = run(["new@x.com"], actual, caps=ATOMIC, guard=Guard())
    assert p.guard is not None and "all 100 members" in p.guard
    assert len(p.held_back) == 100 and p.to_remove == ()
    assert [op.kind for op in p.ops] == [OpKind.ADD]  # adds still go; no reset either
    assert p.strategy is Strategy.INCREMENTAL


def test_guard_ratio_message_names_the_numbers() -> None:
    p = run(many(70), many(100), guard=Guard())
    assert p.guard == "would remove 30 of 100 members (30%), more than max_removal_ratio=0.25"


# --------------------------------------------------------------------------- rejects known to the plan


def test_members_lacking_required_fields_are_rejected() -> None:
    full = Member(email="a@x.com", address=PostalAddress(line1="1 Main St", postcode="LS1 1AA", country="GB"))
    bare = Member(email="b@x.com", address=PostalAddress(line1="2 Main St"))
    p = plan(
        group="G",
        provider="stannp",
        desired=(full, bare),
        actual=(),
        capabilities=POSTAL,
        policy=RemovalPolicy.MIRROR,
        guard=OPEN,
    )
    assert [m.email for m in p.to_add] == ["a@x.com"]
    assert [(r.email, r.reason) for r in p.rejected] == [
        ("b@x.com", "missing fields stannp requires: address.country, address.postcode")
    ]


def test_member_already_present_is_never_rejected_nor_removed() -> None:
    bare = Member(email="b@x.com")
    p = plan(
        group="G",
        provider="stannp",
        desired=(bare,),
        actual=remote("b@x.com"),
        capabilities=POSTAL,
        policy=RemovalPolicy.MIRROR,
        guard=OPEN,
    )
    assert not p.rejected and not p.ops


def test_known_reject_skipped_until_source_changes() -> None:
    m = Member(email="gone@x.com", first_name="Old")
    known = {"gone@x.com": KnownReject(fingerprint(m), "blacklisted")}
    p = plan(
        group="G",
        provider="p",
        desired=(m,),
        actual=(),
        capabilities=CAPS,
        policy=RemovalPolicy.MIRROR,
        guard=OPEN,
        known_rejects=known,
    )
    assert not p.ops and "blacklisted" in p.rejected[0].reason
    changed = replace(m, first_name="New")
    p2 = plan(
        group="G",
        provider="p",
        desired=(changed,),
        actual=(),
        capabilities=CAPS,
        policy=RemovalPolicy.MIRROR,
        guard=OPEN,
        known_rejects=known,
    )
    assert [op.kind for op in p2.ops] == [OpKind.ADD] and not p2.rejected


def test_unsupported_removals_are_not_held_back_by_the_guard() -> None:
    # The API cannot remove: nothing is sent, so there is nothing for the guard to hold back.
    p = run([], many(30), caps=NO_REMOVE, guard=Guard())
    assert len(p.unsupported) == 30 and p.held_back == () and p.guard is None and p.ops == ()


def _refusal(member: Member, **known: object):  # type: ignore[no-untyped-def]
    p = plan(
        group="G",
        provider="stannp",
        desired=(member,),
        actual=(),
        capabilities=POSTAL,
        policy=RemovalPolicy.MIRROR,
        guard=OPEN,
        **known,  # type: ignore[arg-type]
    )
    assert not p.to_add and not p.ops
    (reject,) = p.rejected
    return reject


def test_consent_comes_first_among_the_reasons_not_to_add() -> None:
    bare = Member(email="b@x.com")  # lacks every field POSTAL requires
    remembered = {"b@x.com": KnownReject(fingerprint(bare), "unsubscribed on 1 May", code="unsubscribed")}
    suppressed = {"b@x.com": Suppression(ConsentState.BOUNCED, "hard bounce")}
    refused = {"b@x.com": MemberReject("b@x.com", "unknown recipient", permanent=True)}

    r = _refusal(bare, known_rejects=remembered, suppressed=suppressed, refused=refused)
    assert (r.reason, r.code, r.detail, r.member) == (
        "unsubscribed",
        "unsubscribed",
        "unsubscribed on 1 May (remembered)",
        None,
    )

    r = _refusal(bare, suppressed=suppressed, refused=refused)
    assert (r.reason, r.detail, r.member, r.permanent) == ("bounced", "bounced: hard bounce", bare, True)

    r = _refusal(bare, refused=refused)
    assert r.code is RejectCode.MISSING_FIELDS and r.member is None

    full = Member(email="b@x.com", address=PostalAddress(line1="1 Main St", postcode="LS1 1AA", country="GB"))
    r = _refusal(full, refused=refused)
    assert (r.reason, r.code, r.member, r.permanent) == ("unknown recipient", "provider_rejected", full, True)


def test_a_provider_refusal_for_consent_reports_the_state() -> None:
    full = Member(email="b@x.com", address=PostalAddress(line1="1 Main St", postcode="LS1 1AA", country="GB"))
    refused = {"b@x.com": MemberReject("b@x.com", "on the blacklist", permanent=True, code="blacklisted")}
    r = _refusal(full, refused=refused)
    assert (r.reason, r.code, r.detail) == ("blacklisted", "blacklisted", "blacklisted: on the blacklist")


def test_plan_is_a_pure_function_of_its_arguments() -> None:
    desired, actual = members(*many(12)), remote(*many(3), *many(4, "old"))
    first = plan(
        group="G",
        provider="p",
        desired=desired,
        actual=actual,
        capabilities=CAPS,
        policy=RemovalPolicy.MIRROR,
        guard=OPEN,
    )
    again = plan(
        group="G",
        provider="p",
        desired=desired,
        actual=actual,
        capabilities=CAPS,
        policy=RemovalPolicy.MIRROR,
        guard=OPEN,
    )
    assert first == again and hash(first) == hash(again)  # frozen values, equal for equal inputs
    assert desired == members(*many(12)) and actual == remote(*many(3), *many(4, "old"))  # inputs untouched


def test_op_describes_itself_without_emails_unless_verbose() -> None:
    p = run(["a@x.com", "b@x.com"], [])
    (op,) = p.ops
    assert op.describe() == "add 2 members to 'G' on p"
    assert op.describe(verbose=True).endswith("a@x.com, b@x.com")


# ---------------------------------------------------------------------------------- large groups: values


def test_a_member_key_is_computed_once_and_is_no_field() -> None:
    import copy
    import dataclasses
    import pickle

    m = Member(email=" Alice@X.com ", first_name="Alice")
    assert m.key == "alice@x.com"
    assert [f.name for f in dataclasses.fields(m)] == ["email", "first_name", "last_name", "address"]
    assert dataclasses.asdict(m) == {
        "email": " Alice@X.com ",
        "first_name": "Alice",
        "last_name": None,
        "address": None,
    }
    assert m == Member(email=" Alice@X.com ", first_name="Alice") and hash(m) == hash(Member(" Alice@X.com ", "Alice"))
    assert m != Member(email="alice@x.com", first_name="Alice")  # equality is by the fields, spelling included
    assert replace(m, email="Bob@X.com").key == "bob@x.com"
    assert copy.copy(m).key == pickle.loads(pickle.dumps(m)).key == "alice@x.com"
    assert repr(m) == "Contact(email=' Alice@X.com ', first_name='Alice', last_name=None, address=None)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.key = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.email = "x"  # type: ignore[misc]
    lower = "bob@x.com"
    assert Member(email=lower).key is lower  # an email that is its own key shares its string

    r = RemoteMember("Carol@X.com", "7")
    assert (r.key, RemoteMember(None, "7").key) == ("carol@x.com", "id:7")
    assert r == RemoteMember(email="Carol@X.com", id="7") and r != RemoteMember("carol@x.com", "7")
    assert pickle.loads(pickle.dumps(r)).key == "carol@x.com"
    assert fingerprint(Member(email="a@x.com")) == fingerprint(Member(email="a@x.com", first_name=None))


@pytest.mark.parametrize(
    "email",
    [
        "a@b.co",
        "x" * 64 + "@example.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 63 + ".com",
        "a@" + "b" * 64 + ".com",
        "a@b-c.d-e.f",
        "a@b.c-",
        "a@b.123",
        "a@123.b1",
        "a.@b.c",
        "a@b..c",
        "a@b.c\n",
        "a@b.c.",
        "a+b=c!#$%&'*/?^_`{|}~-@x.io",
        "a@b" + ".c" * 126,
        "a@b" + ".c" * 127,
    ],
)
def test_the_one_match_accepts_exactly_what_the_checks_accept(email: str) -> None:
    # email_problem decides with one regular expression when it can; the step-by-step checks (which say why) agree
    from syncd import planning

    fast = len(email) <= 254 and planning._VALID.fullmatch(email) is not None
    local, _, domain = email.partition("@")
    labels = domain.split(".")
    slow = (
        0 < len(email) <= 254
        and not any(ch.isspace() for ch in email)
        and email.count("@") == 1
        and 0 < len(local) <= 64
        and planning._LOCAL.match(local) is not None
        and len(labels) >= 2
        and all(planning._LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    )
    assert fast == slow == (email_problem(email) is None)


# ------------------------------------------------------------------------------ large groups: the diff


@pytest.mark.parametrize(
    ("desired", "actual", "absent", "undesired"),
    [
        ([], [], [], []),
        (["a@x.com", "b@x.com"], [], ["a@x.com", "b@x.com"], []),
        ([], ["a@x.com"], [], ["a@x.com"]),
        (["a@x.com", "b@x.com"], ["B@X.com", "a@x.com"], [], []),
        (
            ["c@x.com", "a@x.com", "b@x.com"],
            ["z@x.com", "a@x.com", "y@x.com"],
            ["c@x.com", "b@x.com"],
            ["z@x.com", "y@x.com"],
        ),
        (["a@x.com"], ["b@x.com"], ["a@x.com"], ["b@x.com"]),
        (["a@x.com", "b@x.com"], ["b@x.com", "b@x.com"], ["a@x.com"], []),  # a group may list someone twice
        (["a@x.com"], ["b@x.com", "B@x.com"], ["a@x.com"], ["b@x.com", "B@x.com"]),
    ],
)
def test_difference_in_source_and_group_order(
    desired: list[str], actual: list[str], absent: list[str], undesired: list[str]
) -> None:
    from syncd.planning import difference

    diff = difference(members(*desired), remote(*actual))
    assert [m.email for m in diff.absent] == absent
    assert [m.email for m in diff.undesired] == undesired


def test_a_member_without_email_is_undesired_by_its_id() -> None:
    from syncd.planning import difference

    diff = difference(members("a@x.com"), (RemoteMember(None, "9"), *remote("a@x.com")))
    assert [m.key for m in diff.undesired] == ["id:9"] and diff.absent == ()


def test_a_large_diff_keeps_source_and_group_order() -> None:
    group = many(30_000)[::-1]  # the group lists them the other way round
    desired = many(30_000)[20:] + many(15, prefix="new")  # 20 left the source, 15 joined
    p = run(desired, group)
    assert [m.email for m in p.to_add] == many(15, prefix="new")
    assert [m.email for m in p.to_remove] == many(20)[::-1]
    assert p.cost == 2 + 2  # 15 adds in batches of 10, 20 removals in batches of 10


# ------------------------------------------------------------------------------ protected members


@pytest.mark.parametrize(
    ("desired", "actual", "protected", "caps", "policy", "removed", "kept_protected", "strategy"),
    [
        # the source dropped the CEO: protected, so never removed; the others go
        (
            ["a@x.com"],
            ["a@x.com", "ceo@x.com", "b@x.com"],
            {"ceo@x.com"},
            CAPS,
            RemovalPolicy.MIRROR,
            ["b@x.com"],
            1,
            Strategy.INCREMENTAL,
        ),
        # matched as email keys: the group's spelling does not matter
        ([], ["CEO@X.com "], {"ceo@x.com"}, CAPS, RemovalPolicy.MIRROR, [], 1, Strategy.INCREMENTAL),
        # a protected member the source still lists is simply desired: nothing kept
        (["ceo@x.com"], ["ceo@x.com"], {"ceo@x.com"}, CAPS, RemovalPolicy.MIRROR, [], 0, Strategy.INCREMENTAL),
        # a reset would drop the protected member: never chosen, however cheap
        (
            ["a@x.com"],
            ["ceo@x.com", *many(30)],
            {"ceo@x.com"},
            ATOMIC,
            RemovalPolicy.MIRROR,
            many(30),
            1,
            Strategy.INCREMENTAL,
        ),
        # without protection the same change is one atomic reset
        (
            ["a@x.com"],
            ["ceo@x.com", *many(30)],
            set(),
            ATOMIC,
            RemovalPolicy.MIRROR,
            ["ceo@x.com", *many(30)],
            0,
            Strategy.RESET,
        ),
        # add_only removes nobody anyway; the protected one is counted as protected, the other as kept
        ([], ["ceo@x.com", "b@x.com"], {"ceo@x.com"}, CAPS, RemovalPolicy.ADD_ONLY, [], 1, Strategy.INCREMENTAL),
    ],
)
def test_protected_members_are_never_removed(  # type: ignore[no-untyped-def]
    desired, actual, protected, caps, policy, removed, kept_protected, strategy
) -> None:
    p = run(desired, actual, caps=caps, policy=policy, protected=frozenset(protected))
    assert [m.email for m in p.to_remove] == removed
    assert p.protected == kept_protected
    assert p.strategy is strategy
    assert not any(m.key in protected for op in p.ops for m in op.members) or strategy is Strategy.RESET


def test_protected_members_do_not_count_against_the_guard() -> None:
    # 3 of 4 would go without protection (held back); with two of them protected, one removal passes the guard
    guard = Guard(max_removals=1, max_removal_ratio=1.0)
    blocked = run(["d@x.com"], ["a@x.com", "b@x.com", "c@x.com", "d@x.com"], guard=guard)
    assert blocked.guard is not None
    p = run(
        ["d@x.com"],
        ["a@x.com", "b@x.com", "c@x.com", "d@x.com"],
        guard=guard,
        protected=frozenset({"a@x.com", "b@x.com"}),
    )
    assert p.guard is None and [m.email for m in p.to_remove] == ["c@x.com"] and p.protected == 2
