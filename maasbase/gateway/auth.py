"""API keys at the gateway: who is calling and what they may use.

The control plane owns keys; a ``KeyResolver`` asks it. ``CachedKeyResolver`` sits in
front so a request costs a dictionary lookup: grants are kept ``ttl`` seconds, unknown
keys ``negative_ttl`` seconds, concurrent first uses of a key share one lookup, and
while the control plane is unreachable a grant already seen is served stale.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from pydantic import ValidationError

from maasbase.common.auth import Scope
from maasbase.common.clock import Clock, SystemClock
from maasbase.common.errors import MaasError, Unavailable
from maasbase.common.routing import KeyCheck, KeyGrant
from maasbase.gateway.control import ControlPlaneClient
from maasbase.gateway.errors import InvalidApiKey, ModelNotAllowed, ScopeNotAllowed

logger = logging.getLogger("maasbase.gateway.auth")

KEY_CHECK_PATH = "/api/v1/gateway/keys/check"


class KeyResolver(Protocol):
    async def check(self, key: str) -> KeyGrant | None:
        """The key's grant, or None when the key is unknown, revoked or malformed.
        Raises ``MaasError`` (e.g. ``Unavailable``) when the answer cannot be had."""
        ...


@dataclass(frozen=True)
class Caller:
    """A grant prepared for the hot path."""

    grant: KeyGrant
    allowed_models: frozenset[str] | None
    expires_at: float | None
    may_infer: bool
    limited: bool

    @classmethod
    def from_grant(cls, grant: KeyGrant) -> Caller:
        limits = grant.limits
        try:
            may_infer = Scope(grant.scope).allows_inference()
        except ValueError:
            may_infer = False
        return cls(
            grant=grant,
            allowed_models=None
            if grant.allowed_models is None
            else frozenset(grant.allowed_models),
            expires_at=None if grant.expires_at is None else grant.expires_at.timestamp(),
            may_infer=may_infer,
            limited=any(
                v is not None
                for v in (limits.requests_per_minute, limits.tokens_per_minute, limits.token_quota)
            ),
        )

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    def check_usable(self, now: float) -> None:
        """Raise when the key may not call the inference API at all."""
        if self.expires_at is not None and now >= self.expires_at:
            raise InvalidApiKey("this API key has expired; create a new key")
        if not self.may_infer:
            raise ScopeNotAllowed(
                f"this API key has scope '{self.grant.scope}', which does not allow inference; "
                "use a key with scope 'inference' or 'all'"
            )

    def check_model(self, model: str) -> None:
        if not self.may_use(model):
            raise ModelNotAllowed(
                f"this API key may not use model '{model}'; ask an administrator to add it "
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
    caller: Caller | None
    fresh_until: float
    stale_until: float


class CachedKeyResolver:
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
        self._pending: dict[str, asyncio.Future[Caller | None]] = {}

    async def resolve(self, key: str) -> Caller | None:
        entry = self._cache.get(key)
        if entry is not None and entry.fresh_until > self.clock.monotonic():
            return entry.caller
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Caller | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            caller = await self._lookup(key)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise it, none is required
            raise
        else:
            future.set_result(caller)
            return caller
        finally:
            del self._pending[key]

    async def _lookup(self, key: str) -> Caller | None:
        now = self.clock.monotonic()
        try:
            grant = await self.inner.check(key)
        except MaasError:
            entry = self._cache.get(key)
            if entry is not None and entry.caller is not None and entry.stale_until > now:
                logger.warning("key check failed; serving a cached grant")
                return entry.caller
            raise
        caller = None if grant is None else Caller.from_grant(grant)
        ttl = self.ttl if caller is not None else self.negative_ttl
        if len(self._cache) >= self.max_entries:
            self._evict(now)
        self._cache[key] = _Entry(caller, now + ttl, now + self.stale_ttl)
        return caller

    def _evict(self, now: float) -> None:
        expired = [k for k, e in self._cache.items() if e.fresh_until <= now]
        for k in expired or list(self._cache)[: max(1, self.max_entries // 10)]:
            del self._cache[k]

    def invalidate(self, key: str | None = None) -> None:
        if key is None:
            self._cache.clear()
        else:
            self._cache.pop(key, None)


class HttpKeyResolver:
    """``POST {server}/api/v1/gateway/keys/check`` with body ``KeyCheck``:
    200 → ``KeyGrant``; 401 or 404 → unknown key; anything else → ``Unavailable``."""

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        client: ControlPlaneClient | None = None,
    ) -> None:
        self.client = client or ControlPlaneClient(server_url, token)

    async def check(self, key: str) -> KeyGrant | None:
        body = KeyCheck(key=key).model_dump_json().encode()
        status, data = await self.client.request("POST", KEY_CHECK_PATH, body=body)
        if status in (401, 404):
            return None
        if status != 200:
            raise Unavailable(f"POST {KEY_CHECK_PATH} answered HTTP {status}: {data[:200]!r}")
        try:
            return KeyGrant.model_validate_json(data)
        except ValidationError as exc:
            raise Unavailable(f"POST {KEY_CHECK_PATH} returned an invalid grant: {exc}") from exc

    async def aclose(self) -> None:
        await self.client.aclose()
