"""User-defined backends and the model catalog through the API, on every database."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

ECHO_BACKEND = {
    "name": "my-engine",
    "description": "An in-house OpenAI-compatible server.",
    "categories": ["llm"],
    "supported_vendors": ["nvidia", "cpu"],
    "default_version": "1.0",
    "versions": {"1.0": {"image": "registry.example/my-engine:1.0"}},
    "executable": ["my-engine-server"],
    "command": ["--model", "{model_path}", "--host", "{host}", "--port", "{port}",
                "--name", "{model_name}"],
    "reserved_flags": ["--model", "--host", "--port", "--name"],
    "health_path": "/health",
}  # fmt: skip


async def test_builtin_and_user_defined_backends(
    harness: Harness, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    listed = (await admin.get("/api/v1/backends")).json()
    names = {b["name"] for b in listed["items"]}
    assert {"vllm", "sglang", "llama.cpp", "vox-box", "mindie", "tensorrt-llm", "custom"} <= names
    assert all(b["builtin"] for b in listed["items"])

    bad = {**ECHO_BACKEND, "command": ["--model", "{model_file}"]}
    response = await admin.post("/api/v1/backends", json=bad)
    assert response.status_code == 400
    assert "model_file" in response.json()["error"]["message"]

    response = await admin.post("/api/v1/backends", json=ECHO_BACKEND)
    assert response.status_code == 201, response.text
    assert response.json()["builtin"] is False
    assert (await admin.post("/api/v1/backends", json=ECHO_BACKEND)).status_code == 409
    builtin = await admin.post("/api/v1/backends", json={**ECHO_BACKEND, "name": "vllm"})
    assert builtin.status_code == 409

    # A model on it: workers receive the full definition with the assignment.
    model_file = tmp_path / "m.gguf"
    model_file.write_bytes(b"")
    response = await admin.post("/api/v1/models", json={
        "name": "in-house", "backend": "my-engine", "replicas": 0,
        "source": {"type": "local_path", "path": str(model_file)},
    })  # fmt: skip
    assert response.status_code == 201, response.text
    unknown = await admin.post("/api/v1/models", json={
        "name": "typo", "backend": "vlm", "source": {"type": "local_path", "path": "/x"},
    })  # fmt: skip
    assert unknown.status_code == 400
    assert "Did you mean 'vllm'" in unknown.json()["error"]["message"]

    in_use = await admin.delete("/api/v1/backends/my-engine")
    assert in_use.status_code == 409
    model_id = response.json()["id"]
    assert (await admin.delete(f"/api/v1/models/{model_id}")).status_code == 204
    assert (await admin.delete("/api/v1/backends/my-engine")).status_code == 204
    assert (await admin.delete("/api/v1/backends/vllm")).status_code == 400
    assert (await admin.get("/api/v1/backends/my-engine")).status_code == 404


async def test_catalog_lists_and_deploys(harness: Harness, admin: httpx.AsyncClient) -> None:
    catalog = (await admin.get("/api/v1/catalog")).json()
    entries = {e["name"]: e for e in catalog["items"]}
    assert "smollm2-135m-instruct" in entries
    assert "all-minilm-l6-v2" in entries
    assert entries["all-minilm-l6-v2"]["categories"] == ["embedding"]
    response = await admin.post(
        "/api/v1/catalog/smollm2-135m-instruct/deploy", json={"name": "chat", "replicas": 0}
    )
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["backend"] == "llama.cpp"
    if entries["smollm2-135m-instruct"]["available_offline"]:
        assert model["source"]["type"] == "local_path"
        assert model["source"]["path"].endswith(".gguf")
    missing = await admin.post("/api/v1/catalog/no-such-model/deploy", json={})
    assert missing.status_code == 404
    assert "smollm2-135m-instruct" in missing.json()["error"]["message"]
