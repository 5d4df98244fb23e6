"""The simulated EV's battery: what both simulators (the in-process hardware and the PLC
emulator) charge. Constant current until the connector's power limit binds, then constant power;
the battery voltage rises with the state of charge, so both phases are integrated exactly
(frequent meter reads do not change the energy)."""

from __future__ import annotations

import math

import attrs

_VOLTS_AT_EMPTY = 350.0
_VOLTS_PER_SOC = 1.2
INITIAL_REGISTER_WH = 1_000_000.0
REGISTER_STEP_WH = 100_000.0  # so that each gun's meter reads visibly differently

_percent = attrs.validators.and_(attrs.validators.ge(0.0), attrs.validators.le(100.0))


@attrs.frozen
class EvModel:
    """The EV a test or operator plugs in: its battery and what it asks for."""

    capacity_wh: float = attrs.field(default=75_000.0, validator=attrs.validators.gt(0.0))
    soc: float = attrs.field(default=20.0, validator=_percent)
    max_current_a: float = attrs.field(default=250.0, validator=attrs.validators.gt(0.0))
    target_soc: float = attrs.field(default=100.0, validator=_percent)


def battery_voltage(soc: float) -> float:
    return _VOLTS_AT_EMPTY + _VOLTS_PER_SOC * soc


def crossover_soc(amps: float, max_power_w: float) -> float:
    """Above this SoC the connector's power limit binds rather than the current."""
    return (max_power_w / amps - _VOLTS_AT_EMPTY) / _VOLTS_PER_SOC


def soc_after(soc: float, seconds: float, amps: float, max_power_w: float, cap: float) -> float:
    crossover = crossover_soc(amps, max_power_w)
    if soc < crossover:
        growth = _VOLTS_PER_SOC * amps / (36.0 * cap)  # of the voltage, per second
        cc_seconds = math.log(battery_voltage(crossover) / battery_voltage(soc)) / growth
        if seconds <= cc_seconds:
            # expm1 keeps the tiny increments of frequent reads exact.
            return soc + battery_voltage(soc) * math.expm1(growth * seconds) / _VOLTS_PER_SOC
        soc, seconds = crossover, seconds - cc_seconds
    return soc + max_power_w * seconds / (36.0 * cap)


def seconds_to_soc(soc: float, target: float, amps: float, max_power_w: float, cap: float) -> float:
    crossover = crossover_soc(amps, max_power_w)
    seconds = 0.0
    if soc < crossover:
        growth = _VOLTS_PER_SOC * amps / (36.0 * cap)
        reached = min(target, crossover)
        seconds = math.log(battery_voltage(reached) / battery_voltage(soc)) / growth
        soc = reached
    return seconds + max(0.0, target - soc) * 36.0 * cap / max_power_w
