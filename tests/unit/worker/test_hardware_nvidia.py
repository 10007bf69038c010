"""NVIDIA detection against a FAKE pynvml module built from a recorded NVML snapshot,
plus the real NVML path on this machine."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from maasbase.common.hardware import GpuVendor
from maasbase.worker.hardware import nvidia
from maasbase.worker.hardware.nvidia import NvidiaDetector

SNAPSHOT = (
    Path(__file__).resolve().parents[2] / "fixtures" / "hardware" / "nvml-snapshot-h100x2.json"
)
MIB = 1024 * 1024


class FakeNVMLError(Exception):
    """FAKE of ``pynvml.NVMLError``: carries the NVML return code in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"fake NVML error {value}")
        self.value = value


class FakeNvml:
    """FAKE ``pynvml`` module: answers from a snapshot, no NVIDIA library involved.

    A ``null`` reading in the snapshot makes the fake raise NVML_ERROR_NOT_SUPPORTED,
    as NVML does for utilization on MIG-enabled GPUs.
    """

    NVMLError = FakeNVMLError
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, snapshot: dict[str, Any], *, init_error: int | None = None) -> None:
        self.devices: list[dict[str, Any]] = snapshot["devices"]
        self.init_error = init_error
        self.fail_on_index: dict[int, int] = {}
        self.initialized = False
        self.shutdown_calls = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        assert self.initialized
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        if index in self.fail_on_index:
            raise FakeNVMLError(self.fail_on_index[index])
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> Any:
        return handle["name"]

    def nvmlDeviceGetUUID(self, handle: dict[str, Any]) -> Any:
        return handle["uuid"]

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(**handle["memory"])

    def nvmlDeviceGetUtilizationRates(self, handle: dict[str, Any]) -> SimpleNamespace:
        if handle["utilization"] is None:
            raise FakeNVMLError(nvidia.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(**handle["utilization"])

    def nvmlDeviceGetTemperature(self, handle: dict[str, Any], sensor: int) -> Any:
        assert sensor == self.NVML_TEMPERATURE_GPU
        if handle["temperature_gpu"] is None:
            raise FakeNVMLError(nvidia.NVML_ERROR_NOT_SUPPORTED)
        return handle["temperature_gpu"]


@pytest.fixture
def snapshot() -> Any:
    return json.loads(SNAPSHOT.read_text())


def test_reads_every_device_of_the_snapshot(snapshot: dict[str, Any]) -> None:
    fake = FakeNvml(snapshot)
    devices = NvidiaDetector(fake).detect()

    assert [d.index for d in devices] == [0, 1]
    idle, busy = devices
    assert idle.vendor is GpuVendor.NVIDIA
    assert idle.name == "NVIDIA H100 80GB HBM3"
    assert idle.uuid == "GPU-3f0c2d7e-5b1a-8c94-e6d2-0a7b19c4f851"
    assert idle.memory_total == 85520809984
    assert idle.memory_used == 4 * MIB
    assert idle.utilization == 0.0
    assert idle.temperature == 36.0
    assert busy.uuid == "GPU-c81e9a04-2d6f-47b3-9f15-6e3a0d8b72c9"
    assert busy.memory_used == 58333 * MIB
    assert busy.memory_free == 85520809984 - 58333 * MIB
    assert busy.utilization == 100.0
    assert busy.temperature == 57.0
    assert not busy.simulated
    assert fake.shutdown_calls == 1


def test_unsupported_readings_become_none(snapshot: dict[str, Any]) -> None:
    snapshot = copy.deepcopy(snapshot)
    snapshot["devices"][1]["utilization"] = None
    snapshot["devices"][1]["temperature_gpu"] = None

    devices = NvidiaDetector(FakeNvml(snapshot)).detect()

    assert devices[1].utilization is None
    assert devices[1].temperature is None
    assert devices[1].memory_used == 58333 * MIB


def test_names_given_as_bytes_are_decoded(snapshot: dict[str, Any]) -> None:
    snapshot = copy.deepcopy(snapshot)
    snapshot["devices"][0]["name"] = b"NVIDIA H100 80GB HBM3"
    snapshot["devices"][0]["uuid"] = b"GPU-3f0c2d7e-5b1a-8c94-e6d2-0a7b19c4f851"

    device = NvidiaDetector(FakeNvml(snapshot)).detect()[0]

    assert device.name == "NVIDIA H100 80GB HBM3"
    assert device.uuid == "GPU-3f0c2d7e-5b1a-8c94-e6d2-0a7b19c4f851"


@pytest.mark.parametrize(
    "code", [nvidia.NVML_ERROR_LIBRARY_NOT_FOUND, nvidia.NVML_ERROR_DRIVER_NOT_LOADED]
)
def test_missing_library_or_driver_means_no_nvidia_gpus(
    snapshot: dict[str, Any], code: int
) -> None:
    assert NvidiaDetector(FakeNvml(snapshot, init_error=code)).detect() == []


def test_other_init_errors_are_raised(snapshot: dict[str, Any]) -> None:
    lib_rm_version_mismatch = 18
    with pytest.raises(FakeNVMLError):
        NvidiaDetector(FakeNvml(snapshot, init_error=lib_rm_version_mismatch)).detect()


def test_a_lost_gpu_raises_and_nvml_is_still_shut_down(snapshot: dict[str, Any]) -> None:
    fake = FakeNvml(snapshot)
    fake.fail_on_index[1] = 15  # NVML_ERROR_GPU_IS_LOST

    with pytest.raises(FakeNVMLError):
        NvidiaDetector(fake).detect()
    assert fake.shutdown_calls == 1


def test_no_nvml_binding_installed_means_no_nvidia_gpus() -> None:
    assert NvidiaDetector(loader=lambda: None).detect() == []


def test_nvml_codes_match_the_real_binding() -> None:
    assert nvidia.NVML_ERROR_LIBRARY_NOT_FOUND == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    assert nvidia.NVML_ERROR_DRIVER_NOT_LOADED == pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    assert nvidia.NVML_ERROR_NOT_SUPPORTED == pynvml.NVML_ERROR_NOT_SUPPORTED


def _machine_has_nvml() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_machine_has_nvml(), reason="this machine has a working NVIDIA driver")
def test_real_nvml_on_a_machine_without_nvidia_gpus_finds_nothing() -> None:
    assert NvidiaDetector().detect() == []
