"""Exhaustive exploration of the connector machine over a small event alphabet.

Breadth-first over every reachable truth, for every combination of settings: collects each
status change (trigger, source, dest) that actually happens. Used by the tests to prove the
statechart (EDGES) covers every change and contains no dead edge."""

from __future__ import annotations

import itertools
from collections import deque

from ocpp.v16.enums import AuthorizationStatus, ChargePointStatus, Reason

from dcocpp.connector import events as ev
from dcocpp.connector.machine import ConnectorMachine, Settings, Truth, _trigger_name
from dcocpp.hardware.interface import FaultKind

ACCEPTED, INVALID = AuthorizationStatus.accepted, AuthorizationStatus.invalid

BASE_ALPHABET: list[ev.Event] = [
    ev.Plugged(),
    ev.Unplugged(),
    ev.EvRequesting(True),
    ev.EvRequesting(False),
    ev.IdPresented("A"),
    ev.IdPresented("B"),
    ev.RemoteStartRequested("A", authorize=True),
    ev.RemoteStartRequested("A", authorize=False),
    ev.AuthorizationResult("A", ACCEPTED, "G"),
    ev.AuthorizationResult("B", ACCEPTED, "G"),
    ev.AuthorizationResult("A", INVALID),
    ev.AuthorizationResult("B", INVALID),
    ev.ConnectionTimedOut(),
    ev.RelayConfirmed(True),
    ev.RelayConfirmed(False),
    ev.RelayFailed("stuck"),
    ev.LockEngaged(),
    ev.LockReleased(),
    ev.EvseSuspended(True),
    ev.EvseSuspended(False),
    ev.FaultRaised(FaultKind.EMERGENCY_STOP, "pressed"),
    ev.FaultCleared(FaultKind.EMERGENCY_STOP),
    ev.FaultRaised(FaultKind.LOCK, "lock"),
    ev.FaultCleared(FaultKind.LOCK),
    ev.FaultCleared(FaultKind.POWER_SWITCH),
    ev.AvailabilityChanged(False),
    ev.AvailabilityChanged(True),
    ev.StopRequested(Reason.remote),
    ev.TransactionConfirmed(1, ACCEPTED),
    ev.TransactionConfirmed(1, INVALID),
    ev.UnlockRequested(),
]
# Reservations: the gun's own (tag A, or any tag of group G, as B is), a connector-0 one the
# station keeps this gun for, and none (cancelled, expired, used elsewhere).
RESERVATIONS: list[ev.Event] = [
    ev.ReservationsChanged((ev.Reservation(1, "A", "G"),)),
    ev.ReservationsChanged((ev.Reservation(2, "B", any_connector=True),), hold_zero=True),
    ev.ReservationsChanged(),
]
ALPHABET = BASE_ALPHABET + RESERVATIONS

ALL_SETTINGS = [Settings(*flags) for flags in itertools.product([True, False], repeat=4)]
# What the test suite explores to stay fast (checked when EDGES was generated: together they
# reach every edge that the whole ALPHABET reaches under all sixteen settings): BASE_ALPHABET
# under five combinations, and the whole ALPHABET under RESERVATION_SETTINGS.
RESERVATION_SETTINGS = Settings(stop_on_ev_disconnect=False, fixed_cable=False)
COVERING_SETTINGS = [
    Settings(),
    Settings(False, False, False, False),
    Settings(fixed_cable=False),
    Settings(stop_on_ev_disconnect=False),
    Settings(True, False, True, False),
]
PERMISSIVE = {
    _trigger_name(event): [(a, b) for a in ChargePointStatus for b in ChargePointStatus]
    for event in ALPHABET
}


def explore(settings: Settings, edges=PERMISSIVE, limit: int = 200_000, alphabet=None):
    """Returns (observed edges, number of truths visited); `alphabet` defaults to ALPHABET."""
    alphabet = ALPHABET if alphabet is None else alphabet
    observed: set[tuple[str, ChargePointStatus, ChargePointStatus]] = set()
    seen = {Truth()}
    queue = deque([Truth()])
    machine = ConnectorMachine(1, settings, edges=edges)
    while queue:
        truth = queue.popleft()
        for event in alphabet:
            machine.restore(truth)
            status = machine.status
            machine.dispatch(event)
            for effect in machine.take_effects():
                if isinstance(effect, ev.NotifyStatus) and effect.status != status:
                    observed.add((_trigger_name(event), status, effect.status))
                    status = effect.status
            if machine.truth not in seen:
                seen.add(machine.truth)
                queue.append(machine.truth)
                if len(seen) > limit:
                    raise RuntimeError("state space larger than expected")
    return observed, len(seen)


if __name__ == "__main__":
    from dcocpp.ocpp.statuses import allowed_transitions

    allowed = allowed_transitions("connector")
    everything = set()
    for settings in ALL_SETTINGS:
        observed, n = explore(settings)
        print(settings, n)
        everything |= observed
    by_trigger = {}
    for trig, a, b in sorted(everything):
        by_trigger.setdefault(trig, []).append((a.value, b.value))
        if b not in allowed[a]:
            print("NOT ALLOWED", trig, a.value, b.value)
    for trig, pairs in by_trigger.items():
        print(trig, pairs)
