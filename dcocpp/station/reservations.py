"""The station's reservations (OCPP 1.6 Reservation profile: ReserveNow, CancelReservation).

A reservation is for one connector or, with ReserveConnectorZeroSupported, for connector 0:
any gun of the station. The book keeps them in the station database (written before
ReserveNow is answered, restored at boot, expired ones dropped; the database is reached off
the event loop, `asyncdb.AsyncDatabase`) and ends each one when it is
used (its holder's StartTransaction carries its id), cancelled, expired (at its expiryDate, by
the station's wall clock), or when its connector becomes Faulted or Unavailable (the connector
machine decides that and reports it), as 5.13 says.

The connectors see the book through `ReservationDesk` (`wanted`): every gun serves its own
connector's reservation and every connector-0 one, so that a transaction for a holder carries
the reservation's id wherever it starts. A connector-0 reservation keeps one gun free for its
holder (5.13: "one connector remains available for the reserved idTag"): while more guns are
free than there are connector-0 reservations, every gun stays Available and takes anyone;
once only as many are free as there are connector-0 reservations, each of those guns is held:
it reports Reserved and only a holder of a connector-0 reservation may start on it. A gun is
free when nothing but a plugged EV or a tag being authorized is on it: no transaction, no
authorized session, no fault, operative, not Finishing, and no reservation of its own (so an
EV plugged into the last free gun does not take it from the holder).

Starts nothing but its expiry timers, which live in `run()`'s nursery; StorageError does not
escape (a reservation that cannot be stored is Rejected; one that cannot be deleted is logged
and dropped from memory). A reservation ends in memory at once (a connector tells the book
before it awaits anything); its row is deleted by the next `flush()`, which whoever ended it
awaits right after, and which a new reservation awaits before it is stored, so that the
database sees the end and a new reservation with the same id in the order they happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

import trio
from ocpp.v16.enums import CancelReservationStatus, ReservationStatus

from dcocpp import idtags
from dcocpp.clock import WallClock, ocpp_time
from dcocpp.concurrency import RestartableTask
from dcocpp.connector import events
from dcocpp.connector.reservationdesk import in_line
from dcocpp.connector.task import ConnectorTask
from dcocpp.connector.truth import Truth
from dcocpp.ocpp.authcache import parse_expiry
from dcocpp.ocpp.configuration import ConfigurationStore
from dcocpp.storage.asyncdb import AsyncDatabase
from dcocpp.storage.database import ReservationRow, StorageError

log = logging.getLogger(__name__)

PROFILE = "Reservation"
# An expiry timer looks at the wall clock again at least this often (it may be set).
EXPIRY_RECHECK = 60.0


def reservation_supported(store: ConfigurationStore) -> bool:
    """The Reservation profile is in SupportedFeatureProfiles: without it every ReserveNow is
    answered Rejected ("configured not to accept reservations", 5.13)."""
    profiles = store.get("SupportedFeatureProfiles") or ""
    return PROFILE in (p.strip() for p in profiles.split(","))


def _engaged(t: Truth) -> bool:
    """A session or state that keeps the gun from a new user, whatever a reservation says."""
    return bool(
        t.transaction is not None
        or t.authorized is not None
        or t.finishing
        or t.faults
        or not t.operative
    )


class ReservationBook:
    """The reservations of one boot of the station (see the module docstring)."""

    def __init__(
        self,
        db: AsyncDatabase,
        store: ConfigurationStore,
        clock: WallClock,
        connectors: Callable[[], Mapping[int, ConnectorTask]],
        charge_point_operative: Callable[[], bool],
    ):
        self._db = db
        self._store = store
        self._clock = clock
        self._connectors = connectors
        self._operative0 = charge_point_operative
        self._rows: dict[int, ReservationRow] = {}
        self._ended: list[int] = []  # ended in memory, their rows not deleted yet (`flush`)
        self._reserving = trio.Lock()
        self._storing: int | None = None  # the id of the reservation being written
        self._timers: dict[int, RestartableTask] = {}  # each reservation's expiry
        self._nursery: trio.Nursery | None = None

    def __len__(self) -> int:
        return len(self._rows)

    async def load(self) -> None:
        """Restore the stored reservations (before the connectors start). Expired ones, and
        connector-0 ones while the charge point is Unavailable, are dropped; one whose
        connector is Faulted or Unavailable now is ended by that connector when it starts."""
        try:
            rows = await self._db.reservations()
        except StorageError as exc:
            log.error("reservations not restored: %s", exc)
            return
        now = self._clock.now()
        dropped = []
        for row in rows:
            expiry = parse_expiry(row.expiry_date)
            if expiry is None or expiry <= now:
                dropped.append((row, "expired"))
            elif row.connector_id == 0 and not self._operative0():
                dropped.append((row, "the charge point is Unavailable"))
            elif row.connector_id != 0 and row.connector_id not in self._connectors():
                dropped.append((row, "no such connector"))
            else:
                self._rows[row.reservation_id] = row
        for row, why in dropped:
            log.info("reservation %d not restored: %s", row.reservation_id, why)
        await self._forget([row.reservation_id for row, _ in dropped])
        if self._rows:
            log.info("%d reservation(s) restored", len(self._rows))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the expiry timers until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for row in self._rows.values():
                self._schedule(row)
            task_status.started()
            await trio.sleep_forever()

    # --- ReserveNow, CancelReservation (for the OCPP layer, through the station) -------------

    async def reserve(
        self,
        connector_id: int,
        expiry: datetime,
        id_tag: str,
        reservation_id: int,
        parent_id_tag: str | None = None,
    ) -> ReservationStatus:
        """ReserveNow (OCPP 1.6 5.13). The same reservationId replaces its reservation, which
        is then not counted against the new one; a reservation that cannot be made keeps the
        old one as it was."""
        where = "the charge point" if connector_id == 0 else f"connector {connector_id}"
        async with self._reserving:  # one at a time: each answer counts the one before
            status = self._answer(connector_id, expiry, reservation_id)
            if status != ReservationStatus.accepted:
                log.info(
                    "reservation %d on %s for %s: %s", reservation_id, where, id_tag, status.value
                )
                return status
            row = ReservationRow(
                reservation_id, connector_id, id_tag, parent_id_tag, ocpp_time(expiry)
            )
            await self.flush()  # an ended reservation with this id must not delete the new one
            self._storing = reservation_id
            try:
                await self._db.put_reservation(row)  # on disk before it is acknowledged
            except StorageError as exc:
                log.error("reservation %d rejected: %s", reservation_id, exc)
                return ReservationStatus.rejected
            finally:
                self._storing = None
            replaced = self._rows.get(reservation_id)
            self._rows[reservation_id] = row
        self._schedule(row)  # a replaced reservation's timer ends
        self._resync_all()
        log.info(
            "reservation %d %s on %s for %s%s until %s",
            reservation_id,
            "replaced" if replaced else "made",
            where,
            id_tag,
            f" (parentIdTag {parent_id_tag})" if parent_id_tag else "",
            row.expiry_date,
        )
        return ReservationStatus.accepted

    async def cancel(self, reservation_id: int) -> CancelReservationStatus:
        """CancelReservation (5.1): Accepted for a reservation the charger has, else Rejected."""
        if not reservation_supported(self._store) or reservation_id not in self._rows:
            log.info("CancelReservation %d rejected: no such reservation", reservation_id)
            return CancelReservationStatus.rejected
        self._end(reservation_id, "cancelled by the central system")
        await self.flush()
        return CancelReservationStatus.accepted

    async def charge_point_unavailable(self) -> None:
        """The charge point became Unavailable: its connector-0 reservations end (5.13); each
        connector ends its own as it becomes Unavailable."""
        for row in list(self._rows.values()):
            if row.connector_id == 0:
                self._end(row.reservation_id, "the charge point became Unavailable")
        await self.flush()

    async def flush(self) -> None:
        """Delete the rows of the reservations ended since the last flush (see the module
        docstring); a failure is logged."""
        ended, self._ended = self._ended, []
        await self._forget(ended)

    def listed(self) -> list[dict[str, object]]:
        """The reservations in force, for the operator (connectorId 0: any gun)."""
        return [
            {
                "reservationId": row.reservation_id,
                "connectorId": row.connector_id,
                "idTag": row.id_tag,
                "expiryDate": row.expiry_date,
            }
            for row in sorted(self._rows.values(), key=lambda r: r.reservation_id)
        ]

    def preferred_connectors(self, id_tag: str) -> list[int]:
        """Every connector, those reserved for `id_tag` first (RemoteStartTransaction without
        a connectorId uses the holder's reservation rather than leave it unused)."""
        reserved = {
            row.connector_id
            for row in self._rows.values()
            if row.connector_id != 0 and idtags.same(row.id_tag, id_tag)
        }
        ids = sorted(self._connectors())
        return [c for c in ids if c in reserved] + [c for c in ids if c not in reserved]

    # --- ReservationDesk (for the connector tasks) --------------------------------------------

    def wanted(self, connector_id: int) -> events.ReservationsChanged:
        own = tuple(
            _reservation(row) for row in self._rows.values() if row.connector_id == connector_id
        )
        zero = tuple(_reservation(row) for row in self._rows.values() if row.connector_id == 0)
        if not zero:
            return events.ReservationsChanged(own)
        free = self._free()
        return events.ReservationsChanged(
            own + zero, hold_zero=connector_id in free and len(free) <= len(zero)
        )

    def stepped(self, connector_id: int) -> None:
        for cid, task in self._connectors().items():
            if cid == connector_id:
                continue  # it syncs before its next event anyway
            if not in_line(task.machine.truth, self.wanted(cid)):
                task.resync()

    def ended(self, connector_id: int, reservation_id: int, cause: str) -> None:
        if reservation_id not in self._rows:
            return  # already gone (a connector-0 reservation two guns served)
        if cause == "used":
            self._end(reservation_id, f"used by a transaction on connector {connector_id}")
        else:
            self._end(reservation_id, f"connector {connector_id} became {cause}")

    # --- internals ---------------------------------------------------------------------------

    def _free(self, rows: Mapping[int, ReservationRow] | None = None) -> list[int]:
        """The guns free for a connector-0 reservation's holder (see the module docstring)."""
        rows = self._rows if rows is None else rows
        reserved = {row.connector_id for row in rows.values()}
        return [
            cid
            for cid, task in sorted(self._connectors().items())
            if cid not in reserved and not _engaged(task.machine.truth)
        ]

    def _answer(
        self, connector_id: int, expiry: datetime, reservation_id: int
    ) -> ReservationStatus:
        """What ReserveNow answers (5.13), counting every other reservation but the one it
        would replace. The gun's state (Faulted, Unavailable, Occupied) answers first, as
        central systems and their tests expect; only a reservation that could be made is
        Rejected for an expiryDate already past."""
        if not reservation_supported(self._store):
            return ReservationStatus.rejected
        if connector_id == 0 and self._store.get("ReserveConnectorZeroSupported") != "true":
            return ReservationStatus.rejected
        status = self._state_answer(connector_id, reservation_id)
        if status == ReservationStatus.accepted and expiry <= self._clock.now():
            return ReservationStatus.rejected  # nothing left to reserve
        return status

    def _state_answer(self, connector_id: int, reservation_id: int) -> ReservationStatus:
        """ReserveNow's answer from the state of the guns alone."""
        if not self._operative0():
            return ReservationStatus.unavailable
        others = {rid: row for rid, row in self._rows.items() if rid != reservation_id}
        zero = sum(1 for row in others.values() if row.connector_id == 0)
        connectors = self._connectors()
        # Free and with nobody at it: what a new reservation may take.
        available = [cid for cid in self._free(others) if not connectors[cid].machine.truth.plugged]
        if connector_id != 0:
            t = connectors[connector_id].machine.truth
            if t.faults:
                return ReservationStatus.faulted
            if not t.operative:
                return ReservationStatus.unavailable
            # Occupied: in use, reserved (for the same or another idTag), or needed to keep a
            # gun free for the connector-0 reservations.
            if connector_id in available and len(available) > zero:
                return ReservationStatus.accepted
            return ReservationStatus.occupied
        if len(available) > zero:
            return ReservationStatus.accepted
        truths = [task.machine.truth for task in connectors.values()]
        if any(t.operative and not t.faults for t in truths):
            return ReservationStatus.occupied
        if any(t.faults for t in truths):
            return ReservationStatus.faulted
        return ReservationStatus.unavailable

    def _end(self, reservation_id: int, why: str) -> None:
        """End a reservation in memory; its row goes at the next `flush`."""
        row = self._rows.pop(reservation_id)
        self._cancel_timer(reservation_id)
        if reservation_id != self._storing:  # else its row is the new one's already
            self._ended.append(reservation_id)
        self._resync_all()
        where = "the charge point" if row.connector_id == 0 else f"connector {row.connector_id}"
        log.info("reservation %d on %s for %s ended: %s", reservation_id, where, row.id_tag, why)

    async def _forget(self, reservation_ids: list[int]) -> None:
        if not reservation_ids:
            return
        try:
            await self._db.delete_reservations(reservation_ids)
        except StorageError as exc:
            # Harmless after a restart: an expired one is dropped then, a used or cancelled
            # one comes back until its expiryDate.
            log.error("ended reservations %s stay in the database: %s", reservation_ids, exc)

    def _resync_all(self) -> None:
        for task in self._connectors().values():
            task.resync()

    def _schedule(self, row: ReservationRow) -> None:
        """(Re)start the expiry timer of `row`'s reservation."""
        if self._nursery is None:
            return  # run() schedules every reservation as it starts
        timer = self._timers.setdefault(row.reservation_id, RestartableTask())
        timer.restart(self._nursery, self._expire, row)

    def _cancel_timer(self, reservation_id: int) -> None:
        timer = self._timers.pop(reservation_id, None)
        if timer is not None:
            timer.cancel()

    async def _expire(self, row: ReservationRow) -> None:
        """End the reservation at its expiryDate by the wall clock (sleeping on trio's clock;
        a wall clock that is set meanwhile is noticed within EXPIRY_RECHECK)."""
        expiry = parse_expiry(row.expiry_date)
        assert expiry is not None  # written by ocpp_time, or checked by load()
        while True:
            left = (expiry - self._clock.now()).total_seconds()
            if left <= 0:
                break
            await trio.sleep(min(left, EXPIRY_RECHECK))
        # Off the timers first: ending the reservation must not cancel this run, whose flush
        # follows.
        self._timers.pop(row.reservation_id, None)
        self._end(row.reservation_id, f"expired at {row.expiry_date}")
        await self.flush()


def _reservation(row: ReservationRow) -> events.Reservation:
    return events.Reservation(
        row.reservation_id, row.id_tag, row.parent_id_tag, any_connector=row.connector_id == 0
    )
