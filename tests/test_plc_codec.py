"""The PLC CAN contract: exact ids, exact bytes, CRC8, strictness, and a DBC cantools can read."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
from pathlib import Path

import cantools
import pytest
from cantools.database.can import Message, Signal
from hypothesis import given, settings
from hypothesis import strategies as st

from dcocpp.hardware.interface import HardwareError
from dcocpp.hardware.plc import (
    CrcError,
    PlcCodecError,
    crc8,
    decode,
    encode,
    frame_id,
    load_database,
    message_of,
    plc_id_of,
)

DBC = importlib.resources.files("dcocpp.hardware.plc").joinpath("dcocpp_plc.dbc")

BASE_IDS = {
    "CpStatus": 0x110,
    "ChargingSession": 0x120,
    "RelayStatus": 0x160,
    "EnergyMeterData": 0x170,
    "SafetySwitchStatus": 0x190,
    "ConfigAck": 0x1A0,
    "RelayControl": 0x340,
    "ConfigCmd": 0x380,
}

RELAY_CLOSE = {
    "RLY1_CMD": 1,
    "SYS_ENABLE": 1,
    "FORCE_ALL_OFF": 0,
    "CLEAR_FAULTS": 0,
    "CMD_SEQ": 42,
    "RLY_ENABLE_MASK": 0x01,
    "RLY_MODE": 0,
    "PULSE_MS": 0,
}
METER_FLAGS = {"METER_OK": 1, "COMM_ERROR": 0, "DATA_STALE": 0, "OVERRANGE": 0}


def crc8_bitwise(data: bytes) -> int:
    """Reference CRC-8/0x07 written independently of the codec's table."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc << 1) ^ 0x107 if crc & 0x80 else crc << 1
    return crc


# --- CRC -------------------------------------------------------------------------------------


def test_crc8_check_value() -> None:
    assert crc8(b"123456789") == 0xF4
    assert crc8(b"") == 0
    assert crc8_bitwise(b"123456789") == 0xF4


@given(st.binary(max_size=16))
def test_crc8_matches_bitwise_reference(data: bytes) -> None:
    assert crc8(data) == crc8_bitwise(data)


# --- ids -------------------------------------------------------------------------------------


def test_dbc_defines_exactly_the_contract_messages_at_base_ids() -> None:
    db = load_database()
    assert {m.name: m.frame_id for m in db.messages} == BASE_IDS
    for message in db.messages:
        assert message.is_extended_frame
        assert message.length == 8
        crc = message.get_signal_by_name("CRC8")
        assert (crc.start, crc.length, crc.byte_order) == (56, 8, "little_endian")
    assert db.dbc is not None
    assert db.dbc.attributes["Baudrate"].value == 125000


@pytest.mark.parametrize("name", sorted(BASE_IDS))
@pytest.mark.parametrize("plc_id", [0, 1, 7, 15])
def test_frame_ids_carry_plc_id_in_low_nibble(name: str, plc_id: int) -> None:
    can_id = frame_id(name, plc_id)
    assert can_id == BASE_IDS[name] | plc_id
    assert plc_id_of(can_id) == plc_id
    assert message_of(can_id).name == name


def test_frame_id_examples() -> None:
    assert frame_id("RelayControl", 3) == 0x343
    assert frame_id("ConfigCmd", 3) == 0x383
    assert frame_id("RelayStatus", 15) == 0x16F
    assert frame_id("EnergyMeterData", 2) == 0x172
    assert frame_id("ConfigAck", 9) == 0x1A9


@pytest.mark.parametrize("plc_id", [-1, 16, 255])
def test_plc_id_out_of_range(plc_id: int) -> None:
    with pytest.raises(PlcCodecError, match="plcId"):
        frame_id("RelayControl", plc_id)
    with pytest.raises(PlcCodecError, match="plcId"):
        encode("RelayControl", plc_id, RELAY_CLOSE)


@pytest.mark.parametrize("can_id", [0x000, 0x150, 0x440, 0x80000340, 0x2000_0340, -1])
def test_unknown_frame_ids(can_id: int) -> None:
    with pytest.raises(PlcCodecError):
        message_of(can_id)
    with pytest.raises(PlcCodecError):
        plc_id_of(can_id)
    with pytest.raises(PlcCodecError):
        decode(can_id, bytes(8))


