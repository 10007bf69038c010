"""Usage batches from gateways, checked and stored one record at a time.

A batch arrives as a list of raw objects. Each is validated on its own (``UsageRecord``
bounds its every field to the columns), then checked against the database: its key
must exist and belong to its user, and a record without a key has no user. Only records
that passed reach the insert, so one bad record never fails the others; the answer
(``UsageIngest``) says how many were stored and why each other one was rejected. Should
the database still refuse the checked rows, they are stored one by one and the rows it
refuses are rejected; a database that is down fails the batch (the gateway retries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.routing import RejectedUsage, UsageIngest, UsageRecord
from maasbase.server.db import usage as usage_db

MAX_BATCH = 10_000
# Records dated further ahead of the server's clock would count against a key's quota
# for a period that has not begun.
FUTURE_SLACK = timedelta(days=1)
REASON_CHARS = 300


def reason_of(error: ValidationError) -> str:
    """The first problems of a record, by field, without the values (which may be huge)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(part) for part in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)[:REASON_CHARS]


def parse(raw: Sequence[object]) -> tuple[list[tuple[int, UsageRecord]], list[RejectedUsage]]:
    """Each raw object as a ``UsageRecord`` (with its index), or its rejection."""
    parsed: list[tuple[int, UsageRecord]] = []
    rejected: list[RejectedUsage] = []
    for index, item in enumerate(raw):
        try:
            parsed.append((index, UsageRecord.model_validate(item)))
        except ValidationError as exc:
            rejected.append(RejectedUsage(index=index, reason=reason_of(exc)))
    return parsed, rejected


def check(record: UsageRecord, owners: Mapping[int, int], now: datetime) -> str | None:
    """Why ``record`` may not be stored (None: it may). ``owners`` maps the batch's keys
    that exist to their users."""
    if record.api_key_id is None:
        if record.user_id is not None:
            return "a record without an API key has no user_id"
    else:
        owner = owners.get(record.api_key_id)
        if owner is None:
            return f"API key {record.api_key_id} does not exist"
        if record.user_id != owner:
            return f"API key {record.api_key_id} does not belong to user {record.user_id}"
    if record.time > now + FUTURE_SLACK:
        return "time is more than a day ahead of the server's clock; check the gateway's clock"
    return None


def _row_fault(exc: Exception) -> bool:
    """Whether the database refused the rows themselves (not: it is unreachable)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return False
    if isinstance(exc, StatementError):
        return not getattr(exc, "connection_invalidated", False)
    return isinstance(exc, ValueError | OverflowError)


async def store(
    session: AsyncSession,
    raw: Sequence[object],
    *,
    now: datetime,
    gateway_id: int | None = None,
) -> UsageIngest:
    """Check and store a batch; commits (as a route does) and returns the answer."""
    parsed, rejected = parse(raw)
    owners = await usage_db.key_owners(
        session, (r.api_key_id for _, r in parsed if r.api_key_id is not None)
    )
    valid: list[tuple[int, UsageRecord]] = []
    for index, record in parsed:
        reason = check(record, owners, now)
        if reason is None:
            valid.append((index, record))
        else:
            rejected.append(RejectedUsage(index=index, reason=reason))
    stored = 0
    try:
        stored = await usage_db.insert_records(
            session, [record for _, record in valid], gateway_id=gateway_id
        )
        await session.commit()
    except Exception as exc:
        if not _row_fault(exc):
            raise
        await session.rollback()
        stored = await _store_one_by_one(session, valid, rejected, gateway_id)
    rejected.sort(key=lambda item: item.index)
    return UsageIngest(stored=stored, rejected=rejected)


async def _store_one_by_one(
    session: AsyncSession,
    valid: list[tuple[int, UsageRecord]],
    rejected: list[RejectedUsage],
    gateway_id: int | None,
) -> int:
    stored = 0
    for index, record in valid:
        try:
            await usage_db.insert_records(session, [record], gateway_id=gateway_id)
            await session.commit()
        except Exception as exc:
            if not _row_fault(exc):
                raise
            await session.rollback()
            reason = f"the database refused it: {type(exc).__name__}"
            rejected.append(RejectedUsage(index=index, reason=reason))
        else:
            stored += 1
    return stored
