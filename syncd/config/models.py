"""The daemon's own config models: state, schedule, server, safety, the inline groups, and the `Config` root.

Why this module exists: these are the keys syncd itself defines, and the checks that span the whole file
(a provider name taken twice, a target naming no provider, a group defined in two places, two groups pinned to
one provider group). Their ``description=`` texts are the key reference; ``config.example.yaml`` shows them
in use. Turning a file into these models is `syncd.config.loading`'s job; saying what is wrong with one is
`syncd.config.problems`'.

What this module does not know: any provider or any source. Providers contribute their settings through
`connectors.registry` (the `providers` union below). Sources contribute theirs through
`syncd.sources.registry`, and since the sources import this module (for `TargetSpec`, `SourceSettings` and the
shared checks), the dependency only goes that way: `Config` declares `sources` as a list of the
`SourceSettings` base, and `with_sources` assembles, at load time, the `Config` whose `sources` are the
discriminated union of the registered types. Every cross-check asks a source for its groups through
`SourceSettings.declared_groups`, never by its type.

``Config`` is a pydantic-settings ``BaseSettings``: ``SYNCD_<KEY>__<SUBKEY>`` environment variables override the
file's values. It reads them from the mapping `environment()` sets for one load (default `os.environ`).
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import os
import re
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, Protocol, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from connectors.base import Contact, PostalAddress
from connectors.registry import PROVIDERS
from connectors.settings import ProviderSettings
from syncd.config.paths import ENV_DELIMITER, ENV_PREFIX, Loc
from syncd.config.problems import ProblemList
from syncd.model import RemovalPolicy

DEFAULT_EVERY = timedelta(minutes=15)

MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True)  # every model of the file, sources' included


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


def database_url(value: str) -> URL:
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

    model_config = MODEL_CONFIG

    url: str = Field(
        default="sqlite:///syncd.db",
        description="SQLAlchemy URL of the state database. SQLite (sqlite:///path.db) for one instance; "
        "PostgreSQL (postgresql+psycopg://user:password@host/db) for production and for several replicas. "
        "A plain postgresql:// URL uses the psycopg (3) driver. The password is never printed.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        url = database_url(value)
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

    model_config = MODEL_CONFIG

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
    """The HTTP server of `syncd serve`: /metrics, /healthz, /readyz, and the API under /api/v1/."""

    model_config = MODEL_CONFIG

    listen: str = Field(
        default="0.0.0.0:9108",
        description="Address to listen on, host:port. An IPv6 address goes in brackets ([::]:9108); "
        "an empty host (:9108) means every IPv4 interface.",
    )

    workers: int = Field(
        default=4,
        ge=1,
        description="With a PostgreSQL state DB (several replicas): how many pairs this replica works at once.",
    )
    stalled_after: timedelta = Field(
        default=timedelta(seconds=60),
        description="With a PostgreSQL state DB: a replica whose heartbeat is older than this is taken for dead, "
        "and another replica takes its pairs over (e.g. 60s, 2m).",
    )

    api_token: SecretStr | None = Field(
        default=None,
        description="The bearer token of the daemon's API (/api/v1/: start a pass, read its report, the pairs' "
        "status), sent as `Authorization: Bearer <token>`; at least 16 characters (e.g. `openssl rand -hex 32`). "
        "Without one (or empty) the API is off and answers 404. Keep it in the environment: "
        "${SYNCD_API_TOKEN}. A reload can change it.",
    )

    @field_validator("api_token")
    @classmethod
    def _api_token(cls, value: SecretStr | None) -> SecretStr | None:
        # The messages never show the value: it is a secret.
        if value is None or not value.get_secret_value():
            return None
        token = value.get_secret_value()
        if any(c.isspace() for c in token) or not token.isprintable():
            raise ValueError("must not contain spaces or control characters")
        if len(token) < 16:
            raise ValueError("must be at least 16 characters long (e.g. the output of `openssl rand -hex 32`)")
        return value

    @field_validator("stalled_after", mode="before")
    @classmethod
    def _stalled_after(cls, value: object) -> timedelta:
        found = parse_duration(value)
        if found.total_seconds() < 5:
            raise ValueError("must be at least 5s: heartbeats go every quarter of it")
        return found

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

    model_config = MODEL_CONFIG

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

    model_config = MODEL_CONFIG
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

    model_config = MODEL_CONFIG

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

    model_config = MODEL_CONFIG
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


# The texts of the group keys every kind of group takes (inline, and the groups sources name).
KEY_TEXT = (
    "The group's stable identity (default: its name): the state DB files the group's provider bindings, the members "
    "syncd added, its ledger and remembered rejects under it, so renaming the group while keeping its key keeps its "
    "provider groups (nothing is created or renamed there). Unique across the config, compared case-insensitively. "
    "Adding a key to an existing group carries its binding over."
)
TARGETS_TEXT = (
    "Providers this group is synced to: names, or {provider, group_id} mappings. Default: every configured "
    "provider; an empty list ([]) syncs it nowhere (a group that exists to be excluded or referenced)."
)
PROTECTED_TEXT = (
    "Email addresses syncd never removes from this group's provider groups, whatever the source says "
    "(compared case-insensitively). They are not added for being listed here."
)
EXCLUDE_TEXT = (
    "Names (or keys) of other groups, from any source, whose members are subtracted from this group after every "
    "source is read (a suppression list). If one of them cannot be read this pass, this group changes nothing "
    "(each of its pairs fails, naming it)."
)


class GroupKeyChecks(BaseModel):
    """The checks of a group's `key`, `protected` and `exclude`, for every kind of group spec that has them (inline
    groups, HubSpot's): each declares the fields where its own order wants them."""

    @field_validator("key", check_fields=False)
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else check_group_name(value)

    @field_validator("protected", check_fields=False)
    @classmethod
    def _protected(cls, value: list[str]) -> list[str]:
        return check_protected(value)

    @field_validator("exclude", check_fields=False)
    @classmethod
    def _exclude(cls, value: list[str]) -> list[str]:
        return check_exclude(value)


