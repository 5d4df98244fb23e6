"""Properties of the PLC driver's protocol core fed frames by plain calls, the time an
argument: `BusProtocol.receive` is what the reader calls per frame, `PlcProtocol.supervise`
what the supervisor calls per period, `PlcProtocol.command` what a relay command does.

- The repeat fast path (`PlcProtocol.repeat`): a frame equal to the last one of its id, from a
  healthy gun, is not decoded. For any sequence of frames (lies included: relays reported
  against the command, registers that go back or jump, meters over range), commands and
  elapsed time, a driver with the fast path ends every step exactly where a driver that
  decodes every frame does: the same hardware events, the same state, the same RelayControl.
- A relay reported otherwise than commanded: a POWER_SWITCH fault once it has lasted the ack
  deadline, FORCE_ALL_OFF exactly while that fault lasts, and recovery once the reports agree
  again."""

from __future__ import annotations

from typing import Any

import attrs
import can
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dcocpp.config import ConnectorConfig
from dcocpp.hardware.interface import FaultKind, HardwareEvent
from dcocpp.hardware.plc import codec
from dcocpp.hardware.plc.busprotocol import BusProtocol
from dcocpp.hardware.plc.protocol import PlcProtocol, ProtocolOptions
from tests.plc_frames import IDLE_FRAMES

PLC_ID = 3
DEBOUNCE = 2

_RELAY = IDLE_FRAMES["RelayStatus"]
_SWITCHES = IDLE_FRAMES["SafetySwitchStatus"]
_CP = IDLE_FRAMES["CpStatus"]
_METER0 = IDLE_FRAMES["EnergyMeterData0"] | {"VOLTAGE_0p1V": 4000, "CURRENT_0p01A": 100}
_METER1 = IDLE_FRAMES["EnergyMeterData1"]
_SESSION = {
    "SESSION_ACTIVE": 1,
    "SOC_PCT": 50,
    "EVDC_MAX_CURRENT_0p1A": 0,
    "EVDC_MAX_VOLTAGE_0p1V": 0,
    "EVDC_TARGET_CURRENT_0p1A": 0,
}
_ACK = {"CFG_PARAM_ID": 1, "ACK_STATUS": 0, "PLC_ID": PLC_ID, "CFG_VALUE": 60}

# (message, signals): a few values of every field the driver acts on, healthy and not.
_VARIANTS: list[tuple[str, dict[str, int]]] = [
    ("RelayStatus", _RELAY),
    ("RelayStatus", _RELAY | {"RLY1_STATE": 1, "RLY1_FEEDBACK": 1, "LAST_CMD_SEQ_APPLIED": 2}),
    ("RelayStatus", _RELAY | {"LAST_CMD_SEQ_APPLIED": 3}),
    ("RelayStatus", _RELAY | {"ESTOP_INPUT": 1, "SAFETY_OK": 0, "SW_STATES": 1, "FAULT_REASON": 4}),
    ("RelayStatus", _RELAY | {"EARTH_FAULT": 1, "SAFETY_OK": 0, "FAULT_REASON": 5}),
    ("RelayStatus", _RELAY | {"SAFETY_OK": 0, "SW_STATES": 2}),
    ("RelayStatus", _RELAY | {"COMM_FAULT": 1, "FAULT_REASON": 1}),
    ("RelayStatus", _RELAY | {"FAULT_REASON": 7}),
    # The relay (its coil, or its auxiliary contact) reported against the command.
    ("RelayStatus", _RELAY | {"RLY1_STATE": 1}),
    ("RelayStatus", _RELAY | {"RLY1_FEEDBACK": 1}),
    ("SafetySwitchStatus", _SWITCHES),
    ("SafetySwitchStatus", _SWITCHES | {"ESTOP": 1, "SAFETY_OK": 0, "SW_STATES": 1}),
    ("SafetySwitchStatus", _SWITCHES | {"EARTH_FAULT": 1, "SAFETY_OK": 0}),
    ("SafetySwitchStatus", _SWITCHES | {"SAFETY_OK": 0, "SW_STATES": 2}),
    ("CpStatus", _CP),
    ("CpStatus", _CP | {"CP_STATE": 1, "PLUGGED": 1, "CP_VOLTAGE_0p1V": 90}),
    ("CpStatus", _CP | {"CP_STATE": 2, "PLUGGED": 1, "EV_READY": 1, "CP_VOLTAGE_0p1V": 60}),
    ("EnergyMeterData", _METER0),
    ("EnergyMeterData", _METER0 | {"CURRENT_0p01A": 15_000, "ACTIVE_POWER_0p01kW": 600}),
    ("EnergyMeterData", _METER0 | {"DATA_STALE": 1}),
    ("EnergyMeterData", _METER0 | {"OVERRANGE": 1, "CURRENT_0p01A": 32_767}),
    ("EnergyMeterData", _METER1),
    # Registers: one step up (plausible), back, 0, a jump of 1 MWh; and over range.
    ("EnergyMeterData", _METER1 | {"IMPORT_ENERGY_0p1kWh": 12_346}),
    ("EnergyMeterData", _METER1 | {"IMPORT_ENERGY_0p1kWh": 101}),
    ("EnergyMeterData", _METER1 | {"IMPORT_ENERGY_0p1kWh": 0}),
    ("EnergyMeterData", _METER1 | {"IMPORT_ENERGY_0p1kWh": 22_345}),
    ("EnergyMeterData", _METER1 | {"OVERRANGE": 1}),
    ("EnergyMeterData", _METER1 | {"METER_OK": 0, "COMM_ERROR": 1}),
    ("ChargingSession", _SESSION),
    ("ChargingSession", _SESSION | {"SOC_PCT": 51}),
    ("ChargingSession", _SESSION | {"SESSION_ACTIVE": 0}),
    ("ConfigAck", _ACK),
]


