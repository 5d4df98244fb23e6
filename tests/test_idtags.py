"""idTags compare case-insensitively, folding ASCII letters only (as SQLite's lower() does)."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import hypothesis
from hypothesis import strategies as st

from dcocpp import idtags

# CiString20Type: printable ASCII, up to 20 characters.
tags = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@hypothesis.given(tags, tags)
def test_same_is_equality_ignoring_case(a: str, b: str) -> None:
    assert idtags.same(a, b) == (a.lower() == b.lower())
    assert idtags.same(a, a.upper()) and idtags.same(a.swapcase(), a)


@hypothesis.given(tags)
def test_key_folds_as_sqlite_lower(tag: str) -> None:
    with closing(sqlite3.connect(":memory:")) as db:
        assert idtags.key(tag) == db.execute("SELECT lower(?)", (tag,)).fetchone()[0]


def test_a_missing_tag_is_never_the_same() -> None:
    assert not idtags.same(None, None)
    assert not idtags.same("A", None) and not idtags.same(None, "a")
    assert idtags.key("ÄbC") == "Äbc"  # beyond ASCII nothing is folded
