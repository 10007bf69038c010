"""The API docs work offline, and the OpenAPI schema says what the API answers."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_docs_page_loads_only_local_assets(admin: httpx.AsyncClient) -> None:
    page = await admin.get("/api/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
    found = [a or b for a, b in urls]
    assert {"/api/openapi.json", "/api/docs/assets/swagger-ui-bundle.js"} <= set(found)
    for url in found:
        assert url.startswith("/"), f"{url} is not served by MaaS-Base"
        assert not url.startswith("//"), url
        response = await admin.get(url)
        assert response.status_code == 200, url
        assert response.content, url
    assert (await admin.get("/api/docs/assets/index.html")).status_code == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_schema_declares_security_and_real_status_codes(admin: httpx.AsyncClient) -> None:
    schema = (await admin.get("/api/openapi.json")).json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "session"}
    operations = {
        (method.upper(), path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }
    for (method, path), operation in operations.items():
        responses = operation["responses"]
        assert "422" not in responses, (method, path)
        if operation.get("parameters") or operation.get("requestBody"):
            assert "400" in responses, (method, path)
        if operation.get("security"):
            assert {"401", "403"} <= set(responses), (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
    assert operations["GET", "/api/v1/users"]["security"] == [{"bearer": []}, {"session": []}]
    assert "409" in operations["POST", "/api/v1/users"]["responses"]
    assert "429" in operations["POST", "/api/v1/auth/login"]["responses"]
    assert "security" not in operations["POST", "/api/v1/auth/login"]
    # The documented 400 is what invalid input really gets.
    response = await admin.get("/api/v1/users", params={"page": 0})
    assert response.status_code == 400
    assert "page" in response.json()["error"]["message"]
