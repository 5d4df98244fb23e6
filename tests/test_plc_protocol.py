"""The PLC driver's protocol core by plain calls: no trio, no bus, the time an argument.

`BusProtocol.receive` takes a frame as the reader read it, `PlcProtocol.supervise(now)` is the
supervisor's look at the time, `command` / `relay_control_frame` / `relay_control_sent` are
what a command and the writer do. The driver's tests (tests/test_plc_driver.py) check the same
behaviour through the trio shell against the emulator; these pin the rules themselves.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import can
import pytest

from dcocpp.config import ConnectorConfig
from dcocpp.hardware.interface import (
    CablePlugged,
    CableUnplugged,
    EvDemand,
    FaultCleared,
    FaultKind,
    FaultRaised,
    HardwareEvent,
    RelayState,
)
from dcocpp.hardware.plc import codec
from dcocpp.hardware.plc.busprotocol import BusProtocol
from dcocpp.hardware.plc.parameters import CFG_GET, CFG_SET
from dcocpp.hardware.plc.protocol import PlcProtocol, ProtocolOptions
from tests.plc_frames import ESTOP_FRAMES, IDLE_FRAMES

PLC_ID = 3
CONNECTOR = ConnectorConfig(
    id=1, plc_id=PLC_ID, label="1", max_current_a=200.0, max_power_w=60_000.0
)
OPTIONS = ProtocolOptions(ack_timeout=0.3, rx_timeout=1.0, meter_stale=2.0, debounce_frames=2)


def frame(name: str, plc_id: int = PLC_ID, *, crc: bool = True, **signals: int) -> can.Message:
    """A PLC -> host frame: the idle PLC's `name` frame ("EnergyMeterData0" / "1" for the
    meter branches) with `signals` changed."""
    message = "EnergyMeterData" if name.startswith("EnergyMeterData") else name
    can_id, data = codec.encode(message, plc_id, IDLE_FRAMES.get(name, {}) | signals, scaling=False)
    if not crc:
        data = data[:7] + b"\0"
    return can.Message(arbitration_id=can_id, data=data, is_extended_id=True)


SESSION = {
    "SESSION_ACTIVE": 1,
    "SOC_PCT": 40,
    "EVDC_MAX_CURRENT_0p1A": 0,
    "EVDC_MAX_VOLTAGE_0p1V": 0,
    "EVDC_TARGET_CURRENT_0p1A": 0,
}


class Plc:
    """One PLC's protocol behind its bus protocol, fed at `now` (seconds)."""

    def __init__(self, options: ProtocolOptions = OPTIONS):
        self.bus = BusProtocol(options)
        self.plc: PlcProtocol = self.bus.add(CONNECTOR)
        self.now = 0.0
        self.plc.start(self.now)

    def receive(self, msg: can.Message) -> list[HardwareEvent]:
        received = self.bus.receive(msg, self.now)
        if received is None:
            return []
        plc, events = received
        assert plc is self.plc
        return events

    def idle(self) -> list[HardwareEvent]:
        """A healthy idle PLC's frames, once each."""
        return [e for name in IDLE_FRAMES for e in self.receive(frame(name))]

    def elapse(self, seconds: float) -> list[HardwareEvent]:
        self.now += seconds
        return self.plc.supervise(self.now)

    def control(self) -> dict[str, float | int]:
        """The RelayControl as it would go out now (decoded from its bytes)."""
        can_id, data = self.plc.relay_control_frame()
        decoded = codec.decode(can_id, data, scaling=False)
        assert decoded.message == "RelayControl" and decoded.plc_id == PLC_ID
        return dict(decoded.signals)


# --- RelayControl and acknowledgements -------------------------------------------------------


def test_every_command_takes_the_next_seq_and_is_due_at_once() -> None:
    p = Plc()
    assert not p.plc.control_due
    first = p.control()  # a keep-alive: seq 1, open, nothing forced
    assert (first["CMD_SEQ"], first["RLY1_CMD"], first["FORCE_ALL_OFF"]) == (1, 0, 0)
    assert p.plc.command(True, force_off=False) == 2
    assert p.plc.control_due
    sent = p.control()
    assert not p.plc.control_due  # taken: the writer's keep-alives repeat it
    assert (sent["CMD_SEQ"], sent["RLY1_CMD"], sent["SYS_ENABLE"]) == (2, 1, 1)
    assert p.plc.relay_control_frame() == p.plc.relay_control_frame()


def test_the_seq_wraps_from_255_to_1_never_0() -> None:
    p = Plc()
    seqs = [p.plc.command(False, force_off=False) for _ in range(256)]
    assert seqs[:2] == [2, 3] and seqs[253:] == [255, 1, 2]
    assert 0 not in seqs


