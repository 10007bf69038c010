"""Limits of a key and of its user (shared by all the user's keys): requests per minute,
tokens per minute, token quota per day or month.

The policy is pure: ``admit`` looks at a bucket's carried usage, its ``KeyLimits`` and
``now`` and says whether the request may start, or how long until it may;
``admit_both`` does so for the key's bucket and the user's, counting the request in
both only when both admit it. Requests are
counted in an exact sliding window (a request is admitted only if fewer than the limit
started in the last 60 s); tokens are known only once a request ends, so a request is
admitted while the window's tokens are below the limit and its tokens are added after.
A ``LimitStore`` carries the state, key buckets by key id and user buckets by user id:
``MemoryLimitStore`` for one process (check and
consume happen without an ``await`` between them, so they are atomic), or the Redis
store in ``limits_redis`` to share limits between gateway replicas.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from maasbase.common.routing import KeyLimits, quota_period
from maasbase.gateway.errors import QuotaExceeded, RateLimited

WINDOW = 60.0


KEY = "key"
USER = "user"


@dataclass(frozen=True)
class Admission:
    allowed: bool
    retry_after: float = 0.0
    reason: str = ""  # "requests", "tokens" or "quota" when refused
    level: str = KEY  # whose limit refused: the key's or its user's

    def raise_if_refused(self, limits: KeyLimits, user_limits: KeyLimits | None = None) -> None:
        """Raise the refusal; ``limits`` are the key's, ``user_limits`` its user's."""
        if self.allowed:
            return
        wait = max(1, round(self.retry_after + 0.5))
        by_user = self.level == USER and user_limits is not None
        if by_user:
            assert user_limits is not None
            limits = user_limits
        whose = "your user account" if by_user else "this API key"
        shared = " (shared by all your API keys)" if by_user else ""
        if self.reason == "quota":
            raise QuotaExceeded(
                f"{whose} used its quota of {limits.token_quota} tokens per "
                f"{limits.quota_period}{shared}; it renews in {wait} s, or ask an "
                "administrator to raise it",
                retry_after=self.retry_after,
            )
        if self.reason == "tokens":
            what = f"{limits.tokens_per_minute} tokens per minute"
        else:
            what = f"{limits.requests_per_minute} requests per minute"
        shared = ", shared by all your API keys" if by_user else ""
        raise RateLimited(
            f"rate limit reached for {whose} ({what}{shared}); retry after {wait} s",
            retry_after=self.retry_after,
        )


ADMITTED = Admission(True)


class SlidingLog:
    """Amounts with the time they were added; the sum of those inside the window."""

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def expire(self, now: float, window: float) -> None:
        horizon = now - window
        entries = self.entries
        while entries and entries[0][0] <= horizon:
            self.total -= entries.popleft()[1]

    def add(self, now: float, amount: int) -> None:
        self.entries.append((now, amount))
        self.total += amount

    def wait_below(self, limit: int, now: float, window: float) -> float:
        """Seconds until the sum is below ``limit`` (0 when it already is)."""
        excess = self.total - limit + 1
        if excess <= 0:
            return 0.0
        for when, amount in self.entries:
            excess -= amount
            if excess <= 0:
                # The entry survived ``expire``, so it is inside the window: the wait is
                # positive even where float rounding makes the difference come out as 0.
                return min(window, max(MIN_WAIT, when + window - now))
        return window


MIN_WAIT = 1e-6


@dataclass
class KeyUsage:
    requests: SlidingLog = field(default_factory=SlidingLog)
    tokens: SlidingLog = field(default_factory=SlidingLog)
    quota_start: float = 0.0
    quota_used: int = 0


def _start_period(usage: KeyUsage, limits: KeyLimits, start: float) -> None:
    """Enter the quota period beginning at ``start``; tokens the control plane had already
    counted in it when the key was granted carry over (a restarted gateway keeps quotas)."""
    if usage.quota_start != start:
        carried = limits.quota_used if limits.quota_period_start == start else 0
        usage.quota_start, usage.quota_used = start, carried


def check(usage: KeyUsage, limits: KeyLimits, now: float) -> Admission:
    """Whether one more request may start now, without counting it."""
    if limits.token_quota is not None:
        start, end = quota_period(limits.quota_period, now)
        _start_period(usage, limits, start)
        if usage.quota_used >= limits.token_quota:
            return Admission(False, end - now, "quota")
    if limits.tokens_per_minute is not None:
        usage.tokens.expire(now, WINDOW)
        wait = usage.tokens.wait_below(limits.tokens_per_minute, now, WINDOW)
        if wait > 0:
            return Admission(False, wait, "tokens")
    if limits.requests_per_minute is not None:
        usage.requests.expire(now, WINDOW)
        wait = usage.requests.wait_below(limits.requests_per_minute, now, WINDOW)
        if wait > 0:
            return Admission(False, wait, "requests")
    return ADMITTED


def count(usage: KeyUsage, limits: KeyLimits, now: float) -> None:
    """Count one admitted request in the minute window."""
    if limits.requests_per_minute is not None:
        usage.requests.add(now, 1)


def admit(usage: KeyUsage, limits: KeyLimits, now: float) -> Admission:
    """Decide whether one more request may start now; count it when it may."""
    decision = check(usage, limits, now)
    if decision.allowed:
        count(usage, limits, now)
    return decision


def admit_both(
    key: KeyUsage, key_limits: KeyLimits, user: KeyUsage, user_limits: KeyLimits, now: float
) -> Admission:
    """Admit a request under its key's limits and its user's; counted in both only when
    both allow it. A refusal says whose limit it was."""
    decision = check(key, key_limits, now)
    if not decision.allowed:
        return decision
    by_user = check(user, user_limits, now)
    if not by_user.allowed:
        return Admission(False, by_user.retry_after, by_user.reason, USER)
    count(key, key_limits, now)
    count(user, user_limits, now)
    return ADMITTED


def consume(usage: KeyUsage, limits: KeyLimits, tokens: int, now: float) -> None:
    """Add a finished request's tokens to the minute window and the quota."""
    if tokens <= 0:
        return
    if limits.tokens_per_minute is not None:
        usage.tokens.add(now, tokens)
    if limits.token_quota is not None:
        start, _ = quota_period(limits.quota_period, now)
        _start_period(usage, limits, start)
        usage.quota_used += tokens


