"""Config loading from real files in tmp_path: every problem is one line naming file, line and key."""

from __future__ import annotations

import re
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from connectors.base import Contact, PostalAddress
from connectors.registry import PROVIDERS
from syncd.config import (
    AddressSpec,
    Config,
    ConfigErrors,
    GroupSpec,
    MemberSpec,
    SafetySettings,
    ScheduleSettings,
    ServerSettings,
    StateSettings,
    TargetSpec,
    check_cron,
    load_config,
    load_state_settings,
    parse_duration,
)
from syncd.config.loading import read_yaml
from syncd.errors import ConfigError
from syncd.model import RemovalPolicy
from syncd.sources.hubspot import HubSpotGroupSpec, HubSpotSourceSettings
from syncd.sources.registry import SOURCES
from syncd.sources.sql import SqlSourceSettings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"

C8_TOKEN = "c8-SECRET-token-value-123"
CR_SECRET = "cr-SECRET-client-secret-456"
HS_TOKEN = "pat-na1-SECRET-hubspot-789"
DB_PASSWORD = "db-SECRET-password-012"
ENV = {
    "COMMUNIC8_TOKEN": C8_TOKEN,
    "CLEVERREACH_CLIENT_ID": "syncd-client",
    "CLEVERREACH_CLIENT_SECRET": CR_SECRET,
    "HUBSPOT_TOKEN": HS_TOKEN,
    "CRM_DB_PASSWORD": DB_PASSWORD,
    "GIFTRONAUT_CLIENT_ID": "gt-client",
    "GIFTRONAUT_CLIENT_SECRET": "gt-secret",
    "STANNP_API_KEY": "stannp-key",
    "BITCASTER_API_KEY": "bc-key",
}

# Two providers: lines 1-10. Cases below append to this and count lines from 11.
PROVIDERS_YAML = """\
providers:
  - name: c8
    type: communic8
    base_url: https://acme.communic8.example/int/v1
    token: ${COMMUNIC8_TOKEN}
  - name: cr
    type: cleverreach
    client_id: ${CLEVERREACH_CLIENT_ID}
    client_secret: ${CLEVERREACH_CLIENT_SECRET}
    remove_mode: deactivate
"""


def write(tmp_path: Path, text: str, name: str = "syncd.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env=ENV if env is None else env)


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return info.value


# ------------------------------------------------------------------------------------------ valid files


def test_valid_config_round_trip(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        PROVIDERS_YAML
        + """\
state:
  url: postgresql+psycopg://syncd:dbpass@db.internal/syncd
schedule:
  every: 1h30m
  jitter: 30s
server:
  listen: 127.0.0.1:9200
safety:
  max_removals: 50
  max_removal_ratio: 0.1
groups:
  - name: US Sales Team
    targets: [c8, {provider: cr, group_id: 12}]
    removal_policy: owned
    max_removals: 5
    max_removal_ratio: 0.5
    members:
      - alice@example.com
      - {email: bob@example.com, first_name: Bob, last_name: Stone,
         address: {line1: 1 Main St, city: Leeds, postcode: LS1 1AA, country: GB}}
  - name: Everyone
""",
    )
    assert config.path == tmp_path / "syncd.yaml"
    assert config.state.url == "postgresql+psycopg://syncd:dbpass@db.internal/syncd"
    assert config.state.safe_url == "postgresql+psycopg://syncd:***@db.internal/syncd"
    assert config.schedule == ScheduleSettings(every=timedelta(hours=1, minutes=30), jitter=timedelta(seconds=30))
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9200)
    assert config.safety == SafetySettings(max_removals=50, max_removal_ratio=0.1)

    c8, cr = config.providers
    assert (c8.name, c8.type, c8.base_url) == ("c8", "communic8", "https://acme.communic8.example/int/v1")
    assert c8.token.get_secret_value() == C8_TOKEN  # type: ignore[attr-defined]
    assert (cr.name, cr.type, cr.base_url) == ("cr", "cleverreach", "https://rest.cleverreach.com/v3")
    assert cr.client_secret.get_secret_value() == CR_SECRET  # type: ignore[attr-defined]
    assert config.provider("cr") is cr
    with pytest.raises(KeyError):
        config.provider("nope")

    sales, everyone = config.groups
    assert sales.targets == [TargetSpec(provider="c8"), TargetSpec(provider="cr", group_id="12")]
    assert sales.removal_policy is RemovalPolicy.OWNED
    assert (sales.max_removals, sales.max_removal_ratio) == (5, 0.5)
    assert [m.to_contact() for m in sales.members] == [
        Contact(email="alice@example.com"),
        Contact(
            email="bob@example.com",
            first_name="Bob",
            last_name="Stone",
            address=PostalAddress(line1="1 Main St", city="Leeds", postcode="LS1 1AA", country="GB"),
        ),
    ]
    assert config.targets_of(sales) == sales.targets
    assert everyone.members == [] and everyone.targets is None and everyone.removal_policy is None
    assert config.targets_of(everyone) == [TargetSpec(provider="c8"), TargetSpec(provider="cr")]
    assert config.group("us sales team") is sales


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.state.url == "sqlite:///syncd.db"
    assert config.schedule.every == timedelta(minutes=15) and config.schedule.cron is None
    assert config.schedule.jitter == timedelta(0)
    assert config.server.listen == "0.0.0.0:9108"
    assert config.safety == SafetySettings(max_removals=500, max_removal_ratio=0.25)
    assert config.providers == [] and config.groups == [] and config.sources == []


def test_text_fields_keep_their_yaml_text(tmp_path: Path) -> None:
    """YAML 1.1 would turn these into numbers, booleans and octal; text fields keep what was written."""
    config = load(
        tmp_path,
        PROVIDERS_YAML
        + """\
groups:
  - name: 2024
    targets: [{provider: cr, group_id: 0012}]
    members:
      - {email: nora@example.no, first_name: No, last_name: null, address: {postcode: 01067, country: NO}}
      - 12345
""",
    )
    group = config.groups[0]
    assert group.name == "2024"
    assert group.targets == [TargetSpec(provider="cr", group_id="0012")]
    nora = group.members[0]
    assert (nora.first_name, nora.last_name) == ("No", None)
    assert nora.address == AddressSpec(postcode="01067", country="NO")
    assert group.members[1].email == "12345"  # not a config error: rejected per member later


def test_invalid_emails_are_not_config_errors(tmp_path: Path) -> None:
    config = load(tmp_path, "groups:\n  - name: g\n    members: [not-an-email, ' Alice@Example.COM ', '']\n")
    emails = [m.to_contact().email for m in config.groups[0].members]
    assert emails == ["not-an-email", "Alice@Example.COM", ""]


