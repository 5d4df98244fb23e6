"""PLC -> host frames as the PLC tests send them (raw signal values, the codec adds the CRC)."""

from __future__ import annotations

Signals = dict[str, int]

# What a healthy, idle PLC reports (raw values), per frame; EnergyMeterData by MUX branch.
IDLE_FRAMES: dict[str, Signals] = {
    "RelayStatus": {
        "RLY1_STATE": 0,
        "RLY1_FEEDBACK": 0,
        "SAFETY_OK": 1,
        "EARTH_FAULT": 0,
        "ESTOP_INPUT": 0,
        "COMM_FAULT": 0,
        "FORCE_OFF_ACTIVE": 0,
        "SW_STATES": 0,
        "FAULT_REASON": 0,
        "LAST_CMD_SEQ_APPLIED": 0,
    },
    "SafetySwitchStatus": {
        "SW_STATES": 0,
        "ESTOP": 0,
        "SAFETY_OK": 1,
        "EARTH_FAULT": 0,
        "SW_MASK": 0b11,
    },
    "CpStatus": {
        "CP_STATE": 0,
        "PLUGGED": 0,
        "EV_READY": 0,
        "CP_VOLTAGE_0p1V": 120,
        "CP_DUTY_PCT": 100,
    },
    "EnergyMeterData0": {
        "MUX": 0,
        "METER_OK": 1,
        "COMM_ERROR": 0,
        "DATA_STALE": 0,
        "OVERRANGE": 0,
        "VOLTAGE_0p1V": 0,
        "CURRENT_0p01A": 0,
        "ACTIVE_POWER_0p01kW": 0,
    },
    "EnergyMeterData1": {
        "MUX": 1,
        "METER_OK": 1,
        "COMM_ERROR": 0,
        "DATA_STALE": 0,
        "OVERRANGE": 0,
        "IMPORT_ENERGY_0p1kWh": 12_345,
        "FREQ_0p01Hz": 0,
    },
}
ESTOP_FRAMES: dict[str, Signals] = {
    "RelayStatus": {"ESTOP_INPUT": 1, "SAFETY_OK": 0, "SW_STATES": 0b01, "FAULT_REASON": 4},
    "SafetySwitchStatus": {"ESTOP": 1, "SAFETY_OK": 0, "SW_STATES": 0b01},
}
