"""Usage aggregates: requests and tokens by day, model, user and key."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from maasbase.common.bounds import Text, shorten
from maasbase.common.errors import InvalidRequest
from maasbase.server.api.deps import Caller, Session
from maasbase.server.db import usage as usage_db

router = APIRouter(prefix="/api/v1", tags=["usage"])


class UsageRow(BaseModel):
    day: date | str | None = None
    model: str | None = None
    user: int | None = None
    key: int | None = None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    errors: int
    avg_latency_ms: float | None
    avg_ttft_ms: float | None


class UsageOut(BaseModel):
    items: list[UsageRow]
    total: int


@router.get("/usage", response_model=UsageOut)
async def usage(
    caller: Caller,
    session: Session,
    group_by: Annotated[
        Text, Query(max_length=64, description="Any of day, model, user, key.")
    ] = "day,model",
    start: datetime | None = None,
    end: datetime | None = None,
) -> UsageOut:
    """Admins see everyone's usage; other users their own."""
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    unknown = [g for g in groups if g not in usage_db.GROUPS]
    if unknown:
        raise InvalidRequest(
            f"cannot group by {shorten(unknown)}; use any of day, model, user, key"
        )
    rows = await usage_db.aggregate(
        session,
        group_by=groups,
        start=start,
        end=end,
        user_id=None if caller.is_admin else caller.user_id,
    )
    items = [_row(r) for r in rows]
    return UsageOut(items=items, total=len(items))


def _row(row: dict[str, Any]) -> UsageRow:
    prompt, completion = int(row["prompt_tokens"] or 0), int(row["completion_tokens"] or 0)
    return UsageRow(
        day=row.get("day"),
        model=row.get("model"),
        user=row.get("user"),
        key=row.get("key"),
        requests=int(row["requests"]),
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        errors=int(row["errors"] or 0),
        avg_latency_ms=float(row["avg_latency_ms"]) if row["avg_latency_ms"] is not None else None,
        avg_ttft_ms=float(row["avg_ttft_ms"]) if row["avg_ttft_ms"] is not None else None,
    )
