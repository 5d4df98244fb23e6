"""A hostile central system (issue 12, item 1): each input below once crashed the charger or
could poison its database; each test shows the charger refusing it with the right answer and
running on. The property test over every action and answer is tests/test_fuzz_csms.py; the
framing rules on their own are in tests/test_rpc.py."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp.v16 import call

from dcocpp.clock import ocpp_time
from dcocpp.hardware.simulation import SimulatedHardware
from dcocpp.ocpp.errors import CallError
from dcocpp.ocpp.registration import Registration
from dcocpp.station import limits as limits_module
from dcocpp.station.station import USER_CONFIG_NAME
from dcocpp.storage.database import Database
from tests.csms import FakeCsms
from tests.station_harness import Harness, charger_config, running_station

MAX_A = 200  # the guns' own maximum (configs/charger.json)
END_OF_TIME = "9999-12-31T23:00:00Z"  # a schedule from here has no room for a second period


def schedule(*periods: tuple[int, float], start: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "charging_rate_unit": "A",
        "charging_schedule_period": [{"start_period": s, "limit": v} for s, v in periods],
    }
    if start is not None:
        body["start_schedule"] = start
    return body


def profile(
    profile_id: int, purpose: str, body: dict[str, Any], *, kind: str = "Absolute"
) -> dict[str, Any]:
    return {
        "charging_profile_id": profile_id,
        "stack_level": 0,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": kind,
        "charging_schedule": body,
    }


def setpoint(h: Harness, connector_id: int) -> float:
    hardware = h.station.hardware
    assert isinstance(hardware, SimulatedHardware)
    return hardware.state(connector_id).current_limit_a


async def wait_setpoint(h: Harness, connector_id: int, amps: float) -> None:
    await h.wait_until(lambda: setpoint(h, connector_id) == amps, limit=30)


async def set_profile(h: Harness, connector_id: int, body: dict[str, Any]) -> str:
    result = await h.csms_call(
        call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=body)
    )
    return str(result.status)


async def refused(h: Harness, action: str, body: dict[str, Any]) -> str:
    """The error code the charger answers `body` with (the test's CSMS does not validate)."""
    with pytest.raises(CallError) as caught:
        await h.csms_call_raw(action, body)
    return caught.value.code


def installed_ids(h: Harness) -> set[int]:
    session = h.station.session
    assert session is not None
    return {e.profile.charging_profile_id for e in session.charging_profiles.installed}


# --- charging profiles the schedule cannot be computed with ----------------------------------


async def test_a_profile_reaching_past_the_year_9999_is_rejected_and_limits_go_on(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        doomed = profile(1, "TxDefaultProfile", schedule((0, 10), (7200, 5), start=END_OF_TIME))
        assert await set_profile(h, 1, doomed) == "Rejected"
        await trio.sleep(3 * 3600)  # the instant of its second period would have come
        fine = profile(2, "TxDefaultProfile", schedule((0, 32)), kind="Relative")
        assert await set_profile(h, 1, fine) == "Accepted"
        await wait_setpoint(h, 1, 32)
        assert installed_ids(h) == {2}
    assert "startSchedule: 9999-12-31T23:00:00Z is not before 9000-01-01T00:00:00Z" in caplog.text


async def test_a_remote_start_whose_profile_reaches_past_the_year_9999_is_rejected(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await h.station.plug(1)
        doomed = profile(7, "TxProfile", schedule((0, 10), (7200, 5), start=END_OF_TIME))
        result = await h.csms_call(
            call.RemoteStartTransaction(id_tag="TAG-1", connector_id=1, charging_profile=doomed)
        )
        assert result.status == "Rejected"
        await trio.sleep(3 * 3600)
        assert h.csms.received("StartTransaction") == []
        # The gun still takes a tag of its own, and charges.
        await h.station.present_id(1, "TAG-2")
        await h.wait_status(1, "Charging")
        assert installed_ids(h) == set()


async def test_a_period_starting_beyond_32_bits_is_a_type_constraint_violation(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), FakeCsms(validate=False)) as h:
        await h.booted()
        body = {
            "connectorId": 1,
            "csChargingProfiles": {
                "chargingProfileId": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [
                        {"startPeriod": 0, "limit": 10},
                        {"startPeriod": 10**12, "limit": 5},
                    ],
                },
            },
        }
        assert await refused(h, "SetChargingProfile", body) == "TypeConstraintViolation"
        # 10^12 s are 31,700 years: a transaction running from now would have overflown.
        await h.start_charging(1, "TAG-1")
        await trio.sleep(60)
        assert installed_ids(h) == set()
        assert h.connector(1).machine.status == "Charging"


async def test_a_stored_profile_that_no_longer_validates_is_dropped_and_the_station_charges(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A profile an older dcocpp accepted and stored, which now makes every start overflow,
    does not make a boot loop: it is dropped (logged) when the profiles are loaded."""
    config = charger_config(tmp_path)
    db = Database.open(config.data_dir)
    doomed = profile(3, "TxDefaultProfile", schedule((0, 10), (7200, 5), start=END_OF_TIME))
    db.put_charging_profile(0, doomed)
    kept = profile(4, "TxDefaultProfile", schedule((0, 40)), kind="Relative")
    db.put_charging_profile(0, kept)
    db.close()
    async with running_station(config) as h:
        await h.booted()
        assert installed_ids(h) == {4}
        await h.start_charging(1, "TAG-1")
        await wait_setpoint(h, 1, 40)
    assert "stored charging profile" in caplog.text
    assert "9999-12-31T23:00:00Z is not before 9000-01-01T00:00:00Z" in caplog.text
    db = Database.open(config.data_dir)
    try:
        assert [p["charging_profile_id"] for _, p in db.charging_profiles()] == [4]
    finally:
        db.close()


async def test_a_limit_that_cannot_be_computed_leaves_a_safe_limit_and_the_station_runs(
    autojump_clock: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure computing one gun's limit (here a bug injected into the schedule code) is
    logged at ERROR with the profile ids; that gun keeps the lower of the limit it had and
    the lowest limit of its profiles, the other gun is unaffected, and the limits come back
    once they can be computed."""
    broken = [False]
    real_limit_now = limits_module.limit_now

    def limit_now(installed: Any, connector_id: int, *args: Any, **kwargs: Any) -> Any:
        if broken[0] and connector_id == 1:
            raise ArithmeticError("injected")
        return real_limit_now(installed, connector_id, *args, **kwargs)

    monkeypatch.setattr(limits_module, "limit_now", limit_now)
    caplog.set_level(logging.INFO, logger="dcocpp.station.limits")
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await h.start_charging(1, "TAG-1")
        steps = profile(1, "TxDefaultProfile", schedule((0, 100), (3600, 50)), kind="Relative")
        assert await set_profile(h, 1, steps) == "Accepted"
        await wait_setpoint(h, 1, 100)
        broken[0] = True
        other = profile(2, "TxDefaultProfile", schedule((0, 80)), kind="Relative")
        assert await set_profile(h, 2, other) == "Accepted"
        await wait_setpoint(h, 2, 80)
        await wait_setpoint(h, 1, 50)  # 100 now, but 50 in an hour: the lower
        await trio.sleep(600)  # recomputed every 10 s while charging: logged once
        broken[0] = False
        assert (await h.csms_call(call.ClearChargingProfile(id=2))).status == "Accepted"
        await wait_setpoint(h, 1, 100)
        await wait_setpoint(h, 2, MAX_A)
        assert h.connector(1).machine.status == "Charging"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "connector 1: current limit cannot be computed (profiles 1, 2):"
        " ArithmeticError('injected'); keeping the safe limit 50.0 A"
    ]
    assert "connector 1: its current limit can be computed again" in caplog.text


async def test_a_limit_of_1e300_is_a_type_constraint_violation(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), FakeCsms(validate=False)) as h:
        await h.booted()
        for limit in (Decimal("1e300"), Decimal("1e30"), 2**31):
            body = {
                "connectorId": 1,
                "csChargingProfiles": {
                    "chargingProfileId": 1,
                    "stackLevel": 0,
                    "chargingProfilePurpose": "TxDefaultProfile",
                    "chargingProfileKind": "Relative",
                    "chargingSchedule": {
                        "chargingRateUnit": "W",
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
                    },
                },
            }
            assert await refused(h, "SetChargingProfile", body) == "TypeConstraintViolation"
        assert installed_ids(h) == set()


