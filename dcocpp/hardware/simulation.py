"""Simulated charger hardware: a relay, meter, lock and EV per gun, on trio's clock.

`SimulatedHardware` implements `HardwareBackend` for development, demos and tests. Everything
is driven by `trio.current_time()`, so under `autojump_clock` an hour of charging runs in
milliseconds and every event lands at an exact, reproducible moment.

The energy model is solved in closed form rather than stepped, so a meter reading does not
depend on how often anyone looks at it. The EV's battery voltage rises with its SoC
(V = 350 V + 1.2 V/%); the gun delivers a constant current (the least of the EV's maximum, the
current limit and the connector's maxCurrentA) until V * I would exceed the connector's
maxPowerW, and constant power from then on. At constant current dV/dt = k*I*V / (36*C)
(k = 1.2 V/%, C = capacity in Wh, t in s), so V grows exponentially; at constant power the
SoC rises linearly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from dcocpp.config import ConnectorConfig
from dcocpp.hardware.ev import (
    INITIAL_REGISTER_WH,
    REGISTER_STEP_WH,
    EvModel,
    battery_voltage,
    seconds_to_soc,
    soc_after,
)
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

if TYPE_CHECKING:
    from dcocpp.hardware.interface import GunHardware, HardwareBackend, SimulationControl

__all__ = ["EvModel", "GunState", "SimulatedGun", "SimulatedHardware"]

# Like the PLC's hardware interlock: these open the relay at once and refuse to close it.
_INTERLOCKS = frozenset({FaultKind.EMERGENCY_STOP, FaultKind.EARTH_FAULT})
# The host stops getting fresh samples; the energy keeps flowing regardless.
_FREEZE_METER = frozenset({FaultKind.COMMUNICATION, FaultKind.METER})

# The PLC driver's wording, so that the central system reads the same on either backend.
_DEFAULT_DETAILS = {
    FaultKind.METER: "meter data stale",
    FaultKind.LOCK: "connector lock failure",
    FaultKind.POWER_SWITCH: "relay feedback mismatch",
}

_NOT_STARTED = "hardware not started"
_STOPPED = "hardware stopped"


@attrs.frozen
class GunState:
    """A snapshot of one simulated gun for status displays. `soc` is the EV's true SoC (None
    when unplugged); `meter` is what the host would read, frozen during a comm/meter fault."""

    plugged: bool
    ev_requesting: bool
    relay_closed: bool
    relay_stuck: bool
    locked: bool
    current_limit_a: float
    soc: float | None
    faults: frozenset[FaultKind]
    meter: MeterReading


class SimulatedGun:
    """One gun's relay, meter, lock, current limit and plugged EV (implements `GunHardware`).

    The test/operator controls (`plug`, `set_fault`, ...) are reached through
    `SimulatedHardware`, which checks the connector id first."""

    def __init__(
        self,
        config: ConnectorConfig,
        *,
        initial_energy_wh: float,
        relay_delay: float,
        lock_delay: float,
        plc_name: str,
    ):
        self._config = config
        self._relay_delay = relay_delay
        self._lock_delay = lock_delay
        self._plc_name = plc_name
        self._not_running: str | None = _NOT_STARTED
        self._events: EventChannel | None = None

        self._relay_closed = False
        self._relay_stuck = False
        self._locked = False
        # Start at the connector's rating so an EV charges without ceremony; the connector
        # task sets the real limit before it closes the relay.
        self._current_limit_a = config.max_current_a
        self._faults: dict[FaultKind, str] = {}

        self._ev: EvModel | None = None
        self._soc = 0.0
        self._ev_suspended = False
        self._reported_demand = False  # the last EvDemand the connector was told

        self._energy_wh = initial_energy_wh
        self._updated_at: float | None = None  # None until the first change inside trio
        self._frozen: MeterReading | None = None
        self._target_scope: trio.CancelScope | None = None

    # --- GunHardware ----------------------------------------------------------------------

    async def set_relay(self, closed: bool) -> None:
        self._require_running()
        if closed:
            self._refuse_closing()
        await trio.sleep(self._relay_delay)
        if self._relay_stuck:
            await trio.sleep_forever()  # never confirms; the caller's deadline ends this
        if closed:
            self._refuse_closing()  # an interlock may have tripped while the relay moved
        with self._changing():
            changed = self._relay_closed != closed
            self._relay_closed = closed
        if changed:
            await self._emit(RelayState(closed))

    async def set_lock(self, locked: bool) -> None:
        self._require_running()
        await trio.sleep(self._lock_delay)
        if FaultKind.LOCK in self._faults:
            raise HardwareError("lock did not engage" if locked else "lock did not release")
        self._locked = locked

    def set_current_limit(self, amps: float) -> None:
        if not (math.isfinite(amps) and amps >= 0):
            raise ValueError(f"current limit must be a finite number >= 0, not {amps}")
        with self._changing():
            self._current_limit_a = amps

    def read_meter(self) -> MeterReading:
        self._advance()
        return self._frozen if self._frozen is not None else self._live_reading()

    def surviving_register_wh(self) -> None:
        return None  # the simulated meter dies with the process: nothing survives a crash

    # --- controls -------------------------------------------------------------------------

    async def plug(self, ev: EvModel | None = None) -> None:
        self._require_running()
        if self._ev is not None:
            raise ValueError(f"connector {self._config.id} is already plugged")
        with self._changing():
            self._ev = ev if ev is not None else EvModel()
            self._soc = self._ev.soc
            self._ev_suspended = False
        await self._emit(CablePlugged())
        await self._report_demand()

    async def unplug(self) -> None:
        self._require_running()
        if self._ev is None:
            raise ValueError(f"connector {self._config.id} is not plugged")
        with self._changing():
            self._ev = None
            self._ev_suspended = False
        self._reported_demand = False  # CableUnplugged implies the demand is gone
        await self._emit(CableUnplugged())

    async def set_ev_suspended(self, suspended: bool) -> None:
        """Only a change is reported: resuming an EV that has reached its target is a no-op."""
        self._require_running()
        if self._ev is None:
            raise ValueError(f"connector {self._config.id} has no EV plugged")
        with self._changing():
            self._ev_suspended = suspended
        await self._report_demand()

    async def set_fault(self, kind: FaultKind, active: bool, detail: str | None = None) -> None:
        self._require_running()
        if active == (kind in self._faults):
            return
        if not active:
            with self._changing():
                del self._faults[kind]
                if not self._faults.keys() & _FREEZE_METER:
                    self._frozen = None  # the true register shows again, jump included
            await self._emit(FaultCleared(kind))
            return
        if detail is None:
            detail = self._default_detail(kind)
        opened = kind in _INTERLOCKS and self._relay_closed
        with self._changing():
            self._faults[kind] = detail
            if kind in _FREEZE_METER and self._frozen is None:
                self._frozen = self._live_reading()
            if opened:
                self._relay_closed = False
        await self._emit(FaultRaised(kind, detail))
        if opened:
            await self._emit(RelayState(False))

    def set_relay_stuck(self, stuck: bool) -> None:
        self._relay_stuck = stuck

    def status(self) -> GunStatus:
        state = self.state()
        return GunStatus(
            plugged=state.plugged,
            ev_requesting=state.ev_requesting,
            relay_closed=state.relay_closed,
            faults=tuple(self._faults.items()),
        )

    def state(self) -> GunState:
        meter = self.read_meter()
        return GunState(
            plugged=self._ev is not None,
            ev_requesting=self._requesting(),
            relay_closed=self._relay_closed,
            relay_stuck=self._relay_stuck,
            locked=self._locked,
            current_limit_a=self._current_limit_a,
            soc=self._soc if self._ev is not None else None,
            faults=frozenset(self._faults),
            meter=meter,
        )

    # --- internals ------------------------------------------------------------------------

    def _require_running(self) -> None:
        if self._not_running is not None:
            raise RuntimeError(self._not_running)

    def _refuse_closing(self) -> None:
        active = sorted(self._faults.keys() & _INTERLOCKS)
        if active:
            raise HardwareError(f"relay may not close: {self._faults[active[0]]}")

    def _default_detail(self, kind: FaultKind) -> str:
        if kind is FaultKind.COMMUNICATION:
            return f"{self._plc_name} communication lost"
        if kind is FaultKind.EMERGENCY_STOP:
            return f"{self._plc_name}: emergency stop"
        if kind is FaultKind.EARTH_FAULT:
            return f"{self._plc_name}: earth fault"
        return _DEFAULT_DETAILS[kind]

    async def _emit(self, event: HardwareEvent) -> None:
        if self._events is not None:
            await self._events.send(event)

    def _requesting(self) -> bool:
        ev = self._ev
        return ev is not None and not self._ev_suspended and self._soc < ev.target_soc

    def _flow(self) -> tuple[EvModel, float] | None:
        """The EV and the current it draws below the power limit, when energy flows at all."""
        ev = self._ev
        if ev is None or not self._relay_closed or not self._requesting():
            return None
        amps = min(ev.max_current_a, self._current_limit_a, self._config.max_current_a)
        return (ev, amps) if amps > 0 else None

    def _target_time(self) -> float:
        """When the EV reaches its target SoC if nothing changes before (inf: never)."""
        flow = self._flow()
        if flow is None or self._updated_at is None:
            return math.inf
        ev, amps = flow
        seconds = seconds_to_soc(
            self._soc, ev.target_soc, amps, self._config.max_power_w, ev.capacity_wh
        )
        return self._updated_at + seconds

    def _advance(self) -> None:
        """Bring the EV's SoC and the meter register up to trio's current time."""
        now = trio.current_time()
        flow = self._flow()
        if flow is not None and self._updated_at is not None:
            ev, amps = flow
            # The same comparison as the watcher's deadline, so both agree on the moment the
            # EV stops, to the last bit.
            if now >= self._target_time():
                soc = ev.target_soc
            else:
                elapsed = now - self._updated_at
                soc = soc_after(self._soc, elapsed, amps, self._config.max_power_w, ev.capacity_wh)
                soc = min(soc, ev.target_soc)
            self._energy_wh += (soc - self._soc) * ev.capacity_wh / 100.0
            self._soc = soc
        self._updated_at = now

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Settle the energy delivered under the old state before changing it, then move the
        EV-full deadline to match the new power."""
        self._advance()
        yield
        if self._target_scope is not None:
            self._target_scope.deadline = self._target_time()

    def _live_reading(self) -> MeterReading:
        if self._ev is None:
            return MeterReading(
                energy_wh=self._energy_wh, power_w=0.0, current_a=0.0, voltage_v=0.0
            )
        volts = battery_voltage(self._soc)
        flow = self._flow()
        amps = min(flow[1], self._config.max_power_w / volts) if flow is not None else 0.0
        return MeterReading(
            energy_wh=self._energy_wh,
            power_w=volts * amps,
            current_a=amps,
            voltage_v=volts,
            soc=self._soc,
        )

    async def _report_demand(self) -> None:
        self._advance()
        requesting = self._requesting()
        if requesting != self._reported_demand:
            # Recorded before the send blocks, so a concurrent report does not repeat it.
            self._reported_demand = requesting
            await self._emit(EvDemand(requesting))

    async def _watch_ev_target(self) -> None:
        """Tell the connector when the EV stops by itself at its target SoC: sleep until the
        computed moment; every change of power moves the deadline (see `_changing`)."""
        while True:
            self._target_scope = trio.CancelScope(deadline=self._target_time())
            with self._target_scope:
                await trio.sleep_forever()
            await self._report_demand()