@dataclass(frozen=True)
class UserBucket:
    """The user a key belongs to, and the limits all the user's keys share."""

    user_id: int
    limits: KeyLimits


def has_limits(limits: KeyLimits) -> bool:
    return (
        limits.requests_per_minute is not None
        or limits.tokens_per_minute is not None
        or limits.token_quota is not None
    )


class LimitStore(Protocol):
    async def admit(
        self, key_id: int, limits: KeyLimits, now: float, user: UserBucket | None = None
    ) -> Admission: ...

    async def consume(
        self, key_id: int, limits: KeyLimits, tokens: int, now: float,
        user: UserBucket | None = None,
    ) -> None: ...  # fmt: skip

    async def aclose(self) -> None: ...


class MemoryLimitStore:
    """Limits exact within this process."""

    def __init__(self) -> None:
        self.usage: dict[int, KeyUsage] = {}
        self.user_usage: dict[int, KeyUsage] = {}

    def _usage(self, key_id: int) -> KeyUsage:
        usage = self.usage.get(key_id)
        if usage is None:
            usage = self.usage[key_id] = KeyUsage()
        return usage

    def _user_usage(self, user_id: int) -> KeyUsage:
        usage = self.user_usage.get(user_id)
        if usage is None:
            usage = self.user_usage[user_id] = KeyUsage()
        return usage

    async def admit(
        self, key_id: int, limits: KeyLimits, now: float, user: UserBucket | None = None
    ) -> Admission:
        if user is None or not has_limits(user.limits):
            return admit(self._usage(key_id), limits, now)
        return admit_both(
            self._usage(key_id), limits, self._user_usage(user.user_id), user.limits, now
        )

    async def consume(
        self, key_id: int, limits: KeyLimits, tokens: int, now: float,
        user: UserBucket | None = None,
    ) -> None:  # fmt: skip
        consume(self._usage(key_id), limits, tokens, now)
        if user is not None and has_limits(user.limits):
            consume(self._user_usage(user.user_id), user.limits, tokens, now)

    async def aclose(self) -> None:
        self.usage.clear()
        self.user_usage.clear()
