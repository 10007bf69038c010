"""Wheel builds compile the gateway's request path with mypyc (``maasbase/gateway/compiled.py``
says which modules and why). Editable installs and ``MAAS_BASE_PURE_PYTHON=1`` build
plain Python; everything else about the package is in ``pyproject.toml``.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
# Commands that build the extensions; metadata and editable builds do not need them.
BUILDS = {"bdist_wheel", "build", "build_ext", "install"}
# The type check behind the compilation: the modules' own annotations, with whatever
# third-party packages the build environment lacks taken as untyped.
MYPY_OPTIONS = [
    "--config-file=",
    "--ignore-missing-imports",
    "--follow-imports=silent",
    "--strict-optional",
    "--no-warn-unused-ignores",
]


def compiled_modules() -> list[str]:
    source = (HERE / "maasbase" / "gateway" / "compiled.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "MODULES":
            return [f"maasbase/gateway/{name}.py" for name in ast.literal_eval(node.value)]
    raise RuntimeError("maasbase/gateway/compiled.py has no MODULES")


def extensions() -> list[Extension]:
    if os.environ.get("MAAS_BASE_PURE_PYTHON") == "1" or not BUILDS & set(sys.argv[1:]):
        return []
    from mypyc.build import mypycify

    os.chdir(HERE)  # mypyc names the modules after their paths
    built: list[Extension] = mypycify(
        [*MYPY_OPTIONS, *compiled_modules()], opt_level="3", group_name="maasbase_gateway"
    )
    return built


class OptionalBuildExt(build_ext):
    """Without a working C compiler the package is built as plain Python, with a warning,
    rather than not at all (the gateway then runs interpreted)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # CompileError, LinkError, a missing compiler or header
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            self.distribution.ext_modules = []
            print(
                f"WARNING: compiling the gateway failed ({exc}); MaaS-Base is installed as "
                "plain Python, and its gateway runs interpreted. Install a C compiler and "
                "Python's headers (e.g. apt-get install gcc python3-dev) to compile it.",
                file=sys.stderr,
            )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
