"""Bitcaster in the shared contract suite, against its sandbox (a 3.1.2 server: it creates lists).

Bitcaster cannot remove members (the suite checks that the connector says so and sends nothing), and its
`add/` accepts only addresses that already have an address record, spelled exactly so: `seed_people` creates
those records straight in the sandbox, and an address without one is the "bad contact". Member reads are one
unpaginated GET (an empty one is checked against `GET d/`, since Bitcaster answers `[]` for a list that does
not exist). The key is static, so there is no token to expire. The sandbox's throttle (30 requests per 60 s
per key) and the connector's window pacing are off here: pacing and 429s are tested in tests/test_bitcaster.py
(and against a real server in tests/real/). `tests/real/harness.py` runs the same suite against a real server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.base import Contact
from sandboxes.bitcaster import API, DEFAULT_KEY, DEFAULT_ORG, DEFAULT_PROJECT, BitcasterSandbox
from tests.contract.harness import Harness


def _bc(sandbox: Any) -> BitcasterSandbox:
    assert isinstance(sandbox, BitcasterSandbox)
    return sandbox


class BitcasterHarness(Harness):
    type = "bitcaster"
    page_cap = None  # GET d/{pk}/m/ answers every member at once (no pagination)
    name = "bc"
    api_root = API
    bad_credential = {"token": "not-a-bitcaster-key"}

    def credentials(self) -> dict[str, Any]:
        return {"token": DEFAULT_KEY, "organization": DEFAULT_ORG, "project": DEFAULT_PROJECT}

    def settings(self, **overrides: Any) -> Any:
        return super().settings(**{"throttle_requests": None, **overrides})  # no window pacing (see above)

    def sandbox(self) -> BitcasterSandbox:
        sandbox = BitcasterSandbox(release="3.1.2")
        sandbox.rate_limit = None
        return sandbox

    def seed_group(self, sandbox: Any, name: str, emails: Sequence[str] = ()) -> str:
        return str(_bc(sandbox).add_list(name, emails))

    def seed_people(self, sandbox: Any, emails: Sequence[str]) -> None:
        for email in emails:
            _bc(sandbox).add_address(email)

    def members(self, sandbox: Any, group_id: str) -> set[str]:
        return {e.lower() for e in _bc(sandbox).list_emails(group_id)}

    def bad_contacts(self, sandbox: Any) -> list[Contact]:
        return [self.contact("no.address.record@example.com")]

    def expire_tokens(self, sandbox: Any) -> bool:
        return False  # a static API key

    def read_requests(self, members: int) -> int | None:
        # one GET d/{pk}/m/, whatever the size; an empty answer is believed once GET d/ lists the list
        return 1 if members else 2


HARNESS = BitcasterHarness()
