"""HTTP connection from a standalone gateway to the control plane (aiohttp).

The three HTTP seams (routes, key checks, usage) share one ``ControlPlaneClient``: one
connection pool, the gateway's credential on every call, and aiohttp's exceptions
translated into typed errors here, at the boundary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import aiohttp

from maasbase.common.errors import ConfigurationError, Unavailable

DEFAULT_TIMEOUT = 10.0


class ControlPlaneClient:
    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self._headers: dict[str, str] = {}
        self.use_credential(token)
        self._session = session
        self._owns_session = session is None
        self.timeout = timeout

    def use_credential(self, credential: str) -> None:
        """Authenticate later calls with ``credential``."""
        self._headers = {
            "Authorization": f"Bearer {credential}",
            "Content-Type": "application/json",
        }

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32), cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        time_limit: float | None = None,
        bearer: str | None = None,
    ) -> tuple[int, bytes]:
        """Status and body of one call (with ``bearer`` instead of the gateway's credential
        when given); network failures raise ``Unavailable`` and a rejected gateway
        credential raises ``ConfigurationError``."""
        url = f"{self.server_url}{path}"
        limit = aiohttp.ClientTimeout(total=time_limit or self.timeout)
        headers = self._headers
        if bearer is not None:
            headers = {**headers, "Authorization": f"Bearer {bearer}"}
        try:
            async with self._get_session().request(
                method, url, params=params, data=body, headers=headers, timeout=limit
            ) as response:
                data = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(
                f"the control plane at {self.server_url} is unreachable ({exc!r}); "
                "the gateway keeps its last routing table and retries"
            ) from exc
        if status in (401, 403) and not path.endswith(("/keys/check", "/register")):
            raise ConfigurationError(
                f"the control plane at {self.server_url} rejected the gateway's credential "
                f"(HTTP {status}: {error_message(data)}); restart the gateway with the "
                "registration token or a new gateway credential as --token"
            )
        if status >= 500:
            raise Unavailable(f"the control plane answered HTTP {status} to {method} {path}")
        return status, data

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None


def error_message(body: bytes) -> str:
    """The message of the control plane's JSON error body, else the start of the body."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace")