def _zero_crc_cp_status() -> dict[str, int]:
    """A plugged CpStatus whose real CRC8 is 0: on the wire it looks like a frame without CRC,
    yet it is valid, so even a PLC known to send CRCs gets it accepted."""
    for volts in range(1000):
        signals = _CP | {"CP_STATE": 1, "PLUGGED": 1, "CP_VOLTAGE_0p1V": volts}
        if codec.encode("CpStatus", PLC_ID, signals, scaling=False)[1][7] == 0:
            return signals
    raise AssertionError("no CpStatus with CRC 0")


def _frames() -> list[can.Message]:
    """Every variant with its CRC; the CpStatus and RelayStatus ones also without (byte 7
    zero: old firmware, or a frame a CRC-sending PLC may not send) and with a wrong CRC."""
    frames = []
    for name, signals in [*_VARIANTS, ("CpStatus", _zero_crc_cp_status())]:
        can_id, data = codec.encode(name, PLC_ID, signals, scaling=False)
        payloads = [data]
        if name in ("CpStatus", "RelayStatus"):
            payloads += [data[:7] + b"\0", data[:7] + bytes([data[7] ^ 0x5A])]
        frames += [
            can.Message(arbitration_id=can_id, data=payload, is_extended_id=True)
            for payload in payloads
        ]
    return frames


FRAMES = _frames()


# A step: a frame (its index in FRAMES), one of the last three frames again (`Again`: most
# of a real bus's frames repeat an earlier one), or time passing and the supervisor looking
# (`Elapse`, seconds; the rx timeout is 1 s, the stale-meter one 2 s).
@attrs.frozen
class Again:
    back: int


@attrs.frozen
class Elapse:
    seconds: float


@attrs.frozen
class Command:
    """The host commands the relay (a new CMD_SEQ, as `set_relay` or a safety trip does)."""

    closed: bool


Step = int | Again | Elapse | Command


CONNECTOR = ConnectorConfig(
    id=1,
    plc_id=PLC_ID,
    label="1",
    max_current_a=200.0,
    max_power_w=60_000.0,
)


def _plain(value: Any) -> Any:
    """A protocol object as comparable data: its attributes, nested objects of the hardware
    layer by theirs (attrs classes compare by value already)."""
    if type(value).__module__.startswith("dcocpp.hardware") and not attrs.has(type(value)):
        return {name: _plain(v) for name, v in vars(value).items()}
    return value


def _state(plc: PlcProtocol) -> dict[str, Any]:
    """Everything a frame can change: what anyone reads, and the protocol's whole state but the
    repeat path's memory of frames (and the switch that turns the path off)."""
    state = _plain(plc)
    del state["_last_frame"], state["_decode_repeats"]
    return {
        "status": plc.status(),
        "meter": plc.meter(),
        "relay_control": plc.relay_control(),
        **state,
    }


