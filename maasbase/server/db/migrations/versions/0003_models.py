"""Models and model instances.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from maasbase.server.db.base import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.String(1024), nullable=False),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("backend", sa.String(64), nullable=False),
        sa.Column("backend_version", sa.String(64), nullable=True),
        sa.Column("backend_parameters", sa.JSON(), nullable=False),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("placement", sa.String(16), nullable=False),
        sa.Column("worker_selector", sa.JSON(), nullable=False),
        sa.Column("gpu_selector", sa.JSON(), nullable=True),
        sa.Column("gpus_per_replica", sa.Integer(), nullable=True),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "model_instances",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(160), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_message", sa.Text(), nullable=False),
        sa.Column("state_changed_at", UTCDateTime(), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=True),
        sa.Column("gpu_vendor", sa.String(16), nullable=True),
        sa.Column("gpu_indexes", sa.JSON(), nullable=False),
        sa.Column("tensor_parallel_size", sa.Integer(), nullable=False),
        sa.Column("claim", sa.JSON(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("download", sa.JSON(), nullable=True),
        sa.Column("restart_count", sa.Integer(), nullable=False),
        sa.Column("next_restart_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name="fk_model_instances_model_id_models",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["workers.id"],
            name="fk_model_instances_worker_id_workers",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_model_instances"),
        sa.UniqueConstraint("name", name="uq_model_instances_name"),
    )
    op.create_index("ix_model_instances_model_id", "model_instances", ["model_id"])
    op.create_index("ix_model_instances_worker_id", "model_instances", ["worker_id"])


def downgrade() -> None:
    op.drop_index("ix_model_instances_worker_id", table_name="model_instances")
    op.drop_index("ix_model_instances_model_id", table_name="model_instances")
    op.drop_table("model_instances")
    op.drop_table("models")
