"""Prometheus metrics, exactly the names and labels of DESIGN.md.

Every metric hangs off a `CollectorRegistry` handed in (tests use a fresh one each), and the object also
serves as the connectors' `RequestHooks`, so API request metrics come straight from `connectors.http`.
Labels carry group, provider, kind and reason *categories*: never an email or a secret.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway, write_to_textfile

from syncd.errors import SyncdError
from syncd.model import PairResult, PairStatus

# The outcomes a pass can have (syncd.state.RunOutcome, less "running"). Their series exist from the start at 0,
# so `increase(syncd_runs_total{outcome="failure"}[…])` sees the first failure.
RUN_OUTCOMES = ("success", "failure", "blocked", "interrupted")
_CATEGORY = re.compile(r"[a-z0-9_.:-]{1,64}")


def category(value: object) -> str:
    """A label value that is a category name (reject reason, retry reason): anything else becomes "other",
    so free text (which could quote a member) never becomes a label."""
    text = str(value).strip().lower()
    return text if _CATEGORY.fullmatch(text) and "@" not in text else "other"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.runs = Counter("syncd_runs_total", "Reconciliation passes, by outcome.", ["outcome"], registry=r)
        for outcome in RUN_OUTCOMES:
            self.runs.labels(outcome)
        self.run_duration = Histogram(
            "syncd_run_duration_seconds",
            "Wall time of one reconciliation pass.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "When the pair was last found or made equal to its source (Unix time).",
            ["group", "provider"],
            registry=r,
        )
        self.members = Gauge(
            "syncd_members",
            "Members of the group, desired (source) and actual (provider, before the pass).",
            ["group", "provider", "side"],
            registry=r,
        )
        self.drift = Gauge(
            "syncd_drift",
            "Changes still pending after the last pass (held back, unsupported, failed, or a dry run's plan).",
            ["group", "provider", "kind"],
            registry=r,
        )
        self.unremovable = Gauge(
            "syncd_unremovable_members",
            "Members who should leave the group but whom the provider's API cannot remove (after the last pass): "
            "someone must remove them by hand.",
            ["group", "provider"],
            registry=r,
        )
        self.changes = Counter(
            "syncd_member_changes_total",
            "Members added to or removed from provider groups.",
            ["group", "provider", "op"],
            registry=r,
        )
        self.rejected = Counter(
            "syncd_members_rejected_total",
            "Desired members not written, by reason category.",
            ["group", "provider", "reason"],
            registry=r,
        )
        self.removals_blocked = Counter(
            "syncd_removals_blocked_total",
            "Times the removal guard put a pair in quarantine (its removals held back until approved or back under "
            "the limits); a pair held pass after pass counts once.",
            ["group", "provider"],
            registry=r,
        )
        self.blocked = Gauge(
            "syncd_pair_blocked",
            "1 while the pair is in quarantine: the removal guard holds its removals back (see `syncd status`, "
            "`syncd approve`), else 0.",
            ["group", "provider"],
            registry=r,
        )
        self.api_requests = Counter(
            "syncd_api_requests_total",
            "HTTP requests sent to providers, by method and status (or timeout/error).",
            ["provider", "method", "status"],
            registry=r,
        )
        self.api_duration = Histogram(
            "syncd_api_request_duration_seconds",
            "Latency of provider HTTP requests.",
            ["provider"],
            registry=r,
        )
        self.api_retries = Counter(
            "syncd_api_retries_total",
            "Provider requests retried, by reason: rate_limited (429), 5xx, timeout, error, or another HTTP status.",
            ["provider", "reason"],
            registry=r,
        )

    # -- connectors.http.RequestHooks -----------------------------------------------------------------
    def on_request(self, provider: str, method: str, status: str, seconds: float) -> None:
        self.api_requests.labels(provider, method, status).inc()
        self.api_duration.labels(provider).observe(seconds)

    def on_retry(self, provider: str, reason: str) -> None:
        reason = "rate_limited" if reason == "429" else category(reason)
        self.api_retries.labels(provider, reason).inc()

    # -- a pass ---------------------------------------------------------------------------------------
    def observe_pair(
        self,
        result: PairResult,
        *,
        dry_run: bool,
        now: float,
        pending_add: int,
        pending_remove: int,
        quarantine: str = "unchanged",
    ) -> None:
        """A pair's pass. `quarantine` is what the pass did to its quarantine (`syncd.quarantine.Change`):
        `syncd_removals_blocked_total` counts a pair entering it, `syncd_pair_blocked` says whether it is in it."""
        g, p = result.group, result.provider
        # Counters of a pair exist (at 0) from its first pass on, so alerts on their increase see the first one.
        self.changes.labels(g, p, "add")
        self.changes.labels(g, p, "remove")
        self.removals_blocked.labels(g, p)
        if result.status is not PairStatus.FAILED:
            self.members.labels(g, p, "desired").set(result.desired)
            self.members.labels(g, p, "actual").set(result.actual_before)
            self.drift.labels(g, p, "add").set(pending_add)
            self.drift.labels(g, p, "remove").set(pending_remove)
            self.unremovable.labels(g, p).set(result.unsupported_remove)
        if not dry_run:
            if result.add:
                self.changes.labels(g, p, "add").inc(result.add)
            if result.remove:
                self.changes.labels(g, p, "remove").inc(result.remove)
            for reject in result.rejected:
                self.rejected.labels(g, p, category(reject.code)).inc()
        if quarantine == "blocked":
            self.removals_blocked.labels(g, p).inc()
        if quarantine in ("blocked", "still_blocked"):
            self.blocked.labels(g, p).set(1)
        elif quarantine in ("released", "none"):
            self.blocked.labels(g, p).set(0)
        if result.status in (PairStatus.IN_SYNC, PairStatus.APPLIED):
            self.last_success.labels(g, p).set(now)

    def observe_run(self, outcome: str, seconds: float) -> None:
        self.runs.labels(outcome).inc()
        self.run_duration.observe(seconds)

    def seed_last_success(self, group: str, provider: str, timestamp: float) -> None:
        """Set a pair's last success from the state DB when the daemon starts, so "no success for N
        intervals" alerts survive a restart (the gauge would otherwise be absent until the next success)."""
        self.last_success.labels(group, provider).set(timestamp)

    # -- one-shot export --------------------------------------------------------------------------------
    def write_textfile(self, path: str | Path) -> None:
        """node_exporter textfile format; prometheus-client writes a temp file beside it and renames it, so the
        collector never reads a half-written file."""
        try:
            write_to_textfile(str(path), self.registry)
        except OSError as exc:
            raise SyncdError(f"cannot write the metrics file {path}: {exc.strerror or exc}") from None

    def push(self, gateway: str, job: str = "syncd") -> None:
        """PUT every metric to a Pushgateway (replacing the job's group there); OSError when it fails."""
        push_to_gateway(gateway, job=job, registry=self.registry)
