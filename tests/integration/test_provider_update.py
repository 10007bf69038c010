"""PATCH /api/v1/providers/{id}: rotate or remove the key, move the base URL, replace the
models, without deleting the provider; gateways watching the routing table see it at once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from maasbase.server.routing_table import REPOLL_SECONDS
from tests.integration.conftest import Harness
from tests.integration.test_gateway_control import routes
from tests.integration.test_provider_secrets import stored_keys

pytestmark = pytest.mark.integration


async def add_provider(admin: httpx.AsyncClient) -> dict[str, Any]:
    created = await admin.post(
        "/api/v1/providers",
        json={
            "name": "cloud",
            "base_url": "https://api.example.com/v1",
            "api_key": "sk-old-key",
            "models": ["cloud-model"],
        },
    )
    assert created.status_code == 201, created.text
    [provider] = (await admin.get("/api/v1/providers")).json()["items"]  # as stored
    assert isinstance(provider, dict)
    return provider


def upstreams(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m["upstreams"][0] for m in table["models"]}


async def test_rotated_key_reaches_watching_gateways_and_is_stored_encrypted(
    harness: Harness, admin: httpx.AsyncClient, gateway_credential: str
) -> None:
    provider = await add_provider(admin)
    before = await routes(harness, gateway_credential)
    watch = asyncio.create_task(
        routes(harness, gateway_credential, revision=before["revision"], wait=30)
    )
    await asyncio.sleep(0.1)  # the watch is parked, waiting for a change

    patched = await admin.patch(
        f"/api/v1/providers/{provider['id']}", json={"api_key": "sk-new-key"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json() == provider  # same shape as on create, the key not in it
    assert "sk-new" not in patched.text

    # Woken by the change, not by the periodic re-read of the database.
    changed = await asyncio.wait_for(watch, REPOLL_SECONDS / 2)
    assert upstreams(changed)["cloud-model"]["api_key"] == "sk-new-key"
    stored = (await stored_keys(harness.opened.state))["cloud"]
    assert stored is not None
    assert stored.startswith("fernet:")
    assert "sk-new-key" not in stored


async def test_null_removes_the_key_and_models_and_url_are_replaced(
    harness: Harness, admin: httpx.AsyncClient, gateway_credential: str
) -> None:
    provider = await add_provider(admin)
    patched = await admin.patch(
        f"/api/v1/providers/{provider['id']}",
        json={
            "api_key": None,
            "base_url": "https://eu.example.com/v1/",
            "models": ["b-model", "a-model", "b-model"],
        },
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["has_api_key"] is False
    assert body["base_url"] == "https://eu.example.com/v1"
    assert body["models"] == ["a-model", "b-model"]
    assert (await stored_keys(harness.opened.state))["cloud"] is None

    routed = upstreams(await routes(harness, gateway_credential))
    assert set(routed) == {"a-model", "b-model"}
    assert routed["a-model"]["api_key"] is None
    assert routed["a-model"]["base_url"] == "https://eu.example.com/v1"

    [listed] = (await admin.get("/api/v1/providers")).json()["items"]
    assert listed == body


async def test_absent_fields_stay_as_they_are(
    harness: Harness, admin: httpx.AsyncClient, gateway_credential: str
) -> None:
    provider = await add_provider(admin)
    patched = await admin.patch(
        f"/api/v1/providers/{provider['id']}", json={"models": ["other-model"]}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["has_api_key"] is True
    routed = upstreams(await routes(harness, gateway_credential))
    assert routed["other-model"]["api_key"] == "sk-old-key"
    assert routed["other-model"]["base_url"] == "https://api.example.com/v1"


async def test_moving_the_url_needs_the_key_again_or_an_explicit_keep(
    harness: Harness, admin: httpx.AsyncClient, gateway_credential: str
) -> None:
    provider = await add_provider(admin)
    url = f"/api/v1/providers/{provider['id']}"
    refused = await admin.patch(url, json={"base_url": "https://elsewhere.example.net/v1"})
    assert refused.status_code == 400, refused.text
    message = refused.json()["error"]["message"]
    assert "send the key for the new host in api_key" in message
    assert "keep_api_key: true" in message
    routed = upstreams(await routes(harness, gateway_credential))["cloud-model"]
    assert routed["base_url"] == "https://api.example.com/v1"  # nothing changed

    # The same URL again is no move; a new key goes with the new URL.
    same = await admin.patch(url, json={"base_url": "https://api.example.com/v1/"})
    assert same.status_code == 200, same.text
    moved = await admin.patch(
        url, json={"base_url": "https://eu.example.com/v1", "api_key": "sk-eu-key"}
    )
    assert moved.status_code == 200, moved.text
    routed = upstreams(await routes(harness, gateway_credential))["cloud-model"]
    assert (routed["base_url"], routed["api_key"]) == ("https://eu.example.com/v1", "sk-eu-key")

    kept = await admin.patch(
        url, json={"base_url": "https://us.example.com/v1", "keep_api_key": True}
    )
    assert kept.status_code == 200, kept.text
    routed = upstreams(await routes(harness, gateway_credential))["cloud-model"]
    assert (routed["base_url"], routed["api_key"]) == ("https://us.example.com/v1", "sk-eu-key")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"base_url": "not a url"}, "base_url"),
        ({"base_url": None}, "base_url cannot be null"),
        ({"models": []}, "models"),
        ({"models": None}, "models cannot be null"),
        ({"models": ["bad name!"]}, "models.0"),
        ({"name": "renamed"}, "name"),  # unknown field
    ],
)
async def test_bad_changes_are_refused_and_change_nothing(
    harness: Harness, admin: httpx.AsyncClient, body: dict[str, Any], problem: str
) -> None:
    provider = await add_provider(admin)
    response = await admin.patch(f"/api/v1/providers/{provider['id']}", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert problem in error["message"]
    [listed] = (await admin.get("/api/v1/providers")).json()["items"]
    assert listed == provider


async def test_unknown_provider_is_404_and_users_are_refused(
    harness: Harness, admin: httpx.AsyncClient, gateway_credential: str
) -> None:
    provider = await add_provider(admin)
    missing = await admin.patch("/api/v1/providers/999999", json={"api_key": "sk-x"})
    assert missing.status_code == 404, missing.text
    assert missing.json()["error"]["code"] == "not_found"

    created = await admin.post(
        "/api/v1/users", json={"username": "alice", "password": "user-password-1"}
    )
    assert created.status_code == 201, created.text
    async with harness.client(await harness.login("alice", "user-password-1")) as alice:
        refused = await alice.patch(
            f"/api/v1/providers/{provider['id']}", json={"api_key": "sk-mine"}
        )
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "forbidden"
    assert upstreams(await routes(harness, gateway_credential))["cloud-model"]["api_key"] == (
        "sk-old-key"
    )
