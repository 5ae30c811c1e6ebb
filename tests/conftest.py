"""Shared fixtures. Nothing here replaces our own code: connectors talk HTTP to the bundled sandboxes."""

from __future__ import annotations

import importlib
import logging

import pytest

from tests.contract.harness import Harness

PROVIDER_TYPES = ("giftronaut", "communic8", "stannp", "bitcaster", "cleverreach")


def _harnesses() -> list[Harness]:
    found = []
    for name in PROVIDER_TYPES:
        try:
            module = importlib.import_module(f"tests.contract.harness_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tests.contract.harness_{name}":
                raise
            continue
        found.append(module.HARNESS)
    return found


HARNESSES = _harnesses()


@pytest.fixture(params=HARNESSES, ids=lambda h: h.type)
def harness(request: pytest.FixtureRequest) -> Harness:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _quiet_httpx() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
