"""API keys at the gateway: who is calling and what they may use.

The control plane owns keys; a ``KeyResolver`` asks it. ``CachedKeyResolver`` sits in
front so a request costs a dictionary lookup: grants are kept ``ttl`` seconds (a safety
net: the credential-change feed, ``key_changes.follow_key_changes``, drops a grant as
soon as its key or its user changes), refusals ``negative_ttl`` seconds with the
control plane's reason, concurrent first uses of a key share one lookup, and while the
control plane is unreachable a grant already seen is served stale.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pydantic import ValidationError

from maasbase.common.auth import Scope
from maasbase.common.clock import Clock, SystemClock
from maasbase.common.errors import MaasError, Unavailable
from maasbase.common.routing import UNKNOWN_KEY, KeyCheck, KeyGrant, KeyRefused
from maasbase.gateway.control import ControlPlaneClient
from maasbase.gateway.errors import InvalidApiKey, ModelNotAllowed, ScopeNotAllowed, clip
from maasbase.gateway.limits import UserBucket, has_limits

logger = logging.getLogger("maasbase.gateway.auth")

KEY_CHECK_PATH = "/api/v1/gateway/keys/check"
KEY_PREFIX = "mb"


class KeyResolver(Protocol):
    async def check(self, key: str) -> KeyGrant | KeyRefused | None:
        """The key's grant, or why it is refused (None: unknown, no reason given).
        Raises ``MaasError`` (e.g. ``Unavailable``) when the answer cannot be had."""
        ...


def access_key_of(presented: str) -> str | None:
    """The public middle part of a key shaped ``mb_<access key>_<secret>``."""
    prefix, sep, rest = presented.partition("_")
    if prefix != KEY_PREFIX or not sep:
        return None
    access, sep, _ = rest.partition("_")
    return access if sep and access else None


def expired_message(expires_at: datetime) -> str:
    return f"this API key expired at {expires_at.astimezone(UTC).isoformat()}; create a new one"


@dataclass(frozen=True)
class Caller:
    """A grant prepared for the hot path."""

    grant: KeyGrant
    allowed_models: frozenset[str] | None  # None: every model; empty: none
    expires_at: float | None
    may_infer: bool
    limited: bool  # the key or its user has a limit
    user: UserBucket | None = None  # the user's shared limits, when there are any

    @classmethod
    def from_grant(cls, grant: KeyGrant) -> Caller:
        try:
            may_infer = Scope(grant.scope).allows_inference()
        except ValueError:
            may_infer = False
        user_limited = has_limits(grant.user_limits)
        return cls(
            grant=grant,
            allowed_models=None
            if grant.allowed_models is None
            else frozenset(m for m in grant.allowed_models if m.strip()),
            expires_at=None if grant.expires_at is None else grant.expires_at.timestamp(),
            may_infer=may_infer,
            limited=user_limited or has_limits(grant.limits),
            user=UserBucket(grant.user_id, grant.user_limits) if user_limited else None,
        )

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    def check_usable(self, now: float) -> None:
        """Raise when the key may not call the inference API at all."""
        expires_at = self.grant.expires_at
        if self.expires_at is not None and expires_at is not None and now >= self.expires_at:
            raise InvalidApiKey(expired_message(expires_at))
        if not self.may_infer:
            raise ScopeNotAllowed(
                f"this API key has scope '{self.grant.scope}', which does not allow inference; "
                "use a key with scope 'inference' or 'all'"
            )

    def check_model(self, model: str) -> None:
        if not self.may_use(model):
            raise ModelNotAllowed(
                f"this API key may not use model '{clip(model)}'; ask an administrator to add it "
                "to the key's allowed models",
                details={"param": "model"},
            )


def bearer_token(value: bytes) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = token.strip()
    return token.decode("latin-1") if token else None


@dataclass
class _Entry:
    answer: Caller | KeyRefused
    fresh_until: float
    stale_until: float
    access_key: str | None
    user_id: int | None


class CachedKeyResolver:
    """Answers by presented key, indexed by access key and by user id so a change to a
    key or to a user drops every entry it concerns."""

    def __init__(
        self,
        inner: KeyResolver,
        *,
        clock: Clock | None = None,
        ttl: float = 30.0,
        negative_ttl: float = 5.0,
        stale_ttl: float = 3600.0,
        max_entries: int = 100_000,
    ) -> None:
        self.inner = inner
        self.clock = clock or SystemClock()
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.stale_ttl = stale_ttl
        self.max_entries = max_entries
        self._cache: dict[str, _Entry] = {}
        self._by_access: dict[str, set[str]] = {}
        self._by_user: dict[int, set[str]] = {}
        self._pending: dict[str, asyncio.Future[Caller | KeyRefused]] = {}
        # Bumped by every invalidation: a lookup that overlapped one is not cached, as its
        # answer may predate the change.
        self._generation = 0

    async def resolve(self, key: str) -> Caller | KeyRefused:
        entry = self._cache.get(key)
        if entry is not None and entry.fresh_until > self.clock.monotonic():
            return entry.answer
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Caller | KeyRefused] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            answer = await self._lookup(key)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise it, none is required
            raise
        else:
            future.set_result(answer)
            return answer
        finally:
            del self._pending[key]

    async def _lookup(self, key: str) -> Caller | KeyRefused:
        now = self.clock.monotonic()
        generation = self._generation
        try:
            grant = await self.inner.check(key)
        except MaasError:
            entry = self._cache.get(key)
            if entry is not None and isinstance(entry.answer, Caller) and entry.stale_until > now:
                logger.warning("key check failed; serving a cached grant")
                return entry.answer
            raise
        answer: Caller | KeyRefused
        if grant is None:
            answer = KeyRefused()
        elif isinstance(grant, KeyRefused):
            answer = grant
        else:
            answer = Caller.from_grant(grant)
        if generation != self._generation:
            return answer
        ttl = self.ttl if isinstance(answer, Caller) else self.negative_ttl
        if len(self._cache) >= self.max_entries:
            self._evict(now)
        self._forget(key)
        user_id = answer.grant.user_id if isinstance(answer, Caller) else None
        access = access_key_of(key)
        self._cache[key] = _Entry(answer, now + ttl, now + self.stale_ttl, access, user_id)
        if access is not None:
            self._by_access.setdefault(access, set()).add(key)
        if user_id is not None:
            self._by_user.setdefault(user_id, set()).add(key)
        return answer

    def _forget(self, key: str) -> None:
        entry = self._cache.pop(key, None)
        if entry is None:
            return
        if entry.access_key is not None:
            keys = self._by_access.get(entry.access_key)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_access[entry.access_key]
        if entry.user_id is not None:
            users = self._by_user.get(entry.user_id)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._by_user[entry.user_id]

    def _evict(self, now: float) -> None:
        expired = [k for k, e in self._cache.items() if e.fresh_until <= now]
        for k in expired or list(self._cache)[: max(1, self.max_entries // 10)]:
            self._forget(k)

    def invalidate(self, key: str | None = None) -> None:
        """Drop the entry of one presented key, or every entry."""
        self._generation += 1
        if key is None:
            self._cache.clear()
            self._by_access.clear()
            self._by_user.clear()
        else:
            self._forget(key)

    def invalidate_access_key(self, access_key: str) -> int:
        """Drop every entry of the key with this access key; how many were dropped."""
        self._generation += 1
        keys = list(self._by_access.get(access_key, ()))
        for key in keys:
            self._forget(key)
        return len(keys)

    def invalidate_user(self, user_id: int) -> int:
        """Drop every entry of this user's keys; how many were dropped."""
        self._generation += 1
        keys = list(self._by_user.get(user_id, ()))
        for key in keys:
            self._forget(key)
        return len(keys)


