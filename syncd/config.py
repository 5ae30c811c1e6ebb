"""The config file: pydantic models of every key, and YAML loading with line-numbered errors.

Why this module exists: the config is the one thing users edit by hand, and a mistake in it must never
reach a provider. So `load_config` checks everything before anything is contacted and reports each problem
on one line naming the file, the line and the key (``syncd.yaml:14: providers[0].token: environment
variable COMMUNIC8_TOKEN is not set``), and never echoes a secret.

How it works:

* PyYAML's ``compose()`` gives a node tree with marks. We walk it into plain Python values ourselves,
  recording the line of every key path, refusing duplicate and non-string keys (PyYAML would silently keep
  the last duplicate), and expanding ``${VAR}`` / ``${VAR:-default}`` (``$${`` is a literal ``${``) so a
  missing variable is reported where it is used. The walk follows the models' types: a scalar going into a
  text field keeps its source text, so ``postcode: 01234``, ``first_name: No`` or ``group_id: 0012`` are not
  turned into numbers or booleans by YAML 1.1's implicit typing.
* The values then go through the pydantic models below (their ``description=`` texts are the key reference;
  ``config.example.yaml`` shows them in use). pydantic's error locations are mapped back to lines.
* ``Config`` is a pydantic-settings ``BaseSettings``: ``SYNCD_<KEY>__<SUBKEY>`` environment variables
  override the file (``SYNCD_STATE__URL=…``); errors in such values name the variable instead of a line.
* The provider entries are a discriminated union on ``type`` built from ``connectors.registry.PROVIDERS``, so
  each provider's keys (credentials included) are defined next to its connector, and a new provider type
  appears here without touching this module.
"""

from __future__ import annotations

import contextvars
import difflib
import enum
import ipaddress
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from connectors.base import Contact, PostalAddress
from connectors.registry import PROVIDERS
from connectors.settings import ProviderSettings, RetrySettings, check_api_url
from syncd.errors import ConfigError
from syncd.model import RemovalPolicy

__all__ = [
    "AddressSpec",
    "Config",
    "ConfigErrors",
    "GroupSpec",
    "HubSpotGroupSpec",
    "HubSpotSourceSettings",
    "MemberSpec",
    "ProviderEntry",
    "SafetySettings",
    "ScheduleSettings",
    "ServerSettings",
    "SourceEntry",
    "SqlSourceSettings",
    "StateSettings",
    "TargetSpec",
    "load_config",
    "load_state_settings",
    "parse_duration",
]

ENV_PREFIX = "SYNCD_"
ENV_DELIMITER = "__"
# libyaml's loader when PyYAML was built with it: same nodes and marks, an order of magnitude faster on
# groups of tens of thousands of inline members.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
EXTENSION_PREFIX = "x-"  # top-level keys ignored, to hold YAML anchors (as in docker compose files)
DEFAULT_EVERY = timedelta(minutes=15)
# A key whose name contains one of these holds a secret: its value never appears in a message.
SECRET_KEY_PARTS = ("token", "secret", "password", "passwd", "api_key", "apikey", "credential", "private_key")

_MODEL = ConfigDict(extra="forbid", frozen=True)


def is_secret_key(name: str) -> bool:
    name = name.lower()
    return any(part in name for part in SECRET_KEY_PARTS)


class ConfigErrors(ConfigError):
    """Several problems at once. Its file/line/key/message are the first's; ``str()`` has one line each."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.message, file=first.file, line=first.line, key=first.key)
        self.errors = tuple(errors)
        self.args = ("\n".join(str(e) for e in self.errors),)

    def __str__(self) -> str:
        return str(self.args[0])


# ------------------------------------------------------------------------------------------ durations

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(value: object) -> timedelta:
    """``"30s"``, ``"15m"``, ``"1h30m"``, ``"2d"``, or a number of seconds (int, float or digit string)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m, 1h30m, or a number of seconds")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return timedelta(seconds=float(text))
        match = _DURATION.fullmatch(text)
        if text and match:
            d, h, m, s = (int(g) if g else 0 for g in match.groups())
            return timedelta(days=d, hours=h, minutes=m, seconds=s)
    raise ValueError("expected a duration such as 30s, 15m, 1h30m, or a number of seconds")


