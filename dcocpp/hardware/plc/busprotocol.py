"""Which frames read off the PLC bus are whose, and what the host counts about them. Pure: no
trio, no bus (frames and the time are arguments).

`BusProtocol` holds the `PlcProtocol` of every configured plcId and sorts each received frame to
its PLC: error, remote and standard-id frames, frames from another plcId and host -> PLC frames
are ignored; a frame that repeats the last one of its id from a healthy gun is not decoded
(`PlcProtocol.repeat`); the rest is decoded (codec + CRC8) and dropped when the codec refuses it
or its PLC refuses a frame without CRC (`PlcProtocol.accept_crc`). `acceptance_filters` lets a
CAN controller drop the frames that are not ours before they cost anything.
"""

from __future__ import annotations

from collections.abc import Iterable

import can
from can.typechecking import CanFilter

from dcocpp.config import ConnectorConfig
from dcocpp.hardware.interface import HardwareEvent
from dcocpp.hardware.plc import codec
from dcocpp.hardware.plc.protocol import PlcProtocol, ProtocolOptions

__all__ = ["BusProtocol", "acceptance_filters", "plc_id_blocks"]

_PLC_TO_HOST = (
    "RelayStatus",
    "SafetySwitchStatus",
    "EnergyMeterData",
    "ConfigAck",
    "CpStatus",
    "ChargingSession",
)
_CRC_BYTE = codec.FRAME_LENGTH - 1


def plc_id_blocks(plc_ids: Iterable[int]) -> list[tuple[int, int]]:
    """The configured plcIds as few aligned blocks `(value, nibble mask)`, exactly: an id
    matches a block when `id & mask == value`. Acceptance filters per configured plcId, but
    16 PLCs need one filter per message instead of 16 (each filter costs on every frame)."""
    remaining = set(plc_ids)
    blocks = []
    for size in (16, 8, 4, 2, 1):
        for start in range(0, 16, size):
            block = set(range(start, start + size))
            if block <= remaining:
                blocks.append((start, 0xF & ~(size - 1)))
                remaining -= block
    return blocks


def acceptance_filters(plc_ids: Iterable[int]) -> list[CanFilter]:
    """The bus filters for the PLC -> host messages of exactly `plc_ids` (see
    `plc_id_blocks`)."""
    return [
        {
            "can_id": codec.frame_id(name, 0) | value,
            "can_mask": 0x1FFF_FFF0 | nibble_mask,
            "extended": True,
        }
        for value, nibble_mask in plc_id_blocks(plc_ids)
        for name in _PLC_TO_HOST
    ]


class BusProtocol:
    """Every PLC of one bus by plcId (`plcs`, see `add`): `receive` sorts a frame read off the
    bus to its PLC, and counts what it did with it (`rx_frames`, `repeats`, `ignored`,
    `crc_errors`, `decode_errors`: see `driver.PlcDriverStats`)."""

    def __init__(self, options: ProtocolOptions | None = None, *, decode_repeats: bool = False):
        self._options = options
        self._decode_repeats = decode_repeats
        self.plcs: dict[int, PlcProtocol] = {}
        self.rx_frames = 0
        self.repeats = 0
        self.ignored = 0
        self.crc_errors = 0
        self.decode_errors = 0

    def add(self, config: ConnectorConfig) -> PlcProtocol:
        """The PLC of a connector; ValueError if its plcId is taken, PlcCodecError if it is
        outside 0..15."""
        if config.plc_id in self.plcs:
            raise ValueError(f"plcId {config.plc_id} used by two connectors")
        plc = PlcProtocol(config, self._options, decode_repeats=self._decode_repeats)
        self.plcs[config.plc_id] = plc
        return plc

    def receive(
        self, msg: can.Message, now: float
    ) -> tuple[PlcProtocol, list[HardwareEvent]] | None:
        """A frame read off the bus at `now`: the PLC it changed and its hardware events, or
        None when it changed nothing beyond the times a PLC was last heard (a repeat) or was
        dropped (counted)."""
        if msg.is_error_frame or msg.is_remote_frame or not msg.is_extended_id:
            self.ignored += 1
            return None
        can_id = msg.arbitration_id
        plc = self.plcs.get(can_id & codec.PLC_ID_MASK)
        data = bytes(msg.data)
        if plc is not None and plc.repeat(can_id, data, now):
            # Only accepted PLC -> host frames are remembered: no need to look at the id.
            self.rx_frames += 1
            self.repeats += 1
            return None
        try:
            name = codec.message_of(can_id).name
        except codec.PlcCodecError:
            name = None
        # Reached only where the bus cannot filter: another plcId, host -> PLC, or foreign.
        if plc is None or name not in _PLC_TO_HOST:
            self.ignored += 1
            return None
        self.rx_frames += 1
        try:
            decoded = codec.decode(can_id, data, scaling=False)
        except codec.CrcError:
            self.crc_errors += 1
            return None
        except codec.PlcCodecError:
            self.decode_errors += 1
            return None
        if not plc.accept_crc(decoded, data[_CRC_BYTE]):
            self.crc_errors += 1
            return None
        return plc, plc.receive(can_id, data, decoded, now)
