"""API keys: shown once, stored hashed, visible to their owner (and admins), revocable."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest
from sqlalchemy import select

from maasbase.server.db.tables import ApiKey
from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


async def test_key_is_shown_once_and_only_its_hash_is_stored(
    harness: Harness, admin: httpx.AsyncClient
) -> None:
    response = await admin.post(
        "/api/v1/api-keys",
        json={"name": "ci", "scope": "inference", "allowed_models": ["llama", " qwen ", "llama"]},
    )
    assert response.status_code == 201
    created = response.json()
    assert set(created) >= {"id", "name", "key"}
    key = created["key"]
    assert key.startswith("mb_")
    assert created["allowed_models"] == ["llama", "qwen"]
    shown = (await admin.get(f"/api/v1/api-keys/{created['id']}")).json()
    assert "key" not in shown
    assert "secret_hash" not in shown
    listed = (await admin.get("/api/v1/api-keys")).json()
    assert all("key" not in item for item in listed["items"])
    async with harness.opened.state.sessions() as session:
        row = (await session.execute(select(ApiKey))).scalar_one()
    secret = key.split("_", 2)[2]
    assert secret not in (row.secret_hash, row.access_key)
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()


async def test_users_see_only_their_own_keys_admins_see_all(
    harness: Harness, admin: httpx.AsyncClient
) -> None:
    for name in ("bob", "carol"):
        response = await admin.post(
            "/api/v1/users", json={"username": name, "password": f"{name}-password"}
        )
        assert response.status_code == 201
    bob = await harness.login("bob", "bob-password")
    carol = await harness.login("carol", "carol-password")
    async with harness.client(bob) as client:
        bob_key_id = (await client.post("/api/v1/api-keys", json={"name": "k"})).json()["id"]
    async with harness.client(carol) as client:
        await client.post("/api/v1/api-keys", json={"name": "k"})
        listed = (await client.get("/api/v1/api-keys")).json()
        assert listed["total"] == 1
        assert (await client.get(f"/api/v1/api-keys/{bob_key_id}")).status_code == 404
        assert (await client.delete(f"/api/v1/api-keys/{bob_key_id}")).status_code == 404
    everything = (await admin.get("/api/v1/api-keys")).json()
    assert everything["total"] == 2
    assert (await admin.delete(f"/api/v1/api-keys/{bob_key_id}")).status_code == 204


async def test_names_are_unique_per_user_until_revoked(admin: httpx.AsyncClient) -> None:
    first = await admin.post("/api/v1/api-keys", json={"name": "deploy"})
    assert first.status_code == 201
    duplicate = await admin.post("/api/v1/api-keys", json={"name": "deploy"})
    assert duplicate.status_code == 409
    assert "pick another name" in duplicate.json()["error"]["message"]
    assert (await admin.delete(f"/api/v1/api-keys/{first.json()['id']}")).status_code == 204
    again = await admin.post("/api/v1/api-keys", json={"name": "deploy"})
    assert again.status_code == 201
    listed = (await admin.get("/api/v1/api-keys", params={"include_revoked": True})).json()
    assert [k["revoked_at"] is not None for k in listed["items"]] == [True, False]


async def test_bad_input_gives_clear_400(admin: httpx.AsyncClient) -> None:
    cases = [
        ({"name": ""}, "name"),
        ({"name": "x", "scope": "root"}, "scope"),
        ({"name": "x", "expires_at": "2020-01-01T00:00:00Z"}, "past"),
        ({"name": "x", "expires_at": "2099-01-01T00:00:00"}, "time zone"),
        ({"name": "x", "colour": "blue"}, "colour"),
    ]
    for body, hint in cases:
        response = await admin.post("/api/v1/api-keys", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert hint in error["message"], (body, error)


async def test_fifty_concurrent_creations_all_succeed(
    harness: Harness, admin: httpx.AsyncClient
) -> None:
    responses = await asyncio.gather(
        *(admin.post("/api/v1/api-keys", json={"name": f"key-{i}"}) for i in range(50))
    )
    assert [r.status_code for r in responses] == [201] * 50
    listed = (await admin.get("/api/v1/api-keys", params={"per_page": 100})).json()
    assert listed["total"] == 50
    assert len({item["access_key"] for item in listed["items"]}) == 50


async def test_pagination_shape(admin: httpx.AsyncClient) -> None:
    for i in range(5):
        await admin.post("/api/v1/api-keys", json={"name": f"p{i}"})
    page = (await admin.get("/api/v1/api-keys", params={"page": 2, "per_page": 2})).json()
    assert page["total"] == 5
    assert page["page"] == 2
    assert page["per_page"] == 2
    assert [k["name"] for k in page["items"]] == ["p2", "p3"]
    response = await admin.get("/api/v1/api-keys", params={"per_page": 0})
    assert response.status_code == 400
