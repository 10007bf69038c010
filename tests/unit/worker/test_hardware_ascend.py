"""Ascend detection against recorded-format ``npu-smi info`` tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from maasbase.common.hardware import GpuVendor
from maasbase.worker.hardware.ascend import NPU_SMI_ARGV, AscendDetector, parse_npu_smi_info
from maasbase.worker.hardware.base import CommandFailed, CommandNotFound, ProbeOutputError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hardware"
NPU_SMI_910B3 = (FIXTURES / "npu-smi-info-910b3x8.txt").read_text()
NPU_SMI_910B2C_BUSY = (FIXTURES / "npu-smi-info-910b2c-busy.txt").read_text()
# 310P Duo: no HBM, and the NPU row repeats for each of the card's two chips.
NPU_SMI_310P_DUO = (FIXTURES / "npu-smi-info-310p3-duo.txt").read_text()
# 310B board: no PCI bus id ("NA") and health "Alarm".
NPU_SMI_310B = (FIXTURES / "npu-smi-info-310b4.txt").read_text()
MIB = 1024 * 1024


def test_parses_eight_idle_910b3() -> None:
    devices = parse_npu_smi_info(NPU_SMI_910B3)

    assert [d.index for d in devices] == list(range(8))
    first, last = devices[0], devices[7]
    assert first.vendor is GpuVendor.ASCEND
    assert first.name == "Ascend 910B3"
    assert first.uuid == "NPU-0000:C1:00.0-0"
    assert first.memory_total == 65536 * MIB
    assert first.memory_used == 3318 * MIB
    assert first.utilization == 0.0
    assert first.temperature == 43.0
    assert last.uuid == "NPU-0000:42:00.0-0"
    assert last.memory_used == 3315 * MIB
    assert last.temperature == 44.0
    assert len({d.uuid for d in devices}) == 8


def test_busy_table_with_process_rows() -> None:
    devices = parse_npu_smi_info(NPU_SMI_910B2C_BUSY)

    assert [(d.name, d.utilization, d.temperature) for d in devices] == [
        ("Ascend 910B2C", 6.0, 47.0),
        ("Ascend 910B2C", 11.0, 49.0),
    ]
    assert [d.memory_used for d in devices] == [35738 * MIB, 35761 * MIB]
    assert {d.memory_total for d in devices} == {65536 * MIB}


def test_duo_card_gives_one_device_per_chip() -> None:
    devices = parse_npu_smi_info(NPU_SMI_310P_DUO)

    assert [(d.index, d.uuid) for d in devices] == [
        (0, "NPU-0000:03:00.0-0"),
        (1, "NPU-0000:03:00.0-1"),
    ]
    assert [d.memory_total for d in devices] == [44280 * MIB, 43693 * MIB]
    assert devices[0].memory_used == 1526 * MIB


def test_board_without_bus_id_uses_the_npu_id() -> None:
    (device,) = parse_npu_smi_info(NPU_SMI_310B)

    assert device.name == "Ascend 310B4"
    assert device.uuid == "NPU-0-0"
    assert device.memory_total == 15609 * MIB
    assert device.temperature == 65.0


def test_garbage_is_a_probe_error() -> None:
    with pytest.raises(ProbeOutputError):
        parse_npu_smi_info("dcmi module initialize failed. ret is -8005\n")


def test_detector_runs_npu_smi_info() -> None:
    calls: list[tuple[str, ...]] = []

    def runner(argv: Sequence[str]) -> str:
        calls.append(tuple(argv))
        return NPU_SMI_910B3

    assert len(AscendDetector(runner).detect()) == 8
    assert calls == [NPU_SMI_ARGV]


def test_no_npu_smi_means_no_ascend_devices() -> None:
    def runner(argv: Sequence[str]) -> str:
        raise CommandNotFound("npu-smi is not installed")

    assert AscendDetector(runner).detect() == []


def test_a_failing_npu_smi_is_raised() -> None:
    def runner(argv: Sequence[str]) -> str:
        raise CommandFailed("npu-smi info exited with status 1: dcmi module initialize failed")

    with pytest.raises(CommandFailed):
        AscendDetector(runner).detect()
