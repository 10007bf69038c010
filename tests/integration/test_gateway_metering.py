"""Metering cannot be poisoned, and quotas hold across restarts: usage batches checked
record by record on every database, the control plane's own gateway in front of a
stub upstream, restarted on the same database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from maasbase.common.clock import FakeClock
from maasbase.common.config import Settings
from maasbase.common.routing import MAX_TOKENS, UNKNOWN_MODEL, UsageRecord
from maasbase.gateway.app import GatewayApp, create_gateway_app
from maasbase.gateway.testing import StubUpstream, serving
from maasbase.server import usage_ingest
from maasbase.server.app import create_app
from maasbase.server.gateway_link import LocalKeys, LocalRoutes, LocalUsage
from maasbase.server.runtime import Opened, close_server, open_server
from tests.integration.conftest import ADMIN_PASSWORD, Harness

pytestmark = pytest.mark.integration

CHAT = [{"role": "user", "content": "hi"}]


async def create_key(admin: httpx.AsyncClient, name: str, **limits: Any) -> dict[str, Any]:
    created = await admin.post(
        "/api/v1/api-keys", json={"name": name, "scope": "inference", **limits}
    )
    assert created.status_code == 201, created.text
    key: dict[str, Any] = created.json()
    return key


async def test_a_batch_with_bad_records_stores_the_good_ones(
    harness: Harness, admin: httpx.AsyncClient, gateway_credential: str
) -> None:
    key = await create_key(admin, "app")
    other = await create_key(admin, "other")
    owner = key["user_id"]
    now = datetime.fromtimestamp(harness.clock.now(), UTC)

    def record(**fields: Any) -> dict[str, Any]:
        return {
            "time": now.isoformat(),
            "api_key_id": key["id"],
            "user_id": owner,
            "model": "m",
            "endpoint": "chat.completions",
            "status": 200,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "latency_ms": 3.5,
        } | fields

    batch: list[Any] = [
        record(),
        record(prompt_tokens=-995_754),
        record(completion_tokens=2**63),
        record(model="x" * 129),
        record(model="bad\x00name"),
        record(api_key_id=10**6),  # no such key
        record(user_id=owner + 1),  # not the key's owner
        record(api_key_id=None),  # a user without a key
        record(api_key_id=None, user_id=None, status=401, prompt_tokens=0, completion_tokens=0),
        record(time=(now + timedelta(days=400)).isoformat()),
        "not an object",
        record(api_key_id=other["id"], completion_tokens=MAX_TOKENS),
    ]
    token = gateway_credential
    async with harness.client(token) as gateway:
        answer = await gateway.post("/api/v1/gateway/usage", json={"records": batch})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    print(body)
    assert body["stored"] == 3
    reasons = {item["index"]: item["reason"] for item in body["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7, 9, 10]
    assert reasons[1].startswith("prompt_tokens:")
    assert reasons[3].startswith("model:")
    assert "does not exist" in reasons[5]
    assert "does not belong" in reasons[6]
    assert "x" * 20 not in reasons[3]  # reasons never echo what was sent

    by_key = (await admin.get("/api/v1/usage", params={"group_by": "key"})).json()["items"]
    totals = {row["key"]: (row["requests"], row["total_tokens"]) for row in by_key}
    assert totals == {key["id"]: (1, 15), other["id"]: (1, 10 + MAX_TOKENS), None: (1, 0)}

    # The next batch is stored as usual: nothing was left behind to fail it.
    async with harness.client(token) as gateway:
        answer = await gateway.post("/api/v1/gateway/usage", json={"records": [record()]})
    assert answer.json() == {"stored": 1, "rejected": []}


async def test_rows_the_database_refuses_do_not_fail_the_others(
    harness: Harness, admin: httpx.AsyncClient, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a record pass the checks and still be refused by the database, the other
    records are stored one by one."""
    key = await create_key(admin, "app")
    now = datetime.fromtimestamp(harness.clock.now(), UTC)
    rows = [
        {
            "time": now,
            "api_key_id": key["id"],
            "user_id": key["user_id"],
            "model": model,
            "endpoint": "chat.completions",
            "status": 200,
            "prompt_tokens": 1,
        }
        for model in ("a", "b" * 300, "c")
    ]

    def unchecked(raw: Sequence[Any]) -> tuple[list[tuple[int, UsageRecord]], list[Any]]:
        return [(i, UsageRecord.model_construct(**item)) for i, item in enumerate(raw)], []

    monkeypatch.setattr(usage_ingest, "parse", unchecked)
    async with harness.opened.state.sessions() as session:
        answer = await usage_ingest.store(session, rows, now=now)
    print(answer)
    if db_url.startswith("sqlite"):  # SQLite stores text of any length
        assert answer.stored == 3
    else:
        assert answer.stored == 2
        [rejected] = answer.rejected
        assert rejected.index == 1
        assert rejected.reason.startswith("the database refused it")
    by_model = (await admin.get("/api/v1/usage", params={"group_by": "model"})).json()["items"]
    assert {"a", "c"} <= {row["model"] for row in by_model}


