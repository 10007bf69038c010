"""Who may call what: admin, regular user, API keys of each scope, expired, revoked, nobody."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

USER_PASSWORD = "user-password-1"


async def _create_key(client: httpx.AsyncClient, name: str, **extra: object) -> str:
    response = await client.post("/api/v1/api-keys", json={"name": name, **extra})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


@pytest.fixture
async def credentials(harness: Harness, admin: httpx.AsyncClient) -> dict[str, str | None]:
    """One credential per kind of caller."""
    response = await admin.post(
        "/api/v1/users", json={"username": "alice", "password": USER_PASSWORD}
    )
    assert response.status_code == 201, response.text
    user_token = await harness.login("alice", USER_PASSWORD)
    now = datetime.fromtimestamp(harness.clock.now(), UTC)
    async with harness.client(user_token) as alice:
        user_key = await _create_key(alice, "user-all")
        user_inference = await _create_key(alice, "user-inference", scope="inference")
        expiring = await _create_key(
            alice, "expiring", expires_at=(now + timedelta(hours=1)).isoformat()
        )
        revoked = await _create_key(alice, "revoked")
        listed = (await alice.get("/api/v1/api-keys")).json()["items"]
        revoked_id = next(k["id"] for k in listed if k["name"] == "revoked")
        assert (await alice.delete(f"/api/v1/api-keys/{revoked_id}")).status_code == 204
    admin_token = admin.headers["authorization"].removeprefix("Bearer ")
    creds: dict[str, str | None] = {
        "admin_token": admin_token,
        "admin_key": await _create_key(admin, "admin-all"),
        "admin_management_key": await _create_key(admin, "admin-mgmt", scope="management"),
        "admin_inference_key": await _create_key(admin, "admin-inf", scope="inference"),
        "user_token": user_token,
        "user_key": user_key,
        "user_inference_key": user_inference,
        "expired_key": expiring,
        "revoked_key": revoked,
        "nobody": None,
        "garbage": "not-a-real-token",
        "gateway": (await admin.post("/api/v1/gateways", json={"name": "gw"})).json()["credential"],
        "registration_token": (harness.settings.data_dir / "token").read_text().strip(),
    }
    # Move the clock past the expiring key's lifetime (tokens live longer).
    harness.clock.advance(2 * 3600)
    return creds


ALLOWED = {
    # (method, path) -> callers allowed; everyone else gets 401 (bad/no credentials) or 403.
    ("GET", "/api/v1/users/me"): {
        "admin_token",
        "admin_key",
        "admin_management_key",
        "user_token",
        "user_key",
    },
    ("GET", "/api/v1/users"): {"admin_token", "admin_key", "admin_management_key"},
    ("POST", "/api/v1/users"): {"admin_token", "admin_key", "admin_management_key"},
    ("GET", "/api/v1/api-keys"): {
        "admin_token",
        "admin_key",
        "admin_management_key",
        "user_token",
        "user_key",
    },
    ("GET", "/metrics"): {
        "admin_token",
        "admin_key",
        "admin_management_key",
        "user_token",
        "user_key",
    },
}
UNAUTHENTICATED = {"expired_key", "revoked_key", "nobody", "garbage"}

CASES = [
    (method, path, caller)
    for (method, path) in ALLOWED
    for caller in [
        "admin_token",
        "admin_key",
        "admin_management_key",
        "admin_inference_key",
        "user_token",
        "user_key",
        "user_inference_key",
        "expired_key",
        "revoked_key",
        "nobody",
        "garbage",
        "gateway",
        "registration_token",
    ]
]


async def test_matrix(harness: Harness, credentials: dict[str, str | None]) -> None:
    failures = []
    for n, (method, path, caller) in enumerate(CASES):
        token = credentials[caller]
        body = {"username": f"made-by-{n}", "password": "some-password-1"}
        async with harness.client(token) as client:
            if method == "POST":
                response = await client.post(path, json=body)
            else:
                response = await client.request(method, path)
        if caller in ALLOWED[(method, path)]:
            expected = {200, 201}
        elif caller in UNAUTHENTICATED:
            expected = {401}
        else:
            expected = {403}
        if response.status_code not in expected:
            failures.append(f"{caller} {method} {path}: {response.status_code} {response.text}")
        elif response.status_code >= 400:
            error = response.json()["error"]
            assert error["message"], error
            assert error["code"] in {"unauthenticated", "forbidden"}
    assert not failures, "\n".join(failures)


async def test_expired_and_revoked_keys_say_why(
    harness: Harness, credentials: dict[str, str | None]
) -> None:
    async with harness.client(credentials["expired_key"]) as client:
        response = await client.get("/api/v1/users/me")
        assert response.status_code == 401
        assert "expired" in response.json()["error"]["message"]
    async with harness.client(credentials["revoked_key"]) as client:
        response = await client.get("/api/v1/users/me")
        assert response.status_code == 401
        assert "revoked" in response.json()["error"]["message"]
    async with harness.client(credentials["user_inference_key"]) as client:
        response = await client.get("/api/v1/users/me")
        assert response.status_code == 403
        assert "scope 'inference'" in response.json()["error"]["message"]


async def test_deactivated_user_loses_access(
    harness: Harness, admin: httpx.AsyncClient, credentials: dict[str, str | None]
) -> None:
    users = (await admin.get("/api/v1/users", params={"search": "alice"})).json()["items"]
    alice_id = users[0]["id"]
    assert (await admin.patch(f"/api/v1/users/{alice_id}", json={"is_active": False})).is_success
    for caller in ("user_token", "user_key"):
        async with harness.client(credentials[caller]) as client:
            response = await client.get("/api/v1/users/me")
        assert response.status_code == 401
        assert "deactivated" in response.json()["error"]["message"]
