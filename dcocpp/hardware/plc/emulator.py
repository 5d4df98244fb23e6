"""The relay/meter PLC's firmware, emulated on a python-can bus (one emulator per PLC, one gun).

`PlcEmulator` is the other end of the CAN contract in `dcocpp_plc.dbc` (see README.md, section
"Firmware behaviour"): it answers RelayControl and ConfigCmd for its plcId, sends the periodic
status frames, runs the RelayControl watchdog and the safety interlocks. What it sees behind its
relay, a plugged EV and the DC meter, is `emulator_ev.EmulatedEv`, charged with the EV model
`SimulatedHardware` uses too (`hardware/ev.py`), so a charge through the emulator reads like one
in `SimulatedHardware`. Everything is timed on trio's clock.

Receiving: `bridge.read_frames`, the same reader the driver uses (fd wait on buses that have one,
a joined Notifier thread otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs
import can
import trio

from dcocpp.config import ConnectorConfig
from dcocpp.hardware.ev import INITIAL_REGISTER_WH, REGISTER_STEP_WH, EvModel
from dcocpp.hardware.interface import HardwareError, MeterReading
from dcocpp.hardware.plc import codec
from dcocpp.hardware.plc.bridge import BusReadError, read_frames
from dcocpp.hardware.plc.emulator_ev import EmulatedEv
from dcocpp.hardware.plc.interlocks import FAULT_RELAY_TIMEOUT, DebouncedInput, Interlocks
from dcocpp.hardware.plc.parameters import (
    PARAM_CURRENT_LIMIT,
    PARAM_METER_PERIOD,
    PARAM_POWER_LIMIT,
    PARAM_RELAY_TIMEOUT,
    PARAM_VOLTAGE_LIMIT,
    Parameter,
    answer_config,
)

__all__ = [
    "DEBOUNCE_S",
    "PlcEmulator",
    "PlcEmulatorError",
    "PlcEmulatorStats",
    "PlcState",
]

DEBOUNCE_S = 0.020  # a safety input must be stable this long before SAFETY_OK follows it

_SW_MASK = 0b11  # switch input 0 = estop, input 1 = earth-fault monitor


class PlcEmulatorError(HardwareError):
    """The emulator's bus failed underneath it (the reader thread's exception is the cause)."""


@attrs.frozen
class PlcEmulatorStats:
    """What the emulated PLC counted on the bus (`PlcEmulator.stats`)."""

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
        self._counts = dict.fromkeys(attrs.fields_dict(PlcEmulatorStats), 0)

        # relay and host commands
        self._relay_closed = False
        self._last_applied: int | None = None  # reported as 0; any first seq is new
        self._move: tuple[int, trio.CancelScope] | None = None  # (seq, scope) of a pending move
        self._relay_stuck = False
        self._relay_welded = False
        # watchdog: armed by the first RelayControl (before it the relay is open anyway)
        self._last_control: float | None = None
        self._starved = False
        self._watchdog_scope: trio.CancelScope | None = None
        self._interlocks = Interlocks()
        # Safety inputs waiting to be stable for `debounce` (their debounce task's scope).
        self._settling: dict[DebouncedInput, trio.CancelScope] = {}

        # transmit
        self._silent = False
        self._corrupt_next = False
        self._tick = 0

        # EV and meter
        if initial_energy_wh is None:
            initial_energy_wh = INITIAL_REGISTER_WH + REGISTER_STEP_WH * plc_id
        self._ev = ev = EmulatedEv(connector, initial_energy_wh)

        # ConfigCmd: the current and power limits are what the EV may draw.
        self._voltage_limit_v = 1000.0
        self._parameters = {
            PARAM_CURRENT_LIMIT: Parameter(
                lambda: round(ev.current_limit_a * 10),
                lambda raw: ev.set_limits(trio.current_time(), current_a=raw / 10),
                0,
                math.floor(connector.max_current_a * 10),
            ),
            PARAM_POWER_LIMIT: Parameter(
                lambda: round(ev.power_limit_w),
                lambda raw: ev.set_limits(trio.current_time(), power_w=float(raw)),
                0,
                math.floor(connector.max_power_w),
            ),
            PARAM_RELAY_TIMEOUT: Parameter(
                lambda: round(self._watchdog * 1000), self._set_relay_timeout, 50, 60_000
            ),
            PARAM_METER_PERIOD: Parameter(lambda: round(self._period * 1000)),
            PARAM_VOLTAGE_LIMIT: Parameter(
                lambda: round(self._voltage_limit_v * 10),
                lambda raw: setattr(self, "_voltage_limit_v", raw / 10),
                0,
                65_535,
            ),
        }

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
                self._ev.start(trio.current_time())
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
        self._set_input(self._interlocks.estop, active)

    def set_earth_fault(self, active: bool) -> None:
        self._set_input(self._interlocks.earth, active)

    def set_meter_stale(self, active: bool) -> None:
        """DATA_STALE=1 and the meter values frozen; the energy keeps flowing underneath."""
        self._require_running()
        self._ev.set_stale(active, trio.current_time())

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
        self._relay_welded = active
        self._ev.set_contacts(self._contacts_closed(), trio.current_time())
        self._send_relay_status()

    def set_register(self, energy_wh: float) -> None:
        """The meter's import register jumps to `energy_wh` (a meter reset, replaced, or
        corrupting its register) and counts on from there."""
        self._require_running()
        self._ev.set_register(energy_wh, trio.current_time())

    def set_meter_overrange(self, active: bool) -> None:
        """The meter measures beyond its range (a shorted shunt, a runaway converter): MUX 0
        reports current and power saturated at +327.67 A / kW, both branches `OVERRANGE=1`."""
        self._require_running()
        self._ev.overrange = active

    def corrupt_next_crc(self) -> None:
        """The next frame sent carries a wrong, non-zero CRC byte."""
        self._corrupt_next = True

    def plug(self, ev: EvModel | None = None) -> None:
        self._require_running()
        if self._ev.plugged is not None:
            raise ValueError(f"PLC {self._plc_id}: already plugged")
        self._ev.plug(ev if ev is not None else EvModel(), trio.current_time())
        self._send_cp_status()  # a control pilot change is reported at once

    def unplug(self) -> None:
        self._require_running()
        if self._ev.plugged is None:
            raise ValueError(f"PLC {self._plc_id}: not plugged")
        now = trio.current_time()
        self._ev.unplug(now)
        self._send_cp_status()
        # The session is over: the host must not go on reporting the gone EV's SoC.
        self._send("ChargingSession", self._ev.session(now))

    def set_ev_suspended(self, suspended: bool) -> None:
        self._require_running()
        if self._ev.plugged is None:
            raise ValueError(f"PLC {self._plc_id}: no EV plugged")
        self._ev.set_suspended(suspended, trio.current_time())
        self._send_cp_status()

    @property
    def stats(self) -> PlcEmulatorStats:
        return PlcEmulatorStats(**self._counts)

    @property
    def state(self) -> PlcState:
        meter = self.read_meter()
        ev, interlocks = self._ev, self._interlocks
        return PlcState(
            plc_id=self._plc_id,
            relay_closed=self._relay_closed,
            last_cmd_seq_applied=self._last_applied or 0,
            safety_ok=interlocks.safety_ok,
            estop=interlocks.estop.stable,
            earth_fault=interlocks.earth.stable,
            comm_fault=interlocks.comm_fault,
            force_off_active=interlocks.force_off,
            fault_reason=interlocks.fault_reason,
            plugged=ev.plugged is not None,
            ev_requesting=ev.requesting,
            soc=ev.soc if ev.plugged is not None else None,
            current_limit_a=ev.current_limit_a,
            power_limit_w=ev.power_limit_w,
            meter=meter,
            meter_stale=ev.frozen is not None,
            meter_overrange=ev.overrange,
            silent=self._silent,
            relay_stuck=self._relay_stuck,
            relay_welded=self._relay_welded,
        )

    def read_meter(self) -> MeterReading:
        """What the meter reports now (frozen while stale)."""
        return self._ev.reading(trio.current_time() if self._ev.started else None)

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

        interlocks = self._interlocks
        interlocks.sys_enable = bool(signals["SYS_ENABLE"])
        interlocks.force_off = bool(signals["FORCE_ALL_OFF"])
        if signals["CLEAR_FAULTS"]:
            interlocks.clear_faults()
        if not interlocks.closing_allowed:
            self._open_relay()  # force-off / SYS_ENABLE=0 act at once, on any frame

        seq = int(signals["CMD_SEQ"])
        wanted = bool(signals["RLY1_CMD"]) and interlocks.sys_enable
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
            if self._relay_stuck or (closed and not self._interlocks.closing_allowed):
                return  # not applied: keep-alives repeating `seq` try again
            self._set_relay(closed)
            self._last_applied = seq
            self._send_relay_status()

    def _on_config_cmd(self, signals: Mapping[str, float | int]) -> None:
        param = int(signals["CFG_PARAM_ID"])
        status, reply = answer_config(
            self._parameters, param, int(signals["CFG_OP"]), int(signals["CFG_VALUE"])
        )
        self._send(
            "ConfigAck",
            {
                "CFG_PARAM_ID": param,
                "ACK_STATUS": status,
                "PLC_ID": self._plc_id,
                "CFG_VALUE": reply,
            },
        )

    def _set_relay_timeout(self, ms: int) -> None:
        self._watchdog = ms / 1000
        self._rearm_watchdog()

    def _count_overrun(self) -> None:
        self._bump("rx_overruns")

    # --- relay, watchdog, safety ----------------------------------------------------------

    def _set_relay(self, closed: bool) -> None:
        if closed == self._relay_closed:
            return
        self._relay_closed = closed
        self._ev.set_contacts(self._contacts_closed(), trio.current_time())
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
                self._interlocks.comm_fault = True
                self._interlocks.latch(FAULT_RELAY_TIMEOUT)
                self._open_relay()
                self._send_relay_status()

    def _set_input(self, which: DebouncedInput, active: bool) -> None:
        self._require_running()
        if active == which.raw:
            return
        which.raw = active
        if (settling := self._settling.get(which)) is not None:
            settling.cancel()  # the input bounced: its stable time starts again
        scope = self._settling[which] = trio.CancelScope()
        assert self._nursery is not None
        self._nursery.start_soon(self._debounce, which, scope)

    async def _debounce(self, which: DebouncedInput, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(self._debounce_s)
            self._settling.pop(which, None)
            if not self._interlocks.settle(which):
                return
            if which.stable:
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
        interlocks = self._interlocks
        self._send(
            "SafetySwitchStatus",
            {
                "SW_STATES": interlocks.switch_states,
                "ESTOP": int(interlocks.estop.stable),
                "SAFETY_OK": int(interlocks.safety_ok),
                "EARTH_FAULT": int(interlocks.earth.stable),
                "SW_MASK": _SW_MASK,
            },
        )
        self._send_cp_status()
        now = trio.current_time()
        self._send("EnergyMeterData", self._ev.meter_data(self._tick % 2, now))
        if self._ev.plugged is not None:
            self._send("ChargingSession", self._ev.session(now))

    def _send_cp_status(self) -> None:
        self._send("CpStatus", self._ev.cp_status())

    def _send_relay_status(self) -> None:
        interlocks = self._interlocks
        self._send(
            "RelayStatus",
            {
                "RLY1_STATE": int(self._relay_closed),
                "RLY1_FEEDBACK": int(self._contacts_closed()),
                "SAFETY_OK": int(interlocks.safety_ok),
                "EARTH_FAULT": int(interlocks.earth.stable),
                "ESTOP_INPUT": int(interlocks.estop.stable),
                "COMM_FAULT": int(interlocks.comm_fault),
                "FORCE_OFF_ACTIVE": int(interlocks.force_off),
                "SW_STATES": interlocks.switch_states,
                "FAULT_REASON": interlocks.fault_reason,
                "LAST_CMD_SEQ_APPLIED": self._last_applied or 0,
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

    def _require_running(self) -> None:
        if self._nursery is None:
            raise RuntimeError(f"PLC {self._plc_id} emulator is not running")

    def _bump(self, field: str) -> None:
        self._counts[field] += 1
