"""Handlers of the OCPP 1.6 security whitepaper's certificate CALLs: InstallCertificate,
GetInstalledCertificateIds and DeleteCertificate, on the version-neutral certificate store
(`certificates/`), CertificateSigned, on the charge point certificate
(`certificates.chargepoint`), and GetLog (on `diagnostics.logs`). A mixin of
`handlers.CoreHandlers`. What changes the roots the charger trusts goes to the security log."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ocpp.routing import after, on
from ocpp.v16 import call_result, datatypes
from ocpp.v16.enums import (
    Action,
    CertificateSignedStatus,
    CertificateStatus,
    CertificateUse,
    DeleteCertificateStatus,
    GetInstalledCertificateStatus,
    HashAlgorithm,
    LogStatus,
)

from dcocpp.ocpp.certificates import CertificateRejected, CertificateStoreError
from dcocpp.ocpp.certificates.certid import CertId
from dcocpp.ocpp.certificates.store import Installed, RootKind
from dcocpp.ocpp.diagnostics.logs import LogKind
from dcocpp.ocpp.timewindow import time_window

if TYPE_CHECKING:
    from dcocpp.ocpp.services import SessionServices

log = logging.getLogger(__name__)

_KINDS = {
    CertificateUse.central_system_root_certificate: RootKind.CENTRAL_SYSTEM,
    CertificateUse.manufacturer_root_certificate: RootKind.MANUFACTURER,
}


class SecurityHandlers:
    session: SessionServices

    @on(Action.install_certificate)
    async def on_install_certificate(
        self, certificate_type: str, certificate: str, **_: Any
    ) -> Any:
        session = self.session
        kind = _KINDS[CertificateUse(certificate_type)]
        if session.certificates is None:
            return call_result.InstallCertificate(status=CertificateStatus.failed)
        store = session.store
        limit = store.get("CertificateStoreMaxLength")
        try:
            installed = session.certificates.install(
                kind,
                certificate,
                max_count=None if limit is None else int(limit),
                replace_signed=store.get("AdditionalRootCertificateCheck") == "true",
            )
        except CertificateRejected as exc:
            log.warning("InstallCertificate %s rejected: %s", certificate_type, exc)
            if kind is RootKind.CENTRAL_SYSTEM:
                await session.security_event("InvalidCentralSystemCertificate", str(exc))
            return call_result.InstallCertificate(status=CertificateStatus.rejected)
        except CertificateStoreError as exc:
            log.error("InstallCertificate %s failed: %s", certificate_type, exc)
            return call_result.InstallCertificate(status=CertificateStatus.failed)
        await session.security_note("CertificateInstalled", _described(installed))
        return call_result.InstallCertificate(status=CertificateStatus.accepted)

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(self, certificate_type: str, **_: Any) -> Any:
        store = self.session.certificates
        kind = _KINDS[CertificateUse(certificate_type)]
        installed = store.installed(kind) if store is not None else []
        if not installed:
            return call_result.GetInstalledCertificateIds(
                status=GetInstalledCertificateStatus.not_found
            )
        return call_result.GetInstalledCertificateIds(
            status=GetInstalledCertificateStatus.accepted,
            certificate_hash_data=[_hash_data(i.cert_id()) for i in installed],
        )

    @on(Action.delete_certificate)
    async def on_delete_certificate(self, certificate_hash_data: dict[str, Any], **_: Any) -> Any:
        session = self.session
        store = session.certificates
        found = store.find(_cert_id(certificate_hash_data)) if store is not None else None
        if store is None or found is None:
            return call_result.DeleteCertificate(status=DeleteCertificateStatus.not_found)
        if found.kind is RootKind.CENTRAL_SYSTEM and len(store.installed(found.kind)) == 1:
            profile = session.store.get("SecurityProfile")
            if urlsplit(session.csms_url).scheme == "wss" or int(profile or 0) >= 2:
                # It is what the connection to the central system verifies against.
                log.warning(
                    "DeleteCertificate refused: the last CentralSystemRootCertificate, while"
                    " the connection uses TLS (SecurityProfile %s)",
                    profile,
                )
                return call_result.DeleteCertificate(status=DeleteCertificateStatus.failed)
        try:
            store.delete(found)
        except CertificateStoreError as exc:
            log.error("DeleteCertificate failed: %s", exc)
            return call_result.DeleteCertificate(status=DeleteCertificateStatus.failed)
        await session.security_note("CertificateDeleted", _described(found))
        return call_result.DeleteCertificate(status=DeleteCertificateStatus.accepted)

    @on(Action.certificate_signed)
    async def on_certificate_signed(self, certificate_chain: str, **_: Any) -> Any:
        session = self.session
        certificates = session.charge_point_certificates
        if certificates is None:
            return call_result.CertificateSigned(status=CertificateSignedStatus.rejected)
        try:
            certificates.install_signed(certificate_chain)
        except CertificateRejected as exc:
            log.warning("CertificateSigned rejected: %s", exc)
            await session.security_event("InvalidChargePointCertificate", str(exc))
            return call_result.CertificateSigned(status=CertificateSignedStatus.rejected)
        except CertificateStoreError as exc:
            log.error("CertificateSigned rejected: %s", exc)
            return call_result.CertificateSigned(status=CertificateSignedStatus.rejected)
        return call_result.CertificateSigned(status=CertificateSignedStatus.accepted)

    @after(Action.certificate_signed)
    def after_certificate_signed(self, certificate_chain: str, **_: Any) -> None:
        session = self.session
        certificates = session.charge_point_certificates
        if certificates is None or not certificates.is_current(certificate_chain):
            return  # rejected
        if session.security_profile_target() >= 3:
            session.reconnect("a new charge point certificate")

    # --- logs --------------------------------------------------------------------------------

    @on(Action.get_log)
    async def on_get_log(
        self,
        log: dict[str, Any],
        log_type: str,
        request_id: int,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> Any:
        """The file's name at once (Rejected: nothing to send; AcceptedCanceled: it replaces
        an upload still running), its upload afterwards."""
        oldest, latest = time_window(
            log.get("oldest_timestamp"),
            log.get("latest_timestamp"),
            "oldestTimestamp/latestTimestamp",
        )
        logs = self.session.logs
        if logs is None:
            return call_result.GetLog(status=LogStatus.rejected)
        outcome = await logs.request(
            LogKind(log_type),
            log["remote_location"],
            request_id,
            retries=retries,
            retry_interval=retry_interval,
            oldest=oldest,
            latest=latest,
        )
        if outcome.file_name is None:
            return call_result.GetLog(status=LogStatus.rejected)
        status = LogStatus.accepted_canceled if outcome.replaced else LogStatus.accepted
        return call_result.GetLog(status=status, filename=outcome.file_name)


def _described(installed: Installed) -> str:
    """For the security log: what kind of root, whose, and which (the store's file name)."""
    subject = installed.certificate.subject.rfc4514_string()
    return f"{installed.kind.value} {subject} ({installed.path.name})"


def _hash_data(cert_id: CertId) -> datatypes.CertificateHashData:
    return datatypes.CertificateHashData(
        hash_algorithm=HashAlgorithm(cert_id.hash_algorithm),
        issuer_name_hash=cert_id.issuer_name_hash,
        issuer_key_hash=cert_id.issuer_key_hash,
        serial_number=cert_id.serial_number,
    )


def _cert_id(data: dict[str, Any]) -> CertId:
    return CertId(
        hash_algorithm=str(data["hash_algorithm"]),
        issuer_name_hash=str(data["issuer_name_hash"]),
        issuer_key_hash=str(data["issuer_key_hash"]),
        serial_number=str(data["serial_number"]),
    )