def test_unknown_message_name() -> None:
    with pytest.raises(PlcCodecError, match="unknown PLC message"):
        frame_id("RelayKontrol", 0)


def test_codec_errors_are_hardware_errors() -> None:
    assert issubclass(CrcError, PlcCodecError)
    assert issubclass(PlcCodecError, HardwareError)


# --- exact frames ----------------------------------------------------------------------------


def _with_crc(first7: bytes) -> bytes:
    assert len(first7) == 7
    return first7 + bytes([crc8_bitwise(first7)])


def test_relay_control_bytes() -> None:
    can_id, data = encode("RelayControl", 3, RELAY_CLOSE)
    assert can_id == 0x343
    assert data == bytes.fromhex("03 2a 01 00 00 00 00 22")
    assert data == _with_crc(bytes.fromhex("03 2a 01 00 00 00 00"))


def test_relay_control_force_off_pulse_bytes() -> None:
    signals = {
        "RLY1_CMD": 0,
        "SYS_ENABLE": 0,
        "FORCE_ALL_OFF": 1,
        "CLEAR_FAULTS": 1,
        "CMD_SEQ": 255,
        "RLY_ENABLE_MASK": 0xA5,
        "RLY_MODE": 1,
        "PULSE_MS": 0x1234,
    }
    can_id, data = encode("RelayControl", 0, signals)
    assert can_id == 0x340
    assert data == _with_crc(bytes.fromhex("0c ff a5 01 34 12 00"))


def test_config_cmd_set_power_limit_bytes() -> None:
    # param 2 = power limit in W, set 50 kW
    can_id, data = encode("ConfigCmd", 1, {"CFG_PARAM_ID": 2, "CFG_OP": 1, "CFG_VALUE": 50_000})
    assert can_id == 0x381
    assert data == _with_crc(bytes.fromhex("02 01 50 c3 00 00 00"))


def test_config_cmd_negative_value_bytes() -> None:
    _, data = encode("ConfigCmd", 1, {"CFG_PARAM_ID": 1, "CFG_OP": 1, "CFG_VALUE": -2})
    assert data == _with_crc(bytes.fromhex("01 01 fe ff ff ff 00"))


def test_energy_meter_mux0_bytes_and_signed_round_trip() -> None:
    signals = {
        "MUX": 0,
        **METER_FLAGS,
        "VOLTAGE_0p1V": 812.3,
        "CURRENT_0p01A": -125.5,
        "ACTIVE_POWER_0p01kW": -101.94,
    }
    can_id, data = encode("EnergyMeterData", 1, signals)
    assert can_id == 0x171
    # 8123 = 0x1fbb, -12550 = 0xcefa, -10194 = 0xd82e, little endian
    assert data == bytes.fromhex("10 bb 1f fa ce 2e d8 ec")
    assert data == _with_crc(bytes.fromhex("10 bb 1f fa ce 2e d8"))
    raw = decode(can_id, data, scaling=False)
    assert raw.signals == {
        "MUX": 0,
        **METER_FLAGS,
        "VOLTAGE_0p1V": 8123,
        "CURRENT_0p01A": -12550,
        "ACTIVE_POWER_0p01kW": -10194,
    }
    physical = decode(can_id, data)
    assert physical.signals == signals  # rounded to the scale's decimals, no 812.3000000000001
    assert (physical.message, physical.plc_id, physical.crc_ok) == ("EnergyMeterData", 1, True)


def test_energy_meter_mux1_bytes() -> None:
    signals = {
        "MUX": 1,
        "METER_OK": 1,
        "COMM_ERROR": 0,
        "DATA_STALE": 1,
        "OVERRANGE": 0,
        "IMPORT_ENERGY_0p1kWh": 123456,
        "FREQ_0p01Hz": 5000,
    }
    can_id, data = encode("EnergyMeterData", 4, signals, scaling=False)
    assert can_id == 0x174
    assert data == _with_crc(bytes.fromhex("51 40 e2 01 00 88 13"))
    decoded = decode(can_id, data, scaling=False)
    assert decoded.signals == signals
    assert decode(can_id, data).signals["IMPORT_ENERGY_0p1kWh"] == 12345.6
    assert decode(can_id, data).signals["FREQ_0p01Hz"] == 50.0


