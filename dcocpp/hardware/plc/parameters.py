"""ConfigCmd / ConfigAck, the host's side: the PLC parameters the driver sets and reads (see
README.md, "ConfigCmd parameters"). Pure: no trio, no bus.

One request per PLC is in flight; ConfigAck has no sequence number, so the one that answers it
is the first from that PLC with the same `CFG_PARAM_ID` (the operation and `PLC_ID` are not
compared), except that for a SET an OK ack must echo the value set (the PLC reports the value
after the operation): an OK ack with another value answers an earlier SET that timed out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dcocpp.hardware.plc import codec

__all__ = ["ACK_OK", "ACK_STATUS", "CFG_GET", "CFG_SET", "PARAM_CURRENT_LIMIT", "ConfigExchange"]

log = logging.getLogger(__name__)

PARAM_CURRENT_LIMIT = 1  # CURRENT_LIMIT_0p1A
CFG_GET = 0
CFG_SET = 1
ACK_OK = 0
ACK_STATUS = {1: "unknown param", 2: "out of range", 3: "read-only"}


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