class GroupSpec(GroupKeyChecks):
    """A desired group, written inline in the config (the yaml source)."""

    model_config = MODEL_CONFIG

    name: str = Field(
        description="The group's name; also its name at the providers when syncd creates it. Unique, "
        "compared case-insensitively."
    )
    key: str | None = Field(default=None, description=KEY_TEXT)
    targets: list[TargetSpec] | None = Field(default=None, description=TARGETS_TEXT)
    protected: list[str] = Field(default_factory=list, description=PROTECTED_TEXT)
    exclude: list[str] = Field(default_factory=list, description=EXCLUDE_TEXT)
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
        check_targets_once(self.targets)
        return self

    def contacts(self) -> list[Contact]:
        return [m.to_contact() for m in self.members]


def check_targets_once(targets: Sequence[TargetSpec] | None) -> None:
    """A group's targets name each provider once (raises `LocatedErrors` at ``targets[i]``)."""
    seen: dict[str, int] = {}
    problems = ProblemList()
    for i, target in enumerate(targets or ()):
        if target.provider in seen:
            problems.add(
                ("targets", i),
                f"provider {target.provider!r} is targeted twice (first as targets[{seen[target.provider]}])",
            )
        seen.setdefault(target.provider, i)
    problems.check()


# ------------------------------------------------------------------------------------------- sources

SOURCE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:#-]*$"
REMOVAL_POLICY_TEXT = (
    "mirror: remove every member the source does not list; owned: remove only members syncd added; add_only: "
    "never remove. Default: mirror for groups syncd created, owned for existing groups it adopted."
)


def check_group_name(value: str) -> str:
    """A group name (or key) as a source's settings give it: trimmed, not empty."""
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def check_protected(value: list[str]) -> list[str]:
    """A `protected` list: email addresses, trimmed (compared case-insensitively)."""
    problems = ProblemList()
    for i, email in enumerate(value):
        if "@" not in email.strip():
            problems.add((i,), f"not an email address: {email!r}")
    problems.check()
    return [email.strip() for email in value]


def check_exclude(value: list[str]) -> list[str]:
    """An `exclude` list: group names or keys, trimmed, not empty."""
    return [check_group_name(name) for name in value]


class HasTargets(Protocol):
    """Anything that names the providers a group goes to: an inline group, or what a source's settings use
    (a group of a source, or the source's entry itself)."""

    @property
    def targets(self) -> list[TargetSpec] | None: ...


class DeclaredGroup(NamedTuple):
    """A group (or, with `name` None, the groups) a source entry defines, as the config file says it. Its `key`
    and `exclude` are at loc[:-1] + ("key",) and loc[:-1] + ("exclude", i)."""

    loc: Loc  # where its name is given, relative to the entry; its targets are at loc[:-1] + ("targets", i)
    name: str | None  # None: the source names its groups only when it is read (e.g. from a query's rows)
    holder: HasTargets  # what holds its targets
    key: str | None = None  # its `key`, when the file gives one (else its name is its key)
    exclude: tuple[str, ...] = ()  # the groups (names or keys) whose members it subtracts

    @property
    def identity(self) -> str | None:
        """Its key: the `key` given, else its name."""
        return self.key or self.name

    @property
    def key_loc(self) -> Loc:
        """Where its identity is given: its `key`, else its name."""
        return (*self.loc[:-1], "key") if self.key else self.loc


