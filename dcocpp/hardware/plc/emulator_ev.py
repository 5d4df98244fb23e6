"""What an emulated PLC sees behind its relay: the plugged EV (control pilot, charging session)
and the DC meter, charged with `hardware/ev.py`'s model (`EvModel` and its closed-form charge
curve, which `SimulatedHardware` uses too, so both simulated backends charge alike). Pure: no
trio, no bus; `emulator.PlcEmulator` passes the time (trio's clock) and sends the frames built
here.
"""

from __future__ import annotations

import math

from dcocpp.config import ConnectorConfig
from dcocpp.hardware.ev import EvModel, battery_voltage, seconds_to_soc, soc_after
from dcocpp.hardware.interface import MeterReading

__all__ = ["CP_A", "CP_B", "CP_C", "MAX_REGISTER_WH", "EmulatedEv"]

CP_A, CP_B, CP_C = 0, 1, 2
_CP_VOLTS = {CP_A: 12.0, CP_B: 9.0, CP_C: 6.0}
_DC_DUTY_PCT = 5  # IEC 61851-23: 5 % duty = "use digital communication"
_RAW_S16_MAX = 32767
MAX_REGISTER_WH = (2**32 - 1) * 100  # IMPORT_ENERGY_0p1kWh is a u32 of 0.1 kWh


