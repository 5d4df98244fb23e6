"""The relay/meter PLC on CAN: the DBC contract (`dcocpp_plc.dbc`, see README.md) and its codec."""

from dcocpp.hardware.plc.codec import (
    CrcError,
    Decoded,
    PlcCodecError,
    crc8,
    decode,
    encode,
    frame_id,
    load_database,
    message_of,
    plc_id_of,
)

__all__ = [
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
