"""The model instance state machine: one transition table, one owner per transition.

    from                          → to            owner
    pending                       → analyzing     scheduler (starts placing it)
    analyzing                     → scheduled     scheduler (placement found)
    analyzing                     → pending       scheduler (unschedulable; retried later)
    analyzing                     → error         scheduler (model metadata unreadable)
    scheduled                     → downloading | starting | running | error   worker
    downloading                   → starting | running | error                  worker
    starting                      → running | error | downloading               worker
    running                       → error | starting                            worker
    error                         → downloading | starting | running            worker (late report)
    error                         → scheduled     controller (restart after backoff)
    error                         → pending       controller (metadata retry)
    scheduled | downloading | starting | running | error → unreachable   controller (worker lost)
    unreachable                   → downloading | starting | running | error   worker (back)
    unreachable                   → pending       controller (rescheduled after the grace period)
    scheduled … running, error    → pending       controller (its worker was deleted)

Every change records a human-readable message next to the state.
"""

from __future__ import annotations

from enum import StrEnum

from maasbase.common.instances import InstanceState

I = InstanceState  # noqa: E741


class Owner(StrEnum):
    SCHEDULER = "scheduler"
    WORKER = "worker"
    CONTROLLER = "controller"


_ON_WORKER = (I.DOWNLOADING, I.STARTING, I.RUNNING, I.ERROR)

TRANSITIONS: dict[tuple[InstanceState, InstanceState], Owner] = {
    (I.PENDING, I.ANALYZING): Owner.SCHEDULER,
    (I.ANALYZING, I.SCHEDULED): Owner.SCHEDULER,
    (I.ANALYZING, I.PENDING): Owner.SCHEDULER,
    (I.ANALYZING, I.ERROR): Owner.SCHEDULER,
    **{(I.SCHEDULED, to): Owner.WORKER for to in _ON_WORKER},
    **{(I.DOWNLOADING, to): Owner.WORKER for to in (I.STARTING, I.RUNNING, I.ERROR)},
    **{(I.STARTING, to): Owner.WORKER for to in (I.RUNNING, I.ERROR, I.DOWNLOADING)},
    **{(I.RUNNING, to): Owner.WORKER for to in (I.ERROR, I.STARTING)},
    **{(I.ERROR, to): Owner.WORKER for to in (I.DOWNLOADING, I.STARTING, I.RUNNING)},
    (I.ERROR, I.SCHEDULED): Owner.CONTROLLER,
    **{
        (frm, I.PENDING): Owner.CONTROLLER
        for frm in (I.SCHEDULED, I.DOWNLOADING, I.STARTING, I.RUNNING, I.ERROR)
    },
    **{
        (frm, I.UNREACHABLE): Owner.CONTROLLER
        for frm in (I.SCHEDULED, I.DOWNLOADING, I.STARTING, I.RUNNING, I.ERROR)
    },
    **{(I.UNREACHABLE, to): Owner.WORKER for to in _ON_WORKER},
    (I.UNREACHABLE, I.PENDING): Owner.CONTROLLER,
}

# States in which an instance holds its worker's GPUs.
PLACED = frozenset({I.SCHEDULED, I.DOWNLOADING, I.STARTING, I.RUNNING, I.ERROR, I.UNREACHABLE})
# States a worker is told to run (the assignment list). Unreachable instances stay on
# the list: when their worker returns, it keeps serving them instead of starting over.
ASSIGNED = PLACED


class IllegalTransition(Exception):
    pass


def check(current: InstanceState, new: InstanceState, owner: Owner) -> None:
    """Raise unless ``owner`` may move an instance from ``current`` to ``new``."""
    allowed = TRANSITIONS.get((current, new))
    if allowed is not owner:
        raise IllegalTransition(f"{owner} may not move an instance from {current} to {new}")


def restart_delay(restart_count: int, *, base: float = 2.0, cap: float = 300.0) -> float:
    """Seconds to wait before restart number ``restart_count + 1`` (exponential, capped)."""
    return float(min(cap, base * (2 ** min(restart_count, 30))))
