"""File transfer, version-neutral: `download` a URL to a file, `upload` a file to a location
URL, over FTP, FTPS, HTTP and HTTPS, under trio (`service.py`; `urls.py` keeps credentials out
of everything printed, `http.py` and `ftp.py` the protocols, `partfile.py` the partial file on
disk, `tls.py` the certificate checks, `progress.py` the progress callback). Errors:
`TransferError`, with the `Refusal` a server's answer meant where it tells.
"""

from dcocpp.ocpp.transfer.errors import Refusal, TransferError
from dcocpp.ocpp.transfer.progress import Progress
from dcocpp.ocpp.transfer.service import SUPPORTED_PROTOCOLS, discard, download, upload

__all__ = [
    "SUPPORTED_PROTOCOLS",
    "Progress",
    "Refusal",
    "TransferError",
    "discard",
    "download",
    "upload",
]
