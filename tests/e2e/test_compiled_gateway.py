"""The gateway as ``pip install .`` installs it, with its request path compiled by mypyc,
passes the gateway's unit, integration and llama.cpp end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from maasbase.gateway.compiled import MODULES
from tests.support.wheels import build_wheel, suite_copy

pytestmark = pytest.mark.e2e

SUITE = [
    "tests/e2e/test_gateway_llamacpp.py",  # the official openai SDK, a real llama.cpp
    "tests/unit/gateway",
    "tests/integration/test_gateway_balancing.py",
    "tests/integration/test_gateway_control.py",
    "tests/integration/test_gateway_limits.py",
    "tests/integration/test_gateway_openai.py",
    "tests/integration/test_gateway_server.py",
    "tests/integration/test_gateway_standalone.py",
    "tests/integration/test_gateway_upstream.py",
    "tests/integration/test_provider_update.py",
]


class Installed(NamedTuple):
    site: Path  # the unpacked wheel
    suite: Path  # a copy of the tests, outside the checkout
    env: dict[str, str]  # imports maasbase from ``site``


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    site = build_wheel(tmp_path_factory.mktemp("wheel"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    return Installed(site, suite_copy(tmp_path_factory.mktemp("suite")), env)


def test_the_wheel_compiles_every_listed_module(installed: Installed) -> None:
    probe = (
        "import importlib, sys\n"
        "from maasbase.gateway.compiled import MODULES, is_compiled\n"
        "for name in MODULES:\n"
        "    module = importlib.import_module('maasbase.gateway.' + name)\n"
        "    print(name, is_compiled(module), module.__file__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=installed.suite, env=installed.env,
        capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(MODULES)
    assert all(line.split()[1] == "True" for line in lines), result.stdout
    assert all(line.split()[2].startswith(str(installed.site)) for line in lines)


def test_the_gateway_suite_passes_compiled(installed: Installed) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITE],
        cwd=installed.suite, env=installed.env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
