"""Alembic environment: runs on the connection handed over by ``maasbase.server.db.migrate``."""

from __future__ import annotations

from alembic import context

from maasbase.server.db import tables  # noqa: F401  (registers the tables)
from maasbase.server.db.base import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through maasbase.server.db.migrate, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
