"""Charging sessions through the whole station (simulated hardware, connector tasks, OCPP
session and RPC) against the in-test central system, on virtual time. Tests are named after
the OCTT conformance cases they cover (docs/conformance.md): sessions started
and stopped locally and remotely, EV-side disconnects, authorization, unlocking."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from ocpp.v16 import call

from dcocpp.api.server import create_app
from dcocpp.hardware.interface import HardwareError
from tests.csms import FakeCsms
from tests.station_harness import charger_config, flow, running_station, statuses_of

# Every scenario runs on the simulated guns and on the PLC backend (emulated PLCs on CAN).
pytestmark = pytest.mark.usefixtures("backend")
NO_LOCK_ON_PLC = pytest.mark.simulated_only("the PLC CAN contract has no connector lock to fail")

DETACHABLE = {1: {"fixedCable": False}}


# --- starting a session ----------------------------------------------------------------------


async def test_tc_003_plug_in_first(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        await h.station.plug(1)
        await h.wait_status(1, "Preparing", since=since)
        register = h.register_wh(1)
        await h.station.present_id(1, "TAG-003")
        await h.wait_status(1, "Charging", since=since)
        await h.wait_until(lambda: h.transaction_id(1) == 1)
        start_time = h.csms.times("StartTransaction")[0]
        assert h.connector(1).machine.status == "Charging"
    assert register == 1_000_000  # gun 1's simulated register, nothing delivered yet
    assert h.csms.received("StartTransaction") == [
        {
            "connector_id": 1,
            "id_tag": "TAG-003",
            "meter_start": 1_000_000,
            "timestamp": h.wall_time(start_time),
        }
    ]
    assert h.wall_time(start_time).startswith("2026-11-23T23:50:00.")
    assert h.csms.received("Authorize") == [{"id_tag": "TAG-003"}]
    assert flow(h, 1, since) == [
        ("StatusNotification", "Preparing"),
        ("Authorize", "TAG-003"),
        ("StartTransaction", "TAG-003"),
        ("StatusNotification", "Charging"),
    ]
    assert statuses_of(h, 2, since) == []  # the other gun is not involved


async def test_tc_004_1_identification_first(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        await h.station.present_id(1, "TAG-004")
        await h.wait_status(1, "Preparing", since=since)
        await trio.sleep(5)
        assert h.csms.received("StartTransaction") == []  # no EV yet
        await h.station.plug(1)
        await h.wait_status(1, "Charging", since=since)
    assert flow(h, 1, since) == [
        ("Authorize", "TAG-004"),
        ("StatusNotification", "Preparing"),
        ("StartTransaction", "TAG-004"),
        ("StatusNotification", "Charging"),
    ]
    start = h.csms.received("StartTransaction")[0]
    assert (start["connector_id"], start["meter_start"]) == (1, 1_000_000)


async def test_tc_004_2_identification_first_connection_timeout(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys={"ConnectionTimeOut": 45}) as h:
        await h.booted()
        since = h.csms.mark()
        await h.station.present_id(1, "TAG-004")
        await h.wait_status(1, "Preparing", since=since)
        preparing_at = trio.current_time()
        await h.wait_status(1, "Available", since=since)
        available_at = trio.current_time()
        assert h.connector(1).machine.truth.authorized is None
    assert available_at - preparing_at == pytest.approx(45, abs=1e-6)
    assert statuses_of(h, 1, since) == ["Preparing", "Available"]
    assert h.csms.received("StartTransaction") == []


# --- EV-side disconnect ----------------------------------------------------------------------


async def test_tc_005_1_ev_side_disconnect_stops_and_unlocks(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path, connectors=DETACHABLE)
    keys = {"StopTransactionOnEVSideDisconnect": True, "UnlockConnectorOnEVSideDisconnect": True}
    async with running_station(config, keys=keys) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-005")
        assert h.locked(1)  # a detachable cable is locked during the session
        since = h.csms.mark()
        await h.station.unplug(1)
        await h.wait_calls("StopTransaction", since=since)
        await h.wait_status(1, "Available", since=since)
        assert not h.locked(1)
    stop = h.csms.received("StopTransaction")[0]
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "EVDisconnected")
    assert "id_tag" not in stop  # nobody presented a tag
    # Finishing while the lock releases (simulated guns) or the relay's open is confirmed
    # over CAN (PLC guns, no lock), then Available.
    assert statuses_of(h, 1, since) == ["Finishing", "Available"]


async def test_tc_005_2_ev_side_disconnect_keeps_lock_until_unlock_connector(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path, connectors=DETACHABLE)
    keys = {"StopTransactionOnEVSideDisconnect": True, "UnlockConnectorOnEVSideDisconnect": False}
    async with running_station(config, keys=keys) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-005")
        since = h.csms.mark()
        await h.station.unplug(1)
        await h.wait_calls("StopTransaction", since=since)
        await h.wait_status(1, "Finishing", since=since)
        await trio.sleep(30)
        assert h.locked(1)  # the cable stays locked in the socket
        assert statuses_of(h, 1, since) == ["Finishing"]
        result = await h.csms_call(call.UnlockConnector(connector_id=1))
        assert result.status == "Unlocked"
        assert not h.locked(1)
        await h.wait_status(1, "Available", since=since)
    stop = h.csms.received("StopTransaction")[0]
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "EVDisconnected")
    assert statuses_of(h, 1, since) == ["Finishing", "Available"]


async def test_tc_005_3_ev_side_disconnect_keeps_transaction_until_remote_stop(
    autojump_clock: Any, tmp_path: Path
) -> None:
    keys = {"StopTransactionOnEVSideDisconnect": False}
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-005")
        since = h.csms.mark()
        await h.station.unplug(1)
        await h.wait_status(1, "SuspendedEV", since=since)
        await trio.sleep(120)
        assert h.csms.received("StopTransaction") == []  # the transaction stays open
        assert h.transaction_id(1) == tx_id
        result = await h.csms_call(call.RemoteStopTransaction(transaction_id=tx_id))
        assert result.status == "Accepted"
        await h.wait_calls("StopTransaction", since=since)
        await h.wait_status(1, "Available", since=since)
    stop = h.csms.received("StopTransaction")[0]
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "Remote")
    assert statuses_of(h, 1, since) == ["SuspendedEV", "Available"]


# --- cache and remote start ------------------------------------------------------------------


async def test_tc_007_remote_start_with_cached_id(autojump_clock: Any, tmp_path: Path) -> None:
    keys = {
        "AuthorizeRemoteTxRequests": True,
        "LocalPreAuthorize": True,
        "AuthorizationCacheEnabled": True,
        "ConnectionTimeOut": 10,
    }
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        # An earlier Authorize puts the tag in the cache (on gun 2, which then times out).
        await h.station.present_id(2, "TAG-007")
        await h.wait_status(2, "Preparing")
        await h.wait_status(2, "Available", since=h.csms.mark())
        assert h.csms.authorize_count("TAG-007") == 1
        since = h.csms.mark()
        result = await h.csms_call(call.RemoteStartTransaction(id_tag="TAG-007", connector_id=1))
        assert result.status == "Accepted"
        await h.wait_status(1, "Preparing", since=since)
        await h.station.plug(1)
        await h.wait_status(1, "Charging", since=since)
    assert h.csms.authorize_count() == 1  # no new Authorize: the cache answered
    assert flow(h, 1, since) == [
        ("StatusNotification", "Preparing"),
        ("StartTransaction", "TAG-007"),
        ("StatusNotification", "Charging"),
    ]


async def test_tc_010_remote_start_cable_plugged_first(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        await h.station.plug(1)
        await h.wait_status(1, "Preparing", since=since)
        result = await h.csms_call(call.RemoteStartTransaction(id_tag="TAG-010", connector_id=1))
        assert result.status == "Accepted"
        await h.wait_status(1, "Charging", since=since)
    assert h.csms.received("Authorize") == []  # AuthorizeRemoteTxRequests is false
    assert flow(h, 1, since) == [
        ("StatusNotification", "Preparing"),
        ("StartTransaction", "TAG-010"),
        ("StatusNotification", "Charging"),
    ]
    assert h.csms.received("StartTransaction")[0]["connector_id"] == 1


async def test_tc_011_1_remote_start_first(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        result = await h.csms_call(call.RemoteStartTransaction(id_tag="TAG-011", connector_id=1))
        assert result.status == "Accepted"
        await h.wait_status(1, "Preparing", since=since)
        await trio.sleep(5)
        assert h.csms.received("StartTransaction") == []
        await h.station.plug(1)
        await h.wait_status(1, "Charging", since=since)
    assert flow(h, 1, since) == [
        ("StatusNotification", "Preparing"),
        ("StartTransaction", "TAG-011"),
        ("StatusNotification", "Charging"),
    ]


async def test_tc_011_2_remote_start_connection_timeout(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys={"ConnectionTimeOut": 30}) as h:
        await h.booted()
        since = h.csms.mark()
        result = await h.csms_call(call.RemoteStartTransaction(id_tag="TAG-011", connector_id=1))
        assert result.status == "Accepted"
        await h.wait_status(1, "Preparing", since=since)
        preparing_at = trio.current_time()
        await h.wait_status(1, "Available", since=since)
        assert trio.current_time() - preparing_at == pytest.approx(30, abs=1e-6)
        # Too late: the EV arriving now finds no session waiting for it.
        await h.station.plug(1)
        await trio.sleep(10)
    assert h.csms.received("StartTransaction") == []
    assert statuses_of(h, 1, since) == ["Preparing", "Available", "Preparing"]


async def test_tc_012_remote_stop(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-012")
        await trio.sleep(60)
        since = h.csms.mark()
        result = await h.csms_call(call.RemoteStopTransaction(transaction_id=tx_id))
        assert result.status == "Accepted"
        await h.wait_calls("StopTransaction", since=since)
        await h.wait_status(1, "Finishing", since=since)
        assert not h.relay_closed(1)
    stop = h.csms.received("StopTransaction")[0]
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "Remote")
    assert "id_tag" not in stop


# --- unlock ----------------------------------------------------------------------------------


async def test_tc_017_1_unlock_without_session_detachable(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path, connectors=DETACHABLE)) as h:
        await h.booted()
        since = h.csms.mark()
        result = await h.csms_call(call.UnlockConnector(connector_id=1))
        await trio.sleep(5)
    assert result.status == "Unlocked"
    assert statuses_of(h, 1, since) == []  # still Available


async def test_tc_017_2_unlock_without_session_fixed_cable(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        result = await h.csms_call(call.UnlockConnector(connector_id=1))
    assert result.status == "NotSupported"


async def test_tc_018_1_unlock_during_session_detachable(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path, connectors=DETACHABLE)) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-018")
        await trio.sleep(30)
        since = h.csms.mark()
        result = await h.csms_call(call.UnlockConnector(connector_id=1))
        assert result.status == "Unlocked"
        assert not h.locked(1)
        await h.wait_calls("StopTransaction", since=since)
        await h.wait_status(1, "Finishing", since=since)
        assert not h.relay_closed(1)
    stop = h.csms.received("StopTransaction")[0]
    assert (stop["transaction_id"], stop["reason"]) == (tx_id, "UnlockCommand")


async def test_tc_018_2_unlock_during_session_fixed_cable(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-018")
        since = h.csms.mark()
        result = await h.csms_call(call.UnlockConnector(connector_id=1))
        assert result.status == "NotSupported"
        await trio.sleep(30)
        assert h.transaction_id(1) == tx_id
    assert h.csms.received("StopTransaction") == []
    assert statuses_of(h, 1, since) == []  # still Charging


@NO_LOCK_ON_PLC
async def test_tc_030_unlock_failure(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path, connectors=DETACHABLE)) as h:
        await h.booted()
        await h.station.set_fault(1, "lock", True)
        await h.wait_status(1, "Faulted", error_code="ConnectorLockFailure")
        result = await h.csms_call(call.UnlockConnector(connector_id=1))
    assert result.status == "UnlockFailed"


async def test_tc_031_unlock_unknown_connector(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path, connectors=DETACHABLE)) as h:
        await h.booted()
        result = await h.csms_call(call.UnlockConnector(connector_id=7))
    assert result.status == "NotSupported"


# --- authorization -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["Invalid", "Blocked", "Expired"])
async def test_tc_023_authorize_refused_no_transaction(
    autojump_clock: Any, tmp_path: Path, status: str
) -> None:
    csms = FakeCsms(id_tags={"BAD-TAG": status})
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        since = h.csms.mark()
        await h.station.plug(1)
        await h.wait_status(1, "Preparing", since=since)
        await h.station.present_id(1, "BAD-TAG")
        await h.wait_calls("Authorize", since=since)
        await trio.sleep(120)
        assert h.connector(1).transaction is None
        assert not h.relay_closed(1)
    assert h.csms.received("StartTransaction") == []
    assert flow(h, 1, since) == [("StatusNotification", "Preparing"), ("Authorize", "BAD-TAG")]


@NO_LOCK_ON_PLC
async def test_tc_024_lock_failure_no_transaction(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path, connectors=DETACHABLE)) as h:
        await h.booted()
        since = h.csms.mark()
        await h.station.set_fault(1, "lock", True)
        faulted = await h.wait_status(1, "Faulted", since=since)
        await h.station.plug(1)
        with pytest.raises(
            ValueError, match="refused TAG-024 at the reader: the gun is Faulted"
        ):  # 422
            await h.station.present_id(1, "TAG-024")
        await trio.sleep(60)
        assert not h.relay_closed(1)
    assert faulted["error_code"] == "ConnectorLockFailure"
    assert h.csms.received("StartTransaction") == []
    assert statuses_of(h, 1, since) == ["Faulted"]


@NO_LOCK_ON_PLC
async def test_tc_024_lock_that_fails_to_engage_starts_no_transaction(
    autojump_clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_station(charger_config(tmp_path, connectors=DETACHABLE)) as h:
        await h.booted()

        async def jammed(locked: bool) -> None:
            await trio.sleep(0.05)
            raise HardwareError("lock did not engage" if locked else "lock did not release")

        # The lock looks fine until it is commanded (no fault is known beforehand).
        monkeypatch.setattr(h.hardware.gun(1), "set_lock", jammed)
        since = h.csms.mark()
        await h.station.plug(1)
        await h.station.present_id(1, "TAG-024")
        await h.wait_status(1, "Faulted", error_code="ConnectorLockFailure", since=since)
        await trio.sleep(30)
    assert h.csms.received("StartTransaction") == []
    assert h.csms.received("StopTransaction") == []


async def test_tc_041_fault_no_transaction_can_start(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        await h.station.set_fault(1, "earth", True)
        faulted = await h.wait_status(1, "Faulted", since=since)
        await h.station.plug(1)
        with pytest.raises(ValueError, match="refused TAG-041 at the reader: the gun is Faulted"):
            await h.station.present_id(1, "TAG-041")
        remote = await h.csms_call(call.RemoteStartTransaction(id_tag="TAG-041", connector_id=1))
        await trio.sleep(60)
        assert not h.relay_closed(1)
        assert h.connector(1).machine.status == "Faulted"
    assert faulted["error_code"] == "GroundFailure"
    assert remote.status == "Rejected"
    assert h.csms.received("StartTransaction") == []
    assert statuses_of(h, 1, since) == ["Faulted"]


async def test_tc_041_tag_presented_while_faulted_is_not_kept(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await h.station.set_fault(1, "earth", True)
        await h.wait_status(1, "Faulted")
        await h.station.plug(1)
        with pytest.raises(ValueError, match="refused TAG-041 at the reader: the gun is Faulted"):
            await h.station.present_id(1, "TAG-041")
        await trio.sleep(600)  # ten ConnectionTimeOuts
        since = h.csms.mark()
        await h.station.set_fault(1, "earth", False)
        await h.wait_status(1, "Preparing", since=since)
        await trio.sleep(60)
    # Ten minutes later the driver is long gone: the fault's end starts nothing by itself.
    assert h.csms.received("StartTransaction") == []


async def test_faults_are_logged_once_each_and_listed_over_the_api(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dcocpp.connector.task")
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        await h.station.set_fault(1, "estop", True)
        await h.station.set_fault(1, "earth", True)
        await h.wait_status(1, "Faulted", since=since)
        await trio.sleep(60)  # on the PLC backend every frame reports both again
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(h.station)), base_url="http://t"
        ) as client:
            status = (await client.get("/api/status")).json()
        since = h.csms.mark()
        await h.station.set_fault(1, "earth", False)
        await h.station.set_fault(1, "estop", False)
        await h.wait_status(1, "Available", since=since)
        gun1, gun2 = status["connectors"]
        assert h.station.snapshot()["connectors"][0]["faults"] == []
    # Every active fault, the one reported (the most severe) first; an emergency stop shows
    # what errorCode OtherError alone does not.
    assert gun1["errorCode"] == "OtherError"
    assert gun1["faults"] == [
        {
            "kind": "estop",
            "errorCode": "OtherError",
            "vendorErrorCode": "EmergencyStop",
            "detail": "PLC 0: emergency stop",
        },
        {
            "kind": "earth",
            "errorCode": "GroundFailure",
            "vendorErrorCode": None,
            "detail": "PLC 0: earth fault",
        },
    ]
    assert gun2["faults"] == []
    assert [(r.levelno, r.getMessage()) for r in caplog.records if " fault " in r.getMessage()] == [
        (
            logging.WARNING,
            "connector 1: fault estop raised (OtherError, EmergencyStop): PLC 0: emergency stop",
        ),
        (logging.WARNING, "connector 1: fault earth raised (GroundFailure): PLC 0: earth fault"),
        (logging.INFO, "connector 1: fault earth cleared"),
        (logging.INFO, "connector 1: fault estop cleared"),
    ]


async def test_tc_061_clear_cache_forces_a_fresh_authorize(
    autojump_clock: Any, tmp_path: Path
) -> None:
    keys = {"LocalPreAuthorize": True, "AuthorizationCacheEnabled": True, "ConnectionTimeOut": 10}
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()

        async def present_and_time_out() -> None:
            since = h.csms.mark()
            await h.station.present_id(1, "TAG-061")
            await h.wait_status(1, "Preparing", since=since)
            await h.wait_status(1, "Available", since=since)

        await present_and_time_out()
        assert h.csms.authorize_count("TAG-061") == 1
        await present_and_time_out()
        assert h.csms.authorize_count("TAG-061") == 1  # answered from the cache
        result = await h.csms_call(call.ClearCache())
        assert result.status == "Accepted"
        await present_and_time_out()
        assert h.csms.authorize_count("TAG-061") == 2  # the cache is empty: ask again


# --- remote start / stop refused --------------------------------------------------------------


async def test_tc_026_remote_start_on_busy_connector_rejected(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-026")
        result = await h.csms_call(call.RemoteStartTransaction(id_tag="OTHER", connector_id=1))
        await trio.sleep(10)
        assert h.transaction_id(1) == tx_id
    assert result.status == "Rejected"
    assert len(h.csms.received("StartTransaction")) == 1


async def test_tc_027_remote_start_on_connector_zero_rejected(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        result = await h.csms_call(call.RemoteStartTransaction(id_tag="TAG-027", connector_id=0))
        await trio.sleep(10)
    assert result.status == "Rejected"
    assert h.csms.received("StatusNotification", since) == []


async def test_tc_028_remote_stop_unknown_transaction_rejected(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-028")
        result = await h.csms_call(call.RemoteStopTransaction(transaction_id=tx_id + 41))
        await trio.sleep(10)
        assert h.transaction_id(1) == tx_id
    assert result.status == "Rejected"
    assert h.csms.received("StopTransaction") == []


# --- stopping with a tag -----------------------------------------------------------------------


async def test_tc_068_stop_with_the_same_id_tag(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-068")
        await trio.sleep(120)
        since = h.csms.mark()
        await h.station.present_id(1, "TAG-068")
        await h.wait_calls("StopTransaction", since=since)
        await h.wait_status(1, "Finishing", since=since)
    assert h.csms.authorize_count() == 1  # the start's only: the same tag stops without one
    stop = h.csms.received("StopTransaction")[0]
    assert (stop["transaction_id"], stop["id_tag"], stop["reason"]) == (tx_id, "TAG-068", "Local")


async def test_tc_069_stop_with_a_tag_of_the_same_group(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(parent_id_tags={"TAG-069-A": "FLEET", "TAG-069-B": "FLEET"})
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-069-A")
        await trio.sleep(120)
        since = h.csms.mark()
        await h.station.present_id(1, "TAG-069-B")
        await h.wait_calls("StopTransaction", since=since)
        await h.wait_status(1, "Finishing", since=since)
    steps = flow(h, 1, since)
    assert steps[0] == ("Authorize", "TAG-069-B")  # a different tag is asked about first
    assert sorted(steps[1:]) == [("StatusNotification", "Finishing"), ("StopTransaction", "Local")]
    stop = h.csms.received("StopTransaction")[0]
    assert (stop["transaction_id"], stop["id_tag"], stop["reason"]) == (
        tx_id,
        "TAG-069-B",
        "Local",
    )


@pytest.mark.parametrize("start", ["remote", "local"])
async def test_parent_id_tag_from_the_start_transaction_answer_lets_its_group_stop(
    autojump_clock: Any, tmp_path: Path, start: str
) -> None:
    """The transaction's parentIdTag is learnt from any idTagInfo: here only the
    StartTransaction.conf says it (a remote start asks nobody; an Authorize.conf may not
    carry it), and a tag of that group stops the session (EVerest found it charging on)."""
    csms = FakeCsms(parent_id_tags={"TAG-B": "FLEET"})
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        since = h.csms.mark()
        await h.station.plug(1)
        csms.hold("StartTransaction")
        if start == "remote":
            result = await h.csms_call(call.RemoteStartTransaction(id_tag="TAG-A", connector_id=1))
            assert result.status == "Accepted"
        else:
            await h.station.present_id(1, "TAG-A")
        await h.wait_until(lambda: bool(csms.waiting))
        csms.set_id_tag("TAG-A", parent_id_tag="FLEET")  # only its answer carries the parent
        csms.release("StartTransaction")
        await h.wait_status(1, "Charging", since=since)
        await h.wait_until(lambda: h.transaction_id(1) is not None)
        since = h.csms.mark()
        await h.station.present_id(1, "TAG-B")
        await h.wait_calls("StopTransaction", since=since)
        await h.wait_status(1, "Finishing", since=since)
    assert [p["id_tag"] for p in csms.received("Authorize")] == (
        ["TAG-A", "TAG-B"] if start == "local" else ["TAG-B"]
    )
    stop = h.csms.received("StopTransaction")[0]
    assert (stop["id_tag"], stop["reason"]) == ("TAG-B", "Local")


async def test_tag_of_another_group_does_not_stop(autojump_clock: Any, tmp_path: Path) -> None:
    csms = FakeCsms(parent_id_tags={"TAG-A": "FLEET", "TAG-B": "OTHER-FLEET"})
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-A")
        since = h.csms.mark()
        await h.station.present_id(1, "TAG-B")
        await h.wait_calls("Authorize", since=since)
        await trio.sleep(30)
        assert h.transaction_id(1) == tx_id
    assert h.csms.received("StopTransaction") == []
    assert statuses_of(h, 1, since) == []


async def test_status_shows_the_hardware_counters(
    autojump_clock: Any, tmp_path: Path, backend: str
) -> None:
    """`GET /api/status` (and `dcocpp status`) carries the backend's own counters: on the PLC
    backend the driver's CAN frame counts, so a communication fault can be told apart."""
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await trio.sleep(1)
        counters = h.station.snapshot()["chargePoint"]["hardware"]
    if backend == "simulated":
        assert counters == {}
        return
    assert set(counters) == {
        "rxFrames",
        "repeats",
        "ignored",
        "crcErrors",
        "decodeErrors",
        "rxOverruns",
        "txFrames",
        "txErrors",
    }
    assert counters["rxFrames"] > counters["repeats"] > 0
    assert counters["txFrames"] > 0
    assert counters["crcErrors"] == counters["decodeErrors"] == counters["txErrors"] == 0
