"""The scheduler's vocabulary: frozen snapshots and requests in, a placement or reasons out.

Memory is in bytes everywhere. A GPU is named by ``(worker id, vendor, index)``, where the
index is the device's position among the worker's devices of that vendor (what a backend
gets in ``CUDA_VISIBLE_DEVICES`` and friends).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from maasbase.common.errors import Conflict, InvalidRequest, NotFound
from maasbase.common.hardware import GpuDevice, GpuVendor, HardwareReport
from maasbase.common.workers import WorkerState
from maasbase.server.estimate import (
    EstimateRequest,
    InvalidBackendParameter,
    MemoryEstimate,
    ModelMetadata,
    estimate_memory,
    valid_tensor_parallel_sizes,
)

GiB = 1024**3
CPU = "cpu"  # pseudo-vendor: the model may run on the CPU of a worker without GPUs
InstanceKey = str | int
GpuKey = tuple[GpuVendor, int]  # (vendor, per-vendor index) within one worker
Shape = tuple[GpuVendor, int]  # (vendor, memory_total): one GPU model
K = TypeVar("K")
V = TypeVar("V")


def gib(n: int | float) -> str:
    return f"{n / GiB:.1f} GiB"


class Strategy(StrEnum):
    SPREAD = "spread"  # the least-loaded GPU / worker: replicas land far apart
    BINPACK = "binpack"  # the tightest fit: fill a GPU, then a worker, before opening another


class SchedulerError(Conflict):
    code = "scheduler_conflict"


class CapacityExceeded(SchedulerError):
    """A claim asks for more than a GPU (or a worker's RAM) has free; nothing was reserved."""

    code = "capacity_exceeded"


class DuplicateWorker(SchedulerError):
    code = "duplicate_worker"


class DuplicateClaim(SchedulerError):
    code = "duplicate_claim"


class UnknownWorker(NotFound):
    code = "unknown_worker"


class UnknownGpu(NotFound):
    code = "unknown_gpu"


class UnknownClaim(NotFound):
    code = "unknown_claim"


class InvalidPlacementRequest(InvalidRequest):
    code = "invalid_placement_request"


def _frozen_map(value: Mapping[K, V]) -> Mapping[K, V]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True)
class GpuRef:
    worker_id: int
    vendor: GpuVendor
    index: int

    def __str__(self) -> str:
        return f"{self.vendor.value}:{self.index}"


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """What the scheduler knows about one worker at one moment.

    ``ram_reserved`` and ``gpu_reserved`` hold back memory the scheduler must not hand
    out: used by the OS, the worker itself or processes it does not manage. They are
    *not* the device's ``memory_used``: that figure includes the memory of our own
    instances, which the scheduler already counts through their claims. A caller that
    wants foreign usage counted passes ``memory_used`` minus what its instances use.
    """

    id: int
    name: str
    state: WorkerState
    labels: Mapping[str, str]
    gpus: tuple[GpuDevice, ...]
    ram_total: int
    ram_reserved: int = 0
    gpu_reserved: Mapping[GpuKey, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen_map(self.labels))
        object.__setattr__(self, "gpu_reserved", _frozen_map(self.gpu_reserved))
        object.__setattr__(self, "gpus", tuple(self.gpus))
        seen: set[GpuKey] = set()
        for gpu in self.gpus:
            if (gpu.vendor, gpu.index) in seen:
                raise InvalidPlacementRequest(
                    f"worker {self.name!r} lists {gpu.vendor.value} GPU {gpu.index} twice"
                )
            seen.add((gpu.vendor, gpu.index))
        if self.ram_total < 0 or self.ram_reserved < 0:
            raise InvalidPlacementRequest(f"worker {self.name!r}: RAM sizes must be ≥ 0")

    @classmethod
    def from_report(
        cls,
        id: int,
        name: str,
        report: HardwareReport,
        *,
        state: WorkerState = WorkerState.READY,
        labels: Mapping[str, str] | None = None,
        ram_reserved: int = 0,
        gpu_reserved: Mapping[GpuKey, int] | None = None,
    ) -> WorkerSnapshot:
        return cls(
            id=id,
            name=name,
            state=state,
            labels=labels or {},
            gpus=tuple(report.gpus),
            ram_total=report.system.memory_total,
            ram_reserved=ram_reserved,
            gpu_reserved=gpu_reserved or {},
        )

    def gpu(self, vendor: GpuVendor, index: int) -> GpuDevice | None:
        for device in self.gpus:
            if device.vendor == vendor and device.index == index:
                return device
        return None


@dataclass(frozen=True, slots=True)
class GpuClaim:
    gpu: GpuRef
    bytes: int


