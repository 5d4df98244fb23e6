"""OCPP 1.6 charging profiles: the domain types, their validation, and the set installed.

Pure code: no I/O, no clock, no trio. The OCPP layer hands `parse_profile` the snake_case dict
it got from SetChargingProfile.req (`cs_charging_profiles`) or RemoteStartTransaction.req
(`charging_profile`); after schema validation numbers may be `Decimal` (the wire layer parses
the `multipleOf: 0.1` messages with Decimal) and are kept as `Decimal` here, so 16.25 A stays
16.25 A. Every refusal is a `ProfileError` naming the field and the reason; the handler answers
Rejected (SetChargingProfile, RemoteStartTransaction) and logs the reason.

The rules, with the OCPP 1.6 (edition 2) references:

* Purposes (3.13.1, 7.10): a ChargePointMaxProfile only on connector 0; a TxDefaultProfile on
  connector 0 applies to every connector, on connector N to that connector only; a TxProfile
  never on connector 0 and only while the connector runs a transaction, whose id it must name
  if it names one (5.16: otherwise Rejected, OCTT TC_058_1 / TC_058_2). A transactionId
  on any other purpose is refused (7.8: "Only valid if ChargingProfilePurpose is TxProfile").
* Kinds (7.9): Absolute needs a startSchedule (when it is missing, the time the profile was
  received is used if the caller gives one, else it is refused); Recurring needs both
  recurrencyKind and startSchedule; Relative must not have a startSchedule (7.13: "If absent
  the schedule will be relative to start of charging"; OCTT TC_057_CSMS requires it omitted).
* Periods (7.14): at least one, the first at startPeriod 0, strictly ascending, limits >= 0,
  numberPhases 1..3 when present.
* duration 0 means no duration (the last period lasts until validTo or the transaction's end),
  as libocpp treats it; a negative duration is refused.
* validTo must be after validFrom: such a profile could never apply.
* Ranges the schedule can be computed in: every integer is an OCPP integer (32-bit signed, so
  startPeriod and duration are at most 2^31 - 1 s, about 68 years), every limit at most
  2^31 - 1 (A or W), and every date (startSchedule, validFrom, validTo) before
  `LATEST_DATE` (9000-01-01T00:00:00Z), so that a date plus a period, the duration and a
  recurrence cycle stays within what a datetime can hold. A date that cannot be expressed in
  UTC at all (0001-01-01T00:00:00+01:00) is refused as well.
* Configuration keys (9.4): stackLevel <= ChargeProfileMaxStackLevel, the unit in
  ChargingScheduleAllowedChargingRateUnit, at most ChargingScheduleMaxPeriods periods, at
  most MaxChargingProfilesInstalled profiles installed (`InstalledProfiles.install`).
* Replacement (3.13.2, 5.16): a profile with the same chargingProfileId, or with the same
  connector, purpose and stackLevel, replaces the installed one. The connector is part of the
  key because 7.10 says a TxDefaultProfile sent for connector N "SHALL be replaced only for that
  specific connector": the connector-0 profile stays for the others.
* ClearChargingProfile (5.5): every criterion given must match (id, connectorId, purpose,
  stackLevel); none given clears everything. The answer is Accepted when something was removed,
  else Unknown.
* A TxProfile is removed when its transaction ends (7.10: "After the transaction is stopped, the
  profile SHOULD be deleted").
"""

from __future__ import annotations

import decimal
import enum
import itertools
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import attrs
from ocpp.v16.enums import ChargingProfileKindType as Kind
from ocpp.v16.enums import ChargingProfilePurposeType as Purpose
from ocpp.v16.enums import ChargingRateUnitType as Unit
from ocpp.v16.enums import RecurrencyKind

from dcocpp.clock import ocpp_time, parse_ocpp_time
from dcocpp.ocpp.errors import OcppError
from dcocpp.ocpp.wire import INT32_MAX, INT32_MIN

__all__ = [
    "ChargingProfile",
    "ChargingSchedule",
    "ChargingSchedulePeriod",
    "InstalledProfile",
    "InstalledProfiles",
    "ProfileError",
    "SmartChargingLimits",
    "check_limits",
    "check_profile",
    "check_remote_start_profile",
    "format_datetime",
    "parse_profile",
    "recurrence_cycle",
]

# What ChargingScheduleAllowedChargingRateUnit lists (9.4), and the unit each one means.
_UNIT_NAMES = {"Current": Unit.amps, "Power": Unit.watts}

