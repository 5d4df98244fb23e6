"""Charging profiles as pure values: parsing and validation (what the schema cannot catch),
placement and the configured limits, and the installed set's replacement and clearing rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from ocpp.v16.enums import ChargingProfileKindType as Kind
from ocpp.v16.enums import ChargingProfilePurposeType as Purpose
from ocpp.v16.enums import ChargingRateUnitType as Unit
from ocpp.v16.enums import RecurrencyKind

from dcocpp.clock import parse_ocpp_time
from dcocpp.ocpp.errors import OcppError
from dcocpp.ocpp.smartcharging import (
    ChargingProfile,
    InstalledProfiles,
    ProfileError,
    SmartChargingLimits,
    check_profile,
    check_remote_start_profile,
    format_datetime,
    parse_profile,
)

T0 = datetime(2024, 8, 21, 12, 24, 36, tzinfo=UTC)
LIMITS = SmartChargingLimits(
    max_stack_level=10,
    allowed_units=frozenset({Unit.amps, Unit.watts}),
    max_periods=5,
    max_installed=3,
)


def payload(**overrides: Any) -> dict[str, Any]:
    """A valid TxDefaultProfile as the OCPP layer hands it over (snake_case); `overrides`
    replace top-level fields, `schedule` replaces fields of the charging schedule."""
    schedule: dict[str, Any] = {
        "duration": 400,
        "start_schedule": "2024-08-21T12:24:36Z",
        "charging_rate_unit": "A",
        "charging_schedule_period": [
            {"start_period": 0, "limit": Decimal("6.0"), "number_phases": 3},
            {"start_period": 100, "limit": Decimal("8.0")},
        ],
    }
    schedule.update(overrides.pop("schedule", {}))
    body: dict[str, Any] = {
        "charging_profile_id": 1,
        "stack_level": 0,
        "charging_profile_purpose": "TxDefaultProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": schedule,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def profile(**overrides: Any) -> ChargingProfile:
    return parse_profile(payload(**overrides))


def refused(field: str, data: dict[str, Any], **kw: Any) -> ProfileError:
    with pytest.raises(ProfileError) as caught:
        parse_profile(data, **kw)
    assert caught.value.field == field, caught.value
    return caught.value


# --- parsing ---------------------------------------------------------------------------------


def test_parses_the_fields_into_domain_types() -> None:
    p = profile(
        transaction_id=None,
        valid_from="2024-08-21T12:24:36Z",
        valid_to="2024-08-21T12:31:25.500Z",
        schedule={"min_charging_rate": Decimal("1.5")},
    )
    assert p.charging_profile_purpose is Purpose.tx_default_profile
    assert p.charging_profile_kind is Kind.absolute
    assert p.valid_from == T0
    assert p.valid_to == datetime(2024, 8, 21, 12, 31, 25, 500000, tzinfo=UTC)
    schedule = p.charging_schedule
    assert schedule.charging_rate_unit is Unit.amps
    assert schedule.start_schedule == T0
    assert schedule.min_charging_rate == Decimal("1.5")
    assert [
        (x.start_period, x.limit, x.number_phases) for x in schedule.charging_schedule_period
    ] == [
        (0, Decimal(6), 3),
        (100, Decimal(8), None),
    ]


@pytest.mark.parametrize("limit", [Decimal("16.25"), 16.25, "16.25"])
def test_limits_keep_their_precision(limit: Any) -> None:
    if isinstance(limit, str):
        with pytest.raises(ProfileError, match="must be a number"):
            profile(schedule={"charging_schedule_period": [{"start_period": 0, "limit": limit}]})
        return
    p = profile(schedule={"charging_schedule_period": [{"start_period": 0, "limit": limit}]})
    value = p.charging_schedule.charging_schedule_period[0].limit
    assert isinstance(value, Decimal)
    assert value == Decimal("16.25") and str(value) == "16.25"


def test_integral_decimals_are_integers_and_booleans_are_not() -> None:
    assert profile(stack_level=Decimal("2")).stack_level == 2
    refused("csChargingProfiles.stackLevel", payload(stack_level=Decimal("2.5")))
    refused("csChargingProfiles.stackLevel", payload(stack_level=True))


def test_datetimes_are_utc_whatever_was_sent() -> None:
    assert parse_ocpp_time("2024-08-21T12:24:36") == T0  # no offset: OCPP means UTC
    assert parse_ocpp_time("2024-08-21T14:24:36+02:00") == T0
    assert parse_ocpp_time("2024-08-21T12:24:36.123456789Z") == T0.replace(microsecond=123456)
    assert format_datetime(T0) == "2024-08-21T12:24:36Z"
    assert format_datetime(T0.replace(microsecond=500000)) == "2024-08-21T12:24:36.500Z"
    refused("csChargingProfiles.validFrom", payload(valid_from="yesterday"))


@pytest.mark.parametrize(
    ("field", "data", "reason"),
    [
        ("csChargingProfiles.chargingProfileId", payload(charging_profile_id=None), "required"),
        ("csChargingProfiles.stackLevel", payload(stack_level=-1), "below the minimum 0"),
        (
            "csChargingProfiles.chargingProfilePurpose",
            payload(charging_profile_purpose="MaxProfile"),
            "not one of",
        ),
        (
            "csChargingProfiles.chargingSchedule.chargingRateUnit",
            payload(schedule={"charging_rate_unit": "kW"}),
            "not one of",
        ),
        (
            "csChargingProfiles.chargingSchedule.duration",
            payload(schedule={"duration": -1}),
            "below the minimum",
        ),
        (
            "csChargingProfiles.chargingSchedule.chargingSchedulePeriod",
            payload(schedule={"charging_schedule_period": []}),
            "at least one period",
        ),
        (
            "csChargingProfiles.chargingSchedule.chargingSchedulePeriod[0].startPeriod",
            payload(schedule={"charging_schedule_period": [{"start_period": 10, "limit": 6}]}),
            "must start at 0",
        ),
        (
            "csChargingProfiles.chargingSchedule.chargingSchedulePeriod[2].startPeriod",
            payload(
                schedule={
                    "charging_schedule_period": [
                        {"start_period": 0, "limit": 6},
                        {"start_period": 60, "limit": 8},
                        {"start_period": 60, "limit": 10},
                    ]
                }
            ),
            "strictly ascending",
        ),
        (
            "csChargingProfiles.chargingSchedule.chargingSchedulePeriod[1].limit",
            payload(
                schedule={
                    "charging_schedule_period": [
                        {"start_period": 0, "limit": 6},
                        {"start_period": 60, "limit": Decimal("-0.1")},
                    ]
                }
            ),
            "below the minimum 0",
        ),
        (
            "csChargingProfiles.chargingSchedule.chargingSchedulePeriod[0].numberPhases",
            payload(
                schedule={
                    "charging_schedule_period": [
                        {"start_period": 0, "limit": 6, "number_phases": 4}
                    ]
                }
            ),
            "at most 3",
        ),
        (
            "csChargingProfiles.transactionId",
            payload(transaction_id=7),
            "only a TxProfile names a transaction",
        ),
        (
            "csChargingProfiles.validTo",
            payload(valid_from="2024-08-21T12:00:00Z", valid_to="2024-08-21T12:00:00Z"),
            "must be after validFrom",
        ),
        (
            "csChargingProfiles.chargingSchedule.startSchedule",
            payload(charging_profile_kind="Relative"),
            "Relative profile starts with the transaction",
        ),
        (
            "csChargingProfiles.recurrencyKind",
            payload(charging_profile_kind="Recurring"),
            "required for a Recurring profile",
        ),
        (
            "csChargingProfiles.chargingSchedule.startSchedule",
            payload(
                charging_profile_kind="Recurring",
                recurrency_kind="Daily",
                schedule={"start_schedule": None},
            ),
            "required for a Recurring profile",
        ),
        (
            "csChargingProfiles.chargingSchedule.startSchedule",
            payload(schedule={"start_schedule": None}),
            "required for an Absolute profile",
        ),
    ],
)
def test_refuses_what_the_schema_cannot_catch(
    field: str, data: dict[str, Any], reason: str
) -> None:
    error = refused(field, data)
    assert reason in error.reason
    assert str(error).startswith(f"{field}: ")
    assert isinstance(error, OcppError)  # one exception root for the OCPP layer


def test_refuses_payloads_of_the_wrong_shape() -> None:
    refused("csChargingProfiles", [])  # type: ignore[arg-type]
    refused("csChargingProfiles.chargingSchedule", payload(charging_schedule="soon"))
    refused(
        "csChargingProfiles.chargingSchedule.chargingSchedulePeriod",
        payload(schedule={"charging_schedule_period": {"start_period": 0}}),
    )
    refused(
        "csChargingProfiles.chargingSchedule.chargingSchedulePeriod[0].limit",
        payload(
            schedule={"charging_schedule_period": [{"start_period": 0, "limit": float("inf")}]}
        ),
    )


def test_absolute_without_start_schedule_starts_when_received() -> None:
    data = payload(schedule={"start_schedule": None})
    p = parse_profile(data, received_at=T0)
    assert p.charging_schedule.start_schedule == T0
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_profile(data, received_at=T0.replace(tzinfo=None))


def test_relative_and_recurring_profiles_parse() -> None:
    relative = profile(charging_profile_kind="Relative", schedule={"start_schedule": None})
    assert relative.charging_schedule.start_schedule is None
    recurring = profile(charging_profile_kind="Recurring", recurrency_kind="Weekly")
    assert recurring.recurrency_kind is RecurrencyKind.weekly


def test_duration_zero_means_no_duration() -> None:
    assert profile(schedule={"duration": 0}).charging_schedule.duration is None
    assert profile(schedule={"duration": None}).charging_schedule.duration is None


# --- round trip ------------------------------------------------------------------------------

_MOMENTS = st.integers(-(10**6), 10**6).map(lambda s: T0 + timedelta(seconds=s))


@st.composite
def profiles(draw: st.DrawFn) -> ChargingProfile:
    kind = draw(st.sampled_from(list(Kind)))
    purpose = draw(st.sampled_from(list(Purpose)))
    starts = sorted(draw(st.sets(st.integers(1, 86400), max_size=4)))
    periods = [
        {
            "start_period": start,
            "limit": draw(st.decimals(0, 1000, places=2)),
            "number_phases": draw(st.none() | st.integers(1, 3)),
        }
        for start in [0, *starts]
    ]
    valid_from = draw(st.none() | _MOMENTS)
    valid_to = draw(st.none() | _MOMENTS)
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        valid_to = valid_from + timedelta(seconds=1)
    schedule = {
        "duration": draw(st.none() | st.integers(1, 10**6)),
        "start_schedule": None if kind is Kind.relative else format_datetime(draw(_MOMENTS)),
        "charging_rate_unit": draw(st.sampled_from(["A", "W"])),
        "charging_schedule_period": periods,
        "min_charging_rate": draw(st.none() | st.decimals(0, 10, places=1)),
    }
    data = payload(
        charging_profile_id=draw(st.integers(-(2**31), 2**31 - 1)),
        stack_level=draw(st.integers(0, 100)),
        charging_profile_purpose=purpose.value,
        charging_profile_kind=kind.value,
        transaction_id=draw(st.integers(1, 99)) if purpose is Purpose.tx_profile else None,
        recurrency_kind=draw(st.sampled_from(["Daily", "Weekly"]))
        if kind is Kind.recurring
        else None,
        valid_from=None if valid_from is None else format_datetime(valid_from),
        valid_to=None if valid_to is None else format_datetime(valid_to),
        schedule=schedule,
    )
    return parse_profile({k: v for k, v in data.items() if v is not None})


@settings(max_examples=200, deadline=None)
@given(profiles())
def test_to_payload_round_trips(p: ChargingProfile) -> None:
    """What is persisted (or sent on) is read back as the same profile."""
    assert parse_profile(p.to_payload()) == p


# --- placement and configured limits ------------------------------------------------------------


def placement_error(p: ChargingProfile, connector_id: int, tx: int | None = None) -> str:
    with pytest.raises(ProfileError) as caught:
        check_profile(p, connector_id, LIMITS, running_transaction_id=tx)
    return str(caught.value)


def test_purposes_go_on_the_connectors_ocpp_allows() -> None:
    station_max = profile(charging_profile_purpose="ChargePointMaxProfile")
    check_profile(station_max, 0, LIMITS, running_transaction_id=None)
    assert "only be set on connector 0" in placement_error(station_max, 1)
    default = profile()
    for connector_id in (0, 1, 2):
        check_profile(default, connector_id, LIMITS, running_transaction_id=None)
    assert "not a connector" in placement_error(default, -1)
    tx = profile(charging_profile_purpose="TxProfile")
    assert "not 0" in placement_error(tx, 0, tx=7)


def test_tx_profile_needs_the_running_transaction() -> None:
    """OCTT TC_058_1 (no transaction) and TC_058_2 (wrong transactionId) expect Rejected."""
    unbound = profile(charging_profile_purpose="TxProfile")
    bound = profile(charging_profile_purpose="TxProfile", transaction_id=7)
    assert "no transaction runs on connector 1" in placement_error(unbound, 1)
    assert "no transaction runs on connector 1" in placement_error(bound, 1)
    assert "8 is not the transaction" in placement_error(
        profile(charging_profile_purpose="TxProfile", transaction_id=8), 1, tx=7
    )
    check_profile(bound, 1, LIMITS, running_transaction_id=7)
    check_profile(unbound, 1, LIMITS, running_transaction_id=7)


def test_configured_limits_are_enforced() -> None:
    check_profile(profile(stack_level=10), 1, LIMITS, running_transaction_id=None)
    assert placement_error(profile(stack_level=11), 1).startswith(
        "ChargeProfileMaxStackLevel: stackLevel 11 is above the maximum 10"
    )
    many = [{"start_period": 60 * i, "limit": 6} for i in range(6)]
    assert placement_error(profile(schedule={"charging_schedule_period": many}), 1).startswith(
        "ChargingScheduleMaxPeriods: 6 periods"
    )
    amps_only = SmartChargingLimits(10, frozenset({Unit.amps}), 5, 3)
    watts = profile(schedule={"charging_rate_unit": "W"})
    with pytest.raises(ProfileError, match=r"ChargingScheduleAllowedChargingRateUnit: .* W is not"):
        check_profile(watts, 1, amps_only, running_transaction_id=None)


def test_limits_come_from_the_configuration_keys() -> None:
    class Store:
        values: dict[str, Any] = {
            "ChargeProfileMaxStackLevel": 8,
            "ChargingScheduleAllowedChargingRateUnit": ["Power"],
            "ChargingScheduleMaxPeriods": 24,
            "MaxChargingProfilesInstalled": 20,
        }

        def get_int(self, key: str) -> int:
            return int(self.values[key])

        def get_list(self, key: str) -> list[str]:
            return list(self.values[key])

    assert SmartChargingLimits.from_configuration(Store()) == SmartChargingLimits(
        8, frozenset({Unit.watts}), 24, 20
    )


def test_remote_start_takes_an_unbound_tx_profile_only() -> None:
    """OCTT TC_059 (a TxProfile is used) and TC_060 (another purpose is Rejected)."""
    tx = profile(charging_profile_purpose="TxProfile")
    check_remote_start_profile(tx, LIMITS)
    with pytest.raises(ProfileError, match="TxProfile only"):
        check_remote_start_profile(profile(), LIMITS)
    with pytest.raises(ProfileError, match="does not exist yet"):
        check_remote_start_profile(
            profile(charging_profile_purpose="TxProfile", transaction_id=3), LIMITS
        )
    with pytest.raises(ProfileError, match="ChargeProfileMaxStackLevel"):
        check_remote_start_profile(
            profile(charging_profile_purpose="TxProfile", stack_level=99), LIMITS
        )


# --- the installed set -------------------------------------------------------------------------


def ids(installed: InstalledProfiles) -> list[tuple[int, int]]:
    return [(e.connector_id, e.profile.charging_profile_id) for e in installed]


def test_same_id_replaces_wherever_it_was() -> None:
    installed, replaced = InstalledProfiles().install(1, profile(), max_installed=3)
    assert replaced == ()
    moved = profile(stack_level=2)
    installed, replaced = installed.install(2, moved, max_installed=3)
    assert [e.connector_id for e in replaced] == [1]
    assert ids(installed) == [(2, 1)]
    assert installed.entries[0].profile is moved


def test_same_connector_purpose_and_stack_level_replaces() -> None:
    installed = InstalledProfiles()
    installed, _ = installed.install(0, profile(charging_profile_id=1), max_installed=3)
    installed, _ = installed.install(1, profile(charging_profile_id=2), max_installed=3)
    # Connector 1's TxDefaultProfile at stack 0 does not replace connector 0's (7.10) ...
    assert ids(installed) == [(0, 1), (1, 2)]
    # ... but a new one for connector 1 at the same stack level replaces connector 1's.
    installed, replaced = installed.install(1, profile(charging_profile_id=3), max_installed=3)
    assert [e.profile.charging_profile_id for e in replaced] == [2]
    assert ids(installed) == [(0, 1), (1, 3)]
    # Another stack level or purpose is another profile.
    installed, replaced = installed.install(
        1, profile(charging_profile_id=4, stack_level=1), max_installed=3
    )
    assert replaced == ()
    assert len(installed) == 3


def test_max_charging_profiles_installed_counts_after_replacement() -> None:
    installed = InstalledProfiles()
    for i in range(3):
        installed, _ = installed.install(
            1, profile(charging_profile_id=i, stack_level=i), max_installed=3
        )
    with pytest.raises(
        ProfileError, match="MaxChargingProfilesInstalled: 3 profiles are installed"
    ):
        installed.install(1, profile(charging_profile_id=9, stack_level=9), max_installed=3)
    # A replacement does not grow the set, so it is still accepted at the maximum.
    installed, replaced = installed.install(
        1, profile(charging_profile_id=2, stack_level=5), max_installed=3
    )
    assert len(installed) == 3 and len(replaced) == 1


def test_clear_by_each_criterion_and_all() -> None:
    """OCTT TC_067: clear by id, by purpose and stackLevel, then all."""
    installed = InstalledProfiles.of(
        [
            (0, profile(charging_profile_id=1, charging_profile_purpose="ChargePointMaxProfile")),
            (0, profile(charging_profile_id=2)),
            (1, profile(charging_profile_id=3, stack_level=1)),
            (2, profile(charging_profile_id=4, stack_level=1)),
        ]
    )
    after, removed = installed.clear(id=99)
    assert removed == () and after is installed  # Unknown
    after, removed = installed.clear(id=3)
    assert ids(after) == [(0, 1), (0, 2), (2, 4)] and len(removed) == 1
    after, removed = installed.clear(purpose=Purpose.tx_default_profile, stack_level=1)
    assert ids(after) == [(0, 1), (0, 2)]
    after, removed = installed.clear(connector_id=0)
    assert ids(after) == [(1, 3), (2, 4)]
    after, removed = installed.clear(connector_id=0, purpose=Purpose.charge_point_max_profile)
    assert ids(after) == [(0, 2), (1, 3), (2, 4)]
    after, removed = installed.clear(id=3, connector_id=2)  # every criterion must match
    assert removed == ()
    after, removed = installed.clear()
    assert ids(after) == [] and len(removed) == 4


def test_ended_transaction_takes_its_tx_profiles_along() -> None:
    installed = InstalledProfiles.of(
        [
            (1, profile(charging_profile_id=1)),
            (1, profile(charging_profile_id=2, charging_profile_purpose="TxProfile")),
            (
                1,
                profile(
                    charging_profile_id=3,
                    charging_profile_purpose="TxProfile",
                    stack_level=1,
                    transaction_id=7,
                ),
            ),
            (
                2,
                profile(
                    charging_profile_id=4, charging_profile_purpose="TxProfile", transaction_id=8
                ),
            ),
            (
                2,
                profile(charging_profile_id=5, charging_profile_purpose="TxProfile", stack_level=1),
            ),
        ]
    )
    after, removed = installed.end_transaction(1, 7)
    assert ids(after) == [(1, 1), (2, 4), (2, 5)]
    assert sorted(e.profile.charging_profile_id for e in removed) == [2, 3]


def test_expired_profiles_can_be_dropped() -> None:
    installed = InstalledProfiles.of(
        [
            (1, profile(charging_profile_id=1, valid_to="2024-08-21T12:00:00Z")),
            (1, profile(charging_profile_id=2, stack_level=1, valid_to="2024-08-21T13:00:00Z")),
            (1, profile(charging_profile_id=3, stack_level=2)),
        ]
    )
    after, removed = installed.remove_expired(datetime(2024, 8, 21, 12, 0, tzinfo=UTC))
    assert ids(after) == [(1, 2), (1, 3)] and len(removed) == 1
