"""Whole-machine detection: vendor isolation, CPU-only fallback, simulation, host info."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from maasbase.common.hardware import GpuDevice, GpuVendor, HardwareReport, SystemInfo
from maasbase.worker.hardware import (
    CommandFailed,
    CommandNotFound,
    GpuSpecError,
    collect_system_info,
    detect_gpus,
    detect_hardware,
    run_command,
)
from maasbase.worker.hardware.system import describe_os, existing_ancestor

GIB = 1024**3


def _gpu(vendor: GpuVendor, index: int) -> GpuDevice:
    return GpuDevice(
        index=index,
        vendor=vendor,
        name=f"{vendor} test GPU",
        uuid=f"{vendor}-{index}",
        memory_total=16 * GIB,
        memory_used=GIB,
    )


class StubDetector:
    def __init__(self, vendor: GpuVendor, devices: list[GpuDevice] | Exception) -> None:
        self.vendor = vendor
        self._devices = devices

    def detect(self) -> list[GpuDevice]:
        if isinstance(self._devices, Exception):
            raise self._devices
        return self._devices


def test_devices_from_every_vendor_are_reported() -> None:
    detectors = [
        StubDetector(GpuVendor.NVIDIA, [_gpu(GpuVendor.NVIDIA, 0), _gpu(GpuVendor.NVIDIA, 1)]),
        StubDetector(GpuVendor.AMD, [_gpu(GpuVendor.AMD, 0)]),
        StubDetector(GpuVendor.ASCEND, []),
    ]

    gpus, warnings = detect_gpus(detectors)

    assert [(g.vendor, g.index) for g in gpus] == [
        (GpuVendor.NVIDIA, 0),
        (GpuVendor.NVIDIA, 1),
        (GpuVendor.AMD, 0),
    ]
    assert warnings == []


def test_a_failing_vendor_is_left_out_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    detectors = [
        StubDetector(GpuVendor.NVIDIA, RuntimeError("NVML segfaulted")),
        StubDetector(GpuVendor.AMD, CommandFailed("rocm-smi exited with status 2: boom")),
        StubDetector(GpuVendor.ASCEND, [_gpu(GpuVendor.ASCEND, 0)]),
    ]

    report = detect_hardware(Path.cwd(), detectors=detectors)

    assert [g.vendor for g in report.gpus] == [GpuVendor.ASCEND]
    assert report.warnings == [
        "nvidia GPU detection failed, reporting no nvidia GPUs: NVML segfaulted",
        "amd GPU detection failed, reporting no amd GPUs: rocm-smi exited with status 2: boom",
    ]
    assert "NVML segfaulted" in caplog.text


def test_no_gpus_anywhere_gives_a_cpu_only_report(tmp_path: Path) -> None:
    detectors = [StubDetector(vendor, []) for vendor in GpuVendor]

    report = detect_hardware(tmp_path, detectors=detectors)

    assert report.is_cpu_only
    assert report.gpus == []
    assert report.warnings == []
    assert report.system.cpu_count >= 1


def test_this_machine_detects_without_crashing(tmp_path: Path) -> None:
    report = detect_hardware(tmp_path / "not" / "created" / "yet")

    assert report.system.disk_total > 0
    assert not report.is_simulated
    if sys.platform == "linux" and not Path("/dev/nvidia0").exists():
        assert report.gpus == []
        assert report.warnings == []


def test_simulation_replaces_detection(tmp_path: Path) -> None:
    never = StubDetector(GpuVendor.NVIDIA, AssertionError("real detection must not run"))

    report = detect_hardware(tmp_path, simulate="4xH100:80,2xL4:24", detectors=[never])

    assert [g.name for g in report.gpus] == ["H100"] * 4 + ["L4"] * 2
    assert report.is_simulated
    real = collect_system_info(tmp_path)
    assert (report.system.cpu_count, report.system.memory_total, report.system.os) == (
        real.cpu_count,
        real.memory_total,
        real.os,
    )


def test_fixture_simulation_takes_the_fixture_host_but_the_real_disk_and_name(
    tmp_path: Path,
) -> None:
    real = collect_system_info(tmp_path)

    report = detect_hardware(tmp_path, simulate="8xAscend-910B-64GB", worker_name="npu-1")

    assert report.system.cpu_count == 192
    assert report.system.arch == "aarch64"
    assert report.system.os == "Linux 5.10"
    assert report.system.hostname == real.hostname
    assert report.system.disk_total == real.disk_total
    assert len(report.gpus) == 8
    assert report.gpus[0].uuid.startswith("SIM-GPU-")


def test_bad_simulation_value_is_raised(tmp_path: Path) -> None:
    with pytest.raises(GpuSpecError):
        detect_hardware(tmp_path, simulate="4xH100")


def test_report_rejects_two_devices_with_one_index() -> None:
    system = SystemInfo(
        cpu_count=1,
        memory_total=GIB,
        memory_used=0,
        disk_total=GIB,
        disk_free=GIB,
        os="Linux 6.1",
        arch="x86_64",
        hostname="h",
    )
    with pytest.raises(ValidationError, match="two nvidia GPUs share index 0"):
        HardwareReport(system=system, gpus=[_gpu(GpuVendor.NVIDIA, 0), _gpu(GpuVendor.NVIDIA, 0)])


def test_report_round_trips_through_json() -> None:
    report = detect_hardware(Path.cwd(), simulate="2xamd/MI300X:192")
    assert HardwareReport.model_validate_json(report.model_dump_json()) == report


def test_system_info_of_this_host(tmp_path: Path) -> None:
    info = collect_system_info(tmp_path)

    assert info.memory_total > info.memory_used > 0
    assert info.disk_total >= info.disk_free > 0
    assert info.hostname
    assert info.arch


@pytest.mark.parametrize(
    ("system", "release", "mac", "expected"),
    [
        ("Linux", "6.1.0-18-amd64", "", "Linux 6.1"),
        ("Linux", "5.15.0-105-generic", "", "Linux 5.15"),
        ("Darwin", "23.2.0", "14.2.1", "macOS 14.2.1"),
        ("Windows", "10", "", "Windows 10"),
    ],
)
def test_os_label(system: str, release: str, mac: str, expected: str) -> None:
    assert describe_os(system, release, mac) == expected


def test_existing_ancestor(tmp_path: Path) -> None:
    assert existing_ancestor(tmp_path / "a" / "b") == tmp_path
    assert existing_ancestor(tmp_path) == tmp_path


def test_run_command_returns_stdout() -> None:
    assert run_command([sys.executable, "-c", "print('hi')"]) == "hi\n"


def test_run_command_missing_tool() -> None:
    with pytest.raises(CommandNotFound, match="is not installed"):
        run_command(["maasbase-no-such-tool-xyz"])


def test_run_command_failure_carries_stderr() -> None:
    script = "import sys; sys.stderr.write('dcmi module initialize failed'); sys.exit(3)"
    with pytest.raises(CommandFailed, match="status 3: dcmi module initialize failed"):
        run_command([sys.executable, "-c", script])


def test_run_command_timeout() -> None:
    with pytest.raises(CommandFailed, match=r"did not finish within 0\.2 s"):
        run_command([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)
