"""Simulated GPUs: a worker pretends to have hardware it does not have.

``--simulate-gpus VALUE`` accepts, in this order of precedence:

1. the name of a shipped fixture, e.g. ``8xH100-80GB`` (see :func:`fixture_names`);
2. a path to a fixture JSON file (``*.json``, same layout as the shipped ones);
3. a GPU spec::

       SPEC       := ENTRY ("," ENTRY)*
       ENTRY      := [COUNT "x"] [VENDOR "/"] NAME ":" MEMORY_GIB
       COUNT      := whole number from 1 to 1024; 1 when left out
       VENDOR     := nvidia | amd | apple | ascend
       NAME       := letters, digits, spaces and "-" "_" "." "+", starting with a letter or digit
       MEMORY_GIB := GiB per device, a number above 0 and at most 16384 (decimals allowed)

   e.g. ``4xH100:80,2xL4:24``, ``H100:80``, ``2xamd/MI300X:192``, ``"2xRTX 4090:24"``
   (quote values with spaces in a shell). Whitespace around the parts is ignored.
   Without ``VENDOR/`` the vendor is inferred from the name: H100, A100, L4, L40S,
   RTX 4090, ... are NVIDIA; MI300X, MI250, Radeon ... AMD; 910B, Ascend ... Ascend;
   M1..M4 (Pro/Max/Ultra) Apple.

Simulated devices are idle (``memory_used`` 0, utilization 0.0, temperature
``None``), carry ``simulated=True`` and get UUIDs ``SIM-GPU-[SALT-]NAME-N``: N is
the device's position in the whole simulation and SALT (8 hex digits derived from
the worker name, when given) keeps UUIDs unique across workers. The same value
always yields the same devices.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maasbase.common.errors import InvalidRequest
from maasbase.common.hardware import GpuDevice, GpuVendor
from maasbase.worker.hardware.base import GIB

MAX_COUNT = 1024
MAX_MEMORY_GIB = 16384.0
SPEC_FORM = "COUNTxNAME:MEMORY_GIB"
SPEC_EXAMPLE = "4xH100:80,2xL4:24"

_ENTRY = re.compile(
    r"(?:(?P<count>\d+)\s*[xX]\s*)?(?:(?P<vendor>[A-Za-z]+)\s*/\s*)?"
    r"(?P<name>[^,:/]*):(?P<memory>[^,:/]*)"
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+-]*")
_VENDOR_RULES: tuple[tuple[GpuVendor, re.Pattern[str]], ...] = (
    (
        GpuVendor.NVIDIA,
        re.compile(
            r"^(?:nvidia|geforce|tesla|quadro|titan|rtx|gtx)\b|^g[hb]\d+|^[abhlptv]\d{1,4}[a-z]*\b",
            re.IGNORECASE,
        ),
    ),
    (GpuVendor.AMD, re.compile(r"^(?:amd|radeon|instinct)\b|^mi\d{2,3}[a-z]*\b|^rx\s*\d", re.I)),
    (GpuVendor.ASCEND, re.compile(r"^(?:ascend|huawei)\b|^[39]10[a-z0-9]*\b", re.IGNORECASE)),
    (GpuVendor.APPLE, re.compile(r"^(?:apple\s+)?m[1-9]\d*(?:\s+(?:pro|max|ultra))?$", re.I)),
)


class GpuSpecError(InvalidRequest):
    """A ``--simulate-gpus`` value that is neither a valid spec nor a usable fixture."""

    code = "invalid_gpu_spec"


@dataclass(frozen=True)
class GpuSpecEntry:
    """``count`` devices called ``name`` from ``vendor`` with ``memory_gib`` GiB each."""

    count: int
    vendor: GpuVendor
    name: str
    memory_gib: float

    @property
    def memory_bytes(self) -> int:
        return round(self.memory_gib * GIB)


class FixtureSystem(BaseModel):
    """The host a fixture describes; disk and hostname always come from the real host."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_count: int = Field(ge=1)
    memory_total: int = Field(ge=0)
    memory_used: int = Field(default=0, ge=0)
    os: str
    arch: str