def test_anchors_merge_keys_and_extension_keys(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
x-retry: &retry
  max_retries: 2
  backoff_base: 0
x-c8: &c8
  type: communic8
  base_url: https://acme.communic8.example/int/v1
  retry: *retry
providers:
  - <<: *c8
    name: c8-eu
    token: ${COMMUNIC8_TOKEN}
  - <<: *c8
    name: c8-us
    base_url: https://us.communic8.example/int/v1
    client_id: 0012
    client_secret: ${COMMUNIC8_TOKEN}
""",
    )
    eu, us = config.providers
    assert (eu.name, eu.base_url, eu.retry.max_retries) == (
        "c8-eu",
        "https://acme.communic8.example/int/v1",
        2,
    )
    assert (us.name, us.base_url) == ("c8-us", "https://us.communic8.example/int/v1")
    assert us.client_id == "0012"  # type: ignore[attr-defined]  # the merged-in type picks the text fields


def test_a_problem_in_an_anchor_is_reported_once(tmp_path: Path) -> None:
    text = "x-c8: &c8\n  type: communic8\n  token: ${NOPE}\nproviders:\n  - <<: *c8\n    name: a\n"
    err = error_of(tmp_path, text)
    assert str(err) == f"{tmp_path / 'syncd.yaml'}:3: x-c8.token: environment variable NOPE is not set"


def test_example_config_loads_and_documents_every_key() -> None:
    config = load_config(EXAMPLE, env=ENV)
    assert {p.type for p in config.providers} == set(PROVIDERS)
    excluded = {name for g in config.groups for name in g.exclude}  # a suppression list may go nowhere
    assert config.groups and all(config.targets_of(g) for g in config.groups if g.name not in excluded)
    forms = [g.targets for g in config.groups if g.targets]
    assert any(t.group_id for ts in forms for t in ts), "the example shows a {provider, group_id} target"
    assert any(m.address for g in config.groups for m in g.members), "the example shows a member mapping"

    text = EXAMPLE.read_text(encoding="utf-8")

    def keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
        out: set[str] = set()
        if model in seen:
            return out
        seen.add(model)
        for name, field in model.model_fields.items():
            out.add(name)
            for sub in _models_in(field.annotation):
                out |= keys(sub, seen)
        return out

    documented = keys(Config, set())
    for spec in PROVIDERS.values():
        assert re.search(rf"type: {spec.type}\b", text), f"config.example.yaml has no {spec.type} provider"
        documented |= keys(spec.settings, set())
    for source in SOURCES.values():
        assert re.search(rf"type: {source.type}\b", text), f"config.example.yaml has no {source.type} source"
        documented |= keys(source.settings, set())
    missing = sorted(k for k in documented if not re.search(rf"\b{re.escape(k)}\b", text))
    assert not missing, f"config.example.yaml does not document: {missing}"


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def test_example_sources_block_is_valid_once_uncommented(tmp_path: Path) -> None:
    """The `sources:` block of the example is commented out (it needs credentials); uncommented, it loads."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = lines.index("# sources:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#") or line.startswith("# ---"):
            break
        block.append(line[2:])
    text = EXAMPLE.read_text(encoding="utf-8").replace("\n".join(lines[start : start + len(block)]), "\n".join(block))
    path = write(tmp_path, text)
    config = load_config(path, env=ENV)
    hubspot, sql = config.sources
    assert isinstance(hubspot, HubSpotSourceSettings) and isinstance(sql, SqlSourceSettings)
    assert hubspot.token.get_secret_value() == HS_TOKEN
    assert [g.name for g in hubspot.groups] == ["Newsletter EN", "Webinar Attendees"]
    assert hubspot.property_map["address.postcode"] == "zip"
    assert sql.group is None and DB_PASSWORD in sql.url and DB_PASSWORD not in repr(config)
    assert config.source_names() == ["hubspot", "crm-replica"]
    assert config.has_query_named_groups


def test_every_field_is_documented() -> None:
    models: list[type[BaseModel]] = [Config, StateSettings, ScheduleSettings, ServerSettings, SafetySettings]
    models += [TargetSpec, AddressSpec, MemberSpec, GroupSpec]
    models += [HubSpotGroupSpec, *(spec.settings for spec in SOURCES.values())]
    for model in models:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


# ------------------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${NAME}", {"NAME": "Sales"}, "Sales"),
        ("Team ${A} and ${B}!", {"A": "one", "B": "two"}, "Team one and two!"),
        ("${MISSING:-fallback}", {}, "fallback"),
        ("${EMPTY:-fallback}", {"EMPTY": ""}, "fallback"),
        ("${SET:-fallback}", {"SET": "given"}, "given"),
        ("x${MISSING:-}y", {}, "xy"),
        ("${MISSING:-a b:c}", {}, "a b:c"),
        ("literal $${HOME} stays", {"HOME": "/root"}, "literal ${HOME} stays"),
        ("$$ and $HOME and $ alone", {"HOME": "/root"}, "$$ and $HOME and $ alone"),
    ],
)
def test_interpolation(tmp_path: Path, value: str, env: dict[str, str], expected: str) -> None:
    config = load(tmp_path, f"groups:\n  - name: '{value}'\n", env)
    assert config.groups[0].name == expected


def test_interpolated_values_are_validated_as_their_field_type(tmp_path: Path) -> None:
    text = """\
safety:
  max_removals: ${MAX_REMOVALS}
  max_removal_ratio: ${RATIO:-0.5}
server:
  listen: ${HOST:-127.0.0.1}:${PORT}
schedule:
  every: ${EVERY:-5m}
"""
    config = load(tmp_path, text, {"MAX_REMOVALS": "42", "PORT": "9300"})
    assert config.safety == SafetySettings(max_removals=42, max_removal_ratio=0.5)
    assert config.server.port == 9300
    assert config.schedule.every == timedelta(minutes=5)
    err = error_of(tmp_path, text, {"MAX_REMOVALS": "many", "PORT": "9300"})
    assert str(err).startswith(f"{tmp_path / 'syncd.yaml'}:2: safety.max_removals: ")


# ---------------------------------------------------------------------------------------- bad inputs

