"""The composite schedule of OCPP 1.6 smart charging (3.13), as pure functions.

`composite_schedule` answers GetCompositeSchedule and gives the enforcement its limit;
`next_change` tells the enforcement timer when to look again (no polling);
`share_station_limit` splits the station's limit across the guns that charge.

How the composite for connector N is formed, instant by instant (OCPP 1.6 references):

1. Per purpose, the prevailing profile is the one with the highest stackLevel among those valid
   at that instant (3.13.2: validFrom <= t < validTo) whose schedule is running at that instant
   (after its start, before its duration ends). A higher stack level therefore overrides a lower
   one only in its own time slots; outside them the lower one shows through (OCTT TC_072: once
   the stackLevel-1 profile's 150 s are over, the stackLevel-0 profile applies again).
2. TxDefaultProfiles come from connector 0 and from connector N (7.10). At the same stack level
   the connector-N one wins: 7.10 says a TxDefaultProfile for connector N replaces the
   connector-0 one "only for that specific connector", and the replacement key is (purpose,
   stackLevel). A connector-0 profile at a higher stack level still prevails over a lower
   connector-N one: stacking is by stack level.
3. The TxProfile of the connector's running transaction (with that transactionId, or none)
   overrules the TxDefaultProfile wherever it is running (7.10, 3.13.3); TxProfiles are ignored
   without a transaction.
4. The result is capped by the prevailing ChargePointMaxProfile (3.13.3: the composite is the
   minimum of the two), and by `local_limit` when the caller gives one (5.7: "possible local
   limits"), e.g. the gun's maxCurrentA / maxPowerW.

Connector 0's composite is the station limit: the ChargePointMaxProfile (and `local_limit`).

Where no profile applies, a period's limit is None: no limit from smart charging. A
GetCompositeSchedule.conf must cover the requested duration with numeric limits (7.13,
chargingSchedulePeriod is required and limit is required in each), so `to_charging_schedule`
fills those periods with the caller's `unlimited` value (the gun's maximum in that unit).

Relative profiles start with the connector's transaction (7.9). Without a transaction they start
at the composite's start: the schedule a transaction starting now would get (what libocpp
reports). That holds for a Relative ChargePointMaxProfile too, which has no session of its own.

Recurring profiles (RecurrencyKindType) restart every 24 h (Daily) or 7 days (Weekly) at
startSchedule's time of day (and weekday), from startSchedule on (not before it); a duration
longer than the cycle is cut at the next restart. All datetimes are aware and compared in UTC,
so there is no DST: a day is 86 400 s across any midnight.

Units (DC charger). A schedule in W and a schedule in A meet through the `Supply`:
W = A x volts x phases, where a DC gun has 1 phase and its voltage is the DC voltage at the gun:
the measured voltage while it delivers energy, else a nominal one (the EV's battery voltage
reported at plug-in, or the configured nominal). numberPhases of a period is reported as given
but plays no part in a DC conversion. For the station limit (connector 0) the caller passes the
AC supply (nominal grid voltage and phases). Converted limits are rounded down to 0.1 (the OCPP
resolution, `multipleOf: 0.1`), so a conversion never raises a limit.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import attrs
from ocpp.v16.enums import ChargingProfileKindType as Kind
from ocpp.v16.enums import ChargingProfilePurposeType as Purpose
from ocpp.v16.enums import ChargingRateUnitType as Unit

from dcocpp.ocpp.smartcharging.profiles import (
    ChargingProfile,
    ChargingSchedulePeriod,
    InstalledProfile,
    format_datetime,
    recurrence_cycle,
)

__all__ = [
    "CompositePeriod",
    "CompositeSchedule",
    "RunningTransaction",
    "Supply",
    "composite_schedule",
    "composite_steps",
    "limit_now",
    "next_change",
    "share_station_limit",
]

# OCPP limits are multiples of 0.1 (the schemas' multipleOf): the resolution of conversions.
RESOLUTION = Decimal("0.1")


# --- the inputs ---------------------------------------------------------------------------------


@attrs.frozen
class RunningTransaction:
    """The transaction a connector runs: its TxProfiles apply, Relative profiles start with it."""

    transaction_id: int
    started_at: datetime


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Decimal) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be above 0, not {value}")


def _phases(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value not in (1, 2, 3):
        raise ValueError(f"{attribute.name} must be 1, 2 or 3, not {value}")


@attrs.frozen
class Supply:
    """How amperes and watts relate where a limit applies: W = A x voltage_v x phases.

    `Supply.dc(volts)` for a gun (the measured DC voltage while it delivers, else the nominal
    one; never 0: that would make every W limit infinite amperes), `Supply.ac(volts, phases)`
    for the grid side of the station limit."""

    voltage_v: Decimal = attrs.field(converter=Decimal, validator=_positive)
    phases: int = attrs.field(default=1, validator=_phases)

    @classmethod
    def dc(cls, voltage_v: Decimal | int | str) -> Supply:
        return cls(Decimal(voltage_v), 1)

    @classmethod
    def ac(cls, voltage_v: Decimal | int | str, phases: int = 3) -> Supply:
        return cls(Decimal(voltage_v), phases)

    def convert(self, value: Decimal, source: Unit, target: Unit) -> Decimal:
        """`value` in `source` -> `target`, rounded down to 0.1 when converted."""
        source, target = Unit(source), Unit(target)
        if source is target:
            return value
        factor = self.voltage_v * self.phases
        converted = value * factor if target is Unit.watts else value / factor
        return converted.quantize(RESOLUTION, rounding=ROUND_FLOOR)


# --- the result ---------------------------------------------------------------------------------


@attrs.frozen
class CompositePeriod:
    """From `start_period` seconds after the schedule's start on, at most `limit` (None: no
    smart-charging limit)."""

    start_period: int
    limit: Decimal | None
    number_phases: int | None = None


@attrs.frozen
class CompositeSchedule:
    """The composite of one connector over [start, start + duration): periods sorted by
    start_period, the first at 0, no two neighbours alike (adjacent equal periods merged)."""

    connector_id: int
    start: datetime
    duration: int
    charging_rate_unit: Unit
    periods: tuple[CompositePeriod, ...]

    def limit_at(self, at: datetime) -> Decimal | None:
        """The limit in force at `at`, which must lie in [start, start + duration)."""
        offset = (at - self.start).total_seconds()
        if not 0 <= offset < self.duration:
            raise ValueError(f"{at} is outside the schedule's {self.duration} s from {self.start}")
        current = self.periods[0]
        for period in self.periods:
            if period.start_period > offset:
                break
            current = period
        return current.limit

    def to_charging_schedule(self, *, unlimited: Decimal) -> dict[str, Any]:
        """The `charging_schedule` of GetCompositeSchedule.conf (snake_case, for
        `call_result.GetCompositeSchedule`). Periods without a limit get `unlimited` (the
        connector's own maximum in this unit), as OCPP has no "no limit"."""
        filled = _merge(
            CompositePeriod(
                p.start_period, unlimited if p.limit is None else p.limit, p.number_phases
            )
            for p in self.periods
        )
        periods: list[dict[str, Any]] = []
        for p in filled:
            entry: dict[str, Any] = {"start_period": p.start_period, "limit": p.limit}
            if p.number_phases is not None:
                entry["number_phases"] = p.number_phases
            periods.append(entry)
        return {
            "duration": self.duration,
            "start_schedule": format_datetime(self.start),
            "charging_rate_unit": self.charging_rate_unit.value,
            "charging_schedule_period": periods,
        }


# --- one profile in time --------------------------------------------------------------------

# A limit in the profile's own unit, with its numberPhases.
_Piece = tuple[Decimal, int | None, Unit]


def _length(profile: ChargingProfile) -> timedelta | None:
    """How long one run of the schedule lasts (None: until validTo / forever)."""
    schedule = profile.charging_schedule
    duration = None if schedule.duration is None else timedelta(seconds=schedule.duration)
    if profile.charging_profile_kind is not Kind.recurring:
        return duration
    assert profile.recurrency_kind is not None  # parse_profile guarantees it
    cycle = recurrence_cycle(profile.recurrency_kind)
    # A run is cut by the next restart.
    return cycle if duration is None else min(duration, cycle)


def _run_start(profile: ChargingProfile, at: datetime, anchor: datetime | None) -> datetime | None:
    """When the run of the schedule that covers `at` started (None: not started yet).

    `anchor` is where a Relative schedule starts; None makes it float: it starts at `at`."""
    kind = profile.charging_profile_kind
    if kind is Kind.relative:
        start = at if anchor is None else anchor
    else:
        assert profile.charging_schedule.start_schedule is not None  # parse_profile did it
        start = profile.charging_schedule.start_schedule
    if at < start:
        return None
    if kind is Kind.recurring:
        assert profile.recurrency_kind is not None
        cycle = recurrence_cycle(profile.recurrency_kind)
        start += cycle * ((at - start) // cycle)
    return start


def _piece_at(profile: ChargingProfile, at: datetime, anchor: datetime | None) -> _Piece | None:
    """The profile's limit at `at`, or None where it does not apply (not valid, its schedule
    not started or over)."""
    if not profile.valid_at(at):
        return None
    start = _run_start(profile, at, anchor)
    if start is None:
        return None
    elapsed = at - start
    length = _length(profile)
    if length is not None and elapsed >= length:
        return None
    schedule = profile.charging_schedule
    current: ChargingSchedulePeriod = schedule.charging_schedule_period[0]
    for period in schedule.charging_schedule_period:
        if timedelta(seconds=period.start_period) > elapsed:
            break
        current = period
    return current.limit, current.number_phases, schedule.charging_rate_unit


def _boundaries(
    profile: ChargingProfile, anchor: datetime | None, low: datetime, high: datetime
) -> Iterator[datetime]:
    """Instants in (low, high] where the profile's limit may change: validity bounds, run
    starts, period starts and run ends. A floating Relative profile (anchor None) moves with
    the observer, so only its validity bounds count."""
    for bound in (profile.valid_from, profile.valid_to):
        if bound is not None and low < bound <= high:
            yield bound
    # Outside its validity the schedule changes nothing: look only inside it.
    if profile.valid_from is not None:
        low = max(low, profile.valid_from)
    if profile.valid_to is not None:
        high = min(high, profile.valid_to)
    for run in _runs(profile, anchor, low, high):
        yield from _run_boundaries(profile, run, low, high)


def _runs(
    profile: ChargingProfile, anchor: datetime | None, low: datetime, high: datetime
) -> Iterator[datetime]:
    """The starts of the schedule's runs that overlap (low, high]."""
    kind = profile.charging_profile_kind
    if kind is Kind.relative:
        if anchor is not None:
            yield anchor
        return
    first = profile.charging_schedule.start_schedule
    assert first is not None
    if kind is Kind.absolute:
        yield first
        return
    assert profile.recurrency_kind is not None
    cycle = recurrence_cycle(profile.recurrency_kind)
    # The run in progress at `low` (or the first one), then every restart up to `high`.
    index = max(0, (low - first) // cycle) if low >= first else 0
    run = first + cycle * index
    while run <= high:
        yield run
        run += cycle


def _run_boundaries(
    profile: ChargingProfile, run: datetime, low: datetime, high: datetime
) -> Iterator[datetime]:
    length = _length(profile)
    for period in profile.charging_schedule.charging_schedule_period:
        offset = timedelta(seconds=period.start_period)
        if length is not None and offset >= length:
            break
        if low < run + offset <= high:
            yield run + offset
    if length is not None and low < run + length <= high:
        yield run + length


# --- stacking and combining -----------------------------------------------------------------


@attrs.frozen
class _Layers:
    """The profiles that matter for one connector, each purpose in order of precedence."""

    station_max: tuple[ChargingProfile, ...]
    tx_default: tuple[ChargingProfile, ...]
    tx: tuple[ChargingProfile, ...]

    def all(self) -> Iterator[ChargingProfile]:
        yield from self.station_max
        yield from self.tx_default
        yield from self.tx


def _layers(
    profiles: Iterable[InstalledProfile], connector_id: int, transaction: RunningTransaction | None
) -> _Layers:
    station_max: list[InstalledProfile] = []
    tx_default: list[InstalledProfile] = []
    tx: list[InstalledProfile] = []
    for entry in profiles:
        purpose = entry.profile.charging_profile_purpose
        if purpose is Purpose.charge_point_max_profile:
            if entry.connector_id == 0:
                station_max.append(entry)
        elif connector_id == 0:
            continue  # connector 0's composite is the station limit
        elif purpose is Purpose.tx_default_profile:
            if entry.connector_id in (0, connector_id):
                tx_default.append(entry)
        elif entry.connector_id == connector_id and _belongs(entry.profile, transaction):
            tx.append(entry)
    return _Layers(_by_precedence(station_max), _by_precedence(tx_default), _by_precedence(tx))


def _belongs(profile: ChargingProfile, transaction: RunningTransaction | None) -> bool:
    if transaction is None:
        return False
    return profile.transaction_id in (None, transaction.transaction_id)


def _by_precedence(entries: list[InstalledProfile]) -> tuple[ChargingProfile, ...]:
    # Highest stack level first; at the same level the connector's own profile before the
    # connector-0 one; then the id, only to make the order total.
    ordered = sorted(
        entries,
        key=lambda e: (e.profile.stack_level, e.connector_id != 0, e.profile.charging_profile_id),
        reverse=True,
    )
    return tuple(e.profile for e in ordered)


def _prevailing(
    stack: Sequence[ChargingProfile], at: datetime, anchor: datetime | None
) -> _Piece | None:
    for profile in stack:
        piece = _piece_at(profile, at, anchor)
        if piece is not None:
            return piece
    return None


def _limit_at(
    layers: _Layers,
    at: datetime,
    anchor: datetime | None,
    unit: Unit,
    supply: Supply,
    local_limit: Decimal | None,
) -> tuple[Decimal | None, int | None]:
    """The composite limit at one instant (in `unit`) and the numberPhases of the profile that
    set it."""
    base = _prevailing(layers.tx, at, anchor) or _prevailing(layers.tx_default, at, anchor)
    cap = _prevailing(layers.station_max, at, anchor)
    candidates: list[tuple[Decimal, int | None]] = [
        (supply.convert(limit, source, unit), phases)
        for limit, phases, source in (p for p in (base, cap) if p is not None)
    ]
    if local_limit is not None:
        candidates.append((local_limit, None))
    if not candidates:
        return None, None
    # min() keeps the first of equals: the transaction's own profile, then the station's.
    return min(candidates, key=lambda c: c[0])


# --- the public functions -------------------------------------------------------------------


def composite_schedule(
    profiles: Iterable[InstalledProfile],
    connector_id: int,
    start: datetime,
    duration_s: int,
    *,
    unit: Unit,
    supply: Supply,
    transaction: RunningTransaction | None = None,
    local_limit: Decimal | None = None,
    max_periods: int | None = None,
) -> CompositeSchedule:
    """The composite schedule of `connector_id` (0: the station limit) over
    [start, start + duration_s), in `unit` (see the module docstring for the rules).

    `transaction` is the connector's running transaction, `supply` relates A and W on the
    connector, `local_limit` (in `unit`) caps every period and fills the gaps. Pass a start in
    whole seconds: period starts are whole seconds, a boundary between two seconds is
    reported at the second before it.

    The work is bounded whatever the duration (2^31 - 1 s of a daily profile with 24 periods
    would be 600 000 periods): see `composite_steps`, which this runs to its end. With
    `max_periods` (ChargingScheduleMaxPeriods) the schedule has at most that many periods; it
    then ends where the first period left out would begin, and its `duration` says so:
    shorter than asked, and every period in it true for its whole span."""
    steps = composite_steps(
        profiles,
        connector_id,
        start,
        duration_s,
        unit=unit,
        supply=supply,
        transaction=transaction,
        local_limit=local_limit,
        max_periods=max_periods,
    )
    while True:
        try:
            next(steps)
        except StopIteration as done:
            schedule: CompositeSchedule = done.value
            return schedule


def composite_steps(
    profiles: Iterable[InstalledProfile],
    connector_id: int,
    start: datetime,
    duration_s: int,
    *,
    unit: Unit,
    supply: Supply,
    transaction: RunningTransaction | None = None,
    local_limit: Decimal | None = None,
    max_periods: int | None = None,
) -> Generator[None, None, CompositeSchedule]:
    """`composite_schedule` one change point at a time: a generator that yields after each
    change point it looked at (one limit computed over the profiles) and returns the
    schedule, so that its caller can let other work run in between (an event loop: see
    `ChargingProfiles.composite`).

    It looks at MAX_CHANGE_POINTS change points at most, and stops at `max_periods` periods;
    a stretch of time where the profiles change nothing is skipped whole (see `_periods`).
    Where the change points ran out first, the schedule ends at the first one not looked at
    (its `duration` says so), as where `max_periods` ran out."""
    _require_aware(start, "start")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be above 0, not {duration_s}")
    if max_periods is not None and max_periods < 1:
        raise ValueError(f"max_periods must be at least 1, not {max_periods}")
    unit = Unit(unit)  # a plain "A" / "W" is welcome too
    end = start + timedelta(seconds=duration_s)
    layers = _layers(profiles, connector_id, transaction)
    anchor = start if transaction is None else transaction.started_at

    def limit_at(at: datetime) -> tuple[Decimal | None, int | None]:
        return _limit_at(layers, at, anchor, unit, supply, local_limit)

    periods: list[CompositePeriod] = []
    covered = duration_s
    for item in _periods(layers, anchor, start, end, limit_at):
        if item is None:
            yield
        elif isinstance(item, _Cut):
            covered = item.start_period
            break
        elif len(periods) == max_periods:
            covered = item.start_period  # the first period left out
            break
        else:
            periods.append(item)
    return CompositeSchedule(connector_id, start, covered, unit, tuple(periods))


# How many change points one composite schedule looks at, at most: each costs one limit
# computation over the profiles (about 50 us with 20 recurring profiles installed). Enough
# to cover a week of such profiles, where `_periods` can skip the rest.
MAX_CHANGE_POINTS = 20_000
# Every recurrence cycle divides it: where only recurring profiles change, the composite
# repeats with this period.
_COMMON_CYCLE = timedelta(days=7)


@attrs.frozen
class _Cut:
    """Where `_periods` stopped looking (MAX_CHANGE_POINTS): nothing is known from here on."""

    start_period: int


def _periods(
    layers: _Layers,
    anchor: datetime | None,
    start: datetime,
    end: datetime,
    limit_at: Callable[[datetime], tuple[Decimal | None, int | None]],
) -> Iterator[CompositePeriod | _Cut | None]:
    """The composite's periods over [start, end), lazily, as `_merge` leaves them (the later
    of two change points in one second wins; equal neighbours merged): a period is given
    once the one before it is known to end there, and None after every change point looked
    at. The work done is that of the periods taken, and bounded even for those.

    Change points come from every profile's boundaries (`_boundaries`), merged in time order.
    Most of them, a recurring profile's, repeat: between two *aperiodic* boundaries (validity
    bounds, an Absolute or Relative profile's boundaries, a recurring profile's first start)
    the composite repeats every `_COMMON_CYCLE`. So once the limit has stayed the same for a
    whole cycle since the last aperiodic boundary, it stays so up to the next one, and the
    change points in between are skipped (a daily profile whose periods all say the same
    costs a week of change points, not 68 years of them). What is left is bounded by
    MAX_CHANGE_POINTS: after that many, a `_Cut` at the second of the first change point not
    looked at ends the periods (the last one given holds up to there)."""
    aperiodic_set = _aperiodic(layers, anchor, start, end)
    aperiodic = sorted(aperiodic_set)
    points = _change_points(layers, anchor, start, end)
    looked = 0
    value: tuple[Decimal | None, int | None] | None = None  # the limit in force
    since = start  # in force since then, with no aperiodic boundary after
    pending: CompositePeriod | None = None  # the latest change point's period (second open)
    given: tuple[Decimal | None, int | None] | None = None  # the limit of the last one given
    while (at := next(points, None)) is not None:
        if at - since >= _COMMON_CYCLE:
            # The same limit for a whole cycle, nothing aperiodic since: it holds up to the
            # next aperiodic boundary (or the end), where the search goes on.
            index = bisect.bisect_left(aperiodic, at)
            if index == len(aperiodic):
                break
            at = aperiodic[index]
            points = _change_points(layers, anchor, at, end)
            next(points)  # `at` itself
        if looked == MAX_CHANGE_POINTS:
            cut = math.floor((at - start).total_seconds())
            # The latest period counts if its second is over and it changes the limit.
            if pending is not None and pending.start_period < cut and _limit_of(pending) != given:
                yield pending
            yield _Cut(cut)
            return
        looked += 1
        limit, phases = limit_at(at)
        if (limit, phases) != value or at in aperiodic_set:
            value, since = (limit, phases), at
        period = CompositePeriod(math.floor((at - start).total_seconds()), limit, phases)
        # The latest period's second is over: it counts if it changes the limit.
        over = pending is not None and pending.start_period != period.start_period
        if over and pending is not None and _limit_of(pending) != given:
            yield pending
            given = _limit_of(pending)
        pending = period
        yield None
    if pending is not None and _limit_of(pending) != given:
        yield pending


def _limit_of(period: CompositePeriod) -> tuple[Decimal | None, int | None]:
    return period.limit, period.number_phases


def _change_points(
    layers: _Layers, anchor: datetime | None, low: datetime, end: datetime
) -> Iterator[datetime]:
    """`low`, then every instant in (low, end) where a profile's limit may change, in time
    order, each once. Lazy: a recurring profile's runs are produced as they are reached."""
    streams = [_sorted_boundaries(profile, anchor, low, end) for profile in layers.all()]
    previous = low
    yield low
    for at in heapq.merge(*streams):
        if at >= end:
            return
        if at != previous:
            previous = at
            yield at


def _sorted_boundaries(
    profile: ChargingProfile, anchor: datetime | None, low: datetime, high: datetime
) -> Iterator[datetime]:
    """`_boundaries`, in time order (an instant may come more than once). The run boundaries
    are in order already: runs start in order, a run's periods are in ascending order, and a
    run ends before the next one starts."""
    bounds = sorted(
        b for b in (profile.valid_from, profile.valid_to) if b is not None and low < b <= high
    )
    if profile.valid_from is not None:
        low = max(low, profile.valid_from)
    if profile.valid_to is not None:
        high = min(high, profile.valid_to)
    runs = (
        boundary
        for run in _runs(profile, anchor, low, high)
        for boundary in _run_boundaries(profile, run, low, high)
    )
    return heapq.merge(bounds, runs)


def _aperiodic(
    layers: _Layers, anchor: datetime | None, low: datetime, high: datetime
) -> set[datetime]:
    """The boundaries in (low, high) after which the composite may stop repeating every
    `_COMMON_CYCLE` (see `_periods`): validity bounds, every boundary of a profile that does
    not recur (finitely many), a recurring profile's first start."""
    found: set[datetime] = set()
    for profile in layers.all():
        if profile.charging_profile_kind is Kind.recurring:
            first = profile.charging_schedule.start_schedule
            candidates: Iterable[datetime] = (
                b for b in (profile.valid_from, profile.valid_to, first) if b is not None
            )
        else:
            candidates = _boundaries(profile, anchor, low, high)
        found.update(b for b in candidates if low < b < high)
    return found


def limit_now(
    profiles: Iterable[InstalledProfile],
    connector_id: int,
    now: datetime,
    *,
    unit: Unit,
    supply: Supply,
    transaction: RunningTransaction | None = None,
    local_limit: Decimal | None = None,
) -> Decimal | None:
    """The composite limit in force at `now` (None: smart charging sets none): what the
    enforcement applies. Without a transaction a Relative profile floats (its first period),
    as in `next_change`."""
    _require_aware(now, "now")
    layers = _layers(profiles, connector_id, transaction)
    anchor = now if transaction is None else transaction.started_at
    return _limit_at(layers, now, anchor, Unit(unit), supply, local_limit)[0]


def next_change(
    profiles: Iterable[InstalledProfile],
    connector_id: int,
    after: datetime,
    *,
    transaction: RunningTransaction | None = None,
) -> datetime | None:
    """The first instant after `after` at which the connector's limit may change (None:
    never, until profiles or the transaction change). For the enforcement timer: sleep until
    then, recompute, ask again. It may name an instant where the limit happens to stay the
    same; it never misses one where it changes.

    Without a transaction, Relative profiles float with the observer (the limit now is always
    their first period), so only their validity bounds count."""
    _require_aware(after, "after")
    layers = _layers(profiles, connector_id, transaction)
    anchor = None if transaction is None else transaction.started_at
    found: datetime | None = None
    for profile in layers.all():
        if profile.valid_to is not None and profile.valid_to <= after:
            continue  # over for good: its runs would only wake the timer for nothing
        candidates = _boundaries(profile, anchor, after, _far_end(profile, after))
        first = min(candidates, default=None)
        if first is not None and (found is None or first < found):
            found = first
    return found


def _far_end(profile: ChargingProfile, after: datetime) -> datetime:
    """How far to look for a profile's next boundary. A non-recurring profile has finitely
    many: look at all of them. A recurring one has one at every restart, so one cycle past
    its first run or `after`, whichever is later, is enough (validFrom counts wherever it is)."""
    if profile.charging_profile_kind is not Kind.recurring:
        return datetime.max.replace(tzinfo=after.tzinfo)
    start = profile.charging_schedule.start_schedule
    assert start is not None
    far = max(after, start) + timedelta(days=7, seconds=1)
    if profile.valid_from is not None and profile.valid_from > far:
        return profile.valid_from
    return far


def share_station_limit(
    station_limit: Decimal | None,
    guns: Mapping[int, Decimal | None],
    *,
    step: Decimal = RESOLUTION,
) -> dict[int, Decimal | None]:
    """Split the station limit across the guns that charge, each capped by its own limit.

    `guns` maps each charging gun to its own limit (its composite, maxCurrentA / maxPowerW;
    None: none), all in the station limit's unit. Equal shares, except that a gun whose own
    limit is below its share keeps only its own limit and the rest is shared among the others
    (max-min fair, "water filling"). Shares are rounded down to `step`, so they never sum above
    the station limit. Without a station limit (None) every gun keeps its own limit."""
    if station_limit is None:
        return dict(guns)
    remaining = max(station_limit, Decimal(0))
    pending = dict(guns)
    shares: dict[int, Decimal | None] = {}
    while pending:
        share = (remaining / len(pending)).quantize(step, rounding=ROUND_FLOOR)
        below = {g: cap for g, cap in pending.items() if cap is not None and cap <= share}
        if not below:
            shares.update(dict.fromkeys(pending, share))
            break
        for gun, cap in below.items():
            own = max(cap, Decimal(0))
            shares[gun] = own
            remaining -= own
            del pending[gun]
    return {gun: shares[gun] for gun in guns}


# --- helpers ------------------------------------------------------------------------------------


def _merge(periods: Iterable[CompositePeriod]) -> tuple[CompositePeriod, ...]:
    """Sorted input -> no two periods at the same second (the later wins) and no two
    neighbours with the same limit and numberPhases (the earlier stays)."""
    merged: list[CompositePeriod] = []
    for period in periods:
        if merged and merged[-1].start_period == period.start_period:
            merged.pop()
        if merged and (merged[-1].limit, merged[-1].number_phases) == (
            period.limit,
            period.number_phases,
        ):
            continue
        merged.append(period)
    return tuple(merged)


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, not {moment!r}")
