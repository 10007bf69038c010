"""Apple Silicon detection against a recorded-format ``system_profiler`` output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maasbase.common.hardware import GpuVendor
from maasbase.worker.hardware.apple import (
    MEMSIZE_ARGV,
    SYSTEM_PROFILER_ARGV,
    AppleDetector,
    apple_gpu_uuid,
    parse_memsize,
    parse_system_profiler_displays,
)
from maasbase.worker.hardware.base import ProbeOutputError
from tests.support.fake_commands import FakeRunner

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hardware"
PROFILER_M2_MAX = (FIXTURES / "system-profiler-m2-max.json").read_text()
MEMSIZE_M2_MAX = (FIXTURES / "sysctl-hw-memsize-m2-max.txt").read_text()
GIB = 1024**3


def test_finds_the_m2_max_gpu() -> None:
    assert parse_system_profiler_displays(PROFILER_M2_MAX) == ["Apple M2 Max"]


def test_intel_mac_graphics_are_not_apple_gpus() -> None:
    output = json.dumps(
        {
            "SPDisplaysDataType": [
                {
                    "_name": "Intel UHD Graphics 630",
                    "spdisplays_vendor": "Intel",
                    "sppci_device_type": "spdisplays_gpu",
                    "sppci_model": "Intel UHD Graphics 630",
                },
                {
                    "_name": "AMD Radeon Pro 5500M",
                    "spdisplays_vendor": "sppci_vendor_amd",
                    "spdisplays_vram": "4 GB",
                    "sppci_model": "AMD Radeon Pro 5500M",
                },
            ]
        }
    )
    assert parse_system_profiler_displays(output) == []


@pytest.mark.parametrize("output", ["", "{}", '{"SPDisplaysDataType": {}}'])
def test_unusable_profiler_output_is_a_probe_error(output: str) -> None:
    with pytest.raises(ProbeOutputError):
        parse_system_profiler_displays(output)


def test_memsize() -> None:
    assert parse_memsize(MEMSIZE_M2_MAX) == 96 * GIB
    with pytest.raises(ProbeOutputError):
        parse_memsize("sysctl: unknown oid 'hw.memsize'")


def test_detector_reports_unified_memory() -> None:
    runner = FakeRunner({SYSTEM_PROFILER_ARGV: PROFILER_M2_MAX, MEMSIZE_ARGV: MEMSIZE_M2_MAX})

    (device,) = AppleDetector(runner, memory_used=lambda: 21 * GIB).detect()

    assert device.index == 0
    assert device.vendor is GpuVendor.APPLE
    assert device.name == "Apple M2 Max"
    assert device.uuid == "APPLE-Apple-M2-Max-0"
    assert device.memory_total == 103079215104
    assert device.memory_used == 21 * GIB
    assert device.utilization is None
    assert device.temperature is None


def test_used_memory_never_exceeds_total() -> None:
    runner = FakeRunner({SYSTEM_PROFILER_ARGV: PROFILER_M2_MAX, MEMSIZE_ARGV: MEMSIZE_M2_MAX})
    (device,) = AppleDetector(runner, memory_used=lambda: 200 * GIB).detect()
    assert device.memory_used == device.memory_total


def test_not_a_mac_means_no_apple_gpus() -> None:
    runner = FakeRunner({})
    assert AppleDetector(runner).detect() == []
    assert runner.calls == [SYSTEM_PROFILER_ARGV]


def test_uuid_is_stable_per_chip_and_position() -> None:
    assert apple_gpu_uuid("Apple M3 Ultra", 0) == "APPLE-Apple-M3-Ultra-0"
    assert apple_gpu_uuid("Apple M3 Ultra", 0) == apple_gpu_uuid("Apple M3 Ultra", 0)
