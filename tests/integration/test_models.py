"""Models end to end inside the control plane: deploy, schedule, scale, fail, recover,
roll, evaluate and delete, on every database. Workers are simulated (registered over the
API with fake GPUs); their reports are sent by the test; the clock is fake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from maasbase.common.hardware import GpuDevice, GpuVendor, HardwareReport, SystemInfo
from maasbase.server.controllers.models import ModelController
from maasbase.server.controllers.worker_liveness import WorkerLiveness
from tests.integration.conftest import Harness
from tests.support.model_files import LLAMA3_70B, write_llama_folder

pytestmark = pytest.mark.integration

GIB = 1024**3


def hardware(name: str, count: int, gib: int) -> dict[str, Any]:
    """Fake (simulated) GPUs for a worker."""
    return HardwareReport(
        system=SystemInfo(cpu_count=32, memory_total=256 * GIB, memory_used=8 * GIB,
                          disk_total=2000 * GIB, disk_free=1500 * GIB, os="Linux 6.1",
                          arch="x86_64", hostname=name),
        gpus=[GpuDevice(index=i, vendor=GpuVendor.NVIDIA, name=name, uuid=f"SIM-{name}-{i}",
                        memory_total=gib * GIB, memory_used=0, simulated=True)
              for i in range(count)],
    ).model_dump(mode="json")  # fmt: skip


class Cluster:
    """The control plane plus simulated workers that the test drives by hand."""

    def __init__(self, harness: Harness, admin: httpx.AsyncClient) -> None:
        self.harness = harness
        self.admin = admin
        self.controller = ModelController(harness.opened.state)
        self.liveness = WorkerLiveness(harness.opened.state)
        self.credentials: dict[str, str] = {}
        self.hardware: dict[str, dict[str, Any]] = {}
        self.ids: dict[str, int] = {}

    async def add_worker(self, name: str, count: int, gib: int, **labels: str) -> None:
        token = (self.harness.settings.data_dir / "token").read_text().strip()
        self.hardware[name] = hardware(name, count, gib)
        body = {"name": name, "labels": labels, "hardware": self.hardware[name],
                "address": "127.0.0.1", "port": 10150}  # fmt: skip
        async with self.harness.client(token) as client:
            registered = (await client.post("/api/v1/workers/register", json=body)).json()
        self.credentials[name] = registered["credential"]
        self.ids[name] = registered["id"]
        await self.heartbeat(name)

    async def heartbeat(self, name: str) -> None:
        async with self.harness.client(self.credentials[name]) as client:
            response = await client.post(
                "/api/v1/workers/heartbeat", json={"hardware": self.hardware[name]}
            )
            assert response.status_code == 200, response.text

    async def assignments(self, name: str, **params: Any) -> dict[str, Any]:
        async with self.harness.client(self.credentials[name]) as client:
            response = await client.get("/api/v1/workers/assignments", params=params)
            assert response.status_code == 200, response.text
            result: dict[str, Any] = response.json()
            return result

    async def report(self, name: str, instance: dict[str, Any], state: str, **extra: Any) -> None:
        body = {"reports": [{"instance_id": instance["id"], "state": state,
                             "restart_count": instance["restart_count"], **extra}]}  # fmt: skip
        async with self.harness.client(self.credentials[name]) as client:
            response = await client.post("/api/v1/workers/instance-reports", json=body)
            assert response.json() == {"accepted": 1}, response.text

    async def run_all(self, name: str) -> None:
        """The worker reports every instance assigned to it as running."""
        for item in (await self.assignments(name))["instances"]:
            instance = await self.instance(item["instance_id"])
            if instance["state"] != "running":
                await self.report(name, instance, "running", port=40000 + instance["id"])

    async def reconcile(self, rounds: int = 2) -> None:
        for _ in range(rounds):
            await self.controller.reconcile_all()

    async def instances(self, model_id: int) -> list[dict[str, Any]]:
        response = await self.admin.get("/api/v1/model-instances", params={"model_id": model_id})
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def instance(self, instance_id: int) -> dict[str, Any]:
        result: dict[str, Any] = (
            await self.admin.get(f"/api/v1/model-instances/{instance_id}")
        ).json()
        return result


@pytest.fixture
async def cluster(harness: Harness, admin: httpx.AsyncClient) -> Cluster:
    cluster = Cluster(harness, admin)
    await cluster.add_worker("big", 2, 80, zone="a")
    await cluster.add_worker("small", 4, 24, zone="b")
    return cluster


@pytest.fixture(scope="module")
def llama8b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-3-8B-shaped safetensors folder (sparse files: a few KB on disk)."""
    folder = tmp_path_factory.mktemp("llama8b")
    write_llama_folder(folder)
    return folder


@pytest.fixture(scope="module")
def llama70b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llama70b")
    write_llama_folder(folder, LLAMA3_70B, shards=8)
    return folder


def model_body(name: str, path: Path, **extra: Any) -> dict[str, Any]:
    return {"name": name, "source": {"type": "local_path", "path": str(path)},
            "backend": "vllm", **extra}  # fmt: skip


