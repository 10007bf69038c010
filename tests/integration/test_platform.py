"""Health, readiness, metrics, OpenAPI, migrations and restarts, on every database."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import inspect

from maasbase.common.config import Settings
from maasbase.server.app import create_app
from maasbase.server.db import engine as db_engine
from maasbase.server.db import migrate
from maasbase.server.runtime import close_server, open_server
from tests.integration.conftest import ADMIN_PASSWORD, Harness

pytestmark = pytest.mark.integration


async def test_health_and_readiness(harness: Harness) -> None:
    async with harness.client() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ok"}
        docs = await client.get("/api/docs")
        assert docs.status_code == 200
        spec = (await client.get("/api/openapi.json")).json()
        assert "/api/v1/api-keys" in spec["paths"]


async def test_readyz_fails_when_database_is_gone(harness: Harness) -> None:
    await harness.opened.state.engine.dispose()
    broken = db_engine.create_engine("sqlite:////nonexistent-dir/x.db")
    harness.opened.state.engine = broken
    async with harness.client() as client:
        response = await client.get("/readyz")
    await broken.dispose()
    assert response.status_code == 503
    assert "database not reachable" in response.json()["error"]["message"]


async def test_metrics_need_credentials_and_count_requests(
    harness: Harness, admin: httpx.AsyncClient
) -> None:
    async with harness.client() as client:
        assert (await client.get("/metrics")).status_code == 401
    await admin.get("/api/v1/users/me")
    await admin.get("/api/v1/users/999")
    text = (await admin.get("/metrics")).text
    assert "process_cpu_seconds_total" in text or "python_info" in text
    assert 'maas_http_requests_total{method="GET",route="/api/v1/users/me",status="200"}' in text
    assert 'route="/api/v1/users/{user_id}",status="404"' in text
    assert "maas_http_request_duration_seconds_bucket" in text


async def test_migrations_from_empty_reach_head(db_url: str) -> None:
    engine = db_engine.create_engine(db_url)
    try:
        assert await migrate.current_revision(engine) is None
        await migrate.upgrade(engine)
        assert await migrate.current_revision(engine) == migrate.head_revision()
        await migrate.upgrade(engine)  # idempotent
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {"users", "api_keys", "system_settings", "alembic_version"} <= tables
    finally:
        await engine.dispose()


async def test_restart_keeps_users_keys_and_secrets(db_url: str, settings: Settings) -> None:
    first = await open_server(settings, db_url)
    app_client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(first.state)), base_url="http://maas.test"
    )
    async with app_client as client:
        login = await client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        token = login.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        key = (await client.post("/api/v1/api-keys", json={"name": "x"}, headers=headers)).json()
        await client.post(
            "/api/v1/users", json={"username": "zoe", "password": "zoe-password"}, headers=headers
        )
    await close_server(first.state)
    token_file_before = first.bootstrap.token_file.read_text()

    # A second start with a different bootstrap password must not touch the admin.
    restarted_settings = settings.model_copy(update={"bootstrap_password": None})
    second = await open_server(restarted_settings, db_url)
    try:
        assert second.bootstrap.admin_created is False
        assert second.state.jwt_secret == first.state.jwt_secret
        assert second.bootstrap.token_file.read_text() == token_file_before
        app_client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(second.state)), base_url="http://maas.test"
        )
        async with app_client as client:
            # The old access token and the API key still work.
            me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200
            by_key = {"Authorization": f"Bearer {key['key']}"}
            users = (await client.get("/api/v1/users", headers=by_key)).json()
            assert {u["username"] for u in users["items"]} == {"admin", "zoe"}
    finally:
        await close_server(second.state)
