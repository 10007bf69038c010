"""Login, sessions, throttling and password changes, on every database."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from maasbase.server import bootstrap
from maasbase.server.db import system_settings
from maasbase.server.db.tables import SystemSetting
from tests.integration.conftest import ADMIN_PASSWORD, Harness

pytestmark = pytest.mark.integration


async def test_login_returns_bearer_token_and_session_cookie(harness: Harness) -> None:
    async with harness.client() as client:
        response = await client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "bearer"
        assert body["access_token"]
        assert "maas_session" in response.cookies
        set_cookie = response.headers["set-cookie"].lower()
        assert "httponly" in set_cookie
        assert "samesite=strict" in set_cookie
        # The cookie alone authenticates (the UI's way).
        me = await client.get("/api/v1/users/me")
        assert me.status_code == 200
        assert me.json()["username"] == "admin"
        assert me.json()["is_admin"] is True
        assert "password_hash" not in me.json()
        await client.post("/api/v1/auth/logout")
        assert (await client.get("/api/v1/users/me")).status_code == 401


async def test_wrong_password_is_401_then_throttled(harness: Harness) -> None:
    async with harness.client() as client:
        for _ in range(harness.settings.login_max_failures):
            response = await client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": "wrong-password"}
            )
            assert response.status_code == 401
            assert response.json()["error"]["message"] == "wrong username or password"
        # Even the right password is refused while throttled.
        response = await client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0
        assert response.json()["error"]["code"] == "rate_limited"
        harness.clock.advance(harness.settings.login_lockout_seconds + 1)
        response = await client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        assert response.status_code == 200


async def test_unknown_user_gets_same_answer_as_wrong_password(harness: Harness) -> None:
    async with harness.client() as client:
        response = await client.post(
            "/api/v1/auth/login", json={"username": "nobody", "password": "whatever-1"}
        )
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "wrong username or password"


async def test_expired_access_token_is_refused(harness: Harness, admin_token: str) -> None:
    harness.clock.advance(harness.settings.access_token_ttl_seconds + 1)
    async with harness.client(admin_token) as client:
        response = await client.get("/api/v1/users/me")
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


async def test_password_change_ends_old_sessions(
    harness: Harness, admin: httpx.AsyncClient, admin_token: str
) -> None:
    response = await admin.put(
        "/api/v1/users/me/password",
        json={"current_password": "not-the-password", "new_password": "new-password-2"},
    )
    assert response.status_code == 400
    assert "current_password" in response.json()["error"]["message"]
    response = await admin.put(
        "/api/v1/users/me/password",
        json={"current_password": ADMIN_PASSWORD, "new_password": "short"},
    )
    assert response.status_code == 400
    response = await admin.put(
        "/api/v1/users/me/password",
        json={"current_password": ADMIN_PASSWORD, "new_password": "new-password-2"},
    )
    assert response.status_code == 200
    new_token = response.json()["access_token"]
    async with harness.client(admin_token) as old:
        response = await old.get("/api/v1/users/me")
        assert response.status_code == 401
        assert "password changed" in response.json()["error"]["message"]
    async with harness.client(new_token) as new:
        assert (await new.get("/api/v1/users/me")).status_code == 200
    await harness.login("admin", "new-password-2")


async def test_malformed_authorization_header(harness: Harness) -> None:
    async with harness.client() as client:
        response = await client.get("/api/v1/users/me", headers={"Authorization": "Basic abc"})
        assert response.status_code == 401
        assert "Bearer" in response.json()["error"]["message"]
        response = await client.get("/api/v1/users/me", headers={"Authorization": "Bearer x.y.z"})
        assert response.status_code == 401
        response = await client.get(
            "/api/v1/users/me", headers={"Authorization": "Bearer mb_0123456789abcdef_nope"}
        )
        assert response.status_code == 401


async def test_logout_ends_the_bearer_token_on_the_server(harness: Harness) -> None:
    token = await harness.login("admin", ADMIN_PASSWORD)
    other = await harness.login("admin", ADMIN_PASSWORD)
    async with harness.client(token) as client:
        assert (await client.get("/api/v1/users/me")).status_code == 200
        response = await client.post("/api/v1/auth/logout")
        assert response.status_code == 204
        # A copy of the token kept elsewhere is worth nothing now.
        response = await client.get("/api/v1/users/me")
        assert response.status_code == 401
        assert response.json()["error"]["message"].startswith("session ended (logged out)")
        # Logging out again with the ended token changes nothing.
        assert (await client.post("/api/v1/auth/logout")).status_code == 204
    async with harness.client(other) as client:  # another session of the same user lives on
        assert (await client.get("/api/v1/users/me")).status_code == 200


async def test_logout_ends_the_session_cookie_on_the_server(harness: Harness) -> None:
    async with harness.client() as client:
        response = await client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        cookie = response.cookies["maas_session"]
        assert (await client.post("/api/v1/auth/logout")).status_code == 204
    async with harness.client() as replay:  # the cookie value, replayed after logout
        replay.cookies.set("maas_session", cookie)
        response = await replay.get("/api/v1/users/me")
        assert response.status_code == 401
        assert "logged out" in response.json()["error"]["message"]


async def test_signing_secret_is_derived_not_stored(harness: Harness) -> None:
    state = harness.opened.state
    async with state.sessions() as session:  # as an older version stored it
        await system_settings.put(session, system_settings.JWT_SECRET, "old-signing-secret")
        await session.commit()
    async with state.sessions() as session:  # the next start
        result = await bootstrap.run(session, harness.settings)
        await session.commit()
    assert result.jwt_secret == state.jwt_secret  # derived from the same secret key
    async with state.engine.connect() as connection:
        rows = await connection.execute(select(SystemSetting.key, SystemSetting.value))
        stored = {row.key: row.value for row in rows}
    assert "old-signing-secret" not in stored.values()
    assert state.jwt_secret not in stored.values()
    # The registration token's hash, and the row credential-change writers lock.
    assert sorted(stored) == ["credential_feed_lock", system_settings.REGISTRATION_TOKEN_HASH]