def test_multiplexed_frames_decode_to_their_own_signal_sets() -> None:
    flags = set(METER_FLAGS) | {"MUX"}
    zeros = bytearray(8)
    mux0 = decode(0x170, bytes(zeros), scaling=False)
    zeros[0] = 1
    mux1 = decode(0x170, bytes(zeros), scaling=False)
    assert set(mux0.signals) == flags | {"VOLTAGE_0p1V", "CURRENT_0p01A", "ACTIVE_POWER_0p01kW"}
    assert set(mux1.signals) == flags | {"IMPORT_ENERGY_0p1kWh", "FREQ_0p01Hz"}
    zeros[0] = 2
    with pytest.raises(PlcCodecError, match="multiplexer"):
        decode(0x170, bytes(zeros))


def test_relay_status_decode_exact() -> None:
    # RLY1_STATE + RLY1_FEEDBACK + SAFETY_OK, switches 0x03, no fault, seq 42 applied
    data = _with_crc(bytes.fromhex("07 03 00 2a 00 00 00"))
    decoded = decode(0x16F, data)
    assert decoded.plc_id == 15
    assert decoded.signals == {
        "RLY1_STATE": 1,
        "RLY1_FEEDBACK": 1,
        "SAFETY_OK": 1,
        "EARTH_FAULT": 0,
        "ESTOP_INPUT": 0,
        "COMM_FAULT": 0,
        "FORCE_OFF_ACTIVE": 0,
        "SW_STATES": 3,
        "FAULT_REASON": 0,
        "LAST_CMD_SEQ_APPLIED": 42,
    }


def test_relay_status_fault_reason_is_an_int() -> None:
    data = _with_crc(bytes.fromhex("30 00 01 00 00 00 00"))  # estop + comm fault, timeout
    signals = decode(0x160, data).signals
    assert signals["FAULT_REASON"] == 1
    assert type(signals["FAULT_REASON"]) is int
    assert (signals["ESTOP_INPUT"], signals["COMM_FAULT"], signals["SAFETY_OK"]) == (1, 1, 0)
    choices = message_of(0x160).get_signal_by_name("FAULT_REASON").choices
    assert choices is not None
    assert {k: str(v) for k, v in choices.items()} == {
        0: "NONE",
        1: "RELAY_TIMEOUT",
        2: "BUS_OFF",
        3: "CRC_FAILURE",
        4: "ESTOP",
        5: "EARTH_FAULT",
        6: "REMOTE_FORCE_OFF",
        7: "RELAY_FEEDBACK_MISMATCH",
    }


def test_config_ack_decode_exact() -> None:
    # param 3 (relay timeout) ok, plcId 5 echoed, value 300 ms
    data = _with_crc(bytes.fromhex("03 50 2c 01 00 00 00"))
    decoded = decode(0x1A5, data)
    assert decoded.signals == {"CFG_PARAM_ID": 3, "ACK_STATUS": 0, "PLC_ID": 5, "CFG_VALUE": 300}


def test_safety_switch_status_decode_exact() -> None:
    data = _with_crc(bytes.fromhex("05 05 0f 00 00 00 00"))
    assert decode(0x192, data).signals == {
        "SW_STATES": 5,
        "ESTOP": 1,
        "SAFETY_OK": 0,
        "EARTH_FAULT": 1,
        "SW_MASK": 0x0F,
    }


def test_cp_status_and_charging_session_bytes() -> None:
    cp = {"CP_STATE": 2, "PLUGGED": 1, "EV_READY": 1, "CP_VOLTAGE_0p1V": 6.0, "CP_DUTY_PCT": 5}
    _, data = encode("CpStatus", 0, cp)
    assert data == _with_crc(bytes.fromhex("32 3c 00 05 00 00 00"))
    assert decode(0x110, data).signals == cp
    _, neg = encode("CpStatus", 0, {**cp, "CP_STATE": 5, "CP_VOLTAGE_0p1V": -12.0})
    assert neg[:3] == bytes.fromhex("35 88 ff")
    assert decode(0x110, neg).signals["CP_VOLTAGE_0p1V"] == -12.0
    session = {
        "SESSION_ACTIVE": 1,
        "SOC_PCT": 80,
        "EVDC_MAX_CURRENT_0p1A": 200.0,
        "EVDC_MAX_VOLTAGE_0p1V": 500.0,
        "EVDC_TARGET_CURRENT_0p1A": 125.5,
    }
    _, data = encode("ChargingSession", 2, session)
    # SOC 80 << 1 | 1 = 0xa1; 2000 = 0x07d0; 5000 = 0x1388; 1255 = 0x04e7
    assert data == _with_crc(bytes.fromhex("a1 d0 07 88 13 e7 04"))
    assert decode(0x122, data).signals == session


