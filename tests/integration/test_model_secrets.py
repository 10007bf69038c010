"""A model's secret environment variables, on every database: write-only in the API,
encrypted in the row, delivered in clear only to the worker that runs the instance."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from maasbase.common.config import Settings
from maasbase.server.db.tables import Model
from maasbase.server.runtime import close_server, open_server
from maasbase.server.state import ServerState
from tests.integration.conftest import Harness
from tests.integration.test_models import Cluster, model_body
from tests.support.model_files import write_llama_folder

pytestmark = pytest.mark.integration

SECRET = "hf_x_very_secret_value"


@pytest.fixture
async def cluster(harness: Harness, admin: httpx.AsyncClient) -> Cluster:
    cluster = Cluster(harness, admin)
    await cluster.add_worker("big", 2, 80, zone="a")
    await cluster.add_worker("small", 4, 24, zone="b")
    return cluster


@pytest.fixture(scope="module")
def llama8b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llama8b")
    write_llama_folder(folder)
    return folder


async def stored_rows(state: ServerState) -> list[str]:
    """Every model row as the database holds it, each column as text."""
    async with state.engine.connect() as connection:
        rows = await connection.execute(text("SELECT * FROM models"))
        return [" ".join(str(value) for value in row) for row in rows]


async def env_of_assignment(cluster: Cluster, worker: str) -> dict[str, str]:
    [assignment] = (await cluster.assignments(worker))["instances"]
    env: dict[str, str] = assignment["env"]
    return env


async def test_secret_env_never_leaves_the_server_except_to_its_worker(
    cluster: Cluster, llama8b: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = model_body(
        "gated", llama8b, worker_selector={"zone": "a"},
        env={"HF_TOKEN": SECRET, "LOG_LEVEL": "debug"},
    )  # fmt: skip
    created = await cluster.admin.post("/api/v1/models", json=body)
    assert created.status_code == 201, created.text
    model = created.json()
    assert model["env"] == {"LOG_LEVEL": "debug"}
    assert model["secret_env"] == ["HF_TOKEN"]
    url = f"/api/v1/models/{model['id']}"

    await cluster.admin.post("/api/v1/users", json={"username": "u", "password": "user-password"})
    token = await cluster.harness.login("u", "user-password")
    async with cluster.harness.client(token) as user:
        for client in (cluster.admin, user):
            for path in (url, "/api/v1/models", "/api/v1/models?search=gated"):
                response = await client.get(path)
                assert response.status_code == 200
                assert SECRET not in response.text
            assert (await client.get(url)).json()["secret_env"] == ["HF_TOKEN"]
    assert not [row for row in await stored_rows(cluster.harness.opened.state) if SECRET in row]

    # Only the worker that runs the instance receives the value.
    await cluster.reconcile()
    assert await env_of_assignment(cluster, "big") == {"HF_TOKEN": SECRET, "LOG_LEVEL": "debug"}
    assert SECRET not in str(await cluster.assignments("small"))

    # A merge patch: the secret stays without being sent again.
    updated = await cluster.admin.patch(url, json={"env": {"LOG_LEVEL": "info"}})
    assert updated.status_code == 200, updated.text
    assert SECRET not in updated.text
    assert updated.json()["env"] == {"LOG_LEVEL": "info"}
    assert updated.json()["secret_env"] == ["HF_TOKEN"]
    await cluster.reconcile()
    assert (await env_of_assignment(cluster, "big"))["HF_TOKEN"] == SECRET

    # A new value replaces it and rolls the instance; null removes it.
    before = (await cluster.admin.get(url)).json()
    assert (await cluster.admin.patch(url, json={"env": {"HF_TOKEN": "hf_new"}})).status_code == 200
    [instance] = await cluster.instances(model["id"])
    assert instance["outdated"] is True
    assert "hf_new" not in str(await cluster.admin.get(url))
    removed = await cluster.admin.patch(url, json={"env": {"HF_TOKEN": None}})
    assert removed.json()["secret_env"] == []
    assert removed.json()["env"] == before["env"]
    assert "hf_" not in caplog.text


async def test_marking_variables_secret(cluster: Cluster, llama8b: Path) -> None:
    body = model_body("marked", llama8b, env={"ORG": "org-7", "A": "1"}, secret_env=["ORG"])
    model = (await cluster.admin.post("/api/v1/models", json=body)).json()
    assert (model["env"], model["secret_env"]) == ({"A": "1"}, ["ORG"])
    url = f"/api/v1/models/{model['id']}"
    # A stored plain variable becomes secret; a name with no value is refused.
    patched = await cluster.admin.patch(url, json={"secret_env": ["A"]})
    assert (patched.json()["env"], patched.json()["secret_env"]) == ({}, ["A", "ORG"])
    stored = await stored_rows(cluster.harness.opened.state)
    assert not [row for row in stored if "org-7" in row]
    for bad in (
        {"secret_env": ["NOPE"]},
        {"env": {"bad name": "x"}},
    ):
        response = await cluster.admin.patch(url, json=bad)
        assert response.status_code == 400, response.text
    missing = await cluster.admin.post(
        "/api/v1/models", json=model_body("m2", llama8b, env={}, secret_env=["NOPE"])
    )
    assert missing.status_code == 400
    assert "secret_env names NOPE" in missing.json()["error"]["message"]


async def test_plain_secrets_from_an_older_version_are_encrypted_at_start(
    db_url: str, settings: Settings, llama8b: Path
) -> None:
    opened = await open_server(settings, db_url)
    try:
        old = Model(
            name="old", source={"type": "local_path", "path": str(llama8b)}, backend="vllm",
            env={"HF_TOKEN": SECRET, "LOG_LEVEL": "debug"}, spec_hash="0" * 64,
        )  # fmt: skip
        async with opened.state.sessions() as session:
            session.add(old)
            await session.commit()
    finally:
        await close_server(opened.state)

    opened = await open_server(settings, db_url)
    try:
        assert not [row for row in await stored_rows(opened.state) if SECRET in row]
        async with opened.state.sessions() as session:
            [model] = (await session.execute(text("SELECT id FROM models"))).all()
            row = await session.get(Model, model.id)
            assert row is not None
            assert row.env == {"LOG_LEVEL": "debug"}
            assert list(row.secret_env or {}) == ["HF_TOKEN"]
            assert opened.state.secret_box.decrypt((row.secret_env or {})["HF_TOKEN"]) == SECRET
            assert row.spec_hash == "0" * 64  # running instances are not rolled
    finally:
        await close_server(opened.state)
