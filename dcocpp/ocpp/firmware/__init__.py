"""Firmware updates, version-neutral: `plan.py` the persisted plan (where from, when, how many
attempts, which phase), `installer.py` the install (the integrator's hook, or the built-in
installer of dcocpp images), `service.py` the download with retries, the wait for the guns, the
install and the status the central system and the operator see. No OCPP message in here: OCPP
1.6's UpdateFirmware (in `dcocpp.ocpp.handlers`), the security extension's
SignedUpdateFirmware and OCPP 2.0.1 sit on top."""

from dcocpp.ocpp.firmware.installer import InstallHook, image_version
from dcocpp.ocpp.firmware.plan import FirmwarePlan, FirmwareState, Phase
from dcocpp.ocpp.firmware.service import FirmwareBusy, FirmwareService

__all__ = [
    "FirmwareBusy",
    "FirmwarePlan",
    "FirmwareService",
    "FirmwareState",
    "InstallHook",
    "Phase",
    "image_version",
]
