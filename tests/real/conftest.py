"""Tests against a REAL Bitcaster server (see tests/real/harness.py). Without one (REAL_BITCASTER_URL and the
rest unset) they skip, saying why; with SYNCD_REQUIRE_REAL_BITCASTER=1 (CI sets it) they fail instead.

Every test starts with a fresh throttle budget: FLUSHDB on the throttle's Redis."""

from __future__ import annotations

import os

import pytest

from tests.real.harness import REQUIRE, RealBitcaster, RealBitcasterHarness, flush_throttle, from_environment


@pytest.fixture(scope="session")
def real() -> RealBitcaster:
    env = from_environment()
    if isinstance(env, str):
        reason = f'no real Bitcaster server: {env}. Start one with: eval "$(../shared/tools/real-bitcaster start)"'
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{REQUIRE}=1 but {reason}")
        pytest.skip(reason)
    return env


@pytest.fixture(autouse=True)
def _fresh_throttle(real: RealBitcaster) -> None:
    flush_throttle(real.throttle_redis)


@pytest.fixture
def harness(real: RealBitcaster) -> RealBitcasterHarness:
    """The contract suite's harness: the real server (overrides tests/conftest.py's sandbox harnesses here)."""
    return RealBitcasterHarness(real)
