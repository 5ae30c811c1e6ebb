"""Batches, for every connector: chunking, bisection of refused batches, halving of batches too large, and
creates whose answer may be lost.

Each is written once here, generic over what is sent: the functions take async callables that send (and, for
creates, one that waits), and only look at the errors of `connectors.base` (`BatchRejected`, `BatchTooLarge`,
`TransientError`) to decide what to send next. Nothing here does I/O, reads a clock or logs (this module
imports only the standard library's typing helpers and `connectors.base`), so syncd's planner may cut its
batches with `chunks` as well. The request counts each function costs are stated in its docstring and pinned
by `tests/test_batching.py`; the callers log what they send.

How big a batch is, is not decided here: it is the connector's `Capabilities` as configured
(`ProviderSettings.capabilities`, applied once when the connector is built), which the planner batches by and
the connectors re-cut with `chunks` when a caller hands them more than one batch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from connectors.base import BatchRejected, BatchTooLarge, ConnectorError, RetriableError, TransientError

T = TypeVar("T")
G = TypeVar("G")

Send = Callable[[Sequence[T]], Awaitable[None]]

# --------------------------------------------------------------------------------------------- chunks


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` cut into consecutive slices of at most `size` (a size below 1 counts as 1), in order: ⌈n/size⌉
    slices, none for no items. Slices keep the sequence's type (a tuple gives tuples)."""
    step = max(1, size)
    return [items[start : start + step] for start in range(0, len(items), step)]


# ----------------------------------------------------------------------------- refused batches: bisect


async def isolate(
    send: Send[T], items: Sequence[T], *, refused: bool = False, infer_refused: bool = False
) -> tuple[list[T], list[T]]:
    """Send `items` as one batch; when it is refused as a whole because of some of them (`send` raises
    `BatchRejected`), halve it recursively until every refused item stands alone, so that the others still go
    through. Returns (sent, refused), each in the original order. Any other error goes up as it is.

    `refused`: this very batch was just refused (the caller sent it), so start by splitting it.
    `infer_refused`: the refusal depends only on the items of the batch (an all-or-nothing API such as
    Bitcaster's add/), so when a refused batch's first half goes through, its second half must hold a culprit:
    it is split straight away instead of being sent whole (a single item is then refused without a request).
    Without it, each half is sent before it is split.

    Requests, with k refused items among n (not counting a batch the caller says was already `refused`, which
    saves its one request):

    * k = 0: 1;
    * k = n: 2n - 1, either way: every node of the halving tree is sent once;
    * in between, at most 1 + 2·k·⌈log2 n⌉: each level of the tree holds at most k refused batches of two
      items or more, each of which costs the requests of its two halves. Without `infer_refused`, one culprit
      among n = 2^m costs exactly 1 + 2m (8 items: 7). With it, the same culprit costs 1 + 2m minus one
      request per level at which it lies in the second half (among 100, at most 25 for two culprits where
      the bound allows 29).
    """
    if not items:
        return [], []
    return await _bisect(send, items, refused=refused, infer=infer_refused)


async def _bisect(send: Send[T], items: Sequence[T], *, refused: bool, infer: bool) -> tuple[list[T], list[T]]:
    if not refused:
        try:
            await send(items)
            return list(items), []
        except BatchRejected:
            pass
    if len(items) == 1:
        return [], list(items)
    mid = len(items) // 2
    ok_a, bad_a = await _bisect(send, items[:mid], refused=False, infer=infer)
    ok_b, bad_b = await _bisect(send, items[mid:], refused=infer and not bad_a, infer=infer)
    return ok_a + ok_b, bad_a + bad_b


# ------------------------------------------------------------------------- batches too large: halve


@dataclass
class SizeLimit:
    """The largest batch a server turned out to take after refusing a larger one as too large (HTTP 413); None
    while no batch was refused so. A connector keeps one for its life, so a size learnt once costs no further
    refusals."""

    size: int | None = None

    def cap(self, size: int) -> int:
        """`size`, or the learnt size when that is smaller."""
        return min(size, self.size or size)


