"""Diagnostics, version-neutral: `archive.py` builds the .tar.gz from what it is given (log
files, documents), `service.py` collects, uploads with retries and keeps the status the
operator and the central system see. No OCPP message in here: OCPP 1.6's GetDiagnostics (in
`dcocpp.ocpp.handlers`), the security extension's GetLog and OCPP 2.0.1 sit on top."""

from dcocpp.ocpp.diagnostics.archive import ArchiveError, build_archive
from dcocpp.ocpp.diagnostics.service import DiagnosticsService, UploadState

__all__ = ["ArchiveError", "DiagnosticsService", "UploadState", "build_archive"]
