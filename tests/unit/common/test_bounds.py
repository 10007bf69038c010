"""Input bounds: integer ranges of the database and printable text."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from maasbase.common.bounds import MAX_DB_INT, Id, MultilineText, Text, shorten


class _Body(BaseModel):
    id: Id | None = None
    name: Text = ""
    notes: MultilineText = ""


@pytest.mark.parametrize("value", [0, -1, MAX_DB_INT + 1, 2**63])
def test_ids_outside_the_column_range_are_refused(value: int) -> None:
    with pytest.raises(ValidationError, match="id"):
        _Body(id=value)


def test_ids_inside_the_range_pass() -> None:
    assert _Body(id=1).id == 1
    assert _Body(id=MAX_DB_INT).id == MAX_DB_INT


@pytest.mark.parametrize("text", ["a\x00b", "line\nbreak", "\x7f", "\x85", "\ud800"])
def test_one_line_text_refuses_control_characters(text: str) -> None:
    with pytest.raises(ValidationError, match="control character"):
        _Body(name=text)


def test_multiline_text_keeps_newlines_and_tabs_only() -> None:
    assert _Body(notes="a\n\tb\r\n").notes == "a\n\tb\r\n"
    with pytest.raises(ValidationError, match="U\\+0000"):
        _Body(notes="a\x00")


def test_shorten_cuts_long_values_and_says_how_long_they_were() -> None:
    assert shorten("abc") == "'abc'"
    short = shorten("x" * 10_000, 80)
    assert len(short) < 110
    assert "10000 characters" in short