def test_only_the_newest_command_applied_with_the_relay_in_its_state_is_acknowledged() -> None:
    p = Plc()
    p.idle()
    older = p.plc.command(True, force_off=False)
    newest = p.plc.command(True, force_off=False)
    closed = {"RLY1_STATE": 1, "RLY1_FEEDBACK": 1}
    p.receive(frame("RelayStatus", LAST_CMD_SEQ_APPLIED=older, **closed))
    assert not p.plc.acknowledged(True)  # an ack of an older command
    p.receive(frame("RelayStatus", LAST_CMD_SEQ_APPLIED=newest, RLY1_STATE=1))
    assert not p.plc.acknowledged(True)  # the auxiliary contact still open
    p.receive(frame("RelayStatus", LAST_CMD_SEQ_APPLIED=newest, **closed))
    assert p.plc.acknowledged(True)
    assert not p.plc.acknowledged(False)


def test_a_plc_latching_a_fault_whose_cause_is_gone_is_told_to_clear_it() -> None:
    p = Plc()
    p.idle()
    events = p.receive(frame("RelayStatus", COMM_FAULT=1, FAULT_REASON=1))
    assert events == [FaultRaised(FaultKind.COMMUNICATION, "PLC 3 reports relay control timeout")]
    assert p.control()["CLEAR_FAULTS"] == 1
    assert p.receive(frame("RelayStatus")) == [FaultCleared(FaultKind.COMMUNICATION)]
    assert p.control()["CLEAR_FAULTS"] == 0


# --- safety ----------------------------------------------------------------------------------


def test_an_estop_trips_at_once_with_a_new_open_command_and_force_all_off() -> None:
    p = Plc()
    p.idle()
    p.plc.command(True, force_off=False)
    p.control()
    events = p.receive(frame("RelayStatus", **ESTOP_FRAMES["RelayStatus"]))
    assert FaultRaised(FaultKind.EMERGENCY_STOP, "PLC 3: emergency stop") in events
    assert p.plc.safety_tripped and p.plc.control_due
    sent = p.control()
    assert (sent["CMD_SEQ"], sent["RLY1_CMD"], sent["FORCE_ALL_OFF"]) == (3, 0, 1)
    assert sent["CLEAR_FAULTS"] == 0  # the estop is latched for a cause that is not gone


def test_a_safety_input_is_released_only_after_debounce_frames_clear_frames() -> None:
    p = Plc()
    p.idle()
    p.receive(frame("SafetySwitchStatus", **ESTOP_FRAMES["SafetySwitchStatus"]))
    p.control()
    p.plc.relay_control_sent()
    assert p.receive(frame("SafetySwitchStatus")) == []  # one clear frame: a glitch?
    assert p.plc.safety_tripped
    # A CpStatus is no safety frame; the estop again restarts the count.
    p.receive(frame("CpStatus"))
    p.receive(frame("RelayStatus", **ESTOP_FRAMES["RelayStatus"]))
    assert p.receive(frame("SafetySwitchStatus")) == []
    assert p.receive(frame("RelayStatus")) == [FaultCleared(FaultKind.EMERGENCY_STOP)]
    assert not p.plc.safety_tripped
    # Released, the command is still the trip's open.
    control = p.control()
    assert (control["RLY1_CMD"], control["FORCE_ALL_OFF"]) == (0, 0)


def test_the_force_all_off_of_a_trip_stays_until_a_frame_carrying_it_went_out() -> None:
    p = Plc()
    p.idle()
    p.receive(frame("SafetySwitchStatus", **ESTOP_FRAMES["SafetySwitchStatus"]))
    assert p.control()["FORCE_ALL_OFF"] == 1  # taken, but its send failed
    p.receive(frame("SafetySwitchStatus"))
    p.receive(frame("SafetySwitchStatus"))  # released before any RelayControl went out
    assert not p.plc.safety_tripped
    assert p.control()["FORCE_ALL_OFF"] == 1
    p.plc.relay_control_sent()
    assert p.control()["FORCE_ALL_OFF"] == 0


def test_an_open_safety_chain_is_an_emergency_stop_naming_the_switches() -> None:
    p = Plc()
    p.idle()
    events = p.receive(frame("SafetySwitchStatus", SAFETY_OK=0, SW_STATES=0b110))
    assert events == [
        FaultRaised(FaultKind.EMERGENCY_STOP, "PLC 3: safety chain open (switches 0x02)")
    ]


# --- time --------------------------------------------------------------------------------------


def test_a_plc_silent_for_rx_timeout_is_a_communication_fault_until_it_talks() -> None:
    p = Plc()
    p.idle()
    assert p.elapse(0.5) == []
    lost = FaultRaised(FaultKind.COMMUNICATION, "PLC 3 communication lost")
    assert p.elapse(0.5) == [lost]
    assert p.elapse(5.0) == []  # silent meter data on top is not a second fault
    assert p.receive(frame("CpStatus")) == [FaultCleared(FaultKind.COMMUNICATION)]


