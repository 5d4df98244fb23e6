"""A firmware update's plan as it is persisted (UpdateFirmware's, or a signed one's:
SignedUpdateFirmware's), one at a time, from the request until the installed firmware's first
boot has told the central system.

The phase says where a restart picks it up (`service.py`): SCHEDULED and DOWNLOADING resume
the download (at `attempt`, the partial file resuming), DOWNLOADED checks a signed file's
signature (VERIFIED: checked) and waits for the install date and the guns again, INSTALLING
was cut off (its outcome unknown: InstallationFailed), INSTALLED is the reboot after a
successful install (Installed is told once, after it).
"""

from __future__ import annotations

import enum
import re
import urllib.parse

import attrs

from dcocpp.storage.database import FirmwarePlanRow

DEFAULT_FILE_NAME = "firmware.bin"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class FirmwareState(enum.Enum):
    """The statuses of FirmwareStatusNotification, and those only a signed update reports
    (the security whitepaper's SignedFirmwareStatusNotification)."""

    IDLE = "Idle"
    DOWNLOADING = "Downloading"
    DOWNLOADED = "Downloaded"
    DOWNLOAD_FAILED = "DownloadFailed"
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    INSTALLATION_FAILED = "InstallationFailed"
    # A signed update's only.
    DOWNLOAD_SCHEDULED = "DownloadScheduled"
    INVALID_SIGNATURE = "InvalidSignature"
    SIGNATURE_VERIFIED = "SignatureVerified"
    INSTALL_SCHEDULED = "InstallScheduled"
    INSTALL_REBOOTING = "InstallRebooting"
    INSTALL_VERIFICATION_FAILED = "InstallVerificationFailed"


class Phase(enum.Enum):
    SCHEDULED = "scheduled"  # waiting for its retrieveDate
    DOWNLOADING = "downloading"  # an attempt under way, or the wait for the next
    DOWNLOADED = "downloaded"  # the file is complete (a signed one's signature not checked)
    VERIFIED = "verified"  # a signed file's signature holds: its install date, the guns next
    INSTALLING = "installing"
    INSTALLED = "installed"  # installed, the reboot (and then Installed) pending


@attrs.frozen
class Signed:
    """What a signed update adds to its plan: the central system's request id (which every
    status carries), the signing certificate (PEM, checked against the manufacturer roots
    when requested), the file's signature (base64) and when to install (None: at once)."""

    request_id: int
    signing_certificate: str
    signature: str
    install_date: str | None = None  # OCPP dateTime, UTC


@attrs.frozen
class FirmwarePlan:
    location: str  # with its credentials; never shown (transfer.urls.redact)
    retrieve_date: str  # OCPP dateTime, UTC
    attempts: int  # retries + 1, at least 1
    retry_interval: int  # seconds between attempts
    attempt: int = 0  # the attempt under way or next (0: none begun)
    phase: Phase = Phase.SCHEDULED
    expected_version: str | None = None  # the image header's, once downloaded
    file_name: str = DEFAULT_FILE_NAME  # in the data directory's firmware folder
    signed: Signed | None = None  # None: UpdateFirmware's

    @property
    def request_id(self) -> int | None:
        return None if self.signed is None else self.signed.request_id

    def row(self) -> FirmwarePlanRow:
        signed = self.signed
        return FirmwarePlanRow(
            self.location,
            self.retrieve_date,
            self.attempts,
            self.retry_interval,
            self.attempt,
            self.phase.value,
            self.expected_version,
            self.file_name,
            None if signed is None else signed.request_id,
            None if signed is None else signed.signing_certificate,
            None if signed is None else signed.signature,
            None if signed is None else signed.install_date,
        )

    @classmethod
    def from_row(cls, row: FirmwarePlanRow) -> FirmwarePlan:
        signed = None
        if (
            row.request_id is not None
            and row.signing_certificate is not None
            and row.signature is not None
        ):
            signed = Signed(
                row.request_id, row.signing_certificate, row.signature, row.install_date
            )
        return cls(
            row.location,
            row.retrieve_date,
            row.attempts,
            row.retry_interval,
            row.attempt,
            Phase(row.phase),
            row.expected_version,
            row.file_name,
            signed,
        )


def file_name_of(path: str) -> str:
    """The local name of the file a URL path names: its last segment, decoded, reduced to
    characters every file system takes (DEFAULT_FILE_NAME when nothing is left)."""
    name = _UNSAFE.sub("_", urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1]))
    name = name.lstrip(".")[:100]
    if not name or name.endswith((".part", ".part.json", ".log")):
        return DEFAULT_FILE_NAME
    return name
