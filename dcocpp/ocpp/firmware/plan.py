"""UpdateFirmware's plan as it is persisted: one at a time, from the request until the
installed firmware's first boot has told the central system.

The phase says where a restart picks it up (`service.py`): SCHEDULED and DOWNLOADING resume
the download (at `attempt`, the partial file resuming), DOWNLOADED waits for the guns again,
INSTALLING was cut off (its outcome unknown: InstallationFailed), INSTALLED is the reboot
after a successful install (Installed is told once, after it).
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
    """The statuses of FirmwareStatusNotification."""

    IDLE = "Idle"
    DOWNLOADING = "Downloading"
    DOWNLOADED = "Downloaded"
    DOWNLOAD_FAILED = "DownloadFailed"
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    INSTALLATION_FAILED = "InstallationFailed"


class Phase(enum.Enum):
    SCHEDULED = "scheduled"  # waiting for its retrieveDate
    DOWNLOADING = "downloading"  # an attempt under way, or the wait for the next
    DOWNLOADED = "downloaded"  # the file is complete: waiting for the guns to be free
    INSTALLING = "installing"
    INSTALLED = "installed"  # installed, the reboot (and then Installed) pending


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

    def row(self) -> FirmwarePlanRow:
        return FirmwarePlanRow(
            self.location,
            self.retrieve_date,
            self.attempts,
            self.retry_interval,
            self.attempt,
            self.phase.value,
            self.expected_version,
            self.file_name,
        )

    @classmethod
    def from_row(cls, row: FirmwarePlanRow) -> FirmwarePlan:
        return cls(
            row.location,
            row.retrieve_date,
            row.attempts,
            row.retry_interval,
            row.attempt,
            Phase(row.phase),
            row.expected_version,
            row.file_name,
        )


def file_name_of(path: str) -> str:
    """The local name of the file a URL path names: its last segment, decoded, reduced to
    characters every file system takes (DEFAULT_FILE_NAME when nothing is left)."""
    name = _UNSAFE.sub("_", urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1]))
    name = name.lstrip(".")[:100]
    if not name or name.endswith((".part", ".part.json", ".log")):
        return DEFAULT_FILE_NAME
    return name
