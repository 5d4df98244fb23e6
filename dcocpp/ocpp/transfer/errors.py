"""The file transfer service's one exception."""

from __future__ import annotations

from dcocpp.ocpp.errors import OcppError


class TransferError(OcppError):
    """A download or upload that did not happen, in an operator's words: the URL with its
    credentials removed, the step, the cause (`ftp://files.example/fw.bin: login refused:
    530 Login incorrect.`). Never holds a URL's user name or password."""