class WildCounts(StubUpstream):
    """An upstream that reports a negative and an enormous token count."""

    def _usage(self) -> dict[str, int]:
        return {"prompt_tokens": -1000, "completion_tokens": 2**63, "total_tokens": 0}


@asynccontextmanager
async def admin_client(opened: Opened) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(opened.state, run_controllers=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://maas.test"
    ) as http:
        login = await http.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        yield http


@asynccontextmanager
async def control_plane(
    settings: Settings, db_url: str, clock: FakeClock
) -> AsyncIterator[tuple[Opened, GatewayApp, str]]:
    """A control plane and its own gateway (as ``maas-base start`` runs them), stopped
    gracefully at the end."""
    opened = await open_server(settings, db_url, clock=clock)
    try:
        gateway = create_gateway_app(
            routes=LocalRoutes(opened.state),
            keys=LocalKeys(opened.state),
            usage=LocalUsage(opened.state),
            clock=clock,
        )
        async with serving(gateway) as url:
            yield opened, gateway, url
    finally:
        await close_server(opened.state)


async def chat(url: str, key: str, model: str = "m") -> int:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{url}/v1/chat/completions",
            json={"model": model, "messages": CHAT},
            headers={"Authorization": f"Bearer {key}"},
        )
    return response.status_code


async def test_a_spent_quota_stays_spent_across_restarts(db_url: str, settings: Settings) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    upstream = WildCounts()
    await upstream.start()
    try:
        async with control_plane(settings, db_url, clock) as (opened, gateway, url):
            async with admin_client(opened) as admin:
                provider = await admin.post(
                    "/api/v1/providers",
                    json={"name": "stub", "base_url": upstream.base_url, "models": ["m"]},
                )
                assert provider.status_code == 201, provider.text
                key = await create_key(admin, "app", token_quota=100, quota_period="day")
            for _ in range(100):  # the provider's route arrives through the watch
                if "m" in gateway.holder.snapshot.models:
                    break
                await asyncio.sleep(0.05)
            # A model name of 1 MiB: a 404, metered without the name.
            assert await chat(url, key["key"], "z" * 2**20) == 404
            statuses = [await chat(url, key["key"]) for _ in range(3)]
        print("before the restart:", statuses)
        assert statuses == [200, 429, 429]

        async with control_plane(settings, db_url, clock) as (opened, gateway, url):
            statuses = [await chat(url, key["key"]) for _ in range(3)]
            print("after the restart:", statuses)
            assert statuses == [429, 429, 429]
            assert upstream.count == 1
        # Stopped: what its gateway metered is stored (once).
        async with (
            control_plane(settings, db_url, clock) as (opened, _, _),
            admin_client(opened) as admin,
        ):
            usage = await admin.get("/api/v1/usage", params={"group_by": "model"})
        rows = {row["model"]: row for row in usage.json()["items"]}
        assert rows[UNKNOWN_MODEL]["requests"] == 1
        assert rows[UNKNOWN_MODEL]["errors"] == 1
        assert rows["m"]["requests"] == 6  # one served, five refused by the quota
        assert rows["m"]["total_tokens"] == MAX_TOKENS  # the upstream's counts, bounded
    finally:
        await upstream.aclose()
