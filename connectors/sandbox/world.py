"""Every bundled sandbox, seeded with a small believable world, for `syncd demo` and `syncd sandbox`.

Each provider contributes its sandbox, the path it is mounted under, the config entry that points syncd
at it, and whatever the API needs to exist beforehand (Communic8 cannot create recipients, so its
directory is seeded; one person is deliberately left out of it to show how syncd reports that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base import Contact, PostalAddress
from connectors.sandbox._core import Mount, SandboxApp
from connectors.sandbox.cleverreach import CleverReachSandbox
from connectors.sandbox.communic8 import DEFAULT_KEYS, Communic8Sandbox

PEOPLE: tuple[Contact, ...] = (
    Contact("alice@example.com", "Alice", "Moreau", PostalAddress("1 Main St", None, "Leeds", "LS1 1AA", "GB")),
    Contact("Bob.Stone@example.com", "Bob", "Stone", PostalAddress("2 Park Row", None, "Leeds", "LS1 5HD", "GB")),
    Contact("carol@example.com", "Carol", "Nguyen", PostalAddress("3 Mill Hill", None, "Leeds", "LS1 5DQ", "GB")),
    Contact("dan@example.com", "Dan", "Okafor", PostalAddress("4 Boar Lane", None, "Leeds", "LS1 6EN", "GB")),
    Contact("erin@example.de", "Erin", "Vogel", PostalAddress("Hauptstr. 5", None, "Berlin", "10115", "DE")),
    Contact("felix@example.de", "Felix", "Brandt", PostalAddress("Ringstr. 6", None, "Berlin", "10117", "DE")),
    Contact("greta@example.de", "Greta", "Klein"),  # no postal address
    Contact("zoe@example.com", "Zoe", "Achterberg"),  # not in Communic8's directory
)
NOT_IN_COMMUNIC8 = "zoe@example.com"
STALE = ("old.subscriber@example.de", "left.company@example.de")  # in CleverReach's list already


@dataclass
class SandboxProvider:
    name: str  # the provider's name in the generated config
    type: str
    prefix: str  # mounted under http://host:port/<prefix>
    app: SandboxApp
    entry: dict[str, Any] = field(default_factory=dict)  # config keys besides name/type/base_url
    api_root: str = ""  # the versioned path under the prefix

    def config_entry(self, server_url: str) -> dict[str, Any]:
        base = f"{server_url.rstrip('/')}/{self.prefix}{self.api_root}"
        return {"name": self.name, "type": self.type, "base_url": base, **self.entry}


def build_world(people: Sequence[Contact] = PEOPLE) -> list[SandboxProvider]:
    c8 = Communic8Sandbox()
    for p in people:
        if p.key != NOT_IN_COMMUNIC8:
            c8.add_recipient(p.email, p.first_name or "", p.last_name or "")
    key_value = next(iter(DEFAULT_KEYS.values()))

    cr = CleverReachSandbox(clients={"syncd-demo": "demo-client-secret"})
    cr.add_group("Newsletter DE", [STALE[0], STALE[1], "erin@example.de"])

    return [
        SandboxProvider("c8", "communic8", "communic8", c8, {"token": key_value}, "/int/v1"),
        SandboxProvider(
            "cr",
            "cleverreach",
            "cleverreach",
            cr,
            {"client_id": "syncd-demo", "client_secret": "demo-client-secret"},
            "/v3",
        ),
    ]


def mount(world: Sequence[SandboxProvider]) -> Mount:
    return Mount({p.prefix: p.app for p in world})
