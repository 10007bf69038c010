from __future__ import annotations

import pytest

from maasbase.common.errors import ConfigurationError
from maasbase.server.db.engine import normalize_url, redact


@pytest.mark.parametrize(
    ("raw", "driver"),
    [
        ("postgresql://u:p@h/db", "postgresql+asyncpg"),
        ("postgres://u:p@h/db", "postgresql+asyncpg"),
        ("postgresql://postgres:@/maasbase?host=/tmp/pg", "postgresql+asyncpg"),
        ("mysql://root@127.0.0.1:3306/test", "mysql+aiomysql"),
        ("mariadb://root@127.0.0.1/test", "mysql+aiomysql"),
        ("sqlite:///tmp/x.db", "sqlite+aiosqlite"),
    ],
)
def test_drivers(raw: str, driver: str) -> None:
    assert normalize_url(raw).drivername == driver


def test_mysql_gets_utf8mb4_and_pg_sslmode_is_mapped() -> None:
    assert normalize_url("mysql://root@h/db").query["charset"] == "utf8mb4"
    url = normalize_url("postgresql://u:p@h/db?sslmode=require&application_name=x")
    assert dict(url.query) == {"ssl": "require"}


def test_password_is_redacted() -> None:
    assert "hunter2" not in redact(normalize_url("postgresql://u:hunter2@h/db"))


@pytest.mark.parametrize(
    ("raw", "hint"),
    [
        ("oracle://u@h/db", "unsupported database"),
        ("sqlite://", "in-memory"),
        ("not a url", "cannot parse"),
    ],
)
def test_bad_urls(raw: str, hint: str) -> None:
    with pytest.raises(ConfigurationError, match=hint):
        normalize_url(raw)
