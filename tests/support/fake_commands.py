"""A fake command runner for the hardware detectors (test double): answers recorded
outputs for known argv, and behaves like a missing tool for anything else."""

from __future__ import annotations

from collections.abc import Sequence

from maasbase.worker.hardware import CommandNotFound


class FakeRunner:
    def __init__(self, outputs: dict[tuple[str, ...], str]) -> None:
        self.outputs = outputs
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        self.calls.append(tuple(argv))
        if tuple(argv) not in self.outputs:
            raise CommandNotFound(f"{argv[0]} is not installed")
        return self.outputs[tuple(argv)]
