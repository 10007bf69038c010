"""The control plane's side of the gateway: routing table watch, key checks, usage
ingest and aggregates, providers and per-key limits, on every database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from maasbase.server.controllers.models import ModelController
from maasbase.server.db import workers as workers_db
from maasbase.server.security.worker_secrets import data_plane_secret
from tests.integration.conftest import Harness
from tests.integration.test_models import Cluster
from tests.support.model_files import write_tiny_gguf

pytestmark = pytest.mark.integration


async def routes(harness: Harness, token: str, **params: Any) -> dict[str, Any]:
    async with harness.client(token) as gateway:
        response = await gateway.get("/api/v1/gateway/routes", params=params)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


async def test_routing_table_follows_instances_and_providers(
    harness: Harness, admin: httpx.AsyncClient, gateway_credential: str, tmp_path: Path
) -> None:
    empty = await routes(harness, gateway_credential)
    assert empty["models"] == []

    cluster = Cluster(harness, admin)
    await cluster.add_worker("cpu-node", 0, 0)
    model_file = write_tiny_gguf(tmp_path / "tiny.gguf")
    model = (
        await admin.post(
            "/api/v1/models",
            json={
                "name": "tiny",
                "source": {"type": "local_path", "path": str(model_file)},
            },
        )
    ).json()
    await ModelController(harness.opened.state).reconcile_all()
    table = await routes(harness, gateway_credential)
    [routed] = table["models"]
    assert routed["name"] == "tiny"
    assert routed["upstreams"] == []  # not running yet: the gateway answers 503

    [instance] = await cluster.instances(model["id"])
    await cluster.report("cpu-node", instance, "running", port=40100, context_length=2048)
    changed = await routes(harness, gateway_credential, revision=table["revision"], wait=5)
    assert changed["revision"] != table["revision"]
    assert changed["models"][0]["context_length"] == 2048  # as the engine reported it
    [shown] = await cluster.instances(model["id"])
    assert shown["context_length"] == 2048
    [upstream] = changed["models"][0]["upstreams"]
    # Through the worker's data-plane proxy (port 10150), never to the engine's port.
    assert upstream["base_url"] == f"http://127.0.0.1:10150/proxy/instances/{instance['id']}/v1"
    assert upstream["id"] == f"instance:{instance['id']}"
    state = harness.opened.state
    async with state.sessions() as session:
        worker = await workers_db.get(session, cluster.ids["cpu-node"])
    assert worker is not None
    assert upstream["api_key"] == data_plane_secret(
        state.worker_secret_key, worker.id, worker.credential_access
    )
    assert upstream["anthropic_messages"] is True  # llama.cpp serves /v1/messages itself

    provider = await admin.post(
        "/api/v1/providers",
        json={
            "name": "stub",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": "sk-upstream",
            "models": ["stub-model", "tiny"],
        },
    )
    assert provider.status_code == 201, provider.text
    assert provider.json()["has_api_key"] is True
    assert "sk-upstream" not in provider.text
    models = {m["name"]: m for m in (await routes(harness, gateway_credential))["models"]}
    assert models["stub-model"]["kind"] == "provider"
    assert models["stub-model"]["upstreams"][0]["api_key"] == "sk-upstream"
    assert models["tiny"]["kind"] == "deployment"  # the deployment wins a name clash

    # Only gateways may read routes; gateways may not use the management API.
    assert (await admin.get("/api/v1/gateway/routes")).status_code == 403
    async with harness.client(gateway_credential) as gateway:
        assert (await gateway.get("/api/v1/users")).status_code == 403


async def test_key_checks_usage_and_limits(
    harness: Harness, admin: httpx.AsyncClient, gateway_credential: str
) -> None:
    created = await admin.post(
        "/api/v1/api-keys",
        json={
            "name": "app",
            "scope": "inference",
            "allowed_models": ["tiny"],
            "rpm_limit": 60,
        },
    )
    assert created.status_code == 201, created.text
    key = created.json()
    async with harness.client(gateway_credential) as gateway:
        grant = (await gateway.post("/api/v1/gateway/keys/check", json={"key": key["key"]})).json()
        assert grant["api_key_id"] == key["id"]
        assert grant["scope"] == "inference"
        assert grant["allowed_models"] == ["tiny"]
        assert grant["limits"]["requests_per_minute"] == 60
        bad = await gateway.post("/api/v1/gateway/keys/check", json={"key": "mb_nope_nope"})
        assert bad.status_code == 401

        now = datetime.fromtimestamp(harness.clock.now(), UTC)  # mid-month on the fake clock
        records = [
            {
                "time": (now - timedelta(days=d)).isoformat(),
                "api_key_id": key["id"],
                "user_id": 1,
                "model": model,
                "endpoint": "chat.completions",
                "status": status,
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "latency_ms": 12.5,
            }
            for d, model, status in [(0, "tiny", 200), (0, "tiny", 200), (1, "big", 500)]
        ]
        accepted = await gateway.post("/api/v1/gateway/usage", json={"records": records})
        assert accepted.status_code == 202

    # The grant carries the tokens already used this period, for quotas across restarts.
    await admin.patch(f"/api/v1/api-keys/{key['id']}", json={"token_quota": 10_000})
    async with harness.client(gateway_credential) as gateway:
        grant = (await gateway.post("/api/v1/gateway/keys/check", json={"key": key["key"]})).json()
    assert grant["limits"]["token_quota"] == 10_000
    assert grant["limits"]["quota_used"] == 45  # all three records fall in this month

    by_model = (await admin.get("/api/v1/usage", params={"group_by": "model"})).json()
    rows = {r["model"]: r for r in by_model["items"]}
    assert rows["tiny"]["requests"] == 2
    assert rows["tiny"]["total_tokens"] == 30
    assert rows["big"]["errors"] == 1
    by_day = (await admin.get("/api/v1/usage", params={"group_by": "day,key"})).json()
    assert sum(r["requests"] for r in by_day["items"]) == 3
    assert len(by_day["items"]) == 2
    bad = await admin.get("/api/v1/usage", params={"group_by": "colour"})
    assert bad.status_code == 400

    # Admins change limits; a regular user sees only their own (empty) usage.
    limited = await admin.patch(
        f"/api/v1/api-keys/{key['id']}", json={"tpm_limit": 1000, "rpm_limit": None}
    )
    assert limited.status_code == 200
    assert limited.json()["tpm_limit"] == 1000
    assert limited.json()["rpm_limit"] is None
    await admin.post("/api/v1/users", json={"username": "u2", "password": "user-password"})
    user = await harness.login("u2", "user-password")
    async with harness.client(user) as client:
        assert (await client.get("/api/v1/usage")).json()["items"] == []
        response = await client.patch(f"/api/v1/api-keys/{key['id']}", json={"tpm_limit": 1})
        assert response.status_code == 403
