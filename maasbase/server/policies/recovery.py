"""What to do with one placed instance given its worker's state: pure.

* worker unreachable → instance ``unreachable``;
* unreachable longer than the grace period, or worker deleted → back to ``pending``
  (its GPUs are released and the scheduler places it elsewhere);
* failed and its backoff elapsed → ``scheduled`` again with ``restart_count + 1`` (the
  worker sees the new count and restarts it).
"""

from __future__ import annotations

from dataclasses import dataclass

from maasbase.common.instances import InstanceState
from maasbase.common.workers import WorkerState

I = InstanceState  # noqa: E741

_ON_WORKER = frozenset({I.SCHEDULED, I.DOWNLOADING, I.STARTING, I.RUNNING, I.ERROR})


@dataclass(frozen=True)
class PlacedView:
    state: InstanceState
    worker_name: str | None  # None: the worker record is gone
    worker_state: WorkerState | None
    state_changed_at: float
    next_restart_at: float | None
    restart_count: int


@dataclass(frozen=True)
class Step:
    to: InstanceState
    message: str
    restart: bool = False  # bump restart_count
    release: bool = False  # give up the placement


def recover(instance: PlacedView, *, now: float, grace: float) -> Step | None:
    placed = instance.state in _ON_WORKER or instance.state is I.UNREACHABLE
    if placed and instance.worker_name is None:
        return Step(I.PENDING, "its worker was removed; rescheduling", release=True)
    if instance.state in _ON_WORKER and instance.worker_state is WorkerState.UNREACHABLE:
        return Step(
            I.UNREACHABLE,
            f"worker {instance.worker_name} is unreachable; rescheduling after {grace:.0f} s "
            "unless it returns",
        )
    if instance.state is I.UNREACHABLE and now - instance.state_changed_at >= grace:
        return Step(
            I.PENDING,
            f"worker {instance.worker_name} unreachable for {now - instance.state_changed_at:.0f}"
            " s; rescheduling elsewhere",
            release=True,
        )
    if (
        instance.state is I.ERROR
        and instance.worker_state is not WorkerState.UNREACHABLE
        and instance.next_restart_at is not None
        and instance.next_restart_at <= now
    ):
        return Step(
            I.SCHEDULED, f"restarting after failure (restart {instance.restart_count + 1})",
            restart=True,
        )  # fmt: skip
    return None
