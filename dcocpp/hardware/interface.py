"""What a hardware backend provides to the connectors: the contract both the simulator and the
PLC driver implement.

Hardware speaks in events and commands, never in OCPP. Events go one way, from the backend into
each connector's inbox (a bounded trio channel the station hands over); commands are async
methods on the connector's `GunHardware`. Deadlines are the caller's: `set_relay` returns when
the hardware confirms and the connector task wraps it in its own cancel scope.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import attrs

from dcocpp.hardware.ev import EvModel

if TYPE_CHECKING:
    # Types only: the connector's pure core imports this module (FaultKind, MeterReading) and
    # must not load trio.
    import trio


class HardwareError(Exception):
    """The one exception root of the hardware layer."""


class FaultKind(enum.StrEnum):
    """Faults a gun's hardware can raise; the connector maps them to OCPP error codes."""

    EMERGENCY_STOP = "estop"
    EARTH_FAULT = "earth"
    COMMUNICATION = "comm"  # the PLC (or the bus) does not answer
    METER = "meter"  # meter stale or reporting a failure
    LOCK = "lock"  # the connector lock does not engage or release
    POWER_SWITCH = "relay"  # the relay did not do what it was told


# --- events: hardware -> connector ---------------------------------------------------------------


@attrs.frozen
class CablePlugged:
    """The EV is connected (control pilot left state A)."""


@attrs.frozen
class CableUnplugged:
    """The EV is gone (control pilot back to state A)."""


@attrs.frozen
class EvDemand:
    """The EV asks for energy (CP state C/D) or stopped asking (state B): EV-side suspend."""

    requesting: bool


@attrs.frozen
class RelayState:
    """The relay's confirmed state changed (also sent when the hardware opened it by itself)."""

    closed: bool


@attrs.frozen
class FaultRaised:
    kind: FaultKind
    detail: str = ""  # the hardware's own reason, e.g. "PLC 3: no frame for 600 ms"


@attrs.frozen
class FaultCleared:
    kind: FaultKind


HardwareEvent = CablePlugged | CableUnplugged | EvDemand | RelayState | FaultRaised | FaultCleared


class EventChannel(Protocol):
    """Where a backend sends one gun's events: a trio memory send channel, or the station's
    `events.CoalescingChannel`, which never makes the backend wait for a slow connector."""

    async def send(self, value: HardwareEvent) -> None: ...

    def close(self) -> None: ...


# --- readings ------------------------------------------------------------------------------------


@attrs.frozen
class MeterReading:
    """One consistent sample of a gun's meter. `soc` is None when the EV does not tell."""

    energy_wh: float  # import register, monotonic
    power_w: float
    current_a: float
    voltage_v: float
    soc: float | None = None


@attrs.frozen
class GunStatus:
    """What the hardware knows about a gun right now: lets a restarted controller pick up the
    physical truth (a plugged EV stays plugged across a soft reset)."""

    plugged: bool
    ev_requesting: bool
    relay_closed: bool
    faults: tuple[tuple[FaultKind, str], ...] = ()  # (kind, detail) of every active fault


# --- commands: connector -> hardware -------------------------------------------------------------


class GunHardware(Protocol):
    """One gun's relay, meter, lock and current limit."""

    async def set_relay(self, closed: bool) -> None:
        """Command the relay and return once the hardware confirms that state.

        Never times out by itself: the caller wraps it in a cancel scope (a missed deadline is
        a PowerSwitchFailure). Raises HardwareError when the command cannot be sent at all."""
        ...

    async def set_lock(self, locked: bool) -> None:
        """Engage or release the connector lock; returns once done. Raises HardwareError when
        the lock does not move (the connector reports ConnectorLockFailure)."""
        ...

    def set_current_limit(self, amps: float) -> None:
        """The most current the EV may draw now (0 pauses the energy flow)."""
        ...

    def read_meter(self) -> MeterReading:
        """The latest meter sample (cheap; call it as often as needed)."""
        ...

    def surviving_register_wh(self) -> float | None:
        """The import register of a meter that outlives this process, as it last reported it:
        a PLC's meter keeps its register through a controller crash (and the PLC's watchdog
        has opened the relay), so at start it tells what a transaction cut off by the crash
        delivered. None when there is no such register: hardware that dies with the process
        (the simulation), or a meter that has not reported one."""
        ...

    def status(self) -> GunStatus:
        """The gun's current physical state."""
        ...


class HardwareBackend(Protocol):
    """A whole charger's hardware. `run` is started first in the station's nursery and calls
    `task_status.started()` once every gun can take commands; it sends each gun's events to the
    channel given for that gun, and closes those channels when it ends."""

    def gun(self, connector_id: int) -> GunHardware: ...

    async def run(
        self,
        events: Mapping[int, EventChannel],
        *,
        task_status: trio.TaskStatus[None] = ...,
    ) -> None: ...

    def counters(self) -> Mapping[str, int]:
        """The backend's own counters for the operator (`dcocpp status`), by camelCase name:
        e.g. the CAN frames read, sent and refused. Empty when it keeps none."""
        ...


class SimulationControl(Protocol):
    """The physical world around a simulated charger (the simulator, or emulated PLCs): what
    the local API, the demo and the tests use to plug EVs in and to break things. Raises
    KeyError for an unknown connector, ValueError for what cannot happen (plugging a plugged
    gun), HardwareError for a fault this hardware cannot have."""

    async def plug(self, connector_id: int, ev: EvModel | None = None) -> None: ...

    async def unplug(self, connector_id: int) -> None: ...

    async def set_ev_suspended(self, connector_id: int, suspended: bool) -> None: ...

    async def set_fault(self, connector_id: int, kind: FaultKind, active: bool) -> None: ...

    def set_relay_stuck(self, connector_id: int, stuck: bool) -> None: ...

    def meter(self, connector_id: int) -> MeterReading:
        """The meter's physical truth (what the gun will read once its data arrives)."""
        ...

    def relay_closed(self, connector_id: int) -> bool:
        """The relay's physical truth (the controller may not know it: a silent PLC)."""
        ...
