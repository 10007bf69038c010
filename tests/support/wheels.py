"""This checkout built as ``pip install .`` builds it: a wheel whose gateway modules are
compiled with mypyc, unpacked into a folder that goes on ``PYTHONPATH``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(folder: Path) -> Path:
    """Build the wheel into ``folder`` and unpack it; the folder holding ``maasbase``."""
    wheels, site = folder / "wheels", folder / "site"
    env = {k: v for k, v in os.environ.items() if k != "MAAS_BASE_PURE_PYTHON"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(ROOT)],
        check=True, env=env, timeout=900,
    )  # fmt: skip
    wheel = next(wheels.glob("maas_base-*.whl"))
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--quiet", "--target", str(site), str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    return site


def suite_copy(folder: Path) -> Path:
    """A copy of the test suite and its configuration, outside the checkout, so that
    ``maasbase`` is imported from ``PYTHONPATH`` rather than from the source tree."""
    shutil.copytree(ROOT / "tests", folder / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    return folder
