"""JSON values as every layer meets them: how to name a value's type in an error message ("must
be a number, not a string"), and whether its text is Unicode that UTF-8 can carry."""

from __future__ import annotations

from typing import Any


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: True is an int to Python, not to JSON
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def valid_text(value: Any) -> bool:
    """No string in `value` (a parsed JSON value) holds a lone surrogate: `\\ud800` is valid
    JSON but no Unicode, which could be neither stored nor sent on (UTF-8 cannot encode it)."""
    if isinstance(value, str):
        if value.isascii():
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(valid_text(k) and valid_text(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(valid_text(v) for v in value)
    return True
