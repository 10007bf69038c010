"""A real server app per test on a real database, reached over HTTP through ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from maasbase.common.clock import FakeClock
from maasbase.common.config import Settings
from maasbase.server.app import create_app
from maasbase.server.runtime import Opened, close_server, open_server

ADMIN_PASSWORD = "admin-password-1"


@dataclass
class Harness:
    opened: Opened
    app: FastAPI
    clock: FakeClock
    settings: Settings

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://maas.test",
            headers=headers,
        )

    async def login(self, username: str, password: str) -> str:
        async with self.client() as client:
            response = await client.post(
                "/api/v1/auth/login", json={"username": username, "password": password}
            )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", bootstrap_password=ADMIN_PASSWORD)


@pytest.fixture
async def harness(db_url: str, settings: Settings) -> AsyncIterator[Harness]:
    clock = FakeClock(start=1_800_000_000.0)
    opened = await open_server(settings, db_url, clock=clock)
    try:
        app = create_app(opened.state, run_controllers=False)
        yield Harness(opened=opened, app=app, clock=clock, settings=settings)
    finally:
        await close_server(opened.state)


@pytest.fixture
async def admin_token(harness: Harness) -> str:
    return await harness.login("admin", ADMIN_PASSWORD)


@pytest.fixture
async def admin(harness: Harness, admin_token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with harness.client(admin_token) as client:
        yield client


@pytest.fixture
async def gateway_credential(admin: httpx.AsyncClient) -> str:
    """A gateway identity's credential (``mbg_...``), as a standalone gateway uses it."""
    created = await admin.post("/api/v1/gateways", json={"name": "gw-test"})
    assert created.status_code == 201, created.text
    credential: str = created.json()["credential"]
    return credential
