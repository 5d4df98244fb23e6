"""A central system that sends anything (issue 12, item 1), as a property.

Against a running station (the station kept running across the steps of an example), a
central system sends generated CALLs of every action a central system may send, schema-valid
and broken (`tests/ocpp_payloads.py`), and answers the station's own CALLs with generated
CALLRESULTs, broken ones and CALLERRORs of any code; the EV side plugs, presents tags and
unplugs in between, and now and then a text message that is no OCPP-J frame at all.
Properties:

* the station never exits (an exception out of its nursery fails the test);
* every CALL is answered within the central system's response timeout: a schema-valid one with
  a schema-valid CALLRESULT or a CALLERROR, a schema-invalid one with a CALLERROR, whose code is
  one of OCPP 1.6's and never InternalError;
* afterwards a new station on the same data directory boots, and once the central system has
  put back what it changed (configuration keys, availability, profiles, reservations),
  charges.

A valid Reset is not sent: it restarts the station on purpose (tests/test_session.py).
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from ocpp.messages import MessageType
from ocpp.v16 import call

from dcocpp.ocpp import wire
from dcocpp.ocpp.configuration import SPECS
from dcocpp.ocpp.errors import CallError
from dcocpp.ocpp.registration import Registration
from tests import ocpp_payloads
from tests.csms import FakeCsms
from tests.station_harness import Harness, charger_config, running_station

# The central system's own patience (OCPP leaves it to the central system; the station's
# ResponseTimeout is a key the fuzz may change).
RESPONSE_TIMEOUT = 30
OCPP16_ERROR_CODES = frozenset(
    {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }
)
# Every action a central system may send an OCPP 1.6 charge point (with the security
# extension of the package's schemas).
CSMS_ACTIONS = (
    "CancelReservation",
    "CertificateSigned",
    "ChangeAvailability",
    "ChangeConfiguration",
    "ClearCache",
    "ClearChargingProfile",
    "DataTransfer",
    "DeleteCertificate",
    "ExtendedTriggerMessage",
    "GetCompositeSchedule",
    "GetConfiguration",
    "GetDiagnostics",
    "GetInstalledCertificateIds",
    "GetLocalListVersion",
    "GetLog",
    "InstallCertificate",
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "ReserveNow",
    "Reset",
    "SendLocalList",
    "SetChargingProfile",
    "SignedUpdateFirmware",
    "TriggerMessage",
    "UnlockConnector",
    "UpdateFirmware",
)
# Every CALL the station sends, and how a step makes it send one now (None: plugging and
# tags do).
STATION_ACTIONS = {
    "Authorize": None,
    "BootNotification": "BootNotification",
    "DiagnosticsStatusNotification": "DiagnosticsStatusNotification",
    "FirmwareStatusNotification": "FirmwareStatusNotification",
    "Heartbeat": "Heartbeat",
    "MeterValues": "MeterValues",
    "SecurityEventNotification": None,
    "StartTransaction": None,
    "StatusNotification": "StatusNotification",
    "StopTransaction": None,
}
TAGS = ("TAG-A", "TAG-B", "TAG-C")
# Keys whose change makes the station connect again.
_RECONNECT_KEYS = ("AuthorizationKey", "SecurityProfile")
# Every key the charger knows (read-only ones are Rejected: that is tested too).
_KEYS = sorted(SPECS)
# A connection the station drops on purpose (new credentials) is back within its backoff.
RECONNECT_LIMIT = 120
# GetCompositeSchedule's work grows with its duration over a recurring profile (issue 12
# item 5 bounds it); the valid ones drawn here ask for at most a week.
WEEK = 7 * 24 * 3600


@attrs.define
class Run:
    """What the fuzz changed that a central system would put back afterwards."""

    keys: dict[str, str]  # configuration key -> its value before the fuzz
    reservations: set[int] = attrs.field(factory=set)


# --- the steps --------------------------------------------------------------------------------


def _call_payloads(action: str) -> st.SearchStrategy[dict[str, Any]]:
    payloads = ocpp_payloads.calls(action)
    if action == "GetCompositeSchedule":
        payloads = payloads.map(lambda p: {**p, "duration": p["duration"] % (WEEK + 1)})
    if action == "ChangeConfiguration":
        payloads = st.one_of(payloads, _known_key_changes())
    if action == "Reset":
        return ocpp_payloads.mutated(payloads)
    return st.one_of(payloads, ocpp_payloads.mutated(payloads))


@st.composite
def _known_key_changes(draw: st.DrawFn) -> dict[str, Any]:
    """ChangeConfiguration of a key the charger has, to a value of any kind."""
    key = draw(st.sampled_from(_KEYS))
    value = draw(
        st.one_of(
            st.integers(-(2**31), 2**31 - 1).map(str),
            st.sampled_from(["true", "false", "0", "1", "", "99999999999999999999"]),
            st.text(max_size=500),
        )
    )
    return {"key": key, "value": value}


def _answers(action: str) -> st.SearchStrategy[tuple[dict[str, Any] | None, str | None]]:
    """An answer to the station's `action`: a valid CALLRESULT, a broken one, or a CALLERROR
    of any code (OCPP's or not)."""
    payloads = ocpp_payloads.results(action)
    return st.one_of(
        payloads.map(lambda p: (p, None)),
        ocpp_payloads.mutated(payloads).map(lambda p: (p, None)),
        st.sampled_from([*sorted(OCPP16_ERROR_CODES), "NoSuchCode", ""]).map(lambda c: (None, c)),
    )


def steps() -> st.SearchStrategy[tuple[Any, ...]]:
    csms_call = st.sampled_from(CSMS_ACTIONS).flatmap(
        lambda action: _call_payloads(action).map(lambda p: ("call", action, p))
    )
    answer = st.sampled_from(sorted(STATION_ACTIONS)).flatmap(
        lambda action: _answers(action).map(lambda a: ("answer", action, *a))
    )
    ev = st.tuples(
        st.sampled_from(["plug", "unplug", "tag"]), st.sampled_from([1, 2]), st.sampled_from(TAGS)
    )
    wait = st.tuples(st.just("wait"), st.sampled_from([1, 10, 60, 600]))
    junk = ocpp_payloads.junk_frames().map(lambda text: ("frame", text))
    return st.one_of(csms_call, csms_call, answer, ev, wait, junk)


# --- running them -----------------------------------------------------------------------------


def _schema_valid(message_type_id: int, action: str, payload: dict[str, Any]) -> bool:
    try:
        wire.validate(message_type_id, action, payload)
    except CallError:
        return False
    return True


async def _connected(h: Harness, after: int = 0) -> Any:
    with trio.fail_after(RECONNECT_LIMIT):
        return await h.csms.wait_connected(after + 1)


async def _send(h: Harness, run: Run, action: str, payload: dict[str, Any]) -> None:
    """One CALL, and what its answer must be."""
    valid = _schema_valid(MessageType.Call, action, payload)
    if action == "Reset" and valid:
        return  # a mutation that happened to leave it valid: it would restart the station
    rpc = await _connected(h)
    connections = h.csms.connections
    # OCPP 1.6 section 4.2: while Rejected the charge point SHALL NOT respond to any central
    # system initiated message (a generated BootNotification answer may have said Rejected).
    rejected = h.station.session is not None and h.station.session.state == Registration.REJECTED
    answer: dict[str, Any] | None = None
    with trio.move_on_after(RESPONSE_TIMEOUT) as waited:
        try:
            answer = await rpc.call_raw(action, payload)
        except CallError as exc:
            assert exc.code in OCPP16_ERROR_CODES, (action, payload, exc)
            assert exc.code != "InternalError", (action, payload, exc)
    if rejected and waited.cancelled_caught:
        return
    assert not waited.cancelled_caught, f"{action} {payload!r}: no answer in {RESPONSE_TIMEOUT} s"
    if answer is None:
        return
    assert valid, f"{action} {payload!r} is schema-invalid, yet answered {answer!r}"
    assert _schema_valid(MessageType.CallResult, action, answer), (action, payload, answer)
    status = answer.get("status")
    if action == "ReserveNow" and status == "Accepted":
        run.reservations.add(payload["reservationId"])
    reconnects = action == "ChangeConfiguration" and payload["key"] in _RECONNECT_KEYS
    if reconnects and status in ("Accepted", "RebootRequired"):
        await _connected(h, connections)  # with the new credentials


async def _ev(h: Harness, what: str, connector_id: int, tag: str) -> None:
    plugged = h.connector(connector_id).machine.truth.plugged
    if what == "plug" and not plugged:
        await h.station.plug(connector_id)
    elif what == "unplug" and plugged:
        await h.station.unplug(connector_id)
    elif what == "tag":
        # Refused at the reader (Reserved, Faulted, Finishing...) is a fine outcome.
        with contextlib.suppress(ValueError):
            await h.station.present_id(connector_id, tag)


async def _step(h: Harness, run: Run, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "call":
        await _send(h, run, step[1], step[2])
    elif kind == "answer":
        _, action, payload, error = step
        h.csms.answer(action, payload, error=error)
        trigger = STATION_ACTIONS[action]
        if trigger is not None:
            await _send(h, run, "TriggerMessage", {"requestedMessage": trigger})
            await trio.sleep(1)
    elif kind == "wait":
        await trio.sleep(step[1])
    elif kind == "frame":
        rpc = await _connected(h)
        await rpc.websocket.send_message(step[1])  # what comes back is not looked at
    else:
        await _ev(h, *step)


async def _put_back(h: Harness, run: Run) -> None:
    """What a central system does to bring a charger back into service: its keys, every gun
    Operative, no profile, no reservation."""
    store = h.station.store
    for key, value in run.keys.items():
        if store.get(key) != value:
            result = await h.csms_call(call.ChangeConfiguration(key=key, value=value))
            assert result.status == "Accepted", (key, value, result)
    for connector_id in (0, 1, 2):
        await h.csms_call(call.ChangeAvailability(connector_id=connector_id, type="Operative"))
    await h.csms_call(call.ClearChargingProfile())
    for reservation_id in sorted(run.reservations):
        await h.csms_call(call.CancelReservation(reservation_id=reservation_id))


@settings(
    max_examples=15,
    deadline=None,
    # One station per example (its own data directory); autojump_clock is only time.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_no_central_system_message_crashes_the_charger_or_poisons_its_database(
    data: st.DataObject, autojump_clock: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = charger_config(tmp_path_factory.mktemp("fuzz"))
    count = data.draw(st.integers(40, 80), label="steps")
    with trio.fail_after(30 * 24 * 3600):  # the hang guard (conftest's skips @given tests)
        async with running_station(config, FakeCsms(validate=False)) as h:
            await h.booted()
            keys, _ = h.station.store.get_configuration(None)
            run = Run({str(k["key"]): str(k["value"]) for k in keys if not k["readonly"]})
            for _ in range(count):
                await _step(h, run, data.draw(steps(), label="step"))
        async with running_station(config) as h:
            await h.booted()
            await _put_back(h, run)
            await h.start_charging(1, "TAG-AFTER")
            assert h.connector(1).machine.status == "Charging"


def test_the_payload_strategies_draw_schema_valid_payloads() -> None:
    """The generator's own property: what it calls valid, the charger's schema accepts."""

    @settings(max_examples=20, deadline=None, database=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        for action in CSMS_ACTIONS:
            payload = data.draw(ocpp_payloads.calls(action))
            assert _schema_valid(MessageType.Call, action, payload), (action, payload)
        for action in STATION_ACTIONS:
            payload = data.draw(ocpp_payloads.results(action))
            assert _schema_valid(MessageType.CallResult, action, payload), (action, payload)

    check()
