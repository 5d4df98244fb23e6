"""The relay/meter PLC's firmware, emulated on a python-can bus (one emulator per PLC, one gun).

`PlcEmulator` is the other end of the CAN contract in `dcocpp_plc.dbc` (see README.md, section
"Firmware behaviour"): it answers RelayControl and ConfigCmd for its plcId, sends the periodic
status frames, runs the RelayControl watchdog and the safety interlocks, and models a plugged EV
and the DC meter. The EV and energy model is the simulation module's (`EvModel` and its
closed-form charging curve), so a charge through the emulator reads like one in
`SimulatedHardware`. Everything is timed on trio's clock.

Receiving: `bridge.read_frames`, the same reader the driver uses (fd wait on buses that have one,
a joined Notifier thread otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import attrs
import can
import trio

from dcocpp.config import ConnectorConfig

# The simulation's helpers are private; the emulator shares them on purpose so that both
# simulated backends charge an EV identically.
from dcocpp.hardware.ev import (
    INITIAL_REGISTER_WH,
    REGISTER_STEP_WH,
    EvModel,
    battery_voltage,
    seconds_to_soc,
    soc_after,
)
from dcocpp.hardware.interface import HardwareError, MeterReading
from dcocpp.hardware.plc import codec
from dcocpp.hardware.plc.bridge import BusReadError, read_frames

__all__ = [
    "ACK_OK",
    "ACK_OUT_OF_RANGE",
    "ACK_READ_ONLY",
    "ACK_UNKNOWN_PARAM",
    "DEBOUNCE_S",
    "FAULT_CRC_FAILURE",
    "FAULT_EARTH_FAULT",
    "FAULT_ESTOP",
    "FAULT_NONE",
    "FAULT_RELAY_TIMEOUT",
    "FAULT_REMOTE_FORCE_OFF",
    "PlcEmulator",
    "PlcEmulatorError",
    "PlcState",
    "PlcStats",
]

DEBOUNCE_S = 0.020  # a safety input must be stable this long before SAFETY_OK follows it

FAULT_NONE = 0
FAULT_RELAY_TIMEOUT = 1
FAULT_CRC_FAILURE = 3
FAULT_ESTOP = 4
FAULT_EARTH_FAULT = 5
FAULT_REMOTE_FORCE_OFF = 6

ACK_OK = 0
ACK_UNKNOWN_PARAM = 1
ACK_OUT_OF_RANGE = 2
ACK_READ_ONLY = 3

PARAM_CURRENT_LIMIT = 1
PARAM_POWER_LIMIT = 2
PARAM_RELAY_TIMEOUT = 3
PARAM_METER_PERIOD = 4
PARAM_VOLTAGE_LIMIT = 5

CP_A, CP_B, CP_C = 0, 1, 2
_CP_VOLTS = {CP_A: 12.0, CP_B: 9.0, CP_C: 6.0}
_DC_DUTY_PCT = 5  # IEC 61851-23: 5 % duty = "use digital communication"
_SW_MASK = 0b11  # switch input 0 = estop, input 1 = earth-fault monitor
_RAW_S16_MAX = 32767
_MAX_REGISTER_WH = (2**32 - 1) * 100  # IMPORT_ENERGY_0p1kWh is a u32 of 0.1 kWh


class PlcEmulatorError(HardwareError):
    """The emulator's bus failed underneath it (the reader thread's exception is the cause)."""


@attrs.frozen
class PlcStats:
    rx_frames: int = 0  # frames read from the bus, every id
    ignored: int = 0  # for another plcId, or not a host -> PLC message
    crc_errors: int = 0  # host frames with a wrong (non-zero) CRC byte: dropped
    decode_errors: int = 0  # other undecodable frames (unknown id, DLC, ...): dropped
    rx_overruns: int = 0  # frames lost because the emulator fell RX_QUEUE frames behind
    tx_frames: int = 0
    tx_errors: int = 0  # bus.send raised can.CanError


@attrs.frozen
class PlcState:
    """A snapshot of the emulated PLC (what its frames say, plus the injected conditions)."""

    plc_id: int
    relay_closed: bool
    last_cmd_seq_applied: int
    safety_ok: bool
    estop: bool  # debounced input
    earth_fault: bool  # debounced input
    comm_fault: bool
    force_off_active: bool
    fault_reason: int
    plugged: bool
    ev_requesting: bool
    soc: float | None
    current_limit_a: float
    power_limit_w: float
    meter: MeterReading
    meter_stale: bool
    meter_overrange: bool
    silent: bool
    relay_stuck: bool
    relay_welded: bool


class _Input:
    """One debounced safety input."""

    def __init__(self) -> None:
        self.raw = False
        self.stable = False
        self.scope: trio.CancelScope | None = None


class PlcEmulator:
    """One PLC (one gun, relay RLY1) on `bus`, answering to `plc_id`.

    `run` starts the bus reader and the firmware tasks and runs until cancelled; no reader
    thread outlives it and it never closes the bus (the caller owns it).
    Give every emulator its own Bus object (each PLC has its own CAN controller): two emulators
    on one virtual channel see each other's frames, one Bus object read by two emulators would
    not. The fault-injection and EV controls work while `run` runs and raise RuntimeError
    otherwise.
    """

    def __init__(
        self,
        bus: can.BusABC,
        plc_id: int,
        *,
        connector: ConnectorConfig,
        relay_delay: float = 0.03,
        watchdog: float = 0.3,
        period: float = 0.1,
        initial_energy_wh: float | None = None,
        debounce: float = DEBOUNCE_S,
    ):
        if not 0 <= plc_id <= codec.MAX_PLC_ID:
            raise ValueError(f"plcId {plc_id} outside 0..{codec.MAX_PLC_ID}")
        if relay_delay < 0 or debounce < 0 or watchdog <= 0 or period <= 0:
            raise ValueError("relay_delay and debounce must be >= 0, watchdog and period > 0")
        self._bus = bus
        self._plc_id = plc_id
        self._config = connector
        self._relay_delay = relay_delay
        self._watchdog = watchdog
        self._period = period
        self._debounce_s = debounce
        self._ids = {
            codec.frame_id("RelayControl", plc_id): self._on_relay_control,
            codec.frame_id("ConfigCmd", plc_id): self._on_config_cmd,
        }
        self._nursery: trio.Nursery | None = None
        # Counted in a plain dict (the hot path); `stats` is a frozen snapshot of it.
        self._counts = dict.fromkeys(attrs.fields_dict(PlcStats), 0)

        # relay and host commands
        self._relay_closed = False
        self._last_applied: int | None = None  # reported as 0; any first seq is new
        self._move: tuple[int, trio.CancelScope] | None = None  # (seq, scope) of a pending move
        self._force_off = False
        self._sys_enable = True
        self._relay_stuck = False
        self._relay_welded = False
        # watchdog: armed by the first RelayControl (before it the relay is open anyway)
        self._last_control: float | None = None
        self._starved = False
        self._watchdog_scope: trio.CancelScope | None = None
        self._comm_fault = False
        # latched FAULT_REASONs, oldest first; the oldest is reported
        self._latched: list[int] = []
        self._estop = _Input()
        self._earth = _Input()

        # transmit
        self._silent = False
        self._corrupt_next = False
        self._tick = 0

        # ConfigCmd parameters
        self._current_limit_a = connector.max_current_a
        self._power_limit_w = connector.max_power_w
        self._voltage_limit_v = 1000.0

        # EV and meter
        self._ev: EvModel | None = None
        self._soc = 0.0
        self._ev_suspended = False
        if initial_energy_wh is None:
            initial_energy_wh = INITIAL_REGISTER_WH + REGISTER_STEP_WH * plc_id
        self._energy_wh = initial_energy_wh
        self._updated_at: float | None = None
        self._frozen: MeterReading | None = None
        self._overrange = False

    # --- lifetime -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the bus, send the periodic frames, run the watchdog; `task_status.started()`
        once frames are being received. Runs until cancelled. Raises PlcEmulatorError if
        reading the bus fails, RuntimeError if already running. The bus stays open."""
        if self._nursery is not None:
            raise RuntimeError("emulator already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._updated_at = trio.current_time()
                nursery.start_soon(self._transmit_loop)
                nursery.start_soon(self._watchdog_loop)
                await nursery.start(self._read)
                task_status.started()
        finally:
            self._nursery = None

    async def _read(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def handle(msg: can.Message) -> None:
            self._on_frame(msg)

        try:
            await read_frames(
                self._bus, handle, on_overrun=self._count_overrun, task_status=task_status
            )
        except BusReadError as exc:
            raise PlcEmulatorError(f"PLC {self._plc_id}: bus failed: {exc}") from exc

    # --- controls (fault injection and the EV) --------------------------------------------

    def set_estop(self, active: bool) -> None:
        self._set_input(self._estop, active)

    def set_earth_fault(self, active: bool) -> None:
        self._set_input(self._earth, active)

    def set_meter_stale(self, active: bool) -> None:
        """DATA_STALE=1 and the meter values frozen; the energy keeps flowing underneath."""
        self._require_running()
        self._advance()
        if active and self._frozen is None:
            self._frozen = self._live_reading()
        elif not active:
            self._frozen = None

    def set_silent(self, active: bool) -> None:
        """The PLC stops transmitting entirely (it still receives and acts)."""
        self._silent = active

    def set_relay_stuck(self, active: bool) -> None:
        """The relay ignores host commands (no acknowledgement); interlocks still open it."""
        self._relay_stuck = active

    def set_relay_welded(self, active: bool) -> None:
        """The relay's contacts weld shut: they close at once and stay closed whatever the
        coil does (commands, FORCE_ALL_OFF and interlocks still switch the coil, which
        `RLY1_STATE` reports); `RLY1_FEEDBACK`, the auxiliary contact, says closed and energy
        flows to a plugged EV. Released, the contacts follow the coil again."""
        self._require_running()
        self._advance()
        self._relay_welded = active
        self._send_relay_status()

    def set_register(self, energy_wh: float) -> None:
        """The meter's import register jumps to `energy_wh` (a meter reset, replaced, or
        corrupting its register) and counts on from there."""
        self._require_running()
        if not 0 <= energy_wh <= _MAX_REGISTER_WH:
            raise ValueError(f"register {energy_wh} Wh outside 0..{_MAX_REGISTER_WH}")
        self._advance()
        self._energy_wh = float(energy_wh)

    def set_meter_overrange(self, active: bool) -> None:
        """The meter measures beyond its range (a shorted shunt, a runaway converter): MUX 0
        reports current and power saturated at +327.67 A / kW, both branches `OVERRANGE=1`."""
        self._require_running()
        self._overrange = active

    def corrupt_next_crc(self) -> None:
        """The next frame sent carries a wrong, non-zero CRC byte."""
        self._corrupt_next = True

    def plug(self, ev: EvModel | None = None) -> None:
        self._require_running()
        if self._ev is not None:
            raise ValueError(f"PLC {self._plc_id}: already plugged")
        self._advance()
        self._ev = ev if ev is not None else EvModel()
        self._soc = self._ev.soc
        self._ev_suspended = False
        self._send_cp_status()  # a control pilot change is reported at once

    def unplug(self) -> None:
        self._require_running()
        if self._ev is None:
            raise ValueError(f"PLC {self._plc_id}: not plugged")
        self._advance()
        self._ev = None
        self._ev_suspended = False
        self._send_cp_status()
        # The session is over: the host must not go on reporting the gone EV's SoC.
        self._send(
            "ChargingSession",
            {
                "SESSION_ACTIVE": 0,
                "SOC_PCT": 0,
                "EVDC_MAX_CURRENT_0p1A": 0,
                "EVDC_MAX_VOLTAGE_0p1V": 0,
                "EVDC_TARGET_CURRENT_0p1A": 0,
            },
        )

    def set_ev_suspended(self, suspended: bool) -> None:
        self._require_running()
        if self._ev is None:
            raise ValueError(f"PLC {self._plc_id}: no EV plugged")
        self._advance()
        self._ev_suspended = suspended
        self._send_cp_status()

    @property
    def stats(self) -> PlcStats:
        return PlcStats(**self._counts)

    @property
    def state(self) -> PlcState:
        meter = self.read_meter()
        return PlcState(
            plc_id=self._plc_id,
            relay_closed=self._relay_closed,
            last_cmd_seq_applied=self._last_applied or 0,
            safety_ok=self._safety_ok(),
            estop=self._estop.stable,
            earth_fault=self._earth.stable,
            comm_fault=self._comm_fault,
            force_off_active=self._force_off,
            fault_reason=self._fault_reason(),
            plugged=self._ev is not None,
            ev_requesting=self._requesting(),
            soc=self._soc if self._ev is not None else None,
            current_limit_a=self._current_limit_a,
            power_limit_w=self._power_limit_w,
            meter=meter,
            meter_stale=self._frozen is not None,
            meter_overrange=self._overrange,
            silent=self._silent,
            relay_stuck=self._relay_stuck,
            relay_welded=self._relay_welded,
        )

    def read_meter(self) -> MeterReading:
        """What the meter reports now (frozen while stale)."""
        if self._updated_at is not None:
            self._advance()
        return self._frozen if self._frozen is not None else self._live_reading()

    # --- receiving ------------------------------------------------------------------------

    def _on_frame(self, msg: can.Message) -> None:
        self._bump("rx_frames")
        if msg.is_error_frame or msg.is_remote_frame or not msg.is_extended_id:
            self._bump("ignored")
            return
        handler = self._ids.get(msg.arbitration_id)
        if handler is None:
            self._bump("ignored")
            return
        try:
            decoded = codec.decode(msg.arbitration_id, bytes(msg.data), scaling=False)
        except codec.CrcError:
            self._bump("crc_errors")
            return
        except codec.PlcCodecError:
            self._bump("decode_errors")
            return
        handler(decoded.signals)

    def _on_relay_control(self, signals: Mapping[str, float | int]) -> None:
        now = trio.current_time()
        self._last_control = now
        self._starved = False
        self._rearm_watchdog()

        self._sys_enable = bool(signals["SYS_ENABLE"])
        self._force_off = bool(signals["FORCE_ALL_OFF"])
        if signals["CLEAR_FAULTS"]:
            self._clear_faults()
        if not self._closing_allowed():
            self._open_relay()  # force-off / SYS_ENABLE=0 act at once, on any frame

        seq = int(signals["CMD_SEQ"])
        wanted = bool(signals["RLY1_CMD"]) and self._sys_enable
        if seq == self._last_applied or self._relay_stuck:
            return
        if self._move is not None:
            if self._move[0] == seq:
                return  # a keep-alive of the command being carried out
            self._move[1].cancel()  # a newer command replaces it
        scope = trio.CancelScope()
        self._move = (seq, scope)
        assert self._nursery is not None
        self._nursery.start_soon(self._carry_out, seq, wanted, scope)

    async def _carry_out(self, seq: int, closed: bool, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(self._relay_delay)
            if self._move is not None and self._move[1] is scope:
                self._move = None
            if self._relay_stuck or (closed and not self._closing_allowed()):
                return  # not applied: keep-alives repeating `seq` try again
            self._set_relay(closed)
            self._last_applied = seq
            self._send_relay_status()

    def _on_config_cmd(self, signals: Mapping[str, float | int]) -> None:
        param, op, value = (
            int(signals["CFG_PARAM_ID"]),
            int(signals["CFG_OP"]),
            signals["CFG_VALUE"],
        )
        value = int(value)
        status, reply = self._configure(param, op, value)
        self._send(
            "ConfigAck",
            {
                "CFG_PARAM_ID": param,
                "ACK_STATUS": status,
                "PLC_ID": self._plc_id,
                "CFG_VALUE": reply,
            },
        )

    def _configure(self, param: int, op: int, value: int) -> tuple[int, int]:
        """(ACK_STATUS, CFG_VALUE after the operation) for one ConfigCmd."""
        params: dict[int, tuple[Callable[[], int], Callable[[int], None] | None, int, int]] = {
            PARAM_CURRENT_LIMIT: (
                lambda: round(self._current_limit_a * 10),
                lambda raw: self._set_limits(current_a=raw / 10),
                0,
                math.floor(self._config.max_current_a * 10),
            ),
            PARAM_POWER_LIMIT: (
                lambda: round(self._power_limit_w),
                lambda raw: self._set_limits(power_w=float(raw)),
                0,
                math.floor(self._config.max_power_w),
            ),
            PARAM_RELAY_TIMEOUT: (
                lambda: round(self._watchdog * 1000),
                self._set_relay_timeout,
                50,
                60_000,
            ),
            PARAM_METER_PERIOD: (lambda: round(self._period * 1000), None, 0, 0),
            PARAM_VOLTAGE_LIMIT: (
                lambda: round(self._voltage_limit_v * 10),
                lambda raw: setattr(self, "_voltage_limit_v", raw / 10),
                0,
                65_535,
            ),
        }
        if param not in params:
            return ACK_UNKNOWN_PARAM, value
        get, set_, low, high = params[param]
        if op == 0:
            return ACK_OK, get()
        if op != 1:
            return ACK_OUT_OF_RANGE, get()
        if set_ is None:
            return ACK_READ_ONLY, get()
        if not low <= value <= high:
            return ACK_OUT_OF_RANGE, get()
        set_(value)
        return ACK_OK, get()

    def _set_limits(self, *, current_a: float | None = None, power_w: float | None = None) -> None:
        self._advance()  # settle the energy delivered under the old limit
        if current_a is not None:
            self._current_limit_a = current_a
        if power_w is not None:
            self._power_limit_w = power_w

    def _set_relay_timeout(self, ms: int) -> None:
        self._watchdog = ms / 1000
        self._rearm_watchdog()

    def _count_overrun(self) -> None:
        self._bump("rx_overruns")

    # --- relay, watchdog, safety ----------------------------------------------------------

    def _set_relay(self, closed: bool) -> None:
        if closed == self._relay_closed:
            return
        self._advance()
        self._relay_closed = closed
        self._send_relay_status()

    def _open_relay(self) -> None:
        """An interlock opens the relay at once and drops any command still moving."""
        if self._move is not None:
            self._move[1].cancel()
            self._move = None
        self._set_relay(False)

    def _contacts_closed(self) -> bool:
        """Whether current can flow: the coil holds the relay closed, or its contacts welded."""
        return self._relay_closed or self._relay_welded

    def _safety_ok(self) -> bool:
        return not (self._estop.stable or self._earth.stable)

    def _closing_allowed(self) -> bool:
        return (
            self._safety_ok()
            and self._sys_enable
            and not self._force_off
            and not self._comm_fault
            and not self._latched
        )

    def _latch(self, reason: int) -> None:
        if reason not in self._latched:
            self._latched.append(reason)

    def _fault_reason(self) -> int:
        if self._latched:
            return self._latched[0]
        return FAULT_REMOTE_FORCE_OFF if self._force_off else FAULT_NONE

    def _clear_faults(self) -> None:
        """CLEAR_FAULTS: drop every latched fault whose cause is gone. It arrives in a
        RelayControl, so the host's traffic is back by definition."""
        self._comm_fault = False
        gone = {FAULT_RELAY_TIMEOUT, FAULT_CRC_FAILURE}
        if not self._estop.stable:
            gone.add(FAULT_ESTOP)
        if not self._earth.stable:
            gone.add(FAULT_EARTH_FAULT)
        self._latched = [reason for reason in self._latched if reason not in gone]

    def _watchdog_deadline(self) -> float:
        if self._last_control is None or self._starved:
            return math.inf
        return self._last_control + self._watchdog

    def _rearm_watchdog(self) -> None:
        if self._watchdog_scope is not None:
            self._watchdog_scope.deadline = self._watchdog_deadline()

    async def _watchdog_loop(self) -> None:
        while True:
            self._watchdog_scope = trio.CancelScope(deadline=self._watchdog_deadline())
            with self._watchdog_scope:
                await trio.sleep_forever()
            if trio.current_time() >= self._watchdog_deadline():
                self._starved = True
                self._comm_fault = True
                self._latch(FAULT_RELAY_TIMEOUT)
                self._open_relay()
                self._send_relay_status()

    def _set_input(self, which: _Input, active: bool) -> None:
        self._require_running()
        if active == which.raw:
            return
        which.raw = active
        if which.scope is not None:
            which.scope.cancel()  # the input bounced: its stable time starts again
        which.scope = trio.CancelScope()
        assert self._nursery is not None
        self._nursery.start_soon(self._debounce, which, which.scope)

    async def _debounce(self, which: _Input, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(self._debounce_s)
            which.scope = None
            if which.stable == which.raw:
                return
            which.stable = which.raw
            if which.stable:
                self._latch(FAULT_ESTOP if which is self._estop else FAULT_EARTH_FAULT)
                self._open_relay()
            self._send_relay_status()

    # --- transmitting ---------------------------------------------------------------------

    async def _transmit_loop(self) -> None:
        start = trio.current_time()
        while True:
            self._send_periodic()
            self._tick += 1
            await trio.sleep_until(start + self._tick * self._period)

    def _send_periodic(self) -> None:
        self._send_relay_status()
        safety_ok = self._safety_ok()
        self._send(
            "SafetySwitchStatus",
            {
                "SW_STATES": self._switch_states(),
                "ESTOP": int(self._estop.stable),
                "SAFETY_OK": int(safety_ok),
                "EARTH_FAULT": int(self._earth.stable),
                "SW_MASK": _SW_MASK,
            },
        )
        self._send_cp_status()
        self._send_meter(self._tick % 2)
        if self._ev is not None:
            self._send_session(self._ev)

    def _send_cp_status(self) -> None:
        cp_state = CP_A if self._ev is None else (CP_C if self._requesting() else CP_B)
        self._send(
            "CpStatus",
            {
                "CP_STATE": cp_state,
                "PLUGGED": int(self._ev is not None),
                "EV_READY": int(cp_state == CP_C),
                "CP_VOLTAGE_0p1V": round(_CP_VOLTS[cp_state] * 10),
                "CP_DUTY_PCT": 100 if cp_state == CP_A else _DC_DUTY_PCT,
            },
        )

    def _switch_states(self) -> int:
        return int(self._estop.stable) | int(self._earth.stable) << 1

    def _send_relay_status(self) -> None:
        self._send(
            "RelayStatus",
            {
                "RLY1_STATE": int(self._relay_closed),
                "RLY1_FEEDBACK": int(self._contacts_closed()),
                "SAFETY_OK": int(self._safety_ok()),
                "EARTH_FAULT": int(self._earth.stable),
                "ESTOP_INPUT": int(self._estop.stable),
                "COMM_FAULT": int(self._comm_fault),
                "FORCE_OFF_ACTIVE": int(self._force_off),
                "SW_STATES": self._switch_states(),
                "FAULT_REASON": self._fault_reason(),
                "LAST_CMD_SEQ_APPLIED": self._last_applied or 0,
            },
        )

    def _send_meter(self, mux: int) -> None:
        reading = self.read_meter()
        current = round(reading.current_a * 100)
        power = round(reading.power_w / 10)  # 0.01 kW
        if self._overrange:
            current = power = _RAW_S16_MAX + 1
        overrange = abs(current) > _RAW_S16_MAX or abs(power) > _RAW_S16_MAX
        flags = {
            "MUX": mux,
            "METER_OK": 1,
            "COMM_ERROR": 0,
            "DATA_STALE": int(self._frozen is not None),
            "OVERRANGE": int(overrange),
        }
        if mux == 0:
            signals = {
                "VOLTAGE_0p1V": min(round(reading.voltage_v * 10), 0xFFFF),
                "CURRENT_0p01A": max(-_RAW_S16_MAX, min(current, _RAW_S16_MAX)),
                "ACTIVE_POWER_0p01kW": max(-_RAW_S16_MAX, min(power, _RAW_S16_MAX)),
            }
        else:
            # A register never shows energy not yet delivered: floor, not round.
            signals = {"IMPORT_ENERGY_0p1kWh": int(reading.energy_wh // 100), "FREQ_0p01Hz": 0}
        self._send("EnergyMeterData", {**flags, **signals})

    def _send_session(self, ev: EvModel) -> None:
        self._advance()
        self._send(
            "ChargingSession",
            {
                "SESSION_ACTIVE": 1,
                "SOC_PCT": min(100, math.floor(self._soc)),
                "EVDC_MAX_CURRENT_0p1A": min(round(ev.max_current_a * 10), 0xFFFF),
                "EVDC_MAX_VOLTAGE_0p1V": round(battery_voltage(100.0) * 10),
                "EVDC_TARGET_CURRENT_0p1A": (
                    min(round(ev.max_current_a * 10), 0xFFFF) if self._requesting() else 0
                ),
            },
        )

    def _send(self, message: str, signals: Mapping[str, int]) -> None:
        if self._silent:
            return
        can_id, data = codec.encode(message, self._plc_id, signals, scaling=False)
        if self._corrupt_next:
            self._corrupt_next = False
            good = data[7]
            bad = (good + 1) & 0xFF or 2  # wrong and non-zero (zero would mean "no CRC")
            data = data[:7] + bytes([bad])
        try:
            self._bus.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=True))
        except can.CanError:
            self._bump("tx_errors")
        else:
            self._bump("tx_frames")

    # --- EV and meter ---------------------------------------------------------------------

    def _require_running(self) -> None:
        if self._nursery is None:
            raise RuntimeError(f"PLC {self._plc_id} emulator is not running")

    def _bump(self, field: str) -> None:
        self._counts[field] += 1

    def _requesting(self) -> bool:
        ev = self._ev
        return ev is not None and not self._ev_suspended and self._soc < ev.target_soc

    def _flow(self) -> tuple[EvModel, float, float] | None:
        """(EV, constant current, power cap) while energy flows at all."""
        ev = self._ev
        if ev is None or not self._contacts_closed() or not self._requesting():
            return None
        amps = min(ev.max_current_a, self._current_limit_a, self._config.max_current_a)
        watts = min(self._power_limit_w, self._config.max_power_w)
        return (ev, amps, watts) if amps > 0 and watts > 0 else None

    def _advance(self) -> None:
        """Bring the SoC and the register up to trio's current time (closed form, so the
        result does not depend on how often anyone looks). Call before any change of the
        relay, the limits or the EV."""
        now = trio.current_time()
        flow = self._flow()
        if flow is not None and self._updated_at is not None:
            ev, amps, watts = flow
            elapsed = now - self._updated_at
            full = seconds_to_soc(self._soc, ev.target_soc, amps, watts, ev.capacity_wh)
            if elapsed >= full:
                soc = ev.target_soc
            else:
                soc = min(soc_after(self._soc, elapsed, amps, watts, ev.capacity_wh), ev.target_soc)
            self._energy_wh += (soc - self._soc) * ev.capacity_wh / 100.0
            self._soc = soc
        self._updated_at = now

    def _live_reading(self) -> MeterReading:
        soc = self._soc if self._ev is not None else None
        flow = self._flow()
        if flow is None:
            return MeterReading(
                energy_wh=self._energy_wh, power_w=0.0, current_a=0.0, voltage_v=0.0, soc=soc
            )
        _, amps, watts = flow
        volts = battery_voltage(self._soc)
        amps = min(amps, watts / volts)
        return MeterReading(
            energy_wh=self._energy_wh,
            power_w=volts * amps,
            current_a=amps,
            voltage_v=volts,
            soc=soc,
        )