def _counts(bus: BusProtocol) -> dict[str, int]:
    """The receive counters but `repeats`."""
    return {
        "rx_frames": bus.rx_frames,
        "ignored": bus.ignored,
        "crc_errors": bus.crc_errors,
        "decode_errors": bus.decode_errors,
    }


def _run(steps: list[Step]) -> None:
    options = ProtocolOptions(debounce_frames=DEBOUNCE)
    # The reference decodes every frame: it never has a frame to compare with.
    buses = [BusProtocol(options), BusProtocol(options, decode_repeats=True)]
    full = buses[1]
    plcs = [bus.add(CONNECTOR) for bus in buses]
    now = 0.0
    sent: list[can.Message] = []
    for n, step in enumerate(steps):
        events: list[list[HardwareEvent]] = [[], []]
        if isinstance(step, Command):
            for plc in plcs:
                plc.command(step.closed, force_off=False)
        elif isinstance(step, Elapse):
            now += step.seconds
            for i, plc in enumerate(plcs):
                events[i] = plc.supervise(now)
        else:
            if isinstance(step, Again):
                if len(sent) < step.back:
                    continue
                msg = sent[-step.back]
            else:
                msg = FRAMES[step]
            sent.append(msg)
            for i, bus in enumerate(buses):
                received = bus.receive(msg, now)
                if received is not None:
                    events[i] = received[1]
        got_fast, got_full = events
        assert got_fast == got_full, f"step {n}: {steps[: n + 1]}"
        assert _state(plcs[0]) == _state(plcs[1]), f"step {n}: {steps[: n + 1]}"
        counts = [_counts(bus) for bus in buses]
        assert counts[0] == counts[1]
    assert full.repeats == 0


_BY_MESSAGE: dict[str, list[int]] = {}
for _i, _msg in enumerate(FRAMES):
    _BY_MESSAGE.setdefault(codec.message_of(_msg.arbitration_id).name, []).append(_i)


def _frame(name: str, signals: dict[str, int]) -> int:
    """The index in FRAMES of this frame, with its CRC."""
    can_id, data = codec.encode(name, PLC_ID, signals, scaling=False)
    return next(
        i for i, m in enumerate(FRAMES) if m.arbitration_id == can_id and bytes(m.data) == data
    )


