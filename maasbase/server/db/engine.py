"""Engine creation for every supported database, behind one function.

* PostgreSQL (embedded or external) through asyncpg,
* MySQL / MariaDB through aiomysql,
* SQLite through aiosqlite: one pooled connection per process, WAL and a busy
  timeout, so concurrent requests queue instead of failing with "database is locked".
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.pool import AsyncAdaptedQueuePool

from maasbase.common.errors import ConfigurationError

_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
    "mysql+aiomysql": "mysql+aiomysql",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}

# libpq options asyncpg does not understand; dropped with the SSL mode mapped.
_PG_DROPPED_QUERY = {"sslmode", "connect_timeout", "application_name"}


def normalize_url(raw: str) -> URL:
    """Turn a user-facing URL (``postgresql://``, ``mysql://``, ``sqlite:///``) into an async
    SQLAlchemy URL with the right driver."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigurationError(
            f"cannot parse database URL {raw!r}: use postgresql://user:pass@host/db, "
            "mysql://user:pass@host/db or sqlite:///path/to/file.db"
        ) from exc
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise ConfigurationError(
            f"unsupported database {url.drivername!r}: use postgresql://, mysql:// or sqlite:///"
        )
    url = url.set(drivername=driver)
    if driver.startswith("postgresql"):
        query = {k: v for k, v in url.query.items() if k not in _PG_DROPPED_QUERY}
        sslmode = url.query.get("sslmode")
        if isinstance(sslmode, str) and sslmode in {"require", "verify-ca", "verify-full"}:
            query["ssl"] = sslmode
        url = url.set(query=query)
    if driver.startswith("mysql") and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    if driver.startswith("sqlite") and url.database in (None, "", ":memory:"):
        raise ConfigurationError(
            "in-memory SQLite is not supported; give sqlite:///path/to/file.db"
        )
    return url


def database_kind(url: URL) -> str:
    """``postgresql``, ``mysql`` or ``sqlite``."""
    return url.get_backend_name()


def redact(url: URL) -> str:
    """The URL with its password hidden, for logs."""
    return url.render_as_string(hide_password=True)


def create_engine(raw_url: str, *, echo: bool = False) -> AsyncEngine:
    url = normalize_url(raw_url)
    kind = database_kind(url)
    kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": kind != "sqlite"}
    if kind == "sqlite":
        kwargs.update(
            poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0, pool_timeout=120
        )
    else:
        kwargs.update(pool_size=10, max_overflow=20, pool_recycle=1800)
    engine = create_async_engine(url, **kwargs)
    if kind == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
