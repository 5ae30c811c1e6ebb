"""What keeps a pass over a million members in bounded memory with an event loop that keeps running: large answers
parsed in slices (`connectors.http.parse_json`), big lists freed a slice at a time (`connectors.http.let_go`), and
key sets made a step at a time (`syncd.planning.key_set`). Each must give exactly what the plain call gives."""

from __future__ import annotations

import gc
import json
import sys
import weakref
from types import FrameType
from typing import Any

import pytest

from connectors.http import LARGE_BODY, LET_GO_STEP, PARSE_SLICE, let_go, parse_json
from syncd.planning import STEP, key_set


def _large(value: Any) -> bytes:
    """`value` as a JSON body larger than LARGE_BODY (so it takes the sliced path)."""
    body = json.dumps({"value": value, "padding": "x" * (LARGE_BODY + 1)}).encode()
    assert len(body) > LARGE_BODY
    return body


@pytest.mark.parametrize(
    "value",
    [
        [f"{i:024x}" for i in range(20_000)],  # a group's member ids
        {"n": [0, -5, 123456789012345678901234567890, 0.1, 1e300, 1.5e-7], "b": [True, False, None]},
        {"s": ["ü", "a\U0001f600b", "\u0000", '"', "\\", "", "\ud83d"]},  # escapes, a lone surrogate
        {"dup": 1, "nested": [[[{}]], []]},
    ],
)
def test_a_large_body_parses_as_json_loads_parses_it(value: Any) -> None:
    body = _large(value)
    assert parse_json(body) == json.loads(body)


def test_a_large_body_is_handed_to_the_parser_a_slice_at_a_time() -> None:
    """Between two slices the interpreter may switch threads: that is what keeps the event loop running while a
    worker thread parses a 28 MB answer. Watched with a profile hook (calls of Python functions), not timed."""
    body = _large([f"{i:024x}" for i in range(50_000)])
    reads: list[int] = []

    def watch(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_name == "read" and frame.f_globals.get("__name__") == "connectors.http":
            reads.append(1)

    sys.setprofile(watch)
    try:
        parsed = parse_json(body)
    finally:
        sys.setprofile(None)
    assert parsed == json.loads(body)
    assert len(reads) >= len(body) // PARSE_SLICE


def test_a_large_top_level_array_with_surrounding_whitespace() -> None:
    """A page of members (CleverReach answers a bare array)."""
    page = [{"id": i, "email": f"p{i}@example.org", "activated": 1700000000, "score": 1.5} for i in range(20_000)]
    body = b"  " + json.dumps(page).encode() + b"\n"
    assert len(body) > LARGE_BODY
    assert parse_json(body) == json.loads(body) == page


def test_duplicate_keys_keep_the_last_as_json_loads_does() -> None:
    body = b'{"a": 1, "pad": "' + b"x" * LARGE_BODY + b'", "a": 2}'
    assert parse_json(body)["a"] == json.loads(body)["a"] == 2


@pytest.mark.parametrize(
    "bad",
    [
        lambda b: b + b" trailing",  # one JSON value, then more
        lambda b: b + b" {}",  # two values
        lambda b: b[:-1],  # cut short
        lambda b: b"<html>" + b,  # not JSON at all
    ],
)
def test_a_large_body_that_is_not_one_json_value_is_a_value_error(bad: Any) -> None:
    body = bad(_large(list(range(1000))))
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        parse_json(body)


def test_what_the_incremental_parser_does_not_take_is_left_to_json_loads() -> None:
    with_bom = b"\xef\xbb\xbf" + _large([1, 2])  # json.loads reads a UTF-8 BOM; yajl does not
    assert parse_json(with_bom) == json.loads(with_bom)
    nan = b'{"x": NaN, "pad": "' + b"x" * LARGE_BODY + b'"}'
    assert parse_json(nan)["x"] != parse_json(nan)["x"]  # NaN, as json.loads reads it


def test_a_small_body_is_json_loads() -> None:
    assert parse_json(b'{"a": [1, 2.5]}') == {"a": [1, 2.5]}
    with pytest.raises(ValueError):
        parse_json(b"nope")


class _Value:
    """An object a test can watch being freed."""


async def test_let_go_empties_the_lists_and_frees_what_only_they_held() -> None:
    many = [_Value() for _ in range(LET_GO_STEP * 2 + 7)]
    few = [_Value(), _Value()]
    kept = many[LET_GO_STEP]  # held elsewhere too: it stays
    watched = [weakref.ref(many[0]), weakref.ref(many[-1]), weakref.ref(few[0])]
    await let_go(many, few)
    gc.collect()
    assert many == [] and few == []
    assert [w() for w in watched] == [None, None, None]
    assert isinstance(kept, _Value)


async def test_let_go_of_small_lists_only_clears_them() -> None:
    small = [1, 2, 3]
    await let_go(small, [])
    assert small == []


@pytest.mark.parametrize("n", [0, 1, STEP - 1, STEP, STEP + 1, 3 * STEP + 5])
def test_key_set_is_the_set_of_the_keys(n: int) -> None:
    keys = [f"k{i % max(1, n - 3)}" for i in range(n)]  # a few repeated
    assert key_set(keys) == set(keys)
    assert key_set(iter(keys)) == set(keys)
