"""Idempotency-Keys survive a restart; lists of unfinished work are indexed by status.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("noun", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
    )
    op.create_index("work_by_status", "work", ["kind", "status"])


def downgrade() -> None:
    op.drop_index("work_by_status", "work")
    op.drop_table("idempotency_keys")
