"""The contract suite's view of CleverReach: the connector built with OAuth client credentials (so a token
can expire mid-run) against `CleverReachSandbox`, whose state is read directly as the ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.base import Contact
from sandboxes._core import SandboxApp
from sandboxes.cleverreach import PAGE_CAP, CleverReachSandbox
from tests.contract.harness import Harness

CLIENT_ID = "syncd-contract"
CLIENT_SECRET = "contract-client-secret"  # a test value, not a credential
BLOCKED = "blocked.address@example.com"


def _sandbox(sandbox: SandboxApp) -> CleverReachSandbox:
    assert isinstance(sandbox, CleverReachSandbox)
    return sandbox


class CleverReachHarness(Harness):
    type = "cleverreach"
    page_cap = PAGE_CAP
    name = "cr"
    api_root = "/v3"
    bad_credential = {"client_secret": "not-the-secret"}

    def credentials(self) -> dict[str, Any]:
        return {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    def sandbox(self) -> CleverReachSandbox:
        return CleverReachSandbox(clients={CLIENT_ID: CLIENT_SECRET})

    def seed_group(self, sandbox: SandboxApp, name: str, emails: Sequence[str] = ()) -> str:
        return str(_sandbox(sandbox).add_group(name, emails))

    def members(self, sandbox: SandboxApp, group_id: str) -> set[str]:
        return _sandbox(sandbox).active_emails(group_id)

    def bad_contacts(self, sandbox: SandboxApp) -> list[Contact]:
        _sandbox(sandbox).blacklist(BLOCKED)
        return [self.contact(BLOCKED)]

    def expire_tokens(self, sandbox: SandboxApp) -> bool:
        _sandbox(sandbox).revoke_tokens()
        return True

    def read_requests(self, members: int) -> int | None:
        # pages of 5000 from page 0; the first short (possibly empty) page ends the read
        return members // PAGE_CAP + 1


HARNESS = CleverReachHarness()