BAD: list[tuple[str, str, dict[str, str] | None, int, str | None, str]] = [
    # id, yaml, env (None: ENV), line, key, message (a substring)
    ("malformed yaml", "state:\n  url: [sqlite:///x.db\nserver: {}\n", None, 2, None, "invalid YAML"),
    ("tab indent", "state:\n\turl: x\n", None, 2, None, "invalid YAML"),
    ("two documents", "state: {}\n---\nserver: {}\n", None, 2, None, "single document"),
    ("top level not a mapping", "- a\n- b\n", None, 1, None, "top level must be a mapping"),
    ("wrong type", "safety:\n  max_removals: lots\n", None, 2, "safety.max_removals", "valid integer"),
    (
        "wrong type nested",
        PROVIDERS_YAML + "    timeout: soon\n",
        None,
        11,
        "providers[1].timeout",
        "valid number",
    ),
    (
        "out of range",
        "safety:\n  max_removal_ratio: 1.5\n",
        None,
        2,
        "safety.max_removal_ratio",
        "less than or equal to 1",
    ),
    ("list expected", "groups: {name: x}\n", None, 1, "groups", "expected a list"),
    ("mapping expected", PROVIDERS_YAML + "  - c9\n", None, 11, "providers[2]", "expected a mapping"),
    ("unknown key top level", "state: {}\nsauces: []\n", None, 2, "sauces", "unknown key"),
    (
        "unknown source type",
        "sources:\n  - type: salesforce\n",
        None,
        2,
        "sources[0].type",
        "unknown source type 'salesforce' (expected one of: hubspot, sql)",
    ),
    ("missing source type", "sources:\n  - url: sqlite:///x.db\n", None, 2, "sources[0].type", "the source type"),
    (
        "hubspot without token",
        "sources:\n  - type: hubspot\n    groups: [{name: N, list_id: 1}]\n",
        None,
        2,
        "sources[0].token",
        "missing required key",
    ),
    (
        "hubspot without groups",
        "sources:\n  - type: hubspot\n    token: t\n    groups: []\n",
        None,
        4,
        "sources[0].groups",
        "at least one group",
    ),
    (
        "hubspot list id not a number",
        "sources:\n  - type: hubspot\n    token: t\n    groups:\n      - {name: N, list_id: my-list}\n",
        None,
        5,
        "sources[0].groups[0].list_id",
        "a HubSpot list id is a number",
    ),
    (
        "hubspot unknown key in group",
        "sources:\n  - type: hubspot\n    token: t\n    groups:\n      - {name: N, list_id: 1, listid: 2}\n",
        None,
        5,
        "sources[0].groups[0].listid",
        "did you mean 'list_id'?",
    ),
    (
        "hubspot http base_url",
        "sources:\n  - type: hubspot\n    token: t\n    base_url: http://api.hubapi.com\n"
        "    groups: [{name: N, list_id: 1}]\n",
        None,
        4,
        "sources[0].base_url",
        "must use https",
    ),
    (
        "hubspot property for an unknown member field",
        "sources:\n  - type: hubspot\n    token: t\n    groups: [{name: N, list_id: 1}]\n"
        "    properties:\n      address.line1: address\n      address.zip: zip\n",
        None,
        7,
        "sources[0].properties.address.zip",
        "not a member field (did you mean 'address.city'?)",
    ),
    (
        "hubspot group targeting no provider",
        PROVIDERS_YAML + "sources:\n  - type: hubspot\n    token: t\n    groups:\n      - name: N\n"
        "        list_id: 1\n        targets: [c8, bc]\n",
        None,
        17,
        "sources[0].groups[0].targets[1]",
        "no provider named 'bc' (configured: c8, cr)",
    ),
    (
        "sql source targeting no provider",
        PROVIDERS_YAML + "sources:\n  - type: sql\n    url: sqlite:///crm.db\n    query: SELECT 1\n"
        "    targets:\n      - bc\n",
        None,
        16,
        "sources[0].targets[0]",
        "no provider named 'bc'",
    ),
    (
        "sql without query",
        "sources:\n  - type: sql\n    url: sqlite:///crm.db\n",
        None,
        2,
        "sources[0].query",
        "missing required key",
    ),
    (
        "sql empty query",
        "sources:\n  - type: sql\n    url: sqlite:///crm.db\n    query: ' ; '\n",
        None,
        4,
        "sources[0].query",
        "must not be empty",
    ),
    (
        "sql bad url",
        "sources:\n  - type: sql\n    url: not a url\n    query: SELECT 1\n",
        None,
        3,
        "sources[0].url",
        "not a valid database URL",
    ),
    (
        "sql unknown dialect",
        "sources:\n  - type: sql\n    url: oracl://u:pw@h/db\n    query: SELECT 1\n",
        None,
        3,
        "sources[0].url",
        "unknown database dialect 'oracl'",
    ),
    (
        "sql group_id without a fixed group",
        PROVIDERS_YAML + "sources:\n  - type: sql\n    url: sqlite:///crm.db\n    query: SELECT 1\n"
        "    targets: [{provider: cr, group_id: '7'}]\n",
        None,
        15,
        "sources[0].targets[0]",
        "set `group` (one fixed group) or drop group_id",
    ),
    (
        "duplicate source names",
        "sources:\n  - {type: sql, name: crm, url: 'sqlite:///a.db', query: SELECT 1}\n"
        "  - {type: sql, name: crm, url: 'sqlite:///b.db', query: SELECT 1}\n",
        None,
        3,
        "sources[1].name",
        "source name 'crm' is already taken by sources[0]",
    ),
    (
        "unknown key nested",
        "server:\n  lisen: 1.2.3.4:80\n",
        None,
        2,
        "server.lisen",
        "unknown key (did you mean 'listen'?)",
    ),
    (
        "unknown key in provider",
        PROVIDERS_YAML + "    tokn: x\n",
        None,
        11,
        "providers[1].tokn",
        "unknown key (did you mean 'token'?)",
    ),
    (
        "unknown key in member",
        "groups:\n  - name: g\n    members:\n      - {email: a@b.c, phone: 1}\n",
        None,
        4,
        "groups[0].members[0].phone",
        "unknown key",
    ),
    (
        "unknown provider type",
        "providers:\n  - name: mc\n    type: mailchimp\n    base_url: https://x.example\n",
        None,
        3,
        "providers[0].type",
        "unknown provider type 'mailchimp' (expected one of: " + ", ".join(sorted(PROVIDERS)) + ")",
    ),
    (
        "missing provider type",
        "providers:\n  - name: mc\n    base_url: https://x.example\n",
        None,
        2,
        "providers[0].type",
        "missing required key",
    ),
    (
        "target naming no provider",
        PROVIDERS_YAML + "groups:\n  - name: g\n    targets:\n      - c8\n      - bc\n",
        None,
        15,
        "groups[0].targets[1]",
        "no provider named 'bc' (configured: c8, cr)",
    ),
    (
        "target mapping naming no provider",
        PROVIDERS_YAML + "groups:\n  - name: g\n    targets: [{provider: bc, group_id: '12'}]\n",
        None,
        13,
        "groups[0].targets[0]",
        "no provider named 'bc'",
    ),
    (
        "same provider targeted twice",
        PROVIDERS_YAML + "groups:\n  - name: g\n    targets:\n      - c8\n      - {provider: c8, group_id: '9'}\n",
        None,
        15,
        "groups[0].targets[1]",
        "provider 'c8' is targeted twice",
    ),
    (
        "missing env var",
        PROVIDERS_YAML,
        {k: v for k, v in ENV.items() if k != "COMMUNIC8_TOKEN"},
        5,
        "providers[0].token",
        "environment variable COMMUNIC8_TOKEN is not set",
    ),
    (
        "empty env var",
        PROVIDERS_YAML,
        {**ENV, "COMMUNIC8_TOKEN": ""},
        5,
        "providers[0].token",
        "environment variable COMMUNIC8_TOKEN is empty",
    ),
    ("unclosed variable", "state:\n  url: 'sqlite:///${DIR'\n", None, 2, "state.url", "unclosed ${"),
    ("bad variable name", "state:\n  url: ${1DIR}\n", None, 2, "state.url", "bad variable reference"),
    (
        "duplicate provider names",
        PROVIDERS_YAML
        + "  - name: c8\n    type: communic8\n    base_url: https://b.communic8.example/int/v1\n"
        + "    token: t\n",
        None,
        11,
        "providers[2].name",
        "provider name 'c8' is already taken by providers[0]",
    ),
    (
        "duplicate group names",
        "groups:\n  - name: Sales\n  - name: SALES\n",
        None,
        3,
        "groups[1].name",
        "already used by groups[0]",
    ),
    (
        "duplicate keys",
        "safety:\n  max_removals: 5\n  max_removals: 500\n",
        None,
        3,
        "safety.max_removals",
        "duplicate key (first given on line 2)",
    ),
    ("duplicate top-level keys", "groups: []\nstate: {}\ngroups: []\n", None, 3, "groups", "duplicate key"),
    ("non-string key", "groups:\n  - name: g\n    1: x\n", None, 3, "groups[0]", "key '1' is not a string"),
    ("boolean key", "on: push\n", None, 1, None, "key 'on' is not a string"),
    (
        "http base_url on a public host",
        PROVIDERS_YAML.replace("https://acme", "http://acme"),
        None,
        4,
        "providers[0].base_url",
        "must use https",
    ),
    (
        "missing required credential",
        "providers:\n  - name: cr\n    type: cleverreach\n",
        None,
        2,
        "providers[0]",
        "missing credentials",
    ),
    (
        "missing required base_url",
        "providers:\n  - name: c8\n    type: communic8\n    token: ${COMMUNIC8_TOKEN}\n",
        None,
        2,
        "providers[0].base_url",
        "missing required key",
    ),
    (
        "bad provider name",
        PROVIDERS_YAML.replace("name: c8", "name: 'c 8'"),
        None,
        2,
        "providers[0].name",
        "must start with a letter or digit",
    ),
    (
        "member without email",
        "groups:\n  - name: g\n    members:\n      - {first_name: Al}\n",
        None,
        4,
        "groups[0].members[0].email",
        "missing required key",
    ),
    (
        "member as a list",
        "groups:\n  - name: g\n    members:\n      - [a@b.c]\n",
        None,
        4,
        "groups[0].members[0]",
        "expected an email address or a mapping",
    ),
    ("empty group name", "groups:\n  - name: '  '\n", None, 2, "groups[0].name", "must not be empty"),
    (
        "group without name",
        "groups:\n  - members: [a@b.c]\n",
        None,
        2,
        "groups[0].name",
        "missing required key",
    ),
    (
        "bad removal policy",
        "groups:\n  - name: g\n    removal_policy: sometimes\n",
        None,
        3,
        "groups[0].removal_policy",
        "'mirror', 'owned' or 'add_only'",
    ),
    (
        "negative group guard",
        "groups:\n  - name: g\n    max_removals: -1\n",
        None,
        3,
        "groups[0].max_removals",
        "greater than or equal to 0",
    ),
    ("bad duration", "schedule:\n  every: 15 minutes\n", None, 2, "schedule.every", "expected a duration"),
    ("zero duration", "schedule:\n  every: 0s\n", None, 2, "schedule.every", "longer than 0"),
    (
        "both every and cron",
        "schedule:\n  every: 5m\n  cron: '* * * * *'\n",
        None,
        1,
        "schedule",
        "either every or cron",
    ),
    ("cron with 3 fields", "schedule:\n  cron: '* * *'\n", None, 2, "schedule.cron", "5 fields"),
    (
        "cron out of range",
        "schedule:\n  cron: '0 24 * * *'\n",
        None,
        2,
        "schedule.cron",
        "hour field: 24 is out of range 0-23",
    ),
    ("listen without port", "server:\n  listen: localhost\n", None, 2, "server.listen", "expected host:port"),
    (
        "listen bad port",
        "server:\n  listen: 0.0.0.0:99999\n",
        None,
        2,
        "server.listen",
        "port must be a number from 1 to 65535",
    ),
    (
        "listen bare ipv6",
        "server:\n  listen: '::1:9108'\n",
        None,
        2,
        "server.listen",
        "IPv6 address in brackets",
    ),
    (
        "unsupported database",
        "state:\n  url: mysql://u:pw@h/db\n",
        None,
        2,
        "state.url",
        "unsupported database 'mysql'",
    ),
    ("not a database url", "state:\n  url: not a url\n", None, 2, "state.url", "not a valid database URL"),
    ("unknown tag", "state:\n  url: !vault secret/db\n", None, 2, "state.url", "tag '!vault'"),
]


