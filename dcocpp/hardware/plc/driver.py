"""The host side of the PLC CAN contract: `PlcBackend` implements `HardwareBackend` on a
python-can bus, one PLC (plcId) per gun, all PLCs on one bus.

`run` opens the bus with `bus_factory` and owns it until it ends. It starts:

- one reader, which decodes PLC -> host frames (codec + CRC8; a frame without CRC is dropped
  from a PLC that has sent CRCs, see `PlcGun._check_crc`) into per-gun state and hardware
  events; a frame that repeats the last one of its id from a healthy gun is not decoded (see
  `PlcGun._repeat`). On a bus with a file descriptor (socketcan, `SelectableVirtualBus`) it
  waits with `trio.lowlevel.wait_readable` and drains with `bus.recv(0)`, a busy bus in
  batches (`RX_GATHER_S`); a bus without one (python-can's plain `virtual`) can only be read by
  blocking in `recv`, so a `can.Notifier` thread hands the frames to trio through
  `TrioToken.run_sync_soon` into a bounded channel (the thread is ours to stop and join, so
  none is left when `run` ends);
- one writer for all PLCs: a RelayControl keep-alive to each every `keepalive` (the PLC opens
  its relays after ~300 ms without one); a new command (or FORCE_ALL_OFF) is sent at once by
  the task that makes it, so a safety trip read by the reader is on the bus before the reader
  handles another frame;
- one supervisor for all guns, which turns silence (no frame for `rx_timeout`, no fresh meter
  data for `meter_stale`) into COMMUNICATION / METER faults and clears them when data comes
  back, and a relay reported otherwise than commanded into POWER_SWITCH with FORCE_ALL_OFF
  (`PlcGun._judge_relay`, also judged at every RelayStatus).

The PLC's word is checked against physics and the command: a meter register that goes back or
rises faster than the gun's rating allows, or a meter over range, is not believed (METER, see
`PlcGun._on_meter` and `registercheck`).

A bus error (the bus cannot be opened, e.g. its interface is not up yet; the reader's `recv`
fails; or `TX_ERRORS_BEFORE_REOPEN` sends in a row raise `can.CanError`) does not end `run`:
every gun gets a COMMUNICATION fault "CAN bus error: ...",
the bus is shut down and reopened through `bus_factory` after a backoff (0.1 s doubling up to
5 s while reopening fails or the reopened bus delivers nothing); the first frame from a PLC
clears its fault. One exception: when the very first open raises `CanBusNotFound` (the channel
or the interface type does not exist on this machine, a configuration or installation error
that no retry mends), `run` raises it before it has started. Later, the same error (a USB
adapter unplugged) is a bus error like any other.

Parameters (ConfigCmd) are set and read with `PlcGun.configure` / `read_config`, which wait for
the PLC's ConfigAck; one ConfigCmd is in flight per PLC.

Events are delivered with `await send`; the station hands over channels that never make it wait
(`hardware.events.CoalescingChannel`: what a busy connector cannot take yet is held, coalesced),
so a slow connector holds back neither the reader, and with it every gun's safety frames, nor
the keep-alive writers, which never wait on event channels: it cannot make a PLC's watchdog
trip. A safety trip is acted on here, before any event is sent (see `_on_safety`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs
import can
import trio
from can.typechecking import CanFilter

from dcocpp.config import ConnectorConfig
from dcocpp.hardware.interface import (
    CablePlugged,
    CableUnplugged,
    EvDemand,
    EventChannel,
    FaultCleared,
    FaultKind,
    FaultRaised,
    GunStatus,
    HardwareError,
    HardwareEvent,
    MeterReading,
    RelayState,
)
from dcocpp.hardware.plc import codec
from dcocpp.hardware.plc.bridge import BusReadError, read_frames
from dcocpp.hardware.registercheck import RegisterGuard

if TYPE_CHECKING:
    from dcocpp.hardware.interface import GunHardware, HardwareBackend

__all__ = ["PlcBackend", "PlcDriverError", "PlcGun", "PlcStats"]

log = logging.getLogger(__name__)

_PLC_TO_HOST = (
    "RelayStatus",
    "SafetySwitchStatus",
    "EnergyMeterData",
    "ConfigAck",
    "CpStatus",
    "ChargingSession",
)
# Relay commands: each attempt waits ACK_TIMEOUT for LAST_CMD_SEQ_APPLIED, the k-th retry
# waits BACKOFF * 2**(k-1) first; after ATTEMPTS the driver forces all off (1.05 s in all).
ACK_TIMEOUT = 0.3
ATTEMPTS = 3
BACKOFF = 0.05
# A busy bus is read in batches: after a burst the reader looks again this much later, so
# 954 frames/s cost ~500 wake-ups, not 954 (each costs as much as decoding several frames).
# It bounds the added latency of a frame (an emergency stop included) under load.
RX_GATHER_S = 0.002
TX_ERRORS_BEFORE_REOPEN = 3  # consecutive failed sends that count as a bus error
TRIP_LOG_WINDOW = 10.0  # a safety trip is a WARNING at most once per this (see _say_trip)
REOPEN_MIN_S = 0.1  # first reopen delay after a bus error; doubles while reopening fails
REOPEN_MAX_S = 5.0
# What the driver waits for from each PLC before `run` reports started: the relay, the cable,
# and both meter branches (a transaction must not start on a meter register nobody has read).
_FIRST_FRAMES = {"RelayStatus", "CpStatus", "EnergyMeterData0", "EnergyMeterData1"}
_PARAM_CURRENT_LIMIT = 1
_CFG_GET = 0
_CFG_SET = 1
_S32_MIN = -(2**31)
_S32_MAX = 2**31 - 1
_ACK_OK = 0
_ACK_STATUS = {1: "unknown param", 2: "out of range", 3: "read-only"}

# FAULT_REASON values that mean the link to the host failed, as the PLC sees it.
_COMM_REASONS = {1: "relay control timeout", 2: "bus off", 3: "CRC failure"}
_FAULT_RELAY_MISMATCH = 7
_REMOTE_FORCE_OFF = 6


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


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _next_tick(start: float, period: float, now: float) -> float:
    """The first time `start` + k * `period` after `now` (ticks missed by a late task are
    skipped, not caught up)."""
    k = math.floor((now - start) / period) + 1
    # (now - start) / period can round down below a whole k when `now` is a tick itself.
    # Always start + k * period, so every caller gets the very same float for a tick.
    while start + k * period <= now:
        k += 1
    return start + k * period


class PlcDriverError(HardwareError):
    """The PLC driver's failures (relay not confirmed, gun not running, bus unusable)."""


