"""Limits shared by every gateway replica through Redis (``--redis-url``).

Each decision is one Lua script, so check and consume are atomic across replicas:
requests per minute in a sorted set (exact sliding window, one member per request),
tokens per minute in a hash of per-second buckets (a bucket counts until the whole
second left the window, so the sum never undercounts), the quota in a counter per
period. Keys carry the API key id in braces, so one key's state stays in one Redis
Cluster slot. When Redis is unreachable, requests are admitted and a warning is
logged: limits pause, serving does not.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from maasbase.common.routing import KeyLimits, quota_period
from maasbase.gateway.limits import ADMITTED, WINDOW, Admission

logger = logging.getLogger("maasbase.gateway.limits")

PREFIX = "maas:gw"

ADMIT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local quota = tonumber(ARGV[5])
if quota >= 0 then
  local used = tonumber(redis.call('GET', KEYS[3]) or '0')
  if used >= quota then
    return {0, tonumber(ARGV[6]) - now, 'quota'}
  end
end
if tpm >= 0 then
  local buckets = redis.call('HGETALL', KEYS[2])
  local live = {}
  local total = 0
  for i = 1, #buckets, 2 do
    local second = tonumber(buckets[i])
    if (second + 1) * 1000 <= now - window then
      redis.call('HDEL', KEYS[2], buckets[i])
    else
      local amount = tonumber(buckets[i + 1])
      total = total + amount
      table.insert(live, {second, amount})
    end
  end
  if total >= tpm then
    table.sort(live, function(a, b) return a[1] < b[1] end)
    local excess = total - tpm + 1
    for _, bucket in ipairs(live) do
      excess = excess - bucket[2]
      if excess <= 0 then
        return {0, (bucket[1] + 1) * 1000 + window - now, 'tokens'}
      end
    end
    return {0, window, 'tokens'}
  end
end
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[1])
  if count >= rpm then
    if rpm <= 0 then
      return {0, window, 'requests'}
    end
    local oldest = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
    return {0, tonumber(oldest[2]) + window - now, 'requests'}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[7])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
end
return {1, 0, ''}
"""

CONSUME = """
local now = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
if tonumber(ARGV[3]) >= 0 then
  redis.call('HINCRBY', KEYS[1], math.floor(now / 1000), tokens)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]) + 2000)
end
if tonumber(ARGV[4]) >= 0 then
  redis.call('INCRBY', KEYS[2], tokens)
  redis.call('PEXPIREAT', KEYS[2], tonumber(ARGV[6]))
end
return 1
"""


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisLimitStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._admit = client.register_script(ADMIT)
        self._consume = client.register_script(CONSUME)
        self._member_prefix = uuid.uuid4().hex[:12]
        self._counter = itertools.count()
        self._failing = False

    @classmethod
    def from_url(cls, url: str) -> RedisLimitStore:
        return cls(aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0))

    def _keys(self, key_id: int, limits: KeyLimits, now: float) -> tuple[list[str], float]:
        start, end = quota_period(limits.quota_period, now)
        base = f"{PREFIX}:{{{key_id}}}"
        keys = [f"{base}:rpm", f"{base}:tpm", f"{base}:quota:{limits.quota_period}:{int(start)}"]
        return keys, end

    def _failed(self, exc: RedisError) -> None:
        if not self._failing:
            logger.warning(
                "Redis is unreachable (%r); limits are not enforced until it is back", exc
            )
        self._failing = True

    async def admit(self, key_id: int, limits: KeyLimits, now: float) -> Admission:
        keys, end = self._keys(key_id, limits, now)
        now_ms = int(now * 1000)
        args: list[Any] = [
            now_ms,
            int(WINDOW * 1000),
            _limit(limits.requests_per_minute),
            _limit(limits.tokens_per_minute),
            _limit(limits.token_quota),
            int(end * 1000),
            f"{self._member_prefix}:{next(self._counter)}",
        ]
        try:
            allowed, wait_ms, reason = await self._admit(keys=keys, args=args)
        except RedisError as exc:
            self._failed(exc)
            return ADMITTED
        self._failing = False
        if int(allowed):
            return ADMITTED
        text = reason.decode() if isinstance(reason, bytes) else str(reason)
        return Admission(False, max(int(wait_ms), 1) / 1000, text)

    async def consume(self, key_id: int, limits: KeyLimits, tokens: int, now: float) -> None:
        if tokens <= 0:
            return
        keys, end = self._keys(key_id, limits, now)
        args = [
            int(now * 1000),
            tokens,
            _limit(limits.tokens_per_minute),
            _limit(limits.token_quota),
            int(WINDOW * 1000),
            int(end * 1000) + 86_400_000,
        ]
        try:
            await self._consume(keys=keys[1:], args=args)
        except RedisError as exc:
            self._failed(exc)

    async def aclose(self) -> None:
        await self.client.aclose()
