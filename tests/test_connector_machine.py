"""The pure connector machine: hypothesis-driven invariants and the behaviours the conformance
cases rely on (its status rules and statechart: tests/test_connector_rules.py)."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from ocpp.v16.enums import (
    AuthorizationStatus,
    ChargePointErrorCode,
    ChargePointStatus,
    Reason,
    UnlockStatus,
)

from dcocpp.connector import events
from dcocpp.connector.machine import ConnectorMachine, replay
from dcocpp.connector.rules import derive_status
from dcocpp.connector.truth import Settings, Truth, kept_for, relay_may_close
from dcocpp.hardware.interface import FaultKind
from dcocpp.ocpp.statuses import allowed_transitions

ALLOWED = allowed_transitions("connector")
S = ChargePointStatus
ACCEPTED, INVALID = AuthorizationStatus.accepted, AuthorizationStatus.invalid


def statuses(effects: list[events.Effect]) -> list[str]:
    return [e.status.value for e in effects if isinstance(e, events.NotifyStatus)]


# --- scenarios ----------------------------------------------------------------------------------


def fresh(machine_settings: Settings | None = None) -> ConnectorMachine:
    """A machine whose initial status notification was already taken."""
    machine = ConnectorMachine(1, machine_settings)
    machine.take_effects()
    return machine


def started(machine: ConnectorMachine, tag: str = "TAG1") -> list[events.Effect]:
    return replay(
        machine,
        [
            events.Plugged(),
            events.EvRequesting(True),
            events.IdPresented(tag),
            events.AuthorizationResult(tag, ACCEPTED, "GROUP"),
            events.LockEngaged(),  # a no-op with a fixed cable
            events.RelayConfirmed(True),
        ],
    )


def test_plug_in_first_session_effects() -> None:
    machine = ConnectorMachine(1)
    assert machine.take_effects() == [events.NotifyStatus(S.available)]
    effects = started(machine)
    assert effects == [
        events.NotifyStatus(S.preparing),
        events.Authorize("TAG1"),
        events.StartTransaction("TAG1", "GROUP"),
        events.SwitchRelay(True),
        events.NotifyStatus(S.charging),
    ]


def test_same_tag_stops_without_authorize_and_different_tag_needs_the_parent() -> None:
    machine = fresh()
    started(machine)
    assert replay(machine, [events.IdPresented("OTHER")]) == [events.Authorize("OTHER")]
    # Accepted but not in the same group: the session goes on.
    assert replay(machine, [events.AuthorizationResult("OTHER", ACCEPTED, "ELSE")]) == []
    replay(machine, [events.IdPresented("OTHER2")])
    effects = replay(machine, [events.AuthorizationResult("OTHER2", ACCEPTED, "GROUP")])
    assert events.StopTransaction(Reason.local, "OTHER2") in effects
    machine = fresh()
    started(machine)
    effects = replay(machine, [events.IdPresented("TAG1")])
    assert effects == [
        events.SwitchRelay(False),
        events.StopTransaction(Reason.local, "TAG1"),
        events.NotifyStatus(S.finishing),
    ]


def test_parent_from_the_start_confirmation_lets_its_group_stop() -> None:
    """A remote start is authorized by nobody: the StartTransaction.conf's idTagInfo is the
    first to tell the parentIdTag, and it counts for stopping (3.5, TC_069)."""
    machine = fresh()
    replay(machine, [events.Plugged(), events.RemoteStartRequested("TAG1", False)])
    assert machine.truth.transaction is not None
    assert machine.truth.transaction.parent_id_tag is None
    replay(machine, [events.TransactionConfirmed(7, ACCEPTED, "GROUP")])
    replay(machine, [events.IdPresented("OTHER")])
    effects = replay(machine, [events.AuthorizationResult("OTHER", ACCEPTED, "group")])
    assert events.StopTransaction(Reason.local, "OTHER") in effects
    # A confirmation without a parent does not forget the one the authorization told.
    machine = fresh()
    started(machine)
    replay(machine, [events.TransactionConfirmed(7, ACCEPTED), events.IdPresented("OTHER")])
    effects = replay(machine, [events.AuthorizationResult("OTHER", ACCEPTED, "GROUP")])
    assert events.StopTransaction(Reason.local, "OTHER") in effects


def test_id_tags_are_case_insensitive() -> None:
    """OCPP 1.6: an idTag is case-insensitive. The start's tag in other letters stops the
    session without an Authorize, and a parentIdTag in other letters is the same group."""
    machine = fresh()
    started(machine)
    effects = replay(machine, [events.IdPresented("tag1")])
    assert events.StopTransaction(Reason.local, "tag1") in effects
    machine = fresh()
    started(machine)
    replay(machine, [events.IdPresented("OTHER")])
    effects = replay(machine, [events.AuthorizationResult("OTHER", ACCEPTED, "group")])
    assert events.StopTransaction(Reason.local, "OTHER") in effects
    reservation = events.Reservation(7, "Holder", parent_id_tag="Fleet")
    assert reservation.admits("HOLDER")
    assert reservation.admits("someone", "FLEET") and reservation.admits("fleet")
    assert not reservation.admits("someone", "other")


def test_fault_during_charging_stops_and_clearing_restores_the_truth() -> None:
    machine = fresh()
    started(machine)
    effects = replay(machine, [events.FaultRaised(FaultKind.EMERGENCY_STOP, "pressed")])
    assert effects == [
        events.SwitchRelay(False),
        events.StopTransaction(Reason.emergency_stop),
        events.NotifyStatus(
            S.faulted, ChargePointErrorCode.other_error, "pressed", "EmergencyStop"
        ),
    ]
    assert replay(machine, [events.FaultCleared(FaultKind.EMERGENCY_STOP)]) == [
        events.NotifyStatus(S.finishing)
    ]


def test_authorized_plugged_ev_charges_when_the_fault_clears() -> None:
    machine = fresh()
    # Authorized first, then a fault, then the EV: nothing may start while the fault lasts.
    replay(
        machine,
        [
            events.IdPresented("T"),
            events.AuthorizationResult("T", ACCEPTED),
            events.FaultRaised(FaultKind.EARTH_FAULT, "earth"),
        ],
    )
    effects = replay(machine, [events.Plugged(), events.EvRequesting(True)])
    assert not any(isinstance(e, events.StartTransaction) for e in effects)  # TC_041
    assert machine.dispatch(events.IdPresented("OTHER")) is False  # no new tag while faulted
    effects = replay(
        machine, [events.FaultCleared(FaultKind.EARTH_FAULT), events.RelayConfirmed(True)]
    )
    assert statuses(effects) == ["Preparing", "Charging"]
    assert events.StartTransaction("T") in effects


def test_detachable_cable_is_locked_before_the_transaction_starts() -> None:
    machine = fresh(Settings(fixed_cable=False))
    effects = replay(
        machine,
        [events.Plugged(), events.IdPresented("T"), events.AuthorizationResult("T", ACCEPTED)],
    )
    assert events.SetLock(True) in effects
    assert not any(isinstance(e, events.StartTransaction) for e in effects)
    # TC_024: the lock fails: Faulted ConnectorLockFailure and no transaction at all.
    effects = replay(machine, [events.FaultRaised(FaultKind.LOCK, "stuck")])
    assert not any(isinstance(e, events.StopTransaction | events.StartTransaction) for e in effects)
    assert (machine.status, machine.error_code) == (S.faulted, "ConnectorLockFailure")
    machine = fresh(Settings(fixed_cable=False))
    replay(
        machine,
        [events.Plugged(), events.IdPresented("T"), events.AuthorizationResult("T", ACCEPTED)],
    )
    assert events.StartTransaction("T") in replay(machine, [events.LockEngaged()])


@pytest.mark.parametrize(
    ("kind", "code", "vendor", "reason"),
    [
        (FaultKind.EMERGENCY_STOP, "OtherError", "EmergencyStop", Reason.emergency_stop),
        (FaultKind.EARTH_FAULT, "GroundFailure", None, Reason.other),
        (FaultKind.COMMUNICATION, "InternalError", "PLC 3 communication lost", Reason.other),
        (FaultKind.METER, "PowerMeterFailure", None, Reason.other),
        (FaultKind.POWER_SWITCH, "PowerSwitchFailure", None, Reason.other),
        (FaultKind.LOCK, "ConnectorLockFailure", None, Reason.other),
    ],
)
def test_fault_mapping(kind: FaultKind, code: str, vendor: str | None, reason: Reason) -> None:
    machine = fresh()
    started(machine)
    detail = "PLC 3 communication lost" if kind == FaultKind.COMMUNICATION else "why"
    effects = replay(machine, [events.FaultRaised(kind, detail)])
    assert events.StopTransaction(reason) in effects
    notify = [e for e in effects if isinstance(e, events.NotifyStatus)][-1]
    assert (notify.status, notify.error_code, notify.vendor_error_code) == (S.faulted, code, vendor)


def test_several_faults_report_the_most_severe_and_clear_one_by_one() -> None:
    machine = fresh()
    effects = replay(
        machine,
        [
            events.FaultRaised(FaultKind.METER, "stale"),
            events.FaultRaised(FaultKind.EMERGENCY_STOP, "pressed"),
        ],
    )
    codes = [e.error_code for e in effects if isinstance(e, events.NotifyStatus)]
    assert codes == ["PowerMeterFailure", "OtherError"]
    effects = replay(machine, [events.FaultCleared(FaultKind.EMERGENCY_STOP)])
    assert [(e.status, e.error_code) for e in effects] == [(S.faulted, "PowerMeterFailure")]
    assert statuses(replay(machine, [events.FaultCleared(FaultKind.METER)])) == ["Available"]


def test_connection_timeout_only_without_ev() -> None:
    machine = fresh()
    effects = replay(machine, [events.RemoteStartRequested("R", authorize=False)])
    assert effects == [events.ConnectionTimer(True), events.NotifyStatus(S.preparing)]
    assert statuses(replay(machine, [events.ConnectionTimedOut()])) == ["Available"]
    machine = fresh()
    replay(machine, [events.Plugged(), events.ConnectionTimedOut()])
    assert machine.status == S.preparing


def test_remote_start_rejected_when_busy_faulted_or_unavailable() -> None:
    machine = fresh()
    started(machine)
    assert machine.dispatch(events.RemoteStartRequested("X", authorize=False)) is False
    machine = fresh()
    replay(machine, [events.FaultRaised(FaultKind.METER, "")])
    assert machine.dispatch(events.RemoteStartRequested("X", authorize=False)) is False
    machine = fresh()
    replay(machine, [events.AvailabilityChanged(False)])
    assert machine.dispatch(events.RemoteStartRequested("X", authorize=False)) is False


def test_availability_is_scheduled_while_busy_and_applied_after() -> None:
    machine = fresh()
    started(machine)
    assert machine.dispatch(events.AvailabilityChanged(False)) == "Scheduled"
    assert machine.take_effects() == []
    effects = replay(machine, [events.StopRequested(Reason.remote)])
    assert statuses(effects) == ["Finishing", "Unavailable"]
    assert events.AvailabilityApplied(False) in effects


def test_ev_side_disconnect_variants() -> None:
    # TC_005_1: detachable cable, unlock on disconnect: Finishing until the lock releases.
    machine = fresh(Settings(fixed_cable=False))
    started(machine)
    effects = replay(machine, [events.Unplugged()])
    assert (
        events.StopTransaction(Reason.ev_disconnected) in effects
        and events.SetLock(False) in effects
    )
    assert statuses(effects) == ["Finishing"]
    assert statuses(replay(machine, [events.LockReleased()])) == ["Available"]
    # TC_005_2: keep locked: Finishing until UnlockConnector.
    machine = fresh(Settings(fixed_cable=False, unlock_on_ev_disconnect=False))
    started(machine)
    effects = replay(machine, [events.Unplugged()])
    assert events.SetLock(False) not in effects and machine.status == S.finishing
    assert machine.dispatch(events.UnlockRequested()) == UnlockStatus.unlocked
    assert machine.take_effects() == [events.SetLock(False)]
    # TC_005_3: the transaction survives the disconnect; a remote stop ends it.
    machine = fresh(Settings(stop_on_ev_disconnect=False))
    started(machine)
    effects = replay(machine, [events.Unplugged()])
    assert statuses(effects) == ["SuspendedEV"] and events.SwitchRelay(False) in effects
    effects = replay(machine, [events.StopRequested(Reason.remote)])
    assert events.StopTransaction(Reason.remote) in effects and machine.status == S.available


def test_unlock_connector() -> None:
    assert fresh().dispatch(events.UnlockRequested()) == UnlockStatus.not_supported
    machine = fresh(Settings(fixed_cable=False))
    started(machine)
    assert machine.dispatch(events.UnlockRequested()) == UnlockStatus.unlocked
    assert events.StopTransaction(Reason.unlock_command) in machine.take_effects()
    machine = fresh(Settings(fixed_cable=False))
    replay(machine, [events.FaultRaised(FaultKind.LOCK, "stuck")])
    assert machine.dispatch(events.UnlockRequested()) == UnlockStatus.unlock_failed


def test_invalid_tag_on_start_confirmation() -> None:
    machine = fresh()
    started(machine)
    effects = replay(machine, [events.TransactionConfirmed(7, INVALID)])
    assert events.StopTransaction(Reason.de_authorized) in effects
    machine = fresh(Settings(stop_on_invalid_id=False))
    started(machine)
    effects = replay(machine, [events.TransactionConfirmed(7, INVALID)])
    assert statuses(effects) == ["SuspendedEVSE"] and events.SwitchRelay(False) in effects
    assert machine.truth.transaction is not None and machine.truth.transaction.transaction_id == 7


def test_relay_that_does_not_confirm_is_a_power_switch_failure() -> None:
    machine = fresh()
    replay(
        machine,
        [events.Plugged(), events.IdPresented("T"), events.AuthorizationResult("T", ACCEPTED)],
    )
    effects = replay(machine, [events.RelayFailed("no confirmation within 2 s")])
    assert events.StopTransaction(Reason.other) in effects
    assert (machine.status, machine.error_code) == (S.faulted, "PowerSwitchFailure")
    # The relay opens as commanded: the fault clears and the EV, still plugged, is Finishing.
    assert statuses(replay(machine, [events.RelayConfirmed(False)])) == ["Finishing"]


# --- reservations -------------------------------------------------------------------------------

OWN = events.Reservation(7, "HOLDER")
GROUP = events.Reservation(8, "HOLDER", "FLEET")
ZERO = events.Reservation(9, "HOLDER", any_connector=True)


def reserved(reservation: events.Reservation = OWN, *, hold_zero: bool = False) -> ConnectorMachine:
    machine = fresh()
    effects = replay(machine, [events.ReservationsChanged((reservation,), hold_zero)])
    assert statuses(effects) == (["Reserved"] if kept_for(machine.truth) else [])
    return machine


def test_reserved_gun_takes_only_the_holder_and_the_start_carries_the_id() -> None:
    machine = reserved()
    # TC_046: another tag is refused at once, without an Authorize.
    assert machine.dispatch(events.IdPresented("OTHER")) is False
    assert machine.take_effects() == []
    assert machine.dispatch(events.RemoteStartRequested("OTHER", authorize=False)) is False
    effects = replay(
        machine, [events.IdPresented("HOLDER"), events.AuthorizationResult("HOLDER", ACCEPTED)]
    )
    assert effects == [
        events.Authorize("HOLDER"),
        events.ConnectionTimer(True),
        events.NotifyStatus(S.preparing),
    ]
    effects = replay(machine, [events.Plugged()])
    assert events.StartTransaction("HOLDER", None, 7) in effects
    assert machine.truth.reservations == ()  # used: it ends with the start


def test_holder_already_plugged_in_goes_through_preparing() -> None:
    machine = reserved()
    assert replay(machine, [events.Plugged(), events.EvRequesting(True)]) == []  # still Reserved
    effects = replay(
        machine,
        [
            events.IdPresented("HOLDER"),
            events.AuthorizationResult("HOLDER", ACCEPTED),
            events.RelayConfirmed(True),
        ],
    )
    assert events.StartTransaction("HOLDER", None, 7) in effects
    assert statuses(effects) == ["Preparing", "Charging"]


def test_reservation_with_a_parent_admits_its_group_after_an_authorization() -> None:
    machine = reserved(GROUP)
    # 5.13: the incoming tag's parentIdTag decides, and only an authorization tells it.
    assert machine.dispatch(events.IdPresented("CARD")) is True
    assert machine.take_effects() == [events.Authorize("CARD")]
    assert replay(machine, [events.AuthorizationResult("CARD", ACCEPTED, "ELSEWHERE")]) == []
    assert machine.status == S.reserved and machine.truth.authorized is None
    replay(
        machine,
        [events.IdPresented("CARD2"), events.AuthorizationResult("CARD2", ACCEPTED, "FLEET")],
    )
    assert machine.status == S.preparing
    effects = replay(machine, [events.Plugged()])
    assert events.StartTransaction("CARD2", "FLEET", 8) in effects
    # A remote start of a group tag is authorized even without AuthorizeRemoteTxRequests.
    machine = reserved(GROUP)
    assert machine.dispatch(events.RemoteStartRequested("CARD", authorize=False)) is True
    assert machine.take_effects() == [events.Authorize("CARD")]


def test_remote_start_for_the_holder_uses_the_reservation() -> None:
    machine = reserved()
    assert machine.dispatch(events.RemoteStartRequested("HOLDER", authorize=False)) is True
    assert statuses(machine.take_effects()) == ["Preparing"]
    assert events.StartTransaction("HOLDER", None, 7) in replay(machine, [events.Plugged()])


def test_holder_who_does_not_plug_in_leaves_the_gun_reserved_again() -> None:
    machine = reserved()
    replay(machine, [events.IdPresented("HOLDER"), events.AuthorizationResult("HOLDER", ACCEPTED)])
    # OCPP allows no Preparing -> Reserved: the way back passes through Available.
    assert statuses(replay(machine, [events.ConnectionTimedOut()])) == ["Available", "Reserved"]
    assert machine.truth.reservations == (OWN,)


def test_fault_or_unavailability_ends_the_connectors_own_reservation() -> None:
    machine = reserved()
    effects = replay(machine, [events.FaultRaised(FaultKind.EARTH_FAULT, "earth")])
    assert events.ReservationEnded(7, "Faulted") in effects
    assert statuses(effects) == ["Faulted"]
    assert statuses(replay(machine, [events.FaultCleared(FaultKind.EARTH_FAULT)])) == ["Available"]
    machine = reserved()
    assert machine.dispatch(events.AvailabilityChanged(False)) == "Accepted"  # not busy
    assert machine.take_effects() == [
        events.ReservationEnded(7, "Unavailable"),
        events.NotifyStatus(S.unavailable),
    ]
    # Connector-0 reservations are the station's: it keeps them on its other guns.
    machine = reserved(ZERO, hold_zero=True)
    effects = replay(machine, [events.FaultRaised(FaultKind.EARTH_FAULT, "earth")])
    assert not any(isinstance(e, events.ReservationEnded) for e in effects)
    assert machine.truth.reservations == (ZERO,)


def test_connector_zero_reservation_is_served_on_any_gun_but_kept_only_when_held() -> None:
    machine = reserved(ZERO)  # not held: the gun is Available and takes anyone
    assert machine.status == S.available
    effects = replay(
        machine, [events.Plugged(), events.RemoteStartRequested("OTHER", authorize=False)]
    )
    assert events.StartTransaction("OTHER") in effects
    machine = reserved(ZERO)
    effects = replay(
        machine, [events.Plugged(), events.RemoteStartRequested("HOLDER", authorize=False)]
    )
    assert events.StartTransaction("HOLDER", None, 9) in effects  # its id wherever it starts
    machine = reserved(ZERO, hold_zero=True)
    assert machine.status == S.reserved
    assert machine.dispatch(events.IdPresented("OTHER")) is False
    # Released (another gun became free) while a holder is not there: Available again.
    assert statuses(replay(machine, [events.ReservationsChanged((ZERO,))])) == ["Available"]


def test_reservation_changes_while_busy_wait_for_the_session_to_end() -> None:
    machine = fresh()
    started(machine)
    assert replay(machine, [events.ReservationsChanged((OWN,))]) == []  # still Charging
    effects = replay(machine, [events.StopRequested(Reason.remote)])
    assert statuses(effects) == ["Finishing"]
    # OCPP allows no Finishing -> Reserved either.
    assert statuses(replay(machine, [events.Unplugged()])) == ["Available", "Reserved"]


# --- property-based: random event sequences ------------------------------------------------------

TAGS = st.sampled_from(["A", "B", "C"])
EVENTS = st.one_of(
    st.just(events.Plugged()),
    st.just(events.Unplugged()),
    st.builds(events.EvRequesting, st.booleans()),
    st.builds(events.IdPresented, TAGS),
    st.builds(events.RemoteStartRequested, TAGS, st.booleans()),
    st.builds(
        events.AuthorizationResult,
        TAGS,
        st.sampled_from(list(AuthorizationStatus)),
        st.sampled_from([None, "G", "H"]),
    ),
    st.just(events.ConnectionTimedOut()),
    st.builds(events.RelayConfirmed, st.booleans()),
    st.builds(events.RelayFailed, st.just("no confirmation")),
    st.just(events.LockEngaged()),
    st.just(events.LockReleased()),
    st.builds(events.EvseSuspended, st.booleans()),
    st.builds(events.FaultRaised, st.sampled_from(list(FaultKind)), st.just("detail")),
    st.builds(events.FaultCleared, st.sampled_from(list(FaultKind))),
    st.builds(events.AvailabilityChanged, st.booleans()),
    st.builds(events.StopRequested, st.sampled_from(list(Reason))),
    st.builds(events.TransactionConfirmed, st.integers(1, 5), st.sampled_from([ACCEPTED, INVALID])),
    st.just(events.UnlockRequested()),
    st.builds(
        events.ReservationsChanged,
        st.lists(
            st.builds(
                events.Reservation,
                st.integers(1, 3),
                TAGS,
                st.sampled_from([None, "G", "H"]),
                st.booleans(),
            ),
            max_size=2,
            unique_by=lambda r: r.reservation_id,
        ).map(tuple),
        st.booleans(),
    ),
)


class ConnectorRules(RuleBasedStateMachine):
    """Random event sequences against the invariants of the connector issue."""

    def __init__(self) -> None:
        super().__init__()
        self.machine: ConnectorMachine | None = None
        self.reported: list[events.NotifyStatus] = []
        self.starts = 0
        self.stops = 0
        self.relay: list[bool] = []
        # The hardware reports the relay otherwise than commanded, and its fault stands.
        self.contradicted = False

    @precondition(lambda self: self.machine is None)
    @rule(flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()))
    def create(self, flags: tuple[bool, bool, bool, bool]) -> None:
        self.machine = ConnectorMachine(1, Settings(*flags))
        self._absorb(self.machine.take_effects())

    @precondition(lambda self: self.machine is not None)
    @rule(event=EVENTS)
    def dispatch(self, event: Any) -> None:
        assert self.machine is not None
        before = self.machine.truth
        self.machine.dispatch(event)
        self._absorb(self.machine.take_effects(), before)
        # A random event may be the hardware agreeing again (RelayConfirmed as commanded,
        # or its fault cleared).
        self.contradicted &= FaultKind.POWER_SWITCH in self.machine.truth.fault_kinds

    @precondition(lambda self: self.machine is not None)
    @rule()
    def relay_feedback_contradicts_the_command(self) -> None:
        """The hardware reports the relay otherwise than commanded (closed on an idle gun, or
        open while charging), and past the ack deadline reports a PowerSwitchFailure."""
        assert self.machine is not None
        for event in (
            events.RelayConfirmed(not self.machine.truth.relay_commanded),
            events.FaultRaised(FaultKind.POWER_SWITCH, "PLC 0: relay reported closed"),
        ):
            before = self.machine.truth
            self.machine.dispatch(event)
            self._absorb(self.machine.take_effects(), before)
        t = self.machine.truth
        assert FaultKind.POWER_SWITCH in t.fault_kinds
        assert self.machine.status == S.faulted
        # It acts: no transaction goes on, nothing commands the relay closed.
        assert t.transaction is None and not t.relay_commanded
        self.contradicted = True

    @precondition(lambda self: self.contradicted)
    @rule()
    def relay_feedback_agrees_again(self) -> None:
        """The relay is reported as commanded again, and the hardware clears its fault."""
        assert self.machine is not None
        for event in (
            events.RelayConfirmed(self.machine.truth.relay_commanded),
            events.FaultCleared(FaultKind.POWER_SWITCH),
        ):
            before = self.machine.truth
            self.machine.dispatch(event)
            self._absorb(self.machine.take_effects(), before)
        t = self.machine.truth
        assert FaultKind.POWER_SWITCH not in t.fault_kinds
        # Recovered: Faulted only for another fault still active.
        assert (self.machine.status == S.faulted) == bool(t.faults)
        self.contradicted = False

    def _absorb(self, effects: list[events.Effect], before: Truth | None = None) -> None:
        for effect in effects:
            if isinstance(effect, events.NotifyStatus):
                if self.reported:
                    last = self.reported[-1]
                    # Only allowed status changes; never the same notification twice.
                    assert (last.status, last.error_code) != (effect.status, effect.error_code)
                    if last.status != effect.status:
                        assert effect.status in ALLOWED[last.status]
                self.reported.append(effect)
            elif isinstance(effect, events.StartTransaction):
                assert self.starts == self.stops  # at most one transaction at a time
                self.starts += 1
                assert before is not None
                # A reserved gun starts only for a holder, and says which reservation it used.
                used = [r for r in before.reservations if r.reservation_id == effect.reservation_id]
                if kept_for(before):
                    assert used and used[0] in kept_for(before)
                if effect.reservation_id is not None:
                    assert used and used[0].admits(effect.id_tag, effect.parent_id_tag)
            elif isinstance(effect, events.StopTransaction):
                assert self.starts == self.stops + 1  # exactly one stop per start
                self.stops += 1
            elif isinstance(effect, events.SwitchRelay):
                assert not self.relay or self.relay[-1] != effect.closed
                self.relay.append(effect.closed)

    @invariant()
    def truthful(self) -> None:
        machine = self.machine
        if machine is None:
            return
        t = machine.truth
        assert machine.status == derive_status(t)
        # Faulted exactly while a fault is active.
        assert (machine.status == S.faulted) == bool(t.faults)
        # Relay closed only with safety, communication, an operative connector and an
        # authorized transaction on a plugged EV.
        if t.relay_commanded:
            assert relay_may_close(t)
            assert not t.faults and t.transaction is not None and t.plugged
            assert t.operative or t.scheduled is not None
        # No energy without a commanded close: Charging only on a relay commanded and
        # confirmed closed; while the relay contradicts the command the gun is Faulted.
        if machine.status == S.charging:
            assert t.relay_commanded and t.relay_closed
        if self.contradicted:
            assert machine.status == S.faulted and not t.relay_commanded
        # A transaction is open exactly while the machine has one.
        assert (self.starts == self.stops + 1) == (t.transaction is not None)
        # The last notification is the current status.
        assert self.reported[-1].status == machine.status
        # A Faulted or Unavailable connector has no reservation of its own (5.13).
        if t.faults or not t.operative:
            assert all(r.any_connector for r in t.reservations)


TestConnectorRules = ConnectorRules.TestCase
TestConnectorRules.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
