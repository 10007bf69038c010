"""Per-user limits and the credential-change feed followed by gateways.

Revision ID: 0006_keys
Revises: 0006_creds
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from maasbase.server.db.base import UTCDateTime

revision = "0006_keys"
down_revision = "0006_creds"
branch_labels = None
depends_on = None


FEED_LOCK = "credential_feed_lock"
_SETTINGS = sa.table("system_settings", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("rpm_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tpm_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("token_quota", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("quota_period", sa.String(8), nullable=False, server_default="month")
        )
    op.create_table(
        "credential_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("access_key", sa.String(32), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credential_changes"),
    )
    op.create_index("ix_credential_changes_at", "credential_changes", ["at"])
    # The row writers of the feed lock, so changes commit in the order of their ids.
    op.bulk_insert(_SETTINGS, [{"key": FEED_LOCK, "value": "-"}])


def downgrade() -> None:
    op.execute(_SETTINGS.delete().where(_SETTINGS.c.key == FEED_LOCK))
    op.drop_index("ix_credential_changes_at", table_name="credential_changes")
    op.drop_table("credential_changes")
    with op.batch_alter_table("users") as batch:
        for column in ("quota_period", "token_quota", "tpm_limit", "rpm_limit"):
            batch.drop_column(column)
