"""The file transfer service: download a URL to a file, upload a file to a location URL.

Version-neutral (no OCPP message in here): OCPP 1.6's UpdateFirmware and GetDiagnostics, the
security extension's SignedUpdateFirmware and GetLog, and OCPP 2.0.1 use it alike; their
handlers own the retries, the status notifications and the deadline of each attempt.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import trio

from dcocpp.ocpp.transfer import ftp, http
from dcocpp.ocpp.transfer.errors import TransferError
from dcocpp.ocpp.transfer.partfile import PartialFile
from dcocpp.ocpp.transfer.partfile import discard as _discard
from dcocpp.ocpp.transfer.progress import Progress
from dcocpp.ocpp.transfer.tls import client_context
from dcocpp.ocpp.transfer.urls import parse
from dcocpp.storage.oserrors import reason

log = logging.getLogger(__name__)


SUPPORTED_PROTOCOLS = ("FTP", "FTPS", "HTTP", "HTTPS")
"""What SupportedFileTransferProtocols lists: the schemes `download` and `upload` take."""


async def download(
    url: str,
    target: Path,
    *,
    ca_bundle: Path | None = None,
    progress: Progress | None = None,
) -> int:
    """Download `url` (ftp, ftps, http, https; `user:password@` in it where needed) to the
    file `target`; returns its size.

    The bytes are streamed to `target.part` (`partfile.py`); once complete they are flushed to
    the disk and renamed to `target`, which never holds a partial file. A connection that
    breaks after bytes arrived is resumed within the call (HTTP Range, FTP REST), and a later
    call for the same URL and target resumes what an earlier one left, where the server still
    has the same version of the file. `discard(target)` removes that when giving up.

    No time limit of its own: the caller's cancel scope is the deadline (a server that never
    answers waits until it). https:// and ftps:// servers' certificates are verified against
    the system's CAs and those in `ca_bundle` (e.g. the charger's `security.csmsCaBundle`).
    Raises TransferError, whose message has no credentials."""
    parsed = parse(url)
    context = await trio.to_thread.run_sync(client_context, ca_bundle)  # reads CA files
    part = PartialFile(target, parsed.public)
    await trio.to_thread.run_sync(part.open)
    try:
        log.debug("downloading %s to %s from byte %d", parsed, target, part.size)
        if parsed.scheme.startswith("http"):
            await http.download(parsed, part, context, progress)
        else:
            await ftp.download(parsed, part, context, progress)
        await trio.to_thread.run_sync(part.finish)
    finally:
        part.close()  # unbuffered: nothing left to write, no blocking
    log.debug("downloaded %s to %s: %d bytes", parsed, target, part.size)
    return part.size


async def upload(
    source: Path,
    location: str,
    file_name: str,
    *,
    ca_bundle: Path | None = None,
    progress: Progress | None = None,
) -> int:
    """Upload the file `source` as `file_name` into the directory URL `location`; returns
    the bytes sent.

    HTTP(S): a PUT of the raw file to `<location>/<file_name>` with its Content-Length, and
    where the server has no PUT there (404, 405, 501) a multipart/form-data POST to
    `<location>` (field `file`). FTP(S): STOR into the directory. Deadline, certificates and
    errors as for `download`."""
    parsed = parse(location)
    parsed.child(file_name)  # a file name that cannot be one fails before any connection
    context = await trio.to_thread.run_sync(client_context, ca_bundle)  # reads CA files
    try:
        info = await trio.Path(source).stat()
    except OSError as exc:
        raise TransferError(f"{source}: cannot read: {reason(exc)}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise TransferError(f"{source}: not a file")
    log.debug("uploading %s to %s as %s", source, parsed, file_name)
    if parsed.scheme.startswith("http"):
        method = await http.upload(source, info.st_size, parsed, file_name, context, progress)
    else:
        await ftp.upload(source, info.st_size, parsed, file_name, context, progress)
        method = "STOR"
    log.debug("uploaded %s to %s (%s): %d bytes", source, parsed, method, info.st_size)
    return info.st_size


async def discard(target: Path) -> None:
    """Remove what downloads to `target` left to resume (once the caller gives up on it)."""
    await trio.to_thread.run_sync(_discard, target)
