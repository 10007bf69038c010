"""Bounds every input meets before it reaches storage: integer ranges and printable text.

The database columns are 32-bit integers, so ids, limits and counts that a client sends
are checked against that range here and refused with a 400 naming the field, instead
of failing inside the driver. Text refuses control characters (NUL among them, which
PostgreSQL cannot store) and unpaired surrogates (which no encoding can store).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import AfterValidator, Field

MAX_DB_INT = 2**31 - 1
"""The largest value of an ``Integer`` column on every supported database."""

Id = Annotated[int, Ge(1), Le(MAX_DB_INT)]
"""A row id: 1 … 2^31 − 1."""

DbInt = Annotated[int, Ge(0), Le(MAX_DB_INT)]
"""A non-negative integer stored in an ``Integer`` column."""

PositiveDbInt = Annotated[int, Ge(1), Le(MAX_DB_INT)]
"""A positive integer stored in an ``Integer`` column (limits, quotas)."""

# C0 controls, DEL, C1 controls and lone surrogates; the multi-line variant keeps tab,
# line feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
_PRINTABLE_MULTILINE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"


def shorten(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to about ``limit`` characters: what error messages echo."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(str(value))} characters)"


def _printable(value: str) -> str:
    found = _CONTROL.search(value)
    if found is not None:
        raise ValueError(
            f"contains the control character U+{ord(found.group()):04X}; "
            "remove control characters (NUL, newlines, tabs, …)"
        )
    return value


def _printable_multiline(value: str) -> str:
    found = _CONTROL_MULTILINE.search(value)
    if found is not None:
        raise ValueError(
            f"contains the control character U+{ord(found.group()):04X}; only tab and "
            "newlines are allowed"
        )
    return value


def _schema_pattern(pattern: str) -> Any:
    return Field(json_schema_extra={"pattern": pattern})


Text = Annotated[str, AfterValidator(_printable), _schema_pattern(_PRINTABLE_PATTERN)]
"""One line of text: no control characters."""

MultilineText = Annotated[
    str, AfterValidator(_printable_multiline), _schema_pattern(_PRINTABLE_MULTILINE_PATTERN)
]
"""Text that may span lines (descriptions, engine arguments): tab, CR and LF allowed."""


def printable(value: str) -> str:
    """``value`` when it holds no control characters; ``ValueError`` otherwise."""
    return _printable(value)
