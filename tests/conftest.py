"""Shared fixtures. Nothing here replaces our own code: connectors talk HTTP to the bundled sandboxes.

The contract suite (tests/contract/) runs against one harness per provider type syncd knows
(`connectors.registry.PROVIDERS`), each in `tests/contract/harness_<type>.py`. A provider without one fails
every contract test, naming the file to write: a new provider cannot skip the contract by accident.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from connectors.registry import PROVIDERS
from sandboxes.server import ServerThread
from tests.contract.harness import Harness
from tests.e2e import World

if TYPE_CHECKING:
    from tests.test_serve import Daemon

PROVIDER_TYPES = tuple(PROVIDERS)


def _harness(provider: str) -> Harness | str:
    """The provider's harness, or why there is none."""
    name = f"tests.contract.harness_{provider}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return f"provider {provider!r} has no contract harness: write tests/contract/harness_{provider}.py"
    harness = getattr(module, "HARNESS", None)
    if not isinstance(harness, Harness):
        return f"tests/contract/harness_{provider}.py defines no HARNESS (a tests.contract.harness.Harness)"
    return harness


HARNESSES: dict[str, Harness | str] = {provider: _harness(provider) for provider in PROVIDER_TYPES}


@pytest.fixture(params=list(HARNESSES), ids=str)
def harness(request: pytest.FixtureRequest) -> Harness:
    found = HARNESSES[request.param]
    if isinstance(found, str):
        pytest.fail(found)
    return found


@pytest.fixture(autouse=True)
def _quiet_httpx() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[World, str]]:
    """A world of sandboxes served on a loopback port, for `syncd` subprocesses: the world and its URL."""
    world = World(tmp_path)
    with ServerThread(world.app) as server:
        yield world, server.url


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """The `syncd serve` subprocesses a test starts (tests.test_serve.Daemon), killed when it ends."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.close()
