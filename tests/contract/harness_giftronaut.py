"""Giftronaut in the shared contract suite.

The connector is built with OAuth client credentials (Giftronaut's only auth), so the token-expiry test
exercises a real refresh. Giftronaut can create recipients, but "known people" in the suite are seeded as
recipients so that an add of a known person costs exactly one write (the member add). The refused contact
is one whose name is longer than the sandbox's (assumed) field limit: a VALIDATION_ERROR at create time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from connectors.base import Contact
from sandboxes._core import SandboxApp
from sandboxes.giftronaut import DEFAULT_CLIENTS, MAX_TEXT, PAGE_CAP, GiftronautSandbox
from tests.contract.harness import Harness

CLIENT_ID, CLIENT_SECRET = next(iter(DEFAULT_CLIENTS.items()))


def _gt(sandbox: SandboxApp) -> GiftronautSandbox:
    assert isinstance(sandbox, GiftronautSandbox)
    return sandbox


class GiftronautHarness(Harness):
    type = "giftronaut"
    page_cap = PAGE_CAP
    name = "gt"
    api_root = "/api/v1"
    bad_credential = {"client_secret": "not-the-secret"}

    def credentials(self) -> dict[str, Any]:
        return {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    def sandbox(self) -> GiftronautSandbox:
        return GiftronautSandbox()

    def seed_group(self, sandbox: SandboxApp, name: str, emails: Sequence[str] = ()) -> str:
        return _gt(sandbox).add_group(name, emails)

    def seed_people(self, sandbox: SandboxApp, emails: Sequence[str]) -> None:
        for email in emails:
            _gt(sandbox).add_recipient(email, "Test", "Person")

    def members(self, sandbox: SandboxApp, group_id: str) -> set[str]:
        return {e.lower() for e in _gt(sandbox).group_emails(group_id)}

    def bad_contacts(self, sandbox: SandboxApp) -> list[Contact]:
        return [Contact("long.name@example.com", first_name="N" * (MAX_TEXT + 1), last_name="Person")]

    def expire_tokens(self, sandbox: SandboxApp) -> bool:
        _gt(sandbox).revoke_tokens()
        return True

    def read_requests(self, members: int) -> int | None:
        # pages of 100 from page 1; the first page's `total` says how many more there are
        return max(1, math.ceil(members / PAGE_CAP))


HARNESS = GiftronautHarness()
