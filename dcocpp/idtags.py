"""idTags compared as OCPP 1.6 says: case-insensitively ("IdToken: ... case insensitive",
CiString20Type). A tag keeps its spelling wherever it is sent (StartTransaction carries the tag
as presented); only comparisons and the keys of the local list and the authorization cache use
the folded form.

Folding is ASCII only (an idTag is printable ASCII; SQLite's `lower()` and NOCASE fold the same
way, which the schema migration that folded stored keys relies on)."""

from __future__ import annotations

import string

_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def key(id_tag: str) -> str:
    """The form an idTag is compared and stored by."""
    return id_tag.translate(_FOLD)


def same(a: str | None, b: str | None) -> bool:
    """Whether two idTags are the same tag; never for a missing one."""
    return a is not None and b is not None and key(a) == key(b)
