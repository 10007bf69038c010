"""Apple Silicon GPUs: ``system_profiler SPDisplaysDataType -json`` plus ``sysctl``.

Apple Silicon has unified memory: the GPU's memory is the machine's RAM, so a
device's ``memory_total`` is ``sysctl -n hw.memsize`` and ``memory_used`` is
what the whole system uses (from psutil, the counters ``vm_stat`` prints).
Neither utilization nor temperature is readable without root (``powermetrics``),
so both are ``None``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import psutil

from maasbase.common.hardware import GpuDevice, GpuVendor
from maasbase.worker.hardware.base import (
    CommandNotFound,
    CommandRunner,
    ProbeOutputError,
    run_command,
)

logger = logging.getLogger(__name__)

SYSTEM_PROFILER_ARGV = ("system_profiler", "SPDisplaysDataType", "-json")
MEMSIZE_ARGV = ("sysctl", "-n", "hw.memsize")

_APPLE_VENDOR = "sppci_vendor_apple"


def parse_system_profiler_displays(output: str) -> list[str]:
    """Names of the Apple GPUs in ``system_profiler SPDisplaysDataType -json`` output.

    Entries from other vendors (an Intel Mac's AMD or Intel graphics) are skipped.
    """
    try:
        data = json.loads(output)
    except json.JSONDecodeError as exc:
        raise ProbeOutputError(f"system_profiler printed malformed JSON: {exc}") from exc
    entries = data.get("SPDisplaysDataType") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ProbeOutputError("system_profiler output has no SPDisplaysDataType list")
    names = []
    for entry in entries:
        if isinstance(entry, dict) and _is_apple_gpu(entry):
            names.append(str(entry.get("sppci_model") or entry.get("_name")))
    return names


def _is_apple_gpu(entry: dict[str, Any]) -> bool:
    vendor = str(entry.get("spdisplays_vendor", "")).lower()
    model = str(entry.get("sppci_model", ""))
    return vendor == _APPLE_VENDOR or model.startswith("Apple ")


def parse_memsize(output: str) -> int:
    """Bytes of RAM from ``sysctl -n hw.memsize``."""
    try:
        value = int(output.strip())
    except ValueError:
        raise ProbeOutputError(f"sysctl hw.memsize printed {output.strip()[:80]!r}") from None
    if value <= 0:
        raise ProbeOutputError(f"sysctl hw.memsize printed {value}")
    return value


def apple_gpu_uuid(name: str, index: int) -> str:
    """Apple GPUs expose no UUID; this one is stable per chip and position on the machine."""
    return f"APPLE-{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-')}-{index}"


def system_memory_used() -> int:
    """Bytes of RAM in use system-wide: total minus what is available."""
    memory = psutil.virtual_memory()
    return int(memory.total - memory.available)


class AppleDetector:
    """The Apple Silicon GPU of this Mac, if any."""

    vendor = GpuVendor.APPLE

    def __init__(
        self,
        runner: CommandRunner = run_command,
        *,
        memory_used: Callable[[], int] = system_memory_used,
    ) -> None:
        self._runner = runner
        self._memory_used = memory_used

    def detect(self) -> list[GpuDevice]:
        try:
            names = parse_system_profiler_displays(self._runner(SYSTEM_PROFILER_ARGV))
        except CommandNotFound:
            return []
        if not names:
            return []
        total = parse_memsize(self._runner(MEMSIZE_ARGV))
        used = min(max(0, self._memory_used()), total)
        return [
            GpuDevice(
                index=index,
                vendor=GpuVendor.APPLE,
                name=name,
                uuid=apple_gpu_uuid(name, index),
                memory_total=total,
                memory_used=used,
            )
            for index, name in enumerate(names)
        ]
