"""OCPP-J wire format: frames, camelCase payloads and schema validation.

This is the only module that knows JSON and camelCase. Everything above it speaks the `ocpp`
package's v16 dataclasses and snake_case keyword arguments, like the package's own ChargePoint.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import json
from collections.abc import Callable
from typing import Any

import fastjsonschema
from jsonschema.exceptions import best_match
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.messages import Call, CallError, CallResult, MessageType, get_validator

from dcocpp.ocpp.errors import CallError as CallErrorException

OCPP_VERSION = "1.6"
SUBPROTOCOL = "ocpp1.6"
# OCPP-J 1.6 section 4.1.4: unique ids are at most 36 characters.
MAX_UNIQUE_ID_LENGTH = 36

# The three OCPP 1.6 messages whose schemas use `multipleOf: 0.1`: the package validates them
# with Decimal so that 21.4 is not rejected as 21.399999999999995.
_DECIMAL_ACTIONS = {
    (MessageType.Call, "SetChargingProfile"),
    (MessageType.Call, "RemoteStartTransaction"),
    (MessageType.CallResult, "GetCompositeSchedule"),
}


class FrameError(CallErrorException):
    """A frame that is not a valid OCPP-J message. `unique_id` is set when the frame carried
    one, so that the peer can be answered with a CALLERROR."""

    def __init__(self, description: str, unique_id: str | None = None, *, reply: bool = False):
        super().__init__("FormationViolation", description)
        self.unique_id = unique_id
        # Only a CALL may be answered; answering a broken CALLRESULT could ping-pong forever.
        self.reply = reply and unique_id is not None


# --- frames ----------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    # The package's encoder rounds Decimal to one decimal place (16.25 A would become 16.2 A);
    # we write the number as it is.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(frame: list[Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def encode_call(unique_id: str, action: str, payload: dict[str, Any]) -> str:
    return _dumps([MessageType.Call, unique_id, action, payload])


def encode_result(unique_id: str, payload: dict[str, Any]) -> str:
    return _dumps([MessageType.CallResult, unique_id, payload])


def encode_error(unique_id: str, code: str, description: str, details: dict[str, Any]) -> str:
    return _dumps([MessageType.CallError, unique_id, code, description, details])


def decode_frame(text: str | bytes) -> Call | CallResult | CallError:
    """Parse one WebSocket text message into the `ocpp.messages` frame types.

    Raises `FrameError` for anything that is not a well-formed OCPP-J frame."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise FrameError("message is not valid JSON") from None
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
            raise FrameError("CALLRESULT must be [3, uniqueId, {payload}]", unique_id)
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
            )
        return CallError(unique_id, msg[2], msg[3], msg[4])
    raise FrameError(f"unknown MessageTypeId {type_id!r}", unique_id, reply=True)


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


def _error_code(keyword: str, at_root: bool) -> str:
    if keyword == "type" and at_root:
        return "FormationViolation"  # the payload itself is not an object
    return _ERROR_CODES.get(keyword, "PropertyConstraintViolation")


@functools.lru_cache(maxsize=256)
def _compiled(message_type_id: int, action: str) -> Callable[[Any], Any]:
    """The package's OCPP 1.6 schema for `action`, compiled to Python by fastjsonschema: about
    twenty times faster than interpreting it, which matters on every frame. Formats are not
    checked, as with the package's own validators, so both accept the same payloads."""
    schema = get_validator(message_type_id, action, OCPP_VERSION).schema
    return fastjsonschema.compile(schema, use_formats=False)


def validate(message_type_id: int, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Check `payload` against the package's OCPP 1.6 schema for `action`.

    Returns the payload to use (numbers become Decimal for the three schemas with
    `multipleOf`); raises `CallError` with the OCPP 1.6 error code of the first problem."""
    if (message_type_id, action) in _DECIMAL_ACTIONS:
        # multipleOf 0.1 needs exact decimals: the package's Decimal-parsing validator.
        validator = get_validator(
            message_type_id, action, OCPP_VERSION, parse_float=decimal.Decimal
        )
        payload = json.loads(_dumps(payload), parse_float=decimal.Decimal)  # type: ignore[arg-type]
        error = best_match(validator.iter_errors(payload))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "payload"
            code = _error_code(str(error.validator), not error.absolute_path)
            raise CallErrorException(code, f"{where}: {error.message}")
        return payload
    try:
        _compiled(message_type_id, action)(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = [str(p) for p in (exc.path or [])[1:]]  # drop the leading "data"
        where = "/".join(path) or "payload"
        message = exc.message.removeprefix("data.").removeprefix("data ")
        raise CallErrorException(
            _error_code(str(exc.rule), not path), f"{where}: {message}"
        ) from None
    return payload