# OCPP-J 1.6 integers are 32-bit signed; limits get the same bound (see the module docstring).
MAX_LIMIT = Decimal(INT32_MAX)
# Every date of a profile lies before this: startSchedule + startPeriod or duration (at most
# INT32_MAX s, 68 years) + a recurrence cycle (7 days) stays far below datetime.max (9999).
LATEST_DATE = datetime(9000, 1, 1, tzinfo=UTC)

_E = TypeVar("_E", bound=enum.Enum)


class ProfileError(OcppError):
    """A charging profile, or a request about one, the charge point must refuse.

    `field` is where the problem is, written as the central system wrote it (camelCase path,
    or the configuration key that was exceeded); `reason` says why."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# --- the types ------------------------------------------------------------------------------


@attrs.frozen
class ChargingSchedulePeriod:
    """One step of a schedule (7.14): from `start_period` seconds on, at most `limit`."""

    start_period: int
    limit: Decimal
    number_phases: int | None = None


@attrs.frozen
class ChargingSchedule:
    """7.13. `duration` None means the last period never ends on its own."""

    charging_rate_unit: Unit
    charging_schedule_period: tuple[ChargingSchedulePeriod, ...]
    duration: int | None = None
    start_schedule: datetime | None = None
    min_charging_rate: Decimal | None = None


@attrs.frozen
class ChargingProfile:
    """7.8. Field names are the OCPP names in snake_case, as the `ocpp` package spells them."""

    charging_profile_id: int
    stack_level: int
    charging_profile_purpose: Purpose
    charging_profile_kind: Kind
    charging_schedule: ChargingSchedule
    transaction_id: int | None = None
    recurrency_kind: RecurrencyKind | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None

    def to_payload(self) -> dict[str, Any]:
        """The snake_case dict `parse_profile` reads back (to persist the profile, or to send
        it through the RPC layer, which turns it into camelCase JSON). None fields are left
        out; numbers stay `Decimal`."""
        schedule = self.charging_schedule
        periods = [
            _without_none(start_period=p.start_period, limit=p.limit, number_phases=p.number_phases)
            for p in schedule.charging_schedule_period
        ]
        return _without_none(
            charging_profile_id=self.charging_profile_id,
            transaction_id=self.transaction_id,
            stack_level=self.stack_level,
            charging_profile_purpose=self.charging_profile_purpose.value,
            charging_profile_kind=self.charging_profile_kind.value,
            recurrency_kind=self.recurrency_kind.value if self.recurrency_kind else None,
            valid_from=_format_optional(self.valid_from),
            valid_to=_format_optional(self.valid_to),
            charging_schedule=_without_none(
                duration=schedule.duration,
                start_schedule=_format_optional(schedule.start_schedule),
                charging_rate_unit=schedule.charging_rate_unit.value,
                charging_schedule_period=periods,
                min_charging_rate=schedule.min_charging_rate,
            ),
        )

    def valid_at(self, at: datetime) -> bool:
        """validFrom <= at < validTo (either bound may be absent)."""
        if self.valid_from is not None and at < self.valid_from:
            return False
        return self.valid_to is None or at < self.valid_to


def _without_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


# --- dates ------------------------------------------------------------------------------------


def format_datetime(moment: datetime) -> str:
    """An aware datetime -> OCPP dateTime, to the millisecond when needed (a schedule's
    instants are usually whole seconds)."""
    return ocpp_time(moment, "seconds" if moment.microsecond == 0 else "milliseconds")


def _format_optional(moment: datetime | None) -> str | None:
    return None if moment is None else format_datetime(moment)


# --- parsing -----------------------------------------------------------------------------------


def parse_profile(
    payload: Mapping[str, Any], *, received_at: datetime | None = None
) -> ChargingProfile:
    """A csChargingProfiles / chargingProfile payload (snake_case, as the OCPP layer gets it)
    -> a validated `ChargingProfile`.

    Checks what the schema cannot (see the module docstring); where the profile goes and the
    configured limits are `check_profile`'s job. `received_at` stands in for the missing
    startSchedule of an Absolute profile. Raises `ProfileError`."""
    reader = _Reader(payload, "csChargingProfiles")
    purpose = reader.enum("charging_profile_purpose", Purpose)
    kind = reader.enum("charging_profile_kind", Kind)
    profile = ChargingProfile(
        charging_profile_id=reader.integer("charging_profile_id"),
        stack_level=reader.integer("stack_level", minimum=0),
        charging_profile_purpose=purpose,
        charging_profile_kind=kind,
        charging_schedule=_parse_schedule(reader.child("charging_schedule")),
        transaction_id=reader.optional_integer("transaction_id"),
        recurrency_kind=reader.optional_enum("recurrency_kind", RecurrencyKind),
        valid_from=reader.optional_datetime("valid_from"),
        valid_to=reader.optional_datetime("valid_to"),
    )
    _check_purpose_fields(profile)
    _check_validity(profile)
    return _check_kind(profile, received_at)


def _parse_schedule(reader: _Reader) -> ChargingSchedule:
    duration = reader.optional_integer("duration", minimum=0)
    periods = tuple(_parse_period(item) for item in reader.children("charging_schedule_period"))
    _check_periods(periods, reader.path("chargingSchedulePeriod"))
    return ChargingSchedule(
        charging_rate_unit=reader.enum("charging_rate_unit", Unit),
        charging_schedule_period=periods,
        # 0 seconds would be a schedule that never applies; libocpp reads it as "no duration".
        duration=duration or None,
        start_schedule=reader.optional_datetime("start_schedule"),
        min_charging_rate=reader.optional_decimal(
            "min_charging_rate", minimum=Decimal(0), maximum=MAX_LIMIT
        ),
    )


def _parse_period(reader: _Reader) -> ChargingSchedulePeriod:
    phases = reader.optional_integer("number_phases", minimum=1)
    if phases is not None and phases > 3:
        raise ProfileError(reader.path("numberPhases"), f"{phases} phases: at most 3")
    return ChargingSchedulePeriod(
        start_period=reader.integer("start_period", minimum=0),
        limit=reader.decimal("limit", minimum=Decimal(0), maximum=MAX_LIMIT),
        number_phases=phases,
    )


def _check_periods(periods: tuple[ChargingSchedulePeriod, ...], where: str) -> None:
    if not periods:
        raise ProfileError(where, "at least one period is required")
    if periods[0].start_period != 0:
        raise ProfileError(f"{where}[0].startPeriod", "the first period must start at 0")
    for i, (before, after) in enumerate(itertools.pairwise(periods), start=1):
        if after.start_period <= before.start_period:
            raise ProfileError(
                f"{where}[{i}].startPeriod",
                f"{after.start_period} does not come after {before.start_period}:"
                " periods must be in strictly ascending order",
            )


def _check_purpose_fields(profile: ChargingProfile) -> None:
    if (
        profile.transaction_id is not None
        and profile.charging_profile_purpose is not Purpose.tx_profile
    ):
        raise ProfileError(
            "csChargingProfiles.transactionId",
            f"only a TxProfile names a transaction, not a {profile.charging_profile_purpose}",
        )


def _check_validity(profile: ChargingProfile) -> None:
    if (
        profile.valid_from is not None
        and profile.valid_to is not None
        and profile.valid_to <= profile.valid_from
    ):
        raise ProfileError(
            "csChargingProfiles.validTo", "must be after validFrom: the profile would never apply"
        )


def _check_kind(profile: ChargingProfile, received_at: datetime | None) -> ChargingProfile:
    schedule = profile.charging_schedule
    where = "csChargingProfiles.chargingSchedule.startSchedule"
    kind = profile.charging_profile_kind
    if kind is Kind.relative and schedule.start_schedule is not None:
        raise ProfileError(where, "a Relative profile starts with the transaction: must be absent")
    if kind is Kind.recurring:
        if profile.recurrency_kind is None:
            raise ProfileError(
                "csChargingProfiles.recurrencyKind", "required for a Recurring profile"
            )
        if schedule.start_schedule is None:
            raise ProfileError(where, "required for a Recurring profile")
    if kind is Kind.absolute and schedule.start_schedule is None:
        if received_at is None:
            raise ProfileError(where, "required for an Absolute profile")
        # An Absolute profile without a start point starts when it arrives (as MicroOcpp and
        # libocpp's allow-no-startSchedule option do): refusing it would refuse a limit.
        _require_aware(received_at, "received_at")
        return attrs.evolve(
            profile, charging_schedule=attrs.evolve(schedule, start_schedule=received_at)
        )
    return profile


class _Reader:
    """Typed access to one object of the payload; errors name the camelCase path."""

    def __init__(self, data: Any, where: str):
        if not isinstance(data, Mapping):
            raise ProfileError(where, f"must be an object, not {type(data).__name__}")
        self._data = data
        self._where = where

    def path(self, camel: str) -> str:
        return f"{self._where}.{camel}"

    def _get(self, key: str) -> tuple[str, Any]:
        where = self.path(_camel(key))
        if key not in self._data or self._data[key] is None:
            raise ProfileError(where, "required")
        return where, self._data[key]

    def child(self, key: str) -> _Reader:
        where, value = self._get(key)
        return _Reader(value, where)

    def children(self, key: str) -> Iterator[_Reader]:
        where, value = self._get(key)
        if not isinstance(value, list | tuple):
            raise ProfileError(where, f"must be a list, not {type(value).__name__}")
        for i, item in enumerate(value):
            yield _Reader(item, f"{where}[{i}]")

    def integer(self, key: str, *, minimum: int | None = None) -> int:
        where, value = self._get(key)
        return _integer(value, where, minimum)

    def optional_integer(self, key: str, *, minimum: int | None = None) -> int | None:
        if self._data.get(key) is None:
            return None
        return self.integer(key, minimum=minimum)

    def decimal(
        self, key: str, *, minimum: Decimal | None = None, maximum: Decimal | None = None
    ) -> Decimal:
        where, value = self._get(key)
        return _decimal(value, where, minimum, maximum)

    def optional_decimal(
        self, key: str, *, minimum: Decimal | None = None, maximum: Decimal | None = None
    ) -> Decimal | None:
        if self._data.get(key) is None:
            return None
        return self.decimal(key, minimum=minimum, maximum=maximum)

    def enum(self, key: str, enum_type: type[_E]) -> _E:
        where, value = self._get(key)
        try:
            return enum_type(value)
        except ValueError:
            allowed = ", ".join(member.value for member in enum_type)
            raise ProfileError(where, f"{value!r} is not one of {allowed}") from None

    def optional_enum(self, key: str, enum_type: type[_E]) -> _E | None:
        if self._data.get(key) is None:
            return None
        return self.enum(key, enum_type)

    def optional_datetime(self, key: str) -> datetime | None:
        if self._data.get(key) is None:
            return None
        where, value = self._get(key)
        if isinstance(value, datetime):
            _require_aware(value, where)
            moment = value
        elif isinstance(value, str):
            try:
                moment = parse_ocpp_time(value)
            except ValueError:
                raise ProfileError(where, f"{value!r} is not a dateTime (in UTC)") from None
        else:
            raise ProfileError(where, f"must be a dateTime string, not {type(value).__name__}")
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:
            raise ProfileError(where, f"{value} cannot be expressed in UTC") from None
        if moment >= LATEST_DATE:
            raise ProfileError(
                where, f"{format_datetime(moment)} is not before {format_datetime(LATEST_DATE)}"
            )
        return moment


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def _integer(value: Any, where: str, minimum: int | None) -> int:
    # bool is an int to Python, not to JSON; a Decimal 3 (or 3.0) is an integer to the schema.
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ProfileError(where, f"must be an integer, not {value!r}")
    if isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise ProfileError(where, f"must be an integer, not {value}")
        value = int(value)
    if not INT32_MIN <= value <= INT32_MAX:
        raise ProfileError(where, f"{value} is not a 32-bit integer")
    if minimum is not None and value < minimum:
        raise ProfileError(where, f"{value} is below the minimum {minimum}")
    return value


def _decimal(
    value: Any, where: str, minimum: Decimal | None, maximum: Decimal | None = None
) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ProfileError(where, f"must be a number, not {value!r}")
    try:
        # str() of a float is its shortest repr: 16.25 stays 16.25, not 16.25000000000000177...
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except decimal.InvalidOperation:  # pragma: no cover - str() of a number always parses
        raise ProfileError(where, f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ProfileError(where, f"{value} is not a finite number")
    if minimum is not None and number < minimum:
        raise ProfileError(where, f"{number} is below the minimum {minimum}")
    if maximum is not None and number > maximum:
        raise ProfileError(where, f"{number} is above the maximum {maximum}")
    return number


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, not {moment!r}")


# --- placement and configured limits --------------------------------------------------------


class _KeyReader(Protocol):
    """What `SmartChargingLimits.from_configuration` needs of the configuration store."""

    def get_int(self, key: str) -> int: ...

    def get_list(self, key: str) -> list[str]: ...


@attrs.frozen
class SmartChargingLimits:
    """The Smart Charging configuration keys (9.4) that bound what may be installed."""

    max_stack_level: int  # ChargeProfileMaxStackLevel
    allowed_units: frozenset[Unit]  # ChargingScheduleAllowedChargingRateUnit
    max_periods: int  # ChargingScheduleMaxPeriods
    max_installed: int  # MaxChargingProfilesInstalled

    @classmethod
    def from_configuration(cls, config: _KeyReader) -> SmartChargingLimits:
        """Read the four keys from the configuration store (`ConfigurationStore` fits)."""
        names = config.get_list("ChargingScheduleAllowedChargingRateUnit")
        return cls(
            max_stack_level=config.get_int("ChargeProfileMaxStackLevel"),
            allowed_units=frozenset(_UNIT_NAMES[n] for n in names if n in _UNIT_NAMES),
            max_periods=config.get_int("ChargingScheduleMaxPeriods"),
            max_installed=config.get_int("MaxChargingProfilesInstalled"),
        )


def check_profile(
    profile: ChargingProfile,
    connector_id: int,
    limits: SmartChargingLimits,
    *,
    running_transaction_id: int | None,
) -> None:
    """May `profile` be installed on `connector_id` (SetChargingProfile.req)?

    `running_transaction_id` is the transaction the connector runs now (None: none). Whether
    the connector exists is the caller's question. Raises `ProfileError`."""
    _check_connector(profile, connector_id)
    if profile.charging_profile_purpose is Purpose.tx_profile:
        if running_transaction_id is None:
            raise ProfileError(
                "connectorId", f"no transaction runs on connector {connector_id} for a TxProfile"
            )
        if profile.transaction_id is not None and profile.transaction_id != running_transaction_id:
            raise ProfileError(
                "csChargingProfiles.transactionId",
                f"{profile.transaction_id} is not the transaction running on connector"
                f" {connector_id}",
            )
    check_limits(profile, limits)


