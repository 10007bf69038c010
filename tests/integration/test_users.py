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


async def _active_admins(*clients: httpx.AsyncClient) -> list[str]:
    """The active admins, as seen by the first client still allowed to list users."""
    for client in clients:
        response = await client.get("/api/v1/users", params={"per_page": 1000})
        if response.status_code == 200:
            users = response.json()["items"]
            return [u["username"] for u in users if u["is_admin"] and u["is_active"]]
    return []


@pytest.mark.parametrize("change", [{"is_admin": False}, {"is_active": False}])
async def test_two_admins_removing_each_other_at_once_leave_one(
    harness: Harness, admin: httpx.AsyncClient, change: dict[str, bool]
) -> None:
    """The last-admin invariant holds under concurrency: of two requests that each
    remove one of the only two admins, at most one succeeds."""
    import asyncio

    response = await admin.post(
        "/api/v1/users",
        json={"username": "second", "password": "second-password", "is_admin": True},
    )
    second_id = response.json()["id"]
    first_id = (await admin.get("/api/v1/users/me")).json()["id"]
    second_token = await harness.login("second", "second-password")
    restore = {key: True for key in change}
    async with harness.client(second_token) as second:
        for _ in range(5):
            statuses = sorted(
                r.status_code
                for r in await asyncio.gather(
                    admin.patch(f"/api/v1/users/{second_id}", json=change),
                    second.patch(f"/api/v1/users/{first_id}", json=change),
                )
            )
            survivors = await _active_admins(admin, second)
            assert len(survivors) == 1, (statuses, survivors)
            assert statuses in ([200, 401], [200, 403], [200, 409]), statuses
            survivor = admin if survivors == ["admin"] else second
            other = second_id if survivors == ["admin"] else first_id
            assert (await survivor.patch(f"/api/v1/users/{other}", json=restore)).status_code == 200
