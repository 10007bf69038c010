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
    admit,
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
