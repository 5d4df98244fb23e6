"""One gun's task: the async shell around its pure `ConnectorMachine`.

Everything the gun hears arrives in one inbox (a bounded trio channel): hardware events from the
backend, requests from the OCPP handlers and the local API, and the results of the task's own
timers and workers. The loop feeds each one to the machine and carries out the effects in order
without ever blocking on the outside world: the relay is driven by a worker under a
cancel-scope deadline (a relay that does not confirm in time is a PowerSwitchFailure, not a
hang), an authorization runs as its own task, and transaction messages go to the outbox. The
one effect the loop waits for is a transaction record on disk (the outbox's database write,
in its worker thread): a StartTransaction is stored before the relay is told to close.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

import attrs
import trio
from ocpp.v16 import call
from ocpp.v16.enums import AuthorizationStatus, ReadingContext, UnlockStatus

from dcocpp import idtags
from dcocpp.clock import ocpp_time
from dcocpp.clock.stationclock import StationClock, TransactionClock
from dcocpp.config import ConnectorConfig
from dcocpp.connector import events as ev
from dcocpp.connector.faults import active_faults, fault_codes, fault_report
from dcocpp.connector.machine import ConnectorMachine
from dcocpp.connector.metering import meter_value, seconds_to_next_aligned
from dcocpp.connector.truth import Settings, Truth, kept_for
from dcocpp.hardware import interface as hw
from dcocpp.hardware.registercheck import RegisterRun
from dcocpp.ocpp.authorization import Authorizer, Decision
from dcocpp.ocpp.configuration import ConfigurationStore
from dcocpp.ocpp.control import ConnectorStatus
from dcocpp.ocpp.errors import OcppError
from dcocpp.ocpp.transactions import LocalTransaction, TransactionOutbox
from dcocpp.ocpp.wire import INT32_MAX

log = logging.getLogger(__name__)

# How long the hardware has to confirm a relay command (the PLC retries within it).
RELAY_ACK_DEADLINE = 2.0
# After a relay failure, the last command is repeated this often until the hardware obeys.
RELAY_RETRY_INTERVAL = 10.0
# How often a running transaction's meter reading is persisted (what a PowerLoss stop bills).
METER_PERSIST_INTERVAL = 10.0
LOCK_DEADLINE = 5.0
# OCPP 1.6's integer is 32 bits: the highest meter register, in Wh, its messages can carry.
OCPP_MAX_WH = INT32_MAX
REGISTER_BEYOND_OCPP = "register beyond OCPP 1.6's range"  # CiString50: the fault's detail
# A fault that flaps (a bouncing safety input, a loose PLC connector) is said at most
# FAULT_LINES_PER_WINDOW times per FAULT_LOG_WINDOW; the rest are counted, and one line at the
# end of the window says how many and what the fault is now.
FAULT_LINES_PER_WINDOW = 4
FAULT_LOG_WINDOW = 10.0
INBOX_SIZE = 64

_HARDWARE_EVENTS: dict[type, Callable[[Any], ev.Event]] = {
    hw.CablePlugged: lambda e: ev.Plugged(),
    hw.CableUnplugged: lambda e: ev.Unplugged(),
    hw.EvDemand: lambda e: ev.EvRequesting(e.requesting),
    hw.RelayState: lambda e: ev.RelayConfirmed(e.closed),
    hw.FaultRaised: lambda e: ev.FaultRaised(e.kind, e.detail),
    hw.FaultCleared: lambda e: ev.FaultCleared(e.kind),
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

    event: ev.Event
    done: trio.Event = attrs.field(factory=trio.Event)
    reply: Any = None
    refusal: str | None = None  # IdPresented: why the reader refused the tag
    outcome: _TagWait | None = None  # IdPresented: what became of the tag


@attrs.frozen
class TagOutcome:
    """What a gun made of a tag presented at its reader (`ConnectorTask.present_id`)."""

    id_tag: str
    refused: str | None = None  # refused at the reader, and why (then nothing else applies)
    decision: Decision | None = None  # the authorization's (None: not known in time)
    taken: bool = False  # the gun acted on it: a session for it, or the transaction stopped
    detail: str | None = None  # what the gun did with it, or why not, for the operator


@attrs.define
class _TagWait:
    """A tag presented at the reader, until the machine has taken its authorization's result."""

    id_tag: str
    decision: Decision | None = None
    outcome: TagOutcome | None = None
    done: trio.Event = attrs.field(factory=trio.Event)


