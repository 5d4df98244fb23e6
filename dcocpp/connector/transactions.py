"""A gun's transactions: started when the machine says so (StartTransaction stored before the
relay is told to close), stopped at the final meter reading taken after the relay opened, and
confirmed when the central system answers. The messages themselves go through the station's
outbox (`dcocpp.ocpp.transactions`), which keeps them until delivered."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import trio
from ocpp.v16.enums import ReadingContext

from dcocpp.clock.stationclock import StationClock, TransactionClock
from dcocpp.concurrency import Pulse, RestartableTask
from dcocpp.connector import events
from dcocpp.connector.billing import Billing
from dcocpp.connector.relay import RelayWorker
from dcocpp.connector.sampling import Sampler
from dcocpp.hardware import interface as hw
from dcocpp.ocpp.configuration import ConfigurationStore
from dcocpp.ocpp.transactions import LocalTransaction, TransactionOutbox

log = logging.getLogger(__name__)


class GunTransactions:
    """The transaction running on one gun, and those stopped whose StopTransaction is not
    queued yet. `run` (until cancelled) holds the running transaction's timers and the
    stops being queued. Raises what the outbox raises (StorageError)."""

    def __init__(
        self,
        connector_id: int,
        gun: hw.GunHardware,
        billing: Billing,
        sampler: Sampler,
        relay: RelayWorker,
        store: ConfigurationStore,
        outbox: TransactionOutbox,
        clock: StationClock,
        post: Callable[[events.Event], Awaitable[None]],
    ):
        self._id = connector_id
        self._gun = gun
        self._billing = billing
        self._sampler = sampler
        self._relay = relay
        self._store = store
        self._outbox = outbox
        self._clock = clock
        self._post = post  # into the connector's inbox
        self.current: LocalTransaction | None = None
        self._timers = RestartableTask()  # the running transaction's (Sampler.during)
        self._finishing = 0  # transactions whose StopTransaction is not queued yet
        self._settled = Pulse()  # one of them was queued
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def began(self) -> datetime | None:
        """When the running transaction began, on the station's clock as it reads now (its
        Relative charging profiles start there; see `TransactionClock.began`); None: none
        runs."""
        tx = self.current
        return None if tx is None else self._billing.began(tx)

    async def wait_settled(self) -> None:
        """Until every stopped transaction has its StopTransaction in the outbox."""
        while self._finishing:
            await self._settled.wait()

    async def start(self, effect: events.StartTransaction) -> None:
        """Store the StartTransaction (the caller closes the relay only after it returns),
        then keep the transaction's timers."""
        assert self._nursery is not None
        reading = self._gun.read_meter()
        times = TransactionClock(self._clock, f"connector {self._id}")
        tx = await self._outbox.start(
            self._id,
            effect.id_tag,
            round(reading.energy_wh),
            times.started_at,
            reservation_id=effect.reservation_id,
        )
        tx.on_confirmed = functools.partial(self._confirmed, tx)
        self.current = tx
        self._billing.open(tx, times, reading.energy_wh)
        stop_measurands = self._store.get_list("StopTxnSampledData")
        if stop_measurands:
            await self._sampler.add_stop_sample(
                tx, stop_measurands, ReadingContext.transaction_begin
            )
        log.info(
            "connector %d: transaction started for %s at %d Wh",
            self._id,
            effect.id_tag,
            tx.meter_start,
        )
        # The writes above finish even when the connector is being cancelled (shielded), and
        # by then the nursery of the timers may be closed: the station is going down, and the
        # stored transaction is recovered at the next start.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._timers.restart(self._nursery, self._sampler.during, tx)

    def stop(self, effect: events.StopTransaction) -> None:
        """The machine stopped the transaction (and commanded the relay open first): its
        StopTransaction is queued once the relay has opened (`wait_settled`)."""
        tx = self.current
        if tx is None:
            return
        assert self._nursery is not None
        self.current = None
        self._timers.cancel()
        self._finishing += 1
        self._nursery.start_soon(self._finish, tx, effect)

    async def _confirmed(
        self, tx: LocalTransaction, transaction_id: int, id_tag_info: dict[str, Any]
    ) -> None:
        if self.current is not tx:
            # Confirmed after it ended (started and stopped offline): its StopTransaction is
            # queued with the id the outbox fills in; the gun's current session is not its.
            log.info(
                "connector %d: transaction %d confirmed (%s) after it ended",
                self._id,
                transaction_id,
                id_tag_info["status"],
            )
            return
        await self._post(
            events.TransactionConfirmed(
                transaction_id, id_tag_info["status"], id_tag_info.get("parent_id_tag")
            )
        )

    async def _finish(self, tx: LocalTransaction, effect: events.StopTransaction) -> None:
        try:
            await self._queue_stop(tx, effect)
        finally:
            self._billing.close(tx)
            self._finishing -= 1
            self._settled.fire()

    async def _queue_stop(self, tx: LocalTransaction, effect: events.StopTransaction) -> None:
        # The relay is opening (the machine commanded it first): bill up to the last Wh.
        await self._relay.wait_open()
        reading = self._billing.reading(tx)
        stop_measurands = self._store.get_list("StopTxnSampledData")
        if stop_measurands:
            await self._sampler.add_stop_sample(tx, stop_measurands, ReadingContext.transaction_end)
        await self._outbox.stop(
            tx,
            round(reading.energy_wh),
            self._billing.stamp(tx),
            effect.reason.value,
            effect.id_tag,
        )
        log.info(
            "connector %d: transaction stopped (%s) at %d Wh, %d Wh delivered",
            self._id,
            effect.reason.value,
            round(reading.energy_wh),
            round(reading.energy_wh) - tx.meter_start,
        )
