"""What the handlers of the central system's CALLs may touch of the session.

The session (`session.ChargePointSession`) owns its handlers (`handlers.CoreHandlers`, with
`smartcharging.handlers.SmartChargingHandlers`) and routes every CALL to them; the handlers
answer through the narrow `SessionServices` below, as the session reaches the station only
through `control.ChargePointControl`. So the handlers never import the session, and the import
graph has no cycle, not even a type-only one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from ocpp.v16.enums import ConfigurationStatus

    from dcocpp.ocpp.authcache import AuthorizationCache
    from dcocpp.ocpp.certificates.chargepoint import ChargePointCertificates
    from dcocpp.ocpp.certificates.store import CertificateStore
    from dcocpp.ocpp.configuration import ConfigurationStore
    from dcocpp.ocpp.control import ChargePointControl, ConnectorStatus
    from dcocpp.ocpp.diagnostics import DiagnosticsService, LogService
    from dcocpp.ocpp.firmware import FirmwareService
    from dcocpp.ocpp.locallist import LocalAuthorizationList
    from dcocpp.ocpp.registration import Registration
    from dcocpp.ocpp.securityprofile import SecurityProfiles
    from dcocpp.ocpp.smartcharging.service import ChargingProfiles


@attrs.frozen
class Identity:
    """What BootNotification says about this charge point."""

    charge_point_id: str
    vendor: str
    model: str
    firmware_version: str
    serial_number: str | None = None


class SessionServices(Protocol):
    """The session as its handlers see it."""

    identity: Identity
    store: ConfigurationStore
    control: ChargePointControl
    auth_cache: AuthorizationCache
    local_list: LocalAuthorizationList
    charging_profiles: ChargingProfiles
    diagnostics: DiagnosticsService | None  # None: GetDiagnostics has nothing to send
    firmware: FirmwareService | None  # None: UpdateFirmware is refused
    certificates: CertificateStore | None  # None: no certificate store
    logs: LogService | None  # None: GetLog has nothing to send
    # None: no charge point certificate (SignCertificate, CertificateSigned).
    charge_point_certificates: ChargePointCertificates | None
    security_profiles: SecurityProfiles  # the profile the central system set

    @property
    def csms_url(self) -> str: ...  # connected to (ws:// or wss://, as the profile asks)

    @property
    def state(self) -> Registration: ...

    def security_profile_in_use(self) -> int: ...

    def security_profile_target(self) -> int: ...

    def change_security_profile(self, value: str) -> ConfigurationStatus: ...

    def reconnect(self, reason: str) -> None: ...

    async def security_event(self, kind: str, tech_info: str | None = None) -> None: ...

    async def security_note(self, entry: str, detail: str) -> None: ...

    def boot_now(self) -> None: ...

    async def call(self, payload: Any, *, triggered: bool = False) -> Any: ...

    async def send_heartbeat(self, *, triggered: bool = False) -> None: ...

    async def send_status(self, status: ConnectorStatus, *, triggered: bool = False) -> None: ...
