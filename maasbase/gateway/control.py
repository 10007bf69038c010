"""HTTP connection from a standalone gateway to the control plane (aiohttp).

The three HTTP seams (routes, key checks, usage) share one ``ControlPlaneClient``: one
connection pool, the gateway's token on every call, and aiohttp's exceptions translated
into typed errors here, at the boundary.
"""

from __future__ import annotations

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
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._session = session
        self._owns_session = session is None
        self.timeout = timeout

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
    ) -> tuple[int, bytes]:
        """Status and body of one call; network failures raise ``Unavailable`` and a
        rejected gateway token raises ``ConfigurationError``."""
        url = f"{self.server_url}{path}"
        limit = aiohttp.ClientTimeout(total=time_limit or self.timeout)
        try:
            async with self._get_session().request(
                method, url, params=params, data=body, headers=self._headers, timeout=limit
            ) as response:
                data = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(
                f"the control plane at {self.server_url} is unreachable ({exc!r}); "
                "the gateway keeps its last routing table and retries"
            ) from exc
        if status in (401, 403) and not path.endswith("/keys/check"):
            raise ConfigurationError(
                f"the control plane at {self.server_url} rejected the gateway token "
                f"(HTTP {status}); start the gateway with a valid --token"
            )
        if status >= 500:
            raise Unavailable(f"the control plane answered HTTP {status} to {method} {path}")
        return status, data

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None
