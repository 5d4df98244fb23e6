"""How a gun's hardware faults are reported to the central system: the errorCode and
vendorErrorCode of each kind, which one is reported while several are active, and the
StopTransaction reason of a session a fault ends."""

from __future__ import annotations

from ocpp.v16.enums import ChargePointErrorCode, Reason

from dcocpp.connector.truth import Truth
from dcocpp.hardware.interface import FaultKind

# How each hardware fault is reported (errorCode, vendorErrorCode) and why it stops a session.
# Listed by severity: with several faults active, the first one here is the one reported.
FAULTS: dict[FaultKind, tuple[ChargePointErrorCode, str | None, Reason]] = {
    FaultKind.EMERGENCY_STOP: (
        ChargePointErrorCode.other_error,
        "EmergencyStop",
        Reason.emergency_stop,
    ),
    FaultKind.EARTH_FAULT: (ChargePointErrorCode.ground_failure, None, Reason.other),
    FaultKind.POWER_SWITCH: (ChargePointErrorCode.power_switch_failure, None, Reason.other),
    FaultKind.COMMUNICATION: (
        ChargePointErrorCode.internal_error,
        "PlcCommunication",
        Reason.other,
    ),
    FaultKind.METER: (ChargePointErrorCode.power_meter_failure, None, Reason.other),
    FaultKind.LOCK: (ChargePointErrorCode.connector_lock_failure, None, Reason.other),
}
_OCPP_TEXT = 50  # info and vendorErrorCode are CiString50
_NO_FAULT: tuple[ChargePointErrorCode, str | None, str | None] = (
    ChargePointErrorCode.no_error,
    None,
    None,
)


def fault_report(t: Truth) -> tuple[ChargePointErrorCode, str | None, str | None]:
    """(errorCode, vendorErrorCode, info) for the most severe active fault."""
    if not t.faults:
        return _NO_FAULT
    kind, detail = active_faults(t)[0]
    code, vendor = fault_codes(kind, detail)
    return code, vendor, _clip(detail or None)


def active_faults(t: Truth) -> list[tuple[FaultKind, str]]:
    """Every active fault with its detail, the most severe first (the one reported)."""
    severity = list(FAULTS)
    return sorted(t.faults, key=lambda fault: severity.index(fault[0]))


def fault_codes(kind: FaultKind, detail: str) -> tuple[ChargePointErrorCode, str | None]:
    """(errorCode, vendorErrorCode) that report `kind`: a communication fault's detail says
    which PLC (or the bus), so it is the vendorErrorCode."""
    code, vendor, _ = FAULTS[kind]
    if kind == FaultKind.COMMUNICATION and detail:
        vendor = detail
    return code, _clip(vendor)


def _clip(text: str | None) -> str | None:
    return text[:_OCPP_TEXT] if text else text
