"""The CLI's HTTP client for the management API (API key or access token)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx

from maasbase.common.errors import ConfigurationError, MaasError

DEFAULT_SERVER = "http://127.0.0.1:8080"


class ApiError(MaasError):
    pass


class ApiClient:
    def __init__(self, server_url: str | None, api_key: str | None) -> None:
        self.server_url = (
            server_url or os.environ.get("MAAS_SERVER_URL") or DEFAULT_SERVER
        ).rstrip("/")
        key = api_key or os.environ.get("MAAS_API_KEY")
        if not key:
            raise ConfigurationError(
                "no credentials: pass --api-key or set MAAS_API_KEY (create a key with "
                "POST /api/v1/api-keys or in the web UI)"
            )
        self._http = httpx.Client(
            base_url=self.server_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(
                f"cannot reach {self.server_url} ({exc}); is the server running? "
                "Set --server-url or MAAS_SERVER_URL"
            ) from exc
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise ApiError(f"{response.status_code}: {message}")
        return response.json() if response.content else None

    def stream_text(self, path: str, **params: Any) -> Iterator[str]:
        try:
            with self._http.stream("GET", path, params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    try:
                        message = response.json()["error"]["message"]
                    except (ValueError, KeyError, TypeError):
                        message = response.text[:300]
                    raise ApiError(f"{response.status_code}: {message}")
                yield from response.iter_text()
        except httpx.TransportError as exc:
            raise ApiError(f"connection to {self.server_url} lost ({exc})") from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def find_model(self, name_or_id: str) -> dict[str, Any]:
        if name_or_id.isdigit():
            found: dict[str, Any] = self.get(f"/api/v1/models/{name_or_id}")
            return found
        for model in self.get("/api/v1/models", search=name_or_id, per_page=1000)["items"]:
            if model["name"] == name_or_id:
                return dict(model)
        raise ApiError(f"no model named {name_or_id!r}; see 'maas-base model list'")
