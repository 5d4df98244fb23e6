"""What is physically and commercially the case at one gun: the facts the status rules read
(`dcocpp/connector/rules.py`) and the machine keeps (`dcocpp/connector/machine.py`). Pure values,
no I/O."""

from __future__ import annotations

import attrs

from dcocpp.connector import events
from dcocpp.hardware.interface import FaultKind


@attrs.frozen
class Settings:
    """The OCPP keys and hardware facts that shape decisions; the task refreshes them."""

    stop_on_ev_disconnect: bool = True  # StopTransactionOnEVSideDisconnect
    unlock_on_ev_disconnect: bool = True  # UnlockConnectorOnEVSideDisconnect
    stop_on_invalid_id: bool = True  # StopTransactionOnInvalidId
    fixed_cable: bool = True  # a DC gun's cable is fixed: no socket lock to drive
    # The station is stopping (SIGTERM, SIGPWR): no new transaction may start, since the
    # process exits before it could be stopped and billed properly.
    closing: bool = False


@attrs.frozen
class Authorized:
    id_tag: str
    parent_id_tag: str | None = None


@attrs.frozen
class Transaction:
    id_tag: str
    parent_id_tag: str | None = None
    transaction_id: int | None = None  # the central system's id, once StartTransaction.conf came
    deauthorized: bool = False  # the CSMS refused the tag and StopTransactionOnInvalidId=false
    past_preparing: bool = False  # left Preparing once; never goes back (not allowed by OCPP)


@attrs.frozen
class Truth:
    plugged: bool = False
    ev_requesting: bool = False
    pending_id: str | None = None  # presented to start, authorization outstanding
    stop_candidate: str | None = None  # presented to stop, authorization outstanding
    authorized: Authorized | None = None  # accepted, waiting for the EV / for the fault to clear
    transaction: Transaction | None = None
    finishing: bool = False  # a transaction ended and the cable is still there
    relay_commanded: bool = False
    relay_closed: bool = False  # as confirmed by the hardware
    locked: bool = False  # detachable cable: the socket lock holds it
    locking: bool = False  # the lock was told to engage; the transaction starts once it does
    evse_suspended: bool = False
    faults: tuple[tuple[FaultKind, str], ...] = ()  # (kind, detail), in the order raised
    operative: bool = True
    scheduled: bool | None = None  # an availability change waiting until not busy
    # The reservations this gun serves (its own connector's, every connector-0 one) and
    # whether the station keeps it free for the connector-0 ones (see `kept_for`).
    reservations: tuple[events.Reservation, ...] = ()
    hold_zero: bool = False
    # Held by the station for a firmware install (events.MaintenanceHold; not persisted).
    maintenance: bool = False

    @property
    def fault_kinds(self) -> frozenset[FaultKind]:
        return frozenset(kind for kind, _ in self.faults)


def relay_may_close(t: Truth) -> bool:
    """The one rule for energy: an authorized transaction on a plugged EV, nothing wrong."""
    tx = t.transaction
    return (
        tx is not None
        and not tx.deauthorized
        and t.plugged
        and not t.faults
        and not t.evse_suspended
    )


def kept_for(t: Truth) -> tuple[events.Reservation, ...]:
    """The reservations this gun is kept for: while there are any it is Reserved and only their
    holders may start here (OCPP 1.6 5.13). Its own connector's always; the connector-0 ones
    while the station needs this gun to keep one free for each of them."""
    return tuple(r for r in t.reservations if not r.any_connector or t.hold_zero)
