"""What this worker machine has: GPUs of every supported vendor, plus host resources.

:func:`detect_hardware` is the entry point. It asks each vendor's detector in turn;
a vendor whose driver or tool is absent contributes nothing, and a vendor whose
detection fails contributes nothing plus a warning in the report, so a broken
tool never stops the worker. A machine without GPUs yields a CPU-only report.

Detection blocks (NVML calls, subprocesses with timeouts); async callers should
run it in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from maasbase.common.hardware import GpuDevice, HardwareReport, SystemInfo
from maasbase.worker.hardware.amd import AmdDetector
from maasbase.worker.hardware.apple import AppleDetector
from maasbase.worker.hardware.ascend import AscendDetector
from maasbase.worker.hardware.base import (
    CommandFailed,
    CommandNotFound,
    CommandRunner,
    Detector,
    HardwareProbeError,
    ProbeOutputError,
    run_command,
)
from maasbase.worker.hardware.nvidia import NvidiaDetector
from maasbase.worker.hardware.simulated import (
    GpuSpecError,
    SimulatedHardware,
    fixture_names,
    load_fixture,
    load_simulation,
    parse_gpu_spec,
)
from maasbase.worker.hardware.system import collect_system_info

__all__ = [
    "AmdDetector",
    "AppleDetector",
    "AscendDetector",
    "CommandFailed",
    "CommandNotFound",
    "CommandRunner",
    "Detector",
    "GpuSpecError",
    "HardwareProbeError",
    "NvidiaDetector",
    "ProbeOutputError",
    "SimulatedHardware",
    "collect_system_info",
    "default_detectors",
    "detect_gpus",
    "detect_hardware",
    "fixture_names",
    "load_fixture",
    "load_simulation",
    "parse_gpu_spec",
    "run_command",
]

logger = logging.getLogger(__name__)


def default_detectors(runner: CommandRunner = run_command) -> list[Detector]:
    """One detector per supported vendor, all reading the real machine."""
    return [
        NvidiaDetector(),
        AmdDetector(runner),
        AscendDetector(runner),
        AppleDetector(runner),
    ]


def detect_gpus(detectors: Sequence[Detector]) -> tuple[list[GpuDevice], list[str]]:
    """Devices from every detector, and a warning for each detector that failed."""
    gpus: list[GpuDevice] = []
    warnings: list[str] = []
    for detector in detectors:
        try:
            found = detector.detect()
        except Exception as exc:
            vendor = detector.vendor
            message = f"{vendor} GPU detection failed, reporting no {vendor} GPUs: {exc}"
            logger.warning(message, exc_info=not isinstance(exc, HardwareProbeError))
            warnings.append(message)
            continue
        logger.debug("%s detection found %d device(s)", detector.vendor, len(found))
        gpus.extend(found)
    return gpus, warnings


def detect_hardware(
    data_dir: Path,
    *,
    simulate: str | None = None,
    worker_name: str | None = None,
    detectors: Sequence[Detector] | None = None,
) -> HardwareReport:
    """Report this machine's GPUs and host resources.

    ``data_dir`` is where the worker keeps models; its filesystem's size and free
    space are reported. ``simulate`` is a ``--simulate-gpus`` value (spec, fixture
    name or fixture file, see :mod:`maasbase.worker.hardware.simulated`); when set,
    the simulated devices replace real detection, and a fixture's CPU, memory, OS
    and architecture replace the host's (disk and hostname stay real).
    ``worker_name`` salts simulated UUIDs so two simulated workers never share one.
    A bad ``simulate`` value raises :class:`GpuSpecError`.
    """
    system = collect_system_info(data_dir)
    if simulate is not None:
        simulation = load_simulation(simulate, salt=worker_name)
        logger.debug("simulating %d GPU(s) from %s", len(simulation.gpus), simulation.source)
        return HardwareReport(system=_overlay(system, simulation), gpus=simulation.gpus)
    gpus, warnings = detect_gpus(default_detectors() if detectors is None else detectors)
    if not gpus:
        logger.info("no GPUs found; this worker is CPU-only")
    return HardwareReport(system=system, gpus=gpus, warnings=warnings)


def _overlay(system: SystemInfo, simulation: SimulatedHardware) -> SystemInfo:
    if simulation.system is None:
        return system
    return system.model_copy(update=simulation.system.model_dump())