async def test_deploy_scale_and_delete(cluster: Cluster, llama8b: Path) -> None:
    response = await cluster.admin.post(
        "/api/v1/models", json=model_body("llama-8b", llama8b, worker_selector={"zone": "a"})
    )
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["categories"] == ["llm"]
    await cluster.reconcile()
    [instance] = await cluster.instances(model["id"])
    assert instance["state"] == "scheduled", instance["state_message"]
    assert instance["worker_name"] == "big"
    assert instance["gpu_indexes"] in ([0], [1])
    # vLLM claims --gpu-memory-utilization (0.9) of the GPU.
    assert instance["claim"]["gpus"][0]["bytes"] == int(0.9 * 80 * GIB)

    # Scale 1 → 3: only two H100s match the selector, so one replica waits with reasons.
    await cluster.admin.patch(f"/api/v1/models/{model['id']}", json={"replicas": 3})
    await cluster.reconcile()
    instances = await cluster.instances(model["id"])
    states = sorted(i["state"] for i in instances)
    assert states == ["pending", "scheduled", "scheduled"]
    placed = sorted(i["gpu_indexes"][0] for i in instances if i["state"] == "scheduled")
    assert placed == [0, 1]  # never two vLLM instances on one GPU
    waiting = next(i for i in instances if i["state"] == "pending")
    assert "unschedulable" in waiting["state_message"]
    assert "small:" in waiting["state_message"]  # one reason per worker
    assert "zone" in waiting["state_message"]

    # Scale 3 → 1: the waiting one goes first.
    await cluster.admin.patch(f"/api/v1/models/{model['id']}", json={"replicas": 1})
    await cluster.reconcile()
    [left] = await cluster.instances(model["id"])
    assert left["state"] == "scheduled"
    assignments = await cluster.assignments("big")
    assert [a["instance_id"] for a in assignments["instances"]] == [left["id"]]
    assert assignments["instances"][0]["backend"] == "vllm"

    assert (await cluster.admin.delete(f"/api/v1/models/{model['id']}")).status_code == 204
    assert (await cluster.assignments("big"))["instances"] == []
    assert (await cluster.admin.get("/api/v1/model-instances")).json()["total"] == 0


async def test_too_large_model_is_unschedulable_with_reasons(
    cluster: Cluster, llama70b: Path
) -> None:
    # Two 80 GiB GPUs would hold it (tensor parallel 2); the 24 GiB ones cannot.
    body = model_body(
        "llama-70b",
        llama70b,
        backend_parameters=["--max-model-len", "8192"],
        worker_selector={"zone": "b"},
    )
    evaluation = await cluster.admin.post(
        "/api/v1/model-evaluations", json={k: v for k, v in body.items() if k != "name"}
    )
    assert evaluation.status_code == 200, evaluation.text
    result = evaluation.json()
    assert result["schedulable"] is False
    assert set(result["reasons"]) == {"big", "small"}
    assert "zone" in result["reasons"]["big"]
    assert "GiB" in result["reasons"]["small"]
    model = (await cluster.admin.post("/api/v1/models", json=body)).json()
    await cluster.reconcile()
    [instance] = await cluster.instances(model["id"])
    assert instance["state"] == "pending"
    assert "unschedulable" in instance["state_message"]
    assert "small:" in instance["state_message"]


async def test_evaluation_says_where_it_would_go(cluster: Cluster, llama8b: Path) -> None:
    spec = {"source": {"type": "local_path", "path": str(llama8b)}, "backend": "vllm",
            "placement": "binpack"}  # fmt: skip
    result = (await cluster.admin.post("/api/v1/model-evaluations", json=spec)).json()
    assert result["schedulable"] is True, result
    assert result["placement"]["worker_name"] in {"big", "small"}
    assert "KV cache" in result["estimate"]
    assert (await cluster.admin.get("/api/v1/model-instances")).json()["total"] == 0
    missing = {"source": {"type": "local_path", "path": "/nonexistent/model"}, "backend": "vllm"}
    result = (await cluster.admin.post("/api/v1/model-evaluations", json=missing)).json()
    assert result["schedulable"] is False
    assert "does not exist" in result["message"]


async def test_crash_restarts_with_backoff(cluster: Cluster, llama8b: Path) -> None:
    model = (await cluster.admin.post("/api/v1/models", json=model_body("m", llama8b))).json()
    await cluster.reconcile()
    [instance] = await cluster.instances(model["id"])
    worker = instance["worker_name"]
    await cluster.report(worker, instance, "running", port=40001, pid=1234)
    assert (await cluster.instance(instance["id"]))["state"] == "running"

    await cluster.report(worker, instance, "error", message="engine exited with code 1",
                         log_tail="CUDA out of memory")  # fmt: skip
    failed = await cluster.instance(instance["id"])
    assert failed["state"] == "error"
    assert "CUDA out of memory" in failed["state_message"]
    assert failed["next_restart_at"] is not None
    await cluster.reconcile()
    assert (await cluster.instance(instance["id"]))["state"] == "error"  # backoff not over
    cluster.harness.clock.advance(3)
    await cluster.reconcile()
    restarted = await cluster.instance(instance["id"])
    assert restarted["state"] == "scheduled"
    assert restarted["restart_count"] == 1
    assignment = (await cluster.assignments(worker))["instances"][0]
    assert assignment["restart_count"] == 1


