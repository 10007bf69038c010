"""The gateway modules compiled with mypyc keep the rules of ``maasbase/gateway/compiled.py``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from maasbase.gateway.compiled import MODULES

pytestmark = pytest.mark.lint

GATEWAY = Path(__file__).resolve().parents[2] / "maasbase" / "gateway"
EXCEPTIONS = {"Exception", "BaseException", "MaasError", "RuntimeError", "ValueError"}


def _tree(name: str) -> ast.Module:
    return ast.parse((GATEWAY / f"{name}.py").read_text(), f"{name}.py")


def awaits_in_handlers(tree: ast.Module) -> list[int]:
    """Lines of ``await`` (or ``async for``/``async with``) inside a ``finally`` block
    or an ``except`` handler."""
    lines: list[int] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try | ast.TryStar):
            continue
        bodies = [node.finalbody, *(handler.body for handler in node.handlers)]
        for statement in (s for body in bodies for s in body):
            lines.extend(
                sub.lineno
                for sub in ast.walk(statement)
                if isinstance(sub, ast.Await | ast.AsyncFor | ast.AsyncWith)
            )
    return sorted(lines)


def exception_classes(tree: ast.Module) -> list[str]:
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(isinstance(base, ast.Name) and base.id in EXCEPTIONS for base in node.bases)
    ]


def test_the_checks_find_what_they_look_for() -> None:
    sample = ast.parse(
        "async def f():\n"
        "    try:\n        await g()\n"
        "    except E:\n        await h()\n        raise\n"
        "    finally:\n        await i()\n"
        "class Failed(MaasError):\n    code = 'x'\n"
    )
    assert awaits_in_handlers(sample) == [5, 8]
    assert exception_classes(sample) == ["Failed"]


@pytest.mark.parametrize("name", MODULES)
def test_no_await_inside_finally_or_except(name: str) -> None:
    assert awaits_in_handlers(_tree(name)) == [], (
        f"maasbase/gateway/{name}.py awaits inside a finally or except block at these "
        "lines; compiled, that re-raises handled exceptions later (see compiled.py)"
    )


@pytest.mark.parametrize("name", MODULES)
def test_no_exception_classes(name: str) -> None:
    assert exception_classes(_tree(name)) == [], (
        f"maasbase/gateway/{name}.py defines exception classes; they belong in errors.py"
    )


def test_errors_stay_interpreted() -> None:
    assert "errors" not in MODULES
