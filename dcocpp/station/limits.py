"""Smart charging enforced: the current limit of every gun, sent to its hardware.

`LimitEnforcer.run()` keeps each gun's current setpoint (`GunHardware.set_current_limit`) at

    min(its composite schedule, its maxCurrentA / maxPowerW, its share of the station limit)

where the composite schedule is the OCPP one (TxProfile or TxDefaultProfile, capped by the
ChargePointMaxProfile) and the station limit, the ChargePointMaxProfile, is shared among the
guns with a running transaction (max-min fair, `share_station_limit`). A limit of 0 suspends
the energy (EvseSuspended: the relay opens, the connector reports SuspendedEVSE); a limit above
0 resumes it.

The limits are recomputed when the installed profiles change, when a transaction starts, is
confirmed or stops (watched through each connector's truth, `ConnectorTask.wait_truth`), when
a gun's status or faults change (a PLC back from a communication loss gets its setpoint again),
at the next instant a schedule can change (`next_change`): one timer sleeping until then,
no polling; and when the station's wall clock steps (the station wakes it): the next instant
is then somewhere else. A transaction's Relative profiles count the time it has run by the
monotonic clock (`ConnectorTask.transaction_began`), so a step changes none of their limits.

Units. The hardware takes amperes. A limit in W becomes amperes at the gun's DC voltage: the
one its meter measures (while delivering, or the EV battery's while plugged, where the hardware
reports it), else the gun's nominal voltage, maxPowerW / maxCurrentA (the voltage at which the
gun reaches both ratings: 375 V for 75 kW / 200 A). The station limit is shared in its own
unit: in A it bounds the sum of the guns' DC currents, in W the sum of their powers. As the
battery voltage rises during charging, a current converted from W lets the power creep up
(about 0.3 % per 1 % of state of charge), so while a transaction runs the limits are also
recomputed every `RECONVERT_S` at the voltage measured then (the gun's own maxPowerW is such
a limit too). An unchanged setpoint is not sent again, and one that only follows the voltage
is logged at DEBUG: INFO says when the limit itself changes.

When a limit cannot be computed. The profiles are validated into ranges the schedule can be
computed in (`dcocpp.ocpp.smartcharging.profiles`), so this is a bug, or a measurement the
arithmetic cannot take; either way it must not end the loop, nor the station with it. The
failure is logged at ERROR (once while it lasts, with the profile ids concerned) and the gun
gets a safe limit: the lower of the limit it has now and the lowest limit any valid profile
that concerns it sets in any of its periods (a ChargePointMaxProfile divided among all guns),
0 A when even that cannot be computed. A charger never exceeds what a central system asked
for at some time, and never raises a limit it cannot justify; the limit is recomputed at every
change as usual and is back to normal as soon as it can be computed. When the next change
cannot be computed, the limits are looked at again after `RETRY_S`.

This module is station wiring: it knows the connector tasks and their hardware, and the OCPP
layer's profiles, and it is the only place where the two meet for smart charging.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

import attrs
import trio
from ocpp.v16.enums import ChargePointStatus
from ocpp.v16.enums import ChargingProfilePurposeType as Purpose
from ocpp.v16.enums import ChargingRateUnitType as Unit

from dcocpp.clock import WallClock
from dcocpp.concurrency import WakeUp
from dcocpp.config import ConnectorConfig
from dcocpp.connector import events
from dcocpp.connector.task import ConnectorTask
from dcocpp.hardware.interface import FaultKind, HardwareError
from dcocpp.ocpp.smartcharging import (
    InstalledProfiles,
    RunningTransaction,
    Supply,
    limit_now,
    next_change,
    share_station_limit,
)
from dcocpp.ocpp.smartcharging.service import (
    UNCONFIRMED_TRANSACTION,
    ChargingContext,
    ChargingProfiles,
)

log = logging.getLogger(__name__)

# The hardware's resolution (CURRENT_LIMIT_0p1A); limits are rounded down to it.
STEP = Decimal("0.1")
# While a transaction runs, the limits are recomputed at least this often (s): a
# limit in W is converted to A again at the voltage measured then.
RECONVERT_S = 10
# A measured voltage below this is no measurement (an idle meter reads 0 V).
MIN_MEASURED_VOLTAGE = 1.0
# After a failure to compute the limits or their next change, look again this often (s).
RETRY_S = 60
# The timer of a change fired, but the wall clock reads up to this much before the change:
# a rounding error, the change is due. More: the wall clock stepped back while it slept.
DUE_TOLERANCE = timedelta(seconds=1)


def nominal_voltage(config: ConnectorConfig) -> Decimal:
    """The gun's nominal DC voltage: where its current and power ratings meet."""
    return (Decimal(str(config.max_power_w)) / Decimal(str(config.max_current_a))).quantize(STEP)