# --- answers to the charger's own CALLs ---------------------------------------------------------


async def test_a_callerror_answering_heartbeat_is_logged_and_heartbeats_go_on(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csms = FakeCsms(interval=60)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        csms.answer("Heartbeat", error="GenericError")
        await h.wait_until(lambda: len(csms.scripted) == 1)
        refused_at = trio.current_time()
        await h.wait_calls("Heartbeat")  # the next one, answered
        assert csms.times("Heartbeat")[0] - refused_at == pytest.approx(60, abs=1)
        assert csms.connections == 1
    assert "Heartbeat failed: GenericError: scripted by the test" in caplog.text


async def test_a_heartbeat_answer_without_current_time_is_logged_and_heartbeats_go_on(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csms = FakeCsms(interval=60, validate=False)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        csms.answer("Heartbeat", {})
        await h.wait_until(lambda: len(csms.scripted) == 1)
        await h.wait_calls("Heartbeat")
        assert csms.connections == 1
    assert "Heartbeat failed: Heartbeat: OccurenceConstraintViolation" in caplog.text


async def test_a_heartbeat_answer_whose_time_is_unreadable_or_absurd_leaves_the_clock(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A currentTime that is no date, or the year 9999: logged, and the station's clock is
    not moved (it would follow a central system an hour off, tests/test_scenarios_clock.py)."""
    csms = FakeCsms(interval=60, validate=False)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        csms.answer("Heartbeat", {"currentTime": "yesterday"})
        csms.answer("Heartbeat", {"currentTime": "9999-12-31T23:59:59Z"})
        await h.wait_until(lambda: len(csms.scripted) == 2)
        await h.wait_calls("Heartbeat")
        assert h.station.clock.offset == timedelta(0)
        assert ocpp_time(h.station.clock.now()) == h.wall_time(trio.current_time())
        assert csms.connections == 1
    assert "Heartbeat.conf: currentTime 'yesterday' is no date and time" in caplog.text
    assert "the central system's time 9999-12-31T23:59:59.000Z (Heartbeat.conf) is not" in (
        caplog.text
    )


async def test_a_status_notification_answer_with_an_extra_property_is_used_without_it(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csms = FakeCsms(validate=False)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        since = csms.mark()
        csms.answer("StatusNotification", {"extra": 1})
        await h.station.plug(1)  # Preparing: answered with the extra property
        await h.wait_until(lambda: len(csms.scripted) == 1)
        await h.station.present_id(1, "TAG-1")
        await h.wait_status(1, "Charging", since=since)
        assert csms.connections == 1
    assert [p["status"] for _, _, p in csms.scripted] == ["Preparing"]
    assert [p["status"] for p in csms.received("StatusNotification", since)] == ["Charging"]
    assert (
        "StatusNotification.conf has properties OCPP 1.6 does not know, used without them: extra"
        in caplog.text
    )
    assert "StatusNotification for connector 1 failed" not in caplog.text


async def test_a_heartbeat_answer_with_an_extra_property_brings_its_time(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer is used without the property it should not have: its currentTime, an hour
    ahead of the station's, is followed."""
    csms = FakeCsms(interval=60, validate=False)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        ahead = h.wall_time(trio.current_time() + 3600)
        csms.answer("Heartbeat", {"currentTime": ahead, "foo": {"bar": 1}})
        await h.wait_until(lambda: len(csms.scripted) == 1)
        await h.wait_calls("Heartbeat")  # the next one, as the interval says
        assert timedelta(seconds=3500) < h.station.clock.offset <= timedelta(seconds=3600)
        assert csms.connections == 1
    assert "Heartbeat.conf has properties OCPP 1.6 does not know, used without them: foo" in (
        caplog.text
    )
    assert "Heartbeat failed" not in caplog.text


async def test_a_refused_triggered_status_does_not_hold_back_the_other_connectors(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms()
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        since = csms.mark()
        csms.answer("StatusNotification", error="GenericError")
        trigger = call.TriggerMessage(requested_message="StatusNotification")
        assert (await h.csms_call(trigger)).status == "Accepted"
        answered = await h.wait_calls("StatusNotification", 2, since=since)
    assert [p["connector_id"] for _, _, p in csms.scripted] == [0]
    assert [p["connector_id"] for p in answered] == [1, 2]


async def test_a_boot_interval_that_cannot_be_stored_does_not_undo_the_registration(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms(interval=120)
    async with running_station(config, csms) as h:
        await h.booted()
        stored = config.data_dir / USER_CONFIG_NAME
        stored.unlink()
        stored.mkdir()  # the key file can no longer be replaced
        csms.interval = 60
        trigger = call.TriggerMessage(requested_message="BootNotification")
        assert (await h.csms_call(trigger)).status == "Accepted"
        await h.wait_calls("BootNotification", 2)
        since = csms.mark()
        await trio.sleep(610)
        assert len(h.csms.received("Heartbeat", since)) == 5  # still every 120 s
        assert h.station.session is not None
        assert h.station.session.state == Registration.ACCEPTED
        assert csms.connections == 1
    assert "HeartbeatInterval 60 from BootNotification not taken" in caplog.text


# --- frames ---------------------------------------------------------------------------------------


async def test_a_frame_nested_2000_deep_is_dropped_and_the_station_runs_on(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        rpc = await h.csms.wait_connected()
        await rpc.websocket.send_message("[" * 2000 + "]" * 2000)
        result = await h.csms_call(call.GetLocalListVersion())
        assert result.list_version == 0
        assert h.csms.connections == 1
    assert "message is nested deeper than 16 levels" in caplog.text


async def test_malformed_calls_and_a_close_right_after_leave_the_station_running(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """Malformed CALLs (answered FormationViolation by the reader itself) and a close of the
    connection right behind them: the answers find it closed, the station reconnects."""
    csms = FakeCsms()
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        rpc = await csms.wait_connected()
        for n in range(10):
            await rpc.websocket.send_message(f'[2,"bad-{n}",5,{{}}]')
        with trio.move_on_after(1):  # the close handshake ends with the CSMS's connection
            await rpc.websocket.aclose()
        await csms.wait_connected(2)
        await h.station.plug(1)
        await h.station.present_id(1, "TAG-1")
        await h.wait_status(1, "Charging")


async def test_a_lone_surrogate_is_refused_and_the_station_runs_on(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A \\ud800 escape is valid JSON but no Unicode: echoed back (in the unique id of the
    answer, an idTag in a StartTransaction...) it cannot even be encoded, which once ended the
    process. Such a CALL is answered FormationViolation (tests/test_rpc.py) or dropped."""
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        rpc = await h.csms.wait_connected()
        await rpc.websocket.send_message('[2,"\\ud800","Heartbeat",{}]')
        await rpc.websocket.send_message(
            '[2,"r1","RemoteStartTransaction",{"connectorId":1,"idTag":"\\udfff"}]'
        )
        result = await h.csms_call(call.GetLocalListVersion())
        assert result.list_version == 0
        assert h.csms.connections == 1
        await h.start_charging(1, "TAG-1")
    assert caplog.text.count("message has a string that is not valid Unicode") == 2


# --- numbers and dates outside what OCPP 1.6 allows -----------------------------------------------

HUGE = 10**20


@pytest.mark.parametrize(
    ("action", "body"),
    [
        (
            "ReserveNow",
            {"connectorId": 2, "expiryDate": "2030-01-01T00:00:00Z", "idTag": "T"},
        ),
        ("CancelReservation", {}),
        ("SendLocalList", {"updateType": "Full"}),
        ("ChangeAvailability", {"type": "Inoperative"}),
        ("RemoteStopTransaction", {}),
        ("ClearChargingProfile", {}),
        ("GetCompositeSchedule", {"connectorId": 1}),
        ("UnlockConnector", {}),
        ("TriggerMessage", {"requestedMessage": "Heartbeat"}),
    ],
)
@pytest.mark.parametrize("sign", [1, -1])
async def test_an_integer_beyond_32_bits_is_a_type_constraint_violation(
    autojump_clock: Any, tmp_path: Path, action: str, body: dict[str, Any], sign: int
) -> None:
    field = {
        "ReserveNow": "reservationId",
        "CancelReservation": "reservationId",
        "SendLocalList": "listVersion",
        "ChangeAvailability": "connectorId",
        "RemoteStopTransaction": "transactionId",
        "ClearChargingProfile": "id",
        "GetCompositeSchedule": "duration",
        "UnlockConnector": "connectorId",
        "TriggerMessage": "connectorId",
    }[action]
    config = charger_config(tmp_path)
    async with running_station(config, FakeCsms(validate=False)) as h:
        await h.booted()
        assert await refused(h, action, {**body, field: sign * HUGE}) == "TypeConstraintViolation"
        # 2^31 - 1 is an OCPP integer: whatever the answer, it is not an error.
        await h.csms_call_raw(action, {**body, field: 2**31 - 1})
    async with running_station(config) as h:
        await h.booted()
        await h.start_charging(1, "TAG-1")


async def test_a_reservation_expiring_after_the_year_9999_in_utc_is_refused(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """9999-12-31T23:59:59-01:00 is a valid dateTime, but in UTC it is the year 10000."""
    async with running_station(charger_config(tmp_path), FakeCsms(validate=False)) as h:
        await h.booted()
        body = {
            "connectorId": 1,
            "expiryDate": "9999-12-31T23:59:59-01:00",
            "idTag": "T",
            "reservationId": 1,
        }
        assert await refused(h, "ReserveNow", body) == "PropertyConstraintViolation"
        ok = await h.csms_call_raw("ReserveNow", {**body, "expiryDate": "9999-12-31T23:59:59Z"})
        assert ok == {"status": "Accepted"}
