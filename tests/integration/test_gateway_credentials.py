"""Separate credentials, least privilege: the registration token only registers; each
gateway has its own revocable credential, the only one that receives routing tables
(provider keys), checks API keys and sends usage; rotating the registration token
disconnects no registered worker or gateway. On every database, in process."""

from __future__ import annotations

import stat
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from maasbase.common.clock import FakeClock
from maasbase.common.config import Settings
from maasbase.server.app import create_app
from maasbase.server.runtime import close_server, open_server
from tests.integration.conftest import ADMIN_PASSWORD, Harness
from tests.integration.test_workers import heartbeat, register

pytestmark = pytest.mark.integration

GATEWAY_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/v1/gateway/routes", None),
    ("POST", "/api/v1/gateway/keys/check", {"key": "mb_0123456789abcdef_secret"}),
    ("POST", "/api/v1/gateway/usage", {"records": []}),
]


@pytest.fixture
def token(harness: Harness) -> str:
    return (harness.settings.data_dir / "token").read_text().strip()


async def call(harness: Harness, bearer: str, method: str, path: str, body: Any) -> httpx.Response:
    async with harness.client(bearer) as client:
        return await client.request(method, path, json=body)


async def register_gateway(harness: Harness, bearer: str, name: str) -> httpx.Response:
    async with harness.client(bearer) as client:
        return await client.post("/api/v1/gateways/register", json={"name": name})


def message(response: httpx.Response) -> str:
    text: str = response.json()["error"]["message"]
    return text


async def test_the_registration_token_is_refused_outside_registration(
    harness: Harness, token: str
) -> None:
    for method, path, body in GATEWAY_ROUTES:
        response = await call(harness, token, method, path, body)
        assert response.status_code == 403, path
        assert "the registration token only registers workers and gateways" in message(response)
        assert "a gateway credential (mbg_...)" in message(response), path
    response = await call(harness, token, "GET", "/api/v1/users/me", None)
    assert response.status_code == 403
    assert "an API key (mb_...) or an access token" in message(response)
    # Anything else that is none of our credentials is simply not recognised.
    response = await call(harness, "not-the-token", "GET", "/api/v1/gateway/routes", None)
    assert response.status_code == 401
    assert "gateway credential" in message(response)


async def test_worker_credentials_and_users_are_refused_on_gateway_routes(
    harness: Harness, admin: httpx.AsyncClient, token: str
) -> None:
    credential = (await register(harness, token)).json()["credential"]
    for method, path, body in GATEWAY_ROUTES:
        response = await call(harness, credential, method, path, body)
        assert response.status_code == 403, path
        assert "this endpoint is for gateways" in message(response)
        assert (await admin.request(method, path, json=body)).status_code == 403


async def test_admins_create_list_and_revoke_gateway_identities(
    harness: Harness, admin: httpx.AsyncClient
) -> None:
    created = await admin.post("/api/v1/gateways", json={"name": "edge-1"})
    assert created.status_code == 201, created.text
    gateway = created.json()
    credential = gateway["credential"]
    assert credential.startswith(f"mbg_{gateway['credential_access']}_")
    assert gateway["last_seen_at"] is None
    again = await admin.post("/api/v1/gateways", json={"name": "edge-1"})
    assert again.status_code == 409
    assert "a gateway named 'edge-1' is already registered" in message(again)

    for method, path, body in GATEWAY_ROUTES:
        response = await call(harness, credential, method, path, body)
        assert response.status_code in (200, 202, 401), (path, response.text)
        if path.endswith("/keys/check"):  # 401 here answers for the checked key
            assert "API key" in message(response)
    # A gateway credential opens the gateway routes only.
    for path in ("/api/v1/users/me", "/api/v1/gateways", "/api/v1/workers"):
        assert (await call(harness, credential, "GET", path, None)).status_code == 403, path
    response = await call(harness, credential, "POST", "/api/v1/workers/heartbeat", {})
    assert response.status_code == 403

    listed = (await admin.get("/api/v1/gateways")).json()
    assert listed["total"] == 1
    [row] = listed["items"]
    assert "credential" not in row
    first_seen = datetime.fromisoformat(row["last_seen_at"])
    assert first_seen.timestamp() == harness.clock.now()

    # last_seen_at moves at most every 30 s, not on every call.
    harness.clock.advance(10)
    await call(harness, credential, "GET", "/api/v1/gateway/routes", None)
    shown = (await admin.get(f"/api/v1/gateways/{gateway['id']}")).json()
    assert datetime.fromisoformat(shown["last_seen_at"]) == first_seen
    harness.clock.advance(25)
    await call(harness, credential, "GET", "/api/v1/gateway/routes", None)
    shown = (await admin.get(f"/api/v1/gateways/{gateway['id']}")).json()
    assert datetime.fromisoformat(shown["last_seen_at"]).timestamp() == harness.clock.now()

    other = (await admin.post("/api/v1/gateways", json={"name": "edge-2"})).json()["credential"]
    assert (await admin.delete(f"/api/v1/gateways/{gateway['id']}")).status_code == 204
    response = await call(harness, credential, "GET", "/api/v1/gateway/routes", None)
    assert response.status_code == 401
    assert "it may have been revoked" in message(response)
    assert (await call(harness, other, "GET", "/api/v1/gateway/routes", None)).status_code == 200
    assert (await admin.get(f"/api/v1/gateways/{gateway['id']}")).status_code == 404
    assert (await admin.delete(f"/api/v1/gateways/{gateway['id']}")).status_code == 404


