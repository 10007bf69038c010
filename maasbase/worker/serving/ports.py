"""Ports for inference servers, from a configured range, checked free before use.

Engines listen on the worker's loopback only (the data-plane proxy is their one way
in), so a port is checked free on ``127.0.0.1``."""

from __future__ import annotations

import socket

from maasbase.common.errors import Unavailable


class PortsExhausted(Unavailable):
    code = "ports_exhausted"


def _free(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class PortAllocator:
    def __init__(self, start: int = 40000, end: int = 40999, host: str = "127.0.0.1") -> None:
        if not 1 <= start <= end <= 65535:
            raise ValueError(f"bad port range {start}-{end}")
        self.start, self.end, self.host = start, end, host
        self._used: set[int] = set()
        self._next = start

    def allocate(self) -> int:
        size = self.end - self.start + 1
        for offset in range(size):
            port = self.start + (self._next - self.start + offset) % size
            if port in self._used or not _free(port, self.host):
                continue
            self._used.add(port)
            self._next = port + 1 if port < self.end else self.start
            return port
        raise PortsExhausted(
            f"no free port in {self.start}-{self.end} for a new inference server; "
            "stop some instances or widen the range"
        )

    def claim(self, port: int) -> None:
        """Mark a port in use (an adopted server already listens on it)."""
        self._used.add(port)

    def release(self, port: int) -> None:
        self._used.discard(port)