def test_a_meter_without_fresh_data_for_meter_stale_is_a_meter_fault_until_fresh_data() -> None:
    p = Plc()
    p.idle()
    for _ in range(19):
        assert p.elapse(0.1) == []
        p.receive(frame("RelayStatus"))
        p.receive(frame("EnergyMeterData0", DATA_STALE=1))  # heard, but not fresh
    stale = FaultRaised(FaultKind.METER, "meter data stale")
    assert p.elapse(0.1) == [stale]
    assert p.receive(frame("EnergyMeterData0")) == [FaultCleared(FaultKind.METER)]


def test_a_relay_reported_against_the_command_is_a_power_switch_fault_forcing_all_off_at_once() -> (
    None
):
    p = Plc()
    p.idle()
    p.receive(frame("RelayStatus", RLY1_STATE=1, RLY1_FEEDBACK=1))  # commanded open
    assert p.elapse(0.2) == []
    events = p.elapse(0.1)
    assert events == [
        FaultRaised(FaultKind.POWER_SWITCH, "PLC 3: relay reported closed, commanded open")
    ]
    assert p.plc.control_due  # the very next frame carries it
    assert p.control()["FORCE_ALL_OFF"] == 1
    # It ends once debounce_frames reports in a row agree, and FORCE_ALL_OFF at once with it.
    assert p.receive(frame("RelayStatus")) == [RelayState(False)]
    assert p.receive(frame("RelayStatus")) == [FaultCleared(FaultKind.POWER_SWITCH)]
    assert p.plc.control_due and p.control()["FORCE_ALL_OFF"] == 0


def test_a_relay_is_not_judged_while_its_command_awaits_the_acknowledgement() -> None:
    p = Plc()
    p.idle()
    p.plc.command(True, force_off=False)
    with p.plc.awaiting_ack():
        p.receive(frame("RelayStatus"))  # still open: the PLC takes its relay_delay
        assert p.elapse(0.5) == []
    p.receive(frame("RelayStatus"))
    assert p.elapse(0.25) == []
    assert p.elapse(0.1) == [
        FaultRaised(FaultKind.POWER_SWITCH, "PLC 3: relay reported open, commanded closed")
    ]


# --- what the PLC says -----------------------------------------------------------------------


def test_the_gun_is_known_once_relay_cable_and_both_meter_branches_have_arrived() -> None:
    p = Plc()
    for name in ("RelayStatus", "CpStatus", "EnergyMeterData0", "SafetySwitchStatus"):
        p.receive(frame(name))
        assert not p.plc.known
    p.receive(frame("EnergyMeterData1"))
    assert p.plc.known


def test_cable_and_ev_demand_become_events_and_an_unplug_implies_the_demand_is_gone() -> None:
    p = Plc()
    p.idle()
    plugged = {"CP_STATE": 1, "PLUGGED": 1, "CP_VOLTAGE_0p1V": 90, "CP_DUTY_PCT": 5}
    assert p.receive(frame("CpStatus", **plugged)) == [CablePlugged()]
    assert p.receive(frame("CpStatus", **plugged | {"CP_STATE": 2, "EV_READY": 1})) == [
        EvDemand(True)
    ]
    assert p.receive(frame("CpStatus")) == [CableUnplugged()]
    assert p.plc.status().plugged is False and p.plc.status().ev_requesting is False


def test_the_meter_reads_exact_units_and_the_session_soc() -> None:
    p = Plc()
    p.idle()
    p.receive(
        frame(
            "EnergyMeterData0",
            VOLTAGE_0p1V=4000,
            CURRENT_0p01A=12_345,
            ACTIVE_POWER_0p01kW=4938,
        )
    )
    p.receive(frame("ChargingSession", **SESSION))
    reading = p.plc.meter()
    assert (reading.voltage_v, reading.current_a, reading.power_w) == (400.0, 123.45, 49_380.0)
    assert (reading.energy_wh, reading.soc) == (1_234_500.0, 40.0)
    p.receive(frame("ChargingSession", **SESSION | {"SESSION_ACTIVE": 0}))
    assert p.plc.meter().soc is None


def test_a_register_that_goes_back_is_not_believed() -> None:
    p = Plc()
    p.idle()
    assert p.plc.register_wh == 1_234_500.0
    events = p.receive(frame("EnergyMeterData1", IMPORT_ENERGY_0p1kWh=12_000))
    assert events == [FaultRaised(FaultKind.METER, "PLC 3: meter register went back 34500 Wh")]
    assert p.plc.register_wh == p.plc.meter().energy_wh == 1_234_500.0


