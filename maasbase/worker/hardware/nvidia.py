"""NVIDIA GPUs through NVML (the ``pynvml`` module of ``nvidia-ml-py``).

The NVML module is the seam: :class:`NvidiaDetector` takes anything shaped like
:class:`NvmlApi`, so tests pass a fake built from a recorded snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar, cast

from maasbase.common.hardware import GpuDevice, GpuVendor

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_NOT_SUPPORTED = 3
_ABSENT_CODES = frozenset({NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_LIBRARY_NOT_FOUND})
"""NVML return codes that mean "no NVIDIA driver here", not "something broke"."""


class NvmlMemory(Protocol):
    @property
    def total(self) -> int: ...

    @property
    def used(self) -> int: ...


class NvmlUtilization(Protocol):
    @property
    def gpu(self) -> int: ...


class NvmlApi(Protocol):
    """The part of ``pynvml`` that detection uses."""

    NVMLError: type[Exception]
    NVML_TEMPERATURE_GPU: int

    def nvmlInit(self) -> None: ...

    def nvmlShutdown(self) -> None: ...

    def nvmlDeviceGetCount(self) -> int: ...

    def nvmlDeviceGetHandleByIndex(self, index: int, /) -> object: ...

    def nvmlDeviceGetName(self, handle: object, /) -> str | bytes: ...

    def nvmlDeviceGetUUID(self, handle: object, /) -> str | bytes: ...

    def nvmlDeviceGetMemoryInfo(self, handle: object, /) -> NvmlMemory: ...

    def nvmlDeviceGetUtilizationRates(self, handle: object, /) -> NvmlUtilization: ...

    def nvmlDeviceGetTemperature(self, handle: object, sensor: int, /) -> int: ...


def import_pynvml() -> NvmlApi | None:
    """The real NVML binding, or ``None`` when ``nvidia-ml-py`` is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return cast("NvmlApi", pynvml)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvidiaDetector:
    """Reads every NVIDIA GPU visible to NVML."""

    vendor = GpuVendor.NVIDIA

    def __init__(
        self, nvml: NvmlApi | None = None, *, loader: Callable[[], NvmlApi | None] = import_pynvml
    ) -> None:
        self._nvml = nvml
        self._loader = loader

    def detect(self) -> list[GpuDevice]:
        nvml = self._nvml if self._nvml is not None else self._loader()
        if nvml is None:
            logger.debug("nvidia-ml-py is not installed; no NVIDIA detection")
            return []
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) in _ABSENT_CODES:
                logger.debug("no NVIDIA driver: %s", exc)
                return []
            raise
        try:
            return [self._read(nvml, index) for index in range(nvml.nvmlDeviceGetCount())]
        finally:
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError as exc:
                logger.debug("nvmlShutdown failed: %s", exc)

    def _read(self, nvml: NvmlApi, index: int) -> GpuDevice:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        utilization = _optional(nvml, lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        temperature = _optional(
            nvml, lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
        )
        return GpuDevice(
            index=index,
            vendor=GpuVendor.NVIDIA,
            name=_text(nvml.nvmlDeviceGetName(handle)),
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            memory_total=int(memory.total),
            memory_used=int(memory.used),
            utilization=None if utilization is None else float(utilization),
            temperature=None if temperature is None else float(temperature),
        )


def _optional(nvml: NvmlApi, read: Callable[[], _T]) -> _T | None:
    """A reading some devices do not offer (MIG mode, vGPU): ``None`` when unsupported."""
    try:
        return read()
    except nvml.NVMLError as exc:
        if getattr(exc, "value", None) == NVML_ERROR_NOT_SUPPORTED:
            return None
        raise
