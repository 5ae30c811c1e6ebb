"""quarantine: pairs the removal guard holds back, until approved or back under the limits

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 11:00:00

A pair the guard blocked stays blocked across passes (adds still go) until a plan is back under the limits, a run
with --allow-mass-removal, or `syncd approve GROUP --reason TEXT`, which lets the held removals go once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quarantine",
        sa.Column("group_name", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("display_name", sa.String(), nullable=False),
        sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_back", sa.Integer(), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approval", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("group_name", "provider", name="pk_quarantine"),
    )


def downgrade() -> None:
    op.drop_table("quarantine")