STEPS = st.lists(
    st.one_of(
        st.sampled_from(sorted(_BY_MESSAGE)).flatmap(lambda m: st.sampled_from(_BY_MESSAGE[m])),
        st.builds(Again, st.integers(1, 3)),
        st.builds(Again, st.integers(1, 3)),
        st.builds(Elapse, st.sampled_from([0.05, 0.3, 1.2, 2.5])),
        st.builds(Command, st.booleans()),
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=1000, deadline=None)
@given(steps=STEPS)
# A valid frame with CRC 0 is accepted but cannot be remembered: it must still replace the
# remembered one, else the next unplugged CpStatus would look like a repeat.
@example(steps=[_frame("CpStatus", _CP), _frame("CpStatus", _zero_crc_cp_status()), Again(2)])
# While a safety input is tripped, a repeated clear frame counts towards its release.
@example(
    steps=[
        _frame("RelayStatus", _RELAY),
        _frame("SafetySwitchStatus", _SWITCHES | {"ESTOP": 1, "SAFETY_OK": 0, "SW_STATES": 1}),
        Again(2),
    ]
)
# A frame that left the gun unhealthy is no repeat later: this estop must trip again once
# the first one has been released by clear RelayStatus frames.
@example(
    steps=[
        _frame("SafetySwitchStatus", _SWITCHES | {"ESTOP": 1, "SAFETY_OK": 0, "SW_STATES": 1}),
        _frame("RelayStatus", _RELAY),
        Again(1),
        Again(3),
    ]
)
# A repeat after a silence ends the communication fault ...
@example(steps=[_frame("RelayStatus", _RELAY), Elapse(1.2), Again(1)])
# ... and a repeated fresh meter frame ends a stale-meter fault.
@example(
    steps=[
        _frame("EnergyMeterData", _METER0),
        *[Elapse(0.3), _frame("RelayStatus", _RELAY)] * 7,
        _frame("EnergyMeterData", _METER0),
    ]
)
def test_a_repeat_changes_nothing_a_decode_would(steps: list[Step]) -> None:
    _run(steps)


def test_repeats_of_a_healthy_gun_are_not_decoded() -> None:
    """The fast path is taken: three rounds of a healthy idle PLC's steady frames decode each
    distinct frame once."""
    cycle = [
        _frame("RelayStatus", _RELAY),
        _frame("SafetySwitchStatus", _SWITCHES),
        _frame("CpStatus", _CP),
        _frame("ChargingSession", _SESSION),
    ]

    bus = BusProtocol()
    bus.add(CONNECTOR)
    for step in cycle * 3:
        bus.receive(FRAMES[step], 0.0)
    assert bus.rx_frames == 12
    assert bus.repeats == 8


# --- a relay reported against the command ------------------------------------------------------

ACK_TIMEOUT = 0.3


@attrs.frozen
class Report:
    """A RelayStatus from a healthy PLC reporting the relay's coil and auxiliary contact."""

    state: bool
    feedback: bool


FeedbackStep = Report | Command | Elapse
FEEDBACK_STEPS = st.lists(
    st.one_of(
        st.builds(Report, st.booleans(), st.booleans()),
        st.builds(Report, st.booleans(), st.booleans()).map(lambda r: Report(r.state, r.state)),
        st.builds(Command, st.booleans()),
        st.builds(Elapse, st.sampled_from([0.05, 0.1, 0.2, 0.35, 1.0])),
    ),
    min_size=1,
    max_size=60,
)


def _run_feedback(steps: list[FeedbackStep]) -> None:
    # A PLC that is always heard and a meter never stale: only the relay is judged here.
    bus = BusProtocol(
        ProtocolOptions(
            ack_timeout=ACK_TIMEOUT, debounce_frames=DEBOUNCE, rx_timeout=1e9, meter_stale=1e9
        )
    )
    plc = bus.add(CONNECTOR)
    now = 0.0
    # The model: the command, when the reports began to contradict it (reset by a report that
    # agrees, or a new command), and how many reports in a row agree.
    commanded = False
    contradicting_since: float | None = None
    agreeing = 0
    for n, step in enumerate(steps):
        if isinstance(step, Command):
            plc.command(step.closed, force_off=False)
            commanded = step.closed
            contradicting_since, agreeing = None, 0
        elif isinstance(step, Elapse):
            now += step.seconds
            plc.supervise(now)
        else:
            signals = _RELAY | {"RLY1_STATE": int(step.state), "RLY1_FEEDBACK": int(step.feedback)}
            can_id, data = codec.encode("RelayStatus", PLC_ID, signals, scaling=False)
            bus.receive(can.Message(arbitration_id=can_id, data=data), now)
            if step.state == step.feedback == commanded:
                contradicting_since, agreeing = None, agreeing + 1
            else:
                agreeing = 0
                if contradicting_since is None:
                    contradicting_since = now
        where = f"step {n}: {steps[: n + 1]}"
        detail = dict(plc.status().faults).get(FaultKind.POWER_SWITCH)
        # FORCE_ALL_OFF exactly while the relay's report contradicts the command (nothing
        # else forces it off here: no safety input, no failed set_relay).
        assert plc.relay_control()["FORCE_ALL_OFF"] == (detail is not None), where
        assert detail is None or detail.startswith("PLC 3: relay reported "), where
        # Raised once a contradiction has lasted the ack deadline (judged at every report
        # and every supervisor period) ...
        if contradicting_since is not None and now - contradicting_since >= ACK_TIMEOUT:
            assert detail is not None, where
        # ... and gone once DEBOUNCE reports in a row agree.
        if agreeing >= DEBOUNCE:
            assert detail is None, where


@settings(max_examples=500, deadline=None)
@given(steps=FEEDBACK_STEPS)
# The case: reported closed on an idle gun commanded open, for 3 s, then open again.
@example(
    steps=[
        Report(state=False, feedback=False),
        *[Report(state=True, feedback=True), Elapse(0.1)] * 30,
        Report(state=False, feedback=False),
        Report(state=False, feedback=False),
    ]
)
# A report that flaps every frame contradicts the command all the same.
@example(steps=[Report(True, True), Elapse(0.1), Report(False, False), Elapse(0.1)] * 3)
# A welded contact: the coil open as commanded, its auxiliary contact closed.
@example(steps=[Report(state=False, feedback=True), Elapse(0.35)])
def test_a_relay_reported_against_the_command_is_a_power_switch_failure_with_force_off(
    steps: list[FeedbackStep],
) -> None:
    _run_feedback(steps)
