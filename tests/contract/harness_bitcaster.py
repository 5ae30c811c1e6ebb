"""Bitcaster in the shared contract suite.

Bitcaster cannot create lists or remove members (the suite checks that the connector says so and sends
nothing), and its `add/` accepts only addresses that already have an address record: `seed_people`
creates those records straight in the sandbox, and an address without one is the "bad contact". Member
reads are one unpaginated GET. The key is static, so there is no token to expire. The sandbox's throttle
(30 requests per 60 s per key) is off here: pacing and 429s are tested in tests/test_bitcaster.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.base import Contact
from connectors.sandbox._core import SandboxApp
from connectors.sandbox.bitcaster import API, DEFAULT_KEY, DEFAULT_ORG, DEFAULT_PROJECT, BitcasterSandbox
from tests.contract.harness import Harness


def _bc(sandbox: SandboxApp) -> BitcasterSandbox:
    assert isinstance(sandbox, BitcasterSandbox)
    return sandbox


class BitcasterHarness(Harness):
    type = "bitcaster"
    page_cap = None  # GET d/{pk}/m/ answers every member at once (documented: no pagination)
    name = "bc"
    api_root = API
    bad_credential = {"token": "not-a-bitcaster-key"}

    def credentials(self) -> dict[str, Any]:
        return {"token": DEFAULT_KEY, "organization": DEFAULT_ORG, "project": DEFAULT_PROJECT}

    def sandbox(self) -> SandboxApp:
        sandbox = BitcasterSandbox()
        sandbox.rate_limit = None
        return sandbox

    def seed_group(self, sandbox: SandboxApp, name: str, emails: Sequence[str] = ()) -> str:
        return str(_bc(sandbox).add_list(name, emails))

    def seed_people(self, sandbox: SandboxApp, emails: Sequence[str]) -> None:
        for email in emails:
            _bc(sandbox).add_address(email)

    def members(self, sandbox: SandboxApp, group_id: str) -> set[str]:
        return {e.lower() for e in _bc(sandbox).list_emails(group_id)}

    def bad_contacts(self, sandbox: SandboxApp) -> list[Contact]:
        return [self.contact("no.address.record@example.com")]

    def expire_tokens(self, sandbox: SandboxApp) -> bool:
        return False  # a static API key

    def read_requests(self, members: int) -> int | None:
        return 1  # one GET d/{pk}/m/, whatever the size


HARNESS = BitcasterHarness()
