"""OCPP-J wire format: frames, camelCase payloads and schema validation.

This is the only module that knows JSON and camelCase. Everything above it speaks the `ocpp`
package's v16 dataclasses and snake_case keyword arguments, like the package's own ChargePoint.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import json
import re
from collections.abc import Callable
from typing import Any

import fastjsonschema
from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.messages import Call, CallError, CallResult, MessageType, get_validator

from dcocpp.jsontypes import valid_text
from dcocpp.ocpp.errors import CallError as CallErrorException

OCPP_VERSION = "1.6"
SUBPROTOCOL = "ocpp1.6"
# OCPP-J 1.6 section 4.1.4: unique ids are at most 36 characters.
MAX_UNIQUE_ID_LENGTH = 36
# What the charger reads of a frame. OCPP 1.6 sets no size; the largest frame a central system
# needs is a full SendLocalList (SendLocalListMaxLength 250 entries: about 40 KB, pretty-printed
# about 60 KB). A larger frame is answered FormationViolation without being parsed.
MAX_FRAME_BYTES = 128 * 1024
# trio-websocket buffers a message up to this size before `decode_frame` sees it; a larger one
# closes the connection (1009, message too big). Above MAX_FRAME_BYTES so that a frame between
# the two is still answered.
MAX_WEBSOCKET_MESSAGE_BYTES = 1024 * 1024
# Arrays and objects inside one another: OCPP 1.6's deepest frame (a schedule period inside
# SetChargingProfile) is 6. Checked before json.loads, which recurses once per level.
MAX_NESTING = 16
# OCPP-J 1.6 (section 4.1.2): an integer is 32-bit signed. The package's schemas say only
# "integer"; `_bounded` adds the range, both for what the peer sends and for what we send.
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

# The three OCPP 1.6 messages whose schemas use `multipleOf: 0.1`: the package validates them
# with Decimal so that 21.4 is not rejected as 21.399999999999995.
_DECIMAL_ACTIONS = {
    (MessageType.Call, "SetChargingProfile"),
    (MessageType.Call, "RemoteStartTransaction"),
    (MessageType.CallResult, "GetCompositeSchedule"),
}


class FrameError(CallErrorException):
    """A frame that is not a valid OCPP-J message. `unique_id` is set when the frame carried
    one, so that the peer can be answered with a CALLERROR; `answer` when it is a broken
    CALLRESULT or CALLERROR, so that the CALL it answers fails at once."""

    def __init__(
        self,
        description: str,
        unique_id: str | None = None,
        *,
        reply: bool = False,
        answer: bool = False,
    ):
        super().__init__("FormationViolation", description)
        self.unique_id = unique_id
        # Only a CALL may be answered; answering a broken CALLRESULT could ping-pong forever.
        self.reply = reply and unique_id is not None
        self.answer = answer and unique_id is not None


# --- frames ----------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    # The package's encoder rounds Decimal to one decimal place (16.25 A would become 16.2 A);
    # we write the number as it is.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(frame: Any) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def encode_call(unique_id: str, action: str, payload: dict[str, Any]) -> str:
    return _dumps([MessageType.Call, unique_id, action, payload])


def encode_result(unique_id: str, payload: dict[str, Any]) -> str:
    return _dumps([MessageType.CallResult, unique_id, payload])


def encode_error(unique_id: str, code: str, description: str, details: dict[str, Any]) -> str:
    return _dumps([MessageType.CallError, unique_id, code, description, details])


def decode_frame(text: str | bytes) -> Call | CallResult | CallError:
    """Parse one WebSocket text message into the `ocpp.messages` frame types.

    Raises `FrameError` for anything that is not a well-formed OCPP-J frame. A frame above
    MAX_FRAME_BYTES or nested deeper than MAX_NESTING is refused before it is parsed; a CALL
    refused that way is still answered when its unique id can be read from its head."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("message is not UTF-8 text") from None
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise _unparsed(text, f"message of {size} bytes exceeds the maximum of {MAX_FRAME_BYTES}")
    if _too_deep(text):
        raise _unparsed(text, f"message is nested deeper than {MAX_NESTING} levels")
    try:
        msg = json.loads(text, parse_constant=_not_json)
    except ValueError:  # JSONDecodeError, and an integer of more than 4300 digits
        raise _unparsed(text, "message is not valid JSON") from None
    if "\\u" in text and not valid_text(msg):
        # A lone surrogate (\ud800) is valid JSON but no Unicode: it could be neither stored
        # nor sent back (UTF-8 cannot encode it).
        raise _unparsed(text, "message has a string that is not valid Unicode")
    if not isinstance(msg, list) or len(msg) < 2:
        raise FrameError("message is not a JSON array of at least two elements")
    type_id, unique_id = msg[0], msg[1]
    if not isinstance(unique_id, str) or not unique_id or len(unique_id) > MAX_UNIQUE_ID_LENGTH:
        raise FrameError("message has no valid unique id (a string of 1..36 characters)")
    if type_id == MessageType.Call:
        if len(msg) != 4 or not isinstance(msg[2], str) or not isinstance(msg[3], dict):
            raise FrameError("CALL must be [2, uniqueId, action, {payload}]", unique_id, reply=True)
        return Call(unique_id, msg[2], msg[3])
    if type_id == MessageType.CallResult:
        if len(msg) != 3 or not isinstance(msg[2], dict):
            raise FrameError("CALLRESULT must be [3, uniqueId, {payload}]", unique_id, answer=True)
        return CallResult(unique_id, msg[2])
    if type_id == MessageType.CallError:
        if (
            len(msg) != 5
            or not isinstance(msg[2], str)
            or not isinstance(msg[3], str)
            or not isinstance(msg[4], dict)
        ):
            raise FrameError(
                "CALLERROR must be [4, uniqueId, errorCode, errorDescription, {details}]",
                unique_id,
                answer=True,
            )
        return CallError(unique_id, msg[2], msg[3], msg[4])
    raise FrameError(f"unknown MessageTypeId {type_id!r}", unique_id, reply=True)


