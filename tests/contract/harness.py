"""What the shared contract suite needs to know about one provider and the server it runs against.

Each provider has a `harness_<type>.py` beside this file defining `HARNESS`, an instance of a `Harness`
subclass (tests/conftest.py fails every contract test of a provider in `connectors.registry.PROVIDERS` that
has none). The suite in `test_contract.py` runs every test against every harness; the harness is the only
provider-specific code, and it talks to the server's state directly (the ground truth), never through the
connector under test.

The server is usually the provider's sandbox, but need not be: `tests/real/` runs the same suite against a
real Bitcaster server. So the suite asks the harness for what it cannot invent there: the people the provider
knows (`people`: a sandbox harness invents them, a real server has the ones it has) and names of groups no
earlier run made (`group_name`). What it asks of the server object itself is the `Server` protocol below: the
requests the connector sent, and faults to inject.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from connectors.base import Connector, Contact
from connectors.registry import PROVIDERS
from connectors.settings import BuildContext
from sandboxes._core import Fault, Recorded

BASE = "http://127.0.0.1"  # loopback: plain http allowed; the transport never opens a socket


def emails(n: int, prefix: str = "member", domain: str = "example.com") -> list[str]:
    return [f"{prefix}{i:05d}@{domain}" for i in range(n)]


class Server(Protocol):
    """What the suite asks of the server a harness gives it (a `SandboxApp` is one): the requests the connector
    sent it, and faults to answer some of them with."""

    requests: list[Recorded]

    @property
    def mutating_count(self) -> int: ...

    def count(self, *, method: str | None = None, path: str | None = None, mutating: bool | None = None) -> int: ...

    def clear_log(self) -> None: ...

    def inject(self, fault: Fault) -> Fault: ...


class Harness:
    type: str = ""
    # The most members one read page returns; None when member reads are not paginated.
    page_cap: int | None = None

    def sandbox(self) -> Any:
        """A fresh server for one test (a `Server`; its own type for the harness's other methods)."""
        raise NotImplementedError

    def people(self, n: int, prefix: str = "member", domain: str = "example.com") -> list[str]:
        """Up to `n` distinct emails the suite may use as people (fewer only when the provider has fewer: a real
        server knows the people it knows). A sandbox harness invents them; `seed_people` makes them known."""
        return emails(n, prefix, domain)

    def group_name(self, sandbox: Any, name: str) -> str:
        """The name to give a group in this test: `name` on a fresh sandbox, made unique on a shared server."""
        return name

    name: str = ""  # the provider's name in the settings
    api_root: str = ""  # the versioned API path on the sandbox, e.g. "/int/v1"
    bad_credential: dict[str, str] = {}  # settings that the sandbox refuses

    def credentials(self) -> dict[str, Any]:
        """The settings keys that authenticate against a fresh sandbox."""
        raise NotImplementedError

    def settings(self, **overrides: Any) -> Any:
        """Provider settings pointing at the sandbox, with unlimited pacing and zero backoff."""
        values: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "base_url": BASE + self.api_root,
            **self.credentials(),
            "rate_limit": 1e6,
            "retry": {"backoff_base": 0},
            **overrides,
        }
        return PROVIDERS[self.type].settings.model_validate(values)

    def connector(
        self,
        sandbox: Any,
        *,
        bad_credentials: bool = False,
        ctx: BuildContext | None = None,
        **overrides: Any,
    ) -> Connector:
        """The connector under test, its HTTP client bound to `sandbox` unless `ctx` brings a transport."""
        if bad_credentials:
            overrides = {**self.bad_credential, **overrides}
        ctx = ctx or BuildContext()
        if ctx.transport is None:
            ctx = dataclasses.replace(ctx, transport=self.transport(sandbox))
        return PROVIDERS[self.type].build(self.settings(**overrides), ctx)

    def transport(self, sandbox: Any) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=sandbox)

    def seed_group(self, sandbox: Any, name: str, emails: Sequence[str] = ()) -> str:
        """Create a group straight in the sandbox's state, with these members; return its id."""
        raise NotImplementedError

    def seed_people(self, sandbox: Any, emails: Sequence[str]) -> None:
        """Make these people known to the provider, where it only accepts people it already knows."""

    def members(self, sandbox: Any, group_id: str) -> set[str]:
        """The group's member emails, lower-cased, from the sandbox's state."""
        raise NotImplementedError

    def contact(self, email: str) -> Contact:
        """A contact this provider accepts (Stannp needs a postal address)."""
        return Contact(email=email, first_name="Test", last_name="Person")

    def bad_contacts(self, sandbox: Any) -> list[Contact]:
        """Contacts the provider refuses at add time (not invalid emails: syncd never sends those)."""
        return []

    def expire_tokens(self, sandbox: Any) -> bool:
        """Revoke every issued OAuth token; False when the API uses static keys."""
        return False

    def read_requests(self, members: int) -> int | None:
        """Requests `read_members` costs for a group of this size on a fresh connector, when known."""
        return None
