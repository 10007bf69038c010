"""Keys never exceed their creator: the pure subset decision, dimension by dimension."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maasbase.common.auth import Scope
from maasbase.server.key_policy import SESSION, KeyPowers, excess, scope_covers

T0 = datetime(2027, 1, 1, tzinfo=UTC)
MODELS = ["a", "b", "c", "d"]

limits = st.none() | st.integers(1, 100)
powers = st.builds(
    KeyPowers,
    scope=st.sampled_from(list(Scope)),
    allowed_models=st.none() | st.frozensets(st.sampled_from(MODELS), min_size=1),
    expires_at=st.none() | st.integers(1, 100).map(lambda h: T0 + timedelta(hours=h)),
    rpm_limit=limits,
    tpm_limit=limits,
    token_quota=limits,
    quota_period=st.sampled_from(["day", "month"]),
)


def fits(outer: KeyPowers, inner: KeyPowers) -> bool:
    """The reference: may a holder of ``outer`` do, with ``inner``, only what it could
    do itself?"""

    def limit_ok(o: int | None, i: int | None) -> bool:
        return o is None or (i is not None and i <= o)

    return (
        scope_covers(outer.scope, inner.scope)
        and (
            outer.allowed_models is None
            or (inner.allowed_models is not None and inner.allowed_models <= outer.allowed_models)
        )
        and (
            outer.expires_at is None
            or (inner.expires_at is not None and inner.expires_at <= outer.expires_at)
        )
        and limit_ok(outer.rpm_limit, inner.rpm_limit)
        and limit_ok(outer.tpm_limit, inner.tpm_limit)
        and limit_ok(outer.token_quota, inner.token_quota)
        and (outer.token_quota is None or outer.quota_period == inner.quota_period)
    )


@settings(max_examples=500, deadline=None)
@given(creator=powers, wanted=powers)
def test_a_key_is_allowed_exactly_when_it_fits_inside_its_creator(
    creator: KeyPowers, wanted: KeyPowers
) -> None:
    assert (excess(creator, wanted) is None) == fits(creator, wanted)


@settings(max_examples=300, deadline=None)
@given(creator=powers, middle=powers, wanted=powers)
def test_no_chain_of_keys_grows_wider(
    creator: KeyPowers, middle: KeyPowers, wanted: KeyPowers
) -> None:
    if excess(creator, middle) is None and excess(middle, wanted) is None:
        assert excess(creator, wanted) is None


@settings(max_examples=200, deadline=None)
@given(p=powers)
def test_a_session_may_create_any_key_and_a_key_may_copy_itself(p: KeyPowers) -> None:
    assert excess(SESSION, p) is None
    assert excess(p, p) is None


LIMITED = KeyPowers(
    scope=Scope.MANAGEMENT,
    allowed_models=frozenset({"a"}),
    expires_at=T0,
    rpm_limit=10,
    tpm_limit=1000,
    token_quota=5000,
    quota_period="day",
)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"scope": Scope.ALL}, "scope"),
        ({"scope": Scope.INFERENCE}, "scope"),
        ({"allowed_models": None}, "allowed_models"),
        ({"allowed_models": frozenset({"a", "b"})}, "allowed_models"),
        ({"expires_at": None}, "expires_at"),
        ({"expires_at": T0 + timedelta(seconds=1)}, "expires_at"),
        ({"rpm_limit": None}, "rpm_limit"),
        ({"rpm_limit": 11}, "rpm_limit"),
        ({"tpm_limit": 1001}, "tpm_limit"),
        ({"token_quota": None}, "token_quota"),
        ({"quota_period": "month"}, "quota_period"),
    ],
)
def test_the_refusal_names_the_dimension(change: dict[str, object], named: str) -> None:
    wanted = KeyPowers(**{**LIMITED.__dict__, **change})  # type: ignore[arg-type]
    message = excess(LIMITED, wanted)
    assert message is not None
    assert message.startswith(f"{named}:"), message
