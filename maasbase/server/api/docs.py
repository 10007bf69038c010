"""The interactive API docs (Swagger UI), served with the assets of the installed
``swagger-ui-bundle`` package: they work without internet access."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from maasbase.common.errors import NotFound

DOCS_PATH = "/api/docs"
ASSETS_PATH = DOCS_PATH + "/assets"
_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")

router = APIRouter(include_in_schema=False)


def _asset_dir() -> Path:
    return Path(str(swagger_ui_bundle.swagger_ui_path))


@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} API",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        oauth2_redirect_url=None,
    )


@router.get(ASSETS_PATH + "/{name}")
async def swagger_asset(name: str) -> FileResponse:
    if name not in _ASSETS:
        raise NotFound(f"no such docs asset; the docs are at {DOCS_PATH}")
    return FileResponse(_asset_dir() / name)