@attrs.frozen
class _Seen:
    """What a connector's watcher compares after each of the connector's steps."""

    local_id: int | None
    transaction_id: int | None
    id_tag: str | None
    status: ChargePointStatus
    faults: frozenset[FaultKind]


def _changed(task: ConnectorTask, seen: _Seen, _truth: object) -> bool:
    return _seen(task) != seen


def _seen(task: ConnectorTask) -> _Seen:
    tx = task.transaction
    truth = task.machine.truth
    return _Seen(
        None if tx is None else tx.local_id,
        None if tx is None else tx.transaction_id,
        None if tx is None else tx.id_tag,
        task.machine.status,
        truth.fault_kinds,
    )


class LimitEnforcer:
    """Keeps the guns' current setpoints at their smart-charging limits (see the module
    docstring). `run()` applies them once, reports started, and then runs until cancelled: one
    watcher per connector and the recompute loop, all in its own nursery. Hardware errors are
    logged (the setpoint is tried again at the next recompute); nothing else escapes."""

    def __init__(
        self,
        connectors: Mapping[int, ConnectorTask],
        profiles: ChargingProfiles,
        clock: WallClock,
    ):
        self._connectors = connectors
        self._profiles = profiles
        self._clock = clock
        self._wake = WakeUp()
        # The limit (A) each gun's hardware was last given.
        self.applied: dict[int, Decimal] = {}
        # The limit each gun was last said to have at INFO: a setpoint sent again (hardware
        # back from a fault) or only following the voltage is no news to the operator.
        self._reported: dict[int, Decimal] = {}
        # The supply (voltage) each gun's limit was computed at the last time.
        self._supplies: dict[int, Supply] = {}
        # Per gun, the failure to compute its limit that was logged (None: computed fine).
        self._failures: dict[int, str] = {}
        nominal = [nominal_voltage(task.config) for task in connectors.values()]
        self._station_supply = Supply.dc(min(nominal, default=Decimal(400)))

    def explain(self, connector_id: int) -> dict[str, object] | None:
        """Where the gun's current limit comes from, for the operator's console: `source` is
        "rating" (its maxCurrentA / maxPowerW), "charging profile", "station share" (of the
        ChargePointMaxProfile) or "safe limit" (it cannot be computed, see the module
        docstring); `profiles` the valid ones that concern it. None: no limit applied yet."""
        applied = self.applied.get(connector_id)
        if applied is None:
            return None
        now = self._clock.now()
        installed = self._profiles.installed
        ctx = self.context(connector_id)
        rating = _floor(ctx.local_limit(Unit.amps))
        failure = self._failures.get(connector_id)
        if failure is None:
            try:
                own = self._own_limit(installed, connector_id, ctx, now)
            except Exception as exc:  # shown to the operator, as the loop logs it
                failure = repr(exc)
        if failure is not None:
            source = "safe limit"
        elif applied < own:
            source = "station share"
        elif own < rating:
            source = "charging profile"
        else:
            source = "rating"
        profiles = [
            {
                "id": entry.profile.charging_profile_id,
                "purpose": entry.profile.charging_profile_purpose.value,
                "stackLevel": entry.profile.stack_level,
                "connectorId": entry.connector_id,
            }
            for entry in installed
            if entry.connector_id in (0, connector_id) and entry.profile.valid_at(now)
        ]
        return {"source": source, "ratingA": float(rating), "profiles": profiles, "error": failure}

    # --- what the OCPP layer asks ---------------------------------------------------------

    def context(self, connector_id: int) -> ChargingContext:
        """The `ChargingContext` of a connector (0: the charge point as a whole)."""
        if connector_id == 0:
            configs = [task.config for task in self._connectors.values()]
            return ChargingContext(
                supply=self._station_supply,
                max_current_a=sum((_decimal(c.max_current_a) for c in configs), Decimal(0)),
                max_power_w=sum((_decimal(c.max_power_w) for c in configs), Decimal(0)),
            )
        task = self._connectors[connector_id]
        volts = task.gun.read_meter().voltage_v
        if math.isfinite(volts) and volts >= MIN_MEASURED_VOLTAGE:
            supply = Supply.dc(_decimal(volts).quantize(STEP))
        else:
            supply = Supply.dc(nominal_voltage(task.config))
        tx = task.transaction
        began = task.transaction_began()
        transaction = None
        if tx is not None and began is not None:
            # Its Relative profiles count the time it has run (monotonic) from now back.
            transaction = RunningTransaction(
                UNCONFIRMED_TRANSACTION if tx.transaction_id is None else tx.transaction_id,
                began,
            )
        return ChargingContext(
            supply=supply,
            max_current_a=_decimal(task.config.max_current_a),
            max_power_w=_decimal(task.config.max_power_w),
            transaction=transaction,
        )

    def wake(self) -> None:
        """Recompute now (something the limits depend on changed)."""
        self._wake.set()

    # --- lifetime ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        unsubscribe = self._profiles.subscribe(self.wake)
        try:
            async with trio.open_nursery() as nursery:
                for task in self._connectors.values():
                    nursery.start_soon(self._watch, task)
                self._wake.clear()
                next_at = await self._enforce_or_retry(None)
                task_status.started()
                await self._loop(next_at)
        finally:
            unsubscribe()

    async def _loop(self, next_at: datetime | None) -> None:
        while True:
            deadline = math.inf
            if next_at is not None:
                delay = (next_at - self._clock.now()).total_seconds()
                deadline = trio.current_time() + max(delay, 0.0)
            at = None
            with trio.move_on_at(deadline) as sleep:
                await self._wake.wait()
            if sleep.cancelled_caught:
                # Woken by the timer: the change is due even if the wall clock, read a
                # rounding error early, does not quite say so (but not if it stepped back
                # meanwhile: then the change is not due, and `_enforce` sees that).
                at = next_at
            self._wake.clear()
            next_at = await self._enforce_or_retry(at)

    async def _watch(self, task: ConnectorTask) -> None:
        """Follow one connector: its transactions start and end here for the profiles (the
        RemoteStartTransaction's TxProfile installed, ended transactions' TxProfiles
        removed), and every change that matters wakes the recompute."""
        seen = _seen(task)
        while True:
            await task.wait_truth(functools.partial(_changed, task, seen))
            now = _seen(task)
            if seen.local_id is not None and now.local_id != seen.local_id:
                await self._profiles.transaction_ended(task.id, seen.transaction_id)
            if now.local_id is not None and now.local_id != seen.local_id:
                assert now.id_tag is not None
                await self._profiles.transaction_started(task.id, now.id_tag)
            if now.faults != seen.faults:
                # Hardware back from a fault (a restarted PLC) may have lost its setpoint.
                self.applied.pop(task.id, None)
            seen = now
            self.wake()

    # --- computing and applying --------------------------------------------------------------

    async def _enforce_or_retry(self, at: datetime | None) -> datetime | None:
        """`_enforce`, which handles the failures of the schedule arithmetic itself; anything
        else (reading a gun's context) leaves every gun at the limit it has and is tried
        again after RETRY_S. Never raises but Cancelled: this loop must outlive any bug."""
        try:
            return await self._enforce(at)
        except Exception:
            log.exception("current limits not recomputed; trying again in %d s", RETRY_S)
            return self._clock.now() + timedelta(seconds=RETRY_S)

    async def _enforce(self, at: datetime | None) -> datetime | None:
        """Apply every gun's limit as of now (`at` if later); returns when to look again."""
        now = self._clock.now()
        if at is not None and now < at <= now + DUE_TOLERANCE:
            now = at
        await self._profiles.remove_expired()
        installed = self._profiles.installed
        contexts = {cid: self.context(cid) for cid in self._connectors}
        limits = self._limits_or_safe(installed, contexts, now)
        # The limits at the voltages of the last recompute: where a gun's is what it has, its
        # new one only follows the voltage (a limit in W, converted again while a transaction
        # runs), and is no news to the operator.
        previous = self._supplies
        try:
            at_previous = self.limits(
                installed,
                {
                    cid: attrs.evolve(ctx, supply=previous.get(cid, ctx.supply))
                    for cid, ctx in contexts.items()
                },
                now,
            )
        except Exception:  # logged by _limits_or_safe; whatever changes is news then
            at_previous = {}
        self._supplies = {cid: ctx.supply for cid, ctx in contexts.items()}
        for cid, limit in limits.items():
            await self._apply(cid, limit, news=at_previous.get(cid) != self.applied.get(cid))
        changes = [
            self._next_change(installed, cid, now, ctx.transaction) for cid, ctx in contexts.items()
        ]
        changes.append(self._next_change(installed, 0, now, None))
        if any(ctx.transaction is not None for ctx in contexts.values()):
            changes.append(now + timedelta(seconds=RECONVERT_S))
        return min((c for c in changes if c is not None), default=None)

    def _next_change(
        self,
        installed: InstalledProfiles,
        connector_id: int,
        now: datetime,
        transaction: RunningTransaction | None,
    ) -> datetime | None:
        try:
            return next_change(installed, connector_id, now, transaction=transaction)
        except Exception as exc:
            log.error(
                "connector %d: the next change of its limit cannot be computed (profiles %s):"
                " %r; looking again in %d s",
                connector_id,
                _ids(installed),
                exc,
                RETRY_S,
            )
            return now + timedelta(seconds=RETRY_S)

    def limits(
        self,
        installed: InstalledProfiles,
        contexts: Mapping[int, ChargingContext],
        now: datetime,
    ) -> dict[int, Decimal]:
        """Each gun's limit in A at `now` (see the module docstring)."""
        own = {cid: self._own_limit(installed, cid, ctx, now) for cid, ctx in contexts.items()}
        return self._shared(installed, contexts, own, now)

    def _limits_or_safe(
        self,
        installed: InstalledProfiles,
        contexts: Mapping[int, ChargingContext],
        now: datetime,
    ) -> dict[int, Decimal]:
        """`limits()`, where a gun's limit cannot be computed its safe limit (see the module
        docstring). A gun whose own limit fails gets the safe one; a failure of the station
        limit or of its sharing concerns every gun."""
        failures: dict[int, Exception] = {}
        safe: dict[int, Decimal] = {}
        own: dict[int, Decimal] = {}
        for cid, ctx in contexts.items():
            try:
                own[cid] = self._own_limit(installed, cid, ctx, now)
            except Exception as exc:
                failures[cid] = exc
                own[cid] = safe[cid] = self._safe_limit(installed, cid, ctx, now)
        try:
            result = self._shared(installed, contexts, own, now)
        except Exception as exc:
            failures = {cid: failures.get(cid, exc) for cid in contexts}
            result = {}
        for cid, ctx in contexts.items():
            failure = failures.get(cid)
            if failure is None:
                if self._failures.pop(cid, None) is not None:
                    log.info("connector %d: its current limit can be computed again", cid)
                continue
            if cid not in safe:
                safe[cid] = self._safe_limit(installed, cid, ctx, now)
            result[cid] = min(result.get(cid, safe[cid]), safe[cid])
            why = repr(failure)
            if self._failures.get(cid) != why:
                self._failures[cid] = why
                log.error(
                    "connector %d: current limit cannot be computed (profiles %s): %s;"
                    " keeping the safe limit %s A",
                    cid,
                    _ids(installed),
                    why,
                    result[cid],
                )
        return result

    def _safe_limit(
        self, installed: InstalledProfiles, connector_id: int, ctx: ChargingContext, now: datetime
    ) -> Decimal:
        """What a gun may offer when its limit cannot be computed: the lower of what it has
        and the lowest limit of any period of any valid profile that concerns it (0 A when
        that cannot be computed either)."""
        guns = Decimal(len(self._connectors) or 1)
        try:
            lowest = ctx.local_limit(Unit.amps)
            for entry in installed:
                profile = entry.profile
                purpose = profile.charging_profile_purpose
                if not profile.valid_at(now) or entry.connector_id not in (0, connector_id):
                    continue
                if purpose is Purpose.tx_profile and entry.connector_id != connector_id:
                    continue
                schedule = profile.charging_schedule
                unit = schedule.charging_rate_unit
                for period in schedule.charging_schedule_period:
                    limit = period.limit
                    if purpose is Purpose.charge_point_max_profile:
                        limit /= guns  # the station's: this gun's share if all charge
                    lowest = min(lowest, ctx.supply.convert(limit, unit, Unit.amps))
            lowest = _floor(lowest)
        except Exception:
            log.exception("connector %d: even the safe limit cannot be computed: 0 A", connector_id)
            return Decimal(0)
        return min(self.applied.get(connector_id, lowest), lowest)

    def _own_limit(
        self, installed: InstalledProfiles, connector_id: int, ctx: ChargingContext, now: datetime
    ) -> Decimal:
        """The gun's composite limit capped by its own maximum, before the station limit."""
        limit = limit_now(
            installed,
            connector_id,
            now,
            unit=Unit.amps,
            supply=ctx.supply,
            transaction=ctx.transaction,
            local_limit=ctx.local_limit(Unit.amps),
        )
        assert limit is not None  # the local limit is always there
        return _floor(limit)

    def _shared(
        self,
        installed: InstalledProfiles,
        contexts: Mapping[int, ChargingContext],
        own: Mapping[int, Decimal],
        now: datetime,
    ) -> dict[int, Decimal]:
        """The guns' `own` limits, each cut to its share of the station limit."""
        station = self._station_limit(installed, now)
        if station is None:
            return dict(own)
        value, unit = station

        def in_unit(cid: int) -> Decimal:
            return contexts[cid].supply.convert(own[cid], Unit.amps, unit)

        charging = {
            cid: in_unit(cid) for cid, ctx in contexts.items() if ctx.transaction is not None
        }
        shares = share_station_limit(value, charging)
        result: dict[int, Decimal] = {}
        for cid in contexts:
            if cid in shares:
                share = shares[cid]
            else:
                # An idle gun is given the share it would get if it started now: it is ready,
                # and the others give up theirs once its transaction starts.
                share = share_station_limit(value, {**charging, cid: in_unit(cid)})[cid]
            assert share is not None
            if share >= in_unit(cid):
                result[cid] = own[cid]
            else:
                back = contexts[cid].supply.convert(share, unit, Unit.amps)
                result[cid] = min(own[cid], _floor(back))
        return result

    def _station_limit(
        self, installed: InstalledProfiles, now: datetime
    ) -> tuple[Decimal, Unit] | None:
        """The ChargePointMaxProfile limit in force (None: none), in its own unit."""
        prevailing = None
        for entry in installed:
            profile = entry.profile
            if profile.charging_profile_purpose is not Purpose.charge_point_max_profile:
                continue
            unit = profile.charging_schedule.charging_rate_unit
            alone = InstalledProfiles((entry,))
            if limit_now(alone, 0, now, unit=unit, supply=self._station_supply) is None:
                continue  # not in force now
            if prevailing is None or profile.stack_level > prevailing.stack_level:
                prevailing = profile
        if prevailing is None:
            return None
        unit = prevailing.charging_schedule.charging_rate_unit
        value = limit_now(installed, 0, now, unit=unit, supply=self._station_supply)
        assert value is not None
        return value, unit

    async def _apply(self, connector_id: int, limit: Decimal, *, news: bool) -> None:
        """Give the gun `limit`; `news`: the limit changed for another reason than the
        voltage it was converted at (logged at INFO, else at DEBUG)."""
        task = self._connectors[connector_id]
        if self.applied.get(connector_id) != limit:
            try:
                task.gun.set_current_limit(float(limit))
            except HardwareError as exc:
                log.warning(
                    "connector %d: current limit %s A not set: %s", connector_id, limit, exc
                )
            else:
                self.applied[connector_id] = limit
                task.offered_a = float(limit)
                if news and self._reported.get(connector_id) != limit:
                    log.info("connector %d: current limit %s A", connector_id, limit)
                    self._reported[connector_id] = limit
                else:
                    log.debug(
                        "connector %d: current limit %s A (at the voltage measured now)",
                        connector_id,
                        limit,
                    )
        suspended = limit <= 0
        if task.machine.truth.evse_suspended != suspended:
            log.info(
                "connector %d: energy %s by smart charging",
                connector_id,
                "suspended" if suspended else "resumed",
            )
            await task.post(events.EvseSuspended(suspended))


def _decimal(value: float) -> Decimal:
    return Decimal(str(value))


def _ids(installed: InstalledProfiles) -> str:
    return ", ".join(str(e.profile.charging_profile_id) for e in installed) or "none"


def _floor(value: Decimal) -> Decimal:
    return max(value, Decimal(0)).quantize(STEP, rounding=ROUND_FLOOR)
