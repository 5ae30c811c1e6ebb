"""The state DB schema as SQLAlchemy Core tables: what the store queries and what autogenerate compares.

Migrations (`migrations/versions/`) create and change the real schema; these tables must always describe
the schema at `head` (a test compares them). Kinds, outcomes and statuses are stored as their string values
in VARCHAR columns, never as database enums, so a new value needs no migration. Every timestamp is UTC and
comes back timezone-aware, on SQLite too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "UTCDateTime",
    "bindings",
    "ledger",
    "metadata",
    "owned_members",
    "pair_results",
    "rate_buckets",
    "recipient_ids",
    "rejects",
    "runs",
]

# Stable constraint names, so later migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that goes in as an aware datetime and comes out aware in UTC, whatever the dialect.

    PostgreSQL stores it as `timestamptz`; SQLite has no time zones, so it stores naive UTC text (which
    sorts and compares correctly because every value is UTC).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("state DB timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A 64-bit autoincrementing key; SQLite only autoincrements an `INTEGER PRIMARY KEY` (the rowid).
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # uuid4 hex
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("dry_run", sa.Boolean(), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),  # cli | serve | apply
    sa.Column("outcome", sa.String(32), nullable=False),  # running | success | failure | blocked | ...
    sa.Column("errors", sa.JSON(), nullable=True),  # list of messages outside any pair
    sa.Column("selection", sa.JSON(), nullable=True),  # {"groups": [...], "providers": [...]}
    sa.Index(None, "started_at"),
)

pair_results = sa.Table(
    "pair_results",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
    sa.Column("group_name", sa.String(), nullable=False),
    sa.Column("provider", sa.String(), nullable=False),
    sa.Column("remote_group_id", sa.String(), nullable=True),
    sa.Column("strategy", sa.String(32), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("desired", sa.Integer(), nullable=False),
    sa.Column("actual_before", sa.Integer(), nullable=False),
    sa.Column("added", sa.Integer(), nullable=False),
    sa.Column("removed", sa.Integer(), nullable=False),
    sa.Column("unsupported_remove", sa.Integer(), nullable=False),
    sa.Column("held_back", sa.Integer(), nullable=False),
    sa.Column("rejected", sa.Integer(), nullable=False),
    sa.Column("read_requests", sa.Integer(), nullable=False),
    sa.Column("write_requests", sa.Integer(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("blocked_reason", sa.Text(), nullable=True),
    # still to add / remove after the pass (NULL: not known, e.g. rows from before 0004)
    sa.Column("pending_add", sa.Integer(), nullable=True),
    sa.Column("pending_remove", sa.Integer(), nullable=True),
    sa.UniqueConstraint("run_id", "group_name", "provider"),
    # last_success(group, provider)
    sa.Index(None, "group_name", "provider", "recorded_at"),
)

ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("group_name", sa.String(), nullable=False),
    sa.Column("provider", sa.String(), nullable=False),
    sa.Column("email", sa.String(), nullable=False),  # as the source spelled it
    sa.Column("email_key", sa.String(), nullable=False),  # trimmed, lower-cased
    sa.Column("op", sa.String(32), nullable=False),  # add | remove
    sa.Column("outcome", sa.String(32), nullable=False),  # applied | would | rejected | blocked | ...
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Index(None, "email_key", "group_name", "provider"),  # history --member
    sa.Index(None, "group_name", "provider", "at"),  # history --group/--provider
    sa.Index(None, "at"),  # history, newest first
    sa.Index(None, "run_id"),
)

bindings = sa.Table(
    "bindings",
    metadata,
    sa.Column("group_name", sa.String(), primary_key=True),
    sa.Column("provider", sa.String(), primary_key=True),
    sa.Column("remote_id", sa.String(), nullable=False),
    sa.Column("remote_name", sa.String(), nullable=False),
    sa.Column("created_by_syncd", sa.Boolean(), nullable=False),
    sa.Column("bound_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

owned_members = sa.Table(
    "owned_members",
    metadata,
    sa.Column("group_name", sa.String(), primary_key=True),
    sa.Column("provider", sa.String(), primary_key=True),
    sa.Column("email_key", sa.String(), primary_key=True),
    sa.Column("added_at", UTCDateTime(), nullable=False),
)

# Keyed (email_key, provider), not (provider, email_key): lookups are "these 500 keys of one provider", and
# PostgreSQL, misjudging a provider's row count in fresh statistics, would otherwise walk the provider's whole
# range and filter. Reading a provider's whole cache is a scan either way.
recipient_ids = sa.Table(
    "recipient_ids",
    metadata,
    sa.Column("provider", sa.String(), nullable=False),
    sa.Column("email_key", sa.String(), nullable=False),
    sa.Column("remote_id", sa.String(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("email_key", "provider"),
)

# One row per member, provider and group it was refused for; group_name '' (rows from before 0002) means every
# group of the provider. `code` is the reject's category (unsubscribed, unknown_recipient, ...).
rejects = sa.Table(
    "rejects",
    metadata,
    sa.Column("provider", sa.String(), nullable=False),
    sa.Column("email_key", sa.String(), nullable=False),
    sa.Column("email", sa.String(), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
    sa.Column("last_seen", UTCDateTime(), nullable=False),
    sa.Column("group_name", sa.String(), nullable=False, server_default=""),
    sa.Column("code", sa.String(64), nullable=False, server_default="provider_rejected"),
    sa.PrimaryKeyConstraint("email_key", "provider", "group_name"),  # see recipient_ids
)

# One row per provider: the request budget every replica shares (syncd/state/budget.py). Times are Unix seconds
# on the database's clock, so replicas with skewed clocks agree.
rate_buckets = sa.Table(
    "rate_buckets",
    metadata,
    sa.Column("provider", sa.String(), primary_key=True),
    sa.Column("tokens", sa.Float(), nullable=False),
    sa.Column("updated", sa.Float(), nullable=False),  # when `tokens` was last refilled
    sa.Column("paused_until", sa.Float(), nullable=False),  # a 429 or an exhausted quota stops everyone
    sa.Column("quota_rate", sa.Float(), nullable=True),  # a slower rate the provider's quota headers ask for
    sa.Column("quota_until", sa.Float(), nullable=False),
    sa.Column("sent", sa.JSON(), nullable=False),  # when the requests of the sliding window went (a list)
)

# One row per pair the removal guard holds back (syncd/quarantine.py): it stays blocked across passes until a
# plan is back under the limits, a run with --allow-mass-removal, or `syncd approve` (approved_at / approval: the
# next real pass removes once, and its ledger rows carry the approval's reason).
quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("group_name", sa.String(), primary_key=True),  # the group's key, as the state files its pairs
    sa.Column("provider", sa.String(), primary_key=True),
    sa.Column("display_name", sa.String(), nullable=False),  # the group's name, as its latest pass saw it
    sa.Column("blocked_at", UTCDateTime(), nullable=False),
    sa.Column("run_id", sa.String(32), nullable=False),  # the pass that blocked it first
    sa.Column("reason", sa.Text(), nullable=False),  # the guard's, from the latest pass
    sa.Column("held_back", sa.Integer(), nullable=False),  # removals held back by the latest pass
    sa.Column("approved_at", UTCDateTime(), nullable=True),
    sa.Column("approval", sa.Text(), nullable=True),  # the reason given to `syncd approve`
)
