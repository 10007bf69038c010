"""Seams shared by the GPU detectors: the detector protocol and the command runner.

Every vendor sits behind one :class:`Detector`. Detectors that read a command's
output take a :data:`CommandRunner`, so tests hand them recorded outputs instead of
running the real tools.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence
from typing import Protocol

from maasbase.common.errors import MaasError
from maasbase.common.hardware import GpuDevice, GpuVendor

logger = logging.getLogger(__name__)

DEFAULT_COMMAND_TIMEOUT = 15.0
"""Seconds a vendor tool may run; rocm-smi and npu-smi take a few seconds on big hosts."""

MIB = 1024 * 1024
GIB = 1024 * MIB


class HardwareProbeError(MaasError):
    """Detection of a vendor's devices failed; the vendor's devices are left out."""

    code = "hardware_probe_failed"
    retryable = True


class CommandNotFound(HardwareProbeError):
    """The tool is not installed: the machine has no devices of that vendor."""


class CommandFailed(HardwareProbeError):
    """The tool is installed but exited with an error or did not finish in time."""


class ProbeOutputError(HardwareProbeError):
    """A tool's output could not be understood."""


CommandRunner = Callable[[Sequence[str]], str]
"""Runs ``argv`` and returns its standard output.

Raises :class:`CommandNotFound` when the executable is missing and
:class:`CommandFailed` when it fails.
"""


class Detector(Protocol):
    """Finds the devices of one vendor.

    ``detect`` returns an empty list when the vendor's driver or tool is absent,
    and raises when the vendor is present but could not be read.
    """

    @property
    def vendor(self) -> GpuVendor: ...

    def detect(self) -> list[GpuDevice]: ...


def run_command(argv: Sequence[str], *, timeout: float = DEFAULT_COMMAND_TIMEOUT) -> str:
    """The real :data:`CommandRunner`: a subprocess with a timeout, no shell."""
    args = list(argv)
    try:
        completed = subprocess.run(  # noqa: S603 (fixed argv from this package, no shell)
            args, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise CommandNotFound(f"{args[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{' '.join(args)} did not finish within {timeout:g} s") from exc
    except OSError as exc:
        raise CommandFailed(f"{' '.join(args)} could not be started: {exc}") from exc
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip()[-500:]
        raise CommandFailed(
            f"{' '.join(args)} exited with status {completed.returncode}: {detail}",
            details={"returncode": completed.returncode},
        )
    logger.debug("ran %s", args)
    return completed.stdout


def parse_float(value: object) -> float | None:
    """A tool's number as a float; ``None`` for "N/A", blanks and other non-numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().rstrip("%"))
        except ValueError:
            return None
    return None
