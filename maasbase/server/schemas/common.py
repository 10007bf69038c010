"""Shapes shared by every resource: list pages and errors."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

MAX_PER_PAGE = 1000


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