def check_remote_start_profile(profile: ChargingProfile, limits: SmartChargingLimits) -> None:
    """May `profile` come with a RemoteStartTransaction.req (5.11: its purpose SHALL be
    TxProfile)? It cannot name a transaction that does not exist yet; once the transaction
    starts, install it with `attrs.evolve(profile, transaction_id=...)`. Raises
    `ProfileError` (answer Rejected, OCTT TC_060)."""
    if profile.charging_profile_purpose is not Purpose.tx_profile:
        raise ProfileError(
            "chargingProfile.chargingProfilePurpose",
            f"{profile.charging_profile_purpose}: RemoteStartTransaction takes a TxProfile only",
        )
    if profile.transaction_id is not None:
        raise ProfileError(
            "chargingProfile.transactionId", "the transaction does not exist yet: must be absent"
        )
    check_limits(profile, limits)


def _check_connector(profile: ChargingProfile, connector_id: int) -> None:
    purpose = profile.charging_profile_purpose
    if connector_id < 0:
        raise ProfileError("connectorId", f"{connector_id} is not a connector")
    if purpose is Purpose.charge_point_max_profile and connector_id != 0:
        raise ProfileError("connectorId", "a ChargePointMaxProfile can only be set on connector 0")
    if purpose is Purpose.tx_profile and connector_id == 0:
        raise ProfileError("connectorId", "a TxProfile needs a connector with a transaction, not 0")


