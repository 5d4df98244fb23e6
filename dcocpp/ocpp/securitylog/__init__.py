"""The security log, version-neutral: `logfile.py` keeps the rolling file of security events
and of changes to what the charger trusts; `events.py` names the whitepaper's events and
which of them go to the central system. GetLog (`dcocpp.ocpp.diagnostics.logs`) uploads it."""

from dcocpp.ocpp.securitylog.events import EVENT_TYPES, sent_to_central_system
from dcocpp.ocpp.securitylog.logfile import SECURITY_LOG, SecurityLog, SecurityLogError

__all__ = [
    "EVENT_TYPES",
    "SECURITY_LOG",
    "SecurityLog",
    "SecurityLogError",
    "sent_to_central_system",
]
