"""Admin-only user management."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


async def test_admin_creates_updates_and_deletes_users(
    harness: Harness, admin: httpx.AsyncClient
) -> None:
    response = await admin.post(
        "/api/v1/users",
        json={"username": "dave", "password": "dave-password", "full_name": "Dave"},
    )
    assert response.status_code == 201
    dave = response.json()
    assert dave["is_admin"] is False
    assert (
        await admin.post("/api/v1/users", json={"username": "dave", "password": "other-password"})
    ).status_code == 409
    response = await admin.patch(
        f"/api/v1/users/{dave['id']}", json={"is_admin": True, "password": "reset-password"}
    )
    assert response.status_code == 200
    assert response.json()["is_admin"] is True
    token = await harness.login("dave", "reset-password")
    async with harness.client(token) as client:
        assert (await client.get("/api/v1/users")).status_code == 200
    assert (await admin.delete(f"/api/v1/users/{dave['id']}")).status_code == 204
    assert (await admin.get(f"/api/v1/users/{dave['id']}")).status_code == 404
    async with harness.client(token) as client:
        assert (await client.get("/api/v1/users/me")).status_code == 401


async def test_last_admin_is_protected(admin: httpx.AsyncClient) -> None:
    me = (await admin.get("/api/v1/users/me")).json()
    response = await admin.patch(f"/api/v1/users/{me['id']}", json={"is_admin": False})
    assert response.status_code == 409
    assert "last active admin" in response.json()["error"]["message"]
    response = await admin.delete(f"/api/v1/users/{me['id']}")
    assert response.status_code == 409


async def test_validation_messages(admin: httpx.AsyncClient) -> None:
    response = await admin.post("/api/v1/users", json={"username": "bad name", "password": "x"})
    assert response.status_code == 400
    assert "username" in response.json()["error"]["message"]
    response = await admin.post("/api/v1/users", json={"username": "eve", "password": "short"})
    assert response.status_code == 400
    assert "at least 8 characters" in response.json()["error"]["message"]
    response = await admin.get("/api/v1/users/12345")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "user 12345 does not exist"
    response = await admin.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