@pytest.mark.parametrize(("text", "env", "line", "key", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_one_line_naming_file_line_and_key(
    tmp_path: Path, text: str, env: dict[str, str] | None, line: int, key: str | None, message: str
) -> None:
    path = tmp_path / "syncd.yaml"
    err = error_of(tmp_path, text, env)
    assert not isinstance(err, ConfigErrors), str(err)
    assert (err.file, err.line, err.key) == (str(path), line, key)
    prefix = f"{path}:{line}: " + (f"{key}: " if key else "")
    assert str(err).startswith(prefix), str(err)
    assert message in err.message, str(err)
    assert "\n" not in str(err)


def test_several_problems_are_reported_together_one_line_each(tmp_path: Path) -> None:
    err = error_of(
        tmp_path,
        "safety:\n  max_removals: -1\n  max_removal_ratio: 2\ngroups:\n  - name: g\n    removal_policy: never\n",
    )
    assert isinstance(err, ConfigErrors)
    path = tmp_path / "syncd.yaml"
    lines = str(err).splitlines()
    assert [line.split(": ")[0:2] for line in lines] == [
        [f"{path}:2", "safety.max_removals"],
        [f"{path}:3", "safety.max_removal_ratio"],
        [f"{path}:6", "groups[0].removal_policy"],
    ]
    assert (err.line, err.key) == (2, "safety.max_removals")
    assert [e.line for e in err.errors] == [2, 3, 6]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", env={})
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: config file not found"


def test_loopback_http_base_url_is_allowed(tmp_path: Path) -> None:
    config = load(tmp_path, PROVIDERS_YAML.replace("https://acme.communic8.example", "http://127.0.0.1:8080"))
    assert config.providers[0].base_url == "http://127.0.0.1:8080/int/v1"


# ------------------------------------------------------------------------------------ environment


def test_env_overrides_the_file(tmp_path: Path) -> None:
    text = "state:\n  url: sqlite:///file.db\nsafety:\n  max_removals: 10\n  max_removal_ratio: 0.5\n"
    env = {"SYNCD_STATE__URL": "postgresql+psycopg://syncd:pw@db/syncd", "SYNCD_SAFETY__MAX_REMOVALS": "3"}
    config = load(tmp_path, text, env)
    assert config.state.url == "postgresql+psycopg://syncd:pw@db/syncd"
    assert config.safety == SafetySettings(max_removals=3, max_removal_ratio=0.5)  # the ratio from the file


def test_env_overrides_without_the_key_in_the_file(tmp_path: Path) -> None:
    config = load(tmp_path, "", {"syncd_server__listen": "[::1]:9300", "SYNCD_SCHEDULE__CRON": "0 * * * *"})
    assert (config.server.host, config.server.port) == ("::1", 9300)
    assert (config.schedule.cron, config.schedule.every) == ("0 * * * *", None)


def test_unrelated_syncd_variables_are_ignored(tmp_path: Path) -> None:
    load(tmp_path, "", {"SYNCD_CONFIG": "/etc/syncd.yaml", "SYNCD_LOG_LEVEL": "debug"})


def test_plain_postgresql_url_uses_psycopg3(tmp_path: Path) -> None:
    config = load(tmp_path, "", {"SYNCD_STATE__URL": "postgresql://syncd:pw@db:5432/syncd"})
    assert config.state.url == "postgresql+psycopg://syncd:pw@db:5432/syncd"


@pytest.mark.parametrize(
    ("env", "key", "message"),
    [
        ({"SYNCD_SAFETY__MAX_REMOVALS": "-3"}, "safety.max_removals", "greater than or equal to 0"),
        ({"SYNCD_SAFETY__MAX_REMOVALS": "lots"}, "safety.max_removals", "valid integer"),
        ({"SYNCD_STATE__URL": "mysql://u:hunter2@h/db"}, "state.url", "unsupported database"),
        ({"SYNCD_SERVER__LISTEN": "nowhere"}, "server.listen", "expected host:port"),
        ({"SYNCD_PROVIDERS": "[{not json"}, "providers", "not valid JSON"),
    ],
)
def test_env_override_errors_name_the_variable(tmp_path: Path, env: dict[str, str], key: str, message: str) -> None:
    (name,) = env
    err = error_of(tmp_path, "state:\n  url: sqlite:///file.db\nsafety:\n  max_removals: 10\n", env)
    assert err.line is None
    assert str(err).startswith(f"environment variable {name}: {key}: "), str(err)
    assert message in str(err)
    assert "hunter2" not in str(err)


# ------------------------------------------------------------------------------------------- secrets


def test_secrets_never_in_repr_or_str(tmp_path: Path) -> None:
    env = {**ENV, "SYNCD_STATE__URL": "postgresql+psycopg://syncd:db-PASSWORD-789@db/syncd"}
    config = load(tmp_path, PROVIDERS_YAML, env)
    for text in (repr(config), str(config), repr(config.providers), str(config.state), repr(config.state)):
        for secret in (C8_TOKEN, CR_SECRET, "db-PASSWORD-789"):
            assert secret not in text
    assert "syncd:***@db" in repr(config.state)
    assert isinstance(config.providers[0].token, SecretStr)  # type: ignore[attr-defined]


SECRET_ERRORS = [
    # a secret value that ends up where an error message might echo it
    PROVIDERS_YAML.replace("https://acme.communic8.example/int/v1", "${COMMUNIC8_TOKEN}"),
    PROVIDERS_YAML.replace("token: ${COMMUNIC8_TOKEN}", "token: [${COMMUNIC8_TOKEN}]"),
    PROVIDERS_YAML.replace("token: ${COMMUNIC8_TOKEN}", "token: ${COMMUNIC8_TOKEN}\n    client_id: x"),
    PROVIDERS_YAML.replace("client_id: ${CLEVERREACH_CLIENT_ID}", "client_id: {id: ${CLEVERREACH_CLIENT_SECRET}}"),
    PROVIDERS_YAML.replace("name: cr", "name: '${CLEVERREACH_CLIENT_SECRET} x'"),
    PROVIDERS_YAML + "    token_url: ${CLEVERREACH_CLIENT_SECRET}\n",
    PROVIDERS_YAML + "groups:\n  - name: g\n    targets: [${COMMUNIC8_TOKEN}]\n",
    "state:\n  url: postgresql+psycopg://u:${COMMUNIC8_TOKEN}@db/x\n  extra: 1\n",
    "state:\n  url: oracle://u:${COMMUNIC8_TOKEN}@db/x\n",
    # a secret interpolated into a key whose error message echoes the value
    PROVIDERS_YAML.replace("https://acme", "http://u:${COMMUNIC8_TOKEN}@acme"),
    PROVIDERS_YAML.replace("https://acme.communic8.example", "http://${CLEVERREACH_CLIENT_SECRET}.example"),
]


@pytest.mark.parametrize("text", SECRET_ERRORS)
def test_secrets_never_in_error_messages(tmp_path: Path, text: str) -> None:
    err = error_of(tmp_path, text)
    for secret in (C8_TOKEN, CR_SECRET):
        assert secret not in str(err)
        assert secret not in repr(err)


def test_secret_from_env_override_never_in_error_messages(tmp_path: Path) -> None:
    env = {
        "SYNCD_STATE__URL": f"oracle://u:{C8_TOKEN}@db/x",
        "SYNCD_PROVIDERS": f'[{{"token": "{CR_SECRET}"}}]',
    }
    err = error_of(tmp_path, "", env)
    assert C8_TOKEN not in str(err) and CR_SECRET not in str(err)


# ------------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d", timedelta(days=1)),
        ("2h 5m 10s", timedelta(hours=2, minutes=5, seconds=10)),
        ("90", timedelta(seconds=90)),
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
    ],
)
def test_parse_duration(value: object, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", ["", "m", "1x", "15 minutes", "1m1h", "-5m", True, None, [1]])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("yaml_text", "every", "cron", "jitter"),
    [
        ("", timedelta(minutes=15), None, timedelta(0)),
        ("schedule: {}", timedelta(minutes=15), None, timedelta(0)),
        ("schedule: {every: 30s}", timedelta(seconds=30), None, timedelta(0)),
        ("schedule: {every: 900, jitter: 10}", timedelta(seconds=900), None, timedelta(seconds=10)),
        ("schedule: {every: 1h30m, jitter: 1m}", timedelta(minutes=90), None, timedelta(minutes=1)),
        ("schedule: {cron: '*/15 * * * *'}", None, "*/15 * * * *", timedelta(0)),
        (
            "schedule: {cron: '0 9-17 * jan-jun mon-fri', jitter: 30s}",
            None,
            "0 9-17 * jan-jun mon-fri",
            timedelta(seconds=30),
        ),
        ("schedule: {cron: '  0   3 1,15 * 0 '}", None, "0 3 1,15 * 0", timedelta(0)),
    ],
)
def test_schedule(tmp_path: Path, yaml_text: str, every: timedelta | None, cron: str | None, jitter: timedelta) -> None:
    schedule = load(tmp_path, yaml_text + "\n").schedule
    assert (schedule.every, schedule.cron, schedule.jitter) == (every, cron, jitter)