async def test_regular_users_cannot_manage_gateways(
    harness: Harness, admin: httpx.AsyncClient
) -> None:
    await admin.post("/api/v1/users", json={"username": "u1", "password": "user-password"})
    user = await harness.login("u1", "user-password")
    async with harness.client(user) as client:
        assert (await client.get("/api/v1/gateways")).status_code == 403
        assert (await client.post("/api/v1/gateways", json={"name": "mine"})).status_code == 403
        rotate = await client.post("/api/v1/cluster/registration-token")
        assert rotate.status_code == 403


async def test_gateways_register_with_the_token_and_reattach_with_their_credential(
    harness: Harness, admin: httpx.AsyncClient, token: str
) -> None:
    response = await register_gateway(harness, token, "edge-1")
    assert response.status_code == 200, response.text
    registered = response.json()
    credential = registered["credential"]
    assert credential.startswith("mbg_")
    assert (
        await call(harness, credential, "GET", "/api/v1/gateway/routes", None)
    ).status_code == 200

    # A restart that kept the credential gets the same identity back.
    again = (await register_gateway(harness, credential, "edge-1")).json()
    assert (again["id"], again["credential"]) == (registered["id"], credential)
    # The token does not take over a registered name.
    taken = await register_gateway(harness, token, "edge-1")
    assert taken.status_code == 409
    assert f"DELETE /api/v1/gateways/{registered['id']}" in message(taken)
    renamed = await register_gateway(harness, credential, "edge-2")
    assert renamed.status_code == 403
    assert "belongs to gateway 'edge-1'" in message(renamed)
    wrong = await register_gateway(harness, "not-the-token", "edge-3")
    assert wrong.status_code == 401
    assert "wrong registration token" in message(wrong)

    [row] = (await admin.get("/api/v1/gateways")).json()["items"]
    assert row["name"] == "edge-1"
    assert (await admin.delete(f"/api/v1/gateways/{row['id']}")).status_code == 204
    refused = await register_gateway(harness, credential, "edge-1")
    assert refused.status_code == 401


async def test_rotating_the_registration_token_keeps_workers_and_gateways_connected(
    harness: Harness, admin: httpx.AsyncClient, token: str
) -> None:
    worker = (await register(harness, token, "w1")).json()["credential"]
    gateway = (await register_gateway(harness, token, "edge-1")).json()["credential"]

    rotated = await admin.post("/api/v1/cluster/registration-token")
    assert rotated.status_code == 200, rotated.text
    new_token = rotated.json()["token"]
    assert new_token != token
    token_file = harness.settings.data_dir / "token"
    assert rotated.json()["token_file"] == str(token_file)
    assert token_file.read_text().strip() == new_token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    # Registered workers and gateways carry on with their own credentials.
    assert (await heartbeat(harness, worker)).json()["state"] == "ready"
    assert (await call(harness, gateway, "GET", "/api/v1/gateway/routes", None)).status_code == 200
    # The old token registers nothing any more; the new one does.
    assert (await register(harness, token, "w2")).status_code == 401
    assert (await register_gateway(harness, token, "edge-2")).status_code == 401
    assert (await register(harness, new_token, "w2")).status_code == 200
    assert (await register_gateway(harness, new_token, "edge-2")).status_code == 200


async def test_rotation_is_refused_when_the_token_comes_from_the_settings(
    db_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", bootstrap_password=ADMIN_PASSWORD, token="fixed-token-1"
    )
    clock = FakeClock(start=1_800_000_000.0)
    opened = await open_server(settings, db_url, clock=clock)
    try:
        app = create_app(opened.state, run_controllers=False)
        harness = Harness(opened=opened, app=app, clock=clock, settings=settings)
        async with harness.client(await harness.login("admin", ADMIN_PASSWORD)) as admin:
            response = await admin.post("/api/v1/cluster/registration-token")
        assert response.status_code == 409
        assert "change the setting and restart" in message(response)
        assert (settings.data_dir / "token").read_text().strip() == "fixed-token-1"
    finally:
        await close_server(opened.state)
