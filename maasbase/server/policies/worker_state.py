"""Worker state: derived from observed facts, never assigned ad hoc.

A worker's state is a function of two facts, its maintenance flag and the age of its
last heartbeat. Whoever observes a fact changes (heartbeat handler, liveness
controller, admin) re-derives the state; the transition table below says which
changes each of them may cause.

    from         → to            owner
    not_ready    → ready         heartbeat handler (first heartbeat)
    unreachable  → ready         heartbeat handler (worker is back)
    ready        → unreachable   liveness controller (heartbeat older than the timeout)
    not_ready    → unreachable   liveness controller
    any          → maintenance   admin (PATCH maintenance=true)
    maintenance  → ready | unreachable | not_ready   admin (PATCH maintenance=false)
    ready | unreachable → not_ready                  registration handler (worker restarted)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from maasbase.common.workers import WorkerState

S = WorkerState


class Owner(StrEnum):
    HEARTBEAT = "heartbeat handler"
    LIVENESS = "liveness controller"
    ADMIN = "admin"
    REGISTRATION = "registration handler"


TRANSITIONS: dict[tuple[WorkerState, WorkerState], Owner] = {
    (S.NOT_READY, S.READY): Owner.HEARTBEAT,
    (S.UNREACHABLE, S.READY): Owner.HEARTBEAT,
    (S.READY, S.UNREACHABLE): Owner.LIVENESS,
    (S.NOT_READY, S.UNREACHABLE): Owner.LIVENESS,
    (S.NOT_READY, S.MAINTENANCE): Owner.ADMIN,
    (S.READY, S.MAINTENANCE): Owner.ADMIN,
    (S.UNREACHABLE, S.MAINTENANCE): Owner.ADMIN,
    (S.MAINTENANCE, S.READY): Owner.ADMIN,
    (S.MAINTENANCE, S.UNREACHABLE): Owner.ADMIN,
    (S.MAINTENANCE, S.NOT_READY): Owner.ADMIN,
    (S.READY, S.NOT_READY): Owner.REGISTRATION,
    (S.UNREACHABLE, S.NOT_READY): Owner.REGISTRATION,
}


class IllegalTransition(Exception):
    pass


@dataclass(frozen=True)
class WorkerFacts:
    maintenance: bool
    registered_at: float  # epoch seconds of the latest registration
    last_heartbeat: float | None  # epoch seconds, None before the first heartbeat


@dataclass(frozen=True)
class Change:
    to: WorkerState
    owner: Owner
    message: str


def derive(facts: WorkerFacts, *, now: float, timeout: float) -> WorkerState:
    if facts.maintenance:
        return S.MAINTENANCE
    if facts.last_heartbeat is None or facts.last_heartbeat < facts.registered_at:
        return S.UNREACHABLE if now - facts.registered_at > timeout else S.NOT_READY
    if now - facts.last_heartbeat > timeout:
        return S.UNREACHABLE
    return S.READY


def _message(current: WorkerState, new: WorkerState, facts: WorkerFacts, now: float) -> str:
    if new is S.MAINTENANCE:
        return "in maintenance: no new instances are scheduled here"
    if new is S.UNREACHABLE:
        if facts.last_heartbeat is None or facts.last_heartbeat < facts.registered_at:
            return "registered but sent no heartbeat; check that the worker process runs"
        age = now - facts.last_heartbeat
        return f"no heartbeat for {age:.0f} s; check the worker process and the network"
    if new is S.READY:
        return "heartbeats arriving" if current is not S.MAINTENANCE else "maintenance ended"
    return "waiting for the first heartbeat"


def decide(
    current: WorkerState, facts: WorkerFacts, *, now: float, timeout: float, owner: Owner
) -> Change | None:
    """The state change ``owner`` should record, or ``None`` when nothing changes.

    Raises ``IllegalTransition`` when the derived change is not ``owner``'s to make.
    """
    new = derive(facts, now=now, timeout=timeout)
    if new is current:
        return None
    allowed = TRANSITIONS.get((current, new))
    if allowed is None or allowed is not owner:
        raise IllegalTransition(f"{owner} may not move a worker from {current} to {new}")
    return Change(to=new, owner=owner, message=_message(current, new, facts, now))