class EmulatedEv:
    """The EV on one gun's cable (`plugged`, None while there is none) and the gun's meter register
    (`energy_wh`), brought up to a time by `advance`. Energy flows while an EV is plugged and
    requesting and the relay's contacts are closed (`set_contacts`): constant current =
    min(EV max, `current_limit_a`, the connector's maxCurrentA), capped at
    min(`power_limit_w`, maxPowerW). Every change of what the flow depends on takes the time,
    so the energy before it is settled at the old rate."""

    def __init__(self, connector: ConnectorConfig, energy_wh: float):
        self._config = connector
        self.current_limit_a = connector.max_current_a  # ConfigCmd parameter 1
        self.power_limit_w = connector.max_power_w  # ConfigCmd parameter 2
        self.plugged: EvModel | None = None
        self.soc = 0.0
        self.suspended = False
        self.energy_wh = energy_wh
        self._contacts_closed = False
        self._updated_at: float | None = None  # see `start`
        self.frozen: MeterReading | None = None  # the values shown while DATA_STALE
        self.overrange = False

    # --- changes ---------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """The PLC runs from `now`: the time the model advances from."""
        self._updated_at = now

    @property
    def started(self) -> bool:
        return self._updated_at is not None

    def set_contacts(self, closed: bool, now: float) -> None:
        self.advance(now)
        self._contacts_closed = closed

    def set_limits(
        self, now: float, *, current_a: float | None = None, power_w: float | None = None
    ) -> None:
        self.advance(now)  # settle the energy delivered under the old limit
        if current_a is not None:
            self.current_limit_a = current_a
        if power_w is not None:
            self.power_limit_w = power_w

    def plug(self, ev: EvModel, now: float) -> None:
        self.advance(now)
        self.plugged = ev
        self.soc = ev.soc
        self.suspended = False

    def unplug(self, now: float) -> None:
        self.advance(now)
        self.plugged = None
        self.suspended = False

    def set_suspended(self, suspended: bool, now: float) -> None:
        self.advance(now)
        self.suspended = suspended

    def set_stale(self, active: bool, now: float) -> None:
        """The meter's values frozen (active) or live again; the energy flows on underneath."""
        self.advance(now)
        if active and self.frozen is None:
            self.frozen = self._live_reading()
        elif not active:
            self.frozen = None

    def set_register(self, energy_wh: float, now: float) -> None:
        if not 0 <= energy_wh <= MAX_REGISTER_WH:
            raise ValueError(f"register {energy_wh} Wh outside 0..{MAX_REGISTER_WH}")
        self.advance(now)
        self.energy_wh = float(energy_wh)

    # --- the model ---------------------------------------------------------------------------

    @property
    def requesting(self) -> bool:
        ev = self.plugged
        return ev is not None and not self.suspended and self.soc < ev.target_soc

    def _flow(self) -> tuple[EvModel, float, float] | None:
        """(EV, constant current, power cap) while energy flows at all."""
        ev = self.plugged
        if ev is None or not self._contacts_closed or not self.requesting:
            return None
        amps = min(ev.max_current_a, self.current_limit_a, self._config.max_current_a)
        watts = min(self.power_limit_w, self._config.max_power_w)
        return (ev, amps, watts) if amps > 0 and watts > 0 else None

    def advance(self, now: float) -> None:
        """Bring the SoC and the register up to `now` (closed form, so the result does not
        depend on how often anyone looks)."""
        flow = self._flow()
        if flow is not None and self._updated_at is not None:
            ev, amps, watts = flow
            elapsed = now - self._updated_at
            full = seconds_to_soc(self.soc, ev.target_soc, amps, watts, ev.capacity_wh)
            if elapsed >= full:
                soc = ev.target_soc
            else:
                soc = min(soc_after(self.soc, elapsed, amps, watts, ev.capacity_wh), ev.target_soc)
            self.energy_wh += (soc - self.soc) * ev.capacity_wh / 100.0
            self.soc = soc
        self._updated_at = now

    def reading(self, now: float | None) -> MeterReading:
        """What the meter reports at `now` (None: as last advanced; frozen while stale)."""
        if now is not None:
            self.advance(now)
        return self.frozen if self.frozen is not None else self._live_reading()

    def _live_reading(self) -> MeterReading:
        soc = self.soc if self.plugged is not None else None
        flow = self._flow()
        if flow is None:
            return MeterReading(
                energy_wh=self.energy_wh, power_w=0.0, current_a=0.0, voltage_v=0.0, soc=soc
            )
        _, amps, watts = flow
        volts = battery_voltage(self.soc)
        amps = min(amps, watts / volts)
        return MeterReading(
            energy_wh=self.energy_wh,
            power_w=volts * amps,
            current_a=amps,
            voltage_v=volts,
            soc=soc,
        )

    # --- frames (raw signals) -----------------------------------------------------------------

    def cp_status(self) -> dict[str, int]:
        cp_state = CP_A if self.plugged is None else (CP_C if self.requesting else CP_B)
        return {
            "CP_STATE": cp_state,
            "PLUGGED": int(self.plugged is not None),
            "EV_READY": int(cp_state == CP_C),
            "CP_VOLTAGE_0p1V": round(_CP_VOLTS[cp_state] * 10),
            "CP_DUTY_PCT": 100 if cp_state == CP_A else _DC_DUTY_PCT,
        }

    def meter_data(self, mux: int, now: float) -> dict[str, int]:
        """EnergyMeterData of branch `mux`: values beyond the contract's range are clamped
        and flagged OVERRANGE (in both branches)."""
        reading = self.reading(now)
        current = round(reading.current_a * 100)
        power = round(reading.power_w / 10)  # 0.01 kW
        if self.overrange:
            current = power = _RAW_S16_MAX + 1
        overrange = abs(current) > _RAW_S16_MAX or abs(power) > _RAW_S16_MAX
        flags = {
            "MUX": mux,
            "METER_OK": 1,
            "COMM_ERROR": 0,
            "DATA_STALE": int(self.frozen is not None),
            "OVERRANGE": int(overrange),
        }
        if mux == 0:
            signals = {
                "VOLTAGE_0p1V": min(round(reading.voltage_v * 10), 0xFFFF),
                "CURRENT_0p01A": max(-_RAW_S16_MAX, min(current, _RAW_S16_MAX)),
                "ACTIVE_POWER_0p01kW": max(-_RAW_S16_MAX, min(power, _RAW_S16_MAX)),
            }
        else:
            # A register never shows energy not yet delivered: floor, not round.
            signals = {"IMPORT_ENERGY_0p1kWh": int(reading.energy_wh // 100), "FREQ_0p01Hz": 0}
        return flags | signals

    def session(self, now: float) -> dict[str, int]:
        """ChargingSession: the plugged EV's, or the one that says the session is over."""
        ev = self.plugged
        if ev is None:
            return {
                "SESSION_ACTIVE": 0,
                "SOC_PCT": 0,
                "EVDC_MAX_CURRENT_0p1A": 0,
                "EVDC_MAX_VOLTAGE_0p1V": 0,
                "EVDC_TARGET_CURRENT_0p1A": 0,
            }
        self.advance(now)
        max_current = min(round(ev.max_current_a * 10), 0xFFFF)
        return {
            "SESSION_ACTIVE": 1,
            "SOC_PCT": min(100, math.floor(self.soc)),
            "EVDC_MAX_CURRENT_0p1A": max_current,
            "EVDC_MAX_VOLTAGE_0p1V": round(battery_voltage(100.0) * 10),
            "EVDC_TARGET_CURRENT_0p1A": max_current if self.requesting else 0,
        }
