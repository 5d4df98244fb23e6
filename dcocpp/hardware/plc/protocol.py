"""The host's side of the PLC CAN contract without I/O: what the driver knows about each PLC and
what a frame means, as plain calls that take the time as an argument (no trio, no bus), as
wsproto sits under trio-websocket. `driver.py` is the trio shell around it: it reads and
writes the bus, keeps time, and waits for acknowledgements.

`PlcProtocol` is one PLC, one gun:

- frames in (`receive`, after `BusProtocol` has sorted and decoded them): the relay, the cable,
  the EV session, the meter, the safety inputs and the PLC's own faults, each turned into the
  hardware events of what changed. The safety inputs trip on one frame and are released after
  `debounce_frames` clear ones; the meter register is believed only as `RegisterGuard` allows;
  a frame without CRC is dropped once the PLC has sent CRCs (`accept_crc`); a frame that
  repeats the last one of its id from a healthy gun needs no decoding (`repeat`);
- the RelayControl it is due (`relay_control`): the command and its CMD_SEQ, FORCE_ALL_OFF
  while tripped or while the relay is reported against the command, CLEAR_FAULTS while the PLC
  latches a fault whose cause is gone. `control_due` says one must go out at once (a new
  command, a trip, FORCE_ALL_OFF changed);
- whether the newest command is acknowledged (`acknowledged`), and which ConfigAck answers
  the ConfigCmd in flight (`config_exchange`, see `parameters.py`);
- time (`supervise(now)`): a PLC not heard for `rx_timeout`, no fresh meter data for
  `meter_stale`, a relay reported against the command for `ack_timeout`.

`busprotocol.BusProtocol` sorts the frames read off the bus to the `PlcProtocol` of their plcId.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import attrs

from dcocpp.config import ConnectorConfig
from dcocpp.hardware.interface import (
    CablePlugged,
    CableUnplugged,
    EvDemand,
    FaultKind,
    GunStatus,
    HardwareEvent,
    MeterReading,
    RelayState,
)
from dcocpp.hardware.plc import codec
from dcocpp.hardware.plc.faults import FaultBook, SafetyInputs
from dcocpp.hardware.plc.meter import BelievedMeter
from dcocpp.hardware.plc.parameters import ConfigExchange

__all__ = ["ACK_TIMEOUT", "PlcProtocol", "ProtocolOptions"]

log = logging.getLogger(__name__)

ACK_TIMEOUT = 0.3  # a relay command's acknowledgement; also how long a contradiction may last
TRIP_LOG_WINDOW = 10.0  # a safety trip is a WARNING at most once per this (see _say_trip)
# What the driver waits for from each PLC before it reports started: the relay, the cable,
# and both meter branches (a transaction must not start on a meter register nobody has read).
_FIRST_FRAMES = {"RelayStatus", "CpStatus", "EnergyMeterData0", "EnergyMeterData1"}
# FAULT_REASON values that mean the link to the host failed, as the PLC sees it.
_COMM_REASONS = {1: "relay control timeout", 2: "bus off", 3: "CRC failure"}
_FAULT_RELAY_MISMATCH = 7
_REMOTE_FORCE_OFF = 6
_CRC_BYTE = codec.FRAME_LENGTH - 1


@attrs.frozen
class ProtocolOptions:
    """What the protocol judges by (`PlcBackend`'s arguments of the same names)."""

    ack_timeout: float = ACK_TIMEOUT
    rx_timeout: float = 1.0
    meter_stale: float = 2.0
    debounce_frames: int = 2


class PlcProtocol:
    """One PLC (and its gun) as the host knows it; see the module docstring. Every method
    returns at once; the ones that can change what the connector is told return its hardware
    events. `decode_repeats` turns the repeat path off: every frame is decoded (the reference
    tests/test_plc_repeats.py checks the path against)."""

    def __init__(
        self,
        config: ConnectorConfig,
        options: ProtocolOptions | None = None,
        *,
        decode_repeats: bool = False,
    ):
        options = options or ProtocolOptions()
        self.config = config
        self.plc_id = config.plc_id
        self._options = options
        self._decode_repeats = decode_repeats
        self._control_id = codec.frame_id("RelayControl", config.plc_id)  # validates the range

        # RelayControl. seq 0 is never used: a freshly started PLC reports
        # LAST_CMD_SEQ_APPLIED 0, which must not look like an acknowledgement.
        self._seq = 1
        self._relay_cmd = False
        self._force_off = False
        self.control_due = False  # a RelayControl must go out at once (see the docstring)
        # A safety trip not on the bus yet (its immediate send failed): FORCE_ALL_OFF stays in
        # the keep-alives until one carrying it went out, even if the input was released.
        self._trip_unsent = False
        # Logging of trips (see _say_trip): quiet until then, the trips not said yet.
        self._trip_quiet_until = -math.inf
        self._trips_unsaid = 0
        # The last RelayControl encoded: keep-alives repeat it without encoding again.
        self._encoded: tuple[tuple[int, ...], bytes] | None = None

        # What the PLC says: the relay's coil (RLY1_STATE) and auxiliary contact
        # (RLY1_FEEDBACK); it counts as closed when either says so (fail-safe).
        self._relay_state = False
        self._relay_feedback = False
        self._relay_closed = False
        # A relay reported otherwise than commanded: since when (None: it agrees, or a command
        # is being carried out, `_acking`), see `_judge_relay`.
        self._mismatch_since: float | None = None
        self._agreeing = 0  # RelayStatus frames in a row that agree, since a disagreement
        self._acking = 0  # acknowledgement waits in progress (`awaiting_ack`)
        self._plugged = False
        self._requesting = False
        self._last_applied: int | None = None
        self._plc_fault_reason = 0
        self._plc_comm_fault = False
        self._last_rx = -math.inf
        self._last_fresh_meter = -math.inf
        # Why the meter is not believed now is a METER cause.
        self._meter = BelievedMeter(config.max_power_w)
        # ChargingSession's word alone (each field here has one writer message, see
        # `repeat`): the PLC reports SESSION_ACTIVE=0 once the EV is gone.
        self._session_soc: float | None = None

        # ConfigCmd / ConfigAck: the request in flight and its answer.
        self.config_exchange = ConfigExchange(self.plc_id)

        # CRC: a zero CRC byte means "no CRC" (old firmware), but one frame in 256 really has
        # CRC 0. Once this PLC has sent a frame with a valid non-zero CRC byte it is known to
        # protect its frames, and a frame without CRC from it is dropped (see `accept_crc`).
        self._crc_protected = False
        self._crc_less_logged = False

        # Which frames have arrived at least once: until then the gun's state is unknown.
        self._seen: set[str] = set()
        self.known = False

        self._faults = FaultBook()
        self._active = self._faults.active  # the same dict, read on every frame (`_healthy`)
        # Fed by RelayStatus and SafetySwitchStatus alike (both carry the PLC's debounced
        # inputs).
        self._safety = SafetyInputs(self.plc_id, options.debounce_frames, self._faults)
        # Several causes feed one fault of a kind; it clears when none is left.
        self._comm_causes = self._faults.causes[FaultKind.COMMUNICATION]
        self._meter_causes = self._faults.causes[FaultKind.METER]  # stale, not believed
        self._switch_causes = self._faults.causes[FaultKind.POWER_SWITCH]  # FAULT_REASON 7, ours

        # The last accepted frame of each bus id (its bytes, whether it was fresh meter data,
        # and the register it reported), for the repeat fast path: see `repeat`.
        self._last_frame: dict[int, tuple[bytes, bool, float | None]] = {}

    # --- what the gun reports ---------------------------------------------------------------

    def status(self) -> GunStatus:
        return GunStatus(
            plugged=self._plugged,
            ev_requesting=self._requesting,
            relay_closed=self._relay_closed,
            faults=tuple(self._faults.active.items()),
        )

    def meter(self) -> MeterReading:
        """The last fresh values the meter reported within its range (no current or power
        once the relay is open while the meter is over range), the register as believed (see
        `meter.BelievedMeter`) and the EV's SoC."""
        return self._meter.reading(self._session_soc)

    @property
    def register_wh(self) -> float | None:
        """The IMPORT_ENERGY register as believed; None until the meter has reported one."""
        return self._meter.register_wh

    @property
    def safety_tripped(self) -> bool:
        return self._safety.tripped

    # --- commands ---------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """The driver starts: silence is measured from `now` (a PLC that never talks is a
        fault)."""
        self._last_rx = self._last_fresh_meter = now

    def command(self, closed: bool, *, force_off: bool) -> int:
        """A new command (each `set_relay` attempt, a safety trip, a give-up with
        FORCE_ALL_OFF): the next seq (1..255, wrapping past 0), due at once."""
        self._seq = self._seq % 255 + 1
        self._relay_cmd = closed
        self._force_off = force_off
        self._mismatch_since = None  # the PLC gets a full ack_timeout for the new command
        self.control_due = True
        return self._seq

    @contextmanager
    def awaiting_ack(self) -> Iterator[None]:
        """While a command waits for its acknowledgement the relay is not judged against it
        (`_judge_relay`): each attempt has its own deadline, and the give-up its force-off."""
        self._acking += 1
        try:
            yield
        finally:
            self._acking -= 1

    def acknowledged(self, closed: bool) -> bool:
        """Whether the newest command is applied with the relay `closed`: an ack of an older
        one (stale) never matches. A newer command to the same state counts (a safety trip's
        FORCE_ALL_OFF confirms an open that was waiting); one to the other state does not."""
        return (
            self._last_applied == self._seq
            and self._relay_cmd == closed
            and self._relay_state == closed
            and self._relay_feedback == closed
        )

    def relay_control(self) -> dict[str, int]:
        """The RelayControl signals this PLC is due now (raw values)."""
        return {
            "RLY1_CMD": int(self._relay_cmd),
            "SYS_ENABLE": 1,
            "FORCE_ALL_OFF": int(
                self._force_off
                or self.safety_tripped
                or self._trip_unsent
                or "feedback" in self._switch_causes
            ),
            "CLEAR_FAULTS": int(self._should_clear()),
            "CMD_SEQ": self._seq,
            "RLY_ENABLE_MASK": 1,
            "RLY_MODE": 0,
            "PULSE_MS": 0,
        }

    def relay_control_frame(self) -> tuple[int, bytes]:
        """`relay_control` as a frame (id, bytes), to send now: no longer `control_due`.
        Encoded (and range-checked) once per change; keep-alives reuse the bytes."""
        self.control_due = False
        signals = self.relay_control()
        key = tuple(signals.values())
        if self._encoded is None or self._encoded[0] != key:
            _, data = codec.encode("RelayControl", self.plc_id, signals, scaling=False)
            self._encoded = (key, data)
        return self._control_id, self._encoded[1]

    def relay_control_sent(self) -> None:
        """A frame from `relay_control_frame` went out: a trip's FORCE_ALL_OFF is on the bus."""
        self._trip_unsent = False

    def _should_clear(self) -> bool:
        """CLEAR_FAULTS when the PLC still latches a fault whose cause is gone as far as we
        can tell: it then unlatches (it never closes a relay by itself, so this is safe)."""
        latched = self._plc_comm_fault or self._plc_fault_reason not in (0, _REMOTE_FORCE_OFF)
        return latched and not self.safety_tripped

    # --- what the PLC says ------------------------------------------------------------------

    def accept_crc(self, decoded: codec.Decoded, crc_byte: int) -> bool:
        """Whether to accept a decoded frame as far as its CRC goes (a wrong non-zero CRC
        byte has been refused by the codec already). A frame without CRC (`crc_ok` False) is
        accepted from a PLC that has never sent a valid non-zero CRC byte (old firmware) and
        dropped from one that has. A zero byte that happens to be the frame's real CRC
        (`crc_ok` True) is accepted but proves nothing: old firmware sends such frames too."""
        if decoded.crc_ok:
            if crc_byte != 0 and not self._crc_protected:
                self._crc_protected = True
                log.debug("PLC %d sends CRC-protected frames", self.plc_id)
            return True
        if not self._crc_protected:
            return True
        if not self._crc_less_logged:
            self._crc_less_logged = True
            log.warning(
                "PLC %d: frame without CRC (%s) from a PLC that sends CRCs: dropping such "
                "frames (counted as CRC errors)",
                self.plc_id,
                decoded.message,
            )
        return False

    def receive(
        self, can_id: int, data: bytes, decoded: codec.Decoded, now: float
    ) -> list[HardwareEvent]:
        """A frame from this PLC, decoded and accepted (`accept_crc`), received at `now`."""
        events = self._on_frame(decoded, now)
        self._remember(can_id, data, decoded)
        return events

    def _on_frame(self, decoded: codec.Decoded, now: float) -> list[HardwareEvent]:
        events: list[HardwareEvent] = []
        self._last_rx = now
        comm = self._comm_causes
        if comm:  # (no cause, no COMMUNICATION fault: nothing to clear, the common case)
            if "rx" in comm or "bus" in comm:
                # The PLC talks again: its meter gets a full meter_stale to report before it
                # is called stale (the silence was the link's fault, already reported).
                self._last_fresh_meter = max(self._last_fresh_meter, now)
            comm.pop("bus", None)  # frames flow again
            events += self._faults.cause(FaultKind.COMMUNICATION, "rx", None)
        s = decoded.signals
        match decoded.message:
            case "RelayStatus":
                self._on_relay_status(s, now, events)
                self._saw("RelayStatus")
            case "CpStatus":
                plugged, requesting = bool(s["PLUGGED"]), bool(s["EV_READY"])
                if plugged and not self._plugged:
                    events.append(CablePlugged())
                if not plugged and self._plugged:
                    events.append(CableUnplugged())  # implies the demand is gone
                elif requesting != self._requesting:
                    events.append(EvDemand(requesting))
                self._plugged, self._requesting = plugged, requesting
                self._saw("CpStatus")
            case "EnergyMeterData":
                if s["METER_OK"] and not s["DATA_STALE"] and not s["COMM_ERROR"]:
                    self._last_fresh_meter = now
                    if self._meter_causes:
                        events += self._faults.cause(FaultKind.METER, "stale", None)
                    self._on_meter(s, now, events)
            case "SafetySwitchStatus":
                self._on_safety(
                    events,
                    now,
                    estop=bool(s["ESTOP"]),
                    earth=bool(s["EARTH_FAULT"]),
                    chain=not s["SAFETY_OK"] and not s["ESTOP"] and not s["EARTH_FAULT"],
                    switches=int(s["SW_STATES"]) & int(s["SW_MASK"]),
                )
            case "ChargingSession":
                self._session_soc = float(s["SOC_PCT"]) if s["SESSION_ACTIVE"] else None
            case "ConfigAck":
                self.config_exchange.on_ack(s)
        return events

    def _on_meter(
        self, s: Mapping[str, float | int], now: float, events: list[HardwareEvent]
    ) -> None:
        """Fresh meter data, taken as far as it can be believed; the meter not believed is
        a METER fault ("PLC n: meter ...")."""
        meter = self._meter
        taken = meter.take(s, now, relay_closed=self._relay_closed)
        if taken is not None:
            self._saw(taken)
        doubt = meter.doubt
        if doubt is not None or "doubt" in self._meter_causes:
            if doubt is None:
                log.info(
                    "PLC %d: meter consistent again, register believed at %.0f Wh",
                    self.plc_id,
                    meter.energy_wh,
                )
            events += self._faults.cause(
                FaultKind.METER,
                "doubt",
                None if doubt is None else f"PLC {self.plc_id}: {doubt}",
            )

    def _healthy(self) -> bool:
        # A relay reported otherwise than commanded is judged by every frame (`repeat`).
        return not (
            self._active
            or self._comm_causes
            or self._safety.tripped
            or self._relay_state != self._relay_cmd
            or self._relay_feedback != self._relay_cmd
            or self._mismatch_since is not None
        )

    def repeat(self, can_id: int, data: bytes, now: float) -> bool:
        """Whether a received frame repeats the last frame of its id, one that left this gun
        healthy, while the gun is healthy; then its only effects, the times the PLC (and
        fresh meter data) were last heard, are applied here and the frame needs no decoding.

        Most of a bus's traffic is such repeats (relay, cable and safety states change
        rarely), so this saves the decode on most frames. It is exact because handling such a
        frame again is a no-op apart from those times: each state field is written by frames
        of one id only, so it still holds what that frame set; the safety inputs, fed by
        two ids, are all clear and the frame reported them clear (else it would have left a
        fault); no fault or comm cause is active (a frame can end those); and a repeat cannot
        end a relay wait (its seq is the one already seen). ConfigAck is never remembered (a
        repeat answers a new request), nor a frame without CRC (which a PLC may stop being
        allowed to send, see `accept_crc`). tests/test_plc_repeats.py checks all this
        against decoding every frame."""
        if not self._healthy():
            return False
        last = self._last_frame.get(can_id)
        if last is None or last[0] != data:
            return False
        self._last_rx = now
        if last[1]:
            self._last_fresh_meter = now
            if last[2] is not None:
                self._meter.still(last[2], now)
        return True

    def _remember(self, can_id: int, data: bytes, decoded: codec.Decoded) -> None:
        """Keep a frame just handled for `repeat`; one that may not be kept still replaces
        the kept one (the next frame equal to that is then no repeat of the latest state)."""
        if (
            self._decode_repeats
            or decoded.message == "ConfigAck"
            or data[_CRC_BYTE] == 0
            or not self._healthy()
        ):
            self._last_frame.pop(can_id, None)
            return
        s = decoded.signals
        fresh_meter = decoded.message == "EnergyMeterData" and bool(
            s["METER_OK"] and not s["DATA_STALE"] and not s["COMM_ERROR"]
        )
        register = None
        if fresh_meter and s["MUX"] == 1 and not s["OVERRANGE"]:
            register = int(s["IMPORT_ENERGY_0p1kWh"]) * 100.0
        self._last_frame[can_id] = (data, fresh_meter, register)

    def _saw(self, what: str) -> None:
        if not self.known:
            self._seen.add(what)
            self.known = self._seen >= _FIRST_FRAMES

    def _on_relay_status(
        self, s: Mapping[str, float | int], now: float, events: list[HardwareEvent]
    ) -> None:
        # Safety first: a relay opened by an interlock is reported after the interlock, so
        # the connector knows why it opened.
        self._on_safety(
            events,
            now,
            estop=bool(s["ESTOP_INPUT"]),
            earth=bool(s["EARTH_FAULT"]),
            chain=not s["SAFETY_OK"] and not s["ESTOP_INPUT"] and not s["EARTH_FAULT"],
            switches=int(s["SW_STATES"]),
        )
        self._relay_state = bool(s["RLY1_STATE"])
        self._relay_feedback = bool(s["RLY1_FEEDBACK"])
        closed = self._relay_state or self._relay_feedback
        if closed != self._relay_closed:
            self._relay_closed = closed
            events.append(RelayState(closed))
        self._last_applied = int(s["LAST_CMD_SEQ_APPLIED"])
        reason = int(s["FAULT_REASON"])
        self._plc_fault_reason = reason
        self._plc_comm_fault = bool(s["COMM_FAULT"])
        comm: str | None = None
        if reason in _COMM_REASONS:
            comm = f"PLC {self.plc_id} reports {_COMM_REASONS[reason]}"
        elif self._plc_comm_fault:
            comm = f"PLC {self.plc_id} reports a communication fault"
        events += self._faults.cause(FaultKind.COMMUNICATION, "plc", comm)
        events += self._faults.cause(
            FaultKind.POWER_SWITCH,
            "plc",
            f"PLC {self.plc_id}: relay feedback mismatch"
            if reason == _FAULT_RELAY_MISMATCH
            else None,
        )
        events += self._judge_relay(now, frame=True)

    def _on_safety(
        self,
        events: list[HardwareEvent],
        now: float,
        *,
        estop: bool,
        earth: bool,
        chain: bool,
        switches: int,
    ) -> None:
        """The safety inputs of one frame. A trip opens the relay from here, before any
        connector hears of it: the very next RelayControl (due at once) carries
        FORCE_ALL_OFF, and keeps carrying it until every input is released."""
        safety = self._safety
        was_tripped = safety.tripped
        events += safety.feed(estop=estop, earth=earth, chain=chain, switches=switches)
        if safety.tripped and not was_tripped:
            self._say_trip(now)
            self._trip_unsent = True
            # FORCE_ALL_OFF follows the trip (see relay_control); the command itself is an
            # open, so the relay stays open once the inputs are released. A force-off of a
            # set_relay that gave up stays until the next set_relay.
            self.command(False, force_off=self._force_off)

    def _say_trip(self, now: float) -> None:
        """One WARNING per TRIP_LOG_WINDOW: an input that bounces trips the host again and
        again (each trip is acted on at once all the same); the next warning counts them."""
        if now < self._trip_quiet_until:
            self._trips_unsaid += 1
            log.debug("PLC %d: safety trip, forcing all relays off", self.plc_id)
            return
        more = f" ({self._trips_unsaid} more trip(s) before this one)" if self._trips_unsaid else ""
        log.warning("PLC %d: safety trip, forcing all relays off%s", self.plc_id, more)
        self._trip_quiet_until, self._trips_unsaid = now + TRIP_LOG_WINDOW, 0

    # --- time -------------------------------------------------------------------------------

    def supervise(self, now: float) -> list[HardwareEvent]:
        """What silence means at `now`: the PLC not heard for `rx_timeout`, no fresh meter
        data for `meter_stale`, a relay reported against the command too long."""
        options = self._options
        events: list[HardwareEvent] = []
        if now - self._last_rx >= options.rx_timeout:
            events += self._faults.cause(
                FaultKind.COMMUNICATION, "rx", f"PLC {self.plc_id} communication lost"
            )
        # A silent PLC's meter is not reported stale on top: the link is the fault.
        if (
            now - self._last_fresh_meter >= options.meter_stale
            and FaultKind.COMMUNICATION not in self._faults.active
        ):
            events += self._faults.cause(FaultKind.METER, "stale", "meter data stale")
        events += self._judge_relay(now)
        return events

    def bus_failed(self, error: str) -> list[HardwareEvent]:
        """The bus failed (it is reopened): a COMMUNICATION cause until a frame arrives."""
        return self._faults.cause(FaultKind.COMMUNICATION, "bus", f"CAN bus error: {error}")

    def _judge_relay(self, now: float, *, frame: bool = False) -> list[HardwareEvent]:
        """The relay as the PLC reports it against the command. A disagreement that lasts
        `ack_timeout` is POWER_SWITCH, with FORCE_ALL_OFF while it lasts (`relay_control`).
        It ends only after `debounce_frames` RelayStatus frames (`frame`) in a row agree, so
        a report that flaps cannot keep it from being raised, nor end it. Not judged while a
        command waits for its acknowledgement (it has its own deadline and force-off),
        while the PLC is not heard (its report is old), nor for an open relay commanded
        closed while the PLC reports why it opened it (an interlock, its watchdog: those
        faults say so, and the connector commands it open)."""
        cmd = self._relay_cmd
        active = "feedback" in self._switch_causes
        if self._relay_state == cmd and self._relay_feedback == cmd:
            if not frame or (self._mismatch_since is None and not active):
                return []
            self._agreeing += 1
            if self._agreeing < self._options.debounce_frames:
                return []
            self._mismatch_since = None
            return self._feedback_cause(None)
        self._agreeing = 0
        plc_opened_it = cmd and (
            self._plc_comm_fault
            or self._plc_fault_reason not in (0, _REMOTE_FORCE_OFF)
            or self.safety_tripped
        )
        silent = "rx" in self._comm_causes or "bus" in self._comm_causes
        if self._acking or silent or plc_opened_it:
            self._mismatch_since = None
            return []
        if self._mismatch_since is None:
            self._mismatch_since = now
        if active or now - self._mismatch_since < self._options.ack_timeout:
            return []
        reported, commanded = ("open", "closed") if cmd else ("closed", "open")
        return self._feedback_cause(
            f"PLC {self.plc_id}: relay reported {reported}, commanded {commanded}"
        )

    def _feedback_cause(self, detail: str | None) -> list[HardwareEvent]:
        if (detail is not None) == ("feedback" in self._switch_causes):
            return []
        if detail is not None:
            log.warning("%s: forcing all relays off until it agrees", detail)
        self.control_due = True  # FORCE_ALL_OFF follows the cause at once
        return self._faults.cause(FaultKind.POWER_SWITCH, "feedback", detail)
