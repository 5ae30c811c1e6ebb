"""rejects: remembered per (provider, group), with their reject code

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 00:00:00

A permanent reject was remembered per provider, for every group. Consent is per group at some providers (a
CleverReach receiver unsubscribes from one group, not from the account), so a reject is now remembered for the
group it happened in (`group_name`), and keeps its category (`code`: unsubscribed, unknown_recipient, ...) so a
remembered reject reports what it was. Rows from before keep `group_name = ''`, which means every group of the
provider, as it did.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rejects", recreate="always") as batch:
        batch.add_column(sa.Column("group_name", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("code", sa.String(64), nullable=False, server_default="provider_rejected"))
        batch.drop_constraint("pk_rejects", type_="primary")
        batch.create_primary_key("pk_rejects", ["email_key", "provider", "group_name"])


def downgrade() -> None:
    # Per-group rows of one member collapse into one provider-wide row (the newest wins).
    conn = op.get_bind()
    conn.execute(
        sa.text(
            "DELETE FROM rejects WHERE EXISTS (SELECT 1 FROM rejects newer WHERE newer.email_key = rejects.email_key "
            "AND newer.provider = rejects.provider AND (newer.last_seen > rejects.last_seen OR "
            "(newer.last_seen = rejects.last_seen AND newer.group_name > rejects.group_name)))"
        )
    )
    with op.batch_alter_table("rejects", recreate="always") as batch:
        batch.drop_constraint("pk_rejects", type_="primary")
        batch.drop_column("code")
        batch.drop_column("group_name")
        batch.create_primary_key("pk_rejects", ["email_key", "provider"])
