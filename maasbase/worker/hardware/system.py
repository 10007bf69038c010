"""Host resources of the worker machine, through psutil and the platform module."""

from __future__ import annotations

import platform
import socket
from pathlib import Path

import psutil

from maasbase.common.hardware import SystemInfo


def describe_os(system: str, release: str, mac_version: str = "") -> str:
    """A short OS label: ``"Linux 6.1"``, ``"macOS 14.2.1"``, ``"Windows 10"``.

    Linux kernels are cut to major.minor; distribution build suffixes say nothing
    a scheduler needs.
    """
    if system == "Darwin":
        return f"macOS {mac_version}" if mac_version else f"Darwin {release}"
    if system == "Linux":
        parts = release.split(".")
        short = ".".join(parts[:2]) if len(parts) >= 2 else release
        return f"Linux {short}"
    return f"{system} {release}".strip() or "unknown"


def existing_ancestor(path: Path) -> Path:
    """``path`` itself, or its nearest parent that exists (a data dir may not exist yet)."""
    candidate = path.expanduser().absolute()
    while not candidate.exists() and candidate.parent != candidate:
        candidate = candidate.parent
    return candidate


def collect_system_info(data_dir: Path) -> SystemInfo:
    """CPU, memory, disk (of the filesystem holding ``data_dir``), OS and name of this host.

    Memory "used" is total minus available, the memory a new process cannot have.
    """
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(existing_ancestor(data_dir)))
    return SystemInfo(
        cpu_count=psutil.cpu_count(logical=True) or 1,
        memory_total=int(memory.total),
        memory_used=int(memory.total - memory.available),
        disk_total=int(disk.total),
        disk_free=int(disk.free),
        os=describe_os(platform.system(), platform.release(), platform.mac_ver()[0]),
        arch=platform.machine() or "unknown",
        hostname=socket.gethostname(),
    )
