"""Shapes shared by every resource: list pages and errors."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maasbase.common.bounds import MAX_DB_INT, shorten
from maasbase.common.errors import InvalidRequest

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

MAX_PER_PAGE = 1000
MAX_PAGE = MAX_DB_INT // MAX_PER_PAGE
"""So that a page's offset stays within the database's integer range."""


class Page(BaseModel, Generic[T]):
    """Every list endpoint answers with this shape."""

    items: list[T]
    total: int = Field(description="Number of items across all pages.")
    page: int
    per_page: int


class ErrorBody(BaseModel):
    message: str = Field(description="What went wrong and what to do about it.")
    type: str
    code: str
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    """Every error answers with this shape (the OpenAI error shape)."""

    error: ErrorBody


class Strict(BaseModel):
    """Request bodies reject unknown fields, so typos fail loudly."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def problems(exc: ValidationError | list[dict[str, Any]]) -> list[str]:
    """``field: what is wrong`` for each error, with echoed input cut short."""
    errors = exc.errors() if isinstance(exc, ValidationError) else exc
    found = []
    for error in errors[:20]:
        where = ".".join(
            part if isinstance(part, str) and len(part) <= 64 else shorten(part, 64)
            for part in (str(p) if not isinstance(p, str) else p for p in error["loc"])
        )
        message = str(error["msg"]).removeprefix("Value error, ")
        found.append(f"{where}: {message[:300]}" if where else message[:300])
    return found


def validate_as(model: type[M], data: object, *, prefix: str = "") -> M:
    """``model.model_validate(data)``, with failures as an ``InvalidRequest`` (400) that
    names the fields: for request data merged with stored data (PATCH)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        found = [prefix + p for p in problems(exc)]
        raise InvalidRequest(
            "invalid request: " + "; ".join(found), details={"errors": found}
        ) from exc
