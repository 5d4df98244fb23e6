"""Handlers of the central system's Core, RemoteTrigger, LocalAuthListManagement and
Reservation CALLs that need no transaction, FirmwareManagement's GetDiagnostics and
UpdateFirmware (on `diagnostics.service` and `firmware.service`), and the security whitepaper's
ExtendedTriggerMessage (it shares TriggerMessage's code).

Each `@on` handler answers from state it can read at once; anything the CALLRESULT must precede
(the triggered message, the reset) runs in the matching `@after` hook, which the RPC layer runs
once the answer is on the wire. Actions without a handler are answered NotImplemented by the RPC.
The SmartCharging CALLs come from a mixin (`smartcharging/handlers.py`), the certificate CALLs
from another (`securityhandlers.py`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ocpp.routing import after, on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import (
    Action,
    AvailabilityStatus,
    AvailabilityType,
    ClearCacheStatus,
    DataTransferStatus,
    DiagnosticsStatus,
    FirmwareStatus,
    MessageTrigger,
    RemoteStartStopStatus,
    ReservationStatus,
    ResetStatus,
    ResetType,
    TriggerMessageStatus,
    UnlockStatus,
    UpdateStatus,
    UpdateType,
    UploadLogStatus,
)

from dcocpp.clock import parse_ocpp_time
from dcocpp.ocpp.authcache import AuthStoreError, cache_enabled, parse_expiry
from dcocpp.ocpp.errors import CallError, InvalidPayload
from dcocpp.ocpp.firmware import FirmwareBusy
from dcocpp.ocpp.locallist import NO_LIST_SUPPORT, limits_of, list_enabled, tags_of
from dcocpp.ocpp.registration import Registration
from dcocpp.ocpp.securityhandlers import SecurityHandlers
from dcocpp.ocpp.smartcharging.handlers import SmartChargingHandlers
from dcocpp.ocpp.smartcharging.profiles import ProfileError
from dcocpp.ocpp.timewindow import time_window

if TYPE_CHECKING:
    from dcocpp.ocpp.services import SessionServices

log = logging.getLogger(__name__)

# Keys whose change must reach the transport: the next connection uses them. (SecurityProfile
# has its own way, see on_change_configuration.)
_RECONNECT_KEYS = frozenset({"AuthorizationKey"})

_TRIGGERABLE = frozenset(
    {
        MessageTrigger.boot_notification,
        MessageTrigger.heartbeat,
        MessageTrigger.status_notification,
        MessageTrigger.diagnostics_status_notification,
        MessageTrigger.firmware_status_notification,
        MessageTrigger.meter_values,
    }
)
# ExtendedTriggerMessage's own list (the security whitepaper): no DiagnosticsStatusNotification.
_EXTENDED_TRIGGERABLE = frozenset(
    {
        MessageTrigger.boot_notification,
        MessageTrigger.heartbeat,
        MessageTrigger.status_notification,
        MessageTrigger.firmware_status_notification,
        MessageTrigger.meter_values,
        MessageTrigger.log_status_notification,
        MessageTrigger.sign_charge_point_certificate,
    }
)


class CoreHandlers(SmartChargingHandlers, SecurityHandlers):
    def __init__(self, session: SessionServices):
        self.session = session

    def _valid_connector(self, connector_id: int | None, *, allow_zero: bool = True) -> bool:
        if connector_id is None:
            return True
        if connector_id == 0:
            return allow_zero
        return connector_id in self.session.control.connector_ids

    def _registered(self, action: str) -> bool:
        """Whether the registration is Accepted. OCPP 1.6 4.2: while Pending the central
        system may read and change the configuration, but RemoteStartTransaction and
        RemoteStopTransaction are not allowed (nor, before an answer, decided by the offline
        rules)."""
        state = self.session.state
        if state == Registration.ACCEPTED:
            return True
        log.warning("%s rejected: the registration is %s (OCPP 1.6 4.2)", action, state.value)
        return False

    # --- configuration -----------------------------------------------------------------------

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        store = self.session.store
        limit = store.get_int("GetConfigurationMaxKeys")
        if key and len(key) > limit:
            raise CallError(
                "OccurenceConstraintViolation",
                f"at most {limit} keys per request (GetConfigurationMaxKeys)",
            )
        known, unknown = store.get_configuration(key or None)
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any) -> Any:
        if key.casefold() == "securityprofile":
            # Not the key store's: the key reports the profile in use, the session keeps the
            # one set (and its fallback).
            status = self.session.change_security_profile(value)
            return call_result.ChangeConfiguration(status=status)
        return call_result.ChangeConfiguration(status=self.session.store.change(key, value))

    @after(Action.change_configuration)
    async def after_change_configuration(self, key: str, value: str, **_: Any) -> None:
        key = self.session.store.canonical(key) or key  # in whatever letters it came
        if key == "SecurityProfile" and self.session.security_profiles.on_trial:
            self.session.reconnect(f"SecurityProfile {value.strip()} to be tried")
        if key in _RECONNECT_KEYS and self.session.store.get(key) == value:
            await self.session.security_event(
                "ReconfigurationOfSecurityParameters", f"{key} changed by the central system"
            )
            self.session.reconnect(f"{key} changed")

    # --- availability and reset --------------------------------------------------------------

    @on(Action.change_availability)
    async def on_change_availability(self, connector_id: int, type: str, **_: Any) -> Any:
        if not self._valid_connector(connector_id):
            return call_result.ChangeAvailability(status=AvailabilityStatus.rejected)
        operative = AvailabilityType(type) == AvailabilityType.operative
        status = await self.session.control.change_availability(connector_id, operative)
        return call_result.ChangeAvailability(status=status)

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> Any:
        return call_result.Reset(status=self.session.control.reset_allowed(ResetType(type)))

    @after(Action.reset)
    async def after_reset(self, type: str, **_: Any) -> None:
        kind = ResetType(type)
        if self.session.control.reset_allowed(kind) == ResetStatus.accepted:
            await self.session.control.perform_reset(kind)

    # --- transactions ------------------------------------------------------------------------

    @on(Action.remote_start_transaction)
    async def on_remote_start_transaction(
        self,
        id_tag: str,
        connector_id: int | None = None,
        charging_profile: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        if not self._registered("RemoteStartTransaction"):
            return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
        if connector_id == 0 or not self._valid_connector(connector_id):
            return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
        pending = None
        if charging_profile is not None:
            # 5.11: a TxProfile for the transaction to start; one the charger cannot take is
            # refused (refusing beats ignoring a limit).
            profiles = self.session.charging_profiles
            try:
                profile = profiles.check_remote_start(charging_profile)
            except ProfileError as exc:
                log.warning("RemoteStartTransaction rejected: chargingProfile %s", exc)
                return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
            # Kept before asking: with the EV plugged the transaction starts at once.
            pending = profiles.expect_remote_start(connector_id, id_tag, profile)
        status = await self.session.control.remote_start(connector_id, id_tag)
        if pending is not None and status != RemoteStartStopStatus.accepted:
            self.session.charging_profiles.cancel_remote_start(pending)
        return call_result.RemoteStartTransaction(status=status)

    @on(Action.remote_stop_transaction)
    async def on_remote_stop_transaction(self, transaction_id: int, **_: Any) -> Any:
        if not self._registered("RemoteStopTransaction"):
            return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.rejected)
        status = await self.session.control.remote_stop(transaction_id)
        return call_result.RemoteStopTransaction(status=status)

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, connector_id: int, **_: Any) -> Any:
        if connector_id == 0 or not self._valid_connector(connector_id):
            return call_result.UnlockConnector(status=UnlockStatus.not_supported)
        return call_result.UnlockConnector(status=await self.session.control.unlock(connector_id))

    # --- reservation -------------------------------------------------------------------------

    @on(Action.reserve_now)
    async def on_reserve_now(
        self,
        connector_id: int,
        expiry_date: str,
        id_tag: str,
        reservation_id: int,
        parent_id_tag: str | None = None,
        **_: Any,
    ) -> Any:
        if connector_id < 0 or not self._valid_connector(connector_id):
            return call_result.ReserveNow(status=ReservationStatus.rejected)
        expiry = parse_expiry(expiry_date)
        if expiry is None:
            raise CallError("PropertyConstraintViolation", "expiryDate is not a date-time")
        status = await self.session.control.reserve_now(
            connector_id, expiry, id_tag, reservation_id, parent_id_tag
        )
        return call_result.ReserveNow(status=status)

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, reservation_id: int, **_: Any) -> Any:
        status = await self.session.control.cancel_reservation(reservation_id)
        return call_result.CancelReservation(status=status)

    # --- remote trigger ----------------------------------------------------------------------

    @on(Action.trigger_message)
    def on_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> Any:
        status = self._trigger_answer(requested_message, connector_id, _TRIGGERABLE)
        return call_result.TriggerMessage(status=status)

    @after(Action.trigger_message)
    async def after_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> None:
        status = self._trigger_answer(requested_message, connector_id, _TRIGGERABLE)
        if status == TriggerMessageStatus.accepted:
            await self._send_triggered(MessageTrigger(requested_message), connector_id)

    @on(Action.extended_trigger_message)
    def on_extended_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> Any:
        status = self._trigger_answer(requested_message, connector_id, _EXTENDED_TRIGGERABLE)
        return call_result.ExtendedTriggerMessage(status=status)

    @after(Action.extended_trigger_message)
    async def after_extended_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> None:
        status = self._trigger_answer(requested_message, connector_id, _EXTENDED_TRIGGERABLE)
        if status == TriggerMessageStatus.accepted:
            await self._send_triggered(MessageTrigger(requested_message), connector_id)

    def _trigger_answer(
        self,
        requested_message: str,
        connector_id: int | None,
        triggerable: frozenset[MessageTrigger],
    ) -> TriggerMessageStatus:
        """Rejected for a connector this charger does not have; NotImplemented for a message
        it cannot send on request; Rejected for a certificate it cannot renew now."""
        message = MessageTrigger(requested_message)
        if not self._valid_connector(connector_id):
            return TriggerMessageStatus.rejected
        if message not in triggerable:
            return TriggerMessageStatus.not_implemented
        if message == MessageTrigger.sign_charge_point_certificate:
            certificates = self.session.charge_point_certificates
            if certificates is None or not certificates.can_request():
                log.warning("SignChargePointCertificate rejected: no certificate can be renewed")
                return TriggerMessageStatus.rejected
        return TriggerMessageStatus.accepted

    async def _send_triggered(self, message: MessageTrigger, connector_id: int | None) -> None:
        """The message a TriggerMessage or ExtendedTriggerMessage asked for, after its answer."""
        session = self.session
        if message == MessageTrigger.boot_notification:
            session.boot_now()
        elif message == MessageTrigger.heartbeat:
            await session.send_heartbeat(triggered=True)
        elif message == MessageTrigger.status_notification:
            for status in session.control.statuses():
                if connector_id is None or status.connector_id == connector_id:
                    try:
                        await session.send_status(status, triggered=True)
                    except (CallError, InvalidPayload) as exc:
                        # That one's failure: the other connectors' statuses still go out.
                        log.warning(
                            "triggered StatusNotification for connector %d failed: %s",
                            status.connector_id,
                            exc,
                        )
        elif message == MessageTrigger.meter_values:
            await session.control.trigger_meter_values(connector_id)
        elif message == MessageTrigger.diagnostics_status_notification:
            # 4.4: Idle when no upload runs, else Uploading.
            state = session.diagnostics.current.value if session.diagnostics else "Idle"
            await session.call(
                call.DiagnosticsStatusNotification(status=DiagnosticsStatus(state)),
                triggered=True,
            )
        elif message == MessageTrigger.firmware_status_notification:
            # 4.5: Idle when no firmware task runs, else its current step.
            state = session.firmware.state.value if session.firmware else "Idle"
            await session.call(
                call.FirmwareStatusNotification(status=FirmwareStatus(state)), triggered=True
            )
        elif message == MessageTrigger.log_status_notification:
            # Uploading with its requestId while a GetLog's upload runs, else Idle.
            upload, request_id = session.logs.status() if session.logs else (None, None)
            status = UploadLogStatus(upload.value if upload else "Idle")
            await session.call(
                call.LogStatusNotification(status=status, request_id=request_id), triggered=True
            )
        elif (
            message == MessageTrigger.sign_charge_point_certificate
            and session.charge_point_certificates is not None
        ):
            await session.charge_point_certificates.request_certificate()

    # --- diagnostics -------------------------------------------------------------------------

    @on(Action.get_diagnostics)
    async def on_get_diagnostics(
        self,
        location: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        start_time: str | None = None,
        stop_time: str | None = None,
        **_: Any,
    ) -> Any:
        """5.9: the archive's name at once (none: nothing to send), its upload afterwards."""
        start, stop = time_window(start_time, stop_time, "startTime/stopTime")
        diagnostics = self.session.diagnostics
        if diagnostics is None:
            return call_result.GetDiagnostics()
        file_name = await diagnostics.request(
            location, retries=retries, retry_interval=retry_interval, start=start, stop=stop
        )
        return call_result.GetDiagnostics(file_name=file_name)

    @on(Action.update_firmware)
    async def on_update_firmware(
        self,
        location: str,
        retrieve_date: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> Any:
        """5.19: answered at once, the download at retrieveDate. UpdateFirmware.conf has no
        status: an install in progress is refused with a CALLERROR (an empty answer would
        claim the update was taken)."""
        try:
            when = parse_ocpp_time(retrieve_date)
        except ValueError:
            raise CallError("PropertyConstraintViolation", "retrieveDate is no dateTime") from None
        firmware = self.session.firmware
        if firmware is None:
            raise CallError("NotSupported", "no firmware updates on this charger")
        try:
            await firmware.request(location, when, retries=retries, retry_interval=retry_interval)
        except FirmwareBusy:
            log.warning("UpdateFirmware refused: a firmware installation is in progress")
            raise CallError("GenericError", "a firmware installation is in progress") from None
        return call_result.UpdateFirmware()

    # --- misc --------------------------------------------------------------------------------

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        # No vendor extensions yet: our own vendor id knows no message ids.
        if vendor_id == self.session.identity.vendor:
            return call_result.DataTransfer(status=DataTransferStatus.unknown_message_id)
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)

    # --- local authorization ------------------------------------------------------------------

    @on(Action.clear_cache)
    async def on_clear_cache(self, **_: Any) -> Any:
        # 5.4: the answer says whether the cache was cleared. A disabled (or absent) cache is
        # Rejected, as libocpp and Open OCPP answer; a clear that is not durable is too.
        if not cache_enabled(self.session.store):
            log.info("ClearCache rejected: AuthorizationCacheEnabled is false")
            return call_result.ClearCache(status=ClearCacheStatus.rejected)
        try:
            await self.session.auth_cache.clear()
        except AuthStoreError as exc:
            log.error("ClearCache rejected: %s", exc)
            return call_result.ClearCache(status=ClearCacheStatus.rejected)
        log.info("authorization cache cleared by the central system")
        return call_result.ClearCache(status=ClearCacheStatus.accepted)

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> Any:
        session = self.session
        version = session.local_list.version if list_enabled(session.store) else NO_LIST_SUPPORT
        return call_result.GetLocalListVersion(list_version=version)

    @on(Action.send_local_list)
    async def on_send_local_list(
        self,
        list_version: int,
        update_type: str,
        local_authorization_list: list[dict[str, Any]] | None = None,
        **_: Any,
    ) -> Any:
        session = self.session
        if not list_enabled(session.store):
            log.info("SendLocalList answered NotSupported: the local list is not enabled")
            return call_result.SendLocalList(status=UpdateStatus.not_supported)
        entries = local_authorization_list or []
        status = await session.local_list.update(
            UpdateType(update_type), list_version, entries, limits_of(session.store)
        )
        if status == UpdateStatus.accepted:
            # 3.5.3: a tag in the list is not in the cache (nor does a stale entry come back
            # when the tag leaves the list again).
            await session.auth_cache.forget(tags_of(entries))
        return call_result.SendLocalList(status=status)