class HttpKeyResolver:
    """``POST {server}/api/v1/gateway/keys/check`` with body ``KeyCheck``:
    200 → ``KeyGrant``; 401 or 404 → ``KeyRefused`` with the server's message (revoked,
    expired, ...); anything else → ``Unavailable``."""

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        client: ControlPlaneClient | None = None,
    ) -> None:
        self.client = client or ControlPlaneClient(server_url, token)

    async def check(self, key: str) -> KeyGrant | KeyRefused | None:
        body = KeyCheck(key=key).model_dump_json().encode()
        status, data = await self.client.request("POST", KEY_CHECK_PATH, body=body)
        if status in (401, 404):
            return KeyRefused(refusal_message(data))
        if status != 200:
            raise Unavailable(f"POST {KEY_CHECK_PATH} answered HTTP {status}: {data[:200]!r}")
        try:
            return KeyGrant.model_validate_json(data)
        except ValidationError as exc:
            raise Unavailable(f"POST {KEY_CHECK_PATH} returned an invalid grant: {exc}") from exc

    async def aclose(self) -> None:
        await self.client.aclose()


def refusal_message(body: bytes) -> str:
    """The message of the control plane's error body (``{"error": {"message": ...}}``),
    or the generic one."""
    try:
        data = json.loads(body)
    except ValueError:
        return UNKNOWN_KEY
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else UNKNOWN_KEY
