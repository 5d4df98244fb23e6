"""A gun's meter values (OCPP 1.6 MeterValues and the StopTransaction's transactionData): the
periodic samples of a running transaction (MeterValueSampleInterval), the clock-aligned ones
(ClockAlignedDataInterval), triggered ones, and the persisted reading a PowerLoss stop bills.

Samples of a transaction go to the outbox (kept until delivered); those outside a transaction
are news, not billing: sent if online, else dropped. What the samples say is built by
`metering` (pure); the readings are the ones a transaction may bill (`billing`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from ocpp.v16 import call
from ocpp.v16.enums import ReadingContext

from dcocpp.clock.stationclock import StationClock
from dcocpp.connector.billing import Billing
from dcocpp.connector.metering import meter_value, seconds_to_next_aligned
from dcocpp.hardware import interface as hw
from dcocpp.ocpp.configuration import ConfigurationStore
from dcocpp.ocpp.errors import OcppError
from dcocpp.ocpp.transactions import LocalTransaction, TransactionOutbox

log = logging.getLogger(__name__)

# How often a running transaction's meter reading is persisted (what a PowerLoss stop bills).
METER_PERSIST_INTERVAL = 10.0


class Sampler:
    """One gun's meter values. `run` (until cancelled) keeps the clock-aligned samples and
    holds the delivery of those outside a transaction; `during` keeps a transaction's
    timers. Raises what the outbox raises (StorageError) from the samples it stores."""

    def __init__(
        self,
        connector_id: int,
        max_current_a: float,
        billing: Billing,
        store: ConfigurationStore,
        outbox: TransactionOutbox,
        clock: StationClock,
        current: Callable[[], LocalTransaction | None],
    ):
        self._id = connector_id
        self._max_current_a = max_current_a
        self._billing = billing
        self._store = store
        self._outbox = outbox
        self._clock = clock
        self._current = current  # the transaction running now, if any
        # The current limit the gun's hardware was given (smart charging); None: its maximum.
        # Reported as Current.Offered.
        self.offered_a: float | None = None
        # Measurand lists that gave no value at all (logged at INFO once each, see _sample).
        self._unmeasured: set[tuple[str, ...]] = set()
        # Meter values outside a transaction: the newest waiting to go, and whether one is
        # being delivered (see _send_without_transaction).
        self._untransacted: dict[str, Any] | None = None
        self._delivering = False
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._clock_aligned()

    async def triggered(self, context: ReadingContext) -> None:
        """MeterValues now (TriggerMessage): on the transaction if one runs."""
        measurands = self._store.get_list("MeterValuesSampledData")
        tx = self._current()
        billing = self._billing
        sample = self._sample(measurands, context, billing.reading(tx), billing.stamp(tx))
        if sample is None:
            return
        if tx is None:
            self._send_without_transaction(sample)
        elif self._outbox.holds_meter_values(tx, context):
            # A central system that triggers faster than it takes them: the one waiting
            # answers this trigger too (the outbox keeps every message it is given).
            log.debug("connector %d: a %s sample is waiting already", self._id, context.value)
        else:
            await self._outbox.meter_values(tx, [sample])

    async def during(self, tx: LocalTransaction) -> None:
        """While the transaction runs (until cancelled at its stop): the periodic meter
        values and the persisted meter reading."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._periodic, tx)
            nursery.start_soon(self._keep_meter_reading, tx)

    async def add_stop_sample(
        self, tx: LocalTransaction, measurands: list[str], context: ReadingContext
    ) -> None:
        """A sample for the StopTransaction's transactionData (StopTxnSampledData /
        StopTxnAlignedData), persisted with the reading it shows."""
        reading = self._billing.reading(tx)
        at = self._billing.stamp(tx)
        sample = self._sample(measurands, context, reading, at)
        if sample is not None:
            await self._outbox.add_transaction_data(tx, sample, round(reading.energy_wh), at)

    def _sample(
        self,
        measurands: list[str],
        context: ReadingContext,
        reading: hw.MeterReading,
        at: str,
    ) -> dict[str, Any] | None:
        """A MeterValue of `measurands` at `reading`, stamped `at`; None when none of them can
        be measured now (SoC alone while the EV does not tell it): no message is built
        without a value."""
        sample = meter_value(
            reading,
            measurands,
            context,
            at,
            offered_a=self.offered_a if self.offered_a is not None else self._max_current_a,
        )
        if sample is None:
            key = tuple(measurands)
            log.log(
                logging.DEBUG if key in self._unmeasured else logging.INFO,
                "connector %d: none of %s can be measured now: no %s sample",
                self._id,
                ",".join(measurands),
                context.value,
            )
            self._unmeasured.add(key)
        return sample

    async def _keep_meter_reading(self, tx: LocalTransaction) -> None:
        """Persist the meter reading every METER_PERSIST_INTERVAL: after a power cut the
        transaction is stopped (PowerLoss) at the last one persisted."""
        while True:
            await trio.sleep(METER_PERSIST_INTERVAL)
            reading = self._billing.reading(tx)
            await self._outbox.record_meter(tx, round(reading.energy_wh), self._billing.stamp(tx))

    async def _periodic(self, tx: LocalTransaction) -> None:
        """MeterValueSampleInterval while the transaction runs (Sample.Periodic)."""
        store = self._store
        last = trio.current_time()
        while True:
            interval = store.get_int("MeterValueSampleInterval")
            deadline = last + interval if interval > 0 else float("inf")  # 0: disabled
            if not await self._sleep_unless_changed("MeterValueSampleInterval", deadline):
                continue  # a new interval counts from the last sample, at once
            last = trio.current_time()
            measurands = store.get_list("MeterValuesSampledData")
            periodic = ReadingContext.sample_periodic
            sample = (
                self._sample(
                    measurands, periodic, self._billing.reading(tx), self._billing.stamp(tx)
                )
                if measurands
                else None
            )
            if sample is not None:
                await self._outbox.meter_values(tx, [sample])
            stop_measurands = store.get_list("StopTxnSampledData")
            if stop_measurands:
                await self.add_stop_sample(tx, stop_measurands, ReadingContext.sample_periodic)

    async def _clock_aligned(self) -> None:
        """ClockAlignedDataInterval, aligned to midnight UTC (Sample.Clock) by the station's
        clock: sleeping on the monotonic clock, aligned again when the wall clock steps."""
        store = self._store
        while True:
            interval = store.get_int("ClockAlignedDataInterval")
            wait = seconds_to_next_aligned(self._clock.now(), interval) if interval else 0
            deadline = trio.current_time() + wait if interval > 0 else float("inf")
            if not await self._sleep_unless_changed(
                "ClockAlignedDataInterval", deadline, clock_steps=True
            ):
                continue  # a new interval, or a new time: aligned again at once
            measurands = store.get_list("MeterValuesAlignedData")
            tx = self._current()
            sample = (
                self._sample(
                    measurands,
                    ReadingContext.sample_clock,
                    self._billing.reading(tx),
                    self._billing.stamp(tx),
                )
                if measurands
                else None
            )
            if sample is not None:
                if tx is not None:
                    await self._outbox.meter_values(tx, [sample])
                else:
                    self._send_without_transaction(sample)
            stop_measurands = store.get_list("StopTxnAlignedData")
            if tx is not None and stop_measurands:
                await self.add_stop_sample(tx, stop_measurands, ReadingContext.sample_clock)

    async def _sleep_unless_changed(
        self, key: str, deadline: float, *, clock_steps: bool = False
    ) -> bool:
        """Sleep until `deadline`; False if configuration key `key` changed first (or, with
        `clock_steps`, the station's wall clock stepped)."""
        changed = False
        with trio.CancelScope(deadline=deadline) as sleep:

            def on_change(*_: object) -> None:
                nonlocal changed
                changed = True
                sleep.cancel()

            unsubscribe = self._store.subscribe(key, on_change)
            unsubscribe_steps = self._clock.subscribe(on_change) if clock_steps else lambda: None
            try:
                await trio.sleep_forever()
            finally:
                unsubscribe()
                unsubscribe_steps()
        return not changed

    def _send_without_transaction(self, sample: dict[str, Any]) -> None:
        """Meter values outside a transaction are news, not billing: sent if online, else
        dropped (with a log line). One at a time: a newer sample replaces one still waiting
        (a central system that triggers them faster than it answers gets the latest)."""
        self._untransacted = sample
        if not self._delivering:
            assert self._nursery is not None
            self._delivering = True
            self._nursery.start_soon(self._deliver_untransacted)

    async def _deliver_untransacted(self) -> None:
        session = self._outbox.session
        try:
            while self._untransacted is not None:
                sample, self._untransacted = self._untransacted, None
                message = call.MeterValues(connector_id=self._id, meter_value=[sample])
                try:
                    await session.call(message)
                except OcppError as exc:
                    log.info("connector %d: meter values not sent (%s)", self._id, exc)
        finally:
            self._delivering = False
