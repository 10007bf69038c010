"""Instances: the context length their engine reports.

Revision ID: 0007_context
Revises: 0006_secrets
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_context"
down_revision = "0006_secrets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_instances") as batch:
        batch.add_column(sa.Column("context_length", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_instances") as batch:
        batch.drop_column("context_length")
