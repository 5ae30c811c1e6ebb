"""Every bundled sandbox, seeded with a small believable world, for `syncd demo` and `syncd sandbox`.

Each provider contributes its sandbox, the path it is mounted under, the config entry that points syncd
at it, and whatever the API needs to exist beforehand: Communic8 cannot create recipients, so its directory
is seeded (one person is deliberately left out of it, and out of Bitcaster's address records, to show how
syncd reports that); Bitcaster's lists exist already (a 3.1.2 server would create missing ones, an older one
cannot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sandboxes._core import Mount, SandboxApp
from sandboxes.bitcaster import DEFAULT_KEY as BC_KEY
from sandboxes.bitcaster import DEFAULT_ORG as BC_ORG
from sandboxes.bitcaster import DEFAULT_PROJECT as BC_PROJECT
from sandboxes.bitcaster import BitcasterSandbox
from sandboxes.cleverreach import CleverReachSandbox
from sandboxes.communic8 import DEFAULT_KEYS, Communic8Sandbox
from sandboxes.giftronaut import DEFAULT_CLIENTS as GT_CLIENTS
from sandboxes.giftronaut import GiftronautSandbox
from sandboxes.hubspot import DEFAULT_TOKEN as HUBSPOT_TOKEN
from sandboxes.hubspot import HubSpotSandbox
from sandboxes.stannp import DEFAULT_KEY as STANNP_KEY
from sandboxes.stannp import StannpSandbox


@dataclass(frozen=True)
class Address:
    line1: str
    line2: str | None
    city: str
    postcode: str
    country: str


@dataclass(frozen=True)
class Person:
    """Someone of the demo's world (the sandboxes know nothing of syncd's own types)."""

    email: str
    first_name: str
    last_name: str
    address: Address | None = None

    @property
    def key(self) -> str:
        return self.email.strip().lower()


PEOPLE: tuple[Person, ...] = (
    Person("alice@example.com", "Alice", "Moreau", Address("1 Main St", None, "Leeds", "LS1 1AA", "GB")),
    Person("Bob.Stone@example.com", "Bob", "Stone", Address("2 Park Row", None, "Leeds", "LS1 5HD", "GB")),
    Person("carol@example.com", "Carol", "Nguyen", Address("3 Mill Hill", None, "Leeds", "LS1 5DQ", "GB")),
    Person("dan@example.com", "Dan", "Okafor", Address("4 Boar Lane", None, "Leeds", "LS1 6EN", "GB")),
    Person("erin@example.de", "Erin", "Vogel", Address("Hauptstr. 5", None, "Berlin", "10115", "DE")),
    Person("felix@example.de", "Felix", "Brandt", Address("Ringstr. 6", None, "Berlin", "10117", "DE")),
    Person("greta@example.de", "Greta", "Klein"),  # no postal address
    Person("zoe@example.com", "Zoe", "Achterberg"),  # not in Communic8's directory
)
NOT_IN_COMMUNIC8 = "zoe@example.com"
STALE = ("old.subscriber@example.de", "left.company@example.de")  # in CleverReach's list already
UNSUBSCRIBED = "felix@example.de"  # unsubscribed from CleverReach's list: never subscribed again


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


def build_world(people: Sequence[Person] = PEOPLE) -> list[SandboxProvider]:
    c8 = Communic8Sandbox()
    for p in people:
        if p.key != NOT_IN_COMMUNIC8:
            c8.add_recipient(p.email, p.first_name or "", p.last_name or "")
    c8_key = next(iter(DEFAULT_KEYS.values()))

    cr = CleverReachSandbox(clients={"syncd-demo": "demo-client-secret"})
    news = cr.add_group("Newsletter DE", [STALE[0], STALE[1], "erin@example.de"])
    cr.unsubscribe(news, UNSUBSCRIBED)  # left the newsletter at CleverReach; still on the HubSpot list

    gt = GiftronautSandbox()  # recipients are created as needed; one exists already
    gt_client, gt_secret = next(iter(GT_CLIENTS.items()))
    gt.add_recipient("carol@example.com", "Carol", "Nguyen")

    sp = StannpSandbox()  # the lowest plan: 300 requests/min, with X-RateLimit-* headers
    alice = people[0] if people else None
    if alice is not None and alice.address is not None:  # alice exists already: added by id, not created
        a = alice.address
        sp.add_recipient(
            alice.email,
            firstname=alice.first_name or "",
            lastname=alice.last_name or "",
            address1=a.line1 or "",
            city=a.city or "",
            postcode=a.postcode or "",
            country=a.country or "",
        )

    bc = BitcasterSandbox(release="3.1.2")  # cannot remove members; its lists exist already
    for p in people:
        if p.key != NOT_IN_COMMUNIC8:  # no address record in Bitcaster either: shown as a reject
            bc.add_address(p.email)
    bc.add_list("US Sales Team", ["alice@example.com"])
    bc.add_list("Newsletter DE", ["erin@example.de", "left.company@example.de"])

    return [
        SandboxProvider("c8", "communic8", "communic8", c8, {"token": c8_key}, "/int/v1"),
        SandboxProvider(
            "cr",
            "cleverreach",
            "cleverreach",
            cr,
            {"client_id": "syncd-demo", "client_secret": "demo-client-secret"},
            "/v3",
        ),
        SandboxProvider(
            "gt", "giftronaut", "giftronaut", gt, {"client_id": gt_client, "client_secret": gt_secret}, "/api/v1"
        ),
        SandboxProvider("sp", "stannp", "stannp", sp, {"api_key": STANNP_KEY}, "/v1"),
        SandboxProvider(
            "bc",
            "bitcaster",
            "bitcaster",
            bc,
            # the default pacing: up to 30 requests at once, never more than 30 in any 60 s (the server's throttle)
            {"token": BC_KEY, "organization": BC_ORG, "project": BC_PROJECT},
            "/api",
        ),
    ]


NEWSLETTER_DE = ("erin@example.de", "felix@example.de", "greta@example.de")  # HubSpot list "Newsletter DE"


@dataclass
class SandboxCrm:
    """A CRM sandbox desired groups are read from: where it is mounted and its `sources:` entry."""

    type: str
    prefix: str  # mounted under http://host:port/<prefix>
    app: SandboxApp
    entry: dict[str, Any] = field(default_factory=dict)  # source keys besides type/base_url

    def source_entry(self, server_url: str) -> dict[str, Any]:
        return {"type": self.type, "base_url": f"{server_url.rstrip('/')}/{self.prefix}", **self.entry}


def build_crms(people: Sequence[Person] = PEOPLE, *, targets: Sequence[str] = ()) -> list[SandboxCrm]:
    """HubSpot, holding everyone as contacts, with a list "Newsletter DE": the German subscribers plus one
    contact without an email, which syncd reports as a reject."""
    hs = HubSpotSandbox()
    ids: dict[str, str] = {}
    for p in people:
        a = p.address
        extra = {} if a is None else {"address": a.line1, "city": a.city, "zip": a.postcode, "country": a.country}
        ids[p.key] = hs.add_contact(p.email, p.first_name, p.last_name, **extra)
    no_email = hs.add_contact(None, "Hans", "Ohnemail")
    list_id = hs.add_list("Newsletter DE", [*(ids[e] for e in NEWSLETTER_DE if e in ids), no_email])
    group: dict[str, Any] = {"name": "Newsletter DE", "list_id": list_id, "removal_policy": "mirror"}
    if targets:
        group["targets"] = list(targets)
    entry = {
        "token": HUBSPOT_TOKEN,
        "groups": [group],
        "properties": {
            "address.line1": "address",
            "address.city": "city",
            "address.postcode": "zip",
            "address.country": "country",
        },
    }
    return [SandboxCrm("hubspot", "hubspot", hs, entry)]


def mount(world: Sequence[SandboxProvider], crms: Sequence[SandboxCrm] = ()) -> Mount:
    return Mount({**{p.prefix: p.app for p in world}, **{c.prefix: c.app for c in crms}})
