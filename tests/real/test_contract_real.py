"""The shared contract suite (tests/contract/test_contract.py), unchanged, against a real Bitcaster server: every
test function of the suite is collected here too, with this directory's `harness` fixture."""

from __future__ import annotations

from tests.contract import test_contract as _suite

globals().update({name: test for name, test in vars(_suite).items() if name.startswith("test_")})
