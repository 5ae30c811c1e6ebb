"""initial schema: runs, pair results, the member ledger, bindings, owned members, caches, rejects, leases

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Every column and constraint name is spelled out rather than imported from `syncd.state.tables`, so this
migration keeps meaning what it meant when it was written.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _bigint_id() -> sa.Column[object]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        _ts("started_at"),
        _ts("finished_at", nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=True),
        sa.Column("selection", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_started_at", "runs", ["started_at"])

    op.create_table(
        "pair_results",
        _bigint_id(),
        sa.Column("run_id", sa.String(32), nullable=False),
        _ts("recorded_at"),
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
        sa.PrimaryKeyConstraint("id", name="pk_pair_results"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_pair_results_run_id_runs"),
        sa.UniqueConstraint("run_id", "group_name", "provider", name="uq_pair_results_run_id_group_name_provider"),
    )
    op.create_index(
        "ix_pair_results_group_name_provider_recorded_at",
        "pair_results",
        ["group_name", "provider", "recorded_at"],
    )

    op.create_table(
        "ledger",
        _bigint_id(),
        sa.Column("run_id", sa.String(32), nullable=False),
        _ts("at"),
        sa.Column("group_name", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("email_key", sa.String(), nullable=False),
        sa.Column("op", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_ledger_run_id_runs"),
    )
    op.create_index("ix_ledger_email_key_group_name_provider", "ledger", ["email_key", "group_name", "provider"])
    op.create_index("ix_ledger_group_name_provider_at", "ledger", ["group_name", "provider", "at"])
    op.create_index("ix_ledger_at", "ledger", ["at"])
    op.create_index("ix_ledger_run_id", "ledger", ["run_id"])

    op.create_table(
        "bindings",
        sa.Column("group_name", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("remote_id", sa.String(), nullable=False),
        sa.Column("remote_name", sa.String(), nullable=False),
        sa.Column("created_by_syncd", sa.Boolean(), nullable=False),
        _ts("bound_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("group_name", "provider", name="pk_bindings"),
    )

    op.create_table(
        "owned_members",
        sa.Column("group_name", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("email_key", sa.String(), nullable=False),
        _ts("added_at"),
        sa.PrimaryKeyConstraint("group_name", "provider", "email_key", name="pk_owned_members"),
    )

    op.create_table(
        "recipient_ids",
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("email_key", sa.String(), nullable=False),
        sa.Column("remote_id", sa.String(), nullable=False),
        _ts("updated_at"),
        # email_key first: lookups are "these keys of one provider" (see tables.py)
        sa.PrimaryKeyConstraint("email_key", "provider", name="pk_recipient_ids"),
    )

    op.create_table(
        "rejects",
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("email_key", sa.String(), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _ts("first_seen"),
        _ts("last_seen"),
        sa.PrimaryKeyConstraint("email_key", "provider", name="pk_rejects"),
    )

    op.create_table(
        "leases",
        sa.Column("group_name", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("group_name", "provider", name="pk_leases"),
    )
    op.create_index("ix_leases_holder", "leases", ["holder"])


def downgrade() -> None:
    for table in (
        "leases",
        "rejects",
        "recipient_ids",
        "owned_members",
        "bindings",
        "ledger",
        "pair_results",
        "runs",
    ):
        op.drop_table(table)
