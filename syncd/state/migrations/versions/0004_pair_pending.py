"""pair_results: what was still to add and remove after the pass (pending_add, pending_remove)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 00:00:00

`syncd status` shows, per pair, what its last pass left to do: adds and removals that failed, removals the guard
held back or the API cannot make, or a dry run's plan. Rows from before this revision, and pairs that failed before
their group was read, have NULL there: not known.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns: a plain ALTER TABLE ... ADD COLUMN on SQLite as on PostgreSQL, no table copy.
    op.add_column("pair_results", sa.Column("pending_add", sa.Integer(), nullable=True))
    op.add_column("pair_results", sa.Column("pending_remove", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pair_results") as batch:
        batch.drop_column("pending_remove")
        batch.drop_column("pending_add")
