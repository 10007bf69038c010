"""Static checks run as part of the suite: style, formatting, types, layering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lint

ROOT = Path(__file__).resolve().parents[2]
PATHS = ["maasbase", "tests", "bench"]


def _run(*args: str) -> None:
    command = (
        [sys.executable, "-m", *args]
        if args[0] != "lint-imports"
        else [
            str(Path(sys.executable).with_name("lint-imports")),
            *args[1:],
        ]
    )
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


def test_ruff_lint() -> None:
    _run("ruff", "check", *PATHS)


def test_ruff_format() -> None:
    _run("ruff", "format", "--check", *PATHS)


def test_mypy_strict() -> None:
    _run("mypy")


def test_layering_contracts() -> None:
    _run("lint-imports", "--config", str(ROOT / "pyproject.toml"))
