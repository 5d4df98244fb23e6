"""One gun's DC meter as the PLC driver believes it. Pure: no trio, no bus; the time is an
argument.

EnergyMeterData carries the meter in two branches: MUX 0 the instantaneous values, MUX 1 the
import register. The meter is believed only where physics allows: a frame with OVERRANGE (the
contract's ranges are ±327.67 A / kW, far above any gun's rating) is no reading at all, and a
register is taken only as `registercheck.RegisterGuard` believes it (never lower than the last
one believed, never risen faster than the gun's rating allows); why it is not believed now is
`doubt`.
"""

from __future__ import annotations

from collections.abc import Mapping

from dcocpp.hardware.interface import MeterReading
from dcocpp.hardware.registercheck import RegisterGuard

__all__ = ["BelievedMeter"]


class BelievedMeter:
    """The last fresh values in range (`voltage_v`, `current_a`, `power_w`) and the register
    believed (`energy_wh`, 0 until the first one; `register_wh`, None until then)."""

    def __init__(self, max_power_w: float):
        self.voltage_v = 0.0
        self.current_a = 0.0
        self.power_w = 0.0
        self.energy_wh = 0.0
        self._register = RegisterGuard(max_power_w)

    @property
    def register_wh(self) -> float | None:
        return self._register.energy_wh

    @property
    def doubt(self) -> str | None:
        """Why the meter is not believed now (None: it is)."""
        return self._register.doubt

    def take(self, s: Mapping[str, float | int], now: float, *, relay_closed: bool) -> str | None:
        """A fresh EnergyMeterData (METER_OK, not DATA_STALE, no COMM_ERROR), raw signals,
        read at `now`: the branch taken ("EnergyMeterData0" or "EnergyMeterData1"), or None
        when the frame is no reading (over range)."""
        register = self._register
        if s["OVERRANGE"]:
            register.distrust("meter over range (OVERRANGE)")
            if not relay_closed:
                # Nothing flows through an open relay: the last values taken in range (of
                # the session the fault stopped) would be shown on a faulted, idle gun.
                self.current_a = self.power_w = 0.0
            return None
        if s["MUX"] == 0:
            # Raw integers: exact units without float artifacts of the scaled decode.
            self.voltage_v = int(s["VOLTAGE_0p1V"]) / 10
            self.current_a = int(s["CURRENT_0p01A"]) / 100
            self.power_w = int(s["ACTIVE_POWER_0p01kW"]) * 10.0
            return "EnergyMeterData0"
        if s["MUX"] == 1:
            self.still(int(s["IMPORT_ENERGY_0p1kWh"]) * 100.0, now)
            return "EnergyMeterData1"
        return None

    def still(self, register_wh: float, now: float) -> None:
        """A register reported at `now` (again, for a repeated frame: the same register,
        later, bounds the next rise closer)."""
        register = self._register
        register.feed(register_wh, now)
        if register.energy_wh is not None:
            self.energy_wh = register.energy_wh

    def reading(self, soc: float | None) -> MeterReading:
        return MeterReading(
            energy_wh=self.energy_wh,
            power_w=self.power_w,
            current_a=self.current_a,
            voltage_v=self.voltage_v,
            soc=soc,
        )
