"""The installed charging profiles as a service (persisted in the station database, the
ClearChargingProfile rules, a RemoteStartTransaction's TxProfile waiting for its transaction)
and the station's limit arithmetic (shares of the ChargePointMaxProfile across units), without
a running station. The scenarios through the whole station are in test_smart_charging.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16.enums import ChargingProfilePurposeType as Purpose
from ocpp.v16.enums import ChargingRateUnitType as Unit

from dcocpp.ocpp.configuration import ConfigurationStore
from dcocpp.ocpp.smartcharging import InstalledProfiles, RunningTransaction, Supply, parse_profile
from dcocpp.ocpp.smartcharging.service import (
    UNCONFIRMED_TRANSACTION,
    ChargingContext,
    ChargingProfiles,
)
from dcocpp.station.limits import LimitEnforcer
from dcocpp.storage.database import Database, StorageError
from tests.loop_database import on_loop

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 23, 23, 50, tzinfo=UTC)
D = Decimal


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def store(tmp_path: Path) -> ConfigurationStore:
    return ConfigurationStore.load(
        REPO / "configs" / "ocpp16-config.json",
        tmp_path / "user.json",
        patches={"ChargePointId": "CP", "CentralSystemURI": "ws://x/", "NumberOfConnectors": 2},
    )


def body(
    profile_id: int,
    purpose: str = "TxDefaultProfile",
    limit: Any = 16,
    *,
    stack_level: int = 0,
    **fields: Any,
) -> dict[str, Any]:
    return {
        "charging_profile_id": profile_id,
        "stack_level": stack_level,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Relative",
        "charging_schedule": {
            "charging_rate_unit": "A",
            "charging_schedule_period": [{"start_period": 0, "limit": limit}],
        },
        **fields,
    }


IDLE = ChargingContext(Supply.dc(400), D(200), D(75000))


def running(transaction_id: int = 5) -> ChargingContext:
    return ChargingContext(Supply.dc(400), D(200), D(75000), RunningTransaction(transaction_id, T0))


async def loaded(
    configuration: ConfigurationStore, db: Any = None, **options: Any
) -> ChargingProfiles:
    """The profiles over `db` (a `Database`'s statements run on the loop), loaded as the
    station loads them at boot."""
    store_ = on_loop(db) if isinstance(db, Database) else db
    profiles = ChargingProfiles(configuration, store_, **options)
    await profiles.load()
    return profiles


def ids(profiles: ChargingProfiles) -> set[tuple[int, int]]:
    return {(e.connector_id, e.profile.charging_profile_id) for e in profiles.installed}


# --- persistence --------------------------------------------------------------------------------


async def test_profiles_are_stored_exactly_and_restored_without_tx_profiles(tmp_path: Path) -> None:
    clock = Clock()
    db = Database.open(tmp_path)
    profiles = await loaded(store(tmp_path), db, clock=clock, store_errors=(StorageError,))
    changes: list[None] = []
    profiles.subscribe(lambda: changes.append(None))
    assert await profiles.set_profile(1, body(1, limit=D("16.25")), IDLE) == "Accepted"
    assert await profiles.set_profile(0, body(2, "ChargePointMaxProfile", 300), IDLE) == "Accepted"
    assert await profiles.set_profile(1, body(3, "TxProfile", 8, transaction_id=5), running()) == (
        "Accepted"
    )
    expiring = body(4, valid_to="2026-11-24T00:00:00Z", stack_level=1)
    assert await profiles.set_profile(2, expiring, IDLE) == "Accepted"
    assert len(changes) == 4
    stored = dict((p["charging_profile_id"], p) for _, p in db.charging_profiles())
    assert stored[1]["charging_schedule"]["charging_schedule_period"] == [
        {"start_period": 0, "limit": D("16.25")}
    ]
    db.close()

    clock.now = T0 + timedelta(minutes=10)  # past profile 4's validTo
    db = Database.open(tmp_path)
    restored = await loaded(store(tmp_path), db, clock=clock, store_errors=(StorageError,))
    assert ids(restored) == {(1, 1), (0, 2)}  # the TxProfile's transaction is over
    (first,) = [e.profile for e in restored.installed if e.profile.charging_profile_id == 1]
    assert first.charging_schedule.charging_schedule_period[0].limit == D("16.25")
    assert {p["charging_profile_id"] for _, p in db.charging_profiles()} == {1, 2}
    db.close()


class BrokenStore:
    def __init__(self, rows: Iterable[tuple[int, dict[str, Any]]] = ()) -> None:
        self.rows = list(rows)

    async def charging_profiles(self) -> list[tuple[int, dict[str, Any]]]:
        return self.rows

    async def put_charging_profile(
        self, connector_id: int, profile: Mapping[str, Any], *, replaces: Iterable[int] = ()
    ) -> None:
        raise StorageError("disk full")

    async def delete_charging_profiles(self, profile_ids: Iterable[int]) -> None:
        raise StorageError("disk full")


async def test_what_cannot_be_stored_is_not_accepted(tmp_path: Path) -> None:
    good = parse_profile(body(1)).to_payload()
    profiles = await loaded(
        store(tmp_path),
        BrokenStore([(1, good), (1, {"charging_profile_id": 9})]),
        store_errors=(StorageError,),
    )
    assert ids(profiles) == {(1, 1)}  # the unreadable one is ignored
    assert await profiles.set_profile(1, body(2, stack_level=1), IDLE) == "Rejected"
    assert await profiles.clear() == "Unknown"
    assert ids(profiles) == {(1, 1)}  # unchanged: the database still has it
    # A TxProfile does not outlive its transaction, stored or not.
    profiles._installed, _ = profiles.installed.install(
        1, parse_profile(body(3, "TxProfile")), max_installed=20
    )
    await profiles.transaction_ended(1, 5)
    assert ids(profiles) == {(1, 1)}


# --- ClearChargingProfile ---------------------------------------------------------------------


async def test_clear_by_id_first_then_by_the_other_criteria(tmp_path: Path) -> None:
    profiles = await loaded(store(tmp_path))
    for connector_id, profile_id, level in ((1, 1, 0), (1, 2, 1), (2, 3, 1), (0, 4, 1)):
        assert await profiles.set_profile(
            connector_id, body(profile_id, stack_level=level), IDLE
        ) == ("Accepted")
    # An id that exists wins over criteria that do not match it (OCPP 1.6 5.5).
    assert await profiles.clear(id=1, connector_id=2) == "Accepted"
    assert ids(profiles) == {(1, 2), (2, 3), (0, 4)}
    # An id that does not exist: the other criteria decide.
    assert await profiles.clear(id=99, connector_id=2, stack_level=1) == "Accepted"
    assert ids(profiles) == {(1, 2), (0, 4)}
    assert await profiles.clear(id=99) == "Unknown"
    assert await profiles.clear(purpose=Purpose.tx_default_profile, connector_id=0) == "Accepted"
    assert await profiles.clear() == "Accepted"
    assert await profiles.clear() == "Unknown"


# --- RemoteStartTransaction's TxProfile -----------------------------------------------------------


async def test_a_remote_start_profile_waits_for_its_transaction(tmp_path: Path) -> None:
    clock = Clock()
    monotonic = [0.0]
    profiles = await loaded(store(tmp_path), clock=clock, monotonic=lambda: monotonic[0])
    tx = profiles.check_remote_start(body(1, "TxProfile", 20))
    with pytest.raises(Exception, match="TxProfile only"):
        profiles.check_remote_start(body(2, "TxDefaultProfile"))
    with pytest.raises(Exception, match="must be absent"):
        profiles.check_remote_start(body(2, "TxProfile", transaction_id=3))

    # Another tag starts on the connector first: the profile is not theirs, and moot.
    profiles.expect_remote_start(1, "TAG", tx)
    await profiles.transaction_started(1, "OTHER")
    await profiles.transaction_started(1, "TAG")
    assert ids(profiles) == set()

    # Any connector: the first transaction of that tag takes it.
    profiles.expect_remote_start(None, "TAG", tx)
    await profiles.transaction_started(2, "TAG")
    assert ids(profiles) == {(2, 1)}
    await profiles.transaction_ended(2, None)  # unconfirmed: its unbound TxProfiles leave too
    assert ids(profiles) == set()

    # Cancelled (the connector refused), or expired (no EV came).
    handle = profiles.expect_remote_start(1, "TAG", tx)
    profiles.cancel_remote_start(handle)
    await profiles.transaction_started(1, "TAG")
    # ConnectionTimeOut + ResponseTimeout of the monotonic clock: a step of the wall clock is
    # no time passing.
    profiles.expect_remote_start(1, "TAG", tx)
    clock.now += timedelta(hours=1)
    await profiles.transaction_started(1, "TAG")
    assert ids(profiles) == {(1, 1)}
    await profiles.transaction_ended(1, None)
    profiles.expect_remote_start(1, "TAG", tx)
    monotonic[0] += 60 + 30 + 1
    await profiles.transaction_started(1, "TAG")
    assert ids(profiles) == set()


def test_contexts_name_only_confirmed_transactions() -> None:
    assert running(7).transaction_id == 7
    assert running(UNCONFIRMED_TRANSACTION).transaction_id is None
    assert IDLE.transaction_id is None
    assert IDLE.local_limit(Unit.amps) == D("187.5")  # 75 kW at 400 V
    assert IDLE.local_limit(Unit.watts) == 75000


# --- the station's arithmetic ---------------------------------------------------------------


async def test_a_station_limit_in_watts_is_shared_in_watts(tmp_path: Path) -> None:
    profiles = await loaded(store(tmp_path))
    enforcer = LimitEnforcer({}, profiles, clock=_WallClock())
    cp_max = body(1, "ChargePointMaxProfile", 60000)
    cp_max["charging_schedule"]["charging_rate_unit"] = "W"
    assert await profiles.set_profile(0, cp_max, IDLE) == "Accepted"
    contexts = {
        1: ChargingContext(Supply.dc(400), D(200), D(75000), RunningTransaction(1, T0)),
        2: ChargingContext(Supply.dc(300), D(200), D(75000), RunningTransaction(2, T0)),
        3: ChargingContext(Supply.dc(500), D(200), D(75000)),
    }
    limits = enforcer.limits(profiles.installed, contexts, T0)
    # 30 kW each: 75 A at 400 V, 100 A at 300 V; the idle gun would get 20 kW (40 A at 500 V).
    assert limits == {1: D(75), 2: D(100), 3: D(40)}

    # A gun that needs less leaves the rest to the others.
    assert await profiles.set_profile(2, body(2, limit=50), IDLE) == "Accepted"  # 15 kW at 300 V
    limits = enforcer.limits(profiles.installed, contexts, T0)
    assert limits[2] == 50 and limits[1] == D("112.5")  # 45 kW at 400 V
    assert enforcer.limits(InstalledProfiles(), contexts, T0) == {
        1: D(187.5),
        2: D(200),
        3: D(150),
    }


class _WallClock:
    def now(self) -> datetime:
        return T0
