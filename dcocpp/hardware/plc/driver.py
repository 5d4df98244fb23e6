"""The host side of the PLC CAN contract: `PlcBackend` implements `HardwareBackend` on a
python-can bus, one PLC (plcId) per gun, all PLCs on one bus.

This is the trio shell: it reads and writes the bus and keeps time. What the frames mean and
what the host must send is decided without I/O by `busprotocol.BusProtocol` and one
`protocol.PlcProtocol` per PLC (plain calls with the time as an argument); each gun's
`gun.PlcGun` waits for what they decide (acknowledgements, ConfigAcks).

`run` opens the bus with `bus_factory` and owns it until it ends. It starts:

- one reader, which hands every PLC -> host frame to `BusProtocol.receive` and acts on the
  outcome: a RelayControl due at once (a safety trip) is sent before the next frame is handled,
  waiting tasks are woken, hardware events are emitted. On a bus with a file descriptor
  (socketcan, `SelectableVirtualBus`) it waits with `trio.lowlevel.wait_readable` and drains
  with `bus.recv(0)`, a busy bus in batches (`RX_GATHER_S`); a bus without one (python-can's
  plain `virtual`) can only be read by blocking in `recv`, so a `can.Notifier` thread hands
  the frames to trio through `TrioToken.run_sync_soon` into a bounded channel (the thread is
  ours to stop and join, so none is left when `run` ends; see `bridge.py`);
- one writer for all PLCs: a RelayControl keep-alive to each every `keepalive` (the PLC opens
  its relays after ~300 ms without one); a new command (or FORCE_ALL_OFF) is sent at once by
  the task that makes it, so a safety trip read by the reader is on the bus before the reader
  handles another frame;
- one supervisor for all guns, which tells each `PlcProtocol` the time (`supervise`): silence
  (no frame for `rx_timeout`, no fresh meter data for `meter_stale`) becomes COMMUNICATION /
  METER faults, cleared when data comes back, and a relay reported otherwise than commanded
  POWER_SWITCH with FORCE_ALL_OFF (also judged at every RelayStatus).

A bus error (the bus cannot be opened, e.g. its interface is not up yet; the reader's `recv`
fails; or `TX_ERRORS_BEFORE_REOPEN` sends in a row raise `can.CanError`) does not end `run`:
every gun gets a COMMUNICATION fault "CAN bus error: ...",
the bus is shut down and reopened through `bus_factory` after a backoff (0.1 s doubling up to
5 s while reopening fails or the reopened bus delivers nothing); the first frame from a PLC
clears its fault. One exception: when the very first open raises `CanBusNotFound` (the channel
or the interface type does not exist on this machine, a configuration or installation error
that no retry mends), `run` raises it before it has started. Later, the same error (a USB
adapter unplugged) is a bus error like any other.

Events are delivered with `await send`; the station hands over channels that never make it wait
(`hardware.events.CoalescingChannel`: what a busy connector cannot take yet is held, coalesced),
so a slow connector holds back neither the reader, and with it every gun's safety frames, nor
the keep-alive writer, which never waits on event channels: it cannot make a PLC's watchdog
trip. A safety trip is acted on before any event is sent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs
import can
import trio

from dcocpp.concurrency import WakeUp
from dcocpp.config import ConnectorConfig
from dcocpp.hardware.interface import EventChannel
from dcocpp.hardware.plc import codec
from dcocpp.hardware.plc.bridge import BusReadError, read_frames
from dcocpp.hardware.plc.busprotocol import BusProtocol, acceptance_filters
from dcocpp.hardware.plc.gun import ATTEMPTS, BACKOFF, PlcDriverError, PlcGun
from dcocpp.hardware.plc.protocol import ACK_TIMEOUT, PlcProtocol, ProtocolOptions

if TYPE_CHECKING:
    from dcocpp.hardware.interface import GunHardware, HardwareBackend

__all__ = [
    "ACK_TIMEOUT",
    "ATTEMPTS",
    "BACKOFF",
    "RX_GATHER_S",
    "BusPort",
    "CanBusNotFound",
    "PlcBackend",
    "PlcDriverError",
    "PlcDriverStats",
    "PlcGun",
]

log = logging.getLogger(__name__)

# A busy bus is read in batches: after a burst the reader looks again this much later, so
# 954 frames/s cost ~500 wake-ups, not 954 (each costs as much as decoding several frames).
# It bounds the added latency of a frame (an emergency stop included) under load.
RX_GATHER_S = 0.002
TX_ERRORS_BEFORE_REOPEN = 3  # consecutive failed sends that count as a bus error
REOPEN_MIN_S = 0.1  # first reopen delay after a bus error; doubles while reopening fails
REOPEN_MAX_S = 5.0


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


class CanBusNotFound(PlcDriverError):
    """Raised by a `bus_factory`: the bus's channel or interface type does not exist here."""