def check_limits(profile: ChargingProfile, limits: SmartChargingLimits) -> None:
    """The configured bounds a profile must fit in. Raises `ProfileError` naming the key."""
    if profile.stack_level > limits.max_stack_level:
        raise ProfileError(
            "ChargeProfileMaxStackLevel",
            f"stackLevel {profile.stack_level} is above the maximum {limits.max_stack_level}",
        )
    schedule = profile.charging_schedule
    if schedule.charging_rate_unit not in limits.allowed_units:
        allowed = ", ".join(sorted(u.value for u in limits.allowed_units)) or "none"
        raise ProfileError(
            "ChargingScheduleAllowedChargingRateUnit",
            f"chargingRateUnit {schedule.charging_rate_unit} is not allowed (allowed: {allowed})",
        )
    count = len(schedule.charging_schedule_period)
    if count > limits.max_periods:
        raise ProfileError(
            "ChargingScheduleMaxPeriods",
            f"{count} periods, at most {limits.max_periods} are supported",
        )


# --- the installed set ------------------------------------------------------------------------


@attrs.frozen
class InstalledProfile:
    """A profile and the connector it was set on (0: the whole charge point)."""

    connector_id: int
    profile: ChargingProfile

    @property
    def key(self) -> tuple[int, Purpose, int]:
        """What 3.13.2 allows only once: (connector, purpose, stackLevel)."""
        return (self.connector_id, self.profile.charging_profile_purpose, self.profile.stack_level)


