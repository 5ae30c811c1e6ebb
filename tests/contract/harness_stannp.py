"""Stannp in the shared contract suite.

Stannp needs a postal address for every recipient it creates, so `contact()` gives one. People the suite
calls "known" are existing recipients of the account (added by id with `groups/add`); a contact without
an address is the "bad contact": `recipients/new` refuses it. The sandbox's plan limit is raised so the
quota headers (still sent) do not slow the suite down; pacing has its own tests in tests/test_stannp.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.base import Contact, PostalAddress
from connectors.sandbox._core import SandboxApp
from connectors.sandbox.stannp import DEFAULT_KEY, PAGE_MAX, StannpSandbox
from tests.contract.harness import Harness

ADDRESS = PostalAddress(line1="1 Test Street", line2=None, city="Leeds", postcode="LS1 1AA", country="GB")


def _sandbox(sandbox: SandboxApp) -> StannpSandbox:
    assert isinstance(sandbox, StannpSandbox)
    return sandbox


class StannpHarness(Harness):
    type = "stannp"
    page_cap = PAGE_MAX
    name = "stannp"
    api_root = "/v1"
    bad_credential = {"api_key": "not-the-key"}

    def credentials(self) -> dict[str, Any]:
        return {"api_key": DEFAULT_KEY}

    def sandbox(self) -> StannpSandbox:
        return StannpSandbox(limit=1_000_000)

    def seed_group(self, sandbox: SandboxApp, name: str, emails: Sequence[str] = ()) -> str:
        return _sandbox(sandbox).add_group(name, emails)

    def seed_people(self, sandbox: SandboxApp, emails: Sequence[str]) -> None:
        sb = _sandbox(sandbox)
        for email in emails:
            if not sb.recipients_with_email(email):
                sb.add_recipient(email)

    def members(self, sandbox: SandboxApp, group_id: str) -> set[str]:
        return {e.lower() for e in _sandbox(sandbox).group_emails(group_id)}

    def contact(self, email: str) -> Contact:
        return Contact(email=email, first_name="Test", last_name="Person", address=ADDRESS)

    def bad_contacts(self, sandbox: SandboxApp) -> list[Contact]:
        # No postal address: recipients/new answers 400 "address1, postcode, country are required".
        return [Contact(email="no.address@example.com", first_name="No", last_name="Address")]

    def read_requests(self, members: int) -> int | None:
        # pages of 1000; a page shorter than that (possibly empty) ends the read
        return members // PAGE_MAX + 1


HARNESS = StannpHarness()