@attrs.frozen
class PlcDriverStats:
    """What the host driver counted on the bus (`PlcBackend.stats`)."""

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


class BusPort:
    """The bus `PlcBackend` serves (`bus`: None while it is being reopened) and its health:
    every send goes through here (`send`, `send_relay_control`, the `gun.Transmitter` the
    guns get), a failure of it is recorded (`fail`, which sets `failed`), and its trouble is
    logged once per change (`went_bad`, `progress`)."""

    def __init__(self, name: str):
        self.name = name
        self.bus: can.BusABC | None = None
        self.error: str | None = None
        self.failed = WakeUp()
        # Why the bus last failed, until it works again (see `progress`): its state changes
        # are logged, not every reopen.
        self.trouble: str | None = None
        self._heard = self._sent = False
        self._tx_error_streak = 0
        self.tx_frames = 0
        self.tx_errors = 0

    def serve(self, bus: can.BusABC | None) -> None:
        """`bus` is the one to use from now on (None: none until the next `serve`)."""
        if bus is not None:
            self.error = None
            self.failed.clear()
            self._tx_error_streak = 0
        self.bus = bus

    def fail(self, error: str) -> None:
        """The current bus is unusable: the bus loop closes and reopens it."""
        if self.error is None:
            self.error = error
            self.failed.set()

    def went_bad(self, error: str) -> None:
        """The bus failed, or could not be opened again."""
        if self.trouble is None:
            log.warning("%s failed: %s; reopening it until frames arrive again", self.name, error)
        else:
            log.debug("%s failed again: %s", self.name, error)
        self.trouble = error
        self._heard = self._sent = False

    def progress(self, *, heard: bool = False, sent: bool = False) -> None:
        """After a bus error: frames arrive and a send succeeded on the reopened bus, so it
        works again (logged once). Either alone is not enough: a bus whose sends keep failing
        would be "back" at every reopen."""
        self._heard |= heard
        self._sent |= sent
        if self._heard and self._sent:
            log.info("%s works again (it had failed: %s)", self.name, self.trouble)
            self.trouble = None

    def send(self, can_id: int, data: bytes, plc_id: int) -> bool:
        """Whether the frame went out (a failure is counted and logged here)."""
        bus = self.bus
        if bus is None:
            raise PlcDriverError("PLC bus not open")
        try:
            bus.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=True))
        except can.CanError as exc:
            # Counted (txErrors in the status) and logged at DEBUG: a keep-alive fails ten
            # times a second on a bad bus. TX_ERRORS_BEFORE_REOPEN in a row are a bus error,
            # logged once; the PLC's watchdog and our rx timeout fault a lasting failure.
            self.tx_errors += 1
            log.debug("PLC %d: sending %s failed: %s", plc_id, codec.message_of(can_id).name, exc)
            self._tx_error_streak += 1
            if self._tx_error_streak >= TX_ERRORS_BEFORE_REOPEN:
                self.fail(f"{self._tx_error_streak} sends in a row failed: {exc}")
            return False
        self._tx_error_streak = 0
        self.tx_frames += 1
        if self.trouble is not None:
            self.progress(sent=True)
        return True

    def send_relay_control(self, plc: PlcProtocol) -> None:
        """The PLC's RelayControl now, if a bus is open (else the next keep-alive on the
        reopened bus carries it)."""
        if self.bus is not None:
            can_id, data = plc.relay_control_frame()
            if self.send(can_id, data, plc.plc_id):
                plc.relay_control_sent()


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
        self._rx_timeout = rx_timeout
        self._meter_stale = meter_stale
        self._port = BusPort(bus_name)
        self._protocol = BusProtocol(
            ProtocolOptions(
                ack_timeout=ack_timeout,
                rx_timeout=rx_timeout,
                meter_stale=meter_stale,
                debounce_frames=debounce_frames,
            )
        )
        self._guns: dict[int, PlcGun] = {}
        self._by_plc: dict[int, PlcGun] = {}
        for config in connectors:
            if config.id in self._guns:
                raise ValueError(f"connector {config.id} configured twice")
            gun = PlcGun(
                self._protocol.add(config),
                self._port,
                ack_timeout=ack_timeout,
                attempts=attempts,
                backoff=backoff,
                config_timeout=config_timeout,
            )
            self._guns[config.id] = gun
            self._by_plc[config.plc_id] = gun
        self._rx_overruns = 0
        self._running = False

    @property
    def stats(self) -> PlcDriverStats:
        rx, port = self._protocol, self._port
        return PlcDriverStats(
            rx_frames=rx.rx_frames,
            repeats=rx.repeats,
            ignored=rx.ignored,
            crc_errors=rx.crc_errors,
            decode_errors=rx.decode_errors,
            rx_overruns=self._rx_overruns,
            tx_frames=port.tx_frames,
            tx_errors=port.tx_errors,
        )

    def counters(self) -> Mapping[str, int]:
        """`stats` by camelCase name (`HardwareBackend.counters`)."""
        return {_camel(name): value for name, value in attrs.asdict(self.stats).items()}

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
        """Open the bus, start the reader, the keep-alive writer and the supervisor;
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
                        gun.protocol.start(now)
                        gun.attach(events.get(gun.config.id), nursery)
                    await nursery.start(self._bus_loop)
                    # One writer and one supervisor for all PLCs: a wake-up per period, not
                    # one per PLC (16 PLCs would mean 320 wake-ups a second); both on one
                    # time grid from `now`, so that with equal periods they share a wake-up.
                    nursery.start_soon(self._write_loop, now)
                    nursery.start_soon(self._supervise_loop, now)
                    # The guns' physical state first (a silent PLC is reported by the
                    # supervisor once rx_timeout has passed, so the wait is bounded by it).
                    with trio.move_on_after(self._rx_timeout):
                        for gun in self._guns.values():
                            await gun.until_known()
                    task_status.started()
            finally:
                self._port.serve(None)
                for gun in self._guns.values():
                    gun.detach()
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
        it works again (`BusPort.progress`), DEBUG for the reopening in between."""
        port = self._port
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
            port.went_bad(error)
            for gun in self._guns.values():
                await gun.emit(gun.protocol.bus_failed(error))
            while True:
                await trio.sleep(delay)
                delay = min(delay * 2, REOPEN_MAX_S)
                bus, error = self._try_open_bus()
                if bus is not None:
                    log.debug("%s reopened", port.name)
                    break
                log.debug("reopening %s failed: %s (next try in %.1f s)", port.name, error, delay)

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
        port = self._port
        rx_before = self._protocol.rx_frames
        try:
            async with trio.open_nursery() as nursery:
                port.serve(bus)
                await nursery.start(self._read_loop, bus)
                task_status.started()
                await port.failed.wait()
                nursery.cancel_scope.cancel()
        finally:
            port.serve(None)
            bus.shutdown()
        return port.error or "unknown", self._protocol.rx_frames > rx_before

    async def _write_loop(self, start: float) -> None:
        """RelayControl to every PLC every `keepalive` (at `start` + k * `keepalive`); a new
        command is sent at once by whoever made it."""
        plcs = [gun.protocol for gun in self._guns.values()]
        port = self._port
        while True:
            for plc in plcs:
                port.send_relay_control(plc)  # nothing while the bus is being reopened
            await trio.sleep_until(_next_tick(start, self._keepalive, trio.current_time()))

    async def _supervise_loop(self, start: float) -> None:
        period = min(self._keepalive, self._rx_timeout / 4, self._meter_stale / 4)
        guns = list(self._guns.values())
        port = self._port
        while True:
            await trio.sleep_until(_next_tick(start, period, trio.current_time()))
            now = trio.current_time()
            for gun in guns:
                plc = gun.protocol
                events = plc.supervise(now)
                if plc.control_due:  # FORCE_ALL_OFF changed with a relay judged
                    port.send_relay_control(plc)
                await gun.emit(events)

    # --- receive ------------------------------------------------------------------------

    async def _read_loop(
        self, bus: can.BusABC, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await read_frames(
                bus,
                self._on_message,
                on_overrun=self._count_overrun,
                gather=RX_GATHER_S,
                task_status=task_status,
            )
        except BusReadError as exc:
            self._port.fail(str(exc))

    def _count_overrun(self) -> None:
        self._rx_overruns += 1

    async def _on_message(self, msg: can.Message) -> None:
        port = self._port
        if port.trouble is not None:
            port.progress(heard=True)
        received = self._protocol.receive(msg, trio.current_time())
        if received is None:
            return
        plc, events = received
        if plc.control_due:  # a safety trip: on the bus before the next frame is handled
            port.send_relay_control(plc)
        gun = self._by_plc[plc.plc_id]
        gun.notify()
        if events:
            await gun.emit(events)


if TYPE_CHECKING:

    def _fits_the_contract(backend: PlcBackend) -> tuple[HardwareBackend, GunHardware]:
        return backend, backend.gun(1)