@pytest.mark.parametrize(
    "expr",
    ["* * * * *", "*/5 * * * *", "0 0 1 1 0", "59 23 31 12 7", "0,30 8-18/2 * * mon-fri", "0 12 * dec sun"],
)
def test_cron_accepts(expr: str) -> None:
    assert check_cron(expr) == expr


@pytest.mark.parametrize(
    "expr",
    [
        "* * * *",
        "* * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * 8",
        "*/0 * * * *",
        "5-1 * * * *",
        "a * * * *",
        "1- * * * *",
        "@hourly",
    ],
)
def test_cron_rejects(expr: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        check_cron(expr)


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("0.0.0.0:9108", "0.0.0.0", 9108),
        ("[::]:9108", "::", 9108),
        ("[::1]:80", "::1", 80),
        ("localhost:8080", "localhost", 8080),
        (":9108", "0.0.0.0", 9108),
    ],
)
def test_listen(listen: str, host: str, port: int) -> None:
    server = ServerSettings(listen=listen)
    assert (server.host, server.port) == (host, port)


def test_models_are_frozen(tmp_path: Path) -> None:
    config = load(tmp_path, "groups:\n  - name: g\n")
    with pytest.raises(ValueError):
        config.safety = SafetySettings()
    with pytest.raises(ValueError):
        config.groups[0].name = "h"