# --- CRC on decode ---------------------------------------------------------------------------


def test_wrong_crc_raises_crc_error() -> None:
    signals = dict.fromkeys(_payload_signals("RelayStatus"), 0) | {"LAST_CMD_SEQ_APPLIED": 7}
    _, data = encode("RelayStatus", 0, signals)
    assert data[7] != 0
    bad = data[:7] + bytes([data[7] ^ 0x01])
    with pytest.raises(CrcError):
        decode(0x160, bad)
    flipped = bytes([data[0] ^ 0x01]) + data[1:]
    with pytest.raises(CrcError):
        decode(0x160, flipped)


def test_zero_crc_byte_means_no_crc() -> None:
    data = bytes.fromhex("07 00 00 2a 00 00 00 00")  # its real CRC is non-zero
    assert crc8(data[:7]) != 0
    decoded = decode(0x160, data)
    assert decoded.crc_ok is False
    assert decoded.signals["LAST_CMD_SEQ_APPLIED"] == 42


def test_all_zero_frame_has_valid_crc() -> None:
    assert decode(0x160, bytes(8)).crc_ok is True


@pytest.mark.parametrize("length", [0, 7, 9])
def test_dlc_must_be_8(length: int) -> None:
    with pytest.raises(PlcCodecError, match="DLC"):
        decode(0x160, bytes(length))


# --- strict encoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "signals", "culprit"),
    [
        ("RelayControl", {**RELAY_CLOSE, "CMD_SEQ": 256}, "CMD_SEQ"),
        ("RelayControl", {**RELAY_CLOSE, "CMD_SEQ": -1}, "CMD_SEQ"),
        ("RelayControl", {**RELAY_CLOSE, "RLY_MODE": 2}, "RLY_MODE"),
        ("RelayControl", {**RELAY_CLOSE, "PULSE_MS": 70000}, "PULSE_MS"),
        (
            "EnergyMeterData",
            {
                "MUX": 0,
                **METER_FLAGS,
                "VOLTAGE_0p1V": 6553.6,
                "CURRENT_0p01A": 0,
                "ACTIVE_POWER_0p01kW": 0,
            },
            "VOLTAGE_0p1V",
        ),
        (
            "EnergyMeterData",
            {
                "MUX": 0,
                **METER_FLAGS,
                "VOLTAGE_0p1V": 0,
                "CURRENT_0p01A": -327.69,
                "ACTIVE_POWER_0p01kW": 0,
            },
            "CURRENT_0p01A",
        ),
        ("ConfigCmd", {"CFG_PARAM_ID": 1, "CFG_OP": 1, "CFG_VALUE": 2**31}, "CFG_VALUE"),
        ("ConfigCmd", {"CFG_PARAM_ID": 1, "CFG_OP": 2, "CFG_VALUE": 0}, "CFG_OP"),
        ("ConfigCmd", {"CFG_PARAM_ID": 1, "CFG_OP": 1}, "CFG_VALUE"),
    ],
)
def test_out_of_range_or_missing_rejected(
    message: str, signals: dict[str, float], culprit: str
) -> None:
    with pytest.raises(PlcCodecError, match=culprit):
        encode(message, 0, signals)


def test_unknown_or_crc_signal_rejected() -> None:
    with pytest.raises(PlcCodecError, match="RLY2_CMD"):
        encode("RelayControl", 0, {**RELAY_CLOSE, "RLY2_CMD": 1})
    with pytest.raises(PlcCodecError, match="CRC8"):
        encode("RelayControl", 0, {**RELAY_CLOSE, "CRC8": 0})
    with pytest.raises(PlcCodecError):  # MUX1 signal in a MUX0 frame
        encode(
            "EnergyMeterData",
            0,
            {
                "MUX": 0,
                **METER_FLAGS,
                "VOLTAGE_0p1V": 0,
                "CURRENT_0p01A": 0,
                "ACTIVE_POWER_0p01kW": 0,
                "FREQ_0p01Hz": 50,
            },
        )
    with pytest.raises(PlcCodecError):
        encode("EnergyMeterData", 0, {"MUX": 2, **METER_FLAGS})


