"""Hypothesis strategies for OCPP 1.6 payloads: schema-valid ones drawn from the schemas the
charger holds every message to (`wire.schema`: the `ocpp` package's, with the int32 range), and
broken ones (`mutated`): wrong types, extra and missing properties, huge numbers, odd strings
and dates, nested junk.

hypothesis-jsonschema would draw the valid ones, but its latest release (0.23.1) fails on
the Hypothesis this project pins ("'many' object has no attribute 'more'"); the OCPP 1.6
schemas use a small part of JSON Schema, which `from_schema` covers.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
from ocpp.messages import MessageType

from dcocpp.ocpp import wire

# Lists are kept short: the charger's behaviour does not change with the 30th element, and a
# short example runs and shrinks faster.
MAX_LIST = 4
# The instants the dates are drawn around: every year, and the ends of datetime's range.
_OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-1))])
_DATES = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_OFFSETS
)
_EDGE_DATES = st.sampled_from(
    [
        "9999-12-31T23:00:00Z",
        "9999-12-31T23:59:59.999Z",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "2026-11-24T00:00:00",
        "2026-02-30T00:00:00Z",
        "yesterday",
    ]
)


def date_time() -> st.SearchStrategy[str]:
    """OCPP dateTime strings: mostly well-formed ones of any year and offset, some at the ends
    of the range, some that are not dates at all."""
    formatted = _DATES.map(lambda d: d.isoformat().replace("+00:00", "Z"))
    return st.one_of(formatted, formatted, _EDGE_DATES)


def from_schema(
    schema: dict[str, Any], root: dict[str, Any] | None = None
) -> st.SearchStrategy[Any]:
    """Schema-valid values of `schema` (the subset of JSON Schema the OCPP 1.6 schemas use)."""
    root = schema if root is None else root
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/definitions/")
        return from_schema(root["definitions"][name], root)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        properties = {k: from_schema(v, root) for k, v in schema.get("properties", {}).items()}
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: v for k, v in properties.items() if k in required},
            optional={k: v for k, v in properties.items() if k not in required},
        )
    if kind == "array":
        low = schema.get("minItems", 0)
        high = min(schema.get("maxItems", MAX_LIST), max(low, MAX_LIST))
        return st.lists(from_schema(schema["items"], root), min_size=low, max_size=high)
    if kind == "string":
        if schema.get("format") == "date-time":
            return date_time()
        return st.text(max_size=schema.get("maxLength", 60))
    if kind == "integer":
        # Small ones name the connectors, transactions and reservations that exist.
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.one_of(st.integers(-1, 3), st.sampled_from([low, high]), st.integers(low, high))
    if kind == "number":
        # multipleOf 0.1 in every OCPP 1.6 number: tenths, as Decimal (exact on the wire)
        tenths = st.integers(int(schema["minimum"]) * 10, int(schema["maximum"]) * 10)
        return tenths.map(lambda n: Decimal(n).scaleb(-1))
    if kind == "boolean":
        return st.booleans()
    raise ValueError(f"schema not covered: {schema}")


def valid(message_type_id: int, action: str) -> st.SearchStrategy[dict[str, Any]]:
    return from_schema(wire.schema(message_type_id, action))


def calls(action: str) -> st.SearchStrategy[dict[str, Any]]:
    return valid(MessageType.Call, action)


def results(action: str) -> st.SearchStrategy[dict[str, Any]]:
    return valid(MessageType.CallResult, action)


# --- broken payloads ---------------------------------------------------------------------------

_HUGE = st.sampled_from(
    [10**20, -(10**20), 2**31, -(2**31) - 1, 2**63, Decimal("1e300"), Decimal("-1e30"), 1e20]
)
_ODD_STRINGS = st.one_of(
    st.sampled_from(
        [
            "",
            "x" * 10_000,
            "\x00\x1f\x7f",
            "\u202eRTL\u202c",
            "Ω≈ç√∫µ≤≥÷",
            "🔌⚡",
            "NaN",
            "-1",
            "null",
            "9999-12-31T23:59:59-01:00",
            "0001-01-01T00:00:00+01:00",
        ]
    ),
    st.text(min_size=1),
)
_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=5), st.sampled_from([1.5, 2.0])
)


def _junk(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"j": value}
    return value


_NESTED_JUNK = st.integers(2, 40).map(_junk)
# A value of another JSON type than the one there.
_ANY_VALUE = st.one_of(
    _LEAVES,
    st.lists(_LEAVES, max_size=2),
    st.dictionaries(st.text(max_size=3), _LEAVES, max_size=2),
)
MUTATIONS = (
    "wrong type",
    "extra property",
    "missing property",
    "huge number",
    "odd string",
    "nested junk",
)


def _places(value: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every value inside `value` (dict keys, list indices)."""
    found: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((value, key))
            found.extend(_places(item))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((value, index))
            found.extend(_places(item))
    return found


def _objects(value: Any) -> list[dict[str, Any]]:
    found = [value] if isinstance(value, dict) else []
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for item in children:
        found.extend(_objects(item))
    return found


@st.composite
def mutated(draw: st.DrawFn, payloads: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A payload of `payloads` with one thing broken (whether that still makes it schema-valid
    is for the caller to ask `wire.validate`)."""
    payload = copy.deepcopy(draw(payloads))
    kind = draw(st.sampled_from(MUTATIONS))
    places = _places(payload)
    if kind == "extra property" or not places:
        target = draw(st.sampled_from(_objects(payload)))
        target[draw(st.text(min_size=1, max_size=10))] = draw(_ANY_VALUE)
        return payload
    container, key = draw(st.sampled_from(places))
    if kind == "missing property" and isinstance(container, dict):
        del container[key]
    elif kind == "huge number":
        container[key] = draw(_HUGE)
    elif kind == "odd string":
        container[key] = draw(_ODD_STRINGS)
    elif kind == "nested junk":
        container[key] = draw(_NESTED_JUNK)
    else:
        container[key] = draw(_ANY_VALUE.filter(lambda v: type(v) is not type(container[key])))
    return payload


# --- frames that are no OCPP-J frame --------------------------------------------------------


def junk_frames() -> st.SearchStrategy[str]:
    """WebSocket text messages a broken or hostile peer sends: not JSON, not an OCPP-J frame,
    too deep, too large, answers to CALLs nobody made."""
    deep = st.integers(2, 3000).map(lambda n: "[" * n + "]" * n)
    head = st.sampled_from(['[2,"j1","Heartbeat",', '[3,"j2",', '[4,"j3","GenericError","",'])
    return st.one_of(
        st.text(max_size=200),
        deep,
        st.tuples(head, deep).map("".join),
        st.sampled_from(
            [
                "",
                "null",
                "[]",
                "[2]",
                '[2,"j4"]',
                '[2,"j5","Heartbeat",[]]',
                '[5,"j6",{}]',
                '[3,"nobody-asked",{}]',
                '[4,"nobody-asked","GenericError","",{}]',
                '[2,"j7","Heartbeat",{"x":NaN}]',
                '[2,"\\ud800","Heartbeat",{}]',
                '[2,"' + "x" * 37 + '","Heartbeat",{}]',
                '[2,"j8","Heartbeat",{"x":"' + "y" * (wire.MAX_FRAME_BYTES + 1) + '"}]',
            ]
        ),
    )
