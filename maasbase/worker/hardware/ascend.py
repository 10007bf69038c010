"""Huawei Ascend NPUs: the text table printed by ``npu-smi info``.

The table's two header rows, then the two rows of one NPU::

  | NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
  | Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
  | 0     910B3               | OK            | 101.8       43                0    / 0             |
  | 0                         | 0000:C1:00.0  | 0           0    / 0          3318 / 65536         |

Cards with several chips (310P Duo) print one chip row per chip; each chip is a
device. Sizes are in MiB ("MB" in the header). HBM usage is used where the chip
reports HBM, else the plain memory usage (310P parts have no HBM).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from maasbase.common.hardware import GpuDevice, GpuVendor
from maasbase.worker.hardware.base import (
    MIB,
    CommandNotFound,
    CommandRunner,
    ProbeOutputError,
    parse_float,
    run_command,
)

logger = logging.getLogger(__name__)

NPU_SMI_ARGV = ("npu-smi", "info")

_BUS_ID = re.compile(r"[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]")
_NPU_CELL = re.compile(r"(\d+)\s+(\S.*)")
_USAGE_PAIR = re.compile(r"(\d+)\s*/\s*(\d+)")


@dataclass(frozen=True)
class _Npu:
    npu_id: int
    name: str
    health: str
    temperature: float | None


def parse_npu_smi_info(output: str) -> list[GpuDevice]:
    """Devices from ``npu-smi info``, numbered in the order the table lists them.

    An NPU row is always followed by its chip row(s); newer releases repeat the
    NPU row before each chip of a multi-chip card. Names are reported as
    ``"Ascend <chip name>"`` (``npu-smi`` prints only ``910B3``). The UUID is
    ``NPU-<PCI bus id>-<chip>``, stable per slot, or ``NPU-<npu id>-<chip>`` on
    boards whose chip has no PCI bus id (310B, printed as ``NA``).
    """
    devices: list[GpuDevice] = []
    npu: _Npu | None = None
    expecting_chip = False
    for line in output.splitlines():
        if "Process id" in line:
            break
        if not line.lstrip().startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[1] in ("Health", "Bus-Id"):
            continue
        if expecting_chip or _BUS_ID.fullmatch(cells[1]) or cells[1] == "NA":
            if npu is None:
                raise ProbeOutputError(f"npu-smi chip row before any NPU row: {line.strip()!r}")
            devices.append(_chip_device(len(devices), npu, cells))
            expecting_chip = False
            continue
        match = _NPU_CELL.fullmatch(cells[0])
        if match is None:
            raise ProbeOutputError(f"npu-smi row is neither an NPU nor a chip: {line.strip()!r}")
        npu = _Npu(
            npu_id=int(match.group(1)),
            name=match.group(2),
            health=cells[1],
            temperature=_second_number(cells[2]),
        )
        expecting_chip = True
        if npu.health != "OK":
            logger.warning("Ascend NPU %d reports health %s", npu.npu_id, npu.health)
    if not devices and "npu-smi" not in output:
        raise ProbeOutputError(f"npu-smi info printed no table: {output.strip()[:200]!r}")
    return devices


def _chip_device(index: int, npu: _Npu, cells: list[str]) -> GpuDevice:
    usage = cells[2]
    pairs = [(int(used), int(total)) for used, total in _USAGE_PAIR.findall(usage)]
    with_memory = [pair for pair in pairs if pair[1] > 0]
    if not with_memory:
        raise ProbeOutputError(f"npu-smi gave NPU {npu.npu_id} no memory size: {usage!r}")
    used, total = with_memory[-1]
    chip = cells[0].split()[0] if cells[0] else "0"
    bus_id = cells[1]
    slot = bus_id if _BUS_ID.fullmatch(bus_id) else str(npu.npu_id)
    return GpuDevice(
        index=index,
        vendor=GpuVendor.ASCEND,
        name=f"Ascend {npu.name}",
        uuid=f"NPU-{slot}-{chip}",
        memory_total=total * MIB,
        memory_used=used * MIB,
        utilization=parse_float(usage.split()[0]) if usage else None,
        temperature=npu.temperature,
    )


def _second_number(cell: str) -> float | None:
    tokens = cell.split()
    return parse_float(tokens[1]) if len(tokens) > 1 else None


class AscendDetector:
    """Ascend NPUs listed by ``npu-smi info``."""

    vendor = GpuVendor.ASCEND

    def __init__(self, runner: CommandRunner = run_command) -> None:
        self._runner = runner

    def detect(self) -> list[GpuDevice]:
        try:
            output = self._runner(NPU_SMI_ARGV)
        except CommandNotFound:
            return []
        return parse_npu_smi_info(output)
