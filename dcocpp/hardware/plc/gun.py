"""One gun behind its PLC as a connector drives it (`PlcGun`, a `GunHardware`): the trio side
of one `PlcProtocol`. It makes the commands, sends them through the bus `PlcBackend` keeps open
(`Transmitter`) and waits, with deadlines and retries, for what the protocol reads in the
PLC's frames: the relay acknowledged, a ConfigAck. Its hardware events reach the connector
through `emit`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import trio

from dcocpp.concurrency import Pulse
from dcocpp.config import ConnectorConfig
from dcocpp.hardware.interface import (
    EventChannel,
    GunStatus,
    HardwareError,
    HardwareEvent,
    MeterReading,
)
from dcocpp.hardware.plc.parameters import (
    ACK_OK,
    ACK_STATUS,
    CFG_GET,
    CFG_SET,
    PARAM_CURRENT_LIMIT,
)
from dcocpp.hardware.plc.protocol import PlcProtocol

if TYPE_CHECKING:
    from dcocpp.hardware.interface import GunHardware

__all__ = ["ATTEMPTS", "BACKOFF", "PlcDriverError", "PlcGun", "Transmitter"]

log = logging.getLogger(__name__)

# Relay commands: each attempt waits ACK_TIMEOUT for LAST_CMD_SEQ_APPLIED, the k-th retry
# waits BACKOFF * 2**(k-1) first; after ATTEMPTS the driver forces all off (1.05 s in all).
ATTEMPTS = 3
BACKOFF = 0.05
_S32_MIN = -(2**31)
_S32_MAX = 2**31 - 1


class PlcDriverError(HardwareError):
    """The PLC driver's failures (relay not confirmed, gun not running, bus unusable)."""


class Transmitter(Protocol):
    """What a gun may do with the bus (`driver.BusPort`)."""

    def send(self, can_id: int, data: bytes, plc_id: int) -> bool:
        """Whether the frame went out; PlcDriverError when no bus is open."""
        ...

    def send_relay_control(self, plc: PlcProtocol) -> None:
        """The PLC's RelayControl at once, if a bus is open (else the next keep-alive on the
        reopened bus carries it)."""
        ...


