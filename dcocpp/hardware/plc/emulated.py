"""PLC emulators for a whole charger, and the in-process PLC charger built on them.

`EmulatedPlcs` is the firmware side of every configured gun: one `PlcEmulator` per connector,
each on its own bus object (each PLC has its own CAN controller), with controls by connector id
that stand in for the physical world. `python -m dcocpp plc-sim` runs it on any python-can
interface; `InProcessPlcHardware` runs it on a virtual bus beside the real driver.

`InProcessPlcHardware` is what `"usePLC": true` with `"canInterfaceType": "virtual"` runs: the
real `PlcBackend` driving emulated PLCs through the real codec on python-can's virtual bus
(`SelectableVirtualBus`, read without threads, so it also runs under trio's autojump clock). It
implements `HardwareBackend` for the station and `SimulationControl` for the local API, the demo
and the tests, exactly like `SimulatedHardware`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import can
import trio

from dcocpp.config import ConnectorConfig
from dcocpp.hardware.ev import EvModel
from dcocpp.hardware.interface import EventChannel, FaultKind, HardwareError, MeterReading
from dcocpp.hardware.plc.driver import PlcBackend, PlcGun
from dcocpp.hardware.plc.emulator import PlcEmulator, PlcState
from dcocpp.hardware.plc.virtualbus import SelectableVirtualBus

if TYPE_CHECKING:
    from dcocpp.hardware.interface import HardwareBackend, SimulationControl

__all__ = ["EmulatedPlcs", "InProcessPlcHardware"]


class EmulatedPlcs:
    """One emulated PLC per connector (at the connector's plcId), each on a bus from
    `bus_factory`. `run` opens the buses, runs the emulators until cancelled and shuts the
    buses down. The controls raise KeyError for an unknown connector, RuntimeError unless
    `run` is running, ValueError for what the physical world cannot do (plugging a plugged
    gun) and HardwareError for a fault the PLC has no input for."""

    def __init__(
        self,
        connectors: Sequence[ConnectorConfig],
        bus_factory: Callable[[], can.BusABC],
        **emulator_options: Any,
    ):
        self._connectors = {c.id: c for c in connectors}
        if len(self._connectors) != len(connectors):
            raise ValueError("a connector id is configured twice")
        self._bus_factory = bus_factory
        self._options = emulator_options
        self._emulators: dict[int, PlcEmulator] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._emulators:
            raise RuntimeError("PLC emulators already running")
        with ExitStack() as buses:
            emulators = {}
            for cid, config in self._connectors.items():
                bus = self._bus_factory()
                buses.callback(bus.shutdown)
                emulators[cid] = PlcEmulator(bus, config.plc_id, connector=config, **self._options)
            try:
                async with trio.open_nursery() as nursery:
                    for emulator in emulators.values():
                        await nursery.start(emulator.run)
                    self._emulators = emulators
                    task_status.started()
            finally:
                self._emulators = {}

    def emulator(self, connector_id: int) -> PlcEmulator:
        if connector_id not in self._connectors:
            raise KeyError(f"unknown connector {connector_id}")
        try:
            return self._emulators[connector_id]
        except KeyError:
            raise RuntimeError("PLC emulators not running") from None

    def state(self, connector_id: int) -> PlcState:
        return self.emulator(connector_id).state

    # --- SimulationControl ------------------------------------------------------------------

    async def plug(self, connector_id: int, ev: EvModel | None = None) -> None:
        self.emulator(connector_id).plug(ev)

    async def unplug(self, connector_id: int) -> None:
        self.emulator(connector_id).unplug()

    async def set_ev_suspended(self, connector_id: int, suspended: bool) -> None:
        self.emulator(connector_id).set_ev_suspended(suspended)

    async def set_fault(self, connector_id: int, kind: FaultKind, active: bool) -> None:
        """The PLC input or failure behind each fault kind: an emergency-stop or earth-fault
        input, a PLC that stops transmitting (communication), a meter that reports stale data,
        a relay that ignores commands (power switch). The CAN contract has no connector lock."""
        emulator = self.emulator(connector_id)
        match kind:
            case FaultKind.EMERGENCY_STOP:
                emulator.set_estop(active)
            case FaultKind.EARTH_FAULT:
                emulator.set_earth_fault(active)
            case FaultKind.COMMUNICATION:
                emulator.set_silent(active)
            case FaultKind.METER:
                emulator.set_meter_stale(active)
            case FaultKind.POWER_SWITCH:
                emulator.set_relay_stuck(active)
            case FaultKind.LOCK:
                raise HardwareError("a PLC gun has no connector lock (see the CAN contract)")

    def set_relay_stuck(self, connector_id: int, stuck: bool) -> None:
        self.emulator(connector_id).set_relay_stuck(stuck)

    def meter(self, connector_id: int) -> MeterReading:
        return self.emulator(connector_id).read_meter()

    def relay_closed(self, connector_id: int) -> bool:
        return self.emulator(connector_id).state.relay_closed


class InProcessPlcHardware:
    """The PLC backend on emulated PLCs, all on python-can virtual `channel` in this process.

    `run` starts the emulators, then the driver; it ends both (and their buses) when it ends.
    `driver_options` go to `PlcBackend`, `emulator_options` to every `PlcEmulator`."""

    def __init__(
        self,
        connectors: Sequence[ConnectorConfig],
        channel: str,
        *,
        driver_options: Mapping[str, Any] | None = None,
        emulator_options: Mapping[str, Any] | None = None,
    ):
        def open_bus() -> can.BusABC:
            return SelectableVirtualBus(channel=channel)

        self.channel = channel
        self.plcs = EmulatedPlcs(connectors, open_bus, **dict(emulator_options or {}))
        self.driver = PlcBackend(
            connectors,
            bus_factory=open_bus,
            bus_name=f"CAN bus {channel} (virtual)",
            **dict(driver_options or {}),
        )

    def gun(self, connector_id: int) -> PlcGun:
        return self.driver.gun(connector_id)

    def counters(self) -> Mapping[str, int]:
        return self.driver.counters()  # the host's side, as on a real bus

    async def run(
        self,
        events: Mapping[int, EventChannel],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.plcs.run)
                await nursery.start(self.driver.run, events)
                task_status.started()
        finally:
            for channel in events.values():
                channel.close()

    async def plug(self, connector_id: int, ev: EvModel | None = None) -> None:
        self.gun(connector_id)  # KeyError for a connector the driver does not know
        await self.plcs.plug(connector_id, ev)

    async def unplug(self, connector_id: int) -> None:
        await self.plcs.unplug(connector_id)

    async def set_ev_suspended(self, connector_id: int, suspended: bool) -> None:
        await self.plcs.set_ev_suspended(connector_id, suspended)

    async def set_fault(self, connector_id: int, kind: FaultKind, active: bool) -> None:
        await self.plcs.set_fault(connector_id, kind, active)

    def set_relay_stuck(self, connector_id: int, stuck: bool) -> None:
        self.plcs.set_relay_stuck(connector_id, stuck)

    def meter(self, connector_id: int) -> MeterReading:
        return self.plcs.meter(connector_id)

    def relay_closed(self, connector_id: int) -> bool:
        return self.plcs.relay_closed(connector_id)


if TYPE_CHECKING:

    def _fits_the_contracts(
        hardware: InProcessPlcHardware, plcs: EmulatedPlcs
    ) -> tuple[HardwareBackend, SimulationControl, SimulationControl]:
        return hardware, hardware, plcs
