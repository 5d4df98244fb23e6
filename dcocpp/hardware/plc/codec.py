"""Encode and decode the PLC's CAN frames: the shipped DBC plus the application CRC8.

Pure and synchronous; the driver owns the bus. Every message is defined once in the DBC for
plcId 0 (its base id); on the bus the id's low nibble is the plcId, so this module maps
`base | plc_id` both ways. Byte 7 of every frame is a CRC8 over bytes 0..6 that the codec writes
on encode and checks on decode (a zero byte means "no CRC", sent by old firmware).
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Mapping
from decimal import Decimal

import attrs
import cantools
import cantools.database
from cantools.database.can import Database, Message

from dcocpp.hardware.interface import HardwareError

__all__ = [
    "CRC_SIGNAL",
    "DBC_FILENAME",
    "FRAME_LENGTH",
    "CrcError",
    "Decoded",
    "PlcCodecError",
    "crc8",
    "decode",
    "encode",
    "frame_id",
    "load_database",
    "message_of",
    "plc_id_of",
]

DBC_FILENAME = "dcocpp_plc.dbc"
CRC_SIGNAL = "CRC8"
FRAME_LENGTH = 8
PLC_ID_MASK = 0xF
MAX_PLC_ID = 15
# Largest 29-bit id; the DBC marks extended ids with bit 31, the bus does not.
_EXTENDED_ID_MAX = 0x1FFF_FFFF


class PlcCodecError(HardwareError):
    """A frame or a set of signal values that does not fit the PLC contract."""


class CrcError(PlcCodecError):
    """The frame carries a non-zero CRC byte that does not match its bytes 0..6."""


@attrs.frozen
class Decoded:
    message: str
    plc_id: int
    signals: Mapping[str, float | int]  # without CRC8, which is a wire detail
    crc_ok: bool  # False only for a frame without CRC (byte 7 zero, data CRC non-zero)


def _crc8_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8_TABLE = _crc8_table()


def crc8(data: bytes) -> int:
    """CRC-8, poly 0x07, init 0x00, no reflection, no final xor (check value 0xF4)."""
    crc = 0
    for byte in data:
        crc = _CRC8_TABLE[crc ^ byte]
    return crc


@functools.cache
def load_database() -> Database:
    """The shipped DBC, loaded once, strictly (overlapping signals are an error)."""
    text = importlib.resources.files(__package__).joinpath(DBC_FILENAME).read_text("utf-8")
    db = cantools.database.load_string(text, database_format="dbc", strict=True)
    assert isinstance(db, Database)
    return db


@functools.cache
def _by_base_id() -> dict[int, Message]:
    return {message.frame_id: message for message in load_database().messages}


def _check_plc_id(plc_id: int) -> None:
    if not isinstance(plc_id, int) or isinstance(plc_id, bool) or not 0 <= plc_id <= MAX_PLC_ID:
        raise PlcCodecError(f"plcId {plc_id!r} outside 0..{MAX_PLC_ID}")


def _message_by_name(message_name: str) -> Message:
    try:
        return load_database().get_message_by_name(message_name)
    except KeyError:
        raise PlcCodecError(f"unknown PLC message {message_name!r}") from None


def frame_id(message_name: str, plc_id: int) -> int:
    """The 29-bit bus id of `message_name` for the PLC `plc_id`."""
    _check_plc_id(plc_id)
    return _message_by_name(message_name).frame_id | plc_id


def plc_id_of(frame_id: int) -> int:
    """The plcId a bus id belongs to (its low nibble); the id must be one of the contract's."""
    message_of(frame_id)
    return frame_id & PLC_ID_MASK


def message_of(frame_id: int) -> Message:
    """The DBC message of a bus id, found by its base id (the id with the plcId nibble cleared)."""
    if not 0 <= frame_id <= _EXTENDED_ID_MAX:
        raise PlcCodecError(f"frame id {frame_id:#x} is not a 29-bit CAN id")
    try:
        return _by_base_id()[frame_id & ~PLC_ID_MASK]
    except KeyError:
        raise PlcCodecError(f"frame id {frame_id:#x} is not a PLC message") from None


def encode(
    message_name: str,
    plc_id: int,
    signals: Mapping[str, float | int],
    *,
    scaling: bool = True,
) -> tuple[int, bytes]:
    """`(frame id, 8 bytes)` for `signals`, with the CRC8 computed into byte 7.

    Strict: every signal of the message (of the selected MUX branch) must be given, no other,
    and each within its DBC range, else `PlcCodecError` names the signal; nothing half-valid
    reaches the bus. `CRC8` is never given by the caller. With `scaling=False` the values are
    raw integers as on the wire.
    """
    can_id = frame_id(message_name, plc_id)
    message = _message_by_name(message_name)
    if CRC_SIGNAL in signals:
        raise PlcCodecError(f"{message_name}: {CRC_SIGNAL} is computed by the codec")
    values: dict[str, float | int] = {**signals, CRC_SIGNAL: 0}
    try:
        payload = bytearray(message.encode(values, scaling=scaling, strict=True))
    except KeyError as exc:
        raise PlcCodecError(f"{message_name}: signal {exc.args[0]!r} is missing") from exc
    except (cantools.database.EncodeError, ValueError, TypeError) as exc:
        raise PlcCodecError(f"{message_name}: {exc}") from exc
    if len(payload) != FRAME_LENGTH:  # the DBC says 8 for all; guard against a future edit
        raise PlcCodecError(f"{message_name}: DBC length {len(payload)} != {FRAME_LENGTH}")
    payload[7] = crc8(bytes(payload[:7]))
    return can_id, bytes(payload)


@functools.cache
def _decimals(scale: float) -> int | None:
    """Decimal places of a fractional scale (0.1 -> 1, 0.01 -> 2); None for integer scales."""
    if float(scale).is_integer():
        return None
    exponent = Decimal(str(scale)).normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return -exponent


def decode(frame_id: int, data: bytes, *, scaling: bool = True) -> Decoded:
    """Decode one received frame.

    Raises `CrcError` for a non-zero CRC byte that does not match (the driver counts and drops
    the frame) and `PlcCodecError` for an unknown id, a DLC other than 8 or an unknown MUX.
    With `scaling=True` values are physical, rounded to the scale's decimals so that 812.3 is
    812.3 and not 812.3000000000001; with `scaling=False` they are the raw integers.
    Enumerations (FAULT_REASON, CP_STATE, ...) are always their integer values.
    """
    message = message_of(frame_id)
    data = bytes(data)
    if len(data) != FRAME_LENGTH:
        raise PlcCodecError(f"{message.name}: DLC {len(data)}, expected {FRAME_LENGTH}")
    expected = crc8(data[:7])
    if data[7] != 0 and data[7] != expected:
        raise CrcError(
            f"{message.name} id {frame_id:#x}: CRC8 {data[7]:#04x}, computed {expected:#04x}"
        )
    try:
        raw = message.decode(data, decode_choices=False, scaling=scaling)
    except (cantools.database.DecodeError, ValueError) as exc:
        raise PlcCodecError(f"{message.name}: {exc}") from exc
    assert isinstance(raw, Mapping)
    signals: dict[str, float | int] = {}
    for name, value in raw.items():
        if name == CRC_SIGNAL:
            continue
        assert isinstance(value, int | float)
        if scaling and isinstance(value, float):
            places = _decimals(message.get_signal_by_name(name).scale)
            if places is not None:
                value = round(value, places)
        signals[name] = value
    return Decoded(
        message=message.name,
        plc_id=frame_id & PLC_ID_MASK,
        signals=signals,
        crc_ok=data[7] == expected,
    )
