"""Scorers: how candidates compare under a strategy, and how good the winner is.

Every candidate carries an ordering key whose first field is the memory left free after
the claim (per GPU for one GPU, of the k-th freest GPU for a group, summed over workers
for a span), then the worker's total free GPU memory, then ids that make ties
deterministic. ``binpack`` takes the smallest key — the tightest fit, on the fullest
worker — and ``spread`` the largest — the freest GPU on the least-loaded worker. Model
file locality ranks above both: see :func:`.place.place`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from maasbase.server.estimate import MemoryEstimate

from .types import GpuRef, Strategy, gib

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A concrete way to run one instance: GPUs (or RAM) on one or more workers."""

    key: tuple[Any, ...]
    worker_ids: tuple[int, ...]
    gpus: tuple[tuple[GpuRef, int], ...]  # (GPU, bytes claimed on it)
    ram_bytes: int  # RAM claimed on worker_ids[0] by a CPU placement
    tp_size: int
    pp_size: int
    estimate: MemoryEstimate | None
    free_after: int  # bytes left free on the chosen GPUs (or RAM) after the claim
    capacity_total: int  # total bytes of the chosen GPUs (or schedulable RAM)


def better(a: tuple[Any, ...], b: tuple[Any, ...] | None, strategy: Strategy) -> bool:
    """Whether key ``a`` beats key ``b`` (None: nothing yet) under ``strategy``."""
    if b is None:
        return True
    return a < b if strategy is Strategy.BINPACK else a > b


def best(candidates: Sequence[Candidate | None], strategy: Strategy) -> Candidate | None:
    winner: Candidate | None = None
    for candidate in candidates:
        if candidate is not None and better(
            candidate.key, winner.key if winner else None, strategy
        ):
            winner = candidate
    return winner


def choose(fitting: Sequence[T], count: int, strategy: Strategy) -> Sequence[T]:
    """From a worker's fitting GPUs sorted tightest first, the ``count`` the strategy uses."""
    return fitting[:count] if strategy is Strategy.BINPACK else fitting[-count:]


def score(candidate: Candidate, strategy: Strategy) -> float:
    """0-100: memory in use after the claim (binpack) or left free (spread)."""
    if candidate.capacity_total <= 0:
        return 0.0
    free = candidate.free_after / candidate.capacity_total
    value = 1.0 - free if strategy is Strategy.BINPACK else free
    return round(100.0 * value, 2)


def describe(candidate: Candidate, names: dict[int, str], strategy: Strategy) -> str:
    """``w1 GPUs nvidia:0,1 (tensor parallel 2): 71.7 GiB each; binpack: ...``."""
    est = candidate.estimate
    if not candidate.gpus:
        where = f"{names[candidate.worker_ids[0]]} CPU: {gib(candidate.ram_bytes)} RAM"
        left = f"{gib(candidate.free_after)} RAM left"
    else:
        per_worker = []
        for wid in candidate.worker_ids:
            refs = [str(ref.index) for ref, _ in candidate.gpus if ref.worker_id == wid]
            vendor = next(ref.vendor.value for ref, _ in candidate.gpus if ref.worker_id == wid)
            noun = "GPU" if len(refs) == 1 else "GPUs"
            per_worker.append(f"{names[wid]} {noun} {vendor}:{','.join(refs)}")
        parallel = f"tensor parallel {candidate.tp_size}"
        if candidate.pp_size > 1:
            parallel += f" × pipeline parallel {candidate.pp_size}"
        claims = sorted({amount for _, amount in candidate.gpus})
        each = " or ".join(gib(c) for c in claims)
        where = f"{' + '.join(per_worker)} ({parallel}): {each} per GPU"
        if est is not None and est.gpu_memory_utilization is not None:
            where += f" ({est.engine} takes {est.gpu_memory_utilization:g} × GPU memory)"
        noun = "GPU" if len(candidate.gpus) == 1 else "GPUs"
        left = f"{gib(candidate.free_after)} left on the chosen {noun}"
    why = "tightest fit" if strategy is Strategy.BINPACK else "most free memory"
    return f"{where}; {strategy.value}: {why}, {left}"
