"""Provider settings: the keys every provider entry of the config takes, and how a connector is built.

Each connector module subclasses `ProviderSettings` with its `type` literal and credential keys, so
everything provider-specific (which keys exist, their defaults, their documentation) stays in `connectors/`
and syncd's config loader only assembles the union of them from `connectors.registry`.

`ProviderSettings.capabilities` is where the keys that tune a connector (`batch_size`, `rate_limit`, `burst`,
`max_concurrency`) meet the API's own limits; each connector's `build` applies it once, and everything else
reads the result from `connector.capabilities`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.base import Capabilities, NullRecipientCache, Pacing, RecipientCache
from connectors.http import Limiter, NoHooks, RequestHooks, RetryPolicy

LOOPBACK_HOSTS = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_HOSTS or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(value: str) -> str:
    """https only, except on a loopback host (sandboxes, a local proxy): credentials never travel in clear."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if url.scheme not in ("https", "http") or not url.host or any(ch.isspace() for ch in url.host):
        raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
    if url.scheme == "http" and not is_loopback(url.host):
        raise ValueError(f"must use https (plain http is allowed only on a loopback host), got {value!r}")
    if url.query or url.fragment:
        raise ValueError("must not carry a query string or fragment (put credentials in their own keys)")
    return value.rstrip("/")


class RetrySettings(BaseModel):
    """How failed requests are retried. Tests set the backoff to zero instead of sleeping."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_retries: int = Field(
        5, ge=0, description="Retries of a request that failed with 5xx, a timeout or a dropped connection."
    )
    backoff_base: float = Field(
        0.5, ge=0, description="Seconds before the first retry; doubled on every further retry, with jitter."
    )
    backoff_max: float = Field(30.0, ge=0, description="Upper bound of one backoff delay, in seconds.")
    max_rate_limit_waits: int = Field(
        30, ge=0, description="How many 429 answers one request may wait out (they do not spend max_retries)."
    )
    max_retry_after: float = Field(
        600.0,
        ge=0,
        description="A Retry-After longer than this many seconds fails the request instead of waiting.",
    )

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            jitter=0.5 if self.backoff_base else 0.0,
            max_rate_limit_waits=self.max_rate_limit_waits,
            max_retry_after=self.max_retry_after,
        )


class ProviderSettings(BaseModel):
    """Keys common to every provider entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="What groups' `targets` refer to; also the `provider` label of metrics and the DB.",
    )
    type: str = Field(description="Which API this is.")
    base_url: str = Field(description="API root, version path included. https, except on a loopback host.")
    rate_limit: float | None = Field(
        None, gt=0, description="Requests per second to this provider. Default: the API's documented limit."
    )
    burst: int | None = Field(
        None, ge=1, description="Requests that may go at once after a quiet spell. Default: per API."
    )
    max_concurrency: int | None = Field(None, ge=1, description="Requests in flight at once. Default: per API.")
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Members per add/remove request; capped at the API's own limit. Default: that limit.",
    )
    timeout: float = Field(30.0, gt=0, description="Seconds before a request times out (it is then retried).")
    allow_non_atomic_reset: bool = Field(
        False,
        description="Allow emptying a group and re-adding its members when that is cheaper. Members are "
        "missing from the group in between, so this is off unless you accept that.",
    )
    retry: RetrySettings = Field(default_factory=RetrySettings, description="Retry behaviour.")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_api_url(value)

    def pacing(self, default: Pacing) -> Pacing:
        """The API's default pacing with this entry's `rate_limit`, `burst` and `max_concurrency` applied."""
        # replace(), not Pacing(...): fields these keys do not set (a sliding `window`) stay the API's.
        return replace(
            default,
            rate=self.rate_limit if self.rate_limit is not None else default.rate,
            burst=self.burst if self.burst is not None else default.burst,
            max_concurrency=self.max_concurrency if self.max_concurrency is not None else default.max_concurrency,
        )

    def capabilities(self, declared: Capabilities) -> Capabilities:
        """The connector's capabilities as configured: the API's own (`declared`) with this entry's
        `batch_size` (capped at the API's limits, `Capabilities.with_batch_size`) and pacing (`pacing`).

        This is the one place where configuration meets a connector's limits. Every `build` passes its
        declared capabilities through it, once; the connector paces its `ApiClient` with the result and cuts
        batches by it, and syncd's planner and applier read the same values from `connector.capabilities`."""
        return replace(declared.with_batch_size(self.batch_size), pacing=self.pacing(declared.pacing))


def check_token_url(value: str | None) -> str | None:
    return None if value is None else check_api_url(value)


@dataclass
class BuildContext:
    """What syncd hands a connector factory besides its settings."""

    transport: httpx.AsyncBaseTransport | None = None  # tests: httpx.ASGITransport(sandbox)
    hooks: RequestHooks = field(default_factory=NoHooks)
    cache: RecipientCache = field(default_factory=NullRecipientCache)
    # What paces the provider's requests instead of the connector's own TokenBucket: several replicas sharing
    # one budget (syncd's SharedBucket). Called with the provider's name and the pacing in force.
    limiter: Callable[[str, Pacing], Limiter] | None = None
