"""The connector machine's vocabulary: events in, effects out. Plain frozen values, no I/O."""

from __future__ import annotations

import attrs
from ocpp.v16.enums import AuthorizationStatus, ChargePointErrorCode, ChargePointStatus, Reason

from dcocpp import idtags
from dcocpp.hardware.interface import FaultKind

# --- events: what happened ------------------------------------------------------------------


@attrs.frozen
class Plugged:
    """The EV side of the cable was connected."""


@attrs.frozen
class Unplugged:
    """The EV side of the cable was disconnected."""


@attrs.frozen
class EvRequesting:
    """The EV asks for energy (True) or suspends (False)."""

    requesting: bool


@attrs.frozen
class IdPresented:
    """A tag was presented at this gun's reader (to start, or to stop the running session)."""

    id_tag: str


@attrs.frozen
class RemoteStartRequested:
    """RemoteStartTransaction for this connector. Reply: accepted (bool)."""

    id_tag: str
    authorize: bool  # AuthorizeRemoteTxRequests


@attrs.frozen
class AuthorizationResult:
    """The outcome of an `Authorize` effect (cache, local list or the central system)."""

    id_tag: str
    status: AuthorizationStatus
    parent_id_tag: str | None = None


@attrs.frozen
class ConnectionTimedOut:
    """ConnectionTimeOut elapsed after an authorization without a plugged EV."""


@attrs.frozen
class RelayConfirmed:
    """The hardware confirmed the relay state."""

    closed: bool


@attrs.frozen
class RelayFailed:
    """The relay did not confirm a command in time, or refused it."""

    detail: str


@attrs.frozen
class LockEngaged:
    """The connector lock holds the cable (detachable cable only)."""


@attrs.frozen
class LockReleased:
    """The connector lock released the cable (detachable cable only)."""


@attrs.frozen
class EvseSuspended:
    """The charger withholds energy (limit 0, local pause) or offers it again."""

    suspended: bool


@attrs.frozen
class FaultRaised:
    kind: FaultKind
    detail: str = ""


@attrs.frozen
class FaultCleared:
    kind: FaultKind


@attrs.frozen
class AvailabilityChanged:
    """ChangeAvailability for this connector (or for the whole charge point).
    Reply: "Accepted" or "Scheduled" (applied when the connector is no longer busy)."""

    operative: bool


@attrs.frozen
class MaintenanceHold:
    """The station holds the gun for a firmware install (`held`), or releases it. Not the
    central system's availability, and not persisted: while held no transaction starts, a
    running one goes on, and the gun is Unavailable once it is free (no transaction, no EV,
    no tag waiting); released, it is what the central system's availability makes it."""

    held: bool


@attrs.frozen
class StopRequested:
    """Stop the running transaction. Reply: whether there was one."""

    reason: Reason
    id_tag: str | None = None


@attrs.frozen
class TransactionConfirmed:
    """StartTransaction.conf: the central system's transaction id and its verdict on the tag
    (with the tag's parentIdTag, when it says one)."""

    transaction_id: int
    status: AuthorizationStatus
    parent_id_tag: str | None = None


@attrs.frozen
class UnlockRequested:
    """UnlockConnector. Reply: "Unlocked", "UnlockFailed" or "NotSupported"."""


@attrs.frozen
class Reservation:
    """A reservation (ReserveNow) a connector serves: who may use it, and the id its
    StartTransaction carries."""

    reservation_id: int
    id_tag: str
    parent_id_tag: str | None = None
    any_connector: bool = False  # connectorId 0: any gun of the station may serve it

    def admits(self, id_tag: str, parent_id_tag: str | None = None) -> bool:
        """OCPP 1.6 5.13: the reserved idTag, or a tag of the reservation's parentIdTag (the
        parent itself, or a tag whose parentIdTag it is)."""
        return idtags.same(id_tag, self.id_tag) or (
            idtags.same(self.parent_id_tag, id_tag)
            or idtags.same(self.parent_id_tag, parent_id_tag)
        )


@attrs.frozen
class ReservationsChanged:
    """The reservations this gun serves, as the station keeps them now (ReserveNow,
    CancelReservation, expiry, a reservation used elsewhere): its own connector's and every
    connector-0 one. `hold_zero`: the station needs this gun free for its connector-0
    reservations, so only their holders may start here."""

    reservations: tuple[Reservation, ...] = ()
    hold_zero: bool = False


Event = (
    Plugged
    | Unplugged
    | EvRequesting
    | IdPresented
    | RemoteStartRequested
    | AuthorizationResult
    | ConnectionTimedOut
    | RelayConfirmed
    | RelayFailed
    | LockEngaged
    | LockReleased
    | EvseSuspended
    | FaultRaised
    | FaultCleared
    | AvailabilityChanged
    | MaintenanceHold
    | StopRequested
    | TransactionConfirmed
    | UnlockRequested
    | ReservationsChanged
)

# --- effects: what the connector task must do ---------------------------------------------


@attrs.frozen
class NotifyStatus:
    status: ChargePointStatus
    error_code: ChargePointErrorCode = ChargePointErrorCode.no_error
    info: str | None = None
    vendor_error_code: str | None = None


@attrs.frozen
class SwitchRelay:
    closed: bool


@attrs.frozen
class SetLock:
    locked: bool


@attrs.frozen
class Authorize:
    """Decide on a tag (cache, local list or Authorize.req), answer with AuthorizationResult."""

    id_tag: str


@attrs.frozen
class StartTransaction:
    id_tag: str
    parent_id_tag: str | None = None
    reservation_id: int | None = None


@attrs.frozen
class StopTransaction:
    reason: Reason
    id_tag: str | None = None  # the tag that stopped it, when a person did


@attrs.frozen
class ConnectionTimer:
    """Start (running=True) or cancel the ConnectionTimeOut timer."""

    running: bool


@attrs.frozen
class AvailabilityApplied:
    """A scheduled availability change took effect; persist it."""

    operative: bool


@attrs.frozen
class ReservationEnded:
    """The connector ended a reservation of its own: it became Faulted or Unavailable (OCPP
    1.6 5.13). A reservation used by a transaction ends with its StartTransaction."""

    reservation_id: int
    cause: str  # "Faulted" or "Unavailable"


Effect = (
    NotifyStatus
    | SwitchRelay
    | SetLock
    | Authorize
    | StartTransaction
    | StopTransaction
    | ConnectionTimer
    | AvailabilityApplied
    | ReservationEnded
)
