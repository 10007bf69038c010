"""Key material, access tokens, password hashing and the login throttle policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maasbase.common.errors import InvalidRequest
from maasbase.server.security import api_keys, passwords, tokens
from maasbase.server.security.throttle import LoginThrottle, ThrottlePolicy, retry_after


def test_api_key_round_trip() -> None:
    material = api_keys.generate()
    parsed = api_keys.parse(material.full_key)
    assert parsed == material
    assert api_keys.secret_matches(material.secret, api_keys.hash_secret(material.secret))
    assert not api_keys.secret_matches(material.secret + "x", api_keys.hash_secret(material.secret))
    assert api_keys.generate().full_key != material.full_key


@pytest.mark.parametrize(
    "bad", ["", "mb_", "mb_short_x", "sk-abc", "mb_0123456789abcdef_", "xx_0123456789abcdef_s"]
)
def test_malformed_keys_do_not_parse(bad: str) -> None:
    assert api_keys.parse(bad) is None


SECRET = "s" * 48


def test_access_tokens() -> None:
    token = tokens.issue(SECRET, user_id=7, account="ann@1", token_version=3, now=1000.0, ttl=60)
    claims = tokens.verify(SECRET, token, now=1030.0)
    assert (claims.user_id, claims.account, claims.token_version) == (7, "ann@1", 3)
    again = tokens.issue(SECRET, user_id=7, account="ann@1", token_version=3, now=1000.0, ttl=60)
    assert tokens.verify(SECRET, again, now=1030.0).jti != claims.jti  # logout ends one
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.verify(SECRET, token, now=1061.0)
    with pytest.raises(tokens.InvalidToken):
        tokens.verify("o" * 48, token, now=1030.0)
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(SECRET, token[:-2] + "xx", now=1030.0)


async def test_passwords() -> None:
    hashed = await passwords.hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert await passwords.verify_password(hashed, "correct horse")
    assert not await passwords.verify_password(hashed, "wrong horse")
    assert not await passwords.verify_password(None, "correct horse")
    assert not await passwords.verify_password("garbage", "correct horse")
    with pytest.raises(InvalidRequest, match="at least 8"):
        passwords.check_strength("short")


POLICY = ThrottlePolicy(max_failures=3, window=60.0)


def test_throttle_locks_after_max_failures_and_unlocks_after_window() -> None:
    throttle = LoginThrottle(POLICY)
    for t in (0.0, 1.0):
        throttle.record_failure("Admin", "1.2.3.4", t)
        assert throttle.check("admin", "1.2.3.4", t) == 0
    throttle.record_failure("admin", "1.2.3.4", 2.0)
    assert throttle.check("admin", "1.2.3.4", 2.0) == pytest.approx(58.0)
    assert throttle.check("admin", "5.6.7.8", 2.0) == 0  # other clients unaffected
    assert throttle.check("admin", "1.2.3.4", 60.5) == 0
    throttle.record_success("admin", "1.2.3.4")
    assert throttle.check("admin", "1.2.3.4", 3.0) == 0


@given(st.lists(st.floats(min_value=0, max_value=200), max_size=20), st.floats(0, 1000))
def test_throttle_policy_properties(ages: list[float], now: float) -> None:
    failures = [now - age for age in ages]
    wait = retry_after(tuple(failures), POLICY, now)
    recent = [t for t in failures if now - t < POLICY.window]
    if len(recent) < POLICY.max_failures:
        assert wait == 0
    else:
        assert 0 < wait <= POLICY.window
        # Once the wait is over, the same failures no longer lock.
        assert retry_after(tuple(failures), POLICY, now + wait) == 0


def test_throttle_wait_is_bounded_when_the_clock_steps_back() -> None:
    assert retry_after((100.0, 100.0, 100.0), POLICY, now=0.0) == POLICY.window
