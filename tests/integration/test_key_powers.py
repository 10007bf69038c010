"""Keys never exceed their creator, and an empty model list is refused: through the real
management API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from maasbase.server.db.tables import ApiKey
from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

PASSWORD = "alice-password-1"


@pytest.fixture
async def alice(harness: Harness, admin: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    created = await admin.post("/api/v1/users", json={"username": "alice", "password": PASSWORD})
    assert created.status_code == 201, created.text
    async with harness.client(await harness.login("alice", PASSWORD)) as client:
        yield client


async def mint(client: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await client.post("/api/v1/api-keys", json={"name": f"k{id(body)}", **body})


async def test_a_limited_key_cannot_mint_a_wider_one(
    harness: Harness, alice: httpx.AsyncClient
) -> None:
    now = datetime.fromtimestamp(harness.clock.now(), UTC)
    expiry = now + timedelta(hours=1)
    parent = await mint(
        alice,
        scope="all",
        allowed_models=["m1", "m2"],
        expires_at=expiry.isoformat(),
        rpm_limit=10,
        tpm_limit=1000,
        token_quota=5000,
        quota_period="day",
    )
    assert parent.status_code == 201, parent.text  # a login may create any key
    fitting = {
        "allowed_models": ["m1"],
        "expires_at": (expiry - timedelta(minutes=1)).isoformat(),
        "rpm_limit": 5,
        "tpm_limit": 1000,
        "token_quota": 100,
        "quota_period": "day",
    }
    async with harness.client(parent.json()["key"]) as key:
        refused = {
            "allowed_models": {**fitting, "allowed_models": None},
            "expires_at": {**fitting, "expires_at": None},
            "rpm_limit": {**fitting, "rpm_limit": 11},
            "tpm_limit": {**fitting, "tpm_limit": None},
            "token_quota": {**fitting, "token_quota": 5001},
            "quota_period": {**fitting, "quota_period": "month"},
        }
        for dimension, body in refused.items():
            response = await mint(key, **body)
            assert response.status_code == 403, (dimension, response.text)
            message = response.json()["error"]["message"]
            assert f": {dimension}:" in message, (dimension, message)
        child = await mint(key, scope="management", **fitting)
        assert child.status_code == 201, child.text
        assert child.json()["allowed_models"] == ["m1"]

    async with harness.client(child.json()["key"]) as management:
        wider = await mint(management, scope="all", **fitting)
        assert wider.status_code == 403
        assert "scope 'management'" in wider.json()["error"]["message"]
        assert (await mint(management, scope="management", **fitting)).status_code == 201


async def test_an_empty_model_list_is_refused_not_read_as_every_model(
    alice: httpx.AsyncClient,
) -> None:
    for models in ([], ["  ", ""]):
        response = await mint(alice, allowed_models=models)
        assert response.status_code == 400, response.text
        message = response.json()["error"]["message"]
        assert "give at least one model name, or leave allowed_models out" in message
    assert (await alice.get("/api/v1/api-keys")).json()["total"] == 0


async def test_admins_set_user_limits_shown_in_user_output(
    admin: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    me = (await alice.get("/api/v1/users/me")).json()
    assert (me["rpm_limit"], me["token_quota"], me["quota_period"]) == (None, None, "month")
    changed = await admin.patch(
        f"/api/v1/users/{me['id']}",
        json={"rpm_limit": 30, "tpm_limit": 5000, "token_quota": 10**6, "quota_period": "day"},
    )
    assert changed.status_code == 200, changed.text
    shown = (await alice.get("/api/v1/users/me")).json()
    assert [shown[f] for f in ("rpm_limit", "tpm_limit", "token_quota", "quota_period")] == [
        30, 5000, 10**6, "day"
    ]  # fmt: skip
    cleared = await admin.patch(f"/api/v1/users/{me['id']}", json={"rpm_limit": None})
    assert (cleared.json()["rpm_limit"], cleared.json()["tpm_limit"]) == (None, 5000)
    by_herself = await alice.patch(f"/api/v1/users/{me['id']}", json={"rpm_limit": 1})
    assert by_herself.status_code == 403


async def test_a_stored_empty_model_list_reaches_gateways_as_no_model(
    harness: Harness, alice: httpx.AsyncClient, gateway_credential: str
) -> None:
    created = await mint(alice, allowed_models=["m"])
    assert created.status_code == 201
    async with harness.opened.state.sessions() as session:  # a row written before the check
        row = await session.get(ApiKey, created.json()["id"])
        assert row is not None
        row.allowed_models = []
        await session.commit()
    token = gateway_credential
    async with harness.client(token) as gateway:
        key = created.json()["key"]
        grant = await gateway.post("/api/v1/gateway/keys/check", json={"key": key})
    assert grant.status_code == 200, grant.text
    assert grant.json()["allowed_models"] == []


async def test_the_change_feed_names_revoked_keys_and_changed_users(
    harness: Harness, admin: httpx.AsyncClient, alice: httpx.AsyncClient, gateway_credential: str
) -> None:
    token = gateway_credential
    created = (await mint(alice)).json()
    user_id = created["user_id"]
    async with harness.client(token) as gateway:
        head = (await gateway.get("/api/v1/gateway/key-changes")).json()
        assert head["changes"] == []
        cursor = head["cursor"]
        assert (await alice.delete(f"/api/v1/api-keys/{created['id']}")).status_code == 204
        await admin.patch(f"/api/v1/users/{user_id}", json={"tpm_limit": 100})
        await admin.patch(f"/api/v1/users/{user_id}", json={"full_name": "Alice"})  # no change
        feed = await gateway.get("/api/v1/gateway/key-changes", params={"after": cursor})
        changes = feed.json()["changes"]
        assert [(c["access_key"], c["user_id"]) for c in changes] == [
            (created["access_key"], None),
            (None, user_id),
        ]
        assert feed.json()["cursor"] == changes[-1]["id"]
        ahead = await gateway.get("/api/v1/gateway/key-changes", params={"after": 10**6})
        assert ahead.json()["reset"] is True  # a cursor from another database: start over
        as_user = await alice.get("/api/v1/gateway/key-changes")
        assert as_user.status_code == 403