# --- property: every message round-trips on raw values ---------------------------------------


def _payload_signals(name: str, mux: int | None = None) -> list[str]:
    message = load_database().get_message_by_name(name)
    return [s.name for s in _signals_of(message, mux)]


def _signals_of(message: Message, mux: int | None) -> list[Signal]:
    names: list[str] = []
    for node in message.signal_tree:
        if isinstance(node, str):
            names.append(node)
        else:
            for selector, branches in node.items():
                names.append(selector)
                names.extend(branches[0 if mux is None else mux])
    return [message.get_signal_by_name(n) for n in names if n != "CRC8"]


def _raw_bounds(signal: Signal) -> tuple[int, int]:
    if signal.is_signed:
        lo, hi = -(2 ** (signal.length - 1)), 2 ** (signal.length - 1) - 1
    else:
        lo, hi = 0, 2**signal.length - 1
    if signal.minimum is not None:
        lo = max(lo, round((signal.minimum - signal.offset) / signal.scale))
    if signal.maximum is not None:
        hi = min(hi, round((signal.maximum - signal.offset) / signal.scale))
    return lo, hi


def _variants() -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    for message in load_database().messages:
        if message.is_multiplexed():
            out.extend((message.name, mux) for mux in (0, 1))
        else:
            out.append((message.name, None))
    return out


@st.composite
def _frames(draw: st.DrawFn) -> tuple[str, int, dict[str, int]]:
    name, mux = draw(st.sampled_from(_variants()))
    message = load_database().get_message_by_name(name)
    values: dict[str, int] = {}
    for signal in _signals_of(message, mux):
        if signal.is_multiplexer:
            assert mux is not None
            values[signal.name] = mux
        else:
            values[signal.name] = draw(st.integers(*_raw_bounds(signal)))
    return name, draw(st.integers(0, 15)), values


@settings(max_examples=300, deadline=None)
@given(_frames())
def test_round_trip_raw_values(frame: tuple[str, int, dict[str, int]]) -> None:
    name, plc_id, values = frame
    can_id, data = encode(name, plc_id, values, scaling=False)
    assert len(data) == 8
    assert data[7] == crc8_bitwise(data[:7])
    decoded = decode(can_id, data, scaling=False)
    assert (decoded.message, decoded.plc_id, decoded.crc_ok) == (name, plc_id, True)
    assert decoded.signals == values
    # cantools alone agrees (the operator's tool sees what the driver sees)
    plain = load_database().decode_message(
        can_id & ~0xF, data, decode_choices=False, scaling=False, force_extended_id=True
    )
    assert isinstance(plain, dict)
    assert {k: v for k, v in plain.items() if k != "CRC8"} == values
    # and the physical encoding of the decoded physical values gives the same bytes
    assert encode(name, plc_id, decode(can_id, data).signals) == (can_id, data)


def test_every_message_is_covered_by_the_property() -> None:
    assert {name for name, _ in _variants()} == set(BASE_IDS)


# --- the shipped file ------------------------------------------------------------------------


def test_dbc_loads_strictly_from_installed_location() -> None:
    with importlib.resources.as_file(DBC) as path:
        db = cantools.database.load_file(str(path), strict=True)
    assert isinstance(db, cantools.database.can.Database)
    assert sorted(m.name for m in db.messages) == sorted(BASE_IDS)
    readme = importlib.resources.files("dcocpp.hardware.plc").joinpath("README.md")
    assert "0x07" in readme.read_text("utf-8")


def test_cantools_dump_works() -> None:
    with importlib.resources.as_file(DBC) as path:
        result = subprocess.run(
            [sys.executable, "-m", "cantools", "dump", str(Path(path))],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    assert "RelayControl" in result.stdout
    assert "EnergyMeterData" in result.stdout
    assert "0x340" in result.stdout