def format_duration(value: timedelta) -> str:
    """The inverse of `parse_duration` for whole seconds: ``timedelta(minutes=90)`` -> ``"1h30m"``."""
    total = int(value.total_seconds())
    if total != value.total_seconds() or total == 0:
        return f"{value.total_seconds():g}s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            out += f"{total // size}{unit}"
            total %= size
    return out


# ----------------------------------------------------------------------------------------------- cron

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_CRON_FIELDS: tuple[tuple[str, int, int, list[str]], ...] = (
    ("minute", 0, 59, []),
    ("hour", 0, 23, []),
    ("day of month", 1, 31, []),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


def check_cron(expr: str) -> str:
    """Basic syntax check of a 5-field cron expression: ``*``, ``N``, ``N-M``, ``/step``, lists, names."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    for text, (what, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):

        def number(part: str, what: str = what, low: int = low, high: int = high, names: list[str] = names) -> int:
            part = part.lower()
            if part in names:
                return names.index(part) + (1 if what == "month" else 0)
            if not part.isdigit():
                raise ValueError(f"cron {what} field: {part!r} is not a number")
            n = int(part)
            if not low <= n <= high:
                raise ValueError(f"cron {what} field: {n} is out of range {low}-{high}")
            return n

        for item in text.split(","):
            rng, slash, step = item.partition("/")
            if slash and (not step.isdigit() or int(step) < 1):
                raise ValueError(f"cron {what} field: bad step {step!r}")
            if rng == "*":
                continue
            first, dash, last = rng.partition("-")
            if not first or (dash and not last):
                raise ValueError(f"cron {what} field: {item!r} is not valid")
            a = number(first)
            if dash and number(last) < a:
                raise ValueError(f"cron {what} field: range {rng!r} runs backwards")
    return " ".join(fields)


# --------------------------------------------------------------------------------------------- models


def _database_url(value: str) -> URL:
    """A SQLAlchemy URL; a plain postgresql:// means psycopg 3, the driver syncd ships with (SQLAlchemy's default
    would be psycopg2). Messages never include the URL: it may carry a password."""
    try:
        url = make_url(value.strip())
    except ArgumentError:
        raise ValueError(
            "not a valid database URL (expected e.g. sqlite:///path/to/file.db or "
            "postgresql+psycopg://user:password@host/dbname)"
        ) from None
    if url.get_backend_name() in ("postgres", "postgresql") and "+" not in url.drivername:
        url = url.set(drivername="postgresql+psycopg")
    return url


class StateSettings(BaseModel):
    """Where syncd keeps its runs, ledger, bindings and caches."""

    model_config = _MODEL

    url: str = Field(
        default="sqlite:///syncd.db",
        description="SQLAlchemy URL of the state database. SQLite (sqlite:///path.db) for one instance; "
        "PostgreSQL (postgresql+psycopg://user:password@host/db) for production and for several replicas. "
        "A plain postgresql:// URL uses the psycopg (3) driver. The password is never printed.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        url = _database_url(value)
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {url.get_backend_name()!r} (syncd supports sqlite and postgresql)")
        return url.render_as_string(hide_password=False)

    @property
    def safe_url(self) -> str:
        """The URL with its password masked (``***``): fit for logs and output."""
        return make_url(self.url).render_as_string(hide_password=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        yield "url", self.safe_url


class ScheduleSettings(BaseModel):
    """When `syncd serve` runs a pass. Exactly one of `every` and `cron`; neither means every 15 minutes."""

    model_config = _MODEL

    every: timedelta | None = Field(
        default=None,
        description="Interval between passes: 30s, 15m, 1h, 1h30m, 1d, or a number of seconds. "
        "Default 15m when `cron` is not given.",
    )
    cron: str | None = Field(
        default=None,
        description="A 5-field cron expression (minute hour day-of-month month day-of-week), "
        "e.g. '*/15 * * * *'. Replaces `every`.",
    )
    jitter: timedelta = Field(
        default=timedelta(0),
        description="Up to this much random delay is added to each pass, so replicas and providers "
        "are not hit on the same second (e.g. 30s). Default 0.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_every(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("every") is None and data.get("cron") is None:
            return {**data, "every": DEFAULT_EVERY}
        return data

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, value: object) -> timedelta | None:
        if value is None:
            return None
        duration = parse_duration(value)
        if duration <= timedelta(0):
            raise ValueError("must be longer than 0 seconds")
        return duration

    @field_validator("jitter", mode="before")
    @classmethod
    def _jitter(cls, value: object) -> timedelta:
        duration = parse_duration(value)
        if duration < timedelta(0):
            raise ValueError("must not be negative")
        return duration

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleSettings:
        if self.every is not None and self.cron is not None:
            raise ValueError("give either every or cron, not both")
        return self

    def describe(self) -> str:
        text = f"cron {self.cron!r}" if self.cron else f"every {format_duration(self.every or DEFAULT_EVERY)}"
        return text + (f" (jitter {format_duration(self.jitter)})" if self.jitter else "")


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_-]{1,63})*\.?")


def _split_listen(value: str) -> tuple[str, int]:
    bad = "expected host:port, e.g. 0.0.0.0:9108, 127.0.0.1:9108 or [::]:9108"
    match = re.fullmatch(r"\[([^\]]+)\]:([0-9]+)", value)
    if match:
        host, port_text = match.groups()
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(bad + " (put an IPv6 address in brackets)" if ":" in host else bad)
        if host and not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host!r} is not a host name or IP address")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535, got {port_text!r}")
    return host or "0.0.0.0", int(port_text)


class ServerSettings(BaseModel):
    """The HTTP server of `syncd serve`: /metrics, /healthz, /readyz."""

    model_config = _MODEL

    listen: str = Field(
        default="0.0.0.0:9108",
        description="Address to listen on, host:port. An IPv6 address goes in brackets ([::]:9108); "
        "an empty host (:9108) means every IPv4 interface.",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        value = value.strip()
        _split_listen(value)
        return value

    @property
    def host(self) -> str:
        """The host part, without IPv6 brackets."""
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]


class SafetySettings(BaseModel):
    """The removal guard. A pair whose plan removes too much is held back: adds go, removals wait."""

    model_config = _MODEL

    max_removals: int = Field(
        default=500,
        ge=0,
        description="Most members one pass may remove from one provider group. Overridable per group.",
    )
    max_removal_ratio: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Largest share (0..1) of a group's current members one pass may remove; applies to "
        "groups of 20 members or more. Removing every member is always held back. Overridable per group.",
    )


class TargetSpec(BaseModel):
    """A provider a group is synced to. In YAML a bare provider name, or a mapping with a group id."""

    model_config = _MODEL
    __scalar_field__: typing.ClassVar[str] = "provider"

    provider: str = Field(description="The `name` of a configured provider.")
    group_id: str | None = Field(
        default=None,
        description="Bind to this existing provider group (its id at the provider) instead of finding or "
        "creating one by the group's name.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"provider": data}
        if isinstance(data, Mapping | BaseModel):
            return data
        raise ValueError("expected a provider name or a mapping {provider: NAME, group_id: ID}")

    @field_validator("group_id", mode="before")
    @classmethod
    def _group_id(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("provider", "group_id")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return None if value is None else value.strip()


class AddressSpec(BaseModel):
    """A member's postal address (used by providers that send printed mail)."""

    model_config = _MODEL

    line1: str | None = Field(default=None, description="First address line (street and number).")
    line2: str | None = Field(default=None, description="Second address line.")
    city: str | None = Field(default=None, description="City or town.")
    postcode: str | None = Field(default=None, description="Postal code, as written locally.")
    country: str | None = Field(
        default=None, description="Country, preferably an ISO 3166-1 alpha-2 code (GB, DE, US)."
    )

    def to_address(self) -> PostalAddress:
        return PostalAddress(
            line1=self.line1, line2=self.line2, city=self.city, postcode=self.postcode, country=self.country
        )


class MemberSpec(BaseModel):
    """A desired member. In YAML a bare email address, or a mapping with names and an address.

    Email syntax is not checked here: an invalid or duplicate email is rejected for that member alone,
    with a reason, when the group is read, and never sent.
    """

    model_config = _MODEL
    __scalar_field__: typing.ClassVar[str] = "email"

    email: str = Field(description="Email address; compared trimmed and case-insensitively, written as given.")
    first_name: str | None = Field(default=None, description="First name.")
    last_name: str | None = Field(default=None, description="Last name.")
    address: AddressSpec | None = Field(default=None, description="Postal address.")

    @model_validator(mode="before")
    @classmethod
    def _from_email(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"email": data}
        if isinstance(data, Mapping | BaseModel):
            return data
        raise ValueError("expected an email address or a mapping {email: …, first_name: …, last_name: …}")

    def to_contact(self) -> Contact:
        return Contact(
            email=self.email.strip(),
            first_name=self.first_name,
            last_name=self.last_name,
            address=self.address.to_address() if self.address else None,
        )


class GroupSpec(BaseModel):
    """A desired group, written inline in the config (the yaml source)."""

    model_config = _MODEL

    name: str = Field(
        description="The group's name; also its name at the providers when syncd creates it. Unique, "
        "compared case-insensitively."
    )
    targets: list[TargetSpec] | None = Field(
        default=None,
        description="Providers this group is synced to: names, or {provider, group_id} mappings. "
        "Default: every configured provider.",
    )
    members: list[MemberSpec] = Field(
        default_factory=list, description="The members: email addresses, or mappings with names and address."
    )
    removal_policy: RemovalPolicy | None = Field(
        default=None,
        description="mirror: remove every member not listed; owned: remove only members syncd added; "
        "add_only: never remove. Default: mirror for groups syncd created, owned for existing groups "
        "it adopted.",
    )
    max_removals: int | None = Field(default=None, ge=0, description="Overrides safety.max_removals for this group.")
    max_removal_ratio: float | None = Field(
        default=None, ge=0, le=1, description="Overrides safety.max_removal_ratio for this group."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _targets_once(self) -> GroupSpec:
        _check_targets_once(self.targets)
        return self

    def contacts(self) -> list[Contact]:
        return [m.to_contact() for m in self.members]


def _check_targets_once(targets: Sequence[TargetSpec] | None) -> None:
    seen: dict[str, int] = {}
    problems: list[tuple[Loc, str]] = []
    for i, target in enumerate(targets or ()):
        if target.provider in seen:
            problems.append(
                (
                    ("targets", i),
                    f"provider {target.provider!r} is targeted twice (first as targets[{seen[target.provider]}])",
                )
            )
        seen.setdefault(target.provider, i)
    if problems:
        raise LocatedErrors(problems)


class LocatedErrors(ValueError):
    """Raised by cross-field validators: problems with locations relative to the validated model.

    A message may contain ``{ref}``: it is replaced by ``refs[i]`` (a location relative to the same model)
    and, when the file says where that is, its file:line, so an error can name both places involved.
    """

    def __init__(self, problems: Sequence[tuple[Loc, str]], refs: Mapping[int, Loc] | None = None) -> None:
        self.problems = list(problems)
        self.refs = dict(refs or {})
        super().__init__(
            "; ".join(
                f"{_dotted(loc)}: {msg.replace('{ref}', _dotted(self.refs.get(i, ())))}"
                for i, (loc, msg) in enumerate(self.problems)
            )
        )


# ------------------------------------------------------------------------------------------- sources

# The member fields a CRM property can fill, as `properties:` keys name them.
MEMBER_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "address.line1",
    "address.line2",
    "address.city",
    "address.postcode",
    "address.country",
)
# HubSpot contact properties read for every member; `properties:` adds to (or replaces) these.
HUBSPOT_DEFAULT_PROPERTIES = {"email": "email", "first_name": "firstname", "last_name": "lastname"}
HUBSPOT_BASE_URL = "https://api.hubapi.com"
# HubSpot's burst limit, per app, in requests per 10 seconds, by the account's subscription tier (HubSpot's
# usage-guidelines page): free and starter 100, professional and enterprise 190, 250 with the API limit increase.
HubSpotTier = Literal["free", "starter", "professional", "enterprise", "api_limit_increase"]
HUBSPOT_BURST_LIMITS: dict[str, int] = {
    "free": 100,
    "starter": 100,
    "professional": 190,
    "enterprise": 190,
    "api_limit_increase": 250,
}
HUBSPOT_BURST_WINDOW = 10.0  # seconds
_HUBSPOT_PROPERTY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_SOURCE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:#-]*$"


_POLICY_TEXT = (
    "mirror: remove every member the source does not list; owned: remove only members syncd added; add_only: "
    "never remove. Default: mirror for groups syncd created, owned for existing groups it adopted."
)


def _group_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


class HubSpotGroupSpec(BaseModel):
    """A desired group whose members are the contacts of one HubSpot list."""

    model_config = _MODEL

    name: str = Field(
        description="The group's name; also its name at the providers when syncd creates it. Unique across "
        "the whole config (inline groups and every source), compared case-insensitively."
    )
    list_id: str = Field(
        description="The HubSpot list's id (the number in the list's URL; the v3 lists API's listId). Its "
        "current contacts are the group's members."
    )
    targets: list[TargetSpec] | None = Field(
        default=None,
        description="Providers this group is synced to: names, or {provider, group_id} mappings. "
        "Default: every configured provider.",
    )
    removal_policy: RemovalPolicy | None = Field(default=None, description=_POLICY_TEXT)
    max_removals: int | None = Field(default=None, ge=0, description="Overrides safety.max_removals for this group.")
    max_removal_ratio: float | None = Field(
        default=None, ge=0, le=1, description="Overrides safety.max_removal_ratio for this group."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _group_name(value)

    @field_validator("list_id", mode="before")
    @classmethod
    def _list_id(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            value = value.strip()
            if not value.isdigit():
                raise ValueError(f"a HubSpot list id is a number (the listId in the list's URL), got {value!r}")
        return value

    @model_validator(mode="after")
    def _targets_once(self) -> HubSpotGroupSpec:
        _check_targets_once(self.targets)
        return self


class HubSpotSourceSettings(BaseModel):
    """Desired groups read from HubSpot lists: each group is one list's contacts (CRM v3 lists API)."""

    model_config = _MODEL

    type: Literal["hubspot"] = Field(description="HubSpot CRM: groups are HubSpot lists of contacts.")
    name: str | None = Field(
        default=None,
        pattern=_SOURCE_NAME,
        description="What reports, logs and metrics call this source. Default: hubspot (hubspot#2, … when "
        "there are several).",
    )
    token: SecretStr = Field(
        description="A HubSpot private app's access token (sent as a Bearer header). It needs the scopes "
        "crm.lists.read and crm.objects.contacts.read; syncd only reads."
    )
    base_url: str = Field(
        default=HUBSPOT_BASE_URL,
        description="HubSpot's API root. https, except on a loopback host (the bundled sandbox).",
    )
    groups: list[HubSpotGroupSpec] = Field(
        min_length=1, description="The groups this source defines: {name, list_id} each, with optional targets."
    )
    properties: dict[str, str] = Field(
        default_factory=dict,
        description="Which HubSpot contact property fills which member field: keys are member fields (email, "
        "first_name, last_name, address.line1, address.line2, address.city, address.postcode, "
        "address.country), values HubSpot property names, e.g. {address.line1: address, address.postcode: "
        "zip, address.country: country}. Defaults: email: email, first_name: firstname, last_name: lastname.",
    )
    allow_empty: bool = Field(
        default=False,
        description="Accept a list that comes back empty although its group had members on the last pass. "
        "By default that pass leaves the group untouched and reports an error (an empty answer is more often "
        "a broken list or filter than the truth). The removal guard still applies.",
    )
    tier: HubSpotTier = Field(
        default="free",
        description="The HubSpot account's subscription tier, which sets HubSpot's burst limit per app and so "
        "syncd's default pace: free and starter 100 requests per 10 seconds, professional and enterprise 190, "
        "api_limit_increase (the API limit increase add-on, on any tier) 250. Default free: the lowest limit, "
        "safe on every account. An explicit rate_limit overrides it.",
    )
    rate_limit: float | None = Field(
        default=None,
        gt=0,
        description="Requests per second to HubSpot. Default: the tier's burst limit spread over its 10 seconds "
        "(10 for free and starter, 19 for professional and enterprise, 25 with the API limit increase), so that "
        "no 10 seconds ever see more than the limit. The burst limit is per app (requests with the same "
        "private app token elsewhere count too); syncd also pauses when HubSpot's X-HubSpot-RateLimit-Remaining "
        "reaches 0, and waits out a 429. HubSpot's daily limit (per account) is not waited for: when it is used "
        "up, the source's groups are left untouched until the next pass.",
    )
    burst: int = Field(
        default=1, ge=1, description="Requests that may go at once after a quiet spell. Default 1 (never above rate)."
    )
    max_concurrency: int = Field(default=4, ge=1, description="Requests in flight at once. Default 4.")
    timeout: float = Field(
        default=30.0, gt=0, description="Seconds before a request times out (it is then retried, see retry)."
    )
    retry: RetrySettings = Field(default_factory=RetrySettings, description="Retry behaviour (as for providers).")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_api_url(value)

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, str]) -> dict[str, str]:
        problems: list[tuple[Loc, str]] = []
        for field, prop in value.items():
            if field not in MEMBER_FIELDS:
                close = difflib.get_close_matches(field, MEMBER_FIELDS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "expected one of: " + ", ".join(MEMBER_FIELDS)
                problems.append(((field,), f"not a member field ({hint})"))
            elif not isinstance(prop, str) or not _HUBSPOT_PROPERTY.match(prop.strip()):
                problems.append(((field,), f"not a HubSpot property name: {prop!r}"))
        if problems:
            raise LocatedErrors(problems)
        return {field: prop.strip() for field, prop in value.items()}

    @property
    def property_map(self) -> dict[str, str]:
        """Member field -> HubSpot property, defaults included."""
        return {**HUBSPOT_DEFAULT_PROPERTIES, **self.properties}

    @property
    def burst_limit(self) -> int:
        """HubSpot's burst limit for this tier: requests per app per 10 seconds."""
        return HUBSPOT_BURST_LIMITS[self.tier]

    @property
    def pacing_rate(self) -> float:
        """Requests per second: `rate_limit` when set, else the tier's burst limit spread over its window."""
        if self.rate_limit is not None:
            return self.rate_limit
        return self.burst_limit / HUBSPOT_BURST_WINDOW


class SqlSourceSettings(BaseModel):
    """Desired groups read with one SQL query: one row per (group, member)."""

    model_config = _MODEL

    type: Literal["sql"] = Field(description="Any database SQLAlchemy can reach (a CRM replica, a warehouse).")
    name: str | None = Field(
        default=None,
        pattern=_SOURCE_NAME,
        description="What reports, logs and metrics call this source. Default: sql (sql#2, … when there are several).",
    )
    url: str = Field(
        description="SQLAlchemy URL of the database, e.g. postgresql+psycopg://reader:${CRM_DB_PASSWORD}@"
        "replica/crm or sqlite:///crm.db (postgresql:// means psycopg 3). Its driver must be installed. The "
        "password is never printed; give syncd a read-only account (syncd also runs the query in a read-only "
        "transaction where the database supports it)."
    )
    query: str = Field(
        description="The query. One row per member; columns by name: email (required), first_name, "
        "last_name, line1, line2, city, postcode, country, and `group` (the group's name) unless the source "
        'sets `group`. Quote the column name: SELECT segment AS "group", email FROM …'
    )
    group: str | None = Field(
        default=None,
        description="Put every row in this one group (the query then has no `group` column). Without it the "
        "rows' `group` column names the groups, which are then known only when the query runs.",
    )
    targets: list[TargetSpec] | None = Field(
        default=None,
        description="Providers every group of this source is synced to: names, or {provider, group_id} "
        "mappings (group_id only with a fixed `group`). Default: every configured provider.",
    )
    removal_policy: RemovalPolicy | None = Field(default=None, description=_POLICY_TEXT + " For every group.")
    max_removals: int | None = Field(
        default=None, ge=0, description="Overrides safety.max_removals for every group of this source."
    )
    max_removal_ratio: float | None = Field(
        default=None, ge=0, le=1, description="Overrides safety.max_removal_ratio for every group of this source."
    )
    allow_empty: bool = Field(
        default=False,
        description="Accept an empty answer: a query that returns no rows, or a fixed `group` that had members "
        "on the last pass and now has none. By default such a pass leaves the groups untouched and reports "
        "an error. The removal guard still applies.",
    )
    timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds the query (connecting included) may take; then it is cancelled and the source "
        "fails for this pass, changing nothing.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        url = _database_url(value)
        try:
            url.get_dialect()
        except NoSuchModuleError:
            raise ValueError(f"unknown database dialect {url.drivername!r}") from None
        return url.render_as_string(hide_password=False)

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        value = value.strip().rstrip(";").strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        return None if value is None else _group_name(value)

    @model_validator(mode="after")
    def _targets(self) -> SqlSourceSettings:
        _check_targets_once(self.targets)
        if self.group is None:
            pinned = [i for i, t in enumerate(self.targets or ()) if t.group_id]
            if pinned:
                raise LocatedErrors(
                    [
                        (
                            ("targets", pinned[0]),
                            "group_id pins one provider group, but this source's groups come from its query's "
                            "`group` column: set `group` (one fixed group) or drop group_id",
                        )
                    ]
                )
        return self

    @property
    def safe_url(self) -> str:
        """The URL with its password masked (``***``): fit for logs and output."""
        return make_url(self.url).render_as_string(hide_password=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for key, value in super().__repr_args__():
            yield key, (self.safe_url if key == "url" else value)


SOURCE_TYPES = ("hubspot", "sql")

if TYPE_CHECKING:
    SourceEntry = HubSpotSourceSettings | SqlSourceSettings
else:
    SourceEntry = Annotated[Union[HubSpotSourceSettings, SqlSourceSettings], Field(discriminator="type")]  # noqa: UP007

# Anything that names a group and its targets: an inline group, a HubSpot list group, a fixed-group SQL source.
TargetHolder = GroupSpec | HubSpotGroupSpec | SqlSourceSettings


def _holder_name(holder: TargetHolder) -> str:
    name = holder.group if isinstance(holder, SqlSourceSettings) else holder.name
    assert name is not None  # a SQL source holds a named group only with a fixed `group`
    return name


def _provider_union() -> Any:
    classes = tuple(spec.settings for spec in PROVIDERS.values())
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[classes], Field(discriminator="type")]  # noqa: UP007


if TYPE_CHECKING:
    ProviderEntry = ProviderSettings
else:
    ProviderEntry = _provider_union()

# The environment `Config` reads its overrides from; `load_config(env=…)` sets it for one load.
_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("syncd_config_env", default=None)


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source reading a given mapping instead of always `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self.case_sensitive:
            return dict(self._environ)
        return {k.lower(): v for k, v in self._environ.items()}


class Config(BaseSettings):
    """The whole config file. Environment variables ``SYNCD_<KEY>__<SUBKEY>`` override its values."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
        env_file=None,
        secrets_dir=None,
    )

    state: StateSettings = Field(default_factory=StateSettings, description="The state database.")
    schedule: ScheduleSettings = Field(
        default_factory=ScheduleSettings, description="When `syncd serve` runs a pass (every or cron)."
    )
    server: ServerSettings = Field(default_factory=ServerSettings, description="The metrics and health HTTP server.")
    safety: SafetySettings = Field(
        default_factory=SafetySettings, description="The removal guard's limits; groups can override them."
    )
    providers: list[ProviderEntry] = Field(
        default_factory=list,
        description="The mailing providers, each with a unique `name` (what groups target), a `type` "
        f"({', '.join(sorted(PROVIDERS))}), its `base_url` and credentials.",
    )
    sources: list[SourceEntry] = Field(
        default_factory=list,
        description="Where desired groups come from besides the inline `groups`: a list of sources, each with "
        f"a `type` ({', '.join(SOURCE_TYPES)}). A group name may be defined in one place only.",
    )
    groups: list[GroupSpec] = Field(default_factory=list, description="Desired groups written inline.")

    _path: Path = PrivateAttr(default_factory=lambda: Path("syncd.yaml"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: it overrides the file's values (they arrive as init kwargs). No .env, no secrets.
        environ = _ENVIRON.get()
        return _EnvSource(settings_cls, os.environ if environ is None else environ), init_settings

    @model_validator(mode="after")
    def _cross_check(self) -> Config:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        names: dict[str, int] = {}
        for i, provider in enumerate(self.providers):
            if provider.name in names:
                problems.append(
                    (
                        ("providers", i, "name"),
                        f"provider name {provider.name!r} is already taken by providers[{names[provider.name]}]",
                    )
                )
            names.setdefault(provider.name, i)
        configured = ", ".join(names) or "none"
        refs: dict[int, Loc] = {}
        # Every group name known before anything runs: inline groups, HubSpot lists, fixed-group SQL sources.
        defined: dict[str, Loc] = {}
        pinned: dict[tuple[str, str], Loc] = {}  # (provider, group_id) -> where a target pins it
        for loc, holder in self._named_groups():
            name = _holder_name(holder)
            key = name.casefold()
            if key in defined:
                refs[len(problems)] = defined[key]
                problems.append(
                    (
                        loc,
                        f"group name {name!r} is already used by {{ref}}: a group is defined in one place only "
                        "(group names are compared case-insensitively)",
                    )
                )
            defined.setdefault(key, loc)
            for ti, target in enumerate(holder.targets or ()):
                where = (*loc[:-1], "targets", ti)
                if target.provider not in names:
                    problems.append((where, f"no provider named {target.provider!r} (configured: {configured})"))
                elif target.group_id is not None:
                    # Two desired groups on one provider group would undo each other's changes on every pass.
                    pinned_key = (target.provider, target.group_id)
                    if pinned_key in pinned:
                        refs[len(problems)] = pinned[pinned_key]
                        problems.append(
                            (
                                where,
                                f"{target.provider} group {target.group_id!r} is already the target of {{ref}}: two "
                                "groups synced into one provider group would undo each other's changes",
                            )
                        )
                    pinned.setdefault(pinned_key, where)
        for si, source in enumerate(self.sources):
            if isinstance(source, SqlSourceSettings) and source.group is None:
                for ti, target in enumerate(source.targets or ()):
                    if target.provider not in names:
                        problems.append(
                            (
                                ("sources", si, "targets", ti),
                                f"no provider named {target.provider!r} (configured: {configured})",
                            )
                        )
        labels: dict[str, int] = {}
        for si, label in enumerate(self.source_names()):
            if label in labels:
                problems.append(
                    (
                        ("sources", si, "name"),
                        f"source name {label!r} is already taken by sources[{labels[label]}]",
                    )
                )
            labels.setdefault(label, si)
        if problems:
            raise LocatedErrors(problems, refs)
        return self

    def _named_groups(self) -> Iterator[tuple[Loc, TargetHolder]]:
        """(location of the name, holder) of every group whose name is in the file."""
        for gi, group in enumerate(self.groups):
            yield ("groups", gi, "name"), group
        for si, source in enumerate(self.sources):
            if isinstance(source, HubSpotSourceSettings):
                for gi, spec in enumerate(source.groups):
                    yield ("sources", si, "groups", gi, "name"), spec
            elif source.group is not None:
                yield ("sources", si, "group"), source

    def source_names(self) -> list[str]:
        """What reports call each entry of `sources`: its `name`, else its type (numbered when several entries of
        that type have no name)."""
        unnamed: dict[str, int] = {}
        for source in self.sources:
            if source.name is None:
                unnamed[source.type] = unnamed.get(source.type, 0) + 1
        seen: dict[str, int] = {}
        out = []
        for source in self.sources:
            if source.name is not None:
                out.append(source.name)
                continue
            seen[source.type] = seen.get(source.type, 0) + 1
            out.append(source.type if unnamed[source.type] == 1 else f"{source.type}#{seen[source.type]}")
        return out

    def group_names(self) -> list[str]:
        """Every group name the file defines (inline groups, HubSpot lists, fixed-group SQL sources). Groups
        named by a SQL query's `group` column are known only when it runs: see `has_query_named_groups`."""
        return [_holder_name(holder) for _, holder in self._named_groups()]

    def group_targets(self) -> list[tuple[str, list[TargetSpec]]]:
        """Every group named in the file with its targets (defaults applied): what `validate --online` checks."""
        return [(_holder_name(holder), self.targets_of(holder)) for _, holder in self._named_groups()]

    def warnings(self) -> list[str]:
        """What is valid but almost surely not meant: a config with which some (or every) group is synced nowhere."""
        out: list[str] = []
        if not self.providers:
            out.append("no providers are configured: no group is synced anywhere")
        if not self.groups and not self.sources:
            out.append("no groups and no sources are configured: there is nothing to sync")
        if self.providers:
            for name, targets in self.group_targets():
                if not targets:
                    out.append(f"group {name!r} has an empty targets list: it is synced nowhere")
        return out

    @property
    def has_query_named_groups(self) -> bool:
        """Whether some SQL source names its groups from its rows (so `group_names` is not the full list)."""
        return any(isinstance(s, SqlSourceSettings) and s.group is None for s in self.sources)

    @property
    def path(self) -> Path:
        """The file this config was loaded from."""
        return self._path

    def provider(self, name: str) -> ProviderSettings:
        for provider in self.providers:
            if provider.name == name:
                return provider
        raise KeyError(f"no provider named {name!r} (configured: {', '.join(p.name for p in self.providers)})")

    def group(self, name: str) -> GroupSpec:
        """The inline group of that name (case-insensitive)."""
        for group in self.groups:
            if group.name.casefold() == name.casefold():
                return group
        raise KeyError(f"no group named {name!r}")

    def targets_of(self, group: TargetHolder) -> list[TargetSpec]:
        """The group's (or SQL source's) explicit targets, or every configured provider."""
        if group.targets is not None:
            return list(group.targets)
        return [TargetSpec(provider=p.name) for p in self.providers]


# ----------------------------------------------------------------------------------- types of key paths


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional: ``Annotated[X | None, …]`` -> ``X`` (a union of several stays)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _model_for(tp: Any, tag: object) -> type[BaseModel] | None:
    """The model a mapping of type `tp` validates as; for a union of models, the one whose `type` is `tag`."""
    tp = _unwrap(tp)
    if _is_model(tp):
        return typing.cast(type[BaseModel], tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            arg = _unwrap(arg)
            field = arg.model_fields.get("type") if _is_model(arg) else None
            literal = field is not None and typing.get_origin(field.annotation) is Literal
            if literal and field is not None and tag in typing.get_args(field.annotation):
                return typing.cast(type[BaseModel], arg)
    return None


def _child_type(tp: Any, segment: str | int, tag: object = None) -> Any:
    """The type of `segment` inside a value of type `tp`; None when unknown."""
    tp = _unwrap(tp)
    if isinstance(segment, int):
        return typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
    model = _model_for(tp, tag)
    if model is None:
        return None
    field = model.model_fields.get(segment)
    return field.annotation if field is not None else None


def _wants_text(tp: Any) -> bool:
    """Whether a YAML scalar going into `tp` keeps its source text (no implicit int/bool/date typing)."""
    tp = _unwrap(tp)
    if tp is str or tp is SecretStr:
        return True
    if typing.get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return issubclass(tp, str)
    return _is_model(tp) and hasattr(tp, "__scalar_field__")


def _known_keys(tp: Any, tag: object) -> list[str]:
    model = _model_for(tp, tag)
    return list(model.model_fields) if model is not None else []


# ------------------------------------------------------------------------------------------- the walk

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL_PASSWORD = re.compile(r"://[^/@:\s]*:([^/@\s]+)@")

Loc = tuple[str | int, ...]


class _Problem(typing.NamedTuple):
    line: int | None
    key: str | None
    message: str
    env_var: str | None = None


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for segment in loc:
        out += f"[{segment}]" if isinstance(segment, int) else (f".{segment}" if out else str(segment))
    return out


class _Walker:
    """Turns a composed YAML node tree into plain values, recording the line of every key path."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.lines: dict[Loc, int] = {(): 1}
        self.problems: list[_Problem] = []
        self.secrets: set[str] = set()
        self._constructor = yaml.constructor.SafeConstructor()
        self._active: set[int] = set()

    def problem(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.problems.append(_Problem(node.start_mark.line + 1, _dotted(loc) or None, message))

    def walk(self, node: yaml.Node, loc: Loc, tp: Any) -> Any:
        if id(node) in self._active:
            self.problem(node, loc, "an alias refers to a node that contains it")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc, tp)
            if isinstance(node, yaml.SequenceNode):
                return [self._item(child, (*loc, i), _child_type(tp, i)) for i, child in enumerate(node.value)]
            return self._scalar(node, loc, tp)
        finally:
            self._active.discard(id(node))

    def _item(self, node: yaml.Node, loc: Loc, tp: Any) -> Any:
        self.lines[loc] = node.start_mark.line + 1
        return self.walk(node, loc, tp)

    def _mapping(self, node: yaml.MappingNode, loc: Loc, tp: Any) -> dict[str, Any]:
        tag = self._type_tag(node)
        explicit: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        self.problem(source, loc, "a merge key (<<) takes a mapping or a list of mappings")
                        continue
                    for key, value in self._mapping(source, loc, tp).items():
                        merged.setdefault(key, value)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                self.problem(key_node, loc, f"key {shown!r} is not a string (quote it)")
                continue
            key = typing.cast(str, key_node.value)
            line = key_node.start_mark.line + 1
            if key in first_line:
                self.problem(key_node, (*loc, key), f"duplicate key (first given on line {first_line[key]})")
                continue
            first_line[key] = line
            child = (*loc, key)
            if key in merged:  # a key given here overrides one merged in with <<: forget the merged lines
                for stale in [p for p in self.lines if p[: len(child)] == child]:
                    del self.lines[stale]
            self.lines[child] = line
            value = self.walk(value_node, child, _child_type(tp, key, tag))
            if isinstance(value, str) and value:
                if is_secret_key(key):
                    self.secrets.add(value)
                self.secrets.update(p for p in _URL_PASSWORD.findall(value) if p)
            explicit[key] = value
        return {**merged, **explicit}

    def _type_tag(self, node: yaml.MappingNode, depth: int = 0) -> object:
        """The `type` of this mapping, its own or merged in with << (it picks the provider model)."""
        tag: object = None
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG and tag is None and depth < 10:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if tag is None and isinstance(source, yaml.MappingNode):
                        tag = self._type_tag(source, depth + 1)
            elif isinstance(key_node, yaml.ScalarNode) and key_node.value == "type":
                return value_node.value if isinstance(value_node, yaml.ScalarNode) else None
        return tag

    def _scalar(self, node: yaml.Node, loc: Loc, tp: Any) -> Any:
        if not isinstance(node, yaml.ScalarNode):  # pragma: no cover - compose yields only these three
            self.problem(node, loc, "unsupported YAML node")
            return None
        if node.tag == _NULL_TAG:
            return None
        if node.tag == _STR_TAG or (_wants_text(tp) and node.tag.startswith("tag:yaml.org,2002:")):
            return self._interpolate(typing.cast(str, node.value), node, loc)
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problem(node, loc, _one_line(getattr(exc, "problem", None) or str(exc)))
            return None

    def _interpolate(self, text: str, node: yaml.Node, loc: Loc) -> str | None:
        if "$" not in text:
            return text
        failed = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal failed
            whole = match.group(0)
            if whole == "$${":
                return "${"
            body = match.group(1)
            if body is None:
                self.problem(node, loc, "unclosed ${ (write $${ for a literal ${)")
                failed = True
                return ""
            name, has_default, default = body.partition(":-")
            if not _VAR_NAME.fullmatch(name):
                self.problem(
                    node,
                    loc,
                    f"bad variable reference ${{{body}}} (expected ${{NAME}} or ${{NAME:-default}})",
                )
                failed = True
                return ""
            value = self.env.get(name)
            if value and is_secret_key(name):
                self.secrets.add(value)  # e.g. ${DB_PASSWORD} inside a URL: never echoed either
            if has_default and not value:
                return default
            if not value:
                # An empty value is almost always a variable passed through unset (docker -e NAME);
                # ${NAME:-} says explicitly that empty is fine.
                self.problem(node, loc, f"environment variable {name} is {'empty' if value == '' else 'not set'}")
                failed = True
                return ""
            return value

        result = _VAR.sub(substitute, text)
        return None if failed else result


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ------------------------------------------------------------------------------------------- loading


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and check the config file at `path`; `env` (default `os.environ`) feeds ``${VAR}`` and overrides.

    Raises `ConfigError` (`ConfigErrors` when there are several problems) naming file, line and key.
    Nothing is contacted.
    """
    path = Path(path)
    environ: Mapping[str, str] = os.environ if env is None else env
    file, root = _read_yaml(path)

    walker = _Walker(environ)
    data: Any = {} if root is None else walker.walk(root, (), Config)
    if walker.problems:
        _raise(file, walker.problems)
    if not isinstance(data, dict):
        raise ConfigError(_NOT_A_MAPPING, file=file, line=1)

    # Keys pydantic-settings would take as its own init arguments (_env_file, …) must not get that far.
    soft: list[_Problem] = []
    for key in [k for k in data if k.startswith(EXTENSION_PREFIX)]:
        del data[key]  # x-…: a place for YAML anchors, ignored
    for key in [k for k in data if k not in Config.model_fields]:
        soft.append(_Problem(walker.lines.get((key,)), key, _unknown_key(key, list(Config.model_fields))))
        del data[key]

    config = _validate(Config, data, walker, environ, file, soft)
    if soft:
        _raise(file, soft)
    config._path = path
    return config


class _StateOnly(BaseSettings):
    """The `state` section alone, read like `Config` reads it (the same environment overrides)."""

    model_config = Config.model_config

    state: StateSettings = Field(default_factory=StateSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON.get()
        return _EnvSource(settings_cls, os.environ if environ is None else environ), init_settings


def load_state_settings(path: str | Path, env: Mapping[str, str] | None = None) -> StateSettings:
    """The config file's `state` section, for the commands that only read the state DB (`history`, …).

    Only that section is expanded and checked, so such a command works without the providers' credentials in
    the environment and whatever the rest of the file holds (as long as it is YAML). ``${VAR}`` expansion,
    ``SYNCD_STATE__URL`` (or ``SYNCD_STATE``) overrides and the file:line:key errors are those of `load_config`.
    """
    path = Path(path)
    environ: Mapping[str, str] = os.environ if env is None else env
    file, root = _read_yaml(path)
    if root is not None and not isinstance(root, yaml.MappingNode):
        raise ConfigError(_NOT_A_MAPPING, file=file, line=1)
    data: dict[str, Any] = {}
    walker = _Walker(environ)
    if root is not None:
        # The top-level `state` key, and merge keys (<<) that could bring one in; nothing else is walked.
        kept = [(k, v) for k, v in root.value if k.tag == _MERGE_TAG or (_is_str_key(k) and k.value == "state")]
        pruned = yaml.MappingNode(root.tag, kept, root.start_mark, root.end_mark, root.flow_style)
        walked = walker.walk(pruned, (), Config)
        problems = [p for p in walker.problems if p.key is not None and re.match(r"state\b", p.key)]
        if problems:
            _raise(file, problems)
        if isinstance(walked, dict) and "state" in walked:
            data["state"] = walked["state"]
    return _validate(_StateOnly, data, walker, environ, file, []).state


def _is_str_key(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG


_NOT_A_MAPPING = "the top level must be a mapping of keys (state, providers, groups, …)"
_SettingsT = typing.TypeVar("_SettingsT", bound=BaseSettings)


def _validate(
    cls: type[_SettingsT],
    data: dict[str, Any],
    walker: _Walker,
    environ: Mapping[str, str],
    file: str,
    soft: Sequence[_Problem],
) -> _SettingsT:
    """`cls(**data)` with the environment's overrides; every failure a `ConfigError` (never a traceback)."""
    token = _ENVIRON.set(environ)
    try:
        return cls(**data)
    except ValidationError as exc:
        _raise(file, [*soft, *_translate(exc, data, walker, environ, file)])
    except SettingsError as exc:
        field = re.search(r'field "([^"]+)"', str(exc))
        name = _env_var_for((field.group(1),), environ) if field else None
        raise ConfigError(
            "not valid JSON (a list or mapping given in one environment variable is written as JSON)",
            file=f"environment variable {name}" if name else "environment",
            key=field.group(1) if field else None,
        ) from None
    except Exception as exc:  # a validator that raised something other than ValueError: still no traceback
        message = _one_line(f"{type(exc).__name__}: {exc}")
        for secret in walker.secrets:
            if len(secret) >= 4:
                message = message.replace(secret, "***")
        raise ConfigError(f"invalid value ({message})", file=file) from None
    finally:
        _ENVIRON.reset(token)


def _read_yaml(path: Path) -> tuple[str, yaml.Node | None]:
    """The file's name as messages give it, and its YAML node tree (None for an empty file)."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", file=file) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=file) from None
    try:
        root: yaml.Node | None = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        line, message = _yaml_problem(exc, text)
        raise ConfigError(f"invalid YAML: {message}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {_one_line(str(exc))}", file=file) from None
    return file, root


_FLOW_CONTEXTS = {"while parsing a flow sequence": ("[", "]"), "while parsing a flow mapping": ("{", "}")}


def _unclosed_flow(text: str, at: yaml.Mark) -> tuple[yaml.Mark, str] | None:
    """Where the innermost ``[`` or ``{`` still open at `at` starts, and which it is, from PyYAML's own tokens
    (so brackets in quoted strings, comments and plain scalars do not count); None if there is none."""
    opened: list[tuple[yaml.Mark, str]] = []
    try:
        for token in yaml.scan(text, Loader=_LOADER):
            if (token.start_mark.line, token.start_mark.column) >= (at.line, at.column):
                break
            if isinstance(token, yaml.FlowSequenceStartToken | yaml.FlowMappingStartToken):
                opened.append((token.start_mark, "[" if isinstance(token, yaml.FlowSequenceStartToken) else "{"))
            elif isinstance(token, yaml.FlowSequenceEndToken | yaml.FlowMappingEndToken) and opened:
                opened.pop()
    except yaml.YAMLError:
        pass
    return opened[-1] if opened else None


def _yaml_problem(exc: yaml.MarkedYAMLError, text: str) -> tuple[int | None, str]:
    """The line of a YAML syntax error's cause, and what to say about it.

    The parser reports where it gave up (``problem_mark``). For a bracket or quote that is never closed that
    is a later line, or the end of the file; the cause is where the construct started (``context_mark``).
    Messages do not depend on whether PyYAML runs on libyaml (whose wording differs) where it matters.
    """
    context, problem = exc.context or "", exc.problem or ""
    start, at = exc.context_mark, exc.problem_mark
    parsed = _one_line(", ".join(p for p in (context, problem) if p))
    if at is None:
        return (start.line + 1 if start is not None else None), parsed
    lines = text.splitlines()

    def char_at(line: int, column: int) -> str:
        return lines[line][column] if line < len(lines) and column < len(lines[line]) else ""

    def until(line: int) -> str:
        rest = lines[line:]
        if all(not s.strip() or s.lstrip().startswith("#") for s in rest):
            return "before the end of the file"
        return f"before line {line + 1}"

    if start is not None and at.line > start.line and context in _FLOW_CONTEXTS:
        opening, closing = _FLOW_CONTEXTS[context]
        return (
            start.line + 1,
            f"the {opening!r} in column {start.column + 1} is not closed "
            f"(expected ',' or {closing!r} {until(at.line)})",
        )
    if context == "while parsing a flow node":  # e.g. `[a, b,` and then the end: the mark is not the bracket's
        unclosed = _unclosed_flow(text, at)
        if unclosed is not None and unclosed[0].line < at.line:
            mark, opening = unclosed
            closing = "]" if opening == "[" else "}"
            return (
                mark.line + 1,
                f"the {opening!r} in column {mark.column + 1} is not closed (no {closing!r} {until(at.line)})",
            )
    if start is not None and at.line > start.line and context == "while scanning a quoted scalar":
        quote = char_at(start.line, start.column)
        shown = f" ({quote})" if quote in ("'", '"') else ""
        return (
            start.line + 1,
            f"the quoted string{shown} that starts in column {start.column + 1} is not closed {until(at.line)}",
        )
    if char_at(at.line, at.column) == "\t":
        return at.line + 1, "a tab character: YAML is indented with spaces, not tabs"
    if context.startswith("while parsing a block") and start is not None and at.line > start.line:
        return (
            at.line + 1,
            f"this line's indentation does not fit the block that starts on line {start.line + 1} ({parsed})",
        )
    if problem.startswith("mapping values are not allowed"):
        return at.line + 1, f"{parsed} (quote a value that contains ': ', or indent this line less)"
    return at.line + 1, parsed


def _raise(file: str, problems: Sequence[_Problem]) -> typing.NoReturn:
    unique = list({(p.line, p.env_var, p.message): p for p in reversed(problems)}.values())[::-1]
    ordered = sorted(unique, key=lambda p: (p.env_var is not None, p.line or 0))
    errors = [
        ConfigError(p.message, file=f"environment variable {p.env_var}" if p.env_var else file, line=p.line, key=p.key)
        for p in ordered
    ]
    if len(errors) == 1:
        raise errors[0]
    raise ConfigErrors(errors)


def _unknown_key(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else ("expected one of: " + ", ".join(known) if known else "")
    return f"unknown key ({hint})" if hint else "unknown key"


def _value_at(data: Any, loc: Loc) -> Any:
    for segment in loc:
        if isinstance(segment, int) and isinstance(data, list) and 0 <= segment < len(data):
            data = data[segment]
        elif isinstance(segment, str) and isinstance(data, dict):
            data = data.get(segment)
        else:
            return None
    return data


def _type_at(data: Any, loc: Loc) -> Any:
    tp: Any = Config
    for i, segment in enumerate(loc):
        container = _value_at(data, loc[:i])
        tag = container.get("type") if isinstance(container, dict) else None
        tp = _child_type(tp, segment, tag)
        if tp is None:
            return None
    return tp


_UNION_TAGS: dict[str, Sequence[str]] = {"providers": list(PROVIDERS), "sources": SOURCE_TYPES}


def _strip_tags(loc: Sequence[str | int]) -> Loc:
    """pydantic puts the discriminator's tag into locations inside a union (providers.0.communic8.token)."""
    out: list[str | int] = []
    for i, segment in enumerate(loc):
        if (
            isinstance(segment, str)
            and i >= 2
            and isinstance(loc[i - 2], str)
            and segment in _UNION_TAGS.get(str(loc[i - 2]), ())
            and isinstance(loc[i - 1], int)
        ):
            continue
        out.append(segment)
    return tuple(out)


def _union_kind(loc: Loc) -> tuple[str, str]:
    """('provider', known types) or ('source', known types) for a location inside `providers` / `sources`."""
    if loc and loc[0] == "sources":
        return "source", ", ".join(SOURCE_TYPES)
    return "provider", ", ".join(sorted(PROVIDERS))


def _env_var_for(loc: Loc, environ: Mapping[str, str]) -> str | None:
    """The SYNCD_… variable whose value sits at (or above) `loc`, if the environment set it."""
    upper = {k.upper(): k for k in environ}
    for n in range(len(loc), 0, -1):
        name = ENV_PREFIX + ENV_DELIMITER.join(str(s) for s in loc[:n]).upper()
        if name in upper:
            return upper[name]
    return None


def _line_for(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _translate(
    exc: ValidationError, data: Any, walker: _Walker, environ: Mapping[str, str], file: str = ""
) -> list[_Problem]:
    problems: list[_Problem] = []
    secrets = set(walker.secrets)
    for name, value in environ.items():
        if name.upper().startswith(ENV_PREFIX) and value:
            if is_secret_key(name):
                secrets.add(value)
            secrets.update(p for p in _URL_PASSWORD.findall(value) if p)
    for err in exc.errors(include_url=False):
        loc = _strip_tags(err["loc"])
        kind = err["type"]
        ctx = err.get("ctx") or {}
        located = ctx.get("error")
        if isinstance(located, LocatedErrors):
            entries = []
            for i, (sub, msg) in enumerate(located.problems):
                ref = located.refs.get(i)
                if ref is not None:
                    where_ref = (*loc, *ref)
                    ref_line = None if _env_var_for(where_ref, environ) else _line_for(where_ref, walker.lines)
                    named = where_ref[:-1] if where_ref[-1:] == ("name",) else where_ref  # groups[0], not .name
                    shown = _dotted(named) + (f" ({file}:{ref_line})" if ref_line and file else "")
                    msg = msg.replace("{ref}", shown)
                entries.append(((*loc, *sub), msg))
        elif kind == "extra_forbidden":
            parent = loc[:-1]
            container = _value_at(data, parent)
            tag = container.get("type") if isinstance(container, dict) else None
            entries = [(loc, _unknown_key(str(loc[-1]), _known_keys(_type_at(data, parent), tag)))]
        elif kind == "missing":
            entries = [(loc, "missing required key")]
        elif kind == "union_tag_invalid":
            what, known = _union_kind(loc)
            entries = [((*loc, "type"), f"unknown {what} type {ctx.get('tag')!r} (expected one of: {known})")]
        elif kind == "union_tag_not_found":
            what, known = _union_kind(loc)
            entries = [((*loc, "type"), f"missing required key (the {what} type, one of: {known})")]
        else:
            message = _message(err, loc)
            value = err.get("input")
            got = _got(value, loc, data, secrets, type_error=kind.endswith("_type"))
            if got and not _SAYS_GOT.search(message) and not (isinstance(value, str) and value and value in message):
                message = f"{_UNPARSABLE.sub('', message)}, got {got}"
            entries = [(loc, message)]
        for where, message in entries:
            key = str(where[-1]) if where else ""
            value = err.get("input")
            if is_secret_key(key) and isinstance(value, str) and value:
                message = message.replace(value, "***")
            for secret in secrets:
                if len(secret) >= 4:
                    message = message.replace(secret, "***")
            env_var = _env_var_for(where, environ)
            line = None if env_var else _line_for(where, walker.lines)
            problems.append(_Problem(line, _dotted(where) or None, _one_line(message), env_var))
    return problems


_UNPARSABLE = re.compile(r", unable to (parse string as an? \w+|interpret input)$")
_SAYS_GOT = re.compile(r"\bgot\b")
_SHOWN_CHARS = 60


def _got(value: object, loc: Loc, data: Any, secrets: typing.Collection[str], *, type_error: bool) -> str | None:
    """What a message about a value of the wrong type or form says it got (``'fast'``), or None.

    A secret is never shown: for a secret key (by name, or a SecretStr field) or a value that contains a known
    secret, only its type; nor a URL (its query may hold a password, whatever the key is called). Lists and
    mappings are named by kind, and only in a type error."""
    if value is None:
        return "an empty value"
    if isinstance(value, Mapping | list | tuple):
        return ("a mapping" if isinstance(value, Mapping) else "a list") if type_error else None
    if not isinstance(value, str | int | float):
        return None
    names = [segment for segment in loc if isinstance(segment, str)]
    text = value if isinstance(value, str) else ""
    if "://" in text:
        return None
    if (
        any(is_secret_key(name) for name in names)
        or _unwrap(_type_at(data, loc)) is SecretStr
        or any(len(secret) >= 4 and secret in text for secret in secrets)
    ):
        return f"a value of type {type(value).__name__}"
    if isinstance(value, bool):
        return str(value).lower()
    if not isinstance(value, str):
        return str(value)
    return repr(value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 1] + "…")


_READABLE = {
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "string_type": "expected a string",
}


def _message(err: Any, loc: Loc) -> str:
    kind = err["type"]
    if kind in _READABLE:
        return _READABLE[kind]
    if kind == "string_pattern_mismatch" and len(loc) == 3 and loc[0] == "providers" and loc[2] == "name":
        return "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
    if kind == "string_pattern_mismatch" and len(loc) == 3 and loc[0] == "sources" and loc[2] == "name":
        return "must start with a letter or digit and contain only letters, digits, '_', '.', ':', '#' and '-'"
    if kind == "too_short" and loc and loc[-1] == "groups" and loc[0] == "sources":
        return "give at least one group ({name, list_id})"
    message = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message
