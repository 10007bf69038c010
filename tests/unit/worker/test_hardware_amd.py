"""AMD detection: rocm-smi JSON parsing against a recorded-format MI300X output, and
the amdsmi path against a FAKE amdsmi module."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from maasbase.common.hardware import GpuVendor
from maasbase.worker.hardware.amd import ROCM_SMI_ARGV, AmdDetector, parse_rocm_smi_json
from maasbase.worker.hardware.base import ProbeOutputError
from tests.support.fake_commands import FakeRunner

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hardware"
ROCM_SMI_MI300X = (FIXTURES / "rocm-smi-mi300x.json").read_text()
MI300X_VRAM = 206141652992


def test_parses_eight_mi300x_cards() -> None:
    devices = parse_rocm_smi_json(ROCM_SMI_MI300X)

    assert [d.index for d in devices] == list(range(8))
    assert {d.name for d in devices} == {"AMD Instinct MI300X"}
    assert {d.vendor for d in devices} == {GpuVendor.AMD}
    assert {d.memory_total for d in devices} == {MI300X_VRAM}
    busy, idle = devices[0], devices[2]
    assert busy.uuid == "0x2a9e1f47c08b3d65"
    assert busy.memory_used == 185604341760
    assert busy.utilization == 97.0
    assert busy.temperature == 52.0  # junction: MI300X has no edge sensor
    assert idle.uuid == "0x5c07e9a3b1d46f28"
    assert idle.memory_used == 297271296
    assert idle.utilization == 0.0
    assert idle.temperature == 41.0
    assert len({d.uuid for d in devices}) == 8


def test_older_rocm_smi_keys_edge_sensor_system_entry_and_missing_unique_id() -> None:
    output = json.dumps(
        {
            "card0": {
                "Unique ID": "N/A",
                "Temperature (Sensor edge) (C)": "32.0",
                "Temperature (Sensor junction) (C)": "35.0",
                "GPU use (%)": "3",
                "VRAM Total Memory (B)": "68702699520",
                "VRAM Total Used Memory (B)": "10960896",
                "Card series": "AMD INSTINCT MI250 (MCM) OAM AC MBA",
                "Card model": "0x0b0c",
            },
            "system": {"Driver version": "6.2.4"},
        }
    )

    (device,) = parse_rocm_smi_json(output)

    assert device.name == "AMD INSTINCT MI250 (MCM) OAM AC MBA"
    assert device.uuid == "AMD-card0"
    assert device.temperature == 32.0
    assert device.utilization == 3.0
    assert device.memory_total == 68702699520


def test_warning_lines_before_the_json_are_ignored() -> None:
    output = (
        "WARNING: AMD GPU device(s) is/are in a low-power state. "
        "Check power control/runtime_status\n\n"
    )
    assert len(parse_rocm_smi_json(output + ROCM_SMI_MI300X)) == 8


def test_cards_are_numbered_in_card_order_even_with_gaps() -> None:
    card = {"VRAM Total Memory (B)": "1024", "VRAM Total Used Memory (B)": "0"}
    output = json.dumps(
        {"card10": {**card, "Unique ID": "0xb"}, "card2": {**card, "Unique ID": "0xa"}}
    )

    devices = parse_rocm_smi_json(output)

    assert [(d.index, d.uuid) for d in devices] == [(0, "0xa"), (1, "0xb")]
    assert devices[0].name == "AMD GPU"
    assert devices[0].temperature is None
    assert devices[0].utilization is None


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("ERROR:root:Driver not initialized (amdgpu not found in modules)\n", "no JSON"),
        ('{"card0": {"VRAM Total Memory (B)": ', "malformed JSON"),
        ('{"card0": {"VRAM Total Memory (B)": "N/A"}}', "VRAM Total Memory"),
    ],
)
def test_unusable_output_is_a_probe_error(output: str, message: str) -> None:
    with pytest.raises(ProbeOutputError, match=message):
        parse_rocm_smi_json(output)


def test_detector_runs_rocm_smi_when_amdsmi_is_absent() -> None:
    runner = FakeRunner({ROCM_SMI_ARGV: ROCM_SMI_MI300X})

    devices = AmdDetector(runner, amdsmi_loader=lambda: None).detect()

    assert len(devices) == 8
    assert runner.calls == [ROCM_SMI_ARGV]


def test_no_rocm_smi_means_no_amd_gpus() -> None:
    assert AmdDetector(FakeRunner({}), amdsmi_loader=lambda: None).detect() == []


class FakeAmdSmiError(Exception):
    """FAKE of ``amdsmi.AmdSmiException``."""


class FakeAmdSmi:
    """FAKE ``amdsmi`` module answering like the ROCm 6 Python API, for one MI300X."""

    AmdSmiException = FakeAmdSmiError
    AmdSmiMemoryType = SimpleNamespace(VRAM=0, VIS_VRAM=1, GTT=2)
    AmdSmiTemperatureType = SimpleNamespace(EDGE=0, HOTSPOT=1, VRAM=2)
    AmdSmiTemperatureMetric = SimpleNamespace(CURRENT=0)

    def __init__(self, *, init_fails: bool = False) -> None:
        self.init_fails = init_fails
        self.shut_down = False

    def amdsmi_init(self) -> None:
        if self.init_fails:
            raise FakeAmdSmiError("AMDSMI_STATUS_DRIVER_NOT_LOADED")

    def amdsmi_shut_down(self) -> None:
        self.shut_down = True

    def amdsmi_get_processor_handles(self) -> list[str]:
        return ["handle-0"]

    def amdsmi_get_gpu_asic_info(self, handle: str) -> dict[str, Any]:
        return {"market_name": "AMD Instinct MI300X", "vendor_id": "0x1002", "device_id": "0x74a1"}

    def amdsmi_get_gpu_device_uuid(self, handle: str) -> str:
        return "c1ff74a1-0000-1000-8021-7d6b8e2f4a13"

    def amdsmi_get_gpu_memory_total(self, handle: str, memory_type: int) -> int:
        assert memory_type == self.AmdSmiMemoryType.VRAM
        return MI300X_VRAM

    def amdsmi_get_gpu_memory_usage(self, handle: str, memory_type: int) -> int:
        assert memory_type == self.AmdSmiMemoryType.VRAM
        return 297271296

    def amdsmi_get_gpu_activity(self, handle: str) -> dict[str, Any]:
        return {"gfx_activity": 12, "umc_activity": 3, "mm_activity": "N/A"}

    def amdsmi_get_temp_metric(self, handle: str, sensor: int, metric: int) -> int:
        raise FakeAmdSmiError("AMDSMI_STATUS_NOT_SUPPORTED")


def test_detector_prefers_amdsmi() -> None:
    fake = FakeAmdSmi()
    runner = FakeRunner({ROCM_SMI_ARGV: ROCM_SMI_MI300X})

    (device,) = AmdDetector(runner, amdsmi_loader=lambda: fake).detect()

    assert device.name == "AMD Instinct MI300X"
    assert device.uuid == "c1ff74a1-0000-1000-8021-7d6b8e2f4a13"
    assert device.memory_total == MI300X_VRAM
    assert device.memory_used == 297271296
    assert device.utilization == 12.0
    assert device.temperature is None
    assert fake.shut_down
    assert runner.calls == []


def test_detector_falls_back_to_rocm_smi_when_amdsmi_cannot_start() -> None:
    runner = FakeRunner({ROCM_SMI_ARGV: ROCM_SMI_MI300X})

    devices = AmdDetector(runner, amdsmi_loader=lambda: FakeAmdSmi(init_fails=True)).detect()

    assert len(devices) == 8
    assert runner.calls == [ROCM_SMI_ARGV]
