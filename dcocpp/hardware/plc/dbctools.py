"""A companion DBC for cantools' own command-line tools, generated from the shipped DBC.

The shipped `dcocpp_plc.dbc` defines each message once, at its plcId-0 base id, as an extended
frame. cantools 45.1's tools cannot use it for our traffic:

- Every frame id on our bus is `base | plcId` and the DBC knows the base ids only. A
  `--frame-id-mask 0x1FFFFFF0` would cover the plcId nibble, but
- `cantools decode` and `cantools plot` look a frame up with
  `Database.get_message_by_frame_id(frame_id)`, which sets the extended flag only for ids above
  0x7FF, and they never pass the extended flag the candump line carries. All our ids are below
  0x800, so an extended DBC message never matches there, whatever the mask or the candump format.
- `cantools monitor` (reads a python-can bus) passes the frame's extended flag and decodes with
  the shipped DBC and `--frame-id-mask 0x1FFFFFF0`, but shows one row per message name, so the
  PLCs overwrite each other's rows.

`build_tools_database` therefore lists every message once per plcId 0..15, at its bus id
`base | plcId`, named `<Message>_<plcId>` (`RelayStatus_3`), with identical signals, choices and
comments. With `extended_ids=False` the messages are declared as *standard* frames: that is what
`cantools decode` and `cantools plot` match on (see above), so use that file to decode candump
output, never to transmit. With `extended_ids=True` they stay extended frames, for
`cantools monitor`. Neither file checks the CRC8 (byte 7 is shown as the signal `CRC8`); the
codec does.
"""

from __future__ import annotations

import copy
from pathlib import Path

from cantools.database.can import Bus, Database

from dcocpp.hardware.plc.codec import DBC_FILENAME, MAX_PLC_ID, load_database

__all__ = [
    "build_tools_database",
    "tools_dbc_text",
    "tools_message_name",
    "write_tools_dbc",
]


def tools_message_name(message_name: str, plc_id: int) -> str:
    """The name of `message_name` for the PLC `plc_id` in the companion DBC: `RelayStatus_3`."""
    return f"{message_name}_{plc_id}"


def build_tools_database(*, extended_ids: bool = False) -> Database:
    """The shipped DBC with every message repeated for plcId 0..15 (see the module doc).

    `extended_ids=False` (for `cantools decode` / `plot` on candump text) declares standard
    frames; `extended_ids=True` (for `cantools monitor` on a live bus) keeps them extended.
    """
    shipped = load_database()  # cached and shared with the codec: copy, never modify
    messages = []
    for plc_id in range(MAX_PLC_ID + 1):
        for base in shipped.messages:
            message = copy.deepcopy(base)
            message.frame_id = base.frame_id | plc_id
            message.is_extended_frame = extended_ids
            message.name = tools_message_name(base.name, plc_id)
            messages.append(message)
    if extended_ids:
        frames = "extended (for cantools monitor)"
    else:
        frames = "declared standard (cantools decode/plot ignore the extended flag below 0x800)"
    comment = (
        f"Generated from {DBC_FILENAME} by dcocpp.hardware.plc.dbctools for cantools' tools; "
        f"do not edit. Every message once per plcId 0..15 at id base|plcId, named "
        f"<Message>_<plcId>; frames {frames}. For decoding only: the bus carries 29-bit "
        f"extended ids, byte 7 is CRC8 (not checked here). The contract is {DBC_FILENAME}."
    )
    buses = [Bus(bus.name, comment, bus.baudrate, bus.fd_baudrate) for bus in shipped.buses]
    return Database(
        messages=messages,
        nodes=copy.deepcopy(shipped.nodes),
        buses=buses or [Bus("", comment)],
        version=shipped.version,
        dbc_specifics=copy.deepcopy(shipped.dbc),
        strict=True,
    )


def tools_dbc_text(*, extended_ids: bool = False) -> str:
    """`build_tools_database(...)` as DBC text."""
    return build_tools_database(extended_ids=extended_ids).as_dbc_string()


def write_tools_dbc(path: str | Path, *, extended_ids: bool = False) -> None:
    """Write the companion DBC to `path` (overwritten). See the module doc for the variants."""
    Path(path).write_text(tools_dbc_text(extended_ids=extended_ids), encoding="utf-8")
