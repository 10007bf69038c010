"""AMD GPUs through the ``amdsmi`` Python module, or the ``rocm-smi`` command.

``amdsmi`` ships with ROCm 6 and is optional; when it cannot be imported or
initialised, detection falls back to ``rocm-smi ... --json`` and parses its output.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

from maasbase.common.hardware import GpuDevice, GpuVendor
from maasbase.worker.hardware.base import (
    CommandNotFound,
    CommandRunner,
    ProbeOutputError,
    parse_float,
    run_command,
)

logger = logging.getLogger(__name__)

ROCM_SMI_ARGV = (
    "rocm-smi",
    "--showproductname",
    "--showmeminfo",
    "vram",
    "--showuse",
    "--showtemp",
    "--showuniqueid",
    "--json",
)

_CARD_KEY = re.compile(r"card(\d+)")
_NAME_KEYS = ("Card Series", "Card series", "Device Name", "Card Model", "Card model")
_TEMPERATURE_KEYS = ("Temperature (Sensor edge) (C)", "Temperature (Sensor junction) (C)")
_MISSING = frozenset({"", "N/A", "n/a", "NA"})


def parse_rocm_smi_json(output: str) -> list[GpuDevice]:
    """Devices from ``rocm-smi --showproductname --showmeminfo vram --showuse
    --showtemp --showuniqueid --json``.

    The output maps ``cardN`` to a flat object of strings; a ``system`` entry and
    any warning lines printed before the JSON are ignored. Cards are numbered in
    ``cardN`` order. The temperature is the edge sensor's, or the junction
    sensor's on parts without an edge sensor (MI300X): rocm-smi leaves sensors
    that read N/A out of its JSON.
    """
    start = output.find("{")
    if start < 0:
        raise ProbeOutputError(f"rocm-smi printed no JSON: {output.strip()[:200]!r}")
    try:
        data, _ = json.JSONDecoder().raw_decode(output, start)
    except json.JSONDecodeError as exc:
        raise ProbeOutputError(f"rocm-smi printed malformed JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProbeOutputError("rocm-smi JSON is not an object")
    cards: list[tuple[int, str, dict[str, Any]]] = []
    for key, fields in data.items():
        match = _CARD_KEY.fullmatch(key)
        if match and isinstance(fields, dict):
            cards.append((int(match.group(1)), key, fields))
    cards.sort()
    return [_card_device(index, key, fields) for index, (_, key, fields) in enumerate(cards)]


def _card_device(index: int, key: str, fields: dict[str, Any]) -> GpuDevice:
    total = _bytes(fields, key, "VRAM Total Memory (B)")
    used = _bytes(fields, key, "VRAM Total Used Memory (B)")
    uuid = str(fields.get("Unique ID", "")).strip()
    temperatures = (parse_float(fields.get(name)) for name in _TEMPERATURE_KEYS)
    return GpuDevice(
        index=index,
        vendor=GpuVendor.AMD,
        name=_first_present(fields, _NAME_KEYS) or "AMD GPU",
        uuid=uuid if uuid not in _MISSING else f"AMD-{key}",
        memory_total=total,
        memory_used=used,
        utilization=parse_float(fields.get("GPU use (%)")),
        temperature=next((t for t in temperatures if t is not None), None),
    )


def _bytes(fields: dict[str, Any], card: str, name: str) -> int:
    value = fields.get(name)
    try:
        return int(str(value))
    except ValueError:
        raise ProbeOutputError(f"rocm-smi gave {card} no usable {name!r}: {value!r}") from None


def _first_present(fields: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = str(fields.get(key, "")).strip()
        if value not in _MISSING:
            return value
    return None


def import_amdsmi() -> ModuleType | None:
    """The ``amdsmi`` module, or ``None`` when it is not installed or its library is missing."""
    try:
        return importlib.import_module("amdsmi")
    except (ImportError, OSError) as exc:
        logger.debug("amdsmi is not usable: %s", exc)
        return None


def read_amdsmi(lib: Any) -> list[GpuDevice]:
    """Devices through the ``amdsmi`` Python API (ROCm 6 and later)."""
    lib.amdsmi_init()
    try:
        handles = lib.amdsmi_get_processor_handles()
        return [_amdsmi_device(lib, index, handle) for index, handle in enumerate(handles)]
    finally:
        lib.amdsmi_shut_down()


def _amdsmi_device(lib: Any, index: int, handle: object) -> GpuDevice:
    vram = lib.AmdSmiMemoryType.VRAM

    def activity() -> object:
        return lib.amdsmi_get_gpu_activity(handle)["gfx_activity"]

    def hotspot() -> object:
        return lib.amdsmi_get_temp_metric(
            handle, lib.AmdSmiTemperatureType.HOTSPOT, lib.AmdSmiTemperatureMetric.CURRENT
        )

    return GpuDevice(
        index=index,
        vendor=GpuVendor.AMD,
        name=str(lib.amdsmi_get_gpu_asic_info(handle).get("market_name") or "AMD GPU"),
        uuid=str(lib.amdsmi_get_gpu_device_uuid(handle)),
        memory_total=int(lib.amdsmi_get_gpu_memory_total(handle, vram)),
        memory_used=int(lib.amdsmi_get_gpu_memory_usage(handle, vram)),
        utilization=_amdsmi_optional(lib, activity),
        temperature=_amdsmi_optional(lib, hotspot),
    )


def _amdsmi_optional(lib: Any, read: Callable[[], object]) -> float | None:
    """A reading the part may not offer: ``None`` when amdsmi refuses it or says N/A."""
    try:
        return parse_float(read())
    except lib.AmdSmiException:
        return None


class AmdDetector:
    """AMD GPUs: ``amdsmi`` when it works, else ``rocm-smi``."""

    vendor = GpuVendor.AMD

    def __init__(
        self,
        runner: CommandRunner = run_command,
        *,
        amdsmi_loader: Callable[[], Any] = import_amdsmi,
    ) -> None:
        self._runner = runner
        self._amdsmi_loader = amdsmi_loader

    def detect(self) -> list[GpuDevice]:
        lib = self._amdsmi_loader()
        if lib is not None:
            try:
                return read_amdsmi(lib)
            except lib.AmdSmiException as exc:
                logger.debug("amdsmi failed (%s); trying rocm-smi", exc)
        try:
            output = self._runner(ROCM_SMI_ARGV)
        except CommandNotFound:
            return []
        return parse_rocm_smi_json(output)
