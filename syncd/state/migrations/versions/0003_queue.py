"""the replicas' queue: Procrastinate's schema (PostgreSQL), shared rate budgets; the lease table goes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 10:00:00

Replicas used to share the work through a lease table of syncd's own, with no fencing: they now share it
through Procrastinate, a PostgreSQL task queue (syncd/scheduling/queue.py), whose schema this revision installs
on PostgreSQL (the version of `procrastinate` syncd depends on; its own later migrations are not applied here).
`rate_buckets` holds one request budget per provider, shared by every replica (syncd/state/budget.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_leases_holder", table_name="leases")
    op.drop_table("leases")
    op.create_table(
        "rate_buckets",
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.Column("paused_until", sa.Float(), nullable=False),
        sa.Column("quota_rate", sa.Float(), nullable=True),
        sa.Column("quota_until", sa.Float(), nullable=False),
        sa.Column("sent", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("provider", name="pk_rate_buckets"),
    )
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        exists = conn.execute(sa.text("SELECT to_regclass('procrastinate_jobs')")).scalar()
        if exists is None:
            from procrastinate.schema import SchemaManager  # the `postgres` extra: psycopg and procrastinate

            conn.exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        # Procrastinate's objects, as its schema creates them (tables, then functions, then types).
        for table in (
            "procrastinate_periodic_defers",
            "procrastinate_events",
            "procrastinate_jobs",
            "procrastinate_workers",
        ):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table} CASCADE")
        functions = conn.execute(
            sa.text(
                "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE p.proname LIKE 'procrastinate%' AND n.nspname = current_schema()"
            )
        ).scalars()
        for signature in list(functions):
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {signature} CASCADE")
        types = conn.execute(
            sa.text(
                "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE t.typname LIKE 'procrastinate%' AND n.nspname = current_schema() AND (t.typtype = 'e' OR "
                "(t.typtype = 'c' AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c')))"
            )
        ).scalars()
        for kind in list(types):
            conn.exec_driver_sql(f"DROP TYPE IF EXISTS {kind} CASCADE")
    op.drop_table("rate_buckets")
    op.create_table(
        "leases",
        sa.Column("group_name", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_name", "provider", name="pk_leases"),
    )
    op.create_index("ix_leases_holder", "leases", ["holder"])
