"""Provider API keys are encrypted at rest, on every database: the row holds ciphertext,
gateways receive the real key, old plain rows are encrypted at start, and a changed
secret key costs the provider its key, not the control plane its routing table."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import text

from maasbase.common.config import Settings
from maasbase.common.routing import RoutingTable
from maasbase.server import routing_table
from maasbase.server.bootstrap import SECRET_KEY_FILE
from maasbase.server.db.tables import Provider
from maasbase.server.runtime import close_server, open_server
from maasbase.server.security import secret_box
from maasbase.server.state import ServerState
from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


@asynccontextmanager
async def started(settings: Settings, db_url: str) -> AsyncIterator[ServerState]:
    opened = await open_server(settings, db_url)
    try:
        yield opened.state
    finally:
        await close_server(opened.state)


async def stored_keys(state: ServerState) -> dict[str, str | None]:
    async with state.engine.connect() as connection:
        rows = await connection.execute(text("SELECT name, api_key FROM providers"))
        return {row.name: row.api_key for row in rows}


async def add_plain_provider(state: ServerState, name: str, api_key: str) -> None:
    """A row as an older version wrote it: the key in plain text."""
    async with state.sessions() as session:
        session.add(
            Provider(name=name, base_url="http://127.0.0.1:9/v1", api_key=api_key, models=[name])
        )
        await session.commit()


async def encrypted_provider(settings: Settings, db_url: str, name: str, api_key: str) -> None:
    """A provider whose key the next start encrypts with the secret key of that moment."""
    async with started(settings, db_url) as state:
        await add_plain_provider(state, name, api_key)


async def upstream_keys(state: ServerState) -> dict[str, str | None]:
    table: RoutingTable = await routing_table.watch(state, None, 0)
    return {m.name: m.upstreams[0].api_key for m in table.models}


async def test_key_is_stored_encrypted_and_sent_to_gateways_in_clear(
    harness: Harness, admin: httpx.AsyncClient, gateway_credential: str
) -> None:
    created = await admin.post(
        "/api/v1/providers",
        json={
            "name": "cloud",
            "base_url": "https://api.example.com/v1",
            "api_key": "sk-live-0123456789",
            "models": ["cloud-model"],
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["has_api_key"] is True
    listed = await admin.get("/api/v1/providers")
    assert "sk-live" not in created.text + listed.text

    state = harness.opened.state
    stored = (await stored_keys(state))["cloud"]
    assert stored is not None
    assert stored.startswith("fernet:")
    assert "sk-live-0123456789" not in stored

    async with harness.client(gateway_credential) as gateway:
        routes = (await gateway.get("/api/v1/gateway/routes")).json()
    [model] = routes["models"]
    assert model["upstreams"][0]["api_key"] == "sk-live-0123456789"


async def test_plain_keys_of_an_older_version_are_encrypted_at_start(
    db_url: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with started(settings, db_url) as state:
        await add_plain_provider(state, "legacy", "sk-legacy-key")
        await add_plain_provider(state, "keyless", "")
    with caplog.at_level(logging.INFO, logger="maasbase.server.bootstrap"):
        async with started(settings, db_url) as state:
            stored = await stored_keys(state)
            assert stored["legacy"] is not None
            assert stored["legacy"].startswith("fernet:")
            assert stored["keyless"] == ""
            assert (await upstream_keys(state))["legacy"] == "sk-legacy-key"
    assert "encrypted the stored API keys of 1 provider(s)" in caplog.text
    assert "sk-legacy-key" not in caplog.text


async def test_changed_secret_key_drops_the_provider_key_with_a_clear_log(
    db_url: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await encrypted_provider(settings, db_url, "cloud", "sk-cloud")
    async with started(settings, db_url) as state:
        await add_plain_provider(state, "fresh", "sk-fresh")
    key_file = settings.data_dir / SECRET_KEY_FILE
    key_file.write_text(secret_box.generate_key() + "\n")  # the key file was replaced

    with caplog.at_level(logging.ERROR, logger="maasbase.server.routing_table"):
        async with started(settings, db_url) as state:
            # "fresh" was still plain, so it was encrypted with the new key and works.
            assert await upstream_keys(state) == {"cloud": None, "fresh": "sk-fresh"}
            await upstream_keys(state)  # logged once, not on every rebuild
    [record] = caplog.records
    assert "provider 'cloud'" in record.getMessage()
    assert "secret key changed" in record.getMessage()
    assert str(key_file) in record.getMessage()


async def test_rotation_reencrypts_with_the_new_key_at_start(
    db_url: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await encrypted_provider(settings, db_url, "cloud", "sk-cloud")
    async with started(settings, db_url) as state:
        under_old = (await stored_keys(state))["cloud"]
    key_file = settings.data_dir / SECRET_KEY_FILE
    old_key, new_key = key_file.read_text().strip(), secret_box.generate_key()
    key_file.write_text(f"{new_key}\n{old_key}\n")  # the new key first, the old one after

    with caplog.at_level(logging.INFO, logger="maasbase.server.bootstrap"):
        async with started(settings, db_url) as state:
            rotated = (await stored_keys(state))["cloud"]
            assert (await upstream_keys(state))["cloud"] == "sk-cloud"
    assert rotated is not None
    assert rotated != under_old
    assert secret_box.SecretBox(new_key, source="test").decrypt(rotated) == "sk-cloud"
    assert "re-encrypted the API keys of 1 provider(s)" in caplog.text

    key_file.write_text(new_key + "\n")  # the old key is no longer needed
    async with started(settings, db_url) as state:
        assert (await upstream_keys(state))["cloud"] == "sk-cloud"
