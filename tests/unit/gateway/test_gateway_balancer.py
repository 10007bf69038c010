"""Load-balancing policies: pure functions of upstreams, carried load and ``now``."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maasbase.common.routing import RoutedModel, Upstream
from maasbase.gateway.balancer import Balancer, Cooldown, Policy, UpstreamHealth


def model(*weights: float) -> RoutedModel:
    ups = [
        Upstream(id=f"u{i}", base_url=f"http://10.0.0.{i}/v1", weight=w)
        for i, w in enumerate(weights)
    ]
    return RoutedModel(name="m", upstreams=ups)


def spread(balancer: Balancer, routed: RoutedModel, n: int, **kwargs: object) -> Counter[str]:
    picks: Counter[str] = Counter()
    for _ in range(n):
        chosen = balancer.choose(routed, 0.0, **kwargs)  # type: ignore[arg-type]
        assert chosen is not None
        picks[chosen.id] += 1
    return picks


@st.composite
def situations(draw: st.DrawFn) -> tuple[RoutedModel, dict[str, UpstreamHealth], list[str]]:
    count = draw(st.integers(1, 6))
    weights = draw(st.lists(st.sampled_from([0.5, 1.0, 2.0, 5.0]), min_size=count, max_size=count))
    routed = model(*weights)
    health = {
        u.id: UpstreamHealth(
            outstanding=draw(st.integers(0, 20)),
            failures=draw(st.integers(0, 3)),
            cooldown_until=draw(st.sampled_from([0.0, 5.0, 50.0])),
        )
        for u in routed.upstreams
    }
    exclude = draw(st.lists(st.sampled_from([u.id for u in routed.upstreams]), max_size=count))
    return routed, health, exclude


@settings(max_examples=300, deadline=None)
@given(
    situation=situations(),
    policy=st.sampled_from(list(Policy)),
    affinity=st.none() | st.text(max_size=8),
    seed=st.integers(0, 1000),
)
def test_never_picks_a_cooling_or_excluded_upstream_while_a_healthy_one_exists(
    situation: tuple[RoutedModel, dict[str, UpstreamHealth], list[str]],
    policy: Policy,
    affinity: str | None,
    seed: int,
) -> None:
    routed, health, exclude = situation
    now = 10.0
    balancer = Balancer(policy, rng=random.Random(seed), health=health)
    chosen = balancer.choose(routed, now, affinity=affinity, exclude=exclude)
    allowed = [u for u in routed.upstreams if u.id not in exclude]
    healthy = [u for u in allowed if not health[u.id].cooling(now)]
    if not exclude and len(routed.upstreams) == 1:
        assert chosen == routed.upstreams[0]
    elif not allowed:
        assert chosen is None
    elif healthy:
        assert chosen in healthy
    else:  # every allowed one is cooling down: the one back soonest
        assert chosen is not None
        assert health[chosen.id].cooldown_until == min(health[u.id].cooldown_until for u in allowed)


@settings(max_examples=200, deadline=None)
@given(loads=st.lists(st.integers(0, 50), min_size=2, max_size=2), seed=st.integers(0, 1000))
def test_p2c_with_two_upstreams_takes_the_less_loaded(loads: list[int], seed: int) -> None:
    routed = model(1.0, 1.0)
    balancer = Balancer(Policy.P2C, rng=random.Random(seed))
    for upstream, load in zip(routed.upstreams, loads, strict=True):
        balancer.health[upstream.id] = UpstreamHealth(outstanding=load)
    chosen = balancer.choose(routed, 0.0)
    assert chosen is not None
    assert balancer.health[chosen.id].outstanding == min(loads)


def test_p2c_spreads_in_flight_requests_evenly() -> None:
    routed = model(1.0, 1.0, 1.0, 1.0)
    balancer = Balancer(Policy.P2C, rng=random.Random(1))
    for _ in range(400):  # requests that all stay in flight
        chosen = balancer.choose(routed, 0.0)
        assert chosen is not None
        balancer.acquire(chosen.id)
    loads = [balancer.health[u.id].outstanding for u in routed.upstreams]
    assert max(loads) - min(loads) <= 2


def test_p2c_prefers_the_heavier_weight_under_load() -> None:
    routed = model(1.0, 3.0)
    balancer = Balancer(Policy.P2C, rng=random.Random(2))
    for _ in range(400):
        chosen = balancer.choose(routed, 0.0)
        assert chosen is not None
        balancer.acquire(chosen.id)
    light, heavy = (balancer.health[u.id].outstanding for u in routed.upstreams)
    assert heavy == pytest.approx(3 * light, rel=0.1)


def test_least_outstanding_picks_the_minimum() -> None:
    routed = model(1.0, 1.0, 1.0)
    balancer = Balancer(Policy.LEAST, rng=random.Random(0))
    for upstream, load in zip(routed.upstreams, [4, 1, 3], strict=True):
        balancer.health[upstream.id] = UpstreamHealth(outstanding=load)
    assert spread(balancer, routed, 20) == Counter({"u1": 20})


def test_round_robin_cycles_through_every_upstream() -> None:
    balancer = Balancer(Policy.ROUND_ROBIN)
    assert spread(balancer, model(1.0, 1.0, 1.0), 300) == Counter(u0=100, u1=100, u2=100)


def test_weighted_follows_the_weights() -> None:
    balancer = Balancer(Policy.WEIGHTED, rng=random.Random(3))
    picks = spread(balancer, model(1.0, 4.0), 5000)
    assert picks["u1"] / 5000 == pytest.approx(0.8, abs=0.03)


def test_affinity_keeps_a_key_on_one_upstream_and_spreads_keys() -> None:
    routed = model(1.0, 1.0, 1.0)
    balancer = Balancer(Policy.P2C, rng=random.Random(0))
    for key in ("alice", "bob", "carol"):
        assert len(spread(balancer, routed, 20, affinity=key)) == 1
    owners = Counter()
    for i in range(300):
        chosen = balancer.choose(routed, 0.0, affinity=f"session-{i}")
        assert chosen is not None
        owners[chosen.id] += 1
    assert min(owners.values()) > 60


def test_affinity_agrees_across_gateway_replicas() -> None:
    routed = model(1.0, 1.0, 1.0, 1.0)
    first, second = Balancer(rng=random.Random(1)), Balancer(rng=random.Random(2))
    for i in range(50):
        key = f"prefix-{i}"
        assert first.choose(routed, 0.0, affinity=key) == second.choose(routed, 0.0, affinity=key)


def test_affinity_moves_off_an_overloaded_upstream() -> None:
    routed = model(1.0, 1.0)
    balancer = Balancer()
    home = balancer.choose(routed, 0.0, affinity="k")
    assert home is not None
    balancer.health[home.id] = UpstreamHealth(outstanding=10)
    other = balancer.choose(routed, 0.0, affinity="k")
    assert other is not None
    assert other.id != home.id
    balancer.health[home.id] = UpstreamHealth(outstanding=0)
    assert balancer.choose(routed, 0.0, affinity="k") == home


def test_failed_upstream_cools_down_with_doubling_and_comes_back() -> None:
    routed = model(1.0, 1.0)
    balancer = Balancer(Policy.ROUND_ROBIN, cooldown=Cooldown(base=2.0, maximum=5.0))
    assert balancer.failed("u0", now=100.0) == 2.0
    assert spread(balancer, routed, 10) == Counter(u1=10)  # at now=0 < 102: cooling
    assert balancer.choose(routed, 102.0) is not None
    picks = {balancer.choose(routed, 102.0).id for _ in range(4)}  # type: ignore[union-attr]
    assert picks == {"u0", "u1"}  # back in rotation
    assert balancer.failed("u0", now=200.0) == 4.0
    assert balancer.failed("u0", now=201.0) is None  # a request already in flight: no longer
    assert balancer.failed("u0", now=204.0) == 5.0  # failed again once back: capped
    balancer.succeeded("u0")
    assert balancer.health["u0"] == UpstreamHealth()


def test_slots_are_released_and_stale_upstreams_forgotten() -> None:
    balancer = Balancer()
    balancer.acquire("a")
    balancer.acquire("b")
    balancer.release("b")
    balancer.release("b")  # never below zero
    assert balancer.health["b"].outstanding == 0
    balancer.retain({"c"})
    assert set(balancer.health) == {"a"}  # "a" still has a request in flight
