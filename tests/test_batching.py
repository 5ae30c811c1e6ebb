"""connectors.batching on its own: chunking, bisection of refused batches, halving of batches too large, and creates
whose answer may be lost, each with the exact number of requests it costs."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import pytest

from connectors.base import (
    BatchRejected,
    BatchTooLarge,
    FatalError,
    Pacing,
    RateLimited,
    RetriableError,
    TransientError,
)
from connectors.batching import SizeLimit, chunks, create_or_find, isolate, send_shrinking
from connectors.http import ApiClient, RetryPolicy

# --------------------------------------------------------------------------------------------- chunks


@pytest.mark.parametrize(
    ("n", "size", "lengths"),
    [
        pytest.param(0, 3, [], id="nothing"),
        pytest.param(5, 2, [2, 2, 1], id="a-short-last"),
        pytest.param(4, 4, [4], id="exactly-one"),
        pytest.param(3, 10, [3], id="fewer-than-a-batch"),
        pytest.param(3, 0, [1, 1, 1], id="size-0-is-1"),
        pytest.param(2500, 1000, [1000, 1000, 500], id="stannp-ids"),
    ],
)
def test_chunks_are_consecutive_slices_of_at_most_size(n: int, size: int, lengths: list[int]) -> None:
    items = list(range(n))
    cut = chunks(items, size)
    assert [len(c) for c in cut] == lengths
    assert [i for c in cut for i in c] == items  # in order, nothing lost or repeated


def test_chunks_keep_the_sequence_type() -> None:
    assert chunks((1, 2, 3), 2) == [(1, 2), (3,)]
    assert chunks("abcde", 2) == ["ab", "cd", "e"]


# ---------------------------------------------------------------------------------- refused batches


@dataclass
class Refuser:
    """A server refusing any batch that holds a bad item, as an all-or-nothing API does; counts the requests."""

    bad: frozenset[int]
    sent: list[tuple[int, ...]] = field(default_factory=list)

    async def __call__(self, part: Sequence[int]) -> None:
        self.sent.append(tuple(part))
        if self.bad & set(part):
            raise BatchRejected("some member is unknown")


BISECTION = [
    # n, bad, infer_refused, refused (already sent by the caller), requests
    pytest.param(0, (), False, False, 0, id="nothing-to-send"),
    pytest.param(8, (), False, False, 1, id="none-bad"),
    pytest.param(1, (0,), False, False, 1, id="one-item-refused"),
    pytest.param(1, (0,), False, True, 0, id="one-item-already-refused"),
    pytest.param(8, (5,), False, False, 7, id="k1-n8: 1+2*3"),
    pytest.param(8, (0,), False, False, 7, id="k1-n8-first"),
    pytest.param(8, (5,), False, True, 6, id="k1-n8-already-refused (communic8, stannp)"),
    pytest.param(8, (0, 7), False, False, 11, id="k2-n8-both-ends"),
    pytest.param(8, tuple(range(8)), False, False, 15, id="all-bad: 2n-1"),
    pytest.param(8, (5,), True, False, 5, id="inferred-k1-n8"),
    pytest.param(8, (7,), True, False, 4, id="inferred-k1-n8-last"),
    pytest.param(8, (0,), True, False, 7, id="inferred-k1-n8-first"),
    pytest.param(8, (0, 7), True, False, 9, id="inferred-k2-n8-both-ends"),
    pytest.param(8, tuple(range(8)), True, False, 15, id="inferred-all-bad: 2n-1"),
    # Bitcaster's cases (tests/test_bitcaster.py: 100 addresses, its add/ infers)
    pytest.param(100, (99,), True, False, 8, id="inferred-k1-n100-last"),
    pytest.param(100, (37,), True, False, 11, id="inferred-k1-n100-middle"),
    pytest.param(100, (0,), True, False, 13, id="inferred-k1-n100-first"),
    pytest.param(100, (1, 51), True, False, 25, id="inferred-k2-n100-worst"),
    pytest.param(100, (1, 51), False, False, 27, id="k2-n100"),
    pytest.param(100, (99,), False, False, 15, id="k1-n100-last: every half sent"),
]


@pytest.mark.parametrize(("n", "bad", "infer", "refused", "requests"), BISECTION)
async def test_bisection_isolates_the_refused_items_at_an_exact_cost(
    n: int, bad: tuple[int, ...], infer: bool, refused: bool, requests: int
) -> None:
    server = Refuser(frozenset(bad))
    sent, refused_items = await isolate(server, range(n), refused=refused, infer_refused=infer)
    assert refused_items == list(bad)
    assert sent == [i for i in range(n) if i not in bad]
    assert len(server.sent) == requests
    if 0 < len(bad) < n:
        assert requests + refused <= 1 + 2 * len(bad) * math.ceil(math.log2(n))  # the documented bound
    # every item that went in went in exactly once
    accepted = [i for part in server.sent if not server.bad & set(part) for i in part]
    assert sorted(accepted) == sent


@pytest.mark.parametrize("infer", [False, True])
def test_bisection_of_two_bad_among_32_never_exceeds_the_bound(infer: bool) -> None:
    n, worst = 32, 0
    for bad in itertools.combinations(range(n), 2):
        server = Refuser(frozenset(bad))
        asyncio.run(isolate(server, list(range(n)), infer_refused=infer))
        worst = max(worst, len(server.sent))
    assert worst <= 1 + 2 * 2 * math.ceil(math.log2(n)) == 21
    assert worst == 19  # a culprit in each half of the whole: 1 + 2 + 2·(2·4)


async def test_bisection_lets_other_errors_through() -> None:
    async def send(part: Sequence[int]) -> None:
        if len(part) < 4:
            raise TransientError("dropped")
        raise BatchRejected("refused")

    with pytest.raises(TransientError):
        await isolate(send, list(range(8)))


# ------------------------------------------------------------------------------- batches too large


@dataclass
class SizeCapped:
    """A server answering 413 to a batch heavier than `capacity`; an item in `huge` weighs more than that alone."""

    capacity: int
    huge: frozenset[int] = frozenset()
    sent: list[int] = field(default_factory=list)  # batch sizes, in order
    refused: int = 0
    accepted: list[int] = field(default_factory=list)

    async def __call__(self, part: Sequence[int]) -> None:
        self.sent.append(len(part))
        if sum(self.capacity + 1 if i in self.huge else 1 for i in part) > self.capacity:
            self.refused += 1
            raise BatchTooLarge("413")
        self.accepted += part


HALVING = [
    # n, size, capacity, huge, limit before, requests, refused, limit after, too large
    pytest.param(0, 250, 100, (), None, 0, 0, None, [], id="nothing"),
    pytest.param(1000, 250, 10_000, (), None, 4, 0, None, [], id="fits: n/size"),
    pytest.param(1000, 250, 100, (), None, 18, 2, 63, [], id="server-takes-100: 250,125 refused, 63 learnt"),
    pytest.param(1000, 250, 100, (), 63, 16, 0, 63, [], id="63-already-learnt"),
    pytest.param(10, 10, 4, (), None, 6, 2, 3, [], id="10-to-a-server-taking-4"),
    pytest.param(4, 4, 10, (2,), None, 5, 3, None, [2], id="one-item-too-large-alone: nothing learnt"),
    pytest.param(2, 2, 0, (), None, 3, 3, None, [0, 1], id="everything-too-large"),
    pytest.param(500, 250, 200, (), None, 5, 1, 125, [], id="a-half-fits-at-once"),
]


@pytest.mark.parametrize(
    ("n", "size", "capacity", "huge", "before", "requests", "refused", "after", "too_large"), HALVING
)
async def test_a_batch_too_large_is_halved_and_the_size_that_worked_is_learnt(
    n: int,
    size: int,
    capacity: int,
    huge: tuple[int, ...],
    before: int | None,
    requests: int,
    refused: int,
    after: int | None,
    too_large: list[int],
) -> None:
    server = SizeCapped(capacity, frozenset(huge))
    limit = SizeLimit(before)
    assert await send_shrinking(server, list(range(n)), size, limit) == too_large
    assert (len(server.sent), server.refused, limit.size) == (requests, refused, after)
    assert sorted(server.accepted) == [i for i in range(n) if i not in too_large]  # each item in once


async def test_the_learnt_size_holds_for_later_calls() -> None:
    server, limit = SizeCapped(100), SizeLimit()
    await send_shrinking(server, list(range(250)), 250, limit)
    assert (server.sent, limit.size) == ([250, 125, 63, 62, 63, 62], 63)
    server.sent.clear()
    await send_shrinking(server, list(range(250)), 250, limit)
    assert server.sent == [63, 63, 63, 61] and server.refused == 2  # no refusal the second time
    assert limit.cap(250) == 63 and limit.cap(10) == 10 and SizeLimit().cap(250) == 250


# ------------------------------------------------------------------------------- create, then look up


@dataclass
class Creates:
    """Group creates that answer, lose their answer (after landing or not), or conflict, one outcome per send."""

    outcomes: list[str]
    existing: bool = False  # a group of that name exists already
    creates: int = 0
    finds: int = 0

    async def create(self) -> str:
        outcome = self.outcomes[self.creates]
        self.creates += 1
        if outcome == "ok":
            self.existing = True
            return "created"
        if outcome == "landed":  # made, but the answer was lost
            self.existing = True
            raise TransientError("502", delay=None)
        if outcome == "lost":  # failed before anything was made
            raise TransientError("503", delay=None)
        if outcome == "taken":
            raise FatalError("name exists", status=409)
        if outcome == "limited":
            raise RateLimited("429", status=429, delay=1.0)
        raise FatalError("forbidden", status=403)

    async def find(self) -> str | None:
        self.finds += 1
        return "found" if self.existing else None


def taken(error: Exception) -> bool:
    return isinstance(error, FatalError) and error.status == 409


async def no_pause(attempt: int, error: RetriableError) -> None:
    return None


CREATES = [
    # outcomes, existing before, result (or the error raised), creates, finds
    pytest.param(["ok"], False, "created", 1, 0, id="answered: 1"),
    pytest.param(["landed"], False, "found", 1, 1, id="answer-lost-but-landed: 2"),
    pytest.param(["lost", "ok"], False, "created", 2, 1, id="second-answered: 2a-1"),
    pytest.param(["lost", "landed"], False, "found", 2, 2, id="second-landed-answer-lost: 2a"),
    pytest.param(["lost", "lost", "lost"], False, TransientError, 3, 3, id="none-lands: 2*attempts"),
    pytest.param(["taken"], True, "found", 1, 1, id="name-taken: the existing one"),
    pytest.param(["taken"], False, FatalError, 1, 1, id="name-taken-but-none-found"),
    pytest.param(["forbidden"], False, FatalError, 1, 0, id="other-errors-go-up"),
    pytest.param(["limited"], False, RateLimited, 1, 0, id="a-429-is-not-a-lost-answer"),
]


@pytest.mark.parametrize(("outcomes", "existing", "result", "creates", "finds"), CREATES)
async def test_a_create_is_looked_up_before_it_is_sent_again(
    outcomes: list[str], existing: bool, result: str | type[Exception], creates: int, finds: int
) -> None:
    api = Creates(outcomes, existing)
    if isinstance(result, str):
        assert await create_or_find(api.create, api.find, attempts=3, pause=no_pause, taken=taken) == result
    else:
        with pytest.raises(result):
            await create_or_find(api.create, api.find, attempts=3, pause=no_pause, taken=taken)
    assert (api.creates, api.finds) == (creates, finds)


async def test_a_create_with_an_idempotency_key_loses_no_answer() -> None:
    api = Creates(["landed"])
    with pytest.raises(TransientError):  # the HTTP layer already resent it, with its key
        await create_or_find(api.create, api.find, attempts=1, pause=no_pause, lost=())
    assert (api.creates, api.finds) == (1, 0)


async def test_every_look_up_after_a_lost_answer_comes_after_a_pause() -> None:
    api, pauses = Creates(["lost", "lost", "landed"]), []

    async def pause(attempt: int, error: RetriableError) -> None:
        pauses.append((attempt, error.message, api.finds))

    assert await create_or_find(api.create, api.find, attempts=5, pause=pause) == "found"
    assert pauses == [(1, "503", 0), (2, "503", 1), (3, "502", 2)]  # each before its look-up
    assert (api.creates, api.finds) == (3, 3)


async def test_the_pause_honours_the_servers_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    policy = RetryPolicy(backoff_base=1.0, backoff_max=30.0, jitter=0.0)
    api = ApiClient(httpx.AsyncClient(), provider="p", classify=lambda _: None, pacing=Pacing(rate=0), retry=policy)
    try:
        await api.pause(1, TransientError("503", delay=5.0))  # Retry-After, longer than the backoff
        await api.pause(3, TransientError("503", delay=None))  # the backoff of the third attempt
        await api.pause(3, TransientError("503", delay=1.0))
    finally:
        await api.aclose()
    assert slept == [5.0, 4.0, 4.0]
