"""Prometheus metrics, exactly the names and labels of DESIGN.md.

Every metric hangs off a `CollectorRegistry` handed in (tests use a fresh one each), and the object also
serves as the connectors' `RequestHooks`, so API request metrics come straight from `connectors.http`.
Labels carry group, provider, kind and reason *categories*: never an email or a secret.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway, write_to_textfile

from syncd.model import PairResult, PairStatus


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.runs = Counter("syncd_runs_total", "Reconciliation passes, by outcome.", ["outcome"], registry=r)
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
            "Passes in which the removal guard held a pair's removals back.",
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
            "Provider requests retried, by reason (rate_limited, 5xx, timeout, error).",
            ["provider", "reason"],
            registry=r,
        )

    # -- connectors.http.RequestHooks -----------------------------------------------------------------
    def on_request(self, provider: str, method: str, status: str, seconds: float) -> None:
        self.api_requests.labels(provider, method, status).inc()
        self.api_duration.labels(provider).observe(seconds)

    def on_retry(self, provider: str, reason: str) -> None:
        self.api_retries.labels(provider, reason).inc()

    # -- a pass ---------------------------------------------------------------------------------------
    def observe_pair(
        self, result: PairResult, *, dry_run: bool, now: float, pending_add: int, pending_remove: int
    ) -> None:
        g, p = result.group, result.provider
        if result.status is not PairStatus.FAILED:
            self.members.labels(g, p, "desired").set(result.desired)
            self.members.labels(g, p, "actual").set(result.actual_before)
            self.drift.labels(g, p, "add").set(pending_add)
            self.drift.labels(g, p, "remove").set(pending_remove)
        if not dry_run:
            if result.add:
                self.changes.labels(g, p, "add").inc(result.add)
            if result.remove:
                self.changes.labels(g, p, "remove").inc(result.remove)
            for reject in result.rejected:
                self.rejected.labels(g, p, str(reject.code)).inc()
        if result.status is PairStatus.BLOCKED:
            self.removals_blocked.labels(g, p).inc()
        if result.status in (PairStatus.IN_SYNC, PairStatus.APPLIED):
            self.last_success.labels(g, p).set(now)

    def observe_run(self, outcome: str, seconds: float) -> None:
        self.runs.labels(outcome).inc()
        self.run_duration.observe(seconds)

    # -- one-shot export --------------------------------------------------------------------------------
    def write_textfile(self, path: str | Path) -> None:
        """node_exporter textfile format; prometheus-client writes a temp file beside it and renames it, so the
        collector never reads a half-written file."""
        write_to_textfile(str(path), self.registry)

    def push(self, gateway: str, job: str = "syncd") -> None:
        push_to_gateway(gateway, job=job, registry=self.registry)