# The head of a frame, read without parsing it: [MessageTypeId, "uniqueId" (a plain string:
# no escapes, no control characters), ...
_HEAD = re.compile(r'\s*\[\s*([0-9]+)\s*,\s*"([^"\\\x00-\x1f\ud800-\udfff]{1,36})"')
# What changes the nesting depth, and the string delimiters and escapes that hide brackets.
_STRUCTURE = re.compile(r'[][{}"\\]')


def _not_json(constant: str) -> Any:
    """json.loads takes NaN and Infinity, which JSON (and so OCPP-J) does not have."""
    raise ValueError(f"{constant} is not JSON")


def _unparsed(text: str, description: str) -> FrameError:
    """The FrameError for a frame that was not parsed: answerable if its head shows a CALL."""
    head = _HEAD.match(text)
    if head is None:
        return FrameError(description)
    type_id = int(head[1])
    return FrameError(
        description,
        head[2],
        reply=type_id == MessageType.Call,
        answer=type_id in (MessageType.CallResult, MessageType.CallError),
    )


def _too_deep(text: str) -> bool:
    """Whether arrays and objects nest deeper than MAX_NESTING in `text` (JSON or not): a scan
    of the brackets outside strings, without recursion, that stops at the first level too
    deep."""
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return False  # cannot be deeper: the common case costs two counts
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _STRUCTURE.finditer(text):
        char, at = match[0], match.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif char in "]}":
            depth -= 1
    return False


# --- payloads --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _snake_key(key: str) -> str:
    return next(iter(camel_to_snake_case({key: None})))


@functools.lru_cache(maxsize=4096)
def _camel_key(key: str) -> str:
    return next(iter(snake_to_camel_case({key: None})))


def to_snake(data: Any) -> Any:
    """camelCase payload -> snake_case keyword arguments (the package's naming, cached)."""
    if isinstance(data, dict):
        return {_snake_key(k): to_snake(v) for k, v in data.items()}
    if isinstance(data, list):
        return [to_snake(v) for v in data]
    return data


@functools.lru_cache(maxsize=512)
def _field_names(cls: type) -> tuple[tuple[str, str], ...]:
    return tuple((f.name, _camel_key(f.name)) for f in dataclasses.fields(cls))