class HardwareFixture(BaseModel):
    """A recorded-style snapshot of one machine, as stored in ``fixtures/*.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    system: FixtureSystem
    gpus: list[GpuDevice] = Field(default_factory=list)


@dataclass(frozen=True)
class SimulatedHardware:
    """What a ``--simulate-gpus`` value stands for; ``system`` is set for fixtures only."""

    gpus: list[GpuDevice]
    system: FixtureSystem | None
    source: str


def infer_vendor(name: str) -> GpuVendor | None:
    """The vendor a GPU name belongs to, or ``None`` when the name is not recognised."""
    for vendor, pattern in _VENDOR_RULES:
        if pattern.search(name.strip()):
            return vendor
    return None


def _bad(entry: str, problem: str | None = None) -> GpuSpecError:
    reason = f"{problem}; expected" if problem else "expected"
    return GpuSpecError(f"bad GPU spec {entry!r}: {reason} {SPEC_FORM}, e.g. {SPEC_EXAMPLE}")


def parse_gpu_spec(spec: str) -> list[GpuSpecEntry]:
    """Entries of a GPU spec (grammar in the module docstring); raises :class:`GpuSpecError`."""
    if not spec.strip():
        raise GpuSpecError(f"empty GPU spec: expected {SPEC_FORM}, e.g. {SPEC_EXAMPLE}")
    parts = spec.split(",")
    return [_parse_entry(spec, part.strip(), position) for position, part in enumerate(parts, 1)]


def _parse_entry(spec: str, entry: str, position: int) -> GpuSpecEntry:
    if not entry:
        raise _bad(spec, f"entry {position} is empty")
    match = _ENTRY.fullmatch(entry)
    if match is None:
        hint = "" if ":" in entry else f" (or a fixture: {', '.join(fixture_names())})"
        raise GpuSpecError(str(_bad(entry)) + hint)
    count = int(match["count"]) if match["count"] is not None else 1
    if not 1 <= count <= MAX_COUNT:
        raise _bad(entry, f"count must be from 1 to {MAX_COUNT}, got {count}")
    name = match["name"].strip()
    if not name:
        raise _bad(entry, "the GPU name is empty")
    if not _NAME.fullmatch(name):
        raise _bad(entry, f"GPU name {name!r} may only hold letters, digits, spaces and -_.+")
    vendor = _vendor(entry, match["vendor"], name)
    memory_text = match["memory"].strip()
    try:
        memory_gib = float(memory_text)
    except ValueError:
        raise _bad(entry, f"memory {memory_text!r} is not a number of GiB") from None
    if not math.isfinite(memory_gib):
        raise _bad(entry, f"memory {memory_text!r} is not a number of GiB")
    if memory_gib > MAX_MEMORY_GIB:
        raise _bad(entry, f"memory must be at most {MAX_MEMORY_GIB:g} GiB, got {memory_text}")
    parsed = GpuSpecEntry(count=count, vendor=vendor, name=name, memory_gib=memory_gib)
    if parsed.memory_bytes <= 0:
        raise _bad(entry, f"memory must be more than 0 GiB, got {memory_text}")
    return parsed


def _vendor(entry: str, explicit: str | None, name: str) -> GpuVendor:
    if explicit is not None:
        try:
            return GpuVendor(explicit.lower())
        except ValueError:
            choices = ", ".join(vendor.value for vendor in GpuVendor)
            raise _bad(entry, f"unknown vendor {explicit!r}, use one of {choices}") from None
    vendor = infer_vendor(name)
    if vendor is None:
        raise GpuSpecError(
            f"bad GPU spec {entry!r}: cannot tell the vendor of {name!r}; "
            f"prefix it with nvidia/, amd/, apple/ or ascend/, e.g. 2xnvidia/{name}:24"
        )
    return vendor


def format_gpu_spec(entries: Iterable[GpuSpecEntry]) -> str:
    """The spec text for ``entries``, vendors spelled out; :func:`parse_gpu_spec` reads it back."""
    return ",".join(
        f"{e.count}x{e.vendor.value}/{e.name}:{_format_gib(e.memory_gib)}" for e in entries
    )


def _format_gib(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def simulated_uuid(name: str, position: int, salt: str | None = None) -> str:
    """``SIM-GPU-[SALT-]NAME-POSITION``; SALT is 8 hex digits of the salt's SHA-256."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "GPU"
    prefix = "SIM-GPU"
    if salt:
        prefix += "-" + hashlib.sha256(salt.encode()).hexdigest()[:8]
    return f"{prefix}-{slug}-{position}"