def test_member_and_target_short_forms() -> None:
    assert MemberSpec.model_validate("a@b.c") == MemberSpec(email="a@b.c")
    assert TargetSpec.model_validate("c8") == TargetSpec(provider="c8")
    assert TargetSpec.model_validate({"provider": "bc", "group_id": 12}).group_id == "12"


# -------------------------------------------------------------------------------------------- sources

SOURCES_YAML = """\
sources:
  - type: hubspot
    token: ${HUBSPOT_TOKEN}
    groups:
      - {name: Newsletter EN, list_id: 123, targets: [cr], removal_policy: mirror, max_removals: 9}
      - name: Webinar
        list_id: "0456"
    properties: {address.line1: address, address.postcode: zip, address.country: country, first_name: nickname}
    rate_limit: 10
  - type: sql
    url: postgresql://reader:${CRM_DB_PASSWORD}@replica/crm
    query: SELECT segment AS "group", email FROM members;
    targets: [c8]
    max_removal_ratio: 0.1
  - type: sql
    name: exports
    url: sqlite:///export.db
    query: SELECT email FROM customers
    group: Customers
    targets: [{provider: cr, group_id: "77"}]
    allow_empty: true
    timeout: 5
"""


def test_sources_round_trip(tmp_path: Path) -> None:
    config = load(tmp_path, PROVIDERS_YAML + SOURCES_YAML + "groups:\n  - name: Inline\n")
    hubspot, crm, exports = config.sources
    assert isinstance(hubspot, HubSpotSourceSettings)
    assert hubspot.token.get_secret_value() == HS_TOKEN
    assert hubspot.base_url == "https://api.hubapi.com"
    assert (hubspot.rate_limit, hubspot.burst, hubspot.max_concurrency) == (10, 1, 4)
    en, webinar = hubspot.groups
    assert (en.name, en.list_id, en.removal_policy, en.max_removals) == ("Newsletter EN", "123", "mirror", 9)
    assert webinar.list_id == "0456" and webinar.targets is None
    assert config.targets_of(en) == [TargetSpec(provider="cr")]
    assert config.targets_of(webinar) == [TargetSpec(provider="c8"), TargetSpec(provider="cr")]
    assert hubspot.property_map == {
        "email": "email",
        "first_name": "nickname",
        "last_name": "lastname",
        "address.line1": "address",
        "address.postcode": "zip",
        "address.country": "country",
    }
    assert isinstance(crm, SqlSourceSettings)
    assert crm.url == f"postgresql+psycopg://reader:{DB_PASSWORD}@replica/crm"  # psycopg 3, as for the state DB
    assert crm.safe_url == "postgresql+psycopg://reader:***@replica/crm"
    assert crm.query == 'SELECT segment AS "group", email FROM members'
    assert (crm.group, crm.max_removal_ratio, crm.allow_empty, crm.timeout) == (None, 0.1, False, 60)
    assert isinstance(exports, SqlSourceSettings)
    assert (exports.group, exports.allow_empty, exports.timeout) == ("Customers", True, 5)
    assert config.source_names() == ["hubspot", "sql", "exports"]
    assert config.group_names() == ["Inline", "Newsletter EN", "Webinar", "Customers"]
    assert config.group_targets() == [
        ("Inline", [TargetSpec(provider="c8"), TargetSpec(provider="cr")]),
        ("Newsletter EN", [TargetSpec(provider="cr")]),
        ("Webinar", [TargetSpec(provider="c8"), TargetSpec(provider="cr")]),
        ("Customers", [TargetSpec(provider="cr", group_id="77")]),
    ]
    assert config.has_query_named_groups
    for text in (repr(config), str(config), repr(config.sources)):
        assert HS_TOKEN not in text and DB_PASSWORD not in text


def test_default_source_names_are_numbered_when_repeated(tmp_path: Path) -> None:
    text = "sources:\n" + "".join(
        f"  - {{type: sql, url: 'sqlite:///{n}.db', query: SELECT 1, group: G{n}}}\n" for n in range(3)
    )
    config = load(tmp_path, text)
    assert config.source_names() == ["sql#1", "sql#2", "sql#3"]
    assert not config.has_query_named_groups


@pytest.mark.parametrize(
    ("text", "line", "key", "other", "other_line"),
    [
        (  # an inline group and a HubSpot list
            "groups:\n  - name: Newsletter\nsources:\n  - type: hubspot\n    token: t\n    groups:\n"
            "      - {name: NEWSLETTER, list_id: 1}\n",
            7,
            "sources[0].groups[0].name",
            "groups[0]",
            2,
        ),
        (  # two HubSpot sources
            "sources:\n  - type: hubspot\n    token: t\n    groups:\n      - {name: A, list_id: 1}\n"
            "  - type: hubspot\n    token: u\n    groups:\n      - {name: B, list_id: 2}\n"
            "      - {name: a, list_id: 3}\n",
            10,
            "sources[1].groups[1].name",
            "sources[0].groups[0]",
            5,
        ),
        (  # a HubSpot list and a fixed-group SQL source
            "sources:\n  - type: hubspot\n    token: t\n    groups:\n      - {name: Customers, list_id: 1}\n"
            "  - type: sql\n    url: sqlite:///x.db\n    query: SELECT email FROM c\n    group: customers\n",
            9,
            "sources[1].group",
            "sources[0].groups[0]",
            5,
        ),
    ],
)
def test_a_group_defined_twice_is_an_error_naming_both(
    tmp_path: Path, text: str, line: int, key: str, other: str, other_line: int
) -> None:
    err = error_of(tmp_path, text)
    path = tmp_path / "syncd.yaml"
    assert (err.file, err.line, err.key) == (str(path), line, key), str(err)
    assert f"already used by {other} ({path}:{other_line})" in err.message, str(err)
    assert "\n" not in str(err)


