"""Communic8 in the shared contract suite.

The connector is built with OAuth client credentials (not a static access key) so that the token-expiry
contract test exercises a real refresh. Communic8 has no API to create recipients, so `seed_people`
creates them straight in the sandbox. The "bad contacts" are the three ways Communic8 refuses someone: an
email that is not a recipient, a recipient the API refuses inside an accepted call (`errorLog`), and a
recipient the directory lists as suppressed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.base import Contact
from sandboxes._core import SandboxApp
from sandboxes.communic8 import DEFAULT_KEYS, Communic8Sandbox
from tests.contract.harness import Harness

CLIENT_ID, CLIENT_SECRET = next(iter(DEFAULT_KEYS.items()))


def _c8(sandbox: SandboxApp) -> Communic8Sandbox:
    assert isinstance(sandbox, Communic8Sandbox)
    return sandbox


class Communic8Harness(Harness):
    type = "communic8"
    page_cap = None  # a group's members come inline (`leads`) in one GET
    name = "c8"
    api_root = "/int/v1"
    bad_credential = {"client_secret": "not-the-secret"}

    def credentials(self) -> dict[str, Any]:
        return {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    def sandbox(self) -> SandboxApp:
        return Communic8Sandbox()

    def seed_group(self, sandbox: SandboxApp, name: str, emails: Sequence[str] = ()) -> str:
        return _c8(sandbox).add_group(name, list(emails))

    def seed_people(self, sandbox: SandboxApp, emails: Sequence[str]) -> None:
        for email in emails:
            _c8(sandbox).add_recipient(email, "Test", "Person")

    def members(self, sandbox: SandboxApp, group_id: str) -> set[str]:
        return {e.lower() for e in _c8(sandbox).group_emails(group_id)}

    def bad_contacts(self, sandbox: SandboxApp) -> list[Contact]:
        c8 = _c8(sandbox)
        c8.add_recipient("refused.in.errorlog@example.com", "Test", "Person")
        c8.refuse("refused.in.errorlog@example.com", "Recipient is unsubscribed")
        c8.add_recipient("suppressed@example.com", "Test", "Person", suppressed=True)
        return [
            self.contact("not.a.recipient@example.com"),
            self.contact("refused.in.errorlog@example.com"),
            self.contact("suppressed@example.com"),
        ]

    def expire_tokens(self, sandbox: SandboxApp) -> bool:
        _c8(sandbox).revoke_tokens()
        return True

    def read_requests(self, members: int) -> int | None:
        return 1  # one GET /recipientGroup/{id}, plus a directory read only when a lead id is unknown


HARNESS = Communic8Harness()
