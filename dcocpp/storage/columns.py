"""What a column of the station database holds, checked as it is read back.

SQLite keeps whatever a row is given: a bit flip, an operator's hand edit or a bug of an older
dcocpp can leave text in an INTEGER column, a blob in a TEXT one, or JSON that does not parse.
Each check here returns the value as the station uses it, or raises `Unreadable` saying what
the column holds instead; dcocpp/storage.py decides what becomes of the row.
"""

from __future__ import annotations

import json
import reprlib
from datetime import datetime
from decimal import Decimal
from typing import Any

# What a value may show of itself in a message (a hand-edited payload may be megabytes).
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80


class Unreadable(ValueError):
    """A stored value that is not what its column holds; the message says what is wrong."""


def shown(value: Any) -> str:
    """`value` for a message: its repr, long ones cut."""
    return _SHOWN.repr(value)


def integer(column: str, value: Any, *, maximum: int | None = None) -> int:
    """An integer from 0 (to `maximum`): every number the station stores is."""
    if type(value) is not int or value < 0 or (maximum is not None and value > maximum):
        bound = "of 0 or more" if maximum is None else f"from 0 to {maximum}"
        raise Unreadable(f"{column} {shown(value)} is not an integer {bound}")
    return value


def optional_integer(column: str, value: Any) -> int | None:
    return None if value is None else integer(column, value)


def flag(column: str, value: Any) -> bool:
    if type(value) is not int or value not in (0, 1):
        raise Unreadable(f"{column} {shown(value)} is not 0 or 1")
    return bool(value)


def text(column: str, value: Any) -> str:
    if not isinstance(value, str):
        raise Unreadable(f"{column} {shown(value)} is not text")
    return value


def optional_text(column: str, value: Any) -> str | None:
    return None if value is None else text(column, value)


def timestamp(column: str, value: Any) -> str:
    """An ISO 8601 date and time (OCPP's dateTime, as the station writes it: UTC, `Z`)."""
    try:
        if isinstance(value, str):
            datetime.fromisoformat(value.replace("Z", "+00:00"))
            return value
    except ValueError:
        pass
    raise Unreadable(f"{column} {shown(value)} is not a timestamp")


def json_object(column: str, value: Any, *, decimals: bool = False) -> dict[str, Any]:
    """The JSON object stored as text (its numbers with a fraction as Decimal, `decimals`)."""
    document = text(column, value)
    try:
        parsed = json.loads(
            document,
            parse_float=Decimal if decimals else float,
            parse_constant=_no_constant,  # NaN and Infinity are not JSON
        )
    except RecursionError:
        raise Unreadable(f"{column} is not JSON (nested too deep)") from None
    except ValueError as exc:
        raise Unreadable(f"{column} is not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise Unreadable(f"{column} is not a JSON object ({_SHOWN.repr(document)[1:-1]})")
    return parsed


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
