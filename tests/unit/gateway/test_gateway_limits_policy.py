"""Per-key limits: the pure policy, with ``now`` passed in."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maasbase.common.routing import KeyLimits
from maasbase.gateway.errors import QuotaExceeded, RateLimited
from maasbase.gateway.limits import (
    WINDOW,
    KeyUsage,
    MemoryLimitStore,
    UserBucket,
    admit,
    admit_both,
    consume,
    quota_period,
)


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 8),
    gaps=st.lists(st.floats(0, 30, allow_nan=False), min_size=1, max_size=60),
)
def test_requests_per_minute_is_an_exact_sliding_window(limit: int, gaps: list[float]) -> None:
    usage = KeyUsage()
    limits = KeyLimits(requests_per_minute=limit)
    now = 1_000.0
    admitted: list[float] = []
    for gap in gaps:
        now += gap
        in_window = sum(1 for t in admitted if t > now - WINDOW)
        decision = admit(usage, limits, now)
        # admitted exactly when fewer than the limit started in the last minute
        assert decision.allowed == (in_window < limit)
        if decision.allowed:
            admitted.append(now)
        else:
            assert 0 < decision.retry_after <= WINDOW
            probe = copy.deepcopy(usage)
            assert admit(probe, limits, now + decision.retry_after + 1e-9).allowed
    for t in admitted:  # never more than the limit in any window
        assert sum(1 for u in admitted if t - WINDOW < u <= t) <= limit


def test_tokens_per_minute_admits_while_below_and_says_when() -> None:
    usage = KeyUsage()
    limits = KeyLimits(tokens_per_minute=100)
    assert admit(usage, limits, 0.0).allowed
    consume(usage, limits, 60, 0.0)
    assert admit(usage, limits, 10.0).allowed
    consume(usage, limits, 50, 10.0)  # 110 tokens in the window now
    refused = admit(usage, limits, 20.0)
    assert not refused.allowed
    assert refused.reason == "tokens"
    assert refused.retry_after == pytest.approx(40.0)  # when the first 60 leave the window
    assert admit(usage, limits, 60.0).allowed


def test_quota_counts_per_period_and_renews() -> None:
    usage = KeyUsage()
    limits = KeyLimits(token_quota=1000, quota_period="day")
    morning = ts(2026, 3, 5, 9)
    consume(usage, limits, 1000, morning)
    refused = admit(usage, limits, morning + 60)
    assert not refused.allowed
    assert refused.reason == "quota"
    assert refused.retry_after == pytest.approx(ts(2026, 3, 6) - morning - 60)
    assert admit(usage, limits, ts(2026, 3, 6, 0, 0, 1)).allowed


def test_quota_periods() -> None:
    assert quota_period("day", ts(2026, 3, 5, 23, 59)) == (ts(2026, 3, 5), ts(2026, 3, 6))
    assert quota_period("month", ts(2026, 12, 31, 12)) == (ts(2026, 12, 1), ts(2027, 1, 1))
    assert quota_period("month", ts(2026, 2, 1)) == (ts(2026, 2, 1), ts(2026, 3, 1))


def test_no_limits_admits_everything() -> None:
    usage = KeyUsage()
    for i in range(1000):
        assert admit(usage, KeyLimits(), float(i)).allowed


def test_refusals_become_429_errors_with_retry_after() -> None:
    limits = KeyLimits(requests_per_minute=1, token_quota=5, quota_period="month")
    usage = KeyUsage()
    assert admit(usage, limits, 0.0).allowed
    with pytest.raises(RateLimited) as rate:
        admit(usage, limits, 1.0).raise_if_refused(limits)
    assert rate.value.status_code == 429
    assert rate.value.retry_after == pytest.approx(59.0)
    assert "1 requests per minute" in rate.value.message
    consume(usage, limits, 5, 2.0)
    with pytest.raises(QuotaExceeded) as quota:
        admit(usage, limits, 3.0).raise_if_refused(limits)
    assert quota.value.code == "insufficient_quota"


async def test_memory_store_keeps_keys_apart() -> None:
    store = MemoryLimitStore()
    limits = KeyLimits(requests_per_minute=2)
    results = [(await store.admit(key, limits, 0.0)).allowed for key in (1, 1, 1, 2, 2)]
    assert results == [True, True, False, True, True]
    await store.aclose()


def test_quota_used_before_a_restart_carries_over() -> None:
    """A new gateway process starts from the tokens the control plane already counted."""
    from maasbase.common.routing import KeyLimits, quota_period
    from maasbase.gateway.limits import KeyUsage, admit, consume

    now = 1_800_000_000.0
    start, _ = quota_period("month", now)
    limits = KeyLimits(token_quota=1000, quota_used=990, quota_period_start=start)
    usage = KeyUsage()
    assert admit(usage, limits, now).allowed
    consume(usage, limits, 20, now)
    refused = admit(usage, limits, now + 1)
    assert not refused.allowed
    stale = KeyLimits(token_quota=1000, quota_used=990, quota_period_start=start - 86400 * 31)
    assert admit(KeyUsage(), stale, now).allowed  # last period's count does not carry


def test_a_users_limits_are_shared_by_all_their_keys_and_say_so() -> None:
    key_limits = KeyLimits(requests_per_minute=10)
    user_limits = KeyLimits(requests_per_minute=3)
    user = KeyUsage()
    keys = [KeyUsage(), KeyUsage()]
    results = [admit_both(keys[i % 2], key_limits, user, user_limits, float(i)).allowed
               for i in range(5)]  # fmt: skip
    assert results == [True, True, True, False, False]
    refused = admit_both(keys[0], key_limits, user, user_limits, 5.0)
    assert refused.level == "user"
    shared = r"your user account \(3 requests per minute, shared by all your API keys\)"
    with pytest.raises(RateLimited, match=shared):
        refused.raise_if_refused(key_limits, user_limits)
    # refused requests counted nowhere: the keys hold only what was admitted
    assert len(keys[0].requests.entries) + len(keys[1].requests.entries) == 3


def test_the_keys_own_limit_refuses_first_and_counts_nothing_for_the_user() -> None:
    key_limits = KeyLimits(requests_per_minute=1)
    user_limits = KeyLimits(requests_per_minute=5, token_quota=100, quota_period="day")
    key, user = KeyUsage(), KeyUsage()
    assert admit_both(key, key_limits, user, user_limits, 0.0).allowed
    refused = admit_both(key, key_limits, user, user_limits, 1.0)
    assert (refused.allowed, refused.level) == (False, "key")
    with pytest.raises(RateLimited, match="this API key"):
        refused.raise_if_refused(key_limits, user_limits)
    assert len(user.requests.entries) == 1
    consume(user, user_limits, 100, 2.0)
    other_key = KeyUsage()
    quota = admit_both(other_key, KeyLimits(), user, user_limits, 3.0)
    assert (quota.allowed, quota.reason, quota.level) == (False, "quota", "user")
    with pytest.raises(QuotaExceeded, match=r"your user account used its quota of 100 tokens"):
        quota.raise_if_refused(KeyLimits(), user_limits)


async def test_memory_store_keeps_user_buckets_apart_from_key_buckets() -> None:
    store = MemoryLimitStore()
    user = UserBucket(1, KeyLimits(requests_per_minute=2))
    # key id 1 and user id 1 are different buckets
    assert (await store.admit(1, KeyLimits(requests_per_minute=5), 0.0, user)).allowed
    assert (await store.admit(2, KeyLimits(), 0.0, user)).allowed
    third = await store.admit(1, KeyLimits(requests_per_minute=5), 0.0, user)
    assert (third.allowed, third.level) == (False, "user")
    assert (await store.admit(1, KeyLimits(requests_per_minute=5), 0.0)).allowed
