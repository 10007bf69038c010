"""Shared fixtures: the database matrix, a server app per test, clients per principal.

Every test that takes ``db_url`` runs once per database: SQLite, the embedded
PostgreSQL, an external PostgreSQL (``MAAS_TEST_POSTGRES_URL``) and MySQL/MariaDB
(``MAAS_TEST_MYSQL_URL``). External databases are skipped when their URL is absent,
unless ``MAAS_TEST_REQUIRE_ALL_DATABASES=1`` (set by CI), which turns a missing URL
into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from maasbase.server.embedded_db import EmbeddedPostgres

DATABASES = ["sqlite", "embedded-postgres", "postgres", "mysql"]
ENV_URLS = {"postgres": "MAAS_TEST_POSTGRES_URL", "mysql": "MAAS_TEST_MYSQL_URL"}


@contextlib.contextmanager
def shared_tmp_dir(prefix: str) -> Iterator[Path]:
    """A folder outside pytest's private temp root.

    When run as root, the embedded PostgreSQL runs as another system user that must
    traverse the folders above its data. pytest keeps its temp root at mode 0700 (and
    resets it when another session starts), so data for the embedded database lives here.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    with shared_tmp_dir("maas-test-") as folder:
        yield folder


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[EmbeddedPostgres]:
    with shared_tmp_dir("maas-embedded-pg-") as folder:
        pg = EmbeddedPostgres(folder)
        pg.start()
        yield pg
        pg.stop()


def _external_url(kind: str) -> str:
    url = os.environ.get(ENV_URLS[kind])
    if not url:
        message = f"{ENV_URLS[kind]} is not set"
        if os.environ.get("MAAS_TEST_REQUIRE_ALL_DATABASES") == "1":
            pytest.fail(message + " but MAAS_TEST_REQUIRE_ALL_DATABASES=1")
        pytest.skip(message)
    return url


async def _create_pg_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_pg_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _mysql_params(url: str) -> dict[str, object]:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 3306,
        "user": parsed.username or "root",
        "password": parsed.password or "",
    }


async def _mysql_execute(url: str, statement: str) -> None:
    import aiomysql

    conn = await aiomysql.connect(**_mysql_params(url))
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement)
        await conn.commit()
    finally:
        conn.close()


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=DATABASES)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database of each supported kind."""
    kind: str = request.param
    name = "maas_t_" + uuid.uuid4().hex[:12]
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'maas.db'}"
        return
    if kind in ("embedded-postgres", "postgres"):
        if kind == "embedded-postgres":
            admin_url = request.getfixturevalue("embedded_pg").url("postgres")
        else:
            admin_url = _external_url(kind)
        await _create_pg_database(admin_url, name)
        try:
            yield _with_database(admin_url, name)
        finally:
            await _drop_pg_database(admin_url, name)
        return
    admin_url = _external_url("mysql")
    await _mysql_execute(admin_url, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield _with_database(admin_url, name)
    finally:
        await _mysql_execute(admin_url, f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done()]
    leaked = [t for t in leaked if t is not asyncio.current_task()]
    assert not leaked, f"test leaked asyncio tasks: {leaked}"


@pytest.fixture(autouse=True, scope="session")
def cheap_password_hashing() -> None:
    """Argon2id with a small memory/time cost, so the many logins in tests stay fast.
    Same algorithm and code path as production, only cheaper parameters."""
    from argon2 import PasswordHasher

    from maasbase.server.security import passwords

    passwords.use_hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
