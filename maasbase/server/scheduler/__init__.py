"""Placement of model instances onto workers and GPUs.

Filters (state, labels, manual GPU selection, vendor fit) → candidates (one GPU, a
tensor-parallel group on one worker, groups on several workers, or a CPU) → scorers
(binpack, spread, model file locality) → a :class:`Placement` or an
:class:`Unschedulable` with one reason per worker. :func:`place` decides; the caller
reserves the claim in the :class:`CapacityIndex`, which keeps free capacity current one
claim at a time so that a decision never rescans the cluster.

Typical use::

    capacity = CapacityIndex(worker_snapshots)
    for key, claim in existing_claims:
        capacity.reserve(key, claim)
    result = place(request, capacity)
    if isinstance(result, Placement):
        capacity.reserve(instance_id, result.claim)
"""

from .capacity import CapacityIndex
from .filters import InvalidGpuSelector, SelectedGpu, parse_gpu_selector
from .place import evaluate, explain, place
from .types import (
    CPU,
    CapacityExceeded,
    Claim,
    DuplicateClaim,
    DuplicateWorker,
    GpuClaim,
    GpuRef,
    InstanceKey,
    InvalidPlacementRequest,
    Placement,
    PlacementRequest,
    RamClaim,
    SchedulerError,
    Strategy,
    UnknownClaim,
    UnknownGpu,
    UnknownWorker,
    Unschedulable,
    WorkerSnapshot,
    estimate_table,
)

__all__ = [
    "CPU",
    "CapacityExceeded",
    "CapacityIndex",
    "Claim",
    "DuplicateClaim",
    "DuplicateWorker",
    "GpuClaim",
    "GpuRef",
    "InstanceKey",
    "InvalidGpuSelector",
    "InvalidPlacementRequest",
    "Placement",
    "PlacementRequest",
    "RamClaim",
    "SchedulerError",
    "SelectedGpu",
    "Strategy",
    "UnknownClaim",
    "UnknownGpu",
    "UnknownWorker",
    "Unschedulable",
    "WorkerSnapshot",
    "estimate_table",
    "evaluate",
    "explain",
    "parse_gpu_selector",
    "place",
]
