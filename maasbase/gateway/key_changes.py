"""Following the control plane's credential-change feed, so a revoked key, a changed
limit or a deactivated user reaches the gateway's key cache within a second.

``follow_key_changes`` long-polls a ``KeyChangeSource`` from the newest change onwards
and drops the cached grants each change names (by access key, or every key of a user);
a ``reset`` (the gateway fell behind the feed) drops them all. While the source fails
it retries with backoff, keeping its cursor, so nothing written meanwhile is missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from pydantic import ValidationError

from maasbase.common.errors import MaasError, Unavailable
from maasbase.common.routing import CredentialChanges
from maasbase.gateway.auth import CachedKeyResolver
from maasbase.gateway.control import ControlPlaneClient
from maasbase.gateway.routing import retry_delay

logger = logging.getLogger("maasbase.gateway.key_changes")

KEY_CHANGES_PATH = "/api/v1/gateway/key-changes"
DEFAULT_WAIT = 20.0


class KeyChangeSource(Protocol):
    async def changes(self, after: int | None) -> CredentialChanges:
        """The changes after ``after``: at once when there are any, else when one is
        written or the source's wait ran out. With ``after`` None, only the newest id.
        Raises ``MaasError`` when the source fails."""
        ...


def apply(changes: CredentialChanges, cache: CachedKeyResolver) -> int:
    """Drop what ``changes`` names from ``cache``; how many entries were dropped."""
    if changes.reset:
        cache.invalidate()
        return 0
    dropped = 0
    for change in changes.changes:
        if change.access_key is not None:
            dropped += cache.invalidate_access_key(change.access_key)
        if change.user_id is not None:
            dropped += cache.invalidate_user(change.user_id)
    return dropped


async def follow_key_changes(
    source: KeyChangeSource,
    cache: CachedKeyResolver,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Apply every change from ``source`` to ``cache`` until cancelled."""
    cursor: int | None = None
    failures = 0
    while True:
        answer: CredentialChanges | None = None
        try:
            answer = await source.changes(cursor)
        except MaasError as exc:
            failures += 1
            delay = retry_delay(failures)
            log = logger.warning if failures == 1 or failures % 20 == 0 else logger.debug
            log("credential-change feed failed (%s); retrying in %.2f s", exc.message, delay)
        if answer is None:
            await sleep(delay)
            continue
        failures = 0
        if cursor is None:
            cache.invalidate()  # grants looked up before the cursor was known
        elif answer.changes or answer.reset:
            dropped = apply(answer, cache)
            logger.debug("%d credential changes, %d cached grants dropped",
                         len(answer.changes), dropped)  # fmt: skip
        cursor = answer.cursor


class HttpKeyChangeSource:
    """``GET {server}/api/v1/gateway/key-changes?after=N&wait=S`` with the gateway's
    token: 200 with ``CredentialChanges``."""

    def __init__(self, client: ControlPlaneClient, *, wait: float = DEFAULT_WAIT) -> None:
        self.client = client
        self.wait = wait

    async def changes(self, after: int | None) -> CredentialChanges:
        params = {"wait": f"{self.wait:g}"}
        if after is not None:
            params["after"] = str(after)
        status, body = await self.client.request(
            "GET", KEY_CHANGES_PATH, params=params, time_limit=self.wait + 10
        )
        if status != 200:
            raise Unavailable(f"GET {KEY_CHANGES_PATH} answered HTTP {status}: {body[:200]!r}")
        try:
            return CredentialChanges.model_validate_json(body)
        except ValidationError as exc:
            raise Unavailable(f"GET {KEY_CHANGES_PATH} returned an invalid answer: {exc}") from exc