async def send_shrinking(send: Send[T], items: Sequence[T], size: int, limit: SizeLimit) -> list[T]:
    """Send `items` in batches of `size`, or of the size `limit` learnt when that is smaller. A batch refused
    as too large (`send` raises `BatchTooLarge`) is halved (the first half the larger) and both halves are sent,
    recursively, down to single items; when both halves of a refused batch go through, the size was the
    trouble, not an item, and the half size becomes the limit for every later batch (`limit` keeps it). Returns
    the items refused as too large even on their own, in order. Any other error goes up as it is.

    Requests, for n items:

    * ⌈n/size⌉ while nothing is too large, and ⌈n/s⌉ once a size s was learnt (s < size);
    * a server that takes at most L < `size` costs ⌈log2(size/L)⌉ refused requests (the first chunk halved
      until a half fits), and the size s learnt then (L/2 < s ≤ L) holds for every later batch: a chunk of
      `size` goes as ⌈size/s⌉ batches. 1000 items in batches of 250 to a server taking 100: 250 and 125
      refused, 63 + 62 sent (63 learnt), 63 + 62 for the first chunk's other half, then 63 + 63 + 63 + 61 for
      each of the 3 other chunks: 18 requests, 2 of them refused;
    * an item too large on its own costs, with its batch of m, at most 1 + 2·⌈log2 m⌉ requests (the batch and
      the halves along its path), and is returned; nothing is learnt from a batch whose half failed.
    """
    too_large: list[T] = []

    async def batch(part: Sequence[T]) -> bool:
        """True when every item of `part` went through."""
        if limit.size is not None and len(part) > limit.size:
            return all([await batch(piece) for piece in chunks(part, limit.size)])
        try:
            await send(part)
            return True
        except BatchTooLarge:
            if len(part) == 1:
                too_large.append(part[0])
                return False
        half = (len(part) + 1) // 2
        first = await batch(part[:half])
        second = await batch(part[half:])
        if first and second:
            limit.size = min(limit.size or half, half)
        return first and second

    for chunk in chunks(items, limit.cap(size)):
        await batch(chunk)
    return too_large


# ---------------------------------------------------------------------- creates: look up before resending


async def create_or_find(
    create: Callable[[], Awaitable[G]],
    find: Callable[[], Awaitable[G | None]],
    *,
    attempts: int,
    pause: Callable[[int, RetriableError], Awaitable[None]],
    lost: tuple[type[RetriableError], ...] = (TransientError,),
    taken: Callable[[ConnectorError], bool] | None = None,
) -> G:
    """Create something (a group) that the API may have made although its answer was lost, without ever
    making it twice: before a create is sent again, `find` looks it up (by name).

    `create` sends the create once (not retried by the HTTP layer: `idempotent=False`) and returns what it
    made. An error of a `lost` class (default `TransientError`: a 5xx, a timeout, a dropped connection, after
    which the server may have acted) is followed by `pause(attempt, error)` (`ApiClient.pause`: the error's
    Retry-After or the backoff of that attempt, whichever is longer), then by `find`: what it finds is the
    answer; else the create is sent again, at most `attempts` times in all, after which the last error goes
    up. `lost=()` suits a create that carries an idempotency key, which the HTTP layer already resends
    safely. An error that `taken` says means "that name exists already" (a conflict) is answered by `find`
    once: what it finds is the answer, and when it finds nothing, that error goes up (the caller says what to
    do). Any other error goes up as it is.

    Requests (creates + look-ups): 1 when the first answer comes; 2 when the answer was lost but the create
    landed, or when the name is taken; 2·a when the a-th create is the one that lands (its answer lost) or
    2·a - 1 when its answer comes; 2·`attempts` before the last error goes up when none lands.
    """
    error: RetriableError | None = None
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return await create()
        except lost as exc:
            error = exc
        except ConnectorError as exc:
            if taken is None or not taken(exc):
                raise
            return await _existing(find, exc)
        await pause(attempt, error)
        found = await find()
        if found is not None:
            return found
    assert error is not None
    raise error


async def _existing(find: Callable[[], Awaitable[G | None]], conflict: ConnectorError) -> G:
    """What `find` finds for a create refused because the name is taken; else that refusal goes up."""
    found = await find()
    if found is None:
        raise conflict
    return found


__all__ = ["SizeLimit", "chunks", "create_or_find", "isolate", "send_shrinking"]