def to_camel(data: Any) -> Any:
    """A v16 dataclass (or dict/list of them) -> camelCase JSON payload, without None fields.

    Faster than the package's serialize_as_dict + remove_nones + snake_to_camel_case, which
    deep-copies every dataclass twice."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        out = {}
        for name, camel in _field_names(type(data)):
            value = getattr(data, name)
            if value is not None:
                out[camel] = to_camel(value)
        return out
    if isinstance(data, dict):
        return {_camel_key(k): to_camel(v) for k, v in data.items() if v is not None}
    if isinstance(data, list | tuple):
        return [to_camel(v) for v in data if v is not None]
    return data


def action_of(payload: Any) -> str:
    """The OCPP action of a v16 call/call_result dataclass is its class name."""
    return type(payload).__name__


# --- validation ------------------------------------------------------------------------------

# jsonschema keyword -> OCPP-J 1.6 RPC framework error code (section 4.2.3). The package maps to
# the 2.0.1 names (FormatViolation, ProtocolError), which an OCPP 1.6 central system rejects.
_ERROR_CODES = {
    "additionalProperties": "FormationViolation",
    "required": "OccurenceConstraintViolation",
    "minItems": "OccurenceConstraintViolation",
    "maxItems": "OccurenceConstraintViolation",
    "type": "TypeConstraintViolation",
    "maxLength": "TypeConstraintViolation",
}


def _error_code(keyword: str, at_root: bool, value: Any = None) -> str:
    if keyword == "type" and at_root:
        return "FormationViolation"  # the payload itself is not an object
    if keyword in ("minimum", "maximum") and _outside_int32(value):
        return "TypeConstraintViolation"  # not an OCPP integer at all: the data type's range
    return _ERROR_CODES.get(keyword, "PropertyConstraintViolation")


def _outside_int32(value: Any) -> bool:
    return isinstance(value, int | float | decimal.Decimal) and not (
        INT32_MIN <= value <= INT32_MAX
    )


def _bounded(node: Any) -> Any:
    """A copy of a JSON schema in which every integer, and every number, lies in the int32
    range (an OCPP 1.6 decimal has no range of its own; this one keeps limits and their
    conversions in exact Decimal arithmetic)."""
    if isinstance(node, list):
        return [_bounded(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _bounded(value) for key, value in node.items()}
    if node.get("type") in ("integer", "number"):
        out["minimum"] = max(node.get("minimum", INT32_MIN), INT32_MIN)
        out["maximum"] = min(node.get("maximum", INT32_MAX), INT32_MAX)
    return out


def schema(message_type_id: int, action: str) -> dict[str, Any]:
    """The OCPP 1.6 JSON schema the charger holds `action` to: the `ocpp` package's, with the
    int32 range on its numbers (`_bounded`). Numbers in the three `multipleOf` schemas are
    Decimal."""
    parse_float = decimal.Decimal if (message_type_id, action) in _DECIMAL_ACTIONS else float
    package = get_validator(message_type_id, action, OCPP_VERSION, parse_float=parse_float)
    bounded: dict[str, Any] = _bounded(package.schema)
    return bounded


@functools.lru_cache(maxsize=256)
def _compiled(message_type_id: int, action: str) -> Callable[[Any], Any]:
    """`schema(action)` compiled to Python by fastjsonschema: about twenty times faster than
    interpreting it, which matters on every frame. Formats are not checked, as with the
    package's own validators, so both accept the same payloads."""
    return fastjsonschema.compile(schema(message_type_id, action), use_formats=False)


@functools.lru_cache(maxsize=64)
def _interpreted(message_type_id: int, action: str) -> Draft4Validator:
    """`schema(action)` for jsonschema, which reports every problem with where it lies (and
    validates Decimal numbers exactly)."""
    return Draft4Validator(schema(message_type_id, action))


def _parsed_copy(message_type_id: int, action: str, payload: dict[str, Any]) -> Any:
    """A deep copy of `payload`, its numbers Decimal for the three `multipleOf` schemas."""
    number: Callable[[str], Any] = float
    if (message_type_id, action) in _DECIMAL_ACTIONS:
        number = decimal.Decimal
    return json.loads(_dumps(payload), parse_float=number)


def validate(message_type_id: int, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Check `payload` against the OCPP 1.6 schema for `action` (`schema`).

    Returns the payload to use (numbers become Decimal for the three schemas with
    `multipleOf`); raises `CallError` with the OCPP 1.6 error code of the first problem."""
    if (message_type_id, action) in _DECIMAL_ACTIONS:
        # multipleOf 0.1 needs exact decimals: validate Decimal numbers against a schema that
        # was read with Decimal, as the package does.
        validator = _interpreted(message_type_id, action)
        payload = _parsed_copy(message_type_id, action, payload)
        try:
            error = best_match(validator.iter_errors(payload))
        except decimal.DecimalException:
            # multipleOf of a number too large for Decimal's precision (1e30 % 0.1)
            raise CallErrorException(
                "TypeConstraintViolation",
                f"payload: a number is outside {INT32_MIN}..{INT32_MAX}",
            ) from None
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "payload"
            code = _error_code(str(error.validator), not error.absolute_path, error.instance)
            raise CallErrorException(code, f"{where}: {error.message}")
        return payload
    try:
        _compiled(message_type_id, action)(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = [str(p) for p in (exc.path or [])[1:]]  # drop the leading "data"
        where = "/".join(path) or "payload"
        message = exc.message.removeprefix("data.").removeprefix("data ")
        raise CallErrorException(
            _error_code(str(exc.rule), not path, exc.value), f"{where}: {message}"
        ) from None
    return payload


def without_unknown_properties(
    message_type_id: int, action: str, payload: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """A copy of `payload` without the properties `schema(action)` does not know, at any
    depth, and where they were ("foo", "idTagInfo/bar"), in the order jsonschema finds them.
    OCPP 1.6's schemas forbid them (additionalProperties: false); a lenient reader uses an
    answer without them when what it knows is valid (`validate` the copy)."""
    copy = _parsed_copy(message_type_id, action, payload)
    try:
        # Listed before anything is taken away: jsonschema walks the objects lazily.
        extra = [
            error
            for error in _interpreted(message_type_id, action).iter_errors(copy)
            if error.validator == "additionalProperties" and isinstance(error.instance, dict)
        ]
    except decimal.DecimalException:  # multipleOf of a number beyond Decimal's precision
        return copy, []
    unknown = []
    for error in extra:
        known = error.schema.get("properties", {})
        for key in [key for key in error.instance if key not in known]:
            del error.instance[key]
            unknown.append("/".join([*map(str, error.absolute_path), key]))
    return copy, unknown
