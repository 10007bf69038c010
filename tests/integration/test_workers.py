"""Worker registration, heartbeats, liveness and admin actions, on every database
(in process, with a fake clock)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from maasbase.common.hardware import GpuDevice, GpuVendor, HardwareReport, SystemInfo
from maasbase.server.controllers.worker_liveness import WorkerLiveness
from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

GIB = 1024**3


def hardware(gpus: int = 2) -> dict[str, object]:
    """Fake (simulated) hardware of a worker, as the wire contract carries it."""
    report = HardwareReport(
        system=SystemInfo(
            cpu_count=8,
            memory_total=64 * GIB,
            memory_used=GIB,
            disk_total=500 * GIB,
            disk_free=400 * GIB,
            os="Linux 6.1",
            arch="x86_64",
            hostname="node",
        ),
        gpus=[
            GpuDevice(
                index=i,
                vendor=GpuVendor.NVIDIA,
                name="H100",
                uuid=f"SIM-{i}",
                memory_total=80 * GIB,
                memory_used=0,
                simulated=True,
            )
            for i in range(gpus)
        ],
    )
    return report.model_dump(mode="json")


def registration(name: str, gpus: int = 2) -> dict[str, object]:
    return {
        "name": name,
        "labels": {"zone": "a"},
        "hardware": hardware(gpus),
        "address": "127.0.0.1",
        "port": 10150,
    }


@pytest.fixture
def token(harness: Harness) -> str:
    return (Path(harness.settings.data_dir) / "token").read_text().strip()


async def register(harness: Harness, bearer: str, name: str = "w1") -> httpx.Response:
    async with harness.client(bearer) as client:
        return await client.post("/api/v1/workers/register", json=registration(name))


async def heartbeat(harness: Harness, credential: str, gpus: int = 2) -> httpx.Response:
    async with harness.client(credential) as client:
        return await client.post("/api/v1/workers/heartbeat", json={"hardware": hardware(gpus)})


async def test_register_heartbeat_timeout_and_recovery(
    harness: Harness, admin: httpx.AsyncClient, token: str
) -> None:
    response = await register(harness, token)
    assert response.status_code == 200, response.text
    registered = response.json()
    assert registered["state"] == "not_ready"
    credential = registered["credential"]
    assert credential.startswith("mbw_")
    assert credential != token

    assert (await heartbeat(harness, credential)).json()["state"] == "ready"
    worker = (await admin.get(f"/api/v1/workers/{registered['id']}")).json()
    assert worker["state"] == "ready"
    assert worker["simulated"] is True
    assert [g["name"] for g in worker["hardware"]["gpus"]] == ["H100", "H100"]
    gpus = (await admin.get("/api/v1/gpus")).json()
    assert [g["id"] for g in gpus["items"]] == ["w1:nvidia:0", "w1:nvidia:1"]

    liveness = WorkerLiveness(harness.opened.state)
    harness.clock.advance(harness.settings.worker_timeout - 1)
    assert await liveness.reconcile_once() == 0
    harness.clock.advance(2)
    assert await liveness.reconcile_once() == 1
    worker = (await admin.get(f"/api/v1/workers/{registered['id']}")).json()
    assert worker["state"] == "unreachable"
    assert "no heartbeat for 31 s" in worker["state_message"]
    assert await liveness.reconcile_once() == 0

    assert (await heartbeat(harness, credential, gpus=3)).json()["state"] == "ready"
    worker = (await admin.get(f"/api/v1/workers/{registered['id']}")).json()
    assert worker["state"] == "ready"
    assert len(worker["hardware"]["gpus"]) == 3


async def test_reregistration_keeps_the_record(
    harness: Harness, admin: httpx.AsyncClient, token: str
) -> None:
    first = (await register(harness, token)).json()
    await heartbeat(harness, first["credential"])
    harness.clock.advance(1)
    # Restart with the stored credential: same record, same credential.
    again = (await register(harness, first["credential"])).json()
    assert again["id"] == first["id"]
    assert again["credential"] == first["credential"]
    assert again["state"] == "not_ready"
    # The token does not take over a registered name (a lost data dir, or an impostor):
    # the worker keeps its record and credential until an admin deletes it.
    taken = await register(harness, token)
    assert taken.status_code == 409
    message = taken.json()["error"]["message"]
    assert "a worker named 'w1' is already registered" in message
    assert f"DELETE /api/v1/workers/{first['id']}" in message
    assert (await heartbeat(harness, first["credential"])).json()["state"] == "ready"
    assert (await admin.delete(f"/api/v1/workers/{first['id']}")).status_code == 204
    third = (await register(harness, token)).json()
    assert third["credential"] != first["credential"]
    assert third["api_secret"] != first["api_secret"]
    assert third["data_plane_secret"] != first["data_plane_secret"]
    # Two secrets for two purposes: neither opens what the other guards.
    assert first["data_plane_secret"] not in (None, first["api_secret"])
    assert again["data_plane_secret"] == first["data_plane_secret"]
    assert (await heartbeat(harness, first["credential"])).status_code == 401
    assert (await admin.get("/api/v1/workers")).json()["total"] == 1


async def test_wrong_token_and_worker_credential_limits(harness: Harness, token: str) -> None:
    response = await register(harness, "not-the-token")
    assert response.status_code == 401
    assert "wrong registration token" in response.json()["error"]["message"]
    credential = (await register(harness, token)).json()["credential"]
    async with harness.client(credential) as worker:
        for path in ("/api/v1/users", "/api/v1/workers", "/api/v1/users/me", "/metrics"):
            response = await worker.get(path)
            assert response.status_code == 403, path
        response = await worker.post("/api/v1/workers/register", json=registration("other"))
        assert response.status_code == 403
        assert "belongs to worker 'w1'" in response.json()["error"]["message"]
    # The registration token only registers: it is not a worker credential.
    async with harness.client(token) as client:
        response = await client.post("/api/v1/workers/heartbeat", json={"hardware": hardware()})
        assert response.status_code == 403
        message = response.json()["error"]["message"]
        assert "the registration token only registers workers and gateways" in message
        assert "worker credential (mbw_...)" in message


async def test_admin_labels_maintenance_and_delete(
    harness: Harness, admin: httpx.AsyncClient, token: str
) -> None:
    registered = (await register(harness, token)).json()
    credential = registered["credential"]
    await heartbeat(harness, credential)
    url = f"/api/v1/workers/{registered['id']}"
    response = await admin.patch(url, json={"labels": {"gpu": "h100"}, "maintenance": True})
    assert response.status_code == 200
    assert response.json()["state"] == "maintenance"
    assert response.json()["labels"] == {"gpu": "h100"}
    assert (await heartbeat(harness, credential)).json()["state"] == "maintenance"
    response = await admin.patch(url, json={"maintenance": False})
    assert response.json()["state"] == "ready"
    bad = await admin.patch(url, json={"labels": {"bad key!": "x"}})
    assert bad.status_code == 400
    assert "bad label key" in bad.json()["error"]["message"]
    listed = (await admin.get("/api/v1/workers", params={"state": "ready"})).json()
    assert listed["total"] == 1
    assert (await admin.delete(url)).status_code == 204
    response = await heartbeat(harness, credential)
    assert response.status_code == 401
    assert "register again" in response.json()["error"]["message"]
    assert (await admin.get(url)).status_code == 404


async def test_regular_users_cannot_manage_workers(
    harness: Harness, admin: httpx.AsyncClient
) -> None:
    await admin.post("/api/v1/users", json={"username": "u1", "password": "user-password"})
    user = await harness.login("u1", "user-password")
    async with harness.client(user) as client:
        assert (await client.get("/api/v1/workers")).status_code == 403
        assert (await client.get("/api/v1/gpus")).status_code == 403


def test_registration_payload_is_valid_json() -> None:
    json.dumps(registration("w1"))
