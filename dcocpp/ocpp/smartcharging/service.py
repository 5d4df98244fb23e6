"""The charging profiles installed on the charge point: the OCPP side of smart charging.

`ChargingProfiles` owns the installed set (an immutable `InstalledProfiles`, swapped on every
change) and its persistence: a change is written to the station database (`ProfileStore`,
which `asyncdb.AsyncDatabase` satisfies, off the event loop) before the central system hears
Accepted, and the set is read back at boot (`load`). Changes are made one at a time, each
computed from the set the previous one left. It answers SetChargingProfile,
ClearChargingProfile and GetCompositeSchedule (see `handlers.py`), keeps the TxProfile of an
accepted RemoteStartTransaction until its transaction starts, and removes TxProfiles when
their transaction ends.

It knows nothing of guns or hardware. What it needs to know about a connector (its running
transaction, how amperes and watts relate there, its own maximum) the charger tells it in a
`ChargingContext`; who enforces the limits subscribes to changes (`subscribe`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import attrs
import trio
from ocpp.v16.enums import ChargingProfilePurposeType as Purpose
from ocpp.v16.enums import ChargingProfileStatus, ClearChargingProfileStatus
from ocpp.v16.enums import ChargingRateUnitType as Unit

from dcocpp import idtags
from dcocpp.ocpp.configuration import ConfigurationStore
from dcocpp.ocpp.errors import OcppError
from dcocpp.ocpp.smartcharging.profiles import (
    ChargingProfile,
    InstalledProfiles,
    ProfileError,
    Removed,
    SmartChargingLimits,
    check_profile,
    check_remote_start_profile,
    parse_profile,
)
from dcocpp.ocpp.smartcharging.schedule import (
    CompositeSchedule,
    RunningTransaction,
    Supply,
    composite_steps,
)

log = logging.getLogger(__name__)

__all__ = [
    "UNCONFIRMED_TRANSACTION",
    "ChargingContext",
    "ChargingProfiles",
    "ProfileStore",
    "ProfileStoreError",
    "smart_charging_supported",
]

Clock = Callable[[], datetime]
StoreErrors = tuple[type[Exception], ...]

# Change points of a composite schedule computed between two checkpoints: a few ms of work
# with the most profiles a charger takes (`composite_steps`).
COMPOSITE_STEPS = 100

# The transaction id a running transaction has in a `RunningTransaction` until
# StartTransaction.conf brings the central system's: no TxProfile names it, so only the
# connector's unbound TxProfiles (transactionId absent) apply, as they should.
UNCONFIRMED_TRANSACTION = -1


def smart_charging_supported(store: ConfigurationStore) -> bool:
    return "SmartCharging" in store.get_list("SupportedFeatureProfiles")


class ProfileStoreError(OcppError):
    """The installed charging profiles could not be read or written."""


class ProfileStore(Protocol):
    """What the profiles need from persistent storage (`asyncdb.AsyncDatabase` provides it)."""

    async def charging_profiles(self) -> list[tuple[int, dict[str, Any]]]:
        """(connector_id, profile payload) of every installed profile; each payload holds
        the charging_profile_id it is stored by (whatever else it holds)."""
        ...

    async def put_charging_profile(
        self, connector_id: int, profile: Mapping[str, Any], *, replaces: Iterable[int] = ()
    ) -> None: ...

    async def delete_charging_profiles(self, profile_ids: Iterable[int]) -> None: ...


@attrs.frozen
class ChargingContext:
    """What the charger tells the OCPP layer about one connector (0: the whole charge point).

    `transaction` is the running transaction (its id `UNCONFIRMED_TRANSACTION` until the
    central system confirmed it); `supply` relates amperes and watts there; `max_current_a`
    and `max_power_w` are its own maximum (for connector 0, the sum of the guns')."""

    supply: Supply
    max_current_a: Decimal
    max_power_w: Decimal
    transaction: RunningTransaction | None = None

    @property
    def transaction_id(self) -> int | None:
        """The central system's id of the running transaction (None: none, or not known yet)."""
        tx = self.transaction
        if tx is None or tx.transaction_id == UNCONFIRMED_TRANSACTION:
            return None
        return tx.transaction_id

    def local_limit(self, unit: Unit) -> Decimal:
        """The connector's own maximum in `unit`: the lesser of its current and power limits
        (the other one converted with the supply, rounded down)."""
        if Unit(unit) is Unit.amps:
            return min(self.max_current_a, self.supply.convert(self.max_power_w, Unit.watts, unit))
        return min(self.max_power_w, self.supply.convert(self.max_current_a, Unit.amps, unit))


@attrs.frozen
class _RemoteStartProfile:
    """The TxProfile of an accepted RemoteStartTransaction, waiting for its transaction."""

    connector_id: int | None  # None: the charge point picks the connector
    id_tag: str
    profile: ChargingProfile
    expires: float  # monotonic: a wait, which no step of the wall clock may cut or stretch


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ChargingProfiles:
    """The installed charging profiles, persisted write-through in `db` (None: in memory
    only), from which `load()` reads them before use."""

    def __init__(
        self,
        store: ConfigurationStore,
        db: ProfileStore | None = None,
        *,
        clock: Clock = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        store_errors: StoreErrors = (),
    ):
        self._store = store
        self._db = db
        self._clock = clock  # the station's wall clock: the instants of the profiles
        self._monotonic = monotonic  # how long a remote start's profile waits
        self._store_errors = store_errors
        self._installed = InstalledProfiles()
        self._remote_starts: list[_RemoteStartProfile] = []
        self._listeners: list[Callable[[], None]] = []
        self._changing = trio.Lock()

    async def load(self) -> None:
        """Take the stored profiles (at boot). Drops the TxProfiles (no transaction survives
        a restart: the station stops them with PowerLoss) and the expired profiles, and any
        stored profile that no longer parses. Raises `ProfileStoreError` when the stored
        profiles cannot be read."""
        db = self._db
        if db is None:
            return
        try:
            rows = await db.charging_profiles()
        except self._store_errors as exc:
            raise ProfileStoreError(f"cannot read the charging profiles: {exc}") from exc
        kept: list[tuple[int, ChargingProfile]] = []
        dropped: list[int] = []
        for connector_id, payload in rows:
            try:
                profile = parse_profile(payload)
            except ProfileError as exc:
                # The storage layer gives back JSON objects keyed by their own id; what they
                # hold may be anything (a hand edit, an older version's bug).
                profile_id = payload["charging_profile_id"]
                log.error(
                    "stored charging profile %s on connector %d cannot be applied (%s):"
                    " dropped; it held %s",
                    profile_id,
                    connector_id,
                    exc,
                    payload,
                )
                dropped.append(profile_id)
                continue
            if profile.charging_profile_purpose is Purpose.tx_profile:
                dropped.append(profile.charging_profile_id)  # its transaction is over
            else:
                kept.append((connector_id, profile))
        self._installed = InstalledProfiles.of(kept)
        if dropped:
            try:
                await self._delete(dropped)
            except ProfileStoreError as exc:
                log.warning("%s (they are ignored)", exc)
        await self.remove_expired()
        if kept:
            log.info("%d charging profiles restored", len(self._installed))

    # --- reading ---------------------------------------------------------------------------

    @property
    def installed(self) -> InstalledProfiles:
        return self._installed

    @property
    def supported(self) -> bool:
        """Whether SmartCharging is in SupportedFeatureProfiles."""
        return smart_charging_supported(self._store)

    def limits(self) -> SmartChargingLimits:
        return SmartChargingLimits.from_configuration(self._store)

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback()` after every change of the installed set; returns the unsubscriber."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    async def composite(
        self, connector_id: int, duration_s: int, unit: Unit, context: ChargingContext
    ) -> CompositeSchedule:
        """The composite schedule of `connector_id` from now (whole seconds) for `duration_s`,
        capped by the connector's own maximum (OCPP 1.6 5.7: "possible local limits").

        At most ChargingScheduleMaxPeriods periods: a longer schedule ends where the first
        period left out would begin, and its duration says so (the span its periods cover,
        shorter than asked). Computed COMPOSITE_STEPS change points at a time, with a
        checkpoint in between, so that the event loop (the PLC's keep-alive among others)
        runs on however long the computation takes (`composite_steps` bounds that too)."""
        start = self._clock().astimezone(UTC).replace(microsecond=0)
        steps = composite_steps(
            self._installed,
            connector_id,
            start,
            duration_s,
            unit=unit,
            supply=context.supply,
            transaction=context.transaction,
            local_limit=context.local_limit(unit),
            max_periods=self.limits().max_periods,
        )
        while True:
            for _ in range(COMPOSITE_STEPS):
                try:
                    next(steps)
                except StopIteration as done:
                    schedule: CompositeSchedule = done.value
                    return schedule
            await trio.lowlevel.checkpoint()

    # --- SetChargingProfile / ClearChargingProfile -------------------------------------------

    async def set_profile(
        self, connector_id: int, payload: Mapping[str, Any], context: ChargingContext
    ) -> ChargingProfileStatus:
        """SetChargingProfile.req on an existing connector: Accepted once it is installed and
        stored, else Rejected (the reason is logged)."""
        try:
            profile = parse_profile(payload, received_at=self._clock())
            check_profile(
                profile,
                connector_id,
                self.limits(),
                running_transaction_id=context.transaction_id,
            )
            async with self._changing:
                await self._install(connector_id, profile)
        except (ProfileError, ProfileStoreError) as exc:
            log.warning("SetChargingProfile on connector %d rejected: %s", connector_id, exc)
            return ChargingProfileStatus.rejected
        log.info(
            "charging profile %d (%s, stackLevel %d) installed on connector %d",
            profile.charging_profile_id,
            profile.charging_profile_purpose.value,
            profile.stack_level,
            connector_id,
        )
        return ChargingProfileStatus.accepted

    async def clear(
        self,
        *,
        id: int | None = None,  # the OCPP field name
        connector_id: int | None = None,
        purpose: Purpose | None = None,
        stack_level: int | None = None,
    ) -> ClearChargingProfileStatus:
        """ClearChargingProfile.req (5.5): the profile with `id` or, when there is none (or no
        id was given), every profile matching all the other criteria given; nothing given
        clears them all. Accepted when something was removed (and the removal stored), else
        Unknown."""
        async with self._changing:
            installed = self._installed
            new = installed
            removed: Removed = ()
            if id is not None:
                new, removed = installed.clear(id=id)
            criteria = (connector_id, purpose, stack_level) != (None, None, None)
            if not removed and (id is None or criteria):
                new, removed = installed.clear(
                    connector_id=connector_id, purpose=purpose, stack_level=stack_level
                )
            if not removed:
                return ClearChargingProfileStatus.unknown
            try:
                await self._replace(new, removed)
            except ProfileStoreError as exc:
                log.error("ClearChargingProfile answered Unknown: %s", exc)
                return ClearChargingProfileStatus.unknown
        log.info(
            "charging profiles %s cleared",
            ", ".join(str(e.profile.charging_profile_id) for e in removed),
        )
        return ClearChargingProfileStatus.accepted

    # --- RemoteStartTransaction with a charging profile --------------------------------------

    def check_remote_start(self, payload: Mapping[str, Any]) -> ChargingProfile:
        """The chargingProfile of a RemoteStartTransaction.req, if the charge point can take
        it (5.11: a TxProfile; the configured limits; room for one more profile). Raises
        `ProfileError` (answer Rejected)."""
        if not self.supported:
            raise ProfileError("SupportedFeatureProfiles", "SmartCharging is not supported")
        profile = parse_profile(payload, received_at=self._clock())
        limits = self.limits()
        check_remote_start_profile(profile, limits)
        # The transaction's connector is not known yet: a trial install on none counts it as
        # one more profile, which is what it will be unless it replaces one.
        self._installed.install(0, profile, max_installed=limits.max_installed)
        return profile

    def expect_remote_start(
        self, connector_id: int | None, id_tag: str, profile: ChargingProfile
    ) -> object:
        """Keep `profile` for the transaction that the RemoteStartTransaction for `id_tag` on
        `connector_id` (None: any) is about to start; returns a handle for
        `cancel_remote_start`. It is forgotten once the EV could no longer arrive
        (ConnectionTimeOut, after an authorization of up to ResponseTimeout)."""
        wait = self._store.get_int("ConnectionTimeOut") + self._store.get_int("ResponseTimeout")
        expires = self._monotonic() + max(wait, 0) + 1
        pending = _RemoteStartProfile(connector_id, id_tag, profile, expires)
        self._remote_starts.append(pending)
        return pending

    def cancel_remote_start(self, handle: object) -> None:
        """The RemoteStartTransaction was not accepted after all."""
        self._remote_starts = [p for p in self._remote_starts if p is not handle]

    # --- transactions ----------------------------------------------------------------------

    async def transaction_started(self, connector_id: int, id_tag: str) -> None:
        """A transaction started on `connector_id` for `id_tag`: the TxProfile of the
        RemoteStartTransaction that asked for it is installed (unbound: it belongs to the
        connector's running transaction, and leaves with it)."""
        now = self._monotonic()
        match: _RemoteStartProfile | None = None
        waiting = []
        for pending in self._remote_starts:
            if pending.expires <= now:
                continue
            if (
                match is None
                and idtags.same(pending.id_tag, id_tag)
                and pending.connector_id
                in (
                    None,
                    connector_id,
                )
            ):
                match = pending
            elif pending.connector_id != connector_id:
                waiting.append(pending)  # a start for this connector is moot now
        self._remote_starts = waiting
        if match is None:
            return
        profile = match.profile
        try:
            async with self._changing:
                await self._install(connector_id, profile)
        except (ProfileError, ProfileStoreError) as exc:
            log.error(
                "connector %d: the TxProfile %d of the remote start could not be installed: %s",
                connector_id,
                profile.charging_profile_id,
                exc,
            )
            return
        log.info(
            "connector %d: TxProfile %d of the remote start installed",
            connector_id,
            profile.charging_profile_id,
        )

    async def transaction_ended(self, connector_id: int, transaction_id: int | None) -> None:
        """The transaction on `connector_id` ended (7.10: its TxProfiles SHOULD be deleted)."""
        async with self._changing:
            new, removed = self._installed.end_transaction(
                connector_id, UNCONFIRMED_TRANSACTION if transaction_id is None else transaction_id
            )
            if not removed:
                return
            try:
                await self._replace(new, removed)
            except ProfileStoreError as exc:
                # Gone from memory all the same: a TxProfile must not outlive its transaction.
                log.error("TxProfiles of the ended transaction not removed from storage: %s", exc)
                self._installed = new
                self._changed()

    async def remove_expired(self) -> None:
        """Drop profiles whose validTo has passed: they can never apply again and would count
        against MaxChargingProfilesInstalled."""
        async with self._changing:
            new, removed = self._installed.remove_expired(self._clock())
            if not removed:
                return
            try:
                await self._replace(new, removed)
            except ProfileStoreError as exc:
                log.warning("expired charging profiles stay stored: %s", exc)

    # --- changing (under `_changing`) ----------------------------------------------------------

    async def _install(self, connector_id: int, profile: ChargingProfile) -> None:
        new, replaced = self._installed.install(
            connector_id, profile, max_installed=self.limits().max_installed
        )
        if self._db is not None:
            try:
                await self._db.put_charging_profile(
                    connector_id,
                    profile.to_payload(),
                    replaces=[e.profile.charging_profile_id for e in replaced],
                )
            except self._store_errors as exc:
                raise ProfileStoreError(f"cannot store the charging profile: {exc}") from exc
        self._installed = new
        self._changed()

    async def _replace(self, new: InstalledProfiles, removed: Removed) -> None:
        await self._delete(e.profile.charging_profile_id for e in removed)
        self._installed = new
        self._changed()

    async def _delete(self, profile_ids: Iterable[int]) -> None:
        if self._db is None:
            return
        try:
            await self._db.delete_charging_profiles(list(profile_ids))
        except self._store_errors as exc:
            raise ProfileStoreError(f"cannot remove charging profiles: {exc}") from exc

    def _changed(self) -> None:
        for callback in list(self._listeners):
            callback()
