"""Limits shared by every gateway replica through Redis (``--redis-url``).

Each decision is one Lua script, so check and consume are atomic across replicas:
requests per minute in a sorted set (exact sliding window, one member per request),
tokens per minute in a hash of per-second buckets (a bucket counts until the whole
second left the window, so the sum never undercounts), the quota in a counter per
period; a user's limits (shared by all the user's keys) the same way, checked in the
same script so a request counts in both or in neither. Keys carry the API key id in
braces, or the user id when the user has limits (then the key's buckets and the
user's stay in one Redis Cluster slot). When Redis is unreachable, requests are
admitted and a warning is logged: limits pause, serving does not.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from maasbase.common.routing import KeyLimits, quota_period
from maasbase.gateway.limits import ADMITTED, WINDOW, Admission, UserBucket, has_limits

logger = logging.getLogger("maasbase.gateway.limits")

PREFIX = "maas:gw"

ADMIT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])

local function check(rpm_key, tpm_key, quota_key, rpm, tpm, quota, quota_end)
  if quota >= 0 then
    local used = tonumber(redis.call('GET', quota_key) or '0')
    if used >= quota then
      return {0, quota_end - now, 'quota'}
    end
  end
  if tpm >= 0 then
    local buckets = redis.call('HGETALL', tpm_key)
    local live = {}
    local total = 0
    for i = 1, #buckets, 2 do
      local second = tonumber(buckets[i])
      if (second + 1) * 1000 <= now - window then
        redis.call('HDEL', tpm_key, buckets[i])
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
    redis.call('ZREMRANGEBYSCORE', rpm_key, '-inf', now - window)
    local count = redis.call('ZCARD', rpm_key)
    if count >= rpm then
      if rpm <= 0 then
        return {0, window, 'requests'}
      end
      local oldest = redis.call('ZRANGE', rpm_key, count - rpm, count - rpm, 'WITHSCORES')
      return {0, tonumber(oldest[2]) + window - now, 'requests'}
    end
  end
  return nil
end

local function count(rpm_key, rpm)
  if rpm >= 0 then
    redis.call('ZADD', rpm_key, now, ARGV[7])
    redis.call('PEXPIRE', rpm_key, window + 1000)
  end
end

local refused = check(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[3]), tonumber(ARGV[4]),
                      tonumber(ARGV[5]), tonumber(ARGV[6]))
if refused then
  table.insert(refused, 'key')
  return refused
end
if #KEYS >= 6 then
  refused = check(KEYS[4], KEYS[5], KEYS[6], tonumber(ARGV[8]), tonumber(ARGV[9]),
                  tonumber(ARGV[10]), tonumber(ARGV[11]))
  if refused then
    table.insert(refused, 'user')
    return refused
  end
  count(KEYS[4], tonumber(ARGV[8]))
end
count(KEYS[1], tonumber(ARGV[3]))
return {1, 0, '', ''}
"""

CONSUME = """
local now = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
for level = 0, #KEYS / 2 - 1 do
  local tpm_key, quota_key = KEYS[level * 2 + 1], KEYS[level * 2 + 2]
  if tonumber(ARGV[level * 3 + 4]) >= 0 then
    redis.call('HINCRBY', tpm_key, math.floor(now / 1000), tokens)
    redis.call('PEXPIRE', tpm_key, window + 2000)
  end
  if tonumber(ARGV[level * 3 + 5]) >= 0 then
    redis.call('INCRBY', quota_key, tokens)
    redis.call('PEXPIREAT', quota_key, tonumber(ARGV[level * 3 + 6]))
  end
end
return 1
"""


def _limit(value: int | None) -> int:
    return -1 if value is None else value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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

    def _keys(self, base: str, limits: KeyLimits, now: float) -> tuple[list[str], float]:
        start, end = quota_period(limits.quota_period, now)
        keys = [f"{base}:rpm", f"{base}:tpm", f"{base}:quota:{limits.quota_period}:{int(start)}"]
        return keys, end

    @staticmethod
    def _bases(key_id: int, user: UserBucket | None) -> tuple[str, str | None]:
        """Where a key's buckets and its user's live: a key alone is tagged with its id;
        with user limits, both carry the user's tag, so one script touches one slot."""
        if user is None or not has_limits(user.limits):
            return f"{PREFIX}:{{{key_id}}}", None
        tag = f"{PREFIX}:{{u{user.user_id}}}"
        return f"{tag}:k{key_id}", f"{tag}:user"

    def _failed(self, exc: RedisError) -> None:
        if not self._failing:
            logger.warning(
                "Redis is unreachable (%r); limits are not enforced until it is back", exc
            )
        self._failing = True

    async def admit(
        self, key_id: int, limits: KeyLimits, now: float, user: UserBucket | None = None
    ) -> Admission:
        key_base, user_base = self._bases(key_id, user)
        keys, end = self._keys(key_base, limits, now)
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
        if user is not None and user_base is not None:
            user_keys, user_end = self._keys(user_base, user.limits, now)
            keys += user_keys
            args += [
                _limit(user.limits.requests_per_minute),
                _limit(user.limits.tokens_per_minute),
                _limit(user.limits.token_quota),
                int(user_end * 1000),
            ]
        try:
            allowed, wait_ms, reason, level = await self._admit(keys=keys, args=args)
        except RedisError as exc:
            self._failed(exc)
            return ADMITTED
        self._failing = False
        if int(allowed):
            return ADMITTED
        return Admission(False, max(int(wait_ms), 1) / 1000, _text(reason), _text(level))

    async def consume(
        self, key_id: int, limits: KeyLimits, tokens: int, now: float,
        user: UserBucket | None = None,
    ) -> None:  # fmt: skip
        if tokens <= 0:
            return
        key_base, user_base = self._bases(key_id, user)
        keys, end = self._keys(key_base, limits, now)
        args: list[Any] = [
            int(now * 1000),
            tokens,
            int(WINDOW * 1000),
            _limit(limits.tokens_per_minute),
            _limit(limits.token_quota),
            int(end * 1000) + 86_400_000,
        ]
        buckets = keys[1:]
        if user is not None and user_base is not None:
            user_keys, user_end = self._keys(user_base, user.limits, now)
            buckets += user_keys[1:]
            args += [
                _limit(user.limits.tokens_per_minute),
                _limit(user.limits.token_quota),
                int(user_end * 1000) + 86_400_000,
            ]
        try:
            await self._consume(keys=buckets, args=args)
        except RedisError as exc:
            self._failed(exc)

    async def aclose(self) -> None:
        await self.client.aclose()
