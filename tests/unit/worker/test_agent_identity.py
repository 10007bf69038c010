"""Which stored identity a worker re-attaches with: a worker joining another server
address registers anew, while the worker inside ``maas-base start`` keeps its identity
when the server's port or host changes (a worker name is registered only once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from maasbase.worker import identity as identity_store
from maasbase.worker.agent import WorkerAgent, WorkerConfig


@pytest.mark.parametrize(("local", "kept"), [(True, True), (False, False)])
async def test_stored_identity_for_another_server_address(
    tmp_path: Path, local: bool, kept: bool
) -> None:
    stored = identity_store.WorkerIdentity(
        server_url="http://127.0.0.1:8080",
        worker_id=4,
        name="node",
        credential="mbw_0123456789abcdef_secret",
        api_secret="api-secret",
    )
    config = WorkerConfig(
        server_url="http://127.0.0.1:9090", data_dir=tmp_path, name="node", token=None,
        local=local,
    )  # fmt: skip
    identity_store.save(config.worker_dir, stored)
    agent = WorkerAgent(config)
    try:
        assert (agent.identity == stored) is kept
    finally:
        await agent.client.aclose()