async def test_worker_loss_reschedules_after_grace(cluster: Cluster, llama8b: Path) -> None:
    body = model_body("m", llama8b, backend_parameters=["--max-model-len", "4096"])
    model = (await cluster.admin.post("/api/v1/models", json=body)).json()
    await cluster.reconcile()
    [instance] = await cluster.instances(model["id"])
    first = instance["worker_name"]
    other = "small" if first == "big" else "big"
    await cluster.report(first, instance, "running", port=40001)

    settings = cluster.harness.settings
    cluster.harness.clock.advance(settings.worker_timeout + 1)
    await cluster.heartbeat(other)  # only the other worker is alive
    await cluster.liveness.reconcile_once()
    await cluster.reconcile()
    lost = await cluster.instance(instance["id"])
    assert lost["state"] == "unreachable"
    assert first in lost["state_message"]

    cluster.harness.clock.advance(settings.reschedule_grace + 1)
    await cluster.heartbeat(other)
    await cluster.reconcile(rounds=3)
    moved = await cluster.instance(instance["id"])
    assert moved["state"] == "scheduled", moved["state_message"]
    assert moved["worker_name"] == other


async def test_rolling_update_keeps_serving(cluster: Cluster, llama8b: Path) -> None:
    body = model_body("m", llama8b, replicas=2, backend_parameters=["--max-model-len", "4096"])
    model = (await cluster.admin.post("/api/v1/models", json=body)).json()
    await cluster.reconcile()
    for name in ("big", "small"):
        await cluster.run_all(name)
    old = {i["id"] for i in await cluster.instances(model["id"])}
    assert len(old) == 2

    await cluster.admin.patch(
        f"/api/v1/models/{model['id']}", json={"backend_parameters": ["--max-model-len", "2048"]}
    )
    history: list[tuple[int, int]] = []  # (running old, running new) after each step
    for _ in range(8):
        await cluster.reconcile()
        instances = await cluster.instances(model["id"])
        running_old = sum(1 for i in instances if i["id"] in old and i["state"] == "running")
        running_new = sum(1 for i in instances if i["id"] not in old and i["state"] == "running")
        assert running_old + running_new >= 2, instances  # never below the ready count
        history.append((running_old, running_new))
        if running_new == 2 and running_old == 0:
            break
        for name in ("big", "small"):
            await cluster.run_all(name)
    assert history[-1] == (0, 2), history
    assert all(not i["outdated"] for i in await cluster.instances(model["id"]))


async def test_assignment_watch_wakes_on_change(cluster: Cluster, llama8b: Path) -> None:
    first = await cluster.assignments("big")
    same = await cluster.assignments("big", revision=first["revision"], wait=0)
    assert same["revision"] == first["revision"]
    await cluster.admin.post(
        "/api/v1/models", json=model_body("m", llama8b, worker_selector={"zone": "a"})
    )
    await cluster.reconcile()
    changed = await cluster.assignments("big", revision=first["revision"], wait=5)
    assert changed["revision"] != first["revision"]
    assert len(changed["instances"]) == 1


async def test_model_validation(cluster: Cluster, llama8b: Path) -> None:
    bad = [
        ({"name": "x", "source": {"type": "huggingface"}}, "repo_id"),
        ({"name": "bad name!", "source": {"type": "local_path", "path": "/x"}}, "name"),
        (model_body("x", llama8b, gpu_selector=["big"]), "worker name"),
        (model_body("x", llama8b, replicas=-1), "replicas"),
    ]
    for body, hint in bad:
        response = await cluster.admin.post("/api/v1/models", json=body)
        assert response.status_code == 400, (body, response.text)
        assert hint in response.json()["error"]["message"]
    await cluster.admin.post("/api/v1/models", json=model_body("dup", llama8b))
    response = await cluster.admin.post("/api/v1/models", json=model_body("dup", llama8b))
    assert response.status_code == 409


async def test_regular_users_read_models_but_cannot_change_or_probe(
    cluster: Cluster, llama8b: Path
) -> None:
    await cluster.admin.post("/api/v1/models", json=model_body("m", llama8b, replicas=0))
    await cluster.admin.post("/api/v1/users", json={"username": "u", "password": "user-password"})
    token = await cluster.harness.login("u", "user-password")
    async with cluster.harness.client(token) as user:
        assert (await user.get("/api/v1/models")).json()["total"] == 1
        spec = {"source": {"type": "local_path", "path": "/etc"}, "backend": "vllm"}
        assert (await user.post("/api/v1/model-evaluations", json=spec)).status_code == 403
        assert (await user.post("/api/v1/models", json=model_body("x", llama8b))).status_code == 403
        assert (await user.get("/api/v1/model-instances/1/logs")).status_code == 403