class ReservationDesk(Protocol):
    """The station's reservations, as the connectors see them."""

    def wanted(self, connector_id: int) -> ev.ReservationsChanged:
        """The reservations this connector serves now, and whether it is held for the
        connector-0 ones."""
        ...

    def stepped(self, connector_id: int) -> None:
        """The connector's machine took an event: what other guns serve may have changed."""
        ...

    def ended(self, connector_id: int, reservation_id: int, cause: str) -> None:
        """The connector ended a reservation: "used" (its StartTransaction carries it),
        "Faulted" or "Unavailable". In memory: the connector awaits `flush` next."""
        ...

    async def flush(self) -> None:
        """Store the ends of reservations told so far."""
        ...


# An inbox item that only brings the machine's reservations in line with the station's.
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
    nursery holds the relay worker, the metering timers and any authorization in progress,
    which all end with it."""

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
        self.transaction: LocalTransaction | None = None
        # A new boot has no transaction: whatever the relay is, it must be open (a relay
        # found closed, e.g. hardware that outlived the controller without a watchdog, is
        # opened by the worker at once).
        self._relay_target = False
        self._relay_confirmed: bool | None = physical.relay_closed  # None: unknown (failed)
        self._relay_wake = trio.Event()
        self._relay_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._connection_timer: trio.CancelScope | None = None
        self._sampler: trio.CancelScope | None = None
        self._finishing = 0  # transactions whose StopTransaction is not queued yet
        self._settled = trio.Event()
        self._fault_lines: dict[hw.FaultKind, _FaultLines] = {}
        self._beyond_ocpp = False  # the register is above OCPP_MAX_WH (_register_beyond_ocpp)
        self._stepped = trio.Event()  # set (and replaced) after every event the machine takes
        # The current limit the gun's hardware was given (smart charging); None: its maximum.
        # Reported as Current.Offered.
        self.offered_a: float | None = None
        self._resync = trio.Event()  # the station's reservations changed (see resync)
        # Tags presented at the reader whose authorization someone awaits (present_id).
        self._tag_waits: dict[str, _TagWait] = {}
        # Measurand lists that gave no value at all (logged at INFO once each, see _sample).
        self._unmeasured: set[tuple[str, ...]] = set()
        # Meter values outside a transaction: the newest waiting to go, and whether one is
        # being delivered (see _send_without_transaction).
        self._untransacted: dict[str, Any] | None = None
        self._delivering = False
        # Per transaction (local id) until its StopTransaction is queued: the registers it
        # was billed, and whether one was refused (see `_reading`).
        self._billed: dict[int, RegisterRun] = {}
        self._refused: set[int] = set()
        # Per transaction (local id) until its StopTransaction is queued: its timestamps and
        # how long it has run.
        self._times: dict[int, TransactionClock] = {}

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

    async def ask(self, event: ev.Event) -> Any:
        """Put an event in the inbox and wait for the machine's reply (and its effects)."""
        request = _Request(event)
        await self._send.send(request)
        await request.done.wait()
        return request.reply

    async def post(self, event: ev.Event) -> None:
        await self._send.send(event)

    async def present_id(self, id_tag: str, *, wait: float) -> TagOutcome:
        """A tag at the gun's reader, and what the gun made of it: refused at the reader (and
        why), or the authorization's decision, waited for up to `wait` seconds, and whether
        the gun acted on it."""
        request = _Request(ev.IdPresented(id_tag))
        await self._send.send(request)
        await request.done.wait()
        pending = request.outcome
        if pending is None:
            return TagOutcome(id_tag, refused=request.refusal or "the gun takes no tag now")
        with trio.move_on_after(wait):
            await pending.done.wait()
        if pending.outcome is None:
            return TagOutcome(id_tag, detail=f"no decision within {wait:g} s")
        return pending.outcome

    def resync(self) -> None:
        """The station's reservations may have changed: bring the machine in line soon (it is
        also brought in line before every event it takes)."""
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
        tx = self.transaction
        return None if tx is None else self._times[tx.local_id].began()

    async def wait_settled(self) -> None:
        """Until every stopped transaction has its StopTransaction in the outbox."""
        while self._finishing:
            await self._settled.wait()

    async def send_meter_values(self, context: ReadingContext = ReadingContext.trigger) -> None:
        """MeterValues now (TriggerMessage): on the transaction if one runs."""
        measurands = self.services.store.get_list("MeterValuesSampledData")
        tx = self.transaction
        sample = self._sample(measurands, context, self._reading(tx), self._stamp(tx))
        if sample is None:
            return
        if tx is None:
            self._send_without_transaction(sample)
        elif self.services.outbox.holds_meter_values(tx, context):
            # A central system that triggers faster than it takes them: the one waiting
            # answers this trigger too (the outbox keeps every message it is given).
            log.debug("connector %d: a %s sample is waiting already", self.id, context.value)
        else:
            await self.services.outbox.meter_values(tx, [sample])

    # --- the loop --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._relay_worker)
            nursery.start_soon(self._clock_aligned_sampler)
            nursery.start_soon(self._resync_worker)
            self._log_faults(())  # those the hardware reports already
            await self._execute(self.machine.take_effects())
            await self._sync_reservations()  # those restored at boot: reported Reserved at once
            task_status.started()
            async for item in self._inbox:
                await self._handle(item)

    async def _resync_worker(self) -> None:
        while True:
            await self._resync.wait()
            self._resync = trio.Event()
            await self._send.send(_RESYNC)

    async def _sync_reservations(self) -> None:
        """Give the machine the reservations the station keeps for this gun now. Done before
        every event, not only when told: a connector-0 hold that another gun's step has just
        created must already apply to the tag this gun hears next. Storing a reservation's
        end lets other guns step meanwhile: it returns only once no await came after the
        last look."""
        desk = self.services.reservations
        if desk is None:
            return
        while True:
            wanted = desk.wanted(self.id)
            truth = self.machine.truth
            if (truth.reservations, truth.hold_zero) == (wanted.reservations, wanted.hold_zero):
                return
            self.machine.dispatch(wanted)
            effects = self.machine.take_effects()
            await self._note_reservations(effects)
            await self._execute(effects)

    async def _note_reservations(self, effects: list[ev.Effect]) -> None:
        """Tell the station at once (before any await) which reservations ended here, so that
        no other gun serves one that a transaction here has just used; then store that."""
        desk = self.services.reservations
        if desk is None:
            return
        told = False
        for effect in effects:
            if isinstance(effect, ev.StartTransaction) and effect.reservation_id is not None:
                desk.ended(self.id, effect.reservation_id, "used")
                told = True
            elif isinstance(effect, ev.ReservationEnded):
                desk.ended(self.id, effect.reservation_id, effect.cause)
                told = True
        if told:
            await desk.flush()

    async def _handle(self, item: Any) -> None:
        await self._sync_reservations()
        beyond = self._register_beyond_ocpp()
        if beyond is not None:
            await self._handle(beyond)  # first: nothing may start on a register OCPP cannot carry
        if item is _RESYNC:
            return
        request = item if isinstance(item, _Request) else None
        event = request.event if request else item
        if isinstance(event, hw.FaultCleared) or (
            isinstance(event, hw.RelayState) and event.closed == self._relay_target
        ):
            # News that may end a relay failure: the hardware reports the relay as wanted, or
            # a fault gone (a PLC that talks again). The relay worker retries at once.
            self._relay_wake.set()
        translate = _HARDWARE_EVENTS.get(type(event))
        if translate is not None:
            event = translate(event)
        self.machine.settings = self._settings()  # keys may have changed at runtime
        before = self.machine.truth
        refusal = (
            self.machine.reader_refusal(event.id_tag) if isinstance(event, ev.IdPresented) else None
        )
        faults = self.machine.truth.faults
        reply = self.machine.dispatch(event)
        self._log_faults(faults)
        effects = self.machine.take_effects()
        if isinstance(event, ev.AuthorizationResult):
            self._settle_tag(event, before, effects)
        await self._note_reservations(effects)
        if self.services.reservations is not None:
            self.services.reservations.stepped(self.id)
        if any(isinstance(effect, ev.StartTransaction) for effect in effects):
            # The previous transaction's StopTransaction first (it waits for the relay to
            # open to read its final meter): the CSMS must get Stop(old) before Start(new),
            # and the new meterStart must come after the old meterStop.
            await self.wait_settled()
        if isinstance(event, ev.UnlockRequested):
            reply = await self._unlock(reply, effects)
        else:
            await self._execute(effects)
        if request is not None:
            if isinstance(event, ev.IdPresented):
                request.refusal = refusal
                if reply:
                    request.outcome = self._tag_taken(event.id_tag, before, effects)
            request.reply = reply
            request.done.set()
        self._stepped.set()
        self._stepped = trio.Event()

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

    async def wait_truth(self, predicate: Callable[[Truth], bool]) -> None:
        """Until the machine's truth satisfies `predicate` (checked after every event); the
        caller bounds the wait."""
        while not predicate(self.machine.truth):
            await self._stepped.wait()

    async def _execute(self, effects: list[ev.Effect]) -> None:
        """Carry out the machine's effects in order. A StartTransaction is awaited (stored)
        before the effects after it, the relay's among them."""
        for effect in effects:
            match effect:
                case ev.NotifyStatus():
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
                case ev.SwitchRelay(closed=closed):
                    self._relay_target = closed
                    self._relay_wake.set()
                case ev.SetLock(locked=locked):
                    self._spawn(self._drive_lock, locked)
                case ev.Authorize(id_tag=id_tag):
                    self._spawn(self._authorize, id_tag)
                case ev.StartTransaction():
                    await self._start_transaction(effect)
                case ev.StopTransaction():
                    self._stop_transaction(effect)
                case ev.ConnectionTimer(running=running):
                    self._set_connection_timer(running)
                case ev.AvailabilityApplied(operative=operative):
                    self.services.availability_applied(self.id, operative)
                case ev.ReservationEnded():
                    pass  # the station was told at once (_note_reservations)

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    # --- relay -----------------------------------------------------------------------------

    async def _relay_worker(self) -> None:
        """Drive the relay to the latest target; report what the hardware did (or did not)."""
        while True:
            target = self._relay_target
            if target == self._relay_confirmed:
                await self._relay_wake.wait()
                self._relay_wake = trio.Event()
                continue
            failure = await self._command_relay(target)
            if failure is None:
                self._set_relay_confirmed(target)
                await self.post(ev.RelayConfirmed(target))
            else:
                await self._relay_failed(failure)

    async def _command_relay(self, target: bool) -> str | None:
        """One command under the ack deadline; why it failed (None: confirmed)."""
        with trio.move_on_after(RELAY_ACK_DEADLINE):
            try:
                await self.gun.set_relay(target)
            except hw.HardwareError as exc:
                return f"relay refused: {exc}"
            return None
        return f"no {'close' if target else 'open'} confirmation in {RELAY_ACK_DEADLINE:g} s"

    async def _relay_failed(self, detail: str) -> None:
        # The PowerSwitchFailure it raises is logged once (`_log_faults`); not every retry.
        log.debug("connector %d: relay command failed: %s", self.id, detail)
        self._set_relay_confirmed(None)
        await self.post(ev.RelayFailed(detail))
        # Try again after RELAY_RETRY_INTERVAL; at once when the machine wants something new
        # or the hardware reported news that may mean it obeys again, since the failed
        # attempt began (see `_handle`). A relay that confirms clears the PowerSwitchFailure.
        with trio.move_on_after(RELAY_RETRY_INTERVAL):
            await self._relay_wake.wait()
        self._relay_wake = trio.Event()

    def _set_relay_confirmed(self, state: bool | None) -> None:
        self._relay_confirmed = state
        self._relay_changed.set()
        self._relay_changed = trio.Event()

    async def _wait_relay_open(self) -> None:
        """Until the relay is confirmed open (the final meter reading must come after it), or
        the deadline: a relay that does not open is reported by the worker."""
        with trio.move_on_after(RELAY_ACK_DEADLINE):
            while self._relay_confirmed is not False:
                await self._relay_changed.wait()

    # --- lock, authorization, timers -------------------------------------------------------

    async def _drive_lock(self, locked: bool) -> None:
        try:
            with trio.fail_after(LOCK_DEADLINE):
                await self.gun.set_lock(locked)
        except (hw.HardwareError, trio.TooSlowError) as exc:
            await self.post(ev.FaultRaised(hw.FaultKind.LOCK, f"lock: {exc}"[:50]))
            return
        await self.post(ev.LockEngaged() if locked else ev.LockReleased())

    async def _unlock(self, reply: UnlockStatus, effects: list[ev.Effect]) -> UnlockStatus:
        """UnlockConnector answers what the lock did, so the release is awaited here."""
        releases = [e for e in effects if isinstance(e, ev.SetLock) and not e.locked]
        await self._execute([e for e in effects if e not in releases])
        if reply != UnlockStatus.unlocked or not releases:
            return reply
        try:
            with trio.fail_after(LOCK_DEADLINE):
                await self.gun.set_lock(False)
        except (hw.HardwareError, trio.TooSlowError) as exc:
            self._post_later(ev.FaultRaised(hw.FaultKind.LOCK, f"unlock: {exc}"[:50]))
            return UnlockStatus.unlock_failed
        self._post_later(ev.LockReleased())
        return UnlockStatus.unlocked

    def _post_later(self, event: ev.Event) -> None:
        # Not `await self.post`: we are inside the loop, which must not wait on its own inbox.
        self._spawn(self.post, event)

    async def _authorize(self, id_tag: str) -> None:
        decision = await self.services.authorizer.authorize(id_tag)
        log.info(
            "connector %d: %s is %s (%s)", self.id, id_tag, decision.status.value, decision.source
        )
        wait = self._tag_waits.get(id_tag)
        if wait is not None:
            wait.decision = decision
        await self.post(ev.AuthorizationResult(id_tag, decision.status, decision.parent_id_tag))

    # --- what became of a tag at the reader (present_id) -----------------------------------

    def _tag_taken(self, id_tag: str, before: Truth, effects: list[ev.Effect]) -> _TagWait:
        """The reader took `id_tag`: its outcome now when no authorization is needed, else a
        wait that `_settle_tag` ends once the machine has the authorization's result."""
        wait = _TagWait(id_tag)
        if any(isinstance(e, ev.Authorize) and e.id_tag == id_tag for e in effects):
            self._tag_waits[id_tag] = wait
            return wait
        if before.transaction is not None:  # the transaction's own tag: it stops, no Authorize
            decision = Decision(AuthorizationStatus.accepted, source="the transaction's own tag")
            detail = "stops the transaction"
        else:
            assert before.authorized is not None
            decision = Decision(
                AuthorizationStatus.accepted,
                before.authorized.parent_id_tag,
                source="authorized already",
            )
            detail = None
        wait.outcome = TagOutcome(id_tag, decision=decision, taken=True, detail=detail)
        wait.done.set()
        return wait

    def _settle_tag(
        self, result: ev.AuthorizationResult, before: Truth, effects: list[ev.Effect]
    ) -> None:
        """The machine took the authorization result of a tag someone awaits: what it did."""
        wait = self._tag_waits.pop(result.id_tag, None)
        if wait is None:
            return
        accepted = result.status == AuthorizationStatus.accepted
        after = self.machine.truth
        taken, detail = False, None
        if before.transaction is not None and result.id_tag == before.stop_candidate:
            taken = any(isinstance(e, ev.StopTransaction) for e in effects)
            if taken:
                detail = "stops the transaction"
            elif accepted:
                detail = "but not of the transaction's group (parentIdTag): it goes on"
        elif result.id_tag == before.pending_id:
            if accepted:
                holder = after.transaction or after.authorized
                taken = holder is not None and idtags.same(holder.id_tag, result.id_tag)
                if not taken:
                    detail = (
                        "but the gun is reserved for another tag"
                        if kept_for(after)
                        else "but the gun no longer takes it"
                    )
        else:
            detail = "the gun no longer waited for it"
        wait.outcome = TagOutcome(result.id_tag, decision=wait.decision, taken=taken, detail=detail)
        wait.done.set()

    def _set_connection_timer(self, running: bool) -> None:
        if self._connection_timer is not None:
            self._connection_timer.cancel()
            self._connection_timer = None
        if running:
            scope = trio.CancelScope()
            self._connection_timer = scope
            self._spawn(self._connection_timeout, scope)

    async def _connection_timeout(self, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(self.services.store.get_int("ConnectionTimeOut"))
            await self.post(ev.ConnectionTimedOut())

    # --- transactions and meter values -----------------------------------------------------

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
            offered_a=self.offered_a if self.offered_a is not None else self.config.max_current_a,
        )
        if sample is None:
            key = tuple(measurands)
            log.log(
                logging.DEBUG if key in self._unmeasured else logging.INFO,
                "connector %d: none of %s can be measured now: no %s sample",
                self.id,
                ",".join(measurands),
                context.value,
            )
            self._unmeasured.add(key)
        return sample

    def _stamp(self, tx: LocalTransaction | None) -> str:
        """The timestamp of a message now: of transaction `tx`, never earlier than its
        previous one (see `TransactionClock.stamp`)."""
        if tx is None:
            return ocpp_time(self.services.clock.now())
        return self._times[tx.local_id].stamp()

    async def _add_stop_sample(
        self, tx: LocalTransaction, measurands: list[str], context: ReadingContext
    ) -> None:
        """A sample for the StopTransaction's transactionData (StopTxnSampledData /
        StopTxnAlignedData), persisted with the reading it shows."""
        reading = self._reading(tx)
        at = self._stamp(tx)
        sample = self._sample(measurands, context, reading, at)
        if sample is not None:
            await self.services.outbox.add_transaction_data(
                tx, sample, round(reading.energy_wh), at
            )

    def _register_beyond_ocpp(self) -> ev.Event | None:
        """A meter register above OCPP 1.6's integer (2,147,483,647 Wh, about 2.1 GWh) cannot
        be carried by StartTransaction, MeterValues or StopTransaction: the gun is a
        PowerMeterFailure while it lasts (no transaction starts; a running one stops at its
        last reading OCPP can carry), rather than energy nobody bills. The fault event when
        that changes, else None."""
        beyond = self.gun.read_meter().energy_wh > OCPP_MAX_WH
        if beyond == self._beyond_ocpp:
            return None
        self._beyond_ocpp = beyond
        if beyond:
            log.error(
                "connector %d: the meter's register is above %d Wh, the most OCPP 1.6 can"
                " report: no transaction starts until the meter is reset or replaced",
                self.id,
                OCPP_MAX_WH,
            )
            return ev.FaultRaised(hw.FaultKind.METER, REGISTER_BEYOND_OCPP)
        if dict(self.machine.truth.faults).get(hw.FaultKind.METER) == REGISTER_BEYOND_OCPP:
            return ev.FaultCleared(hw.FaultKind.METER)
        return None

    def _reading(self, tx: LocalTransaction | None) -> hw.MeterReading:
        """The meter now, as transaction `tx` may bill it: its register never below one
        already billed (meterStart, MeterValues, stop samples, the persisted reading) nor
        above what the gun's rating can have delivered since (`RegisterRun`), whatever the
        hardware says. The PLC driver believes no other register already (it reports the
        meter failure); this holds for any backend, and a refused register is logged."""
        reading = self.gun.read_meter()
        if tx is None or (run := self._billed.get(tx.local_id)) is None:
            return reading
        now = trio.current_time()
        why = run.doubt(reading.energy_wh, now)
        if why is None and reading.energy_wh > OCPP_MAX_WH:
            why = f"meter register {reading.energy_wh:.0f} Wh beyond what OCPP 1.6 can report"
            self.resync()  # the loop raises the fault (_register_beyond_ocpp) before anything
        if why is None:
            run.add(reading.energy_wh, now)
            return reading
        if tx.local_id not in self._refused:
            self._refused.add(tx.local_id)
            log.error(
                "connector %d: %s: not billed; the transaction bills %.0f Wh at most",
                self.id,
                why,
                run.energy_wh,
            )
        return attrs.evolve(reading, energy_wh=run.energy_wh)

    async def _start_transaction(self, effect: ev.StartTransaction) -> None:
        reading = self.gun.read_meter()
        times = TransactionClock(self.services.clock, f"connector {self.id}")
        tx = await self.services.outbox.start(
            self.id,
            effect.id_tag,
            round(reading.energy_wh),
            times.started_at,
            reservation_id=effect.reservation_id,
        )
        tx.on_confirmed = functools.partial(self._confirmed, tx)
        self.transaction = tx
        self._times[tx.local_id] = times
        self._billed[tx.local_id] = RegisterRun(
            self.config.max_power_w, reading.energy_wh, trio.current_time()
        )
        stop_measurands = self.services.store.get_list("StopTxnSampledData")
        if stop_measurands:
            await self._add_stop_sample(tx, stop_measurands, ReadingContext.transaction_begin)
        log.info(
            "connector %d: transaction started for %s at %d Wh",
            self.id,
            effect.id_tag,
            tx.meter_start,
        )
        scope = trio.CancelScope()
        self._sampler = scope
        self._spawn(self._transaction_timers, tx, scope)

    async def _confirmed(
        self, tx: LocalTransaction, transaction_id: int, id_tag_info: dict[str, Any]
    ) -> None:
        if self.transaction is not tx:
            # Confirmed after it ended (started and stopped offline): its StopTransaction is
            # queued with the id the outbox fills in; the gun's current session is not its.
            log.info(
                "connector %d: transaction %d confirmed (%s) after it ended",
                self.id,
                transaction_id,
                id_tag_info["status"],
            )
            return
        await self.post(
            ev.TransactionConfirmed(
                transaction_id, id_tag_info["status"], id_tag_info.get("parent_id_tag")
            )
        )

    def _stop_transaction(self, effect: ev.StopTransaction) -> None:
        tx = self.transaction
        if tx is None:
            return
        self.transaction = None
        if self._sampler is not None:
            self._sampler.cancel()
        self._finishing += 1
        self._spawn(self._finish, tx, effect)

    async def _finish(self, tx: LocalTransaction, effect: ev.StopTransaction) -> None:
        try:
            await self._queue_stop(tx, effect)
        finally:
            self._billed.pop(tx.local_id, None)
            self._refused.discard(tx.local_id)
            self._times.pop(tx.local_id, None)
            self._finishing -= 1
            self._settled.set()
            self._settled = trio.Event()

    async def _queue_stop(self, tx: LocalTransaction, effect: ev.StopTransaction) -> None:
        # The relay is opening (the machine commanded it first): bill up to the last Wh.
        await self._wait_relay_open()
        reading = self._reading(tx)
        stop_measurands = self.services.store.get_list("StopTxnSampledData")
        if stop_measurands:
            await self._add_stop_sample(tx, stop_measurands, ReadingContext.transaction_end)
        await self.services.outbox.stop(
            tx,
            round(reading.energy_wh),
            self._stamp(tx),
            effect.reason.value,
            effect.id_tag,
        )
        log.info(
            "connector %d: transaction stopped (%s) at %d Wh, %d Wh delivered",
            self.id,
            effect.reason.value,
            round(reading.energy_wh),
            round(reading.energy_wh) - tx.meter_start,
        )

    async def _transaction_timers(self, tx: LocalTransaction, scope: trio.CancelScope) -> None:
        """While the transaction runs (until `scope` is cancelled at its stop): the periodic
        meter values and the persisted meter reading."""
        with scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._periodic_sampler, tx)
                nursery.start_soon(self._keep_meter_reading, tx)

    async def _keep_meter_reading(self, tx: LocalTransaction) -> None:
        """Persist the meter reading every METER_PERSIST_INTERVAL: after a power cut the
        transaction is stopped (PowerLoss) at the last one persisted."""
        while True:
            await trio.sleep(METER_PERSIST_INTERVAL)
            reading = self._reading(tx)
            await self.services.outbox.record_meter(tx, round(reading.energy_wh), self._stamp(tx))

    async def _periodic_sampler(self, tx: LocalTransaction) -> None:
        """MeterValueSampleInterval while the transaction runs (Sample.Periodic)."""
        store = self.services.store
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
                self._sample(measurands, periodic, self._reading(tx), self._stamp(tx))
                if measurands
                else None
            )
            if sample is not None:
                await self.services.outbox.meter_values(tx, [sample])
            stop_measurands = store.get_list("StopTxnSampledData")
            if stop_measurands:
                await self._add_stop_sample(tx, stop_measurands, ReadingContext.sample_periodic)

    async def _clock_aligned_sampler(self) -> None:
        """ClockAlignedDataInterval, aligned to midnight UTC (Sample.Clock) by the station's
        clock: sleeping on the monotonic clock, aligned again when the wall clock steps."""
        store = self.services.store
        while True:
            interval = store.get_int("ClockAlignedDataInterval")
            wait = seconds_to_next_aligned(self.services.clock.now(), interval) if interval else 0
            deadline = trio.current_time() + wait if interval > 0 else float("inf")
            if not await self._sleep_unless_changed(
                "ClockAlignedDataInterval", deadline, clock_steps=True
            ):
                continue  # a new interval, or a new time: aligned again at once
            measurands = store.get_list("MeterValuesAlignedData")
            tx = self.transaction
            sample = (
                self._sample(
                    measurands, ReadingContext.sample_clock, self._reading(tx), self._stamp(tx)
                )
                if measurands
                else None
            )
            if sample is not None:
                if tx is not None:
                    await self.services.outbox.meter_values(tx, [sample])
                else:
                    self._send_without_transaction(sample)
            stop_measurands = store.get_list("StopTxnAlignedData")
            if tx is not None and stop_measurands:
                await self._add_stop_sample(tx, stop_measurands, ReadingContext.sample_clock)

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

            unsubscribe = self.services.store.subscribe(key, on_change)
            unsubscribe_steps = (
                self.services.clock.subscribe(on_change) if clock_steps else lambda: None
            )
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
            self._delivering = True
            self._spawn(self._deliver_untransacted)

    async def _deliver_untransacted(self) -> None:
        session = self.services.outbox.session
        try:
            while self._untransacted is not None:
                sample, self._untransacted = self._untransacted, None
                try:
                    await session.call(call.MeterValues(connector_id=self.id, meter_value=[sample]))
                except OcppError as exc:
                    log.info("connector %d: meter values not sent (%s)", self.id, exc)
        finally:
            self._delivering = False

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
