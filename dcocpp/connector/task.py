"""One gun's task: the async shell around its pure `ConnectorMachine`.

Everything the gun hears arrives in one inbox (a bounded trio channel): hardware events from the
backend, requests from the OCPP handlers and the local API, and the results of the task's own
timers and workers. The loop feeds each one to the machine and carries out the effects in order
without ever blocking on the outside world: the relay is driven by its worker under a
cancel-scope deadline (`relay`), an authorization runs as its own task (what became of a tag
someone awaits: `tagwaits`), meter values keep their timers (`sampling`, on the readings a
transaction may bill: `billing`) and transaction messages go to the outbox (`transactions`).
The one effect the loop waits for is a transaction record on disk (the outbox's database
write, in its worker thread): a StartTransaction is stored before the relay is told to close.
Before every event the machine is brought in line with the station's reservations
(`reservationdesk`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import attrs
import trio
from ocpp.v16.enums import ReadingContext, UnlockStatus

from dcocpp.clock import ocpp_time
from dcocpp.clock.stationclock import StationClock
from dcocpp.concurrency import Pulse, RestartableTask, WakeUp
from dcocpp.config import ConnectorConfig
from dcocpp.connector import events
from dcocpp.connector.billing import Billing
from dcocpp.connector.faults import active_faults, fault_codes, fault_report
from dcocpp.connector.machine import ConnectorMachine
from dcocpp.connector.relay import RelayWorker
from dcocpp.connector.reservationdesk import ReservationDesk, ReservationSync
from dcocpp.connector.sampling import Sampler
from dcocpp.connector.tagwaits import TagOutcome, TagWait, TagWaits
from dcocpp.connector.transactions import GunTransactions
from dcocpp.connector.truth import Settings, Truth
from dcocpp.hardware import interface as hw
from dcocpp.ocpp.authorization import Authorizer
from dcocpp.ocpp.configuration import ConfigurationStore
from dcocpp.ocpp.control import ConnectorStatus
from dcocpp.ocpp.transactions import LocalTransaction, TransactionOutbox

log = logging.getLogger(__name__)

LOCK_DEADLINE = 5.0
# A fault that flaps (a bouncing safety input, a loose PLC connector) is said at most
# FAULT_LINES_PER_WINDOW times per FAULT_LOG_WINDOW; the rest are counted, and one line at the
# end of the window says how many and what the fault is now.
FAULT_LINES_PER_WINDOW = 4
FAULT_LOG_WINDOW = 10.0
INBOX_SIZE = 64

_HARDWARE_EVENTS: dict[type, Callable[[Any], events.Event]] = {
    hw.CablePlugged: lambda e: events.Plugged(),
    hw.CableUnplugged: lambda e: events.Unplugged(),
    hw.EvDemand: lambda e: events.EvRequesting(e.requesting),
    hw.RelayState: lambda e: events.RelayConfirmed(e.closed),
    hw.FaultRaised: lambda e: events.FaultRaised(e.kind, e.detail),
    hw.FaultCleared: lambda e: events.FaultCleared(e.kind),
}


@attrs.define
class _FaultLines:
    """The fault lines of one kind in the window ending at `until` (trio time)."""

    until: float
    said: int = 0
    held: int = 0  # changes not logged one by one


@attrs.define
class _Request:
    """An event whose reply someone awaits."""

    event: events.Event
    done: trio.Event = attrs.field(factory=trio.Event)
    reply: Any = None
    refusal: str | None = None  # IdPresented: why the reader refused the tag
    outcome: TagWait | None = None  # IdPresented: what became of the tag


# An inbox item that only brings the machine in line with the station (its reservations)
# and the gun (a register beyond OCPP's range).
_RESYNC = object()


@attrs.frozen
class ConnectorServices:
    """What a connector needs from the rest of the station."""

    store: ConfigurationStore
    outbox: TransactionOutbox
    authorizer: Authorizer
    clock: StationClock
    report_status: Callable[[ConnectorStatus], None]
    availability_applied: Callable[[int, bool], None]
    reservations: ReservationDesk | None = None


class ConnectorTask:
    """Owns one gun for one run of the station. `run()` reads the inbox until cancelled; its
    nursery holds the relay worker, the meter values' timers, the transactions being stopped
    and any authorization in progress, which all end with it. Raises what the outbox raises
    (StorageError: a transaction that cannot be stored does not start); the hardware's and
    the central system's errors become faults and log lines."""

    def __init__(
        self,
        config: ConnectorConfig,
        gun: hw.GunHardware,
        services: ConnectorServices,
        inbox: trio.MemoryReceiveChannel[Any],
        inbox_send: trio.MemorySendChannel[Any],
        *,
        operative: bool = True,
        finishing: bool = False,
    ):
        self.config = config
        self.id = config.id
        self.gun = gun
        self.services = services
        self._inbox = inbox
        self._send = inbox_send
        # Set once by the station when the process is about to exit: no new transaction.
        self.closing = False
        physical = gun.status()
        self.machine = ConnectorMachine(
            config.id,
            self._settings(),
            Truth(
                plugged=physical.plugged,
                ev_requesting=physical.ev_requesting,
                relay_closed=physical.relay_closed,
                faults=physical.faults,
                operative=operative,
                # A session that ended before a soft reset leaves a plugged EV Finishing.
                finishing=finishing and physical.plugged,
            ),
        )
        self._relay = RelayWorker(config.id, gun, self.post, confirmed=physical.relay_closed)
        self._billing = Billing(config.id, gun, config.max_power_w, services.clock, self.resync)
        self._sampler = Sampler(
            config.id,
            config.max_current_a,
            self._billing,
            services.store,
            services.outbox,
            services.clock,
            lambda: self.transaction,
        )
        self._transactions = GunTransactions(
            config.id,
            gun,
            self._billing,
            self._sampler,
            self._relay,
            services.store,
            services.outbox,
            services.clock,
            self.post,
        )
        self._reservations = ReservationSync(
            config.id, services.reservations, self.machine, self._execute
        )
        self._tags = TagWaits()  # tags presented at the reader whose outcome someone awaits
        self._nursery: trio.Nursery | None = None
        self._connection_timer = RestartableTask()  # ConnectionTimeOut
        self._fault_lines: dict[hw.FaultKind, _FaultLines] = {}
        self._stepped = Pulse()  # after every event the machine takes
        self._resync = WakeUp()  # look again at the reservations and the register (resync)

    def _settings(self) -> Settings:
        store = self.services.store
        return Settings(
            stop_on_ev_disconnect=store.get_bool("StopTransactionOnEVSideDisconnect"),
            unlock_on_ev_disconnect=store.get_bool("UnlockConnectorOnEVSideDisconnect"),
            stop_on_invalid_id=store.get_bool("StopTransactionOnInvalidId"),
            fixed_cable=self.config.fixed_cable,
            closing=self.closing,
        )

    # --- public ----------------------------------------------------------------------------

    @property
    def transaction(self) -> LocalTransaction | None:
        """The transaction running on the gun, if any."""
        return self._transactions.current

    @property
    def offered_a(self) -> float | None:
        """The current limit the gun's hardware was given (smart charging); None: its
        maximum. Reported as Current.Offered."""
        return self._sampler.offered_a

    @offered_a.setter
    def offered_a(self, limit: float | None) -> None:
        self._sampler.offered_a = limit

    async def ask(self, event: events.Event) -> Any:
        """Put an event in the inbox and wait for the machine's reply (and its effects)."""
        request = _Request(event)
        await self._send.send(request)
        await request.done.wait()
        return request.reply

    async def post(self, event: events.Event) -> None:
        await self._send.send(event)

    async def present_id(self, id_tag: str, *, wait: float) -> TagOutcome:
        """A tag at the gun's reader, and what the gun made of it: refused at the reader (and
        why), or the authorization's decision, waited for up to `wait` seconds, and whether
        the gun acted on it."""
        request = _Request(events.IdPresented(id_tag))
        await self._send.send(request)
        await request.done.wait()
        pending = request.outcome
        if pending is None:
            return TagOutcome(id_tag, refused=request.refusal or "the gun takes no tag now")
        return await pending.result(wait)

    def resync(self) -> None:
        """The station's reservations may have changed (or the meter's register): bring the
        machine in line soon (it is also brought in line before every event it takes)."""
        self._resync.set()

    def status(self) -> ConnectorStatus:
        code, vendor, info = fault_report(self.machine.truth)
        return ConnectorStatus(
            self.id, self.machine.status, code, info, vendor, ocpp_time(self.services.clock.now())
        )

    def transaction_began(self) -> datetime | None:
        """When the running transaction began, on the station's clock as it reads now (its
        Relative charging profiles start there; see `TransactionClock.began`); None: none
        runs."""
        return self._transactions.began()

    async def wait_settled(self) -> None:
        """Until every stopped transaction has its StopTransaction in the outbox."""
        await self._transactions.wait_settled()

    async def send_meter_values(self, context: ReadingContext = ReadingContext.trigger) -> None:
        """MeterValues now (TriggerMessage): on the transaction if one runs."""
        await self._sampler.triggered(context)

    async def wait_truth(self, predicate: Callable[[Truth], bool]) -> None:
        """Until the machine's truth satisfies `predicate` (checked after every event); the
        caller bounds the wait."""
        while not predicate(self.machine.truth):
            await self._stepped.wait()

    # --- the loop --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._relay.run)
            await nursery.start(self._sampler.run)
            await nursery.start(self._transactions.run)
            nursery.start_soon(self._resync_worker)
            self._log_faults(())  # those the hardware reports already
            await self._execute(self.machine.take_effects())
            # Those restored at boot: reported Reserved at once.
            await self._reservations.bring_in_line()
            task_status.started()
            async for item in self._inbox:
                await self._handle(item)

    async def _resync_worker(self) -> None:
        while True:
            await self._resync.wait()
            self._resync.clear()
            await self._send.send(_RESYNC)

    async def _handle(self, item: Any) -> None:
        await self._reservations.bring_in_line()
        beyond = self._billing.beyond_ocpp(dict(self.machine.truth.faults).get(hw.FaultKind.METER))
        if beyond is not None:
            await self._handle(beyond)  # first: nothing may start on a register OCPP cannot carry
        if item is _RESYNC:
            return
        request = item if isinstance(item, _Request) else None
        event = request.event if request else item
        if isinstance(event, hw.FaultCleared) or (
            isinstance(event, hw.RelayState) and event.closed == self._relay.target
        ):
            # News that may end a relay failure: the hardware reports the relay as wanted, or
            # a fault gone (a PLC that talks again). The relay worker retries at once.
            self._relay.news()
        translate = _HARDWARE_EVENTS.get(type(event))
        if translate is not None:
            event = translate(event)
        self.machine.settings = self._settings()  # keys may have changed at runtime
        before = self.machine.truth
        refusal = (
            self.machine.reader_refusal(event.id_tag)
            if isinstance(event, events.IdPresented)
            else None
        )
        faults = self.machine.truth.faults
        reply = self.machine.dispatch(event)
        self._log_faults(faults)
        effects = self.machine.take_effects()
        if isinstance(event, events.AuthorizationResult):
            self._tags.settle(event, before, self.machine.truth, effects)
        await self._reservations.note(effects)
        self._reservations.stepped()
        if any(isinstance(effect, events.StartTransaction) for effect in effects):
            # The previous transaction's StopTransaction first (it waits for the relay to
            # open to read its final meter): the CSMS must get Stop(old) before Start(new),
            # and the new meterStart must come after the old meterStop.
            await self.wait_settled()
        if isinstance(event, events.UnlockRequested):
            reply = await self._unlock(reply, effects)
        else:
            await self._execute(effects)
        if request is not None:
            if isinstance(event, events.IdPresented):
                request.refusal = refusal
                if reply:
                    request.outcome = self._tags.taken(event.id_tag, before, effects)
            request.reply = reply
            request.done.set()
        self._stepped.fire()

    async def _execute(self, effects: list[events.Effect]) -> None:
        """Carry out the machine's effects in order. A StartTransaction is awaited (stored)
        before the effects after it, the relay's among them."""
        for effect in effects:
            match effect:
                case events.NotifyStatus():
                    self.services.report_status(
                        ConnectorStatus(
                            self.id,
                            effect.status,
                            effect.error_code,
                            effect.info,
                            effect.vendor_error_code,
                            ocpp_time(self.services.clock.now()),
                        )
                    )
                case events.SwitchRelay(closed=closed):
                    self._relay.command(closed)
                case events.SetLock(locked=locked):
                    self._spawn(self._drive_lock, locked)
                case events.Authorize(id_tag=id_tag):
                    self._spawn(self._authorize, id_tag)
                case events.StartTransaction():
                    await self._transactions.start(effect)
                case events.StopTransaction():
                    self._transactions.stop(effect)
                case events.ConnectionTimer(running=running):
                    self._set_connection_timer(running)
                case events.AvailabilityApplied(operative=operative):
                    self.services.availability_applied(self.id, operative)
                case events.ReservationEnded():
                    pass  # the station was told at once (ReservationSync.note)

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    # --- fault lines -----------------------------------------------------------------------

    def _log_faults(self, before: tuple[tuple[hw.FaultKind, str], ...]) -> None:
        """One line per fault that the last event raised (WARNING) or cleared (INFO), whatever
        raised it: the hardware, the relay worker or the lock. A fault already active is
        not raised again, so it is not logged again."""
        after = self.machine.truth.faults
        if after == before:
            return
        was, now = dict(before), dict(after)
        for kind, detail in after:
            if kind not in was:
                code, vendor = fault_codes(kind, detail)
                self._fault_line(
                    kind,
                    logging.WARNING,
                    f"connector {self.id}: fault {kind.value} raised ({code.value}"
                    + (f", {vendor}" if vendor and not detail.startswith(vendor) else "")
                    + ")"
                    + (f": {detail}" if detail else ""),
                )
        for kind in was:
            if kind not in now:
                self._fault_line(
                    kind, logging.INFO, f"connector {self.id}: fault {kind.value} cleared"
                )

    def _fault_line(self, kind: hw.FaultKind, level: int, text: str) -> None:
        """Log `text`, unless `kind` has said FAULT_LINES_PER_WINDOW lines in this window: then
        count it, and one line at the window's end sums up (see `_fault_summary`)."""
        now = trio.current_time()
        lines = self._fault_lines.get(kind)
        if lines is None or now >= lines.until:
            lines = self._fault_lines[kind] = _FaultLines(until=now + FAULT_LOG_WINDOW)
        if lines.said < FAULT_LINES_PER_WINDOW:
            lines.said += 1
            log.log(level, "%s", text)
            return
        if not lines.held:
            self._spawn(self._fault_summary, kind, lines)
        lines.held += 1

    async def _fault_summary(self, kind: hw.FaultKind, lines: _FaultLines) -> None:
        await trio.sleep_until(lines.until)
        active = dict(self.machine.truth.faults).get(kind)
        log.warning(
            "connector %d: fault %s changed %d more time(s) in %g s (not logged one by one);"
            " it is %s",
            self.id,
            kind.value,
            lines.held,
            FAULT_LOG_WINDOW,
            "cleared" if active is None else f"raised{f': {active}' if active else ''}",
        )

    # --- lock, authorization, connection timer ---------------------------------------------

    async def _drive_lock(self, locked: bool) -> None:
        try:
            with trio.fail_after(LOCK_DEADLINE):
                await self.gun.set_lock(locked)
        except (hw.HardwareError, trio.TooSlowError) as exc:
            await self.post(events.FaultRaised(hw.FaultKind.LOCK, f"lock: {exc}"[:50]))
            return
        await self.post(events.LockEngaged() if locked else events.LockReleased())

    async def _unlock(self, reply: UnlockStatus, effects: list[events.Effect]) -> UnlockStatus:
        """UnlockConnector answers what the lock did, so the release is awaited here."""
        releases = [e for e in effects if isinstance(e, events.SetLock) and not e.locked]
        await self._execute([e for e in effects if e not in releases])
        if reply != UnlockStatus.unlocked or not releases:
            return reply
        try:
            with trio.fail_after(LOCK_DEADLINE):
                await self.gun.set_lock(False)
        except (hw.HardwareError, trio.TooSlowError) as exc:
            self._post_later(events.FaultRaised(hw.FaultKind.LOCK, f"unlock: {exc}"[:50]))
            return UnlockStatus.unlock_failed
        self._post_later(events.LockReleased())
        return UnlockStatus.unlocked

    def _post_later(self, event: events.Event) -> None:
        # Not `await self.post`: we are inside the loop, which must not wait on its own inbox.
        self._spawn(self.post, event)

    async def _authorize(self, id_tag: str) -> None:
        decision = await self.services.authorizer.authorize(id_tag)
        log.info(
            "connector %d: %s is %s (%s)", self.id, id_tag, decision.status.value, decision.source
        )
        self._tags.decided(id_tag, decision)
        await self.post(events.AuthorizationResult(id_tag, decision.status, decision.parent_id_tag))

    def _set_connection_timer(self, running: bool) -> None:
        if running:
            assert self._nursery is not None
            self._connection_timer.restart(self._nursery, self._connection_timeout)
        else:
            self._connection_timer.cancel()

    async def _connection_timeout(self) -> None:
        await trio.sleep(self.services.store.get_int("ConnectionTimeOut"))
        await self.post(events.ConnectionTimedOut())

    # --- views -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        truth = self.machine.truth
        reading = self.gun.read_meter()
        tx = self.transaction
        return {
            "id": self.id,
            "status": self.machine.status.value,
            "errorCode": self.machine.error_code.value,
            "transactionId": tx.transaction_id if tx is not None else None,
            "idTag": truth.transaction.id_tag if truth.transaction is not None else None,
            "plugged": truth.plugged,
            "relayClosed": truth.relay_closed,
            "energyWh": round(reading.energy_wh, 1),
            "powerW": round(reading.power_w, 1),
            "currentA": round(reading.current_a, 2),
            "voltageV": round(reading.voltage_v, 1),
            "soc": None if reading.soc is None else round(reading.soc, 1),
            # Every active fault, not only the one the status reports (the most severe).
            "faults": [
                {
                    "kind": kind.value,
                    "errorCode": code.value,
                    "vendorErrorCode": vendor,
                    "detail": detail or None,
                }
                for kind, detail in active_faults(truth)
                for code, vendor in [fault_codes(kind, detail)]
            ],
        }
