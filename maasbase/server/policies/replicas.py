"""Replica count and rolling updates for one model: a pure plan over a snapshot.

* Instances of the model's current spec are scaled to ``replicas``; scale-down removes
  the least valuable first (pending before failed before running; newest first).
* When the spec changed, outdated instances are replaced one at a time: a new one is
  started, and an outdated running one is stopped only once the running count would
  still be at least ``replicas``. Outdated instances that serve nothing are removed at
  once. If the new instance cannot be placed for ``stuck_after`` seconds (no spare
  capacity), one outdated instance is stopped to make room.
"""

from __future__ import annotations

from dataclasses import dataclass

from maasbase.common.instances import InstanceState

I = InstanceState  # noqa: E741

# Lower = less valuable = removed first.
_VALUE = {
    I.PENDING: 0,
    I.ANALYZING: 1,
    I.ERROR: 2,
    I.UNREACHABLE: 3,
    I.SCHEDULED: 4,
    I.DOWNLOADING: 5,
    I.STARTING: 6,
    I.RUNNING: 7,
}


@dataclass(frozen=True)
class InstanceView:
    id: int
    state: InstanceState
    spec_hash: str
    state_changed_at: float


@dataclass(frozen=True)
class Create:
    count: int
    reason: str


@dataclass(frozen=True)
class Remove:
    instance_id: int
    reason: str


Action = Create | Remove


def least_valuable_first(instances: list[InstanceView]) -> list[InstanceView]:
    return sorted(instances, key=lambda i: (_VALUE[i.state], -i.id))


def plan(
    *,
    replicas: int,
    spec_hash: str,
    instances: list[InstanceView],
    now: float,
    stuck_after: float = 120.0,
) -> list[Action]:
    current = [i for i in instances if i.spec_hash == spec_hash]
    outdated = [i for i in instances if i.spec_hash != spec_hash]
    actions: list[Action] = []

    outdated_running = [i for i in outdated if i.state is I.RUNNING]
    for instance in outdated:
        if instance.state is not I.RUNNING:
            actions.append(Remove(instance.id, "replaced by the updated spec"))

    if len(current) > replicas:
        surplus = least_valuable_first(current)[: len(current) - replicas]
        actions.extend(Remove(i.id, f"scaled down to {replicas}") for i in surplus)
        current = [i for i in current if i not in surplus]

    if not outdated_running:
        if len(current) < replicas:
            actions.append(Create(replicas - len(current), f"scaling up to {replicas}"))
        return actions

    # Rolling update: one new instance in flight at a time.
    running_current = [i for i in current if i.state is I.RUNNING]
    in_flight = [i for i in current if i.state is not I.RUNNING]
    if len(current) < replicas and not in_flight:
        actions.append(Create(1, "rolling update: starting a replacement"))
    excess = len(running_current) + len(outdated_running) - replicas
    oldest_first = sorted(outdated_running, key=lambda i: i.id)
    if excess > 0:
        for instance in oldest_first[:excess]:
            actions.append(Remove(instance.id, "rolling update: replacement is running"))
    elif in_flight and all(
        i.state is I.PENDING and now - i.state_changed_at >= stuck_after for i in in_flight
    ):
        actions.append(Remove(oldest_first[0].id, "rolling update: no spare capacity, making room"))
    return actions
