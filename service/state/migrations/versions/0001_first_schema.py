"""The first schema: datasets and models with their content blobs, jobs and sweeps with their
history points.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    for table in ("datasets", "models"):
        op.create_table(
            table,
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("id", sa.String(64), nullable=False, unique=True),
            sa.Column("record", sa.Text, nullable=False),
            sa.Column("nbytes", sa.Integer, nullable=False),
            sa.Column(
                "blob_id",
                sa.Integer,
                sa.ForeignKey("blobs.id", ondelete="RESTRICT"),
                nullable=False,
            ),
        )
    op.create_table(
        "work",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("record", sa.Text, nullable=False),
    )
    op.create_table(
        "work_points",
        sa.Column("work_id", sa.String(64), primary_key=True),
        sa.Column("series", sa.String(16), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("point", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("work_points", "work", "models", "datasets", "blobs"):
        op.drop_table(table)