def test_two_groups_pinned_to_one_provider_group_is_an_error_naming_both(tmp_path: Path) -> None:
    err = error_of(
        tmp_path,
        PROVIDERS_YAML
        + "groups:\n  - name: A\n    targets: [{provider: c8, group_id: '12'}, cr]\n"
        + "sources:\n  - type: hubspot\n    token: t\n    groups:\n"
        + "      - {name: B, list_id: 1, targets: [cr, {provider: c8, group_id: 12}]}\n",
    )
    path = tmp_path / "syncd.yaml"
    assert (err.line, err.key) == (18, "sources[0].groups[0].targets[1]"), str(err)
    assert f"c8 group '12' is already the target of groups[0].targets[0] ({path}:13)" in err.message, str(err)
    # the same group id on two different providers names two different groups: fine
    load(
        tmp_path,
        PROVIDERS_YAML
        + "groups:\n  - {name: A, targets: [{provider: c8, group_id: '1'}]}\n"
        + "  - {name: B, targets: [{provider: cr, group_id: '1'}]}\n",
    )


def test_sources_given_in_the_environment(tmp_path: Path) -> None:
    env = {"SYNCD_SOURCES": '[{"type": "sql", "url": "sqlite:///x.db", "query": "SELECT 1", "group": "Inline"}]'}
    err = error_of(tmp_path, "groups:\n  - name: inline\n", env)
    assert "already used by groups[0]" in str(err) and "sources[0].group" in str(err)


SOURCE_SECRET_ERRORS = [
    "sources:\n  - type: sql\n    url: postgresql://u:${CRM_DB_PASSWORD}@db/x\n    query: SELECT 1\n    extra: 1\n",
    "sources:\n  - type: sql\n    url: oracl://u:${CRM_DB_PASSWORD}@db/x\n    query: SELECT 1\n",
    "sources:\n  - type: sql\n    url: postgresql://u:${CRM_DB_PASSWORD}@db/x\n    query: [SELECT 1]\n",
    "sources:\n  - type: hubspot\n    token: ${HUBSPOT_TOKEN}\n    base_url: http://${HUBSPOT_TOKEN}.example\n"
    "    groups: [{name: N, list_id: 1}]\n",
    "sources:\n  - type: hubspot\n    token: [${HUBSPOT_TOKEN}]\n    groups: [{name: N, list_id: 1}]\n",
    "sources:\n  - type: hubspot\n    token: t\n    groups: [{name: N, list_id: '${HUBSPOT_TOKEN}'}]\n",
]


@pytest.mark.parametrize("text", SOURCE_SECRET_ERRORS)
def test_source_secrets_never_in_error_messages(tmp_path: Path, text: str) -> None:
    err = error_of(tmp_path, text)
    for secret in (HS_TOKEN, DB_PASSWORD):
        assert secret not in str(err)
        assert secret not in repr(err)


# --------------------------------------------------------------------------- YAML syntax: the line of the cause

YAML_ERRORS = [
    # id, yaml, line, the message after "invalid YAML: " (ending in … where PyYAML's own words follow)
    (
        "unclosed [",
        "state:\n  url: sqlite:///x.db\ngroups: [a, b\nproviders: []\n",
        3,
        "the '[' in column 9 is not closed (expected ',' or ']' before line 4)",
    ),
    (
        "unclosed [ at the end of the file",
        "groups:\n  - name: G\n    members: [a@example.com,\n\n# the end\n",
        3,
        "the '[' in column 14 is not closed (no ']' before the end of the file)",
    ),
    (
        "unclosed {",
        "state: {url: sqlite:///x.db\nproviders: []\n",
        1,
        "the '{' in column 8 is not closed (expected ',' or '}' before line 2)",
    ),
    (
        "unclosed { inside [",
        "providers: [\n  {name: c8,\n   type: communic8\n",
        2,
        "the '{' in column 3 is not closed (expected ',' or '}' before the end of the file)",
    ),
    (
        "unclosed quote",
        "state:\n  url: 'sqlite:///x.db\nproviders: []\n",
        2,
        "the quoted string (') that starts in column 8 is not closed before the end of the file",
    ),
    (
        "indented too far",
        "state:\n  url: sqlite:///x.db\n   extra: 1\n",
        3,
        "mapping values are not allowed …",
    ),
    (
        "indented too little",
        "groups:\n  - name: G\n    members:\n      - a@example.com\n     - b@example.com\n",
        5,
        "this line's indentation does not fit the block that starts on line 2 (while parsing a block mapping, …",
    ),
    (
        "a tab",
        "groups:\n  - name: G\n    members:\n\t- a@example.com\n",
        4,
        "a tab character: YAML is indented with spaces, not tabs",
    ),
    (
        "a tab at the top",
        "state:\n\turl: sqlite:///x.db\n",
        2,
        "a tab character: YAML is indented with spaces, not tabs",
    ),
]
LOADERS = [yaml.SafeLoader] + ([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])  # the last: the default


@pytest.mark.parametrize("loader", LOADERS, ids=lambda loader: loader.__name__)
@pytest.mark.parametrize(("text", "line", "message"), [c[1:] for c in YAML_ERRORS], ids=[c[0] for c in YAML_ERRORS])
def test_a_yaml_syntax_error_names_the_line_of_its_cause(
    tmp_path: Path, loader: type, text: str, line: int, message: str
) -> None:
    # Both of PyYAML's parsers (libyaml's words differ from the pure-Python one's): the same line, the same message,
    # from the file reader both loading functions use (with the default loader, through each of them too).
    path = write(tmp_path, text)
    readers = [lambda p: read_yaml(p, loader)]
    if loader is LOADERS[-1]:
        readers += [lambda p: load_config(p, env={}), lambda p: load_state_settings(p, env={})]
    for read in readers:
        with pytest.raises(ConfigError) as info:
            read(path)
        err = info.value
        assert (err.file, err.line, err.key) == (str(path), line, None)
        if message.endswith("…"):  # PyYAML's own words follow, in libyaml's wording or the pure-Python one's
            assert str(err).startswith(f"{path}:{line}: invalid YAML: {message[:-1]}"), str(err)
        else:
            assert str(err) == f"{path}:{line}: invalid YAML: {message}"