Removed = tuple[InstalledProfile, ...]


@attrs.frozen
class InstalledProfiles:
    """The charging profiles installed on the charge point: an immutable value.

    Every change returns the new set and what left it, so the caller can persist the change
    (before answering Accepted) and answer ClearChargingProfile with Accepted / Unknown."""

    entries: tuple[InstalledProfile, ...] = ()

    def __iter__(self) -> Iterator[InstalledProfile]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def install(
        self, connector_id: int, profile: ChargingProfile, *, max_installed: int
    ) -> tuple[InstalledProfiles, Removed]:
        """Add `profile` on `connector_id`, replacing the one with the same id and the one
        with the same (connector, purpose, stackLevel). Raises `ProfileError` when that would
        exceed `max_installed` (MaxChargingProfilesInstalled)."""
        new = InstalledProfile(connector_id, profile)
        replaced = tuple(
            e
            for e in self.entries
            if e.profile.charging_profile_id == profile.charging_profile_id or e.key == new.key
        )
        kept = tuple(e for e in self.entries if e not in replaced)
        if len(kept) + 1 > max_installed:
            raise ProfileError(
                "MaxChargingProfilesInstalled",
                f"{len(kept)} profiles are installed, at most {max_installed} are supported",
            )
        return InstalledProfiles((*kept, new)), replaced

    def clear(
        self,
        *,
        id: int | None = None,  # the OCPP field name
        connector_id: int | None = None,
        purpose: Purpose | None = None,
        stack_level: int | None = None,
    ) -> tuple[InstalledProfiles, Removed]:
        """ClearChargingProfile.req: remove every profile matching all the criteria given
        (none given: all of them). An empty `Removed` means the answer is Unknown."""

        def matches(entry: InstalledProfile) -> bool:
            p = entry.profile
            return (
                (id is None or p.charging_profile_id == id)
                and (connector_id is None or entry.connector_id == connector_id)
                and (purpose is None or p.charging_profile_purpose is purpose)
                and (stack_level is None or p.stack_level == stack_level)
            )

        return self._without(matches)

    def end_transaction(
        self, connector_id: int, transaction_id: int
    ) -> tuple[InstalledProfiles, Removed]:
        """The transaction ended: remove its TxProfiles (those bound to it by transactionId,
        and the unbound ones on its connector, which were set for it)."""

        def stale(entry: InstalledProfile) -> bool:
            p = entry.profile
            if p.charging_profile_purpose is not Purpose.tx_profile:
                return False
            if p.transaction_id is None:
                return entry.connector_id == connector_id
            return p.transaction_id == transaction_id

        return self._without(stale)

    def remove_expired(self, now: datetime) -> tuple[InstalledProfiles, Removed]:
        """Drop profiles whose validTo has passed: they can never apply again, and they
        would count against MaxChargingProfilesInstalled."""
        return self._without(lambda e: e.profile.valid_to is not None and e.profile.valid_to <= now)

    def _without(self, predicate: Any) -> tuple[InstalledProfiles, Removed]:
        removed = tuple(e for e in self.entries if predicate(e))
        if not removed:
            return self, ()
        return InstalledProfiles(tuple(e for e in self.entries if not predicate(e))), removed

    @classmethod
    def of(cls, entries: Iterable[tuple[int, ChargingProfile]]) -> InstalledProfiles:
        """From (connector_id, profile) pairs, e.g. loaded from storage. No replacement rules
        are applied: the pairs are trusted to have been installed with `install`."""
        return cls(tuple(InstalledProfile(c, p) for c, p in entries))


def recurrence_cycle(kind: RecurrencyKind) -> timedelta:
    """RecurrencyKindType: Daily restarts every 24 hours, Weekly every 7 days, at the time
    (and weekday) of startSchedule. Everything is UTC, so a day is always 24 hours (no DST)."""
    return timedelta(days=1) if kind is RecurrencyKind.daily else timedelta(days=7)