class SourceSettings(BaseModel):
    """What every entry of `sources:` is, whatever its type; each source module subclasses it.

    A subclass narrows `type` to its Literal (the tag of the `sources` union), redeclares `name` with its
    own default in the description (keep `pattern=SOURCE_NAME_PATTERN`), adds its keys, and says which groups
    it defines through `declared_groups`, which is all `Config`'s cross-checks know of it."""

    model_config = MODEL_CONFIG

    type: str = Field(description="Which kind of source this is.")
    name: str | None = Field(
        default=None,
        pattern=SOURCE_NAME_PATTERN,
        description="What reports, logs and metrics call this source. Default: its type (numbered when several).",
    )

    def declared_groups(self) -> Iterator[DeclaredGroup]:
        """The groups this entry defines; none by default."""
        return iter(())


# ------------------------------------------------------------------------------------------ providers


def tagged_union(classes: Sequence[type[BaseModel]]) -> Any:
    """The type of an entry that is one of these models, picked by its `type` (a discriminated union)."""
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[tuple(classes)], Field(discriminator="type")]  # noqa: UP007


if TYPE_CHECKING:
    ProviderEntry = ProviderSettings
else:
    ProviderEntry = tagged_union([spec.settings for spec in PROVIDERS.values()])


# --------------------------------------------------------------------------------- environment overrides

# The environment `Config` reads its overrides from; `environment(…)` sets it for one load.
_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("syncd_config_env", default=None)