class CanBusNotFound(PlcDriverError):
    """Raised by a `bus_factory`: the bus's channel or interface type does not exist here."""


@attrs.frozen
class PlcStats:
    rx_frames: int = 0  # frames from a configured PLC, handled (repeats included)
    # of those, frames identical to the last one of their id from a healthy gun: not decoded
    repeats: int = 0
    ignored: int = 0  # from an unconfigured plcId, or not a PLC -> host message
    # wrong non-zero CRC byte, or no CRC from a PLC that has sent CRCs before: dropped
    crc_errors: int = 0
    decode_errors: int = 0  # unknown id, bad DLC, ...: dropped
    rx_overruns: int = 0  # frames lost because trio fell RX_QUEUE frames behind the thread
    tx_frames: int = 0
    tx_errors: int = 0  # bus.send raised can.CanError


@attrs.define
class _ConfigWaiter:
    param: int
    op: int
    requested: int  # the value of a SET
    done: trio.Event = attrs.Factory(trio.Event)
    status: int = 0
    value: int = 0


class _SafetyInput:
    """A safety bit as the host believes it: fail-safe, so it trips on the first frame that
    reports it (the PLC has debounced its input already, and a spurious trip only opens a
    relay) and is released only once `frames` consecutive frames report it gone, so that one
    glitching frame cannot re-enable a relay."""

    def __init__(self, frames: int):
        self._frames = frames
        self.value = False
        self._clear_count = 0

    def feed(self, value: bool) -> bool:
        """Feed one frame's value; True when the accepted value changed."""
        if value:
            self._clear_count = 0
            if not self.value:
                self.value = True
                return True
            return False
        if self.value:
            self._clear_count += 1
            if self._clear_count >= self._frames:
                self.value = False
                self._clear_count = 0
                return True
        return False


