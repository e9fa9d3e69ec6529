"""Parameter snapshots of jobs: one row per kept snapshot, its arrays as .npz bytes.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0004", "0003"


def upgrade() -> None:
    op.create_table(
        "work_snapshots",
        sa.Column("work_id", sa.String(64)),
        sa.Column("position", sa.Integer),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("work_id", "position"),
    )


def downgrade() -> None:
    op.drop_table("work_snapshots")
