"""Diagnostics and logs, version-neutral: `archive.py` builds the .tar.gz from what it is
given (log files, documents), `uploads.py` uploads a file with retries and keeps the status
the operator and the central system see, `service.py` is GetDiagnostics' work and `logs.py`
GetLog's (the security log, or the same archive). No OCPP message in here: OCPP 1.6's
GetDiagnostics (in `dcocpp.ocpp.handlers`), the security extension's GetLog
(`dcocpp.ocpp.securityhandlers`) and OCPP 2.0.1 sit on top."""

from dcocpp.ocpp.diagnostics.archive import ArchiveError, build_archive
from dcocpp.ocpp.diagnostics.logs import LogKind, LogRequest, LogService, log_status
from dcocpp.ocpp.diagnostics.service import DiagnosticsService
from dcocpp.ocpp.diagnostics.uploads import Upload, Uploads, UploadState

__all__ = [
    "ArchiveError",
    "DiagnosticsService",
    "LogKind",
    "LogRequest",
    "LogService",
    "Upload",
    "UploadState",
    "Uploads",
    "build_archive",
    "log_status",
]
