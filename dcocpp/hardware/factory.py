"""Which hardware a configuration runs on.

- `usePLC: false`: `SimulatedHardware`, guns simulated in-process (development, demos).
- `usePLC: true`, `canInterfaceType: "virtual"`: `InProcessPlcHardware`, the real PLC driver and
  codec on python-can's virtual bus `canInterface`, against emulated PLCs in this process.
- `usePLC: true`, any other interface (`socketcan` on a charger): `PlcBackend` on
  `can.Bus(interface=canInterfaceType, channel=canInterface)`; the PLCs are real (or a
  `dcocpp plc-sim` process on the same bus), so there is nothing to simulate.
"""

from __future__ import annotations

import attrs
import can

from dcocpp.config import ChargerConfig
from dcocpp.hardware.interface import HardwareBackend, SimulationControl
from dcocpp.hardware.plc.driver import PlcBackend
from dcocpp.hardware.plc.emulated import InProcessPlcHardware
from dcocpp.hardware.simulation import SimulatedHardware

__all__ = ["Hardware", "build_hardware"]


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
        return can.Bus(interface=cp.can_interface_type, channel=cp.can_interface)

    name = f"CAN bus {cp.can_interface} ({cp.can_interface_type})"
    return Hardware(PlcBackend(config.connectors, bus_factory=open_bus, bus_name=name), None)
