"""The worker's one seam to the server's HTTP API."""

from __future__ import annotations

from typing import Any

import httpx

from maasbase.common.errors import MaasError, Unauthenticated, Unavailable
from maasbase.common.hardware import HardwareReport
from maasbase.common.instances import InstanceReport, InstanceReports, WorkerAssignments
from maasbase.common.workers import Heartbeat, HeartbeatAck, WorkerRegistered, WorkerRegistration


class ServerUnreachable(Unavailable):
    """Connection failed or the server answered 5xx: retry later."""


class CredentialRefused(Unauthenticated):
    """The server refused the token or credential: retrying the same one is pointless."""


class ServerClient:
    def __init__(
        self, server_url: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.server_url, timeout=httpx.Timeout(10.0, connect=5.0), transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, bearer: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", path, bearer, json=body)

    async def _call(self, method: str, path: str, bearer: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(
                method, path, headers={"Authorization": f"Bearer {bearer}"}, **kwargs
            )
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"cannot reach the server at {self.server_url} ({type(exc).__name__}: {exc}); "
                "check --server-url and that the server runs"
            ) from exc
        if response.status_code == 401:
            raise CredentialRefused(_message(response))
        if response.status_code >= 500:
            raise ServerUnreachable(
                f"server at {self.server_url} answered {response.status_code}: {_message(response)}"
            )
        if response.status_code >= 400:
            raise MaasError(f"server refused {path}: {_message(response)}")
        data: dict[str, Any] = response.json()
        return data

    async def register(self, registration: WorkerRegistration, bearer: str) -> WorkerRegistered:
        data = await self._post(
            "/api/v1/workers/register", bearer, registration.model_dump(mode="json")
        )
        return WorkerRegistered.model_validate(data)

    async def heartbeat(self, credential: str, hardware: HardwareReport) -> HeartbeatAck:
        body = Heartbeat(hardware=hardware).model_dump(mode="json")
        return HeartbeatAck.model_validate(
            await self._post("/api/v1/workers/heartbeat", credential, body)
        )

    async def assignments(
        self, credential: str, revision: str | None, wait: float
    ) -> WorkerAssignments:
        """Long-poll: returns when the assignments differ from ``revision`` (or after
        ``wait`` seconds)."""
        params: dict[str, Any] = {"wait": wait}
        if revision is not None:
            params["revision"] = revision
        data = await self._call(
            "GET",
            "/api/v1/workers/assignments",
            credential,
            params=params,
            timeout=httpx.Timeout(wait + 15.0, connect=5.0),
        )
        return WorkerAssignments.model_validate(data)

    async def report(self, credential: str, reports: list[InstanceReport]) -> None:
        body = InstanceReports(reports=reports).model_dump(mode="json")
        await self._post("/api/v1/workers/instance-reports", credential, body)


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase
