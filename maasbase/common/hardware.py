"""Wire contract for what a worker machine has: its GPUs and its host resources.

Workers send a :class:`HardwareReport` when they register and with each heartbeat;
the server stores it and schedules against it. Every size is in bytes, every
temperature in degrees Celsius, every utilization in percent (0-100).

New fields must come with defaults so that older workers and servers keep
understanding each other; unknown fields are ignored on input.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GpuVendor(StrEnum):
    NVIDIA = "nvidia"
    AMD = "amd"
    APPLE = "apple"
    ASCEND = "ascend"


class GpuDevice(BaseModel):
    """One accelerator as the worker saw it.

    ``index`` is the device's position among the devices *of its vendor* on the
    machine, i.e. the number a backend is given in ``CUDA_VISIBLE_DEVICES``,
    ``HIP_VISIBLE_DEVICES`` or ``ASCEND_RT_VISIBLE_DEVICES``. ``(vendor, index)``
    identifies a device within one report; ``uuid`` identifies it across restarts.
    """

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    vendor: GpuVendor
    name: str = Field(min_length=1)
    uuid: str = Field(min_length=1)
    memory_total: int = Field(ge=0, description="bytes")
    memory_used: int = Field(ge=0, description="bytes")
    utilization: float | None = Field(default=None, ge=0, le=100, description="percent")
    temperature: float | None = Field(default=None, description="degrees Celsius")
    simulated: bool = False

    @property
    def memory_free(self) -> int:
        """Bytes not in use; never negative."""
        return max(0, self.memory_total - self.memory_used)


class SystemInfo(BaseModel):
    """Host resources of a worker machine."""

    model_config = ConfigDict(frozen=True)

    cpu_count: int = Field(ge=1)
    memory_total: int = Field(ge=0, description="bytes")
    memory_used: int = Field(ge=0, description="bytes")
    disk_total: int = Field(ge=0, description="bytes, of the filesystem holding the data dir")
    disk_free: int = Field(ge=0, description="bytes, of the filesystem holding the data dir")
    os: str = Field(description='e.g. "Linux 6.1" or "macOS 14.2"')
    arch: str = Field(description='e.g. "x86_64", "aarch64", "arm64"')
    hostname: str


class HardwareReport(BaseModel):
    """Everything detection found on one machine.

    ``warnings`` carries human-readable problems met during detection (a vendor
    tool that failed, for example); devices from a vendor that failed are absent.
    """

    model_config = ConfigDict(frozen=True)

    system: SystemInfo
    gpus: list[GpuDevice] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _indices_are_unique_per_vendor(self) -> HardwareReport:
        seen: set[tuple[GpuVendor, int]] = set()
        for gpu in self.gpus:
            key = (gpu.vendor, gpu.index)
            if key in seen:
                raise ValueError(f"two {gpu.vendor} GPUs share index {gpu.index}")
            seen.add(key)
        return self

    @property
    def is_cpu_only(self) -> bool:
        return not self.gpus

    @property
    def is_simulated(self) -> bool:
        return any(gpu.simulated for gpu in self.gpus)