@dataclass(frozen=True, slots=True)
class RamClaim:
    worker_id: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Claim:
    """Memory one instance holds: bytes on each of its GPUs, or RAM for a CPU placement."""

    gpus: tuple[GpuClaim, ...] = ()
    ram: tuple[RamClaim, ...] = ()

    @property
    def worker_ids(self) -> tuple[int, ...]:
        ids = [c.gpu.worker_id for c in self.gpus] + [c.worker_id for c in self.ram]
        return tuple(dict.fromkeys(ids))

    @property
    def gpu_bytes(self) -> int:
        return sum(c.bytes for c in self.gpus)

    @property
    def ram_bytes(self) -> int:
        return sum(c.bytes for c in self.ram)


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """One instance of a model to place.

    ``estimates`` maps a GPU count to the memory estimate for that many GPUs (tensor
    parallel inside a worker; pipeline parallel across workers when ``can_span_workers``).
    The scheduler tries the counts in ascending order and takes the smallest that fits;
    :func:`estimate_table` builds the table from model metadata. ``vendors`` lists
    :class:`GpuVendor` values and/or ``"cpu"``; CPU placements go to workers without GPUs
    and claim ``cpu_ram_bytes`` of RAM. ``gpu_selector`` entries are ``"worker:index"`` or
    ``"worker:vendor:index"``. ``preferred_worker_ids`` are workers that already hold the
    model files.
    """

    model: str
    backend: str
    estimates: Mapping[int, MemoryEstimate]
    vendors: frozenset[str] = frozenset({GpuVendor.NVIDIA.value})
    strategy: Strategy = Strategy.SPREAD
    worker_selector: Mapping[str, str] = field(default_factory=dict)
    gpu_selector: tuple[str, ...] = ()
    gpus_per_replica: int | None = None
    can_span_workers: bool = False
    num_attention_heads: int | None = None
    num_kv_heads: int | None = None
    cpu_ram_bytes: int | None = None
    preferred_worker_ids: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "estimates", _frozen_map(self.estimates))
        object.__setattr__(self, "worker_selector", _frozen_map(self.worker_selector))
        object.__setattr__(self, "vendors", frozenset(self.vendors))
        object.__setattr__(self, "gpu_selector", tuple(self.gpu_selector))
        object.__setattr__(self, "preferred_worker_ids", frozenset(self.preferred_worker_ids))
        known = {v.value for v in GpuVendor} | {CPU}
        unknown = sorted(self.vendors - known)
        if unknown or not self.vendors:
            raise InvalidPlacementRequest(
                f"unknown vendors {unknown}; use some of {sorted(known)}"
                if unknown
                else "vendors is empty; name at least one of " + ", ".join(sorted(known))
            )
        if any(count < 1 for count in self.estimates):
            raise InvalidPlacementRequest("estimates are keyed by GPU counts ≥ 1")
        if self.gpu_vendors and not self.estimates:
            raise InvalidPlacementRequest("a GPU placement needs at least one memory estimate")
        if CPU in self.vendors and (self.cpu_ram_bytes is None or self.cpu_ram_bytes < 0):
            raise InvalidPlacementRequest("a CPU placement needs cpu_ram_bytes (≥ 0)")
        if self.gpus_per_replica is not None and self.gpus_per_replica < 1:
            raise InvalidPlacementRequest("gpus_per_replica must be ≥ 1")
        if self.gpus_per_replica is not None and not self.gpu_selector:
            raise InvalidPlacementRequest("gpus_per_replica goes with gpu_selector")

    @property
    def gpu_vendors(self) -> frozenset[GpuVendor]:
        return frozenset(GpuVendor(v) for v in self.vendors if v != CPU)

    @property
    def allows_cpu(self) -> bool:
        return CPU in self.vendors


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one instance goes. ``tp_size`` GPUs on each of ``pp_size`` workers; a CPU
    placement has ``tp_size`` 0. ``score`` (0-100) rates the choice under the strategy:
    GPU memory in use after the claim for binpack, memory left free for spread.
    ``reasons`` says, when asked for, why each other worker was not chosen."""

    claim: Claim
    worker_ids: tuple[int, ...]
    tp_size: int
    pp_size: int
    score: float
    explanation: str
    estimate: MemoryEstimate | None
    reasons: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """No worker (or combination of workers) can take the instance now: one reason per
    worker name, e.g. ``"needs 41.2 GiB VRAM per GPU, 23.1 GiB free on best GPU"``."""

    message: str
    reasons: Mapping[str, str]

    def __str__(self) -> str:
        lines = [self.message, *(f"{name}: {why}" for name, why in self.reasons.items())]
        return "\n".join(lines)


def estimate_table(
    meta: ModelMetadata, request: EstimateRequest, *, max_gpus: int = 8
) -> dict[int, MemoryEstimate]:
    """Estimates for the GPU counts the scheduler may try: 1 and the powers of two up to
    ``max_gpus`` that split the attention heads. A count fixed by the backend flags
    (``--tensor-parallel-size``) or by ``request`` is the only entry."""
    fixed = estimate_memory(meta, request)
    if request.tensor_parallel_size is not None or fixed.tensor_parallel_size != 1:
        return {fixed.tensor_parallel_size: fixed}
    table = {1: fixed}
    valid = set(valid_tensor_parallel_sizes(meta.num_attention_heads, max_gpus, meta.num_kv_heads))
    count = 2
    while count <= max_gpus:
        if count in valid:
            try:
                sized = EstimateRequest(request.engine, request.backend_parameters, count)
                table[count] = estimate_memory(meta, sized)
            except InvalidBackendParameter:
                return {1: fixed}  # the flags pin the tensor parallel size to 1
        count *= 2
    return table
