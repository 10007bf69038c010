"""Login throttling counts the address the server can trust: the socket's, or the
X-Forwarded-For address only when the peer is a configured trusted proxy."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import Harness
from tests.support.api_fuzz import serve

pytestmark = pytest.mark.integration


async def _wrong_logins(base_url: str, forwarded_for: list[str]) -> list[int]:
    statuses = []
    async with httpx.AsyncClient(base_url=base_url) as client:
        for address in forwarded_for:
            response = await client.post(
                "/api/v1/auth/login",
                json={"username": "admin", "password": "wrong-password"},
                headers={"X-Forwarded-For": address},
            )
            statuses.append(response.status_code)
    return statuses


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_rotating_forwarded_for_does_not_escape_the_throttle(harness: Harness) -> None:
    limit = harness.settings.login_max_failures
    rotating = [f"203.0.113.{n}" for n in range(1, limit + 6)]
    async with serve(harness.app) as base_url:
        statuses = await _wrong_logins(base_url, rotating)
    assert statuses == [401] * limit + [429] * 5


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_behind_a_trusted_proxy_the_forwarded_address_counts(harness: Harness) -> None:
    limit = harness.settings.login_max_failures
    rotating = [f"203.0.113.{n}" for n in range(1, limit + 6)]
    async with serve(harness.app, trusted_proxies=("127.0.0.1/32",)) as base_url:
        # Each forwarded client is counted on its own ...
        assert await _wrong_logins(base_url, rotating) == [401] * (limit + 5)
        # ... and one forwarded client is throttled, whatever the proxy's own address.
        statuses = await _wrong_logins(base_url, ["198.51.100.7"] * (limit + 2))
    assert statuses == [401] * limit + [429] * 2