class PlcGun:
    """One gun behind its PLC (implements `GunHardware`). Commands work while the backend runs
    and raise PlcDriverError otherwise."""

    def __init__(self, backend: PlcBackend, config: ConnectorConfig):
        self._backend = backend
        self.config = config
        self.plc_id = config.plc_id
        self._events: EventChannel | None = None
        self._running = False

        # RelayControl: what the writer repeats. seq 0 is never used: a freshly started PLC
        # reports LAST_CMD_SEQ_APPLIED 0, which must not look like an acknowledgement.
        self._seq = 1
        self._relay_cmd = False
        self._force_off = False
        # A safety trip not on the bus yet (its immediate send failed): FORCE_ALL_OFF stays in
        # the keep-alives until one carrying it went out, even if the input was released.
        self._trip_unsent = False
        # Logging of trips (see _say_trip): quiet until then, the trips not said yet.
        self._trip_quiet_until = -math.inf
        self._trips_unsaid = 0
        # The last RelayControl encoded: keep-alives repeat it without encoding again.
        self._encoded: tuple[tuple[int, ...], bytes] | None = None

        # what the PLC says: the relay's coil (RLY1_STATE) and auxiliary contact
        # (RLY1_FEEDBACK); it counts as closed when either says so (fail-safe).
        self._relay_state = False
        self._relay_feedback = False
        self._relay_closed = False
        # A relay reported otherwise than commanded: since when (None: it agrees, or a command
        # is being carried out, `_acking`), see `_judge_relay`.
        self._mismatch_since: float | None = None
        self._agreeing = 0  # RelayStatus frames in a row that agree, since a disagreement
        self._acking = 0
        self._plugged = False
        self._requesting = False
        self._last_applied: int | None = None
        self._status_changed = trio.Event()
        self._plc_fault_reason = 0
        self._plc_comm_fault = False
        # Fed by RelayStatus and SafetySwitchStatus alike (both carry the PLC's debounced
        # inputs); `_chain` is SAFETY_OK=0 for a reason that is neither (another switch).
        self._estop = _SafetyInput(backend._debounce_frames)
        self._earth = _SafetyInput(backend._debounce_frames)
        self._chain = _SafetyInput(backend._debounce_frames)
        self._last_rx = -math.inf
        self._last_fresh_meter = -math.inf
        self._voltage_v = 0.0
        self._current_a = 0.0
        self._power_w = 0.0
        self._energy_wh = 0.0
        # The register as believed: never one the gun's rating cannot explain (see
        # `registercheck`); why not believed now is a METER cause.
        self._register = RegisterGuard(config.max_power_w)
        # ChargingSession's word alone (each field here has one writer message, see
        # `_repeat`): the PLC reports SESSION_ACTIVE=0 once the EV is gone.
        self._session_soc: float | None = None

        # ConfigCmd: one in flight, answered by the ConfigAck with the same CFG_PARAM_ID.
        self._config_lock = trio.Lock()
        self._config_waiter: _ConfigWaiter | None = None

        # CRC: a zero CRC byte means "no CRC" (old firmware), but one frame in 256 really has
        # CRC 0. Once this PLC has sent a frame with a valid non-zero CRC byte it is known to
        # protect its frames, and a frame without CRC from it is dropped (see `_check_crc`).
        self._crc_protected = False
        self._crc_less_logged = False

        # Which frames have arrived at least once: until then the gun's state is unknown.
        self._seen: set[str] = set()
        self._known = trio.Event()

        self._faults: dict[FaultKind, str] = {}
        # Several causes feed one fault of a kind; it clears when none is left (`_cause`).
        self._comm_causes: dict[str, str] = {}
        self._meter_causes: dict[str, str] = {}  # stale data, a meter not believed
        self._switch_causes: dict[str, str] = {}  # the PLC's FAULT_REASON 7, our mismatch

        # The last accepted frame of each bus id (its bytes, whether it was fresh meter data,
        # and the register it reported), for the repeat fast path: see `_repeat`.
        self._last_frame: dict[int, tuple[bytes, bool, float | None]] = {}

    # --- GunHardware --------------------------------------------------------------------

    async def set_relay(self, closed: bool) -> None:
        """Command the relay and return once the PLC acknowledges this very command
        (LAST_CMD_SEQ_APPLIED == its CMD_SEQ) with RLY1_STATE == `closed`.

        Each attempt gets `ack_timeout`; a retry is a new command with a new seq (the PLC
        ignores a repeated seq as a keep-alive). After `attempts` failures the PLC is told
        FORCE_ALL_OFF (every relay open, closing refused until the next set_relay) and
        PlcDriverError is raised; the caller's own cancel scope may end it earlier."""
        self._require_running()
        # While it waits for acknowledgements, the relay is not judged against the command
        # (`_judge_relay`): each attempt has its own deadline, and the give-up its force-off.
        self._acking += 1
        try:
            await self._set_relay(closed)
        finally:
            self._acking -= 1

    async def _set_relay(self, closed: bool) -> None:
        backend = self._backend
        for attempt in range(1, backend._attempts + 1):
            if closed and self._safety_tripped():
                raise PlcDriverError(f"PLC {self.plc_id}: relay may not close: safety trip")
            seq = self._command(closed, force_off=False)
            with trio.move_on_after(backend._ack_timeout):
                await self._wait_ack(closed)
                return
            # DEBUG: the connector retries a failed command every few seconds; its
            # PowerSwitchFailure is logged once, with this error.
            log.debug(
                "PLC %d: relay %s not confirmed (seq %d, attempt %d/%d)",
                self.plc_id,
                "close" if closed else "open",
                seq,
                attempt,
                backend._attempts,
            )
            if attempt < backend._attempts:
                await trio.sleep(backend._backoff * 2 ** (attempt - 1))
        self._command(False, force_off=True)
        raise PlcDriverError(
            f"PLC {self.plc_id}: relay did not confirm "
            f"{'closed' if closed else 'open'} after {backend._attempts} attempts"
        )

    async def set_lock(self, locked: bool) -> None:
        """The CAN contract has no connector lock: on a DC gun the latch is the EV's (it locks
        the inlet itself under ISO 15118 / DIN 70121), so there is nothing to drive here."""
        self._require_running()

    def set_current_limit(self, amps: float) -> None:
        """ConfigCmd SET CURRENT_LIMIT_0p1A. Synchronous (the GunHardware contract): the
        `configure` call runs in the backend's nursery and a failure (refused, no ack) is
        logged as a warning."""
        self._require_running()
        nursery = self._backend._nursery
        if nursery is None:
            raise PlcDriverError(f"PLC {self.plc_id}: backend not running")
        raw = max(0, min(round(amps * 10), _S32_MAX))
        nursery.start_soon(self._apply_current_limit, raw)

    async def _apply_current_limit(self, raw: int) -> None:
        try:
            await self.configure(_PARAM_CURRENT_LIMIT, raw)
        except PlcDriverError as exc:
            log.warning("PLC %d: current limit %d x 0.1 A not applied: %s", self.plc_id, raw, exc)

    # --- parameters (ConfigCmd / ConfigAck) -----------------------------------------------

    async def configure(self, param: int, value: int) -> int:
        """SET parameter `param` to `value` (raw units, see the README); returns the value the
        PLC acknowledged. PlcDriverError when the PLC refuses it (unknown param, out of range,
        read-only) or no ConfigAck arrives within `config_timeout`."""
        return await self._config(param, _CFG_SET, value)

    async def read_config(self, param: int) -> int:
        """GET parameter `param`; the PLC's value. PlcDriverError as for `configure`."""
        return await self._config(param, _CFG_GET, 0)

    async def _config(self, param: int, op: int, value: int) -> int:
        self._require_running()
        if not 0 <= param <= 255 or not _S32_MIN <= value <= _S32_MAX:
            raise PlcDriverError(f"PLC {self.plc_id}: param {param} / value {value} out of range")
        what = f"{'set' if op == _CFG_SET else 'get'} param {param}"
        timeout = self._backend._config_timeout
        async with self._config_lock:
            waiter = _ConfigWaiter(param, op, value)
            self._config_waiter = waiter
            try:
                self._backend._send(
                    "ConfigCmd",
                    self.plc_id,
                    {"CFG_PARAM_ID": param, "CFG_OP": op, "CFG_VALUE": value},
                )
                with trio.move_on_after(timeout):
                    await waiter.done.wait()
            finally:
                self._config_waiter = None
        if not waiter.done.is_set():
            raise PlcDriverError(f"PLC {self.plc_id}: no ConfigAck for {what} within {timeout} s")
        if waiter.status != _ACK_OK:
            status = _ACK_STATUS.get(waiter.status, f"status {waiter.status}")
            raise PlcDriverError(f"PLC {self.plc_id}: {what} refused: {status}")
        return waiter.value

    def read_meter(self) -> MeterReading:
        """The last fresh values the meter reported within its range (no current or power
        once the relay is open while the meter is over range), and the register as believed
        (see `_on_meter`)."""
        return MeterReading(
            energy_wh=self._energy_wh,
            power_w=self._power_w,
            current_a=self._current_a,
            voltage_v=self._voltage_v,
            soc=self._session_soc,
        )

    def surviving_register_wh(self) -> float | None:
        """The EnergyMeterData IMPORT_ENERGY register this PLC's meter reported (valid data,
        as believed), which a controller crash does not reset; None until it has reported
        one."""
        return self._register.energy_wh

    def status(self) -> GunStatus:
        return GunStatus(
            plugged=self._plugged,
            ev_requesting=self._requesting,
            relay_closed=self._relay_closed,
            faults=tuple(self._faults.items()),
        )

    # --- commands -----------------------------------------------------------------------

    def _require_running(self) -> None:
        if not self._running:
            raise PlcDriverError(f"PLC {self.plc_id}: backend not running")

    def _command(self, closed: bool, *, force_off: bool) -> int:
        """A new command: next seq (1..255, wrapping past 0), sent at once (`_send_now`)."""
        self._seq = self._seq % 255 + 1
        self._relay_cmd = closed
        self._force_off = force_off
        self._mismatch_since = None  # the PLC gets a full ack_timeout for the new command
        self._send_now()
        return self._seq

    def _send_now(self) -> None:
        """RelayControl to this PLC at once (a new command, or FORCE_ALL_OFF changed), sent
        by the task that decided it: a safety trip read in a batch of frames is on the bus
        before the next frame is handled, even one that releases it."""
        backend = self._backend
        if backend._bus is not None:  # else the next keep-alive on the reopened bus has it
            backend._send_relay_control(self)

    async def _wait_ack(self, closed: bool) -> None:
        # The newest command must be applied: an ack of an older one (stale) never matches.
        # A newer command to the same state counts (a safety trip's FORCE_ALL_OFF confirms
        # an open that was waiting); one to the other state leaves this wait to time out.
        while not (
            self._last_applied == self._seq
            and self._relay_cmd == closed
            and self._relay_state == closed
            and self._relay_feedback == closed
        ):
            await self._status_changed.wait()

    def _relay_control(self) -> dict[str, int]:
        return {
            "RLY1_CMD": int(self._relay_cmd),
            "SYS_ENABLE": 1,
            "FORCE_ALL_OFF": int(
                self._force_off
                or self._safety_tripped()
                or self._trip_unsent
                or "feedback" in self._switch_causes
            ),
            "CLEAR_FAULTS": int(self._should_clear()),
            "CMD_SEQ": self._seq,
            "RLY_ENABLE_MASK": 1,
            "RLY_MODE": 0,
            "PULSE_MS": 0,
        }

    def _should_clear(self) -> bool:
        """CLEAR_FAULTS when the PLC still latches a fault whose cause is gone as far as we
        can tell: it then unlatches (it never closes a relay by itself, so this is safe)."""
        latched = self._plc_comm_fault or self._plc_fault_reason not in (0, _REMOTE_FORCE_OFF)
        return latched and not self._safety_tripped()

    def _safety_tripped(self) -> bool:
        return self._estop.value or self._earth.value or self._chain.value

    # --- what the PLC says ----------------------------------------------------------------

    def _check_crc(self, decoded: codec.Decoded, crc_byte: int) -> bool:
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

    def _on_frame(self, decoded: codec.Decoded, now: float) -> list[HardwareEvent]:
        events: list[HardwareEvent] = []
        self._last_rx = now
        if "rx" in self._comm_causes or "bus" in self._comm_causes:
            # The PLC talks again: its meter gets a full meter_stale to report before it is
            # called stale (the silence was the link's fault, already reported).
            self._last_fresh_meter = max(self._last_fresh_meter, now)
        self._comm_causes.pop("bus", None)  # frames flow again
        events += self._comm_cause("rx", None)
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
                        events += self._cause(FaultKind.METER, self._meter_causes, "stale", None)
                    self._on_meter(s, now, events)
            case "SafetySwitchStatus":
                self._on_safety(
                    events,
                    estop=bool(s["ESTOP"]),
                    earth=bool(s["EARTH_FAULT"]),
                    chain=not s["SAFETY_OK"] and not s["ESTOP"] and not s["EARTH_FAULT"],
                    switches=int(s["SW_STATES"]) & int(s["SW_MASK"]),
                )
            case "ChargingSession":
                self._session_soc = float(s["SOC_PCT"]) if s["SESSION_ACTIVE"] else None
            case "ConfigAck":
                param, status, value = (
                    int(s["CFG_PARAM_ID"]),
                    int(s["ACK_STATUS"]),
                    int(s["CFG_VALUE"]),
                )
                log.debug(  # every ack, solicited or not: routine, and a bus may repeat it
                    "PLC %d: ConfigAck param %d status %d value %d",
                    self.plc_id,
                    param,
                    status,
                    value,
                )
                waiter = self._config_waiter
                if waiter is not None and waiter.param == param and not waiter.done.is_set():
                    if waiter.op == _CFG_SET and status == _ACK_OK and value != waiter.requested:
                        # A SET that took effect echoes its value: this one answers an
                        # earlier request (one that timed out), not the one waiting.
                        log.debug(
                            "PLC %d: ConfigAck of an earlier set of param %d ignored",
                            self.plc_id,
                            param,
                        )
                    else:
                        waiter.status, waiter.value = status, value
                        waiter.done.set()
        return events

    def _on_meter(
        self, s: Mapping[str, float | int], now: float, events: list[HardwareEvent]
    ) -> None:
        """Fresh meter data. The meter is believed only where physics allows: with
        OVERRANGE (the contract's ranges are ±327.67 A / kW, far above any gun's rating)
        nothing of the frame is taken, and a register is taken only as `RegisterGuard`
        believes it; the meter not believed is a METER fault ("PLC n: meter ...")."""
        register = self._register
        if s["OVERRANGE"]:
            register.distrust("meter over range (OVERRANGE)")
            if not self._relay_closed:
                # Nothing flows through an open relay: the last values taken in range (of
                # the session the fault stopped) would be shown on a faulted, idle gun.
                self._current_a = self._power_w = 0.0
        elif s["MUX"] == 0:
            # Raw integers: exact units without float artifacts of the scaled decode.
            self._voltage_v = int(s["VOLTAGE_0p1V"]) / 10
            self._current_a = int(s["CURRENT_0p01A"]) / 100
            self._power_w = int(s["ACTIVE_POWER_0p01kW"]) * 10.0
            self._saw("EnergyMeterData0")
        elif s["MUX"] == 1:
            register.feed(int(s["IMPORT_ENERGY_0p1kWh"]) * 100.0, now)
            if register.energy_wh is not None:
                self._energy_wh = register.energy_wh
            self._saw("EnergyMeterData1")
        doubt = register.doubt
        if doubt is not None or "doubt" in self._meter_causes:
            if doubt is None:
                log.info(
                    "PLC %d: meter consistent again, register believed at %.0f Wh",
                    self.plc_id,
                    self._energy_wh,
                )
            events += self._cause(
                FaultKind.METER,
                self._meter_causes,
                "doubt",
                None if doubt is None else f"PLC {self.plc_id}: {doubt}",
            )

    def _healthy(self) -> bool:
        # A relay reported otherwise than commanded is judged by every frame (`_repeat`).
        return not (
            self._faults
            or self._comm_causes
            or self._safety_tripped()
            or self._relay_state != self._relay_cmd
            or self._relay_feedback != self._relay_cmd
            or self._mismatch_since is not None
        )

    def _repeat(self, can_id: int, data: bytes, now: float) -> bool:
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
        allowed to send, see `_check_crc`). tests/test_plc_repeats.py checks all this
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
                # The same register, later: it bounds the next rise closer (`RegisterRun`).
                self._register.feed(last[2], now)
        return True

    def _remember(self, can_id: int, data: bytes, decoded: codec.Decoded) -> None:
        """Keep a frame just handled for `_repeat`; one that may not be kept still replaces
        the kept one (the next frame equal to that is then no repeat of the latest state)."""
        if (
            decoded.message == "ConfigAck"
            or data[codec.FRAME_LENGTH - 1] == 0
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
        if not self._known.is_set():
            self._seen.add(what)
            if self._seen >= _FIRST_FRAMES:
                self._known.set()

    def _on_relay_status(
        self, s: Mapping[str, float | int], now: float, events: list[HardwareEvent]
    ) -> None:
        # Safety first: a relay opened by an interlock is reported after the interlock, so
        # the connector knows why it opened.
        self._on_safety(
            events,
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
        events += self._comm_cause("plc", comm)
        events += self._cause(
            FaultKind.POWER_SWITCH,
            self._switch_causes,
            "plc",
            f"PLC {self.plc_id}: relay feedback mismatch"
            if reason == _FAULT_RELAY_MISMATCH
            else None,
        )
        events += self._judge_relay(now, frame=True)
        # Wake set_relay waiters; a fresh Event so the next wait blocks until the next frame.
        self._status_changed.set()
        self._status_changed = trio.Event()

    def _on_safety(
        self, events: list[HardwareEvent], *, estop: bool, earth: bool, chain: bool, switches: int
    ) -> None:
        """The safety inputs of one frame. A trip opens the relay from here, before any
        connector hears of it: the very next RelayControl (sent at once) carries
        FORCE_ALL_OFF, and keeps carrying it until every input is released."""
        was_tripped = self._safety_tripped()
        if self._earth.feed(earth):
            events += self._set_fault(
                FaultKind.EARTH_FAULT,
                f"PLC {self.plc_id}: earth fault" if self._earth.value else None,
            )
        # An open safety chain for another reason is reported as an emergency stop too.
        if self._estop.feed(estop) | self._chain.feed(chain):
            detail = None
            if self._estop.value:
                detail = f"PLC {self.plc_id}: emergency stop"
            elif self._chain.value:
                detail = f"PLC {self.plc_id}: safety chain open (switches 0x{switches:02x})"
            events += self._set_fault(FaultKind.EMERGENCY_STOP, detail)
        if self._safety_tripped() and not was_tripped:
            self._say_trip(trio.current_time())
            self._trip_unsent = True
            # FORCE_ALL_OFF follows the trip (see _relay_control); the command itself is an
            # open, so the relay stays open once the inputs are released. A force-off of a
            # set_relay that gave up stays until the next set_relay.
            self._command(False, force_off=self._force_off)

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

    def _supervise(self, now: float) -> list[HardwareEvent]:
        backend = self._backend
        events: list[HardwareEvent] = []
        if now - self._last_rx >= backend._rx_timeout:
            events += self._comm_cause("rx", f"PLC {self.plc_id} communication lost")
        # A silent PLC's meter is not reported stale on top: the link is the fault.
        if (
            now - self._last_fresh_meter >= backend._meter_stale
            and FaultKind.COMMUNICATION not in self._faults
        ):
            events += self._cause(FaultKind.METER, self._meter_causes, "stale", "meter data stale")
        events += self._judge_relay(now)
        return events

    def _judge_relay(self, now: float, *, frame: bool = False) -> list[HardwareEvent]:
        """The relay as the PLC reports it against the command. A disagreement that lasts
        `ack_timeout` is POWER_SWITCH, with FORCE_ALL_OFF while it lasts (`_relay_control`).
        It ends only after `debounce_frames` RelayStatus frames (`frame`) in a row agree, so
        a report that flaps cannot keep it from being raised, nor end it. Not judged while a
        `set_relay` waits for its acknowledgement (it has its own deadline and force-off),
        while the PLC is not heard (its report is old), nor for an open relay commanded
        closed while the PLC reports why it opened it (an interlock, its watchdog: those
        faults say so, and the connector commands it open)."""
        cmd = self._relay_cmd
        active = "feedback" in self._switch_causes
        if self._relay_state == cmd and self._relay_feedback == cmd:
            if not frame or (self._mismatch_since is None and not active):
                return []
            self._agreeing += 1
            if self._agreeing < self._backend._debounce_frames:
                return []
            self._mismatch_since = None
            return self._feedback_cause(None)
        self._agreeing = 0
        plc_opened_it = cmd and (
            self._plc_comm_fault
            or self._plc_fault_reason not in (0, _REMOTE_FORCE_OFF)
            or self._safety_tripped()
        )
        silent = "rx" in self._comm_causes or "bus" in self._comm_causes
        if self._acking or silent or plc_opened_it:
            self._mismatch_since = None
            return []
        if self._mismatch_since is None:
            self._mismatch_since = now
        if active or now - self._mismatch_since < self._backend._ack_timeout:
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
        self._send_now()  # FORCE_ALL_OFF follows the cause at once
        return self._cause(FaultKind.POWER_SWITCH, self._switch_causes, "feedback", detail)

    def _comm_cause(self, cause: str, detail: str | None) -> list[HardwareEvent]:
        return self._cause(FaultKind.COMMUNICATION, self._comm_causes, cause, detail)

    def _cause(
        self, kind: FaultKind, causes: dict[str, str], cause: str, detail: str | None
    ) -> list[HardwareEvent]:
        """One cause of the fault `kind` active (detail) or gone (None): the fault is raised
        with the first cause's detail and cleared when no cause is left."""
        if detail is None:
            causes.pop(cause, None)
        else:
            causes.setdefault(cause, detail)
        first = next(iter(causes.values()), None)
        if first is None or kind not in self._faults:
            return self._set_fault(kind, first)
        return []

    def _set_fault(self, kind: FaultKind, detail: str | None) -> list[HardwareEvent]:
        """Record a fault as active (detail) or gone (None); the event only on a change."""
        if detail is None:
            if self._faults.pop(kind, None) is None:
                return []
            return [FaultCleared(kind)]
        if kind in self._faults:
            return []
        self._faults[kind] = detail
        return [FaultRaised(kind, detail)]

    async def _emit(self, events: list[HardwareEvent]) -> None:
        channel = self._events
        for event in events:
            if channel is None:
                return
            try:
                await channel.send(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The connector is gone (shutting down): nobody to tell.
                self._events = channel = None


class PlcBackend:
    """The charger's guns behind their PLCs on one CAN bus (implements `HardwareBackend`).

    `bus_factory` opens the bus (e.g. `lambda: can.Bus(interface="socketcan", channel="can0")`);
    `run` owns it and shuts it down when it ends. `bus_name` names it in log lines (its
    channel and interface type)."""

    def __init__(
        self,
        connectors: Sequence[ConnectorConfig],
        *,
        bus_factory: Callable[[], can.BusABC],
        keepalive: float = 0.1,
        ack_timeout: float = ACK_TIMEOUT,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        rx_timeout: float = 1.0,
        meter_stale: float = 2.0,
        debounce_frames: int = 2,
        config_timeout: float = 0.5,
        bus_name: str = "the CAN bus",
    ):
        if attempts < 1 or debounce_frames < 1:
            raise ValueError("attempts and debounce_frames must be >= 1")
        if min(keepalive, ack_timeout, rx_timeout, meter_stale, config_timeout) <= 0 or backoff < 0:
            raise ValueError("periods and timeouts must be > 0, backoff >= 0")
        self._bus_factory = bus_factory
        self._keepalive = keepalive
        self._ack_timeout = ack_timeout
        self._attempts = attempts
        self._backoff = backoff
        self._rx_timeout = rx_timeout
        self._meter_stale = meter_stale
        self._debounce_frames = debounce_frames
        self._config_timeout = config_timeout
        self._guns: dict[int, PlcGun] = {}
        self._by_plc: dict[int, PlcGun] = {}
        for config in connectors:
            if config.id in self._guns:
                raise ValueError(f"connector {config.id} configured twice")
            if config.plc_id in self._by_plc:
                raise ValueError(f"plcId {config.plc_id} used by two connectors")
            codec.frame_id("RelayControl", config.plc_id)  # validates the range
            gun = PlcGun(self, config)
            self._guns[config.id] = gun
            self._by_plc[config.plc_id] = gun
        self._bus: can.BusABC | None = None
        self._nursery: trio.Nursery | None = None
        self._bus_failed = trio.Event()
        self._bus_error: str | None = None
        self._bus_name = bus_name
        # Why the bus last failed, until it works again (see `_bus_progress`): its state
        # changes are logged, not every reopen.
        self._bus_trouble: str | None = None
        self._bus_heard = self._bus_sent = False
        self._tx_error_streak = 0
        # Counted in a plain dict (the hot path); `stats` is a frozen snapshot of it.
        self._counts = dict.fromkeys(attrs.fields_dict(PlcStats), 0)
        self._running = False

    @property
    def stats(self) -> PlcStats:
        return PlcStats(**self._counts)

    def counters(self) -> Mapping[str, int]:
        """`stats` by camelCase name (`HardwareBackend.counters`)."""
        return {_camel(name): value for name, value in self._counts.items()}

    def gun(self, connector_id: int) -> PlcGun:
        try:
            return self._guns[connector_id]
        except KeyError:
            raise KeyError(f"no connector {connector_id}") from None

    async def run(
        self,
        events: Mapping[int, EventChannel],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Open the bus, start the reader, the keep-alive writers and the supervisors;
        `task_status.started()` once every PLC has reported its relay, cable and meter (or
        `rx_timeout` has passed: a PLC that did not is then faulted). Runs until
        cancelled; a bus error later on is reported as COMMUNICATION faults and the bus is
        reopened (see the module docstring), and so is a bus that cannot be opened at first,
        unless it does not exist (then `CanBusNotFound` is raised). Raises KeyError for an
        unknown connector id, RuntimeError if already running. Always stops the reader
        thread, shuts the bus down and closes the given channels."""
        try:
            if self._running:
                raise RuntimeError("PLC backend already running")
            for connector_id in events:
                self.gun(connector_id)
            self._running = True
            try:
                async with trio.open_nursery() as nursery:
                    now = trio.current_time()
                    for gun in self._guns.values():
                        # Silence is measured from start: a PLC that never talks is a fault.
                        gun._last_rx = gun._last_fresh_meter = now
                        gun._events = events.get(gun.config.id)
                        gun._running = True
                    self._nursery = nursery
                    await nursery.start(self._bus_loop)
                    # One writer and one supervisor for all PLCs: a wake-up per period, not
                    # one per PLC (16 PLCs would mean 320 wake-ups a second); both on one
                    # time grid from `now`, so that with equal periods they share a wake-up.
                    nursery.start_soon(self._write_loop, now)
                    nursery.start_soon(self._supervise_loop, now)
                    # The guns' physical state first (a silent PLC is reported by its
                    # supervisor once rx_timeout has passed, so the wait is bounded by it).
                    with trio.move_on_after(self._rx_timeout):
                        for gun in self._guns.values():
                            await gun._known.wait()
                    task_status.started()
            finally:
                self._nursery = None
                self._bus = None
                for gun in self._guns.values():
                    gun._running = False
                    gun._events = None
        finally:
            self._running = False
            # Synchronous close: an `await aclose()` would stop at the first one when cancelled.
            for channel in events.values():
                channel.close()

    # --- the bus ------------------------------------------------------------------------

    def _open_bus(self) -> can.BusABC:
        bus = self._bus_factory()
        try:
            bus.set_filters(acceptance_filters(self._by_plc))
        except BaseException:
            bus.shutdown()
            raise
        return bus

    async def _bus_loop(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Open and serve the bus; after a bus error (or when it cannot be opened, e.g. the
        interface is not up yet) report it on every gun and reopen it with backoff. Logged
        once per change, not per retry: WARNING (naming the bus) when it goes bad, INFO when
        it works again (`_bus_progress`), DEBUG for the reopening in between."""
        delay = REOPEN_MIN_S
        status = task_status
        bus, error = self._try_open_bus(first=True)
        while True:
            if bus is not None:
                error, flowed = await self._serve(bus, status)
                if flowed:
                    delay = REOPEN_MIN_S
            else:
                status.started()
            status = trio.TASK_STATUS_IGNORED
            if self._bus_trouble is None:
                log.warning(
                    "%s failed: %s; reopening it until frames arrive again", self._bus_name, error
                )
            else:
                log.debug("%s failed again: %s", self._bus_name, error)
            self._bus_trouble = error
            self._bus_heard = self._bus_sent = False
            for gun in self._guns.values():
                await gun._emit(gun._comm_cause("bus", f"CAN bus error: {error}"))
            while True:
                await trio.sleep(delay)
                delay = min(delay * 2, REOPEN_MAX_S)
                bus, error = self._try_open_bus()
                if bus is not None:
                    log.debug("%s reopened", self._bus_name)
                    break
                log.debug(
                    "reopening %s failed: %s (next try in %.1f s)", self._bus_name, error, delay
                )

    def _bus_progress(self, *, heard: bool = False, sent: bool = False) -> None:
        """After a bus error: frames arrive and a send succeeded on the reopened bus, so it
        works again (logged once). Either alone is not enough: a bus whose sends keep failing
        would be "back" at every reopen."""
        self._bus_heard |= heard
        self._bus_sent |= sent
        if self._bus_heard and self._bus_sent:
            log.info("%s works again (it had failed: %s)", self._bus_name, self._bus_trouble)
            self._bus_trouble = None

    def _try_open_bus(self, *, first: bool = False) -> tuple[can.BusABC | None, str]:
        try:
            return self._open_bus(), ""
        except Exception as exc:  # whatever the interface raises: reported, retried
            if first and isinstance(exc, CanBusNotFound):
                raise  # at start: a bus that does not exist is not waited for
            return None, f"{type(exc).__name__}: {exc}"

    async def _serve(self, bus: can.BusABC, task_status: trio.TaskStatus[None]) -> tuple[str, bool]:
        """Read and send on `bus` until a bus error; always shuts it down. Returns the error
        and whether any PLC frame arrived on it."""
        self._bus_error = None
        self._bus_failed = failed = trio.Event()
        self._tx_error_streak = 0
        rx_before = self._counts["rx_frames"]
        try:
            async with trio.open_nursery() as nursery:
                self._bus = bus
                await nursery.start(self._read_loop, bus)
                task_status.started()
                await failed.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._bus = None
            bus.shutdown()
        return self._bus_error or "unknown", self._counts["rx_frames"] > rx_before

    def _fail_bus(self, error: str) -> None:
        """The current bus is unusable: the bus loop closes and reopens it."""
        if self._bus_error is None:
            self._bus_error = error
            self._bus_failed.set()

    # --- transmit -----------------------------------------------------------------------

    def _send(self, message: str, plc_id: int, signals: Mapping[str, int]) -> None:
        can_id, data = codec.encode(message, plc_id, signals, scaling=False)
        self._send_frame(can_id, data, plc_id)

    def _send_frame(self, can_id: int, data: bytes, plc_id: int) -> bool:
        """Whether the frame went out (a failure is counted and logged here)."""
        bus = self._bus
        if bus is None:
            raise PlcDriverError("PLC bus not open")
        try:
            bus.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=True))
        except can.CanError as exc:
            # Counted (txErrors in the status) and logged at DEBUG: a keep-alive fails ten
            # times a second on a bad bus. TX_ERRORS_BEFORE_REOPEN in a row are a bus error,
            # logged once; the PLC's watchdog and our rx timeout fault a lasting failure.
            self._bump("tx_errors")
            log.debug("PLC %d: sending %s failed: %s", plc_id, codec.message_of(can_id).name, exc)
            self._tx_error_streak += 1
            if self._tx_error_streak >= TX_ERRORS_BEFORE_REOPEN:
                self._fail_bus(f"{self._tx_error_streak} sends in a row failed: {exc}")
            return False
        self._tx_error_streak = 0
        self._bump("tx_frames")
        if self._bus_trouble is not None:
            self._bus_progress(sent=True)
        return True

    async def _write_loop(self, start: float) -> None:
        """RelayControl to every PLC every `keepalive` (at `start` + k * `keepalive`); a new
        command is sent at once by whoever made it (`PlcGun._send_now`)."""
        guns = list(self._guns.values())
        while True:
            if self._bus is not None:  # None while the bus is being reopened
                for gun in guns:
                    self._send_relay_control(gun)
            await trio.sleep_until(_next_tick(start, self._keepalive, trio.current_time()))

    def _send_relay_control(self, gun: PlcGun) -> None:
        signals = gun._relay_control()
        key = tuple(signals.values())
        if gun._encoded is None or gun._encoded[0] != key:
            # Encoded (and range-checked) once per change; keep-alives reuse the bytes.
            _, data = codec.encode("RelayControl", gun.plc_id, signals, scaling=False)
            gun._encoded = (key, data)
        if self._send_frame(
            codec.frame_id("RelayControl", gun.plc_id), gun._encoded[1], gun.plc_id
        ):
            gun._trip_unsent = False

    async def _supervise_loop(self, start: float) -> None:
        period = min(self._keepalive, self._rx_timeout / 4, self._meter_stale / 4)
        guns = list(self._guns.values())
        while True:
            await trio.sleep_until(_next_tick(start, period, trio.current_time()))
            now = trio.current_time()
            for gun in guns:
                await gun._emit(gun._supervise(now))

    # --- receive ------------------------------------------------------------------------

    async def _read_loop(
        self, bus: can.BusABC, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await read_frames(
                bus,
                self._on_message,
                on_overrun=lambda: self._bump("rx_overruns"),
                gather=RX_GATHER_S,
                task_status=task_status,
            )
        except BusReadError as exc:
            self._fail_bus(str(exc))

    async def _on_message(self, msg: can.Message) -> None:
        if self._bus_trouble is not None:
            self._bus_progress(heard=True)
        if msg.is_error_frame or msg.is_remote_frame or not msg.is_extended_id:
            self._bump("ignored")
            return
        gun = self._by_plc.get(msg.arbitration_id & codec.PLC_ID_MASK)
        data = bytes(msg.data)
        now = trio.current_time()
        if gun is not None and gun._repeat(msg.arbitration_id, data, now):
            # Only accepted PLC -> host frames are remembered: no need to look at the id.
            self._bump("rx_frames")
            self._bump("repeats")
            return
        try:
            name = codec.message_of(msg.arbitration_id).name
        except codec.PlcCodecError:
            name = None
        # Reached only where the bus cannot filter: another plcId, host -> PLC, or foreign.
        if gun is None or name not in _PLC_TO_HOST:
            self._bump("ignored")
            return
        self._bump("rx_frames")
        try:
            decoded = codec.decode(msg.arbitration_id, data, scaling=False)
        except codec.CrcError:
            self._bump("crc_errors")
            return
        except codec.PlcCodecError:
            self._bump("decode_errors")
            return
        if not gun._check_crc(decoded, data[codec.FRAME_LENGTH - 1]):
            self._bump("crc_errors")
            return
        events = gun._on_frame(decoded, now)
        gun._remember(msg.arbitration_id, data, decoded)
        await gun._emit(events)

    def _bump(self, field: str) -> None:
        self._counts[field] += 1


if TYPE_CHECKING:

    def _fits_the_contract(backend: PlcBackend) -> tuple[HardwareBackend, GunHardware]:
        return backend, backend.gun(1)