@contextlib.contextmanager
def environment(environ: Mapping[str, str]) -> Iterator[None]:
    """Models built in this block read their ``SYNCD_…`` overrides from `environ` instead of `os.environ`."""
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source reading a given mapping instead of always `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self.case_sensitive:
            return dict(self._environ)
        return {k.lower(): v for k, v in self._environ.items()}


class _Overridable(BaseSettings):
    """Settings whose ``SYNCD_…`` environment variables override the file's values (the init arguments)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
        env_file=None,
        secrets_dir=None,
    )

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


# ----------------------------------------------------------------------------------------------- root


class Config(_Overridable):
    """The whole config file. Environment variables ``SYNCD_<KEY>__<SUBKEY>`` override its values.

    `load_config` returns the subclass `with_sources` assembles, whose `sources` are validated as the registered
    source types; this class alone knows only `SourceSettings`, the keys every source entry has."""

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
    sources: list[SourceSettings] = Field(
        default_factory=list,
        description="Where desired groups come from besides the inline `groups`: a list of sources, each with "
        "a `type`. A group name may be defined in one place only.",
    )
    groups: list[GroupSpec] = Field(default_factory=list, description="Desired groups written inline.")

    _path: Path = PrivateAttr(default_factory=lambda: Path("syncd.yaml"))

    @model_validator(mode="after")
    def _cross_check(self) -> Config:
        problems = ProblemList()
        providers = self._check_provider_names(problems)
        self._check_groups(providers, problems)
        self._check_source_names(problems)
        problems.check()
        return self

    def _check_provider_names(self, problems: ProblemList) -> list[str]:
        """Each provider name once; returns the names."""
        names: dict[str, int] = {}
        for i, provider in enumerate(self.providers):
            if provider.name in names:
                problems.add(
                    ("providers", i, "name"),
                    f"provider name {provider.name!r} is already taken by providers[{names[provider.name]}]",
                )
            names.setdefault(provider.name, i)
        return list(names)

    def _check_groups(self, providers: Sequence[str], problems: ProblemList) -> None:
        """Each group name once in the whole file, targets naming configured providers, and no provider group
        pinned by two groups (they would undo each other's changes on every pass)."""
        defined: dict[str, Loc] = {}  # casefolded name -> where it is first given
        pinned: dict[tuple[str, str], Loc] = {}  # (provider, group_id) -> where a target pins it
        declared = self._declared_groups()
        for group in [g for g in declared if g.name is not None]:  # named in the file
            _check_defined_once(group, defined, problems)
            for where, target in _targets_at(group):
                if _check_provider(where, target, providers, problems) and target.group_id is not None:
                    _check_pinned_once(where, target, pinned, problems)
        for group in [g for g in declared if g.name is None]:  # named by what the source reads
            for where, target in _targets_at(group):
                _check_provider(where, target, providers, problems)
        _check_keys(declared, problems)
        _check_exclusions(declared, problems)

    def exclusion_closure(self, names: Iterable[str]) -> set[str]:
        """These group names or keys (casefolded) with the names and keys of every group they exclude, directly or
        through others: what a pass over some groups must read to subtract their exclusions."""
        by_ref = _by_reference([g for g in self._declared_groups() if g.name is not None])
        todo = [n.casefold() for n in names]
        seen: set[str] = set()
        while todo:
            ref = todo.pop()
            if ref in seen:
                continue
            seen.add(ref)
            group = by_ref.get(ref)
            if group is not None and group.name is not None:
                todo += [group.name.casefold(), (group.identity or "").casefold()]
                todo += [e.casefold() for e in group.exclude]
        return seen

    def _check_source_names(self, problems: ProblemList) -> None:
        labels: dict[str, int] = {}
        for si, label in enumerate(self.source_names()):
            if label in labels:
                problems.add(
                    ("sources", si, "name"), f"source name {label!r} is already taken by sources[{labels[label]}]"
                )
            labels.setdefault(label, si)

    def _declared_groups(self) -> list[DeclaredGroup]:
        """Every group of the file with the absolute location of its name: inline groups, then each source's."""
        out = [
            DeclaredGroup(("groups", gi, "name"), group.name, group, group.key, tuple(group.exclude))
            for gi, group in enumerate(self.groups)
        ]
        for si, source in enumerate(self.sources):
            out += [group._replace(loc=("sources", si, *group.loc)) for group in source.declared_groups()]
        return out

    def _named_groups(self) -> list[tuple[str, HasTargets]]:
        return [(group.name, group.holder) for group in self._declared_groups() if group.name is not None]

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
        """Every group name the file defines (inline groups, and those the sources declare). Groups a source
        names only when it is read (a SQL query's rows) are not among them: see `has_query_named_groups`."""
        return [name for name, _ in self._named_groups()]

    def group_keys(self) -> set[str]:
        """The casefolded key (its `key`, else its name) of every group named in the file."""
        return {str(g.identity).casefold() for g in self._declared_groups() if g.name is not None}

    def group_targets(self) -> list[tuple[str, list[TargetSpec]]]:
        """Every group named in the file with its targets (defaults applied): what `validate --online` checks."""
        return [(name, self.targets_of(holder)) for name, holder in self._named_groups()]

    def warnings(self) -> list[str]:
        """What is valid but almost surely not meant: a config with which some (or every) group is synced nowhere."""
        out: list[str] = []
        if not self.providers:
            out.append("no providers are configured: no group is synced anywhere")
        if not self.groups and not self.sources:
            out.append("no groups and no sources are configured: there is nothing to sync")
        if self.providers:
            referenced = {e.casefold() for g in self._declared_groups() for e in g.exclude}
            for group in [g for g in self._declared_groups() if g.name is not None]:
                names = {str(group.name).casefold(), (group.identity or "").casefold()}
                if not self.targets_of(group.holder) and not names & referenced:
                    out.append(
                        f"group {group.name!r} has an empty targets list and no group excludes it: it is synced "
                        "nowhere and used nowhere"
                    )
        return out

    @property
    def has_query_named_groups(self) -> bool:
        """Whether some source names its groups from what it reads (so `group_names` is not the full list)."""
        return any(group.name is None for group in self._declared_groups())

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

    def targets_of(self, group: HasTargets) -> list[TargetSpec]:
        """The group's (or source entry's) explicit targets, or every configured provider."""
        if group.targets is not None:
            return list(group.targets)
        return [TargetSpec(provider=p.name) for p in self.providers]


def _check_defined_once(group: DeclaredGroup, defined: dict[str, Loc], problems: ProblemList) -> None:
    assert group.name is not None
    key = group.name.casefold()
    if key in defined:
        problems.add(
            group.loc,
            f"group name {group.name!r} is already used by {{ref}}: a group is defined in one place only "
            "(group names are compared case-insensitively)",
            ref=defined[key],
        )
    defined.setdefault(key, group.loc)


def _check_keys(declared: Sequence[DeclaredGroup], problems: ProblemList) -> None:
    """Each group key once (a group without one has its name as its key; compared case-insensitively). Two
    groups without `key` whose names clash are reported as a name clash already."""
    keys: dict[str, tuple[Loc, bool]] = {}  # casefolded key -> where it is first given, and whether as `key`
    for group in [g for g in declared if g.name is not None]:
        key = str(group.identity).casefold()
        first = keys.setdefault(key, (group.key_loc, group.key is not None))
        if first[0] != group.key_loc and (group.key is not None or first[1]):
            problems.add(
                group.key_loc,
                f"group key {group.identity!r} is already used by {{ref}}: a key identifies one group (keys are "
                "compared case-insensitively; a group without `key` has its name as its key)",
                ref=first[0],
            )


def _by_reference(named: Sequence[DeclaredGroup]) -> dict[str, DeclaredGroup]:
    """Named groups by casefolded key, and by casefolded name where no key takes it (keys win)."""
    out: dict[str, DeclaredGroup] = {}
    for group in named:
        out.setdefault(str(group.name).casefold(), group)
    for group in named:
        out[str(group.identity).casefold()] = group
    return out


def _check_exclusions(declared: Sequence[DeclaredGroup], problems: ProblemList) -> None:
    """Every `exclude` names a group of the file (unless a source names groups only when read), never its own
    group, and no group excludes itself through others (a cycle)."""
    named = [g for g in declared if g.name is not None]
    by_ref = _by_reference(named)
    open_ended = any(g.name is None for g in declared)
    for group in named:
        for i, ref in enumerate(group.exclude):
            where = (*group.loc[:-1], "exclude", i)
            target = by_ref.get(ref.casefold())
            if target is None:
                if not open_ended:
                    problems.add(where, f"no group named (or keyed) {ref!r} to exclude")
            elif target is group:
                problems.add(where, f"group {group.name!r} excludes itself")
            elif _reaches(target, group, by_ref):
                problems.add(
                    where,
                    f"exclusion cycle: {group.name!r} excludes {target.name!r}, which excludes {group.name!r} "
                    "(directly or through others)",
                )


def _reaches(start: DeclaredGroup, goal: DeclaredGroup, by_ref: Mapping[str, DeclaredGroup]) -> bool:
    """Whether `start` excludes `goal`, directly or through other groups."""
    todo, seen = [start], set[int]()
    while todo:
        group = todo.pop()
        if id(group) in seen:
            continue
        seen.add(id(group))
        for ref in group.exclude:
            target = by_ref.get(ref.casefold())
            if target is goal:
                return True
            if target is not None:
                todo.append(target)
    return False


def _check_provider(where: Loc, target: TargetSpec, providers: Sequence[str], problems: ProblemList) -> bool:
    """Whether the target names a configured provider (a problem if not)."""
    if target.provider in providers:
        return True
    problems.add(where, f"no provider named {target.provider!r} (configured: {', '.join(providers) or 'none'})")
    return False


def _check_pinned_once(
    where: Loc, target: TargetSpec, pinned: dict[tuple[str, str], Loc], problems: ProblemList
) -> None:
    assert target.group_id is not None
    key = (target.provider, target.group_id)
    if key in pinned:
        problems.add(
            where,
            f"{target.provider} group {target.group_id!r} is already the target of {{ref}}: two groups synced "
            "into one provider group would undo each other's changes",
            ref=pinned[key],
        )
    pinned.setdefault(key, where)


def _targets_at(group: DeclaredGroup) -> Iterator[tuple[Loc, TargetSpec]]:
    """A declared group's targets, each with its location."""
    for ti, target in enumerate(group.holder.targets or ()):
        yield (*group.loc[:-1], "targets", ti), target


_ASSEMBLED: dict[tuple[tuple[str, type[SourceSettings]], ...], type[Config]] = {}


def with_sources(types: Mapping[str, type[SourceSettings]]) -> type[Config]:
    """`Config` whose `sources` entries are these types (a discriminated union on `type`): what
    `syncd.config.loading` validates a file as, given the source registry. Built once per set of types."""
    key = tuple(types.items())
    if key not in _ASSEMBLED:
        classes = list(types.values())
        sources: Any = (
            list[tagged_union(classes)],  # type: ignore[misc]  # a type built at run time
            Field(
                default_factory=list,
                description="Where desired groups come from besides the inline `groups`: a list of sources, each "
                f"with a `type` ({', '.join(types)}). A group name may be defined in one place only.",
            ),
        )
        _ASSEMBLED[key] = Config if not classes else create_model("Config", __base__=Config, sources=sources)
    return _ASSEMBLED[key]


class StateOnly(_Overridable):
    """The `state` section alone, read like `Config` reads it (the same environment overrides): what the
    commands that only read the state DB load, so that they work whatever the rest of the file holds."""

    state: StateSettings = Field(default_factory=StateSettings)
