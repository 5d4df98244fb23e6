"""ConfigCmd / ConfigAck, the PLC parameters (see README.md, "ConfigCmd parameters"), both ends.
Pure: no trio, no bus.

The host's side, `ConfigExchange`: one request per PLC is in flight; ConfigAck has no sequence
number, so the one that answers it is the first from that PLC with the same `CFG_PARAM_ID` (the
operation and `PLC_ID` are not compared), except that for a SET an OK ack must echo the value
set (the PLC reports the value after the operation): an OK ack with another value answers an
earlier SET that timed out.

The PLC's side, `answer_config`: what a ConfigCmd gets from the firmware's `Parameter`s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import attrs

from dcocpp.hardware.plc import codec

__all__ = [
    "ACK_OK",
    "ACK_OUT_OF_RANGE",
    "ACK_READ_ONLY",
    "ACK_STATUS",
    "ACK_UNKNOWN_PARAM",
    "CFG_GET",
    "CFG_SET",
    "PARAM_CURRENT_LIMIT",
    "PARAM_METER_PERIOD",
    "PARAM_POWER_LIMIT",
    "PARAM_RELAY_TIMEOUT",
    "PARAM_VOLTAGE_LIMIT",
    "ConfigExchange",
    "Parameter",
    "answer_config",
]

log = logging.getLogger(__name__)

# CFG_PARAM_ID
PARAM_CURRENT_LIMIT = 1  # CURRENT_LIMIT_0p1A
PARAM_POWER_LIMIT = 2  # POWER_LIMIT_W
PARAM_RELAY_TIMEOUT = 3  # RELAY_TIMEOUT_MS
PARAM_METER_PERIOD = 4  # METER_PERIOD_MS
PARAM_VOLTAGE_LIMIT = 5  # VOLTAGE_LIMIT_0p1V
# CFG_OP
CFG_GET = 0
CFG_SET = 1
# ACK_STATUS
ACK_OK = 0
ACK_UNKNOWN_PARAM = 1
ACK_OUT_OF_RANGE = 2
ACK_READ_ONLY = 3
ACK_STATUS = {
    ACK_UNKNOWN_PARAM: "unknown param",
    ACK_OUT_OF_RANGE: "out of range",
    ACK_READ_ONLY: "read-only",
}


class ConfigExchange:
    """One PLC's ConfigCmd in flight (`request` ... `end`) and its answer (`answer`)."""

    def __init__(self, plc_id: int):
        self._plc_id = plc_id
        self._request: tuple[int, int, int] | None = None  # param, op, value
        self._answer: tuple[int, int] | None = None

    def request(self, param: int, op: int, value: int) -> tuple[int, bytes]:
        """The ConfigCmd frame (id, bytes) of a request (raw values), which is from now on
        the one a ConfigAck can answer, until `end`."""
        self._request, self._answer = (param, op, value), None
        signals = {"CFG_PARAM_ID": param, "CFG_OP": op, "CFG_VALUE": value}
        return codec.encode("ConfigCmd", self._plc_id, signals, scaling=False)

    @property
    def pending(self) -> bool:
        """A request is in flight."""
        return self._request is not None

    @property
    def answer(self) -> tuple[int, int] | None:
        """(ACK_STATUS, CFG_VALUE) of the ConfigAck that answered the request; None yet."""
        return self._answer

    def end(self) -> None:
        """No request in flight: a ConfigAck now answers nothing."""
        self._request = None

    def on_ack(self, s: Mapping[str, float | int]) -> None:
        """A ConfigAck from this PLC (raw signals)."""
        param, status, value = int(s["CFG_PARAM_ID"]), int(s["ACK_STATUS"]), int(s["CFG_VALUE"])
        log.debug(  # every ack, solicited or not: routine, and a bus may repeat it
            "PLC %d: ConfigAck param %d status %d value %d", self._plc_id, param, status, value
        )
        request = self._request
        if request is None or request[0] != param or self._answer is not None:
            return
        if request[1] == CFG_SET and status == ACK_OK and value != request[2]:
            # A SET that took effect echoes its value: this one answers an earlier request
            # (one that timed out), not the one waiting.
            log.debug(
                "PLC %d: ConfigAck of an earlier set of param %d ignored", self._plc_id, param
            )
            return
        self._answer = (status, value)


@attrs.frozen
class Parameter:
    """One parameter of a PLC's firmware: its value as `get` reads it (raw units), and `set`
    for a value in `low`..`high` (None: read only)."""

    get: Callable[[], int]
    set: Callable[[int], None] | None = None
    low: int = 0
    high: int = 0


def answer_config(
    parameters: Mapping[int, Parameter], param: int, op: int, value: int
) -> tuple[int, int]:
    """The PLC's answer to one ConfigCmd: (ACK_STATUS, CFG_VALUE after the operation; for an
    unknown parameter the value sent)."""
    if param not in parameters:
        return ACK_UNKNOWN_PARAM, value
    parameter = parameters[param]
    if op == CFG_GET:
        return ACK_OK, parameter.get()
    if op != CFG_SET:
        return ACK_OUT_OF_RANGE, parameter.get()
    if parameter.set is None:
        return ACK_READ_ONLY, parameter.get()
    if not parameter.low <= value <= parameter.high:
        return ACK_OUT_OF_RANGE, parameter.get()
    parameter.set(value)
    return ACK_OK, parameter.get()
