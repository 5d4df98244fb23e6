"""FTP and FTPS transfers: the standard library's `ftplib`, in a worker thread.

FTPS is explicit (AUTH TLS on the control connection, then PROT P: every data connection in
TLS too), with the server's certificate verified. The data connections resume the control
connection's TLS session: servers that require it (vsftpd's default `require_ssl_reuse`)
refuse a data connection without it, and ftplib does not do it (CPython issue 63699).

Downloads resume with REST where the server offers it (`REST STREAM` in FEAT) and names the
version of the file (SIZE and MDTM). The caller's cancel scope is the deadline: on a cancel the
worker thread is abandoned at once and its sockets shut down, which ends its blocking calls;
from then on it writes nothing more.
"""

from __future__ import annotations

import contextlib
import ftplib
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio

from dcocpp.ocpp.transfer import tls
from dcocpp.ocpp.transfer.errors import TransferError, ftp_refusal
from dcocpp.ocpp.transfer.partfile import PartialFile
from dcocpp.ocpp.transfer.progress import Progress
from dcocpp.ocpp.transfer.urls import TransferUrl
from dcocpp.storage.oserrors import reason

log = logging.getLogger(__name__)


BLOCK = 64 * 1024
ANONYMOUS = ("anonymous", "anonymous@")  # RFC 1738: the login of a URL that names none


class _Abandoned(Exception):
    """The trio side gave up on the transfer: the worker thread stops (nobody waits for it)."""