# ------------------------------------------------------------------------ type errors echo the value, not a secret

VALUE_ERRORS = [
    # id, yaml appended to PROVIDERS_YAML (lines 1-10), env additions, the whole message
    (
        "not a number",
        "    rate_limit: fast\n",
        {},
        "11: providers[1].rate_limit: Input should be a valid number, got 'fast'",
    ),
    ("too small", "    rate_limit: -2\n", {}, "11: providers[1].rate_limit: Input should be greater than 0, got -2"),
    (
        "a list",
        "    max_concurrency: [1]\n",
        {},
        "11: providers[1].max_concurrency: Input should be a valid integer, got a list",
    ),
    (
        "empty",
        "safety:\n  max_removals:\n",
        {},
        "12: safety.max_removals: Input should be a valid integer, got an empty value",
    ),
    (
        "not a choice",
        "groups:\n  - name: G\n    removal_policy: never\n",
        {},
        "13: groups[0].removal_policy: Input should be 'mirror', 'owned' or 'add_only', got 'never'",
    ),
    (
        "a bad duration",
        "schedule:\n  every: soon\n",
        {},
        "12: schedule.every: expected a duration such as 30s, 15m, 1h30m, or a number of seconds, got 'soon'",
    ),
    (
        "a long value is cut",
        "schedule:\n  every: " + "x" * 100 + "\n",
        {},
        "12: schedule.every: expected a duration such as 30s, 15m, 1h30m, or a number of seconds, got '"
        + "x" * 59
        + "…'",
    ),
    (
        "a secret in a field that is not secret",
        "safety:\n  max_removals: ${COMMUNIC8_TOKEN}\n",
        {},
        "12: safety.max_removals: Input should be a valid integer, got a value of type str",
    ),
    (
        "a variable named as a secret",
        "safety:\n  max_removal_ratio: ${SOME_PASSWORD}\n",
        {"SOME_PASSWORD": "pw-hunter2-pw"},
        "12: safety.max_removal_ratio: Input should be a valid number, got a value of type str",
    ),
    (
        "a URL is never echoed (its query may hold a password)",
        "state:\n  url: mysql://u:hunter2@h/db?password=hunter3\n",
        {},
        "12: state.url: unsupported database 'mysql' (syncd supports sqlite and postgresql)",
    ),
]


@pytest.mark.parametrize(("extra", "env", "expected"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_a_value_of_the_wrong_type_or_form_is_echoed_unless_it_may_be_secret(
    tmp_path: Path, extra: str, env: dict[str, str], expected: str
) -> None:
    err = error_of(tmp_path, PROVIDERS_YAML + extra, {**ENV, **env})
    assert str(err) == f"{tmp_path / 'syncd.yaml'}:{expected}"
    for secret in (C8_TOKEN, "hunter2", "hunter3", "pw-hunter2-pw"):
        assert secret not in str(err)


def test_a_secret_key_of_the_wrong_type_names_only_the_kind_of_value(tmp_path: Path) -> None:
    err = error_of(
        tmp_path, PROVIDERS_YAML.replace("token: ${COMMUNIC8_TOKEN}", "token:\n      value: ${COMMUNIC8_TOKEN}")
    )
    assert str(err) == f"{tmp_path / 'syncd.yaml'}:5: providers[0].token: expected a string, got a mapping"


def test_an_environment_override_of_the_wrong_type_is_echoed(tmp_path: Path) -> None:
    err = error_of(tmp_path, "", {"SYNCD_SAFETY__MAX_REMOVALS": "lots"})
    assert str(err) == (
        "environment variable SYNCD_SAFETY__MAX_REMOVALS: safety.max_removals: Input should be a valid integer, "
        "got 'lots'"
    )


# ------------------------------------------------------------------- the state section alone (read-only commands)

STATE_ONLY = """\
providers:
  - name: c8
    type: communic8
    base_url: https://acme.communic8.example/int/v1
    token: ${COMMUNIC8_TOKEN}
sources:
  - type: hubspot
    token: ${HUBSPOT_TOKEN}
    groups: [{name: N, list_id: not-a-number}]
groups: [{name: G, targets: [nowhere]}]
state:
  url: sqlite:///${STATE_DIR}/syncd.db
"""


def test_state_settings_need_no_provider_credentials_and_check_nothing_else(tmp_path: Path) -> None:
    path = write(tmp_path, STATE_ONLY)
    state = load_state_settings(path, env={"STATE_DIR": "/var/lib/syncd"})
    assert state == StateSettings(url="sqlite:////var/lib/syncd/syncd.db")
    with pytest.raises(ConfigError):  # the whole file is checked by load_config
        load_config(path, env={"STATE_DIR": "/var/lib/syncd"})


def test_state_settings_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, STATE_ONLY)
    env = {"SYNCD_STATE__URL": "postgresql://syncd:pw@db/syncd", "STATE_DIR": "/d"}
    assert load_state_settings(path, env=env).url == "postgresql+psycopg://syncd:pw@db/syncd"
    assert load_state_settings(write(tmp_path, "providers: []\n", "other.yaml"), env={}) == StateSettings()


def test_state_settings_through_an_anchor(tmp_path: Path) -> None:
    path = write(tmp_path, "x-db: &db\n  url: sqlite:///anchored.db\nstate: *db\n")
    assert load_state_settings(path, env={}).url == "sqlite:///anchored.db"


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (STATE_ONLY, {}, "syncd.yaml:12: state.url: environment variable STATE_DIR is not set"),
        (
            STATE_ONLY.replace("${STATE_DIR}/syncd.db", "${STATE_DIR}/syncd.db\n  path: x"),
            {"STATE_DIR": "/d"},
            "syncd.yaml:13: state.path: unknown key (expected one of: url)",
        ),
        (
            "state:\n  url: mysql://u:hunter2@db/x\n",
            {},
            "syncd.yaml:2: state.url: unsupported database 'mysql' (syncd supports sqlite and postgresql)",
        ),
        ("state:\n  url: x\nstate: {}\n", {}, "syncd.yaml:3: state: duplicate key (first given on line 1)"),
        ("state: [a]\n", {}, "syncd.yaml:1: state: expected a mapping, got a list"),
        ("- state\n", {}, "syncd.yaml:1: the top level must be a mapping of keys (state, providers, groups, …)"),
        (
            "state:\n  url: sqlite:///x.db\n",
            {"SYNCD_STATE__URL": "oracle://u:hunter2@db/x"},
            "environment variable SYNCD_STATE__URL: state.url: unsupported database 'oracle' "
            "(syncd supports sqlite and postgresql)",
        ),
    ],
)
def test_state_settings_errors_name_file_line_and_key(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_state_settings(path, env=env)
    assert str(info.value).replace(f"{tmp_path}/", "") == expected
    assert "hunter2" not in str(info.value)
