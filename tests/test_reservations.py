"""Reservations (OCPP 1.6 Reservation profile: ReserveNow, CancelReservation) through the whole
station against the in-test central system, on virtual time, on both hardware backends. Tests
are named after the OCTT conformance cases (docs/conformance.md, "Reservation");
the machine's side of reservations is in tests/test_connector_machine.py."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from ocpp.v16 import call

from dcocpp.clock import ocpp_time
from dcocpp.clock.stationclock import TrioWallClock
from dcocpp.config import ChargerConfig
from dcocpp.ocpp.errors import CallError
from dcocpp.storage.database import Database, ReservationRow, StorageError
from tests.csms import FakeCsms
from tests.station_harness import (
    WALL_START,
    Harness,
    charger_config,
    flow,
    running_station,
    statuses_of,
)

# Every scenario runs on the simulated guns and on the PLC backend (emulated PLCs on CAN).
pytestmark = pytest.mark.usefixtures("backend")

HOUR = 3600.0


def config_with(tmp_path: Path, **keys: Any) -> ChargerConfig:
    """The shipped configuration with read-only OCPP keys changed in a copy of its key file
    (`Group__Key=value`, e.g. `Reservation__ReserveConnectorZeroSupported=True`)."""
    config = charger_config(tmp_path)
    document = json.loads(config.ocpp_config_path.read_text(encoding="utf-8"))
    for name, value in keys.items():
        group, key = name.split("__")
        document[group][key] = value
    key_file = tmp_path / "ocpp16-config.json"
    key_file.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return attrs.evolve(config, ocpp_config_path=key_file)


def zero_supported(tmp_path: Path) -> ChargerConfig:
    return config_with(tmp_path, Reservation__ReserveConnectorZeroSupported=True)


async def reserve(
    h: Harness,
    connector_id: int,
    id_tag: str,
    reservation_id: int,
    *,
    seconds: float = HOUR,
    parent_id_tag: str | None = None,
) -> str:
    """ReserveNow from the central system, expiring `seconds` from now; returns the status."""
    result = await h.csms_call(
        call.ReserveNow(
            connector_id=connector_id,
            expiry_date=h.wall_time(trio.current_time() + seconds),
            id_tag=id_tag,
            reservation_id=reservation_id,
            parent_id_tag=parent_id_tag,
        )
    )
    return str(result.status)


async def cancel(h: Harness, reservation_id: int) -> str:
    result = await h.csms_call(call.CancelReservation(reservation_id=reservation_id))
    return str(result.status)


async def make_unavailable(h: Harness, connector_id: int) -> None:
    """What the OCTT does to the connectors a case does not use."""
    since = h.csms.mark()
    result = await h.csms_call(
        call.ChangeAvailability(connector_id=connector_id, type="Inoperative")
    )
    assert result.status == "Accepted"
    await h.wait_status(connector_id, "Unavailable", since=since)


def stored(config: ChargerConfig) -> list[ReservationRow]:
    db = Database.open(config.data_dir)
    try:
        return db.reservations()
    finally:
        db.close()


def start_payload(h: Harness, id_tag: str, reservation_id: int, at: float) -> dict[str, Any]:
    return {
        "connector_id": 1,
        "id_tag": id_tag,
        "meter_start": 1_000_000,
        "reservation_id": reservation_id,
        "timestamp": h.wall_time(at),
    }


# --- reserving a connector ---------------------------------------------------------------------


async def test_tc_046_1_reserved_connector_local_start(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await make_unavailable(h, 2)
        since = h.csms.mark()
        expires = h.wall_time(trio.current_time() + HOUR)
        assert await reserve(h, 1, "RES-TAG", 46) == "Accepted"
        assert stored(h.station.config) == [ReservationRow(46, 1, "RES-TAG", None, expires)]
        await h.wait_status(1, "Reserved", since=since)
        # Another tag is refused without asking the central system.
        with pytest.raises(
            ValueError,
            match=r"refused OTHER-TAG at the reader: the gun is Reserved for another tag "
            r"\(reservation 46\)",
        ):
            await h.station.present_id(1, "OTHER-TAG")
        await trio.sleep(5)
        assert h.csms.received("Authorize", since) == []
        await h.station.present_id(1, "RES-TAG")
        await h.wait_status(1, "Preparing", since=since)
        await h.station.plug(1)
        await h.wait_status(1, "Charging", since=since)
        start_time = h.csms.times("StartTransaction")[0]
        assert stored(h.station.config) == []  # used: the reservation has ended
        assert h.station.reservations is not None and len(h.station.reservations) == 0
    assert h.csms.received("StartTransaction") == [start_payload(h, "RES-TAG", 46, start_time)]
    assert flow(h, 1, since) == [
        ("StatusNotification", "Reserved"),
        ("Authorize", "RES-TAG"),
        ("StatusNotification", "Preparing"),
        ("StartTransaction", "RES-TAG"),
        ("StatusNotification", "Charging"),
    ]


async def test_tc_046_2_reserved_connector_remote_start(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await make_unavailable(h, 2)
        since = h.csms.mark()
        assert await reserve(h, 1, "RES-TAG", 462) == "Accepted"
        await h.wait_status(1, "Reserved", since=since)
        other = await h.csms_call(call.RemoteStartTransaction(id_tag="OTHER", connector_id=1))
        assert other.status == "Rejected"
        result = await h.csms_call(call.RemoteStartTransaction(id_tag="RES-TAG", connector_id=1))
        assert result.status == "Accepted"
        await h.wait_status(1, "Preparing", since=since)
        await h.station.plug(1)
        await h.wait_status(1, "Charging", since=since)
        start_time = h.csms.times("StartTransaction")[0]
    assert h.csms.received("Authorize") == []  # AuthorizeRemoteTxRequests is false
    assert h.csms.received("StartTransaction") == [start_payload(h, "RES-TAG", 462, start_time)]
    assert statuses_of(h, 1, since) == ["Reserved", "Preparing", "Charging"]


async def test_remote_start_without_connector_uses_the_holders_reservation(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        assert await reserve(h, 2, "RES-TAG", 7) == "Accepted"
        await h.wait_status(2, "Reserved")
        since = h.csms.mark()
        result = await h.csms_call(call.RemoteStartTransaction(id_tag="RES-TAG"))
        assert result.status == "Accepted"
        await h.wait_status(2, "Preparing", since=since)
        await h.station.plug(2)
        (start,) = await h.wait_calls("StartTransaction", since=since)
    assert (start["connector_id"], start["reservation_id"]) == (2, 7)
    assert statuses_of(h, 1, since) == []  # the free gun was left alone


async def test_tc_047_reservation_expires(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await make_unavailable(h, 2)
        since = h.csms.mark()
        assert await reserve(h, 1, "RES-TAG", 47, seconds=120) == "Accepted"
        expires = trio.current_time() + 120
        await h.wait_status(1, "Reserved", since=since)
        await h.wait_status(1, "Available", since=since)
        assert trio.current_time() == pytest.approx(expires, abs=1e-6)
        assert stored(h.station.config) == []
        # The tool then charges with another tag: nothing is reserved any more.
        await h.start_charging(1, "OTHER-TAG")
    start = h.csms.received("StartTransaction")[0]
    assert "reservation_id" not in start
    assert statuses_of(h, 1, since) == ["Reserved", "Available", "Preparing", "Charging"]


async def test_tc_048_1_reserve_faulted_connector(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await h.station.set_fault(1, "earth", True)
        await h.wait_status(1, "Faulted")
        since = h.csms.mark()
        assert await reserve(h, 1, "RES-TAG", 481) == "Faulted"
        await trio.sleep(5)
    assert statuses_of(h, 1, since) == []
    assert stored(h.station.config) == []


async def test_tc_048_2_reserve_occupied_connector(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await h.station.plug(1)
        await h.wait_status(1, "Preparing")
        assert await reserve(h, 1, "RES-TAG", 482) == "Occupied"
        tx_id = await h.start_charging(2, "TAG-2")
        assert await reserve(h, 2, "RES-TAG", 483) == "Occupied"
        since = h.csms.mark()
        result = await h.csms_call(call.RemoteStopTransaction(transaction_id=tx_id))
        assert result.status == "Accepted"
        await h.wait_status(2, "Finishing", since=since)  # the EV is still plugged in
        assert await reserve(h, 2, "RES-TAG", 484) == "Occupied"
    assert stored(h.station.config) == []


async def test_reserve_now_that_cannot_be_stored_is_rejected(
    autojump_clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Database, row: ReservationRow) -> None:
        raise StorageError("disk full")

    monkeypatch.setattr(Database, "put_reservation", broken)
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        assert await reserve(h, 1, "RES-TAG", 1) == "Rejected"
        await trio.sleep(5)
    assert statuses_of(h, 1, since) == []


async def test_reserved_connector_is_occupied_for_a_new_reservation(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        assert await reserve(h, 1, "RES-TAG", 1) == "Accepted"
        assert await reserve(h, 1, "RES-TAG", 2) == "Occupied"
        assert await reserve(h, 1, "OTHER", 3) == "Occupied"
    assert [row.reservation_id for row in stored(h.station.config)] == [1]


async def test_tc_048_3_reserve_unavailable_connector(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await make_unavailable(h, 1)
        assert await reserve(h, 1, "RES-TAG", 483) == "Unavailable"
    assert stored(h.station.config) == []


async def test_tc_048_4_reservation_not_supported(autojump_clock: Any, tmp_path: Path) -> None:
    config = config_with(
        tmp_path, Core__SupportedFeatureProfiles="Core,LocalAuthListManagement,RemoteTrigger"
    )
    async with running_station(config) as h:
        await h.booted()
        since = h.csms.mark()
        assert await reserve(h, 1, "RES-TAG", 484) == "Rejected"
        assert await cancel(h, 484) == "Rejected"
        await trio.sleep(5)
    assert statuses_of(h, 1, since) == []
    assert stored(config) == []


async def test_reserve_unknown_connector_or_past_expiry_is_rejected(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        assert await reserve(h, 3, "RES-TAG", 1) == "Rejected"
        assert await reserve(h, 1, "RES-TAG", 2, seconds=-1) == "Rejected"
        with pytest.raises(CallError) as error:
            await h.csms_call_raw(
                "ReserveNow",
                {"connectorId": 1, "expiryDate": "tomorrow", "idTag": "T", "reservationId": 3},
            )
    assert error.value.code == "PropertyConstraintViolation"
    assert stored(h.station.config) == []


async def test_the_guns_state_answers_before_an_expiry_of_now(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """EVerest reserves a faulted gun with an expiryDate of now and expects Faulted: the gun's
    state (Faulted, Unavailable, Occupied) is the first answer, a past expiry the next."""
    config = zero_supported(tmp_path)
    async with running_station(config) as h:
        await h.booted()
        await h.station.set_fault(1, "earth", True)
        await h.wait_status(1, "Faulted")
        await make_unavailable(h, 2)
        answers = [await reserve(h, c, "RES-TAG", c, seconds=s) for c in (1, 2) for s in (0, -60)]
        assert answers == ["Faulted", "Faulted", "Unavailable", "Unavailable"]
        assert await reserve(h, 0, "RES-TAG", 10, seconds=0) == "Faulted"
        await h.station.set_fault(1, "earth", False)
        await h.wait_status(1, "Available", since=h.csms.mark())
        await h.station.plug(1)
        await h.wait_status(1, "Preparing")
        assert await reserve(h, 1, "RES-TAG", 11, seconds=0) == "Occupied"
        assert await reserve(h, 0, "RES-TAG", 12, seconds=0) == "Occupied"
        await h.station.unplug(1)
        await h.wait_status(1, "Available", since=h.csms.mark())
        # Free: now the expiry decides.
        assert await reserve(h, 1, "RES-TAG", 13, seconds=0) == "Rejected"
        assert await reserve(h, 0, "RES-TAG", 14, seconds=0) == "Rejected"
    assert stored(config) == []


# --- reserving the charge point (connector 0) ----------------------------------------------------


async def test_tc_049_reserve_charge_point_transaction(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(zero_supported(tmp_path)) as h:
        await h.booted()
        await make_unavailable(h, 2)
        since = h.csms.mark()
        assert await reserve(h, 0, "RES-TAG", 49) == "Accepted"
        # The one free gun is the one kept for the holder.
        await h.wait_status(1, "Reserved", since=since)
        with pytest.raises(ValueError, match="Reserved"):
            await h.station.present_id(1, "OTHER-TAG")
        await h.station.plug(1)
        await trio.sleep(5)
        assert h.connector(1).machine.status == "Reserved"  # a plugged EV does not take it
        await h.station.present_id(1, "RES-TAG")
        await h.wait_status(1, "Charging", since=since)
        start_time = h.csms.times("StartTransaction")[0]
        assert stored(h.station.config) == []
    assert h.csms.received("StartTransaction") == [start_payload(h, "RES-TAG", 49, start_time)]
    assert statuses_of(h, 1, since) == ["Reserved", "Preparing", "Charging"]
    assert h.csms.received("Authorize", since) == [{"id_tag": "RES-TAG"}]


async def test_charge_point_reservation_keeps_the_last_free_gun(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(zero_supported(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        assert await reserve(h, 0, "RES-TAG", 9) == "Accepted"
        await trio.sleep(5)
        assert statuses_of(h, 1, since) == statuses_of(h, 2, since) == []  # two free, one kept
        # Anyone may take one gun; the other is then kept for the holder.
        await h.start_charging(1, "OTHER-TAG")
        await h.wait_status(2, "Reserved", since=since)
        with pytest.raises(ValueError, match="Reserved"):
            await h.station.present_id(2, "THIRD-TAG")
        rejected = await h.csms_call(call.RemoteStartTransaction(id_tag="THIRD-TAG"))
        assert rejected.status == "Rejected"
        # No second connector-0 reservation fits, nor one for the kept gun.
        assert await reserve(h, 0, "RES-TAG-2", 10) == "Occupied"
        assert await reserve(h, 2, "RES-TAG-2", 11) == "Occupied"
        mark = h.csms.mark()
        await h.start_charging(2, "RES-TAG")
    starts = h.csms.received("StartTransaction")
    assert [(s["connector_id"], s.get("reservation_id")) for s in starts] == [(1, None), (2, 9)]
    assert statuses_of(h, 2, mark) == ["Preparing", "Charging"]


async def test_charge_point_reservation_used_on_any_gun(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(zero_supported(tmp_path)) as h:
        await h.booted()
        assert await reserve(h, 0, "RES-TAG", 5) == "Accepted"
        await h.start_charging(2, "RES-TAG")
        assert stored(h.station.config) == []
        since = h.csms.mark()
        await h.start_charging(1, "OTHER-TAG")  # nothing is kept any more
    starts = h.csms.received("StartTransaction")
    assert [(s["connector_id"], s.get("reservation_id")) for s in starts] == [(2, 5), (1, None)]
    assert statuses_of(h, 1, since) == ["Preparing", "Charging"]


async def test_tc_050_1_reserve_faulted_charge_point(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(zero_supported(tmp_path)) as h:
        await h.booted()
        for cid in (1, 2):
            await h.station.set_fault(cid, "estop", True)
            await h.wait_status(cid, "Faulted")
        assert await reserve(h, 0, "RES-TAG", 501) == "Faulted"
    assert stored(h.station.config) == []


async def test_tc_050_2_reserve_occupied_charge_point(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(zero_supported(tmp_path)) as h:
        await h.booted()
        await h.start_charging(1, "TAG-1")
        await h.station.plug(2)
        await h.wait_status(2, "Preparing")
        assert await reserve(h, 0, "RES-TAG", 502) == "Occupied"
    assert stored(h.station.config) == []


async def test_tc_050_3_reserve_unavailable_charge_point(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(zero_supported(tmp_path)) as h:
        await h.booted()
        await make_unavailable(h, 0)
        assert await reserve(h, 0, "RES-TAG", 503) == "Unavailable"
        assert await reserve(h, 1, "RES-TAG", 504) == "Unavailable"
    assert stored(h.station.config) == []


async def test_tc_050_4_reserve_charge_point_not_supported(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:  # the shipped key: false
        await h.booted()
        since = h.csms.mark()
        assert await reserve(h, 0, "RES-TAG", 504) == "Rejected"
        await trio.sleep(5)
    assert statuses_of(h, 1, since) == statuses_of(h, 2, since) == []
    assert stored(h.station.config) == []


async def test_charge_point_becoming_unavailable_ends_its_reservations(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(zero_supported(tmp_path)) as h:
        await h.booted()
        await make_unavailable(h, 2)
        assert await reserve(h, 0, "RES-TAG", 1) == "Accepted"
        await h.wait_status(1, "Reserved")
        await make_unavailable(h, 0)
        await h.wait_status(1, "Unavailable")
        assert stored(h.station.config) == []
        since = h.csms.mark()
        result = await h.csms_call(call.ChangeAvailability(connector_id=0, type="Operative"))
        assert result.status == "Accepted"
        await h.wait_status(1, "Available", since=since)
        await trio.sleep(5)
    assert statuses_of(h, 1, since) == ["Available"]


# --- cancelling, replacing, ending ----------------------------------------------------------------


async def test_tc_051_cancel_reservation(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        assert await reserve(h, 1, "RES-TAG", 51) == "Accepted"
        await h.wait_status(1, "Reserved", since=since)
        assert await cancel(h, 51) == "Accepted"
        await h.wait_status(1, "Available", since=since)
        assert stored(h.station.config) == []
        await h.start_charging(1, "OTHER-TAG")
    assert "reservation_id" not in h.csms.received("StartTransaction")[0]
    assert statuses_of(h, 1, since) == ["Reserved", "Available", "Preparing", "Charging"]


async def test_tc_052_cancel_unknown_reservation(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        assert await reserve(h, 1, "RES-TAG", 52) == "Accepted"
        assert await cancel(h, 53) == "Rejected"
        assert await cancel(h, 52) == "Accepted"
        assert await cancel(h, 52) == "Rejected"  # gone already


async def test_same_reservation_id_replaces_the_reservation(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        assert await reserve(h, 1, "RES-TAG", 8) == "Accepted"
        await h.wait_status(1, "Reserved", since=since)
        assert await reserve(h, 1, "NEW-TAG", 8, seconds=60) == "Accepted"  # same connector
        expires = h.wall_time(trio.current_time() + 60)
        assert await reserve(h, 2, "NEW-TAG", 8, seconds=60) == "Accepted"  # moved
        assert stored(h.station.config) == [ReservationRow(8, 2, "NEW-TAG", None, expires)]
        await h.wait_status(2, "Reserved", since=since)
        await h.wait_status(1, "Available", since=since)
        await h.wait_status(2, "Available", since=h.csms.mark())  # the new expiry counts
    assert statuses_of(h, 1, since) == ["Reserved", "Available"]
    assert statuses_of(h, 2, since) == ["Reserved", "Available"]


async def test_fault_ends_the_reservation(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        assert await reserve(h, 1, "RES-TAG", 1) == "Accepted"
        await h.wait_status(1, "Reserved", since=since)
        await h.station.set_fault(1, "meter", True)
        await h.wait_status(1, "Faulted", since=since)
        assert stored(h.station.config) == []
        await h.station.set_fault(1, "meter", False)
        await h.wait_status(1, "Available", since=since)
        assert await cancel(h, 1) == "Rejected"
    assert statuses_of(h, 1, since) == ["Reserved", "Faulted", "Available"]


async def test_unavailable_ends_the_reservation(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        assert await reserve(h, 1, "RES-TAG", 1) == "Accepted"
        await h.wait_status(1, "Reserved", since=since)
        await make_unavailable(h, 1)
        assert stored(h.station.config) == []
    assert statuses_of(h, 1, since) == ["Reserved", "Unavailable"]


async def test_plugged_ev_of_another_driver_does_not_take_the_reserved_gun(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        since = h.csms.mark()
        assert await reserve(h, 1, "RES-TAG", 1) == "Accepted"
        await h.station.plug(1)
        await trio.sleep(5)
        with pytest.raises(ValueError, match="Reserved"):
            await h.station.present_id(1, "OTHER-TAG")
        await h.station.unplug(1)
        await trio.sleep(5)
        # The holder plugs in first, then presents the tag.
        await h.station.plug(1)
        await h.station.present_id(1, "RES-TAG")
        await h.wait_status(1, "Charging", since=since)
    start = h.csms.received("StartTransaction")[0]
    assert (start["id_tag"], start["reservation_id"]) == ("RES-TAG", 1)
    assert statuses_of(h, 1, since) == ["Reserved", "Preparing", "Charging"]


# --- parentIdTag ---------------------------------------------------------------------------------


async def test_tc_053_1_reservation_used_by_a_tag_of_its_parent_local(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(parent_id_tags={"RES-TAG": "FLEET", "FLEET-CARD": "FLEET", "ELSE": "OTHER"})
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        await make_unavailable(h, 2)
        since = h.csms.mark()
        assert await reserve(h, 1, "RES-TAG", 53, parent_id_tag="FLEET") == "Accepted"
        await h.wait_status(1, "Reserved", since=since)
        # A tag of another group is asked about (its group decides), then refused.
        await h.station.present_id(1, "ELSE")
        await h.wait_calls("Authorize", since=since)
        await trio.sleep(5)
        assert h.connector(1).machine.status == "Reserved"
        await h.station.present_id(1, "FLEET-CARD")
        await h.wait_status(1, "Preparing", since=since)
        await h.station.plug(1)
        await h.wait_status(1, "Charging", since=since)
        start_time = h.csms.times("StartTransaction")[0]
    assert h.csms.received("Authorize", since) == [{"id_tag": "ELSE"}, {"id_tag": "FLEET-CARD"}]
    assert h.csms.received("StartTransaction") == [start_payload(h, "FLEET-CARD", 53, start_time)]
    assert statuses_of(h, 1, since) == ["Reserved", "Preparing", "Charging"]


async def test_tc_053_2_reservation_used_by_a_tag_of_its_parent_remote(
    autojump_clock: Any, tmp_path: Path
) -> None:
    csms = FakeCsms(parent_id_tags={"FLEET-CARD": "FLEET"})
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        since = h.csms.mark()
        assert await reserve(h, 1, "RES-TAG", 532, parent_id_tag="FLEET") == "Accepted"
        await h.wait_status(1, "Reserved", since=since)
        result = await h.csms_call(call.RemoteStartTransaction(id_tag="FLEET-CARD", connector_id=1))
        assert result.status == "Accepted"
        # Its parentIdTag is only known from an authorization, whatever
        # AuthorizeRemoteTxRequests says.
        await h.wait_status(1, "Preparing", since=since)
        await h.station.plug(1)
        (start,) = await h.wait_calls("StartTransaction", since=since)
    assert h.csms.received("Authorize", since) == [{"id_tag": "FLEET-CARD"}]
    assert (start["id_tag"], start["reservation_id"]) == ("FLEET-CARD", 532)


# --- persistence --------------------------------------------------------------------------------


async def test_reservations_survive_a_soft_reset(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        assert await reserve(h, 1, "RES-TAG", 1) == "Accepted"
        await h.wait_status(1, "Reserved")
        before = h.station.session
        assert (await h.csms_call(call.Reset(type="Soft"))).status == "Accepted"
        await h.wait_calls("BootNotification", 2)
        await h.wait_until(lambda: h.station.session is not before and h.station.started.is_set())
        boots = [i for i, (_, a, _) in enumerate(h.csms.calls) if a == "BootNotification"]
        await h.wait_calls("StatusNotification", 3, since=boots[1])  # the reboot's statuses
        assert statuses_of(h, 1, boots[1]) == ["Reserved"]
        with pytest.raises(ValueError, match="Reserved"):
            await h.station.present_id(1, "OTHER-TAG")
        since = h.csms.mark()
        await h.start_charging(1, "RES-TAG")
    start = h.csms.received("StartTransaction", since)[0]
    assert start["reservation_id"] == 1


def expiring(clock: TrioWallClock, seconds: float) -> str:
    return ocpp_time(clock.now() + timedelta(seconds=seconds))


async def test_reservations_survive_a_power_cut_and_expire_while_off(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    clock = TrioWallClock(WALL_START)  # one wall clock across both runs
    async with running_station(config, clock=clock) as h:
        await h.booted()
        expiry = clock.now() + timedelta(seconds=600)
        for rid, cid, seconds in ((1, 1, 600), (2, 2, 60)):
            reservation = call.ReserveNow(
                connector_id=cid,
                expiry_date=expiring(clock, seconds),
                id_tag=f"RES-{rid}",
                reservation_id=rid,
            )
            assert (await h.csms_call(reservation)).status == "Accepted"
        await h.wait_status(2, "Reserved")
    await trio.sleep(120)  # the power is off; reservation 2 expires meanwhile
    async with running_station(config, clock=clock) as h:
        await h.booted()
        assert [row.reservation_id for row in stored(config)] == [1]
        assert (statuses_of(h, 1), statuses_of(h, 2)) == (["Reserved"], ["Available"])
        await h.wait_status(1, "Available", since=h.csms.mark())  # its expiryDate still counts
        assert abs((clock.now() - expiry).total_seconds()) < 0.01
    assert stored(config) == []


async def test_charge_point_reservation_survives_a_power_cut(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = zero_supported(tmp_path)
    clock = TrioWallClock(WALL_START)
    async with running_station(config, clock=clock) as h:
        await h.booted()
        await make_unavailable(h, 2)
        reservation = call.ReserveNow(
            connector_id=0, expiry_date=expiring(clock, HOUR), id_tag="RES-TAG", reservation_id=2
        )
        assert (await h.csms_call(reservation)).status == "Accepted"
        await h.wait_status(1, "Reserved")
    async with running_station(config, clock=clock) as h:
        await h.booted()
        # Gun 2 is still Unavailable (persisted): gun 1 is kept for the holder from the start.
        assert (statuses_of(h, 1), statuses_of(h, 2)) == (["Reserved"], ["Unavailable"])
        with pytest.raises(ValueError, match="Reserved"):
            await h.station.present_id(1, "OTHER-TAG")
        await h.start_charging(1, "RES-TAG")
    assert h.csms.received("StartTransaction")[0]["reservation_id"] == 2
    assert stored(config) == []
