"""Load balancing across a model's upstreams: pure policies plus the state they carry.

No I/O and no clock reads here: callers pass ``now`` and a seeded ``random.Random``.
The state is the number of requests in flight per upstream (released in the proxy's
``finally``) and a cooldown per upstream that failed (connection error, 502, 503):
a cooled-down upstream is skipped while any other is healthy, and comes back by
itself when its cooldown ends; each further failure in a row doubles the cooldown.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from maasbase.common.routing import RoutedModel, Upstream


class Policy(StrEnum):
    P2C = "p2c"  # power of two choices on requests in flight per unit of weight (default)
    LEAST = "least"  # the fewest requests in flight per unit of weight, over every upstream
    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"  # random, proportional to weight


@dataclass
class UpstreamHealth:
    outstanding: int = 0
    failures: int = 0  # in a row; reset by a success
    cooldown_until: float = 0.0

    def cooling(self, now: float) -> bool:
        return self.cooldown_until > now


@dataclass(frozen=True)
class Cooldown:
    base: float = 5.0
    maximum: float = 60.0

    def duration(self, failures: int) -> float:
        return min(self.maximum, self.base * (1 << max(0, failures - 1)))


_IDLE = UpstreamHealth()
AFFINITY_LOAD_FACTOR = 1.25  # consistent hashing with bounded loads


def _load(upstream: Upstream, health: dict[str, UpstreamHealth]) -> float:
    return health.get(upstream.id, _IDLE).outstanding / upstream.weight


def candidates(
    upstreams: Sequence[Upstream],
    health: dict[str, UpstreamHealth],
    now: float,
    exclude: Collection[str] = (),
) -> list[Upstream]:
    """Healthy upstreams not excluded; when every one is cooling down, the one whose
    cooldown ends first (better a likely failure, retried elsewhere, than none)."""
    allowed = [u for u in upstreams if u.id not in exclude] if exclude else list(upstreams)
    healthy = [u for u in allowed if not health.get(u.id, _IDLE).cooling(now)]
    if healthy or not allowed:
        return healthy
    return [min(allowed, key=lambda u: health[u.id].cooldown_until)]


def pick_p2c(
    upstreams: Sequence[Upstream], health: dict[str, UpstreamHealth], rng: random.Random
) -> Upstream:
    """Two random candidates (by weight), the less loaded of them."""
    count = len(upstreams)
    if count == 1:
        return upstreams[0]
    weight = upstreams[0].weight
    if all(u.weight == weight for u in upstreams):
        random = rng.random  # two draws in C; randrange costs a few Python calls each
        i = int(random() * count)
        j = int(random() * (count - 1))
        first, second = upstreams[i], upstreams[j + 1 if j >= i else j]
    else:
        first = rng.choices(upstreams, weights=[u.weight for u in upstreams])[0]
        rest = [u for u in upstreams if u is not first]
        second = rng.choices(rest, weights=[u.weight for u in rest])[0]
    return second if _load(second, health) < _load(first, health) else first


def pick_least(
    upstreams: Sequence[Upstream], health: dict[str, UpstreamHealth], rng: random.Random
) -> Upstream:
    best = min(_load(u, health) for u in upstreams)
    return rng.choice([u for u in upstreams if _load(u, health) == best])


def pick_weighted(upstreams: Sequence[Upstream], rng: random.Random) -> Upstream:
    return rng.choices(upstreams, weights=[u.weight for u in upstreams])[0]


def _rendezvous_score(key: str, upstream: Upstream) -> float:
    digest = hashlib.blake2b(f"{key}\0{upstream.id}".encode(), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 1) / (2**64 + 2)  # in (0, 1)
    return upstream.weight / -math.log(unit)


def pick_affinity(
    upstreams: Sequence[Upstream], health: dict[str, UpstreamHealth], key: str
) -> Upstream:
    """Weighted rendezvous hashing: the same key goes to the same upstream (and reuses its
    KV cache) unless that upstream carries more than its share of the load, in which case
    the key's next upstream in rendezvous order takes it. Every gateway replica agrees."""
    ranked = sorted(upstreams, key=lambda u: _rendezvous_score(key, u), reverse=True)
    if len(ranked) == 1:
        return ranked[0]
    total = sum(health.get(u.id, _IDLE).outstanding for u in upstreams) + 1
    weights = sum(u.weight for u in upstreams)
    for upstream in ranked:
        share = math.ceil(AFFINITY_LOAD_FACTOR * total * upstream.weight / weights)
        if health.get(upstream.id, _IDLE).outstanding < share:
            return upstream
    return ranked[0]


class Balancer:
    """Chooses an upstream per request and carries in-flight counts and cooldowns."""

    def __init__(
        self,
        policy: Policy = Policy.P2C,
        *,
        cooldown: Cooldown | None = None,
        rng: random.Random | None = None,
        health: dict[str, UpstreamHealth] | None = None,
    ) -> None:
        self.policy = policy
        self.cooldown = cooldown or Cooldown()
        self.rng = rng or random.Random()
        self.health: dict[str, UpstreamHealth] = health or {}
        self._turn: dict[str, int] = {}
        # no upstream is cooling down from then on: choose skips the health scan
        self._all_healthy_after = max((h.cooldown_until for h in self.health.values()), default=0.0)

    def choose(
        self,
        model: RoutedModel,
        now: float,
        *,
        affinity: str | None = None,
        exclude: Collection[str] = (),
    ) -> Upstream | None:
        if len(model.upstreams) == 1 and not exclude:
            return model.upstreams[0]  # healthy or not, the only one there is
        if exclude or now < self._all_healthy_after:
            pool: Sequence[Upstream] = candidates(model.upstreams, self.health, now, exclude)
        else:
            pool = model.upstreams
        if not pool:
            return None
        if len(pool) == 1:
            return pool[0]
        if affinity is not None:
            return pick_affinity(pool, self.health, affinity)
        if self.policy is Policy.P2C:
            return pick_p2c(pool, self.health, self.rng)
        if self.policy is Policy.LEAST:
            return pick_least(pool, self.health, self.rng)
        if self.policy is Policy.WEIGHTED:
            return pick_weighted(pool, self.rng)
        turn = self._turn.get(model.name, 0)
        self._turn[model.name] = turn + 1
        return pool[turn % len(pool)]

    def _state(self, upstream_id: str) -> UpstreamHealth:
        state = self.health.get(upstream_id)
        if state is None:
            state = self.health[upstream_id] = UpstreamHealth()
        return state

    def acquire(self, upstream_id: str) -> None:
        self._state(upstream_id).outstanding += 1

    def release(self, upstream_id: str) -> None:
        state = self._state(upstream_id)
        state.outstanding = max(0, state.outstanding - 1)

    def failed(self, upstream_id: str, now: float) -> float | None:
        """Take the upstream out of rotation; returns how long for, or None when it already
        was (requests in flight when its cooldown began do not lengthen it)."""
        state = self._state(upstream_id)
        if state.cooling(now):
            return None
        state.failures += 1
        duration = self.cooldown.duration(state.failures)
        state.cooldown_until = now + duration
        self._all_healthy_after = max(self._all_healthy_after, state.cooldown_until)
        return duration

    def succeeded(self, upstream_id: str) -> None:
        state = self.health.get(upstream_id)
        if state is not None and (state.failures or state.cooldown_until):
            state.failures = 0
            state.cooldown_until = 0.0

    def retain(self, upstream_ids: Collection[str]) -> None:
        """Forget idle upstreams that left the routing table."""
        for upstream_id in list(self.health):
            if upstream_id not in upstream_ids and not self.health[upstream_id].outstanding:
                del self.health[upstream_id]