def test_a_meter_over_range_is_no_reading() -> None:
    p = Plc()
    p.idle()
    p.receive(frame("EnergyMeterData0", VOLTAGE_0p1V=4000, CURRENT_0p01A=5000))
    events = p.receive(frame("EnergyMeterData0", OVERRANGE=1, CURRENT_0p01A=32_767))
    assert events == [FaultRaised(FaultKind.METER, "PLC 3: meter over range (OVERRANGE)")]
    # The relay is open: no current shows, not the last value in range.
    assert p.plc.meter().current_a == 0.0


def test_a_config_ack_answers_the_request_with_its_param_and_a_set_its_echoed_value() -> None:
    p = Plc()
    exchange = p.plc.config_exchange
    can_id, data = exchange.request(1, CFG_SET, 100)
    decoded = codec.decode(can_id, data, scaling=False)
    assert (decoded.message, decoded.plc_id) == ("ConfigCmd", PLC_ID)
    assert dict(decoded.signals) == {"CFG_PARAM_ID": 1, "CFG_OP": CFG_SET, "CFG_VALUE": 100}
    ack = {"ACK_STATUS": 0, "PLC_ID": PLC_ID}
    p.receive(frame("ConfigAck", CFG_PARAM_ID=2, CFG_VALUE=100, **ack))  # another param
    p.receive(frame("ConfigAck", CFG_PARAM_ID=1, CFG_VALUE=50, **ack))  # an earlier SET's
    assert exchange.pending and exchange.answer is None
    p.receive(frame("ConfigAck", CFG_PARAM_ID=1, CFG_VALUE=100, **ack))
    assert exchange.answer == (0, 100)
    exchange.end()
    exchange.request(1, CFG_GET, 0)
    p.receive(frame("ConfigAck", CFG_PARAM_ID=1, CFG_VALUE=160, **ack))
    assert exchange.answer == (0, 160)  # a GET takes any value


# --- sorting frames ----------------------------------------------------------------------------


def test_frames_not_from_a_configured_plc_are_ignored() -> None:
    p = Plc()
    host_frame = codec.encode("RelayControl", PLC_ID, p.plc.relay_control(), scaling=False)
    for msg in [
        frame("CpStatus", plc_id=4),
        can.Message(arbitration_id=host_frame[0], data=host_frame[1], is_extended_id=True),
        can.Message(arbitration_id=0x7FF, data=bytes(8), is_extended_id=True),
        can.Message(arbitration_id=0x113, data=bytes(8), is_extended_id=False),
        can.Message(arbitration_id=0x113, is_remote_frame=True, is_extended_id=True),
    ]:
        assert p.receive(msg) == []
    assert (p.bus.ignored, p.bus.rx_frames) == (5, 0)


def test_bad_crcs_and_undecodable_frames_are_dropped_and_counted() -> None:
    p = Plc()
    good = frame("CpStatus")
    bad = can.Message(
        arbitration_id=good.arbitration_id, data=bytes(good.data[:7]) + bytes([good.data[7] ^ 1])
    )
    short = can.Message(arbitration_id=good.arbitration_id, data=bytes(good.data[:6]))
    for msg in (bad, short):
        assert p.receive(msg) == []
    assert (p.bus.rx_frames, p.bus.crc_errors, p.bus.decode_errors) == (2, 1, 1)


def test_frames_without_crc_are_dropped_once_the_plc_has_sent_crcs() -> None:
    p = Plc()
    plugged = {"CP_STATE": 1, "PLUGGED": 1}
    assert p.receive(frame("CpStatus", crc=False, **plugged)) == [CablePlugged()]  # old firmware?
    p.receive(frame("RelayStatus"))  # no: it sends CRCs
    assert p.receive(frame("CpStatus", crc=False)) == []
    assert p.bus.crc_errors == 1
    assert p.plc.status().plugged


def test_a_repeated_frame_of_a_healthy_gun_is_not_decoded_but_counts_as_heard() -> None:
    p = Plc()
    p.idle()
    p.elapse(0.9)
    assert p.receive(frame("RelayStatus")) == []
    assert p.bus.repeats == 1
    assert p.elapse(0.9) == []  # heard at 0.9 s: not silent at 1.8 s


# --- the core is plain Python ------------------------------------------------------------------

CORE = ("protocol", "busprotocol", "faults", "meter", "parameters")


@pytest.mark.parametrize("module", CORE)
def test_the_protocol_core_uses_neither_trio_nor_a_bus_reader(module: str) -> None:
    spec = importlib.util.find_spec(f"dcocpp.hardware.plc.{module}")
    assert spec is not None and spec.origin is not None
    imported: set[str] = set()
    for node in ast.walk(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {name for name in imported if name.split(".")[0] == "trio"}
    assert not imported & {"dcocpp.hardware.plc.bridge", "dcocpp.hardware.plc.driver"}
