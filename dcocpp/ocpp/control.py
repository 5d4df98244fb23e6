"""What the OCPP layer asks of the charger it represents.

The session never touches connectors or hardware; the station implements this protocol and the
session (and its handlers) only call it. Keeping the surface here, in the OCPP layer, keeps the
import direction one way: station -> ocpp, never back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from ocpp.v16.enums import (
    AvailabilityStatus,
    CancelReservationStatus,
    ChargePointErrorCode,
    ChargePointStatus,
    RemoteStartStopStatus,
    ReservationStatus,
    ResetStatus,
    ResetType,
    UnlockStatus,
)

if TYPE_CHECKING:
    from dcocpp.ocpp.firmware.plan import FirmwarePlan, FirmwareState
    from dcocpp.ocpp.smartcharging.service import ChargingContext


@attrs.frozen
class ConnectorStatus:
    """A connector's (or, for id 0, the charge point's) status as OCPP reports it."""

    connector_id: int
    status: ChargePointStatus
    error_code: ChargePointErrorCode = ChargePointErrorCode.no_error
    info: str | None = None
    vendor_error_code: str | None = None
    timestamp: str | None = None  # when the status was entered (OCPP dateTime)


class ChargePointControl(Protocol):
    @property
    def connector_ids(self) -> Sequence[int]:
        """The connector ids 1..N."""
        ...

    def statuses(self) -> list[ConnectorStatus]:
        """The current status of connector 0 and every connector, in id order."""
        ...

    async def change_availability(self, connector_id: int, operative: bool) -> AvailabilityStatus:
        """Apply (or schedule, while busy) an availability change; persisted before it returns."""
        ...

    def reset_allowed(self, kind: ResetType) -> ResetStatus:
        """Whether a Reset of this kind is accepted; it is performed by `perform_reset`."""
        ...

    async def perform_reset(self, kind: ResetType) -> None:
        """Carry out an accepted Reset, after its CALLRESULT has been sent: stop transactions
        (reason SoftReset/HardReset), then restart."""
        ...

    async def remote_start(self, connector_id: int | None, id_tag: str) -> RemoteStartStopStatus:
        """RemoteStartTransaction on a connector (None: the charge point picks one)."""
        ...

    async def remote_stop(self, transaction_id: int) -> RemoteStartStopStatus: ...

    async def reserve_now(
        self,
        connector_id: int,
        expiry: datetime,
        id_tag: str,
        reservation_id: int,
        parent_id_tag: str | None = None,
    ) -> ReservationStatus:
        """ReserveNow for a connector, or (0) for any gun; persisted before it returns."""
        ...

    async def cancel_reservation(self, reservation_id: int) -> CancelReservationStatus:
        """CancelReservation: Accepted for a reservation the charger has, else Rejected."""
        ...

    async def unlock(self, connector_id: int) -> UnlockStatus: ...

    async def trigger_meter_values(self, connector_id: int | None) -> None:
        """Send MeterValues now (TriggerMessage) for one connector or all."""
        ...

    def charging_context(self, connector_id: int) -> ChargingContext:
        """What smart charging needs to know about a connector (0: the charge point): its
        running transaction, how amperes and watts relate there, its own maximum."""
        ...


class DiagnosticsSource(Protocol):
    """What the charger gives the archive (the station implements it)."""

    def log_files(self) -> Sequence[Path]:
        """The log files to include (the OCPP message log, the console log, rotations)."""
        ...

    async def diagnostics_documents(self) -> dict[str, Any]:
        """JSON documents for the archive by name: the status snapshot, the database's schema
        version and queue counts, ..."""
        ...


class FirmwareHost(Protocol):
    """What a firmware update needs of the charger (the station implements it)."""

    async def record_firmware(
        self,
        plan: FirmwarePlan | None,
        status: FirmwareState | None,
        *,
        version: str | None = None,
        security_event: tuple[str, str, str | None] | None = None,
    ) -> None:
        """In ONE database write: the plan (None: ended), the FirmwareStatusNotification
        `status` queued in the outbox (and a security event (type, timestamp, techInfo)), the
        installed `version`. Returns once it is on disk."""
        ...

    async def hold_for_firmware(self, held: bool) -> None:
        """Hold the guns for the install (idle ones Unavailable, no new transaction; a
        running one goes on), or release them to the availability the central system set."""
        ...

    async def wait_no_transaction(self) -> None:
        """Until no gun has a transaction (the guns held, none starts meanwhile)."""
        ...

    async def reboot_for_firmware(self) -> None:
        """The installed firmware runs after a reboot: the hard-reset path (the process ends
        with EXIT_HARD_RESET for its supervisor to start it again)."""
        ...
