"""One gun as an explicit state machine: pure, synchronous, no I/O. Events in, effects out.

The machine keeps two things:

- the *truth* (`dcocpp/connector/truth.py`): what is physically and commercially the case —
  cable plugged, EV asking for energy, relay commanded and confirmed, who is authorized, the
  running transaction, active faults, availability, the reservations the gun serves;
- the *reported status*: one of the OCPP 1.6 ChargePointStatus values, held by a `transitions`
  Machine (`dcocpp/connector/statechart.py`) whose states are those statuses and whose
  triggers are the status rules (`dcocpp/connector/rules.py`).

Every event updates the truth first; the first status rule that holds for the new truth then
names the status and the transition that reaches it. Faulted is the first rule, so it is an
overlay: while any fault is active the status is Faulted, and clearing the last one leads to
whatever the rules say then. A change the machine has no transition for is a bug and raises
`MachineInconsistency`; the exhaustive exploration and the property tests show it never does.

Safety lives here, not in the callers: the relay is only ever commanded closed while a
transaction runs on a plugged EV with no fault active (no safety, communication, meter, relay
or lock fault), and any fault commands it open and stops the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs
from ocpp.v16.enums import (
    AuthorizationStatus,
    ChargePointErrorCode,
    ChargePointStatus,
    Reason,
    UnlockStatus,
)
from transitions import MachineError

from dcocpp import idtags
from dcocpp.connector import events
from dcocpp.connector.faults import FAULTS, fault_report
from dcocpp.connector.rules import Rule, derive_status, pass_through, rule_for
from dcocpp.connector.statechart import build_machine
from dcocpp.connector.truth import (
    Authorized,
    Settings,
    Transaction,
    Truth,
    kept_for,
    relay_may_close,
)
from dcocpp.hardware.interface import FaultKind

S = ChargePointStatus
_STATUS = {s.value: s for s in ChargePointStatus}


class MachineInconsistency(RuntimeError):
    """The truth demands a status change the machine has no transition for (a bug)."""


@attrs.frozen
class Step:
    """One status change: the rule that now holds took the machine from `source` to its
    status."""

    source: ChargePointStatus
    rule: Rule

    @property
    def dest(self) -> ChargePointStatus:
        return self.rule.status


class ConnectorMachine:
    """A connector's truth and reported status. `dispatch(event)` returns the event's reply (see
    the event classes) and queues effects, which the caller takes with `take_effects()`;
    `steps` are the status changes the last dispatch made, each with the rule behind it."""

    state: str  # the reported ChargePointStatus value, kept by transitions

    def __init__(
        self,
        connector_id: int,
        settings: Settings | None = None,
        truth: Truth | None = None,
    ):
        self.connector_id = connector_id
        self.settings = settings or Settings()
        self.truth = truth or Truth()
        self.steps: list[Step] = []
        self._effects: list[events.Effect] = []
        self._reported: tuple[ChargePointStatus, ChargePointErrorCode] | None = None
        self.machine = build_machine(self, initial=derive_status(self.truth))
        self._handlers: dict[type, Callable[[Any], Any]] = {
            events.Plugged: self._plugged,
            events.Unplugged: self._unplugged,
            events.EvRequesting: self._ev_requesting,
            events.IdPresented: self._id_presented,
            events.RemoteStartRequested: self._remote_start,
            events.AuthorizationResult: self._authorization_result,
            events.ConnectionTimedOut: self._connection_timed_out,
            events.RelayConfirmed: self._relay_confirmed,
            events.RelayFailed: self._relay_failed,
            events.LockEngaged: self._lock_engaged,
            events.LockReleased: self._lock_released,
            events.EvseSuspended: self._evse_suspended,
            events.FaultRaised: self._fault_raised,
            events.FaultCleared: self._fault_cleared,
            events.AvailabilityChanged: self._availability_changed,
            events.MaintenanceHold: self._maintenance_hold,
            events.StopRequested: self._stop_requested,
            events.TransactionConfirmed: self._transaction_confirmed,
            events.UnlockRequested: self._unlock_requested,
            events.ReservationsChanged: self._reservations_changed,
        }
        self._settle()

    # --- public ----------------------------------------------------------------------------

    @property
    def status(self) -> ChargePointStatus:
        return _STATUS[self.state]

    @property
    def error_code(self) -> ChargePointErrorCode:
        return fault_report(self.truth)[0]

    @property
    def busy(self) -> bool:
        """A session is under way: availability changes wait (Scheduled)."""
        return self.truth.transaction is not None or S.preparing in (
            derive_status(self.truth),
            self.status,
        )

    def dispatch(self, event: events.Event) -> Any:
        self.steps = []
        reply = self._handlers[type(event)](event)
        self._settle()
        return reply

    def restore(self, truth: Truth) -> None:
        """Jump to a known truth (a restart, or a test) without reporting anything."""
        self.truth = truth
        status = derive_status(truth)
        self.machine.set_state(status.value)
        self._reported = (status, fault_report(truth)[0])
        self._effects.clear()
        self.steps = []

    def take_effects(self) -> list[events.Effect]:
        effects, self._effects = self._effects, []
        return effects

    # --- helpers ---------------------------------------------------------------------------

    def _update(self, **changes: Any) -> None:
        self.truth = attrs.evolve(self.truth, **changes)

    def _emit(self, effect: events.Effect) -> None:
        self._effects.append(effect)

    def _settle(self) -> None:
        """Bring relay, availability, reservations and status in line with the truth."""
        t = self.truth
        if t.finishing and not t.plugged and not t.locked:
            self._update(finishing=False)
        want_closed = relay_may_close(self.truth)
        if want_closed != self.truth.relay_commanded:
            self._update(relay_commanded=want_closed)
            self._emit(events.SwitchRelay(want_closed))
        self._end_reservations_if_unusable()
        self._move()
        # A scheduled availability change applies once the connector is free. OCPP allows no
        # Preparing -> Unavailable, so a connector leaving Preparing gets there in two steps.
        if self.truth.scheduled is not None and not self.busy:
            operative = self.truth.scheduled
            self._update(operative=operative, scheduled=None)
            if not operative:
                self._update(finishing=False)  # Unavailable -> Finishing is not allowed either
            self._emit(events.AvailabilityApplied(operative))
            self._end_reservations_if_unusable()
            self._move()
        tx = self.truth.transaction
        if tx is not None and not tx.past_preparing and self.status != S.preparing:
            self._update(transaction=attrs.evolve(tx, past_preparing=True))

    def _end_reservations_if_unusable(self) -> None:
        """OCPP 1.6 5.13: a reservation ends when its connector becomes Faulted or Unavailable.
        The connector-0 ones are the station's: it keeps them on its other guns."""
        t = self.truth
        if not (t.faults or not t.operative or t.maintenance):
            return
        own = [r for r in t.reservations if not r.any_connector]
        if own:
            self._update(reservations=tuple(r for r in t.reservations if r.any_connector))
            cause = S.faulted.value if t.faults else S.unavailable.value
            for reservation in own:
                self._emit(events.ReservationEnded(reservation.reservation_id, cause))

    def _move(self) -> None:
        """Report the status of the first rule that holds, reached by the transition named
        after that rule. A change OCPP 1.6 does not allow passes through the status it allows
        in between (`rules.PASS_THROUGH`), reported like any other."""
        rule = rule_for(self.truth)
        if rule.status != self.status:
            via = pass_through(self.status, rule.status)
            if via is not None:
                self._take(via)
            self._take(rule)
        else:
            self._report()

    def _take(self, rule: Rule) -> None:
        source = self.status
        try:
            self.trigger(rule.cause)  # type: ignore[attr-defined]
        except MachineError as error:
            raise MachineInconsistency(
                f"connector {self.connector_id}: rule {rule.number} ({rule.cause}) would change "
                f"{source.value} to {rule.status.value}, which the statechart does not allow "
                f"(truth: {self.truth})"
            ) from error
        self.steps.append(Step(source, rule))
        self._report()

    def _report(self) -> None:
        code, vendor, info = fault_report(self.truth)
        if self._reported != (self.status, code):
            self._reported = (self.status, code)
            self._emit(events.NotifyStatus(self.status, code, info, vendor))

    def _try_start(self) -> None:
        t = self.truth
        auth = t.authorized
        if (
            auth is None
            or not t.plugged
            or t.transaction is not None
            or t.faults
            or not t.operative
            or t.maintenance
            or t.finishing
            or self.settings.closing
        ):
            return
        if not self.settings.fixed_cable and not t.locked:
            # A detachable cable is locked before the transaction starts: a lock that fails
            # (ConnectorLockFailure) must leave no transaction behind.
            if not t.locking:
                self._update(locking=True)
                self._emit(events.SetLock(True))
            return
        # The reservation this transaction uses ends with it (5.13): its id goes in the
        # StartTransaction; the one this gun is kept for first, else a connector-0 one.
        reservation = next(
            (
                r
                for r in (*kept_for(t), *t.reservations)
                if r.admits(auth.id_tag, auth.parent_id_tag)
            ),
            None,
        )
        self._update(
            authorized=None,
            transaction=Transaction(auth.id_tag, auth.parent_id_tag),
            reservations=tuple(r for r in t.reservations if r != reservation),
        )
        self._emit(
            events.StartTransaction(
                auth.id_tag,
                auth.parent_id_tag,
                None if reservation is None else reservation.reservation_id,
            )
        )

    def _stop(self, reason: Reason, id_tag: str | None = None) -> None:
        t = self.truth
        if t.transaction is None:
            return
        # Energy stops before the transaction record does: the relay opens in _settle, and the
        # task executes SwitchRelay before StopTransaction so the final reading is the last one.
        self._update(transaction=None, stop_candidate=None, evse_suspended=False)
        keep_locked = reason == Reason.ev_disconnected and not self.settings.unlock_on_ev_disconnect
        if t.locked and not keep_locked and FaultKind.LOCK not in t.fault_kinds:
            self._emit(events.SetLock(False))  # locked stays True until LockReleased
        self._update(finishing=self.truth.plugged or self.truth.locked)
        want_closed = relay_may_close(self.truth)
        if want_closed != self.truth.relay_commanded:
            self._update(relay_commanded=want_closed)
            self._emit(events.SwitchRelay(want_closed))
        self._emit(events.StopTransaction(reason, id_tag))

    # --- event handlers --------------------------------------------------------------------

    def _plugged(self, _: events.Plugged) -> None:
        if self.truth.plugged:
            return
        self._update(plugged=True)
        if self.truth.authorized is not None:
            self._emit(events.ConnectionTimer(False))
        self._try_start()

    def _unplugged(self, _: events.Unplugged) -> None:
        if not self.truth.plugged:
            return
        self._update(plugged=False, ev_requesting=False)
        if self.truth.transaction is not None and self.settings.stop_on_ev_disconnect:
            self._stop(Reason.ev_disconnected)
        elif self.truth.authorized is not None and self.truth.transaction is None:
            # Authorized, plugged, never started (a fault): the EV left; so does the session.
            self._update(authorized=None, locking=False)

    def _ev_requesting(self, event: events.EvRequesting) -> None:
        if self.truth.plugged:
            self._update(ev_requesting=event.requesting)

    def reader_refusal(self, id_tag: str) -> str | None:
        """Why the gun's reader refuses `id_tag` now, for the operator (None: it takes it, to
        start or to stop a session)."""
        t = self.truth
        if t.transaction is not None:
            return None
        # No session can start now: the tag is refused, not kept.
        if t.faults:
            return f"the gun is Faulted ({', '.join(detail or kind for kind, detail in t.faults)})"
        if not t.operative:
            return "the gun is Unavailable"
        if t.maintenance:
            return "the gun is held for a firmware install"
        if t.finishing:
            return "the gun is Finishing (unplug the EV first)"
        if t.pending_id is not None:
            return f"the authorization of {t.pending_id} is still pending"
        if t.authorized is not None and idtags.same(t.authorized.id_tag, id_tag):
            return None
        if not self._may_authorize(id_tag):
            # Refused without asking anyone (TC_046).
            ids = ", ".join(str(r.reservation_id) for r in kept_for(t))
            return f"the gun is Reserved for another tag (reservation {ids})"
        return None

    def _id_presented(self, event: events.IdPresented) -> bool:
        t = self.truth
        if t.transaction is not None:
            if idtags.same(event.id_tag, t.transaction.id_tag):
                self._stop(Reason.local, event.id_tag)  # the same tag stops without Authorize
            else:
                self._update(stop_candidate=event.id_tag)
                self._emit(events.Authorize(event.id_tag))
            return True
        if self.reader_refusal(event.id_tag) is not None:
            return False
        if t.authorized is not None and idtags.same(t.authorized.id_tag, event.id_tag):
            return True
        self._update(pending_id=event.id_tag)
        self._emit(events.Authorize(event.id_tag))
        return True

    def _remote_start(self, event: events.RemoteStartRequested) -> bool:
        t = self.truth
        if (
            t.transaction is not None
            or t.faults
            or not t.operative
            or t.maintenance
            or t.finishing
            or t.pending_id is not None
            or t.authorized is not None
            or not self._may_authorize(event.id_tag)
        ):
            return False
        kept = kept_for(t)
        # A tag the reservation does not name may still be of its parentIdTag: only an
        # authorization tells, whatever AuthorizeRemoteTxRequests says (5.13).
        authorize = event.authorize or (
            bool(kept) and not any(r.admits(event.id_tag) for r in kept)
        )
        if authorize:
            self._update(pending_id=event.id_tag)
            self._emit(events.Authorize(event.id_tag))
        else:
            self._accept(Authorized(event.id_tag))
        return True

    def _may_authorize(self, id_tag: str) -> bool:
        """Whether a tag may try to start here. On a reserved gun only one the reservation may
        admit: the one it names, or (when it names a parentIdTag) any, whose authorization then
        tells its parentIdTag (OCPP 1.6 5.13: look it up, else Authorize.req)."""
        kept = kept_for(self.truth)
        return not kept or any(r.admits(id_tag) or r.parent_id_tag is not None for r in kept)

    def _accept(self, auth: Authorized) -> None:
        kept = kept_for(self.truth)
        if kept and not any(r.admits(auth.id_tag, auth.parent_id_tag) for r in kept):
            return  # accepted, but the gun is reserved for someone else
        self._update(authorized=auth)
        if not self.truth.plugged:
            self._emit(events.ConnectionTimer(True))
        self._try_start()

    def _authorization_result(self, event: events.AuthorizationResult) -> None:
        t = self.truth
        accepted = event.status == AuthorizationStatus.accepted
        if t.transaction is not None and event.id_tag == t.stop_candidate:
            self._update(stop_candidate=None)
            parent = t.transaction.parent_id_tag
            if accepted and idtags.same(event.parent_id_tag, parent):
                self._stop(Reason.local, event.id_tag)  # same group (parentIdTag) may stop
        elif event.id_tag == t.pending_id:
            self._update(pending_id=None)
            if accepted and t.transaction is None:
                self._accept(Authorized(event.id_tag, event.parent_id_tag))

    def _connection_timed_out(self, _: events.ConnectionTimedOut) -> None:
        if self.truth.authorized is not None and not self.truth.plugged:
            self._update(authorized=None)

    def _relay_confirmed(self, event: events.RelayConfirmed) -> None:
        self._update(relay_closed=event.closed)
        if (
            event.closed == self.truth.relay_commanded
            and FaultKind.POWER_SWITCH in self.truth.fault_kinds
        ):
            self._clear_fault(FaultKind.POWER_SWITCH)  # the relay does as told again

    def _relay_failed(self, event: events.RelayFailed) -> None:
        if FaultKind.COMMUNICATION in self.truth.fault_kinds:
            # No confirmation is expected from hardware we cannot talk to: the link is the
            # fault (already reported); the relay worker retries and confirms once it is back.
            return
        self._raise_fault(FaultKind.POWER_SWITCH, event.detail)

    def _lock_engaged(self, _: events.LockEngaged) -> None:
        if not self.truth.locking:
            return  # an answer to a request nobody waits for any more
        self._update(locking=False, locked=True)
        self._try_start()
        if self.truth.transaction is None and self.truth.authorized is None:
            self._update(locked=False)  # the session went away meanwhile: free the cable
            self._emit(events.SetLock(False))

    def _lock_released(self, _: events.LockReleased) -> None:
        self._update(locked=False)

    def _evse_suspended(self, event: events.EvseSuspended) -> None:
        self._update(evse_suspended=event.suspended)

    def _fault_raised(self, event: events.FaultRaised) -> None:
        self._raise_fault(event.kind, event.detail)

    def _raise_fault(self, kind: FaultKind, detail: str) -> None:
        if kind in self.truth.fault_kinds:
            return
        self._update(faults=(*self.truth.faults, (kind, detail)), locking=False)
        self._stop(FAULTS[kind][2])

    def _fault_cleared(self, event: events.FaultCleared) -> None:
        self._clear_fault(event.kind)

    def _clear_fault(self, kind: FaultKind) -> None:
        self._update(faults=tuple(f for f in self.truth.faults if f[0] != kind))
        self._try_start()

    def _availability_changed(self, event: events.AvailabilityChanged) -> str:
        if self.busy:
            self._update(
                scheduled=None if event.operative == self.truth.operative else event.operative
            )
            return "Scheduled" if self.truth.scheduled is not None else "Accepted"
        self._update(operative=event.operative, scheduled=None)
        if not event.operative:
            self._update(finishing=False)  # Unavailable -> Finishing is not allowed
        if event.operative:
            self._try_start()
        return "Accepted"

    def _maintenance_hold(self, event: events.MaintenanceHold) -> None:
        self._update(maintenance=event.held)
        if not event.held:
            self._try_start()

    def _stop_requested(self, event: events.StopRequested) -> bool:
        if self.truth.transaction is None:
            return False
        self._stop(event.reason, event.id_tag)
        return True

    def _transaction_confirmed(self, event: events.TransactionConfirmed) -> None:
        tx = self.truth.transaction
        if tx is None:
            return
        # The parent from any idTagInfo counts for stopping (3.5): a remote start asks nobody,
        # and an Authorize.conf need not carry it.
        parent = event.parent_id_tag or tx.parent_id_tag
        self._update(
            transaction=attrs.evolve(tx, transaction_id=event.transaction_id, parent_id_tag=parent)
        )
        if event.status != AuthorizationStatus.accepted:
            if self.settings.stop_on_invalid_id:
                self._stop(Reason.de_authorized)
            else:
                tx = self.truth.transaction
                assert tx is not None
                self._update(transaction=attrs.evolve(tx, deauthorized=True))

    def _reservations_changed(self, event: events.ReservationsChanged) -> None:
        self._update(reservations=event.reservations, hold_zero=event.hold_zero)
        auth = self.truth.authorized
        kept = kept_for(self.truth)
        if (
            auth is not None
            and kept
            and not any(r.admits(auth.id_tag, auth.parent_id_tag) for r in kept)
        ):
            self._update(authorized=None)  # now reserved for someone else (the station avoids it)

    def _unlock_requested(self, _: events.UnlockRequested) -> UnlockStatus:
        if self.settings.fixed_cable:
            return UnlockStatus.not_supported
        if FaultKind.LOCK in self.truth.fault_kinds:
            return UnlockStatus.unlock_failed
        if self.truth.transaction is not None:
            self._stop(Reason.unlock_command)  # releases the lock too
        elif self.truth.locked:
            self._emit(events.SetLock(False))
        return UnlockStatus.unlocked


def replay(machine: ConnectorMachine, happened: Iterable[events.Event]) -> list[events.Effect]:
    """Dispatch events in order and return every effect (handy in tests and tools)."""
    effects: list[events.Effect] = []
    for event in happened:
        machine.dispatch(event)
        effects.extend(machine.take_effects())
    return effects