class SimulatedHardware:
    """A whole simulated charger (implements `HardwareBackend`).

    `plc_names` maps a plc_id to the name used in fault details (default "PLC <plc_id>").
    The controls below stand in for the physical world (a driver plugging in, a button being
    pressed); each raises KeyError for an unknown connector and RuntimeError unless `run` is
    running, and emits the events the real hardware would."""

    def __init__(
        self,
        connectors: Sequence[ConnectorConfig],
        *,
        relay_delay: float = 0.05,
        lock_delay: float = 0.05,
        plc_names: Mapping[int, str] | None = None,
    ):
        if relay_delay < 0 or lock_delay < 0:
            raise ValueError("delays must be >= 0")
        names = plc_names or {}
        self._guns: dict[int, SimulatedGun] = {}
        for index, config in enumerate(connectors):
            if config.id in self._guns:
                raise ValueError(f"duplicate connector id {config.id}")
            self._guns[config.id] = SimulatedGun(
                config,
                initial_energy_wh=INITIAL_REGISTER_WH + REGISTER_STEP_WH * index,
                relay_delay=relay_delay,
                lock_delay=lock_delay,
                plc_name=names.get(config.plc_id, f"PLC {config.plc_id}"),
            )
        self._running = False

    def gun(self, connector_id: int) -> SimulatedGun:
        try:
            return self._guns[connector_id]
        except KeyError:
            raise KeyError(f"unknown connector {connector_id}") from None

    def counters(self) -> Mapping[str, int]:
        return {}  # no bus, nothing to count

    async def run(
        self,
        events: Mapping[int, EventChannel],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Make the guns take commands and send each gun's events to `events[connector_id]`
        (guns missing from the mapping stay silent). Starts one EV-target watcher per gun
        with a channel; runs until cancelled. Always closes the given channels when it ends.
        Raises KeyError for a connector id it does not know, RuntimeError if already running."""
        try:
            if self._running:
                raise RuntimeError("hardware already running")
            for connector_id in events:
                self.gun(connector_id)
            self._running = True
            try:
                async with trio.open_nursery() as nursery:
                    for gun in self._guns.values():
                        gun._not_running = None
                    for connector_id, channel in events.items():
                        gun = self._guns[connector_id]
                        gun._events = channel
                        nursery.start_soon(gun._watch_ev_target)
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                self._running = False
                for gun in self._guns.values():
                    gun._not_running = _STOPPED
                    gun._events = None
                    gun._target_scope = None
        finally:
            # Synchronous close: an `await aclose()` would stop at the first one when cancelled.
            for channel in events.values():
                channel.close()

    async def plug(self, connector_id: int, ev: EvModel | None = None) -> None:
        """Connect an EV (default `EvModel()`): CablePlugged, then EvDemand(True) if it wants
        energy. ValueError if already plugged."""
        await self.gun(connector_id).plug(ev)

    async def unplug(self, connector_id: int) -> None:
        """Disconnect the EV: CableUnplugged. ValueError if nothing is plugged."""
        await self.gun(connector_id).unplug()

    async def set_ev_suspended(self, connector_id: int, suspended: bool) -> None:
        """The EV pauses or resumes asking for energy: EvDemand on a change."""
        await self.gun(connector_id).set_ev_suspended(suspended)

    async def set_fault(
        self, connector_id: int, kind: FaultKind, active: bool, detail: str | None = None
    ) -> None:
        """Raise or clear a fault: FaultRaised/FaultCleared on a change only. An emergency stop
        or earth fault opens the relay (RelayState(False)) and refuses closing while active;
        a communication or meter fault freezes the readings until cleared."""
        await self.gun(connector_id).set_fault(kind, active, detail)

    def set_relay_stuck(self, connector_id: int, stuck: bool) -> None:
        """While stuck, the relay ignores commands and `set_relay` never returns."""
        self.gun(connector_id).set_relay_stuck(stuck)

    def state(self, connector_id: int) -> GunState:
        return self.gun(connector_id).state()

    def meter(self, connector_id: int) -> MeterReading:
        return self.gun(connector_id).state().meter

    def relay_closed(self, connector_id: int) -> bool:
        return self.gun(connector_id).state().relay_closed


if TYPE_CHECKING:

    def _fits_the_contract(
        hardware: SimulatedHardware,
    ) -> tuple[HardwareBackend, GunHardware, SimulationControl]:
        return hardware, hardware.gun(1), hardware