class PlcGun:
    """One gun behind its PLC (implements `GunHardware`). Commands work while the backend runs
    (between `attach` and `detach`) and raise PlcDriverError otherwise."""

    def __init__(
        self,
        protocol: PlcProtocol,
        transmitter: Transmitter,
        *,
        ack_timeout: float,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        config_timeout: float,
    ):
        self.protocol = protocol
        self.config: ConnectorConfig = protocol.config
        self.plc_id = protocol.plc_id
        self._transmitter = transmitter
        self._ack_timeout = ack_timeout
        self._attempts = attempts
        self._backoff = backoff
        self._config_timeout = config_timeout
        self._events: EventChannel | None = None
        self._nursery: trio.Nursery | None = None
        # Tasks waiting for the protocol's state (`_until`), woken by `notify`.
        self._changed = Pulse()
        self._waiting = 0
        self._config_lock = trio.Lock()  # one ConfigCmd in flight

    # --- lifetime (the backend's) -------------------------------------------------------------

    def attach(self, events: EventChannel | None, nursery: trio.Nursery) -> None:
        """The backend runs: events go to `events`; background work (`set_current_limit`) runs
        in `nursery`."""
        self._events, self._nursery = events, nursery

    def detach(self) -> None:
        self._events = self._nursery = None

    def notify(self) -> None:
        """The protocol handled a frame: whoever waits for its state looks again."""
        if self._waiting:
            self._changed.fire()

    async def until_known(self) -> None:
        """Until the PLC has reported its relay, cable and meter (`PlcProtocol.known`)."""
        await self._until(lambda: self.protocol.known)

    async def emit(self, events: Iterable[HardwareEvent]) -> None:
        """Hand events to the connector (none once it is gone)."""
        channel = self._events
        for event in events:
            if channel is None:
                return
            try:
                await channel.send(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The connector is gone (shutting down): nobody to tell.
                self._events = channel = None

    async def _until(self, condition: Callable[[], bool]) -> None:
        self._waiting += 1
        try:
            while not condition():
                await self._changed.wait()
        finally:
            self._waiting -= 1

    def _require_running(self) -> trio.Nursery:
        """The backend's nursery; PlcDriverError when the backend is not running."""
        if self._nursery is None:
            raise PlcDriverError(f"PLC {self.plc_id}: backend not running")
        return self._nursery

    # --- GunHardware --------------------------------------------------------------------------

    async def set_relay(self, closed: bool) -> None:
        """Command the relay and return once the PLC acknowledges this very command
        (LAST_CMD_SEQ_APPLIED == its CMD_SEQ) with RLY1_STATE == `closed`.

        Each attempt gets `ack_timeout`; a retry is a new command with a new seq (the PLC
        ignores a repeated seq as a keep-alive). After `attempts` failures the PLC is told
        FORCE_ALL_OFF (every relay open, closing refused until the next set_relay) and
        PlcDriverError is raised; the caller's own cancel scope may end it earlier."""
        self._require_running()
        with self.protocol.awaiting_ack():
            await self._set_relay(closed)

    async def _set_relay(self, closed: bool) -> None:
        protocol = self.protocol
        for attempt in range(1, self._attempts + 1):
            if closed and protocol.safety_tripped:
                raise PlcDriverError(f"PLC {self.plc_id}: relay may not close: safety trip")
            seq = protocol.command(closed, force_off=False)
            self._transmitter.send_relay_control(protocol)
            with trio.move_on_after(self._ack_timeout):
                await self._until(lambda: protocol.acknowledged(closed))
                return
            # DEBUG: the connector retries a failed command every few seconds; its
            # PowerSwitchFailure is logged once, with this error.
            log.debug(
                "PLC %d: relay %s not confirmed (seq %d, attempt %d/%d)",
                self.plc_id,
                "close" if closed else "open",
                seq,
                attempt,
                self._attempts,
            )
            if attempt < self._attempts:
                await trio.sleep(self._backoff * 2 ** (attempt - 1))
        protocol.command(False, force_off=True)
        self._transmitter.send_relay_control(protocol)
        raise PlcDriverError(
            f"PLC {self.plc_id}: relay did not confirm "
            f"{'closed' if closed else 'open'} after {self._attempts} attempts"
        )

    async def set_lock(self, locked: bool) -> None:
        """The CAN contract has no connector lock: on a DC gun the latch is the EV's (it locks
        the inlet itself under ISO 15118 / DIN 70121), so there is nothing to drive here."""
        self._require_running()

    def set_current_limit(self, amps: float) -> None:
        """ConfigCmd SET CURRENT_LIMIT_0p1A. Synchronous (the GunHardware contract): the
        `configure` call runs in the backend's nursery and a failure (refused, no ack) is
        logged as a warning."""
        nursery = self._require_running()
        raw = max(0, min(round(amps * 10), _S32_MAX))
        nursery.start_soon(self._apply_current_limit, raw)

    async def _apply_current_limit(self, raw: int) -> None:
        try:
            await self.configure(PARAM_CURRENT_LIMIT, raw)
        except PlcDriverError as exc:
            log.warning("PLC %d: current limit %d x 0.1 A not applied: %s", self.plc_id, raw, exc)

    def read_meter(self) -> MeterReading:
        """The last fresh values the meter reported within its range (no current or power
        once the relay is open while the meter is over range), and the register as believed
        (see `meter.BelievedMeter`)."""
        return self.protocol.meter()

    def surviving_register_wh(self) -> float | None:
        """The EnergyMeterData IMPORT_ENERGY register this PLC's meter reported (valid data,
        as believed), which a controller crash does not reset; None until it has reported
        one."""
        return self.protocol.register_wh

    def status(self) -> GunStatus:
        return self.protocol.status()

    # --- parameters (ConfigCmd / ConfigAck) -----------------------------------------------

    async def configure(self, param: int, value: int) -> int:
        """SET parameter `param` to `value` (raw units, see the README); returns the value the
        PLC acknowledged. PlcDriverError when the PLC refuses it (unknown param, out of range,
        read-only) or no ConfigAck arrives within `config_timeout`."""
        return await self._config(param, CFG_SET, value)

    async def read_config(self, param: int) -> int:
        """GET parameter `param`; the PLC's value. PlcDriverError as for `configure`."""
        return await self._config(param, CFG_GET, 0)

    async def _config(self, param: int, op: int, value: int) -> int:
        self._require_running()
        if not 0 <= param <= 255 or not _S32_MIN <= value <= _S32_MAX:
            raise PlcDriverError(f"PLC {self.plc_id}: param {param} / value {value} out of range")
        what = f"{'set' if op == CFG_SET else 'get'} param {param}"
        timeout = self._config_timeout
        exchange = self.protocol.config_exchange
        async with self._config_lock:
            try:
                can_id, data = exchange.request(param, op, value)
                self._transmitter.send(can_id, data, self.plc_id)
                with trio.move_on_after(timeout):
                    await self._until(lambda: exchange.answer is not None)
            finally:
                exchange.end()
            answer = exchange.answer
        if answer is None:
            raise PlcDriverError(f"PLC {self.plc_id}: no ConfigAck for {what} within {timeout} s")
        status, acknowledged = answer
        if status != ACK_OK:
            raise PlcDriverError(
                f"PLC {self.plc_id}: {what} refused: {ACK_STATUS.get(status, f'status {status}')}"
            )
        return acknowledged


if TYPE_CHECKING:

    def _fits_the_contract(gun: PlcGun) -> GunHardware:
        return gun