class _Session:
    """What the trio side and the worker thread of one transfer share: the sockets the worker
    opened, which `abort()` shuts down to wake it from a blocking call, and the lock under
    which it writes the file, so that after `abort()` it never writes again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._sockets: list[socket.socket] = []

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            if self._abandoned:
                sock.close()
                raise _Abandoned
            self._sockets.append(sock)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._lock:
            if self._abandoned:
                raise _Abandoned
            yield

    def abort(self) -> None:
        """Called on the trio side: the worker stops at its next step and writes nothing more."""
        with self._lock:
            self._abandoned = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            # shutdown, not close: it wakes a recv/send blocked on the socket in the worker.
            with contextlib.suppress(OSError):  # already closed by the worker
                sock.shutdown(socket.SHUT_RDWR)


class _Ftp(ftplib.FTP):
    """ftplib's FTP, with every socket it opens registered in `session`."""

    def __init__(self, session: _Session, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session

    def open(self, host: str, port: int) -> str:
        # ftplib's connect(), with the socket registered before the greeting is awaited: a
        # server that accepts and never speaks must not keep the thread after an abort.
        sock = socket.create_connection((host, port))
        self.session.register(sock)
        self.host, self.port = host, port
        self.sock, self.af = sock, sock.family
        self.file = sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        self.session.register(conn)
        return conn, size


class _FtpTls(_Ftp, ftplib.FTP_TLS):
    """ftplib's FTP_TLS, with the data connections resuming the control connection's TLS
    session (CPython issue 63699) and every socket registered before its handshake."""

    def auth(self) -> str:
        response = self.voidcmd("AUTH TLS")
        assert self.sock is not None
        sock = self.context.wrap_socket(
            self.sock, server_hostname=self.host, do_handshake_on_connect=False
        )
        self.session.register(sock)
        self.sock = sock
        sock.do_handshake()
        self.file = sock.makefile("r", encoding=self.encoding)
        return response

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        conn, size = _Ftp.ntransfercmd(self, cmd, rest)  # plain TCP, registered
        assert isinstance(self.sock, ssl.SSLSocket)
        conn = self.context.wrap_socket(
            conn,
            server_hostname=self.host,
            session=self.sock.session,
            do_handshake_on_connect=False,
        )
        self.session.register(conn)
        conn.do_handshake()
        return conn, size


class _Transfer:
    """One download or upload over FTP(S): `download`/`upload` run in the worker thread."""

    def __init__(self, url: TransferUrl, context: ssl.SSLContext, progress: Progress | None):
        self.url = url
        self.context = context
        self.progress = progress
        self.session = _Session()
        self.step = "connect"

    def download(self, part: PartialFile) -> None:
        while True:
            before = part.size
            try:
                self._download_once(part)
                return
            except (OSError, EOFError, ftplib.Error) as exc:
                if self.session.abandoned:
                    raise _Abandoned from exc
                if part.size == before or part.validator is None:
                    raise self._failed(exc) from exc
                log.info(
                    "%s: %s broke at byte %d (%s); resuming there",
                    self.url,
                    self.step,
                    part.size,
                    self._cause(exc),
                )

    def upload(self, source: Path, size: int, file_name: str) -> None:
        path = self.url.child(file_name).file_path
        try:
            file = source.open("rb")
        except OSError as exc:
            raise TransferError(f"{source}: cannot read: {reason(exc)}") from exc
        try:
            with file, self._connected() as ftp:
                self.step = f"STOR {path}"
                sent = 0

                def sent_block(block: bytes) -> None:
                    nonlocal sent
                    sent += len(block)
                    self._report(sent, size)

                self._report(sent, size)
                ftp.storbinary(f"STOR {path}", file, BLOCK, sent_block)
        except (OSError, EOFError, ftplib.Error) as exc:
            if self.session.abandoned:
                raise _Abandoned from exc
            raise self._failed(exc) from exc

    def _download_once(self, part: PartialFile) -> None:
        path = self.url.file_path
        if not path:
            raise TransferError(f"{self.url}: no file in the URL")
        with self._connected() as ftp:
            total, validator = self._version(ftp, path)
            if part.size and validator != part.validator:
                log.info("%s: not the version of the file begun earlier; starting over", self.url)
                part.restart()
            part.expect(validator, total)
            self._report(part.size, total)

            def received(block: bytes) -> None:
                with self.session.writing():
                    part.write(block)
                self._report(part.size, total)

            self.step = f"RETR {path}"
            ftp.retrbinary(f"RETR {path}", received, BLOCK, rest=part.size or None)
        if total is not None and part.size != total:
            raise TransferError(
                f"{self.url}: RETR {path}: the server ended the file at byte {part.size} of {total}"
            )

    def _version(self, ftp: _Ftp, path: str) -> tuple[int | None, str | None]:
        """The file's size (None: the server does not say) and what identifies this version
        of it for a later REST (None: it cannot be resumed)."""
        self.step = f"SIZE {path}"
        try:
            total = ftp.size(path)
        except ftplib.error_perm:
            return None, None  # SIZE unknown to the server: a missing file fails at RETR
        try:
            features = ftp.sendcmd("FEAT")
            modified = ftp.sendcmd(f"MDTM {path}")
        except ftplib.error_perm:
            return total, None
        if "REST STREAM" not in features.upper():
            return total, None
        return total, f"{total} {modified}"

    @contextlib.contextmanager
    def _connected(self) -> Iterator[_Ftp]:
        url = self.url
        ftp = (
            _FtpTls(self.session, context=self.context, encoding="utf-8")
            if url.tls
            else _Ftp(self.session, encoding="utf-8")
        )
        try:
            self.step = "connect"
            ftp.open(url.host, url.port)
            if isinstance(ftp, _FtpTls):
                self.step = "AUTH TLS"
                ftp.auth()
            self.step = "login"
            ftp.login(url.username or ANONYMOUS[0], url.password or ANONYMOUS[1])
            if isinstance(ftp, _FtpTls):
                self.step = "PROT P"
                ftp.prot_p()
            self.step = "TYPE I"
            ftp.voidcmd("TYPE I")
            yield ftp
            self.step = "QUIT"
            with contextlib.suppress(OSError, EOFError, ftplib.Error):
                ftp.quit()  # a courtesy: the transfer is done whatever the server answers
        finally:
            ftp.close()

    def _report(self, done: int, total: int | None) -> None:
        if self.progress is not None:
            trio.from_thread.run_sync(self._deliver, self.progress, done, total)

    def _deliver(self, progress: Progress, done: int, total: int | None) -> None:
        if not self.session.abandoned:  # on the trio side: nothing after the caller gave up
            progress(done, total)

    def _failed(self, exc: BaseException) -> TransferError:
        if isinstance(exc, ssl.SSLError):  # whichever step: the TLS is what failed
            return TransferError(f"{self.url}: {tls.describe(exc)}")
        refusal = ftp_refusal(str(exc)) if isinstance(exc, ftplib.Error) else None
        return TransferError(f"{self.url}: {self.step}: {self._cause(exc)}", refusal=refusal)

    def _cause(self, exc: BaseException) -> str:
        if isinstance(exc, ssl.SSLError):
            return tls.describe(exc)
        if isinstance(exc, socket.gaierror):
            return f"host name not found ({exc.strerror})"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, EOFError):
            return "the server closed the connection"
        if isinstance(exc, OSError):
            return reason(exc)
        # The server's reply, e.g. "530 Login incorrect."; never holds our password, but a
        # server that echoes what it got must not get it into a log either.
        text = str(exc).strip()
        if self.url.password:
            text = text.replace(self.url.password, "***")
        return text


async def _in_worker(transfer: _Transfer, work: Callable[[], None]) -> None:
    try:
        await trio.to_thread.run_sync(work, abandon_on_cancel=True)
    except trio.Cancelled:
        transfer.session.abort()
        raise


async def download(
    url: TransferUrl, part: PartialFile, context: ssl.SSLContext, progress: Progress | None
) -> None:
    transfer = _Transfer(url, context, progress)
    await _in_worker(transfer, lambda: transfer.download(part))


async def upload(
    source: Path,
    size: int,
    location: TransferUrl,
    file_name: str,
    context: ssl.SSLContext,
    progress: Progress | None,
) -> None:
    transfer = _Transfer(location, context, progress)
    await _in_worker(transfer, lambda: transfer.upload(source, size, file_name))
