"""Communic8 in the shared contract suite.

The connector is built with OAuth client credentials (not a static access key) so that the token-expiry
contract test exercises a real refresh. Communic8 has no API to create recipients, so `seed_people`
creates them straight in the sandbox and an email that is not a recipient is the "bad contact".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.base import Connector, Contact
from connectors.communic8 import Communic8Settings, build
from connectors.sandbox._core import SandboxApp
from connectors.sandbox.communic8 import DEFAULT_KEYS, Communic8Sandbox
from connectors.settings import BuildContext
from tests.contract.harness import BASE, Harness

CLIENT_ID, CLIENT_SECRET = next(iter(DEFAULT_KEYS.items()))


def _c8(sandbox: SandboxApp) -> Communic8Sandbox:
    assert isinstance(sandbox, Communic8Sandbox)
    return sandbox


class Communic8Harness(Harness):
    type = "communic8"
    page_cap = None  # a group's members come inline (`leads`) in one GET

    def sandbox(self) -> SandboxApp:
        return Communic8Sandbox()

    def settings(self, **overrides: Any) -> Communic8Settings:
        values: dict[str, Any] = {
            "name": "c8",
            "type": "communic8",
            "base_url": BASE + "/int/v1",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "rate_limit": 1e6,
            "retry": {"backoff_base": 0},
        }
        values.update(overrides)
        return Communic8Settings.model_validate(values)

    def connector(
        self,
        sandbox: SandboxApp,
        *,
        bad_credentials: bool = False,
        ctx: BuildContext | None = None,
        **overrides: Any,
    ) -> Connector:
        if bad_credentials:
            overrides.setdefault("client_secret", "not-the-secret")
        ctx = ctx or BuildContext()
        ctx.transport = self.transport(sandbox)
        return build(self.settings(**overrides), ctx)

    def seed_group(self, sandbox: SandboxApp, name: str, emails: Sequence[str] = ()) -> str:
        return _c8(sandbox).add_group(name, list(emails))

    def seed_people(self, sandbox: SandboxApp, emails: Sequence[str]) -> None:
        for email in emails:
            _c8(sandbox).add_recipient(email, "Test", "Person")

    def members(self, sandbox: SandboxApp, group_id: str) -> set[str]:
        return {e.lower() for e in _c8(sandbox).group_emails(group_id)}

    def bad_contacts(self, sandbox: SandboxApp) -> list[Contact]:
        return [self.contact("not.a.recipient@example.com")]

    def expire_tokens(self, sandbox: SandboxApp) -> bool:
        _c8(sandbox).revoke_tokens()
        return True

    def read_requests(self, members: int) -> int | None:
        return 1  # one GET /recipientGroup/{id}, plus a directory read only when a lead id is unknown


HARNESS = Communic8Harness()
