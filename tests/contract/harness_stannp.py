"""Stannp in the shared contract suite.

Stannp needs a name and a postal address for every recipient it creates (the UK API's `recipients/create`
requires firstname, lastname, address1, city, postcode and country), so `contact()` gives them all. People the
suite calls "known" are existing recipients of the account (added by id with `groups/add`). The "bad contacts"
are one without an address (the connector rejects it before sending, naming the fields it lacks) and one whose
country is not an ISO 3166-1 alpha-2 code (`recipients/create` refuses it). The sandbox serves the UK API (the
default for a loopback base_url); its plan limit is raised so the quota headers (still sent) do not slow the
suite down; pacing, regions and idempotency keys have their own tests in tests/test_stannp.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.base import Contact, PostalAddress
from sandboxes._core import SandboxApp
from sandboxes.stannp import DEFAULT_KEY, PAGE_MAX, StannpSandbox
from tests.contract.harness import Harness

ADDRESS = PostalAddress(line1="1 Test Street", line2=None, city="Leeds", postcode="LS1 1AA", country="GB")
SPELLED_OUT = PostalAddress(line1="1 Test Street", line2=None, city="Leeds", postcode="LS1 1AA", country="England")


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
        return [
            # No postal address: rejected without a request ("missing fields stannp requires: address.city, ...").
            Contact(email="no.address@example.com", first_name="No", last_name="Address"),
            # Sent, and refused: recipients/create answers 400 "country must be an ISO 3166-1 alpha-2 code ...".
            Contact(email="bad.country@example.com", first_name="Bad", last_name="Country", address=SPELLED_OUT),
        ]

    def read_requests(self, members: int) -> int | None:
        # pages of 1000; a page shorter than that (possibly empty) ends the read
        return members // PAGE_MAX + 1


HARNESS = StannpHarness()