def simulate_devices(
    devices: Sequence[tuple[GpuVendor, str, int]], salt: str | None = None
) -> list[GpuDevice]:
    """Idle simulated devices for ``(vendor, name, memory_bytes)``, indexed per vendor."""
    per_vendor: Counter[GpuVendor] = Counter()
    result = []
    for position, (vendor, name, memory_total) in enumerate(devices):
        result.append(
            GpuDevice(
                index=per_vendor[vendor],
                vendor=vendor,
                name=name,
                uuid=simulated_uuid(name, position, salt),
                memory_total=memory_total,
                memory_used=0,
                utilization=0.0,
                temperature=None,
                simulated=True,
            )
        )
        per_vendor[vendor] += 1
    return result


def devices_from_spec(entries: Iterable[GpuSpecEntry], salt: str | None = None) -> list[GpuDevice]:
    """The devices a parsed spec describes."""
    flat = [(e.vendor, e.name, e.memory_bytes) for e in entries for _ in range(e.count)]
    return simulate_devices(flat, salt)


def _fixture_dir() -> Traversable:
    return resources.files("maasbase.worker.hardware").joinpath("fixtures")


def fixture_names() -> list[str]:
    """Names of the shipped fixtures, usable as ``--simulate-gpus`` values."""
    return sorted(
        entry.name.removesuffix(".json")
        for entry in _fixture_dir().iterdir()
        if entry.name.endswith(".json")
    )


def load_fixture(name: str) -> HardwareFixture:
    """A shipped fixture by name."""
    if name not in fixture_names():
        raise GpuSpecError(f"no GPU fixture {name!r}; shipped: {', '.join(fixture_names())}")
    return _parse_fixture(_fixture_dir().joinpath(f"{name}.json").read_text(), name)


def load_fixture_file(path: Path) -> HardwareFixture:
    """A fixture from a JSON file with the shipped fixtures' layout."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise GpuSpecError(f"cannot read GPU fixture file {str(path)!r}: {exc.strerror}") from exc
    return _parse_fixture(text, str(path))


def _parse_fixture(text: str, origin: str) -> HardwareFixture:
    try:
        return HardwareFixture.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise GpuSpecError(f"GPU fixture {origin!r} is not valid: {exc}") from exc


def load_simulation(value: str, *, salt: str | None = None) -> SimulatedHardware:
    """Resolve a ``--simulate-gpus`` value (fixture name, fixture file, or spec)."""
    text = value.strip()
    if text and text in fixture_names():
        return _from_fixture(load_fixture(text), f"fixture {text}", salt)
    path = Path(text).expanduser()
    if text.endswith(".json") or (text and path.is_file()):
        return _from_fixture(load_fixture_file(path), f"fixture file {text}", salt)
    return SimulatedHardware(
        gpus=devices_from_spec(parse_gpu_spec(text), salt), system=None, source=f"spec {text}"
    )


def _from_fixture(fixture: HardwareFixture, source: str, salt: str | None) -> SimulatedHardware:
    flat = [(gpu.vendor, gpu.name, gpu.memory_total) for gpu in fixture.gpus]
    return SimulatedHardware(
        gpus=simulate_devices(flat, salt), system=fixture.system, source=source
    )
