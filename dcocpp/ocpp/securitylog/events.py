"""The security events of the OCPP 1.6 security whitepaper (edition 3, appendix 1) and which
of them go to the central system.

Every event goes to the security log. The whitepaper marks some of them critical: those, and
only those, are sent as SecurityEventNotification (the others would flood a central system
with what a charger meets on every reconnect attempt), plus the ones the OCTT checks for on the
wire (TC_077, TC_078, TC_081), which a central system that certifies chargers expects.
"""

from __future__ import annotations

# Critical in the whitepaper's list.
CRITICAL = frozenset(
    {
        "FirmwareUpdated",
        "SettingSystemTime",
        "StartupOfTheDevice",
        "ResetOrReboot",
        "SecurityLogWasCleared",
        "MemoryExhaustion",
        "TamperDetectionActivated",
    }
)
# Not critical, but the OCTT's test cases expect them as SecurityEventNotification.
OCTT_EXPECTED = frozenset(
    {
        "InvalidChargePointCertificate",  # TC_077
        "InvalidCentralSystemCertificate",  # TC_078
        "InvalidFirmwareSignature",  # TC_081
    }
)
# The rest of the list: logged only.
LOGGED_ONLY = frozenset(
    {
        "FailedToAuthenticateAtCentralSystem",
        "CentralSystemFailedToAuthenticate",
        "ReconfigurationOfSecurityParameters",
        "InvalidMessages",
        "AttemptedReplayAttacks",
        "InvalidFirmwareSigningCertificate",
        "InvalidTLSVersion",
        "InvalidTLSCipherSuite",
    }
)
EVENT_TYPES = CRITICAL | OCTT_EXPECTED | LOGGED_ONLY


def sent_to_central_system(kind: str) -> bool:
    """Whether the event `kind` goes out as SecurityEventNotification (not only logged)."""
    return kind in CRITICAL or kind in OCTT_EXPECTED
