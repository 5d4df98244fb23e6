"""Which hardware a configuration runs on.

- `usePLC: false`: `SimulatedHardware`, guns simulated in-process (development, demos).
- `usePLC: true`, `canInterfaceType: "virtual"`: `InProcessPlcHardware`, the real PLC driver and
  codec on python-can's virtual bus `canInterface`, against emulated PLCs in this process.
- `usePLC: true`, any other interface (`socketcan` on a charger): `PlcBackend` on
  `can.Bus(interface=canInterfaceType, channel=canInterface)`; the PLCs are real (or a
  `dcocpp plc-sim` process on the same bus), so there is nothing to simulate. A channel or
  interface type that does not exist on this machine is `CanBusNotFound` (`open_can_bus`):
  the charger does not start (see `PlcBackend`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator

import attrs
import can

from dcocpp.config import ChargerConfig
from dcocpp.hardware.interface import HardwareBackend, SimulationControl
from dcocpp.hardware.plc.driver import CanBusNotFound, PlcBackend
from dcocpp.hardware.plc.emulated import InProcessPlcHardware
from dcocpp.hardware.simulation import SimulatedHardware
from dcocpp.storage.oserrors import reason

__all__ = ["Hardware", "build_hardware", "open_can_bus"]

# Where the operator learns to bring a bus up, or to name it (in the error of a bus that does
# not exist).
BRING_UP = 'see "A real bus (the charger)" in docs/can-bus.md to bring it up'
SELECTING = 'see "Selecting the bus in the charger config" in docs/can-bus.md'
# python-can's socketcan logs an error of its own before it raises one.
_SOCKETCAN_LOGGER = "can.interfaces.socketcan.socketcan"
# What opening a bus raises when its channel does not exist (socketcan: ENODEV) or the machine
# cannot have one (a kernel without SocketCAN: EAFNOSUPPORT); not a bus that exists but fails.
_NO_SUCH_CHANNEL = {errno.ENODEV, errno.ENXIO, errno.ENOENT}
_NO_SUCH_FAMILY = {errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}


@attrs.frozen
class Hardware:
    backend: HardwareBackend
    simulation: SimulationControl | None  # None: real hardware, nothing to simulate


def build_hardware(config: ChargerConfig) -> Hardware:
    """The hardware `config` asks for; nothing is opened until `backend.run`."""
    cp = config.charge_point
    if not cp.use_plc:
        simulated = SimulatedHardware(config.connectors)
        return Hardware(simulated, simulated)
    if cp.can_interface_type == "virtual":
        in_process = InProcessPlcHardware(config.connectors, cp.can_interface)
        return Hardware(in_process, in_process)

    def open_bus() -> can.BusABC:
        return open_can_bus(cp.can_interface_type, cp.can_interface)

    name = f"CAN bus {cp.can_interface} ({cp.can_interface_type})"
    return Hardware(PlcBackend(config.connectors, bus_factory=open_bus, bus_name=name), None)


def open_can_bus(interface: str, channel: str) -> can.BusABC:
    """`can.Bus(interface=interface, channel=channel)`; `CanBusNotFound`, with a message naming
    the channel and the interface type, when either does not exist on this machine. Any other
    failure is python-can's own exception (the driver reports and retries it)."""
    failure: Exception | None = None
    with _held_logs(_SOCKETCAN_LOGGER) as held:
        try:
            return can.Bus(interface=interface, channel=channel)
        except (OSError, can.CanInterfaceNotImplementedError) as exc:
            missing = _missing(exc)
            if missing is None:
                raise
            held.clear()  # python-can's own line before it raised says what ours says
            failure = exc
    raise CanBusNotFound(f"CAN channel {channel} (interface {interface}): {missing}") from failure


def _missing(exc: OSError | can.CanInterfaceNotImplementedError) -> str | None:
    """Why the bus does not exist here (None: it exists, or may, but failed to open)."""
    if isinstance(exc, can.CanInterfaceNotImplementedError):
        return f"interface type not available ({exc}); {SELECTING}"
    if exc.errno in _NO_SUCH_CHANNEL:
        return f"{reason(exc)}; {BRING_UP}"
    if exc.errno in _NO_SUCH_FAMILY:
        return f"this machine has no SocketCAN ({reason(exc)}); {BRING_UP}"
    if exc.errno is None:
        # Not a system call's failure but the interface's own (a vendor library that is not
        # installed, e.g. "pcanbasic library not found"): no retry will make it appear.
        return f"the interface's driver cannot be used ({exc}); {SELECTING}"
    return None


@contextlib.contextmanager
def _held_logs(name: str) -> Iterator[list[logging.LogRecord]]:
    """Hold what the logger `name` logs inside the block; what is left in the list at the end
    is logged then."""
    logger = logging.getLogger(name)
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    logger.addFilter(hold)
    try:
        yield held
    finally:
        logger.removeFilter(hold)
        for record in held:
            logger.handle(record)
