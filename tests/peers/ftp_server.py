"""An FTP/FTPS server for the file transfer tests: `pyftpdlib`, in its own process.

pyftpdlib imports the deprecated `asyncore` on Python 3.11, which the test run's
`filterwarnings = error` turns into an import error: so it never runs inside pytest::

    python -m tests.peers.ftp_server --root DIR --user U --password P [--cert PEM]
        [--require-session-reuse] [--cut-after BYTES]

It serves DIR to the one user (read and write) on 127.0.0.1, port 0. Once listening it prints
``LISTENING <port>``, then one JSON object per line for every command it answered (the
password masked) and every transfer: what the tests assert the client did.

- ``--cert``: explicit FTPS (AUTH TLS) with that certificate and key (PEM, one file).
- ``--require-session-reuse``: refuses a TLS data connection that does not resume the control
  connection's TLS session, as vsftpd's ``require_ssl_reuse=YES`` (its default) does.
- ``--cut-after``: the first download stops after that many bytes: the data connection is
  closed and the control connection answers 426, as when a link drops mid-file.

It exits 0 on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any

from OpenSSL import SSL
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_FTPHandler
from pyftpdlib.handlers.ftps.data import TLS_DTPHandler
from pyftpdlib.servers import FTPServer


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


class Cutter:
    """Closes the data connection of the first download after `limit` bytes (None: never)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit

    def room(self, dtp: Any, size: int) -> int | None:
        """None: send all `size` bytes; else send that many, then close the connection."""
        if self.limit is None or dtp.receive:
            return None
        left = self.limit - dtp.tot_bytes_sent
        if left >= size:
            return None
        self.limit = None  # only the first download is cut
        return max(left, 0)


def handler_classes(args: argparse.Namespace) -> type[FTPHandler]:
    cutter = Cutter(args.cut_after)
    tls = args.cert is not None
    base_dtp: type[DTPHandler] = TLS_DTPHandler if tls else DTPHandler

    class Dtp(base_dtp):
        def use_sendfile(self) -> bool:
            return False  # every byte goes through send(), where the cut happens

        def send(self, data: bytes) -> int:
            room = cutter.room(self, len(data))
            if room is None:
                return int(super().send(data))
            sent = int(super().send(data[:room])) if room else 0
            emit(event="cut", after=int(self.tot_bytes_sent))
            self._resp = ("426 Connection closed; transfer aborted.", logging.debug)
            self.close()
            return sent

        def handle_ssl_established(self) -> None:
            # pyOpenSSL has no session_reused(); its binding of OpenSSL's function does.
            if args.require_session_reuse and not SSL._lib.SSL_session_reused(self.socket._ssl):
                emit(event="refused", reason="TLS session not reused")
                self.cmd_channel.respond("522 SSL connection failed: session reuse required")
                self.close()

    base_handler: type[FTPHandler] = TLS_FTPHandler if tls else FTPHandler

    class Handler(base_handler):
        dtp_handler = Dtp
        banner = "dcocpp test FTP server ready."
        auth_failed_timeout = 0  # answer a wrong password at once (pyftpdlib waits 3 s)

        def log_cmd(self, cmd: str, arg: str, respcode: int, respstr: str) -> None:
            emit(event="command", cmd=cmd, arg="***" if cmd == "PASS" else arg, code=respcode)

        def log_transfer(
            self,
            cmd: str,
            filename: str,
            receive: bool,
            completed: bool,
            elapsed: float,
            bytes: int,
        ) -> None:
            emit(event="transfer", cmd=cmd, file=filename, completed=completed, bytes=bytes)

    if tls:
        Handler.certfile = args.cert
        Handler.tls_control_required = True
        Handler.tls_data_required = True
    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, args.password, args.root, perm="elradfmwMT")
    Handler.authorizer = authorizer
    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--cert", help="explicit FTPS with this PEM (certificate and key)")
    parser.add_argument("--require-session-reuse", action="store_true")
    parser.add_argument("--cut-after", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    server = FTPServer(("127.0.0.1", 0), handler_classes(args))

    def stop(signum: int, frame: object) -> None:
        server.close_all()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"LISTENING {server.address[1]}", flush=True)
    server.serve_forever(handle_exit=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
