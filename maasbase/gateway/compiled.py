"""The gateway's request path, compiled to C with mypyc when the package is built as a wheel.

``pip install .`` (and any wheel build) compiles the modules in ``MODULES`` with mypyc:
the same source, type-checked as it is, runs about a third fewer instructions per
request. Editable installs (``pip install -e``), ``MAAS_BASE_PURE_PYTHON=1`` and
machines without a C compiler get plain Python; ``setup.py`` does the build, the e2e
suite runs the gateway's tests against a built wheel, and ``bench/gateway_bench.py``
measures both.

Rules for these modules, where compiled code behaves differently from the interpreter
(``tests/lint/test_compiled_rules.py`` checks them):

- no ``await`` inside a ``finally`` block or an ``except`` handler: there, mypyc leaves
  the handled exception set as the thread's current one once the exception moves on,
  and a later ``await`` elsewhere can raise it again. Keep the exception in a variable,
  leave the handler, then await; ``async with`` is fine;
- no exception classes: class attributes of exception subclasses (``code``,
  ``status_code``) are not overridden in compiled subclasses; errors live in
  ``errors.py``, which stays interpreted;
- no interpreted subclasses of their classes: a class that derives from a compiled one
  (``AsgiCall`` and ``native_call.NativeCall`` from ``Call``) is compiled with it.
"""

from __future__ import annotations

from types import ModuleType

MODULES = (
    "anthropic",
    "app",
    "asgi",
    "auth",
    "balancer",
    "call",
    "handlers",
    "limits",
    "metering",
    "native_call",
    "payloads",
    "proxy",
    "routing",
    "server",
    "upstream",
)


def is_compiled(module: ModuleType | None = None) -> bool:
    """Whether ``module`` (by default the gateway's ``Call``) was loaded from a compiled
    extension rather than from its ``.py`` source."""
    if module is None:
        from maasbase.gateway import call

        module = call
    return not (module.__file__ or "").endswith(".py")
