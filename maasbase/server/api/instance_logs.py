"""Instance logs, streamed from the worker that runs the instance."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.background import BackgroundTask

from maasbase.common.bounds import Id
from maasbase.common.errors import NotFound, Unavailable
from maasbase.server.api.deps import Admin, Session, State
from maasbase.server.api.openapi import error_responses
from maasbase.server.db import instances as instances_db
from maasbase.server.db import workers as workers_db
from maasbase.server.security.worker_secrets import worker_api_secret

router = APIRouter(prefix="/api/v1", tags=["models"])


@router.get(
    "/model-instances/{instance_id}/logs",
    response_model=None,
    responses={200: {"content": {"text/plain": {}}}, **error_responses(503)},
)
async def instance_logs(
    instance_id: Id,
    _admin: Admin,
    state: State,
    session: Session,
    tail: int = Query(default=100, ge=0, le=100_000, description="Lines from the end."),
    follow: bool = Query(default=False, description="Keep streaming new lines."),
) -> PlainTextResponse | StreamingResponse:
    instance = await instances_db.get(session, instance_id)
    if instance is None:
        raise NotFound(f"model instance {instance_id} does not exist")
    worker = await workers_db.get(session, instance.worker_id) if instance.worker_id else None
    if worker is None:
        raise Unavailable(f"instance {instance.name} is not placed on a worker; no logs yet")
    secret = worker_api_secret(state.worker_secret_key, worker.id, worker.credential_access)
    name, address, port, instance_name = worker.name, worker.address, worker.port, instance.name
    await session.rollback()  # release the connection before a long stream
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{port}/v1/instances/{instance_id}/logs"
    client = httpx.AsyncClient(
        headers={"Authorization": f"Bearer {secret}"},
        timeout=httpx.Timeout(10.0, read=None if follow else 30.0),
    )
    try:
        request = client.build_request("GET", url, params={"tail": tail, "follow": follow})
        upstream = await client.send(request, stream=True)
    except httpx.TransportError as exc:
        await client.aclose()
        raise Unavailable(
            f"worker {name} at {address}:{port} did not answer ({exc}); is it running?"
        ) from exc
    if upstream.status_code != 200:
        body = (await upstream.aread()).decode(errors="replace")
        await upstream.aclose()
        await client.aclose()
        if upstream.status_code == 404:
            raise NotFound(f"worker {name} does not run instance {instance_name} (yet)")
        raise Unavailable(f"worker {name} answered {upstream.status_code}: {body[:200]}")

    async def relay() -> AsyncIterator[bytes]:
        async for chunk in upstream.aiter_raw():
            yield chunk

    async def close() -> None:
        await upstream.aclose()
        await client.aclose()

    return StreamingResponse(
        relay(), media_type="text/plain; charset=utf-8", background=BackgroundTask(close)
    )
