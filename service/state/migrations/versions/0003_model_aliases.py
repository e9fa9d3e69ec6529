"""Model aliases: a stable name per owner for one model, deleted with it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_aliases",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column(
            "model_id",
            sa.String(64),
            sa.ForeignKey("models.id", ondelete="CASCADE"),
            nullable=False,
        ),
    )
    op.create_index("ix_model_aliases_model_id", "model_aliases", ["model_id"])


def downgrade() -> None:
    op.drop_index("ix_model_aliases_model_id", "model_aliases")
    op.drop_table("model_aliases")
